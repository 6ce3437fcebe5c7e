//! Two real daemons talking through a mesh of real relays, driven through the `jasper` CLI and
//! the gRPC API: messages both ways with TX ≠ RX relays and no sender key on any relay, an
//! event subscriber that resumes from its last seq without missing anything, and the unread
//! counts of received messages with a read marker that only moves forward.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use jasper_client::Client;
use jasper_proto::v1 as pb;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const DELIVERY: Duration = Duration::from_secs(45);

#[test]
fn two_users_exchange_messages_through_distinct_relays_that_never_see_the_sender() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let alice = Daemon::start(root.path(), "alice", &mesh);
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let a_key = alice.create_identity();
    let b_key = bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");

    // Both ways, through the CLI.
    let hello = alice.ok(&["send", "--to", "bob", "hello bob"]);
    assert_eq!(hello["state"], "queued");
    let hello_id = hello["id"].as_str().unwrap().to_owned();
    let got = bob.wait_for_message("alice", &hello_id, DELIVERY);
    assert_eq!(got["content"], "hello bob");
    assert_eq!(got["sender"], a_key.as_str());
    assert_eq!(got["sender_name"], "alice");
    assert_eq!(got["outgoing"], false);

    let reply = bob.ok(&["send", "--to", "alice", "hi alice"]);
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    let got = alice.wait_for_message("bob", &reply_id, DELIVERY);
    assert_eq!(got["content"], "hi alice");
    assert_eq!(got["sender"], b_key.as_str());

    // A key works as a target as well as a name.
    let by_key = alice.ok(&["send", "--to", &b_key, "by key"]);
    bob.wait_for_message("alice", by_key["id"].as_str().unwrap(), DELIVERY);

    // Each side's TX relays (every copy of its message, the self-copy included) differ from
    // its RX relay; checked through the gRPC API.
    let rt = runtime();
    for (daemon, id) in [(&alice, &hello_id), (&bob, &reply_id)] {
        let mut c = daemon.client(&rt);
        let rx = rt
            .block_on(c.relays.rx_relay(pb::RxRelayRequest {}))
            .unwrap()
            .into_inner()
            .address
            .expect("an RX relay is assigned");
        let routes = wait_until(
            DELIVERY,
            &format!("{}'s message {id} to be routed", daemon.name),
            || {
                let routes = rt
                    .block_on(
                        c.messages
                            .routes(pb::MessageRoutesRequest { id: id.clone() }),
                    )
                    .unwrap()
                    .into_inner()
                    .routes;
                routes.iter().all(|r| r.relay.is_some()).then_some(routes)
            },
        );
        assert!(!routes.is_empty(), "{} has no route for {id}", daemon.name);
        for route in &routes {
            assert_ne!(
                route.relay.as_deref(),
                Some(rx.as_str()),
                "{}: a copy went through its own RX relay {rx}",
                daemon.name
            );
        }
        // The CLI shows the same.
        let cli_routes = daemon.ok(&["routes", id]);
        assert_eq!(cli_routes.as_array().unwrap().len(), routes.len());
        let cli_rx = daemon.ok(&["relays", "rx"]);
        assert_eq!(cli_rx["address"], rx.as_str());
    }

    // Every relay holds the packets (the mesh syncs), and none holds the sender's key: not in
    // what it serves for the recipient, anywhere in the JSON.
    for (recipient, sender) in [(&b_key, &a_key), (&a_key, &b_key)] {
        let answers = wait_until(DELIVERY, "every relay to hold the packets", || {
            let answers = mesh.fetch_all(&rt, recipient);
            answers
                .iter()
                .all(|a| a["messages"].as_array().is_some_and(|m| !m.is_empty()))
                .then_some(answers)
        });
        for (i, answer) in answers.iter().enumerate() {
            for s in json_strings(answer) {
                assert!(
                    !s.contains(sender.as_str()),
                    "relay {i} exposes the sender's key in {s:.80}..."
                );
            }
        }
    }

    // The sent message reaches "visible" (seen on a relay other than its TX relay).
    wait_until(DELIVERY, "alice's message to become visible", || {
        let m = alice
            .messages("bob")
            .into_iter()
            .find(|m| m["id"] == hello_id.as_str())?;
        (m["state"] == "visible").then_some(())
    });

    // Conversations list the DM on both sides.
    let convs = alice.ok(&["conversations"]);
    assert!(
        convs
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "direct" && c["name"] == "bob"),
        "{convs:#}"
    );
}

#[test]
fn an_event_subscriber_resumes_from_its_last_seq_and_misses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_mesh, alice, bob) = alice_and_bob(root.path(), 3);

    // A first subscriber sees bob's first message arrive, then disconnects.
    let watch = Watch::start(&alice, 0);
    let first = bob.ok(&["send", "--to", "alice", "before the break"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let seen = watch.read_until(DELIVERY, |events| {
        events.iter().any(|e| is_received(e, &first_id))
    });
    watch.stop();
    let seqs: Vec<u64> = seen.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing: {seqs:?}"
    );
    let last = *seqs.last().unwrap();

    // While nobody listens, several messages arrive.
    const N: usize = 5;
    let ids: Vec<String> = (0..N)
        .map(|i| {
            bob.ok(&["send", "--to", "alice", &format!("during the break {i}")])["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for id in &ids {
        alice.wait_for_message("bob", id, DELIVERY);
    }

    // Resuming from the last seq seen delivers every one of them, once, and nothing before.
    let watch = Watch::start(&alice, last);
    let resumed = watch.read_until(DELIVERY, |events| {
        ids.iter()
            .all(|id| events.iter().any(|e| is_received(e, id)))
    });
    watch.stop();
    assert!(
        resumed.iter().all(|e| seq(e) > last),
        "resumed stream repeated old events"
    );
    for id in &ids {
        let copies = resumed.iter().filter(|e| is_received(e, id)).count();
        assert_eq!(copies, 1, "message {id} arrived {copies} times");
    }

    // The two sessions together are exactly the log: compare with one uninterrupted gRPC
    // subscription from the start.
    let rt = runtime();
    let mut c = alice.client(&rt);
    let until = seq(resumed.last().unwrap());
    let all: Vec<u64> = rt.block_on(async {
        use futures::StreamExt;
        let mut stream = c
            .events
            .subscribe(pb::SubscribeRequest { from_seq: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut all = Vec::new();
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            assert!(e.kind.is_some(), "event {} has no payload", e.seq);
            all.push(e.seq);
            if e.seq >= until {
                break;
            }
        }
        all
    });
    let sessions: BTreeSet<u64> = seqs
        .iter()
        .copied()
        .chain(resumed.iter().map(seq))
        .collect();
    assert_eq!(
        sessions,
        all.iter().copied().collect::<BTreeSet<u64>>(),
        "the two sessions differ from the log"
    );

    // `Latest` names the newest event: at least the last one streamed, and one that exists
    // (where a frontend that has just loaded its snapshot subscribes from).
    let latest = rt
        .block_on(c.events.latest(pb::LatestEventRequest {}))
        .unwrap()
        .into_inner()
        .seq;
    assert!(latest >= until, "Latest {latest} is behind event {until}");
    let newest = rt.block_on(async {
        use futures::StreamExt;
        let mut stream = c
            .events
            .subscribe(pb::SubscribeRequest {
                from_seq: latest - 1,
            })
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap().seq
    });
    assert_eq!(newest, latest, "Latest names no event of the log");
}

#[test]
fn received_messages_are_unread_until_marked_and_the_marker_never_moves_back() {
    let root = tempfile::tempdir().unwrap();
    let (_mesh, alice, bob) = alice_and_bob(root.path(), 3);

    // Three messages from alice, each sent once the one before has arrived, so bob's arrival
    // order (what the read marker follows) is their sending order.
    let send = |text: &str| {
        let id = alice.ok(&["send", "--to", "bob", text])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        bob.wait_for_message("alice", &id, DELIVERY);
        id
    };
    let ids: Vec<String> = (1..=3).map(|i| send(&format!("unread {i}"))).collect();

    let rt = runtime();
    let mut b = bob.client(&rt);
    let mut a = alice.client(&rt);
    let dm = get(&rt, &mut b, "alice");
    assert_eq!(dm.unread, 3, "{dm:?}");
    assert!(dm.last_activity_at >= dm.created_at, "{dm:?}");
    // Outgoing messages are never unread.
    assert_eq!(get(&rt, &mut a, "bob").unread, 0);
    // The list shows the same count (through the CLI, in its JSON).
    let listed = bob.ok(&["conversations"]);
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == dm.id)
        .cloned()
        .unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!(listed["unread"], 3, "{listed:#}");

    // Through the second: the third is left.
    let through_2nd = mark_read(&rt, &mut b, "alice", Some(&ids[1])).unwrap();
    assert_eq!(through_2nd.unread, 1, "{through_2nd:?}");
    assert_eq!(get(&rt, &mut b, &format!("#{}", dm.id)).unread, 1);
    // Without `through`: everything.
    assert_eq!(mark_read(&rt, &mut b, "alice", None).unwrap().unread, 0);
    // Back to the first: the marker stays where it is.
    assert_eq!(
        mark_read(&rt, &mut b, "alice", Some(&ids[0]))
            .unwrap()
            .unread,
        0
    );
    assert_eq!(get(&rt, &mut b, "alice").unread, 0);

    // Every frontend learns it from the log alone: each arrival and each move of the marker is
    // a ConversationUpdated with the new count (1, 2, 3 as alice's messages arrive; 1, 0 as
    // bob marks them; nothing for the mark that would move back).
    let counts: Vec<u32> = rt.block_on(async {
        use futures::StreamExt;
        let mut stream = b
            .events
            .subscribe(pb::SubscribeRequest { from_seq: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut counts = Vec::new();
        while !counts.ends_with(&[3, 1, 0]) {
            let next = tokio::time::timeout(DELIVERY, stream.next()).await;
            let event = next
                .unwrap_or_else(|_| panic!("the counts so far: {counts:?}"))
                .expect("the stream stays open")
                .unwrap();
            if let Some(pb::event::Kind::ConversationUpdated(u)) = event.kind
                && let Some(c) = u.conversation.filter(|c| c.id == dm.id)
            {
                counts.push(c.unread);
            }
        }
        counts
    });
    // (A leading 0: the conversation as it was created, before the first message.)
    let counts = counts.strip_prefix(&[0]).unwrap_or(&counts);
    assert_eq!(counts, [1, 2, 3, 1, 0], "unread counts in the event log");

    // Refusals: a message that is not in the conversation, an unknown conversation, none.
    let refused = |r: Result<pb::Conversation, tonic::Status>| {
        let status = r.expect_err("refused");
        let reason = status.get_details_error_info().unwrap().reason;
        (status.code(), reason)
    };
    assert_eq!(
        refused(mark_read(&rt, &mut b, "alice", Some("no-such-message"))),
        (Code::NotFound, "unknown_message".to_owned())
    );
    assert_eq!(
        refused(mark_read(&rt, &mut b, "nobody", None)),
        (Code::NotFound, "unknown_conversation".to_owned())
    );
    assert_eq!(
        refused(mark_read(&rt, &mut b, "", None)),
        (Code::InvalidArgument, "invalid_argument".to_owned())
    );
    let (code, reason, _) = bob.fails(&["read", "alice", "--through", "no-such-message"]);
    assert_eq!((code, reason.as_str()), (1, "unknown_message"));

    // A new message: unread again, and the conversation's activity moves on.
    let fourth = send("unread 4");
    let later = get(&rt, &mut b, "alice");
    assert_eq!(later.unread, 1, "{later:?}");
    assert!(
        later.last_activity_at > dm.last_activity_at,
        "{later:?} after {dm:?}"
    );
    // `jasper read` marks it, through its id, and prints the conversation.
    let read = bob.ok(&["read", "alice", "--through", &fourth]);
    assert_eq!(read["unread"], 0, "{read:#}");
    assert_eq!(read["id"], dm.id);
}

fn get(rt: &tokio::runtime::Runtime, c: &mut Client, target: &str) -> pb::Conversation {
    rt.block_on(c.conversations.get(pb::GetConversationRequest {
        target: target.to_owned(),
    }))
    .unwrap()
    .into_inner()
    .conversation
    .unwrap()
}

fn mark_read(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    target: &str,
    through: Option<&str>,
) -> Result<pb::Conversation, tonic::Status> {
    rt.block_on(c.conversations.mark_read(pb::MarkReadRequest {
        target: target.to_owned(),
        through: through.map(str::to_owned),
    }))
    .map(|r| r.into_inner().conversation.unwrap())
}

fn is_received(event: &Value, id: &str) -> bool {
    event["kind"]["type"] == "message_received" && event["kind"]["message"]["id"] == id
}
