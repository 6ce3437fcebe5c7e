//! Transparent mode between two real daemons: signaling through real relays, a real STUN
//! server (coturn) on loopback, real WebRTC peers, driven through the CLI and the gRPC API.

mod common;

use std::time::Duration;

use common::*;
use jasper_proto::v1 as pb;
use jasper_test::stun::StunServer;
use serde_json::Value;

const DELIVERY: Duration = Duration::from_secs(30);
const SESSION_UP: Duration = Duration::from_secs(30);

/// A daemon that may use transparent mode, with `stun` as its STUN server.
fn transparent_daemon(
    root: &std::path::Path,
    name: &str,
    mesh: &Mesh,
    stun: &StunServer,
) -> Daemon {
    let mut opts = DaemonOptions::for_mesh(mesh);
    opts.extra = vec![
        "--stun".into(),
        stun.url.clone(),
        "--webrtc-bind".into(),
        "127.0.0.1:0".into(),
    ];
    Daemon::start_with(root, name, opts)
}

/// Two transparent-capable daemons with identities, contacts of each other, over a 2-relay mesh
/// with coturn. Fields drop in order: daemons, then relays and STUN, then the directory.
struct Two {
    alice: Daemon,
    bob: Daemon,
    a_key: String,
    b_key: String,
    stun: StunServer,
    mesh: Mesh,
    root: tempfile::TempDir,
}

fn two() -> Two {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let stun = StunServer::start(root.path());
    let alice = transparent_daemon(root.path(), "alice", &mesh, &stun);
    let bob = transparent_daemon(root.path(), "bob", &mesh, &stun);
    let a_key = alice.create_identity();
    let b_key = bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    Two {
        alice,
        bob,
        a_key,
        b_key,
        stun,
        mesh,
        root,
    }
}

fn state(d: &Daemon, contact: &str) -> Value {
    d.ok(&["transparent", "status", contact])[0].clone()
}

fn wait_state(d: &Daemon, contact: &str, want: &str) -> Value {
    wait_until(
        SESSION_UP,
        &format!(
            "{}'s transparent session with {contact} to be {want}",
            d.name
        ),
        || Some(state(d, contact)).filter(|s| s["state"] == want),
    )
}

/// UDP sockets the process holds (from /proc: its socket fds matched against the UDP tables).
fn udp_sockets(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .flat_map(|t| {
            std::fs::read_to_string(t)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .filter(|inode| inodes.contains(inode))
                .count()
        })
        .unwrap_or(0)
}

/// Every packet any relay holds for `key`.
fn relay_packets(mesh: &Mesh, rt: &tokio::runtime::Runtime, key: &str) -> usize {
    mesh.fetch_all(rt, key)
        .iter()
        .map(|r| r["messages"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
}

#[test]
fn messages_go_over_the_data_channel_and_back_through_relays_when_it_is_torn_down() {
    // Bound root first: locals drop in reverse, so daemons go before relays, STUN and the dir.
    let Two {
        root,
        mesh,
        stun,
        alice,
        bob,
        a_key,
        b_key,
    } = two();
    let probes = stun.bindings();
    let rt = runtime();

    // The warning comes with the API; consent on one side only is not enough.
    let warning = alice.ok(&["transparent", "warning"]);
    assert!(warning["warning"].as_str().unwrap().contains("IP address"));
    let s = &alice.ok(&["transparent", "enable", "bob"])[0];
    assert_eq!(s["state"], "waiting_for_peer");
    assert_eq!(s["local_enabled"], true);
    // Bob hears of it through the relays, and nothing starts until he consents too.
    let heard = wait_until(DELIVERY, "bob to hear alice's consent", || {
        Some(state(&bob, "alice")).filter(|s| s["peer_enabled"] == true)
    });
    assert_eq!(heard["state"], "off");
    assert_eq!(
        udp_sockets(bob.pid().unwrap()),
        0,
        "no WebRTC before both consent"
    );

    bob.ok(&["transparent", "enable", "alice"]);
    wait_state(&alice, "bob", "connected");
    wait_state(&bob, "alice", "connected");
    assert!(stun.bindings() > probes, "the STUN server was never asked");
    assert!(udp_sockets(alice.pid().unwrap()) > 0);

    // A message over the data channel: delivered, verified, and never on a relay.
    let before = relay_packets(&mesh, &rt, &b_key);
    let sent = alice.ok(&["send", "--to", "bob", "straight to you"]);
    let id = sent["id"].as_str().unwrap().to_owned();
    let got = bob.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(got["content"], "straight to you");
    assert_eq!(got["sender"], a_key.as_str());
    let routes = wait_until(DELIVERY, "alice's copy to bob to be delivered", || {
        let routes = alice.ok(&["routes", &id]);
        routes
            .as_array()?
            .iter()
            .any(|r| r["recipient"] == b_key.as_str() && r["relay"] == "webrtc")
            .then_some(routes)
    });
    assert_eq!(
        routes.as_array().unwrap().len(),
        1,
        "one copy, bob's: {routes}"
    );
    assert_eq!(state(&bob, "alice")["direct_received"], 1);
    assert_eq!(state(&alice, "bob")["direct_sent"], 1);
    // Bob's other login, without transparent mode, still gets it: the login that received it
    // directly queues the same packet for its own key through its TX relay.
    let bob2 = Daemon::start(root.path(), "bob2", &mesh);
    let pem = bob.ok(&["identity", "export"]);
    let out = bob2.jasper_with_stdin(&["identity", "import", "-"], pem["pkcs8_pem"].as_str());
    assert!(out.success(), "{out:?}");
    bob2.ok(&["contact", "add", &a_key, "--name", "alice"]);
    let mirrored = bob2.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(mirrored["content"], "straight to you");
    assert_eq!(
        relay_packets(&mesh, &rt, &b_key),
        before + 1,
        "exactly the mirrored copy"
    );
    assert_eq!(state(&bob2, "alice")["state"], "off");
    // One conversation either way: the reply (also direct) lands in the same one.
    let reply = bob.ok(&["send", "--to", "alice", "and back"]);
    alice.wait_for_message("bob", reply["id"].as_str().unwrap(), DELIVERY);
    assert_eq!(alice.messages("bob").len(), 2);

    // Torn down on purpose: both sides see it, and the next message takes the relays.
    let closed = &alice.ok(&["transparent", "close", "bob"])[0];
    assert_eq!(closed["state"], "idle");
    wait_state(&bob, "alice", "idle");
    let later = alice.ok(&["send", "--to", "bob", "through the mesh"]);
    let later_id = later["id"].as_str().unwrap().to_owned();
    bob.wait_for_message("alice", &later_id, DELIVERY);
    let routes = alice.ok(&["routes", &later_id]);
    let to_bob = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipient"] == b_key.as_str())
        .unwrap()
        .clone();
    assert!(
        mesh.addrs()
            .contains(&to_bob["relay"].as_str().unwrap_or_default().to_owned()),
        "{to_bob}"
    );
    assert!(relay_packets(&mesh, &rt, &b_key) > before);
    assert_eq!(bob.messages("alice").len(), 3);

    // Opening it again works from either side (one of them offers, the other asks the
    // offerer to: both ways are exercised whichever key sorts first).
    let reopened = &bob.ok(&["transparent", "open", "alice", "--wait-ms", "20000"])[0];
    assert_eq!(reopened["state"], "connected", "{reopened}");
    wait_state(&alice, "bob", "connected");
    bob.ok(&["transparent", "close", "alice"]);
    wait_state(&alice, "bob", "idle");
    let reopened = &alice.ok(&["transparent", "open", "bob", "--wait-ms", "20000"])[0];
    assert_eq!(reopened["state"], "connected", "{reopened}");
    wait_state(&bob, "alice", "connected");
}

/// Opens a call's `Audio` stream: the sender for frames to send, and the stream of frames
/// the peer sends.
async fn open_audio(
    c: &mut jasper_client::Client,
    call_id: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::AudioIn>,
    tonic::Streaming<pb::AudioOut>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::AudioIn {
        call_id: call_id.to_owned(),
        frame: None,
    })
    .await
    .unwrap();
    let out = c
        .calls
        .audio(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, out)
}

#[test]
fn a_call_carries_audio_frames_in_order_and_hanging_up_ends_it_on_both_sides() {
    // Every part bound: an unbound field of the temporary would drop (relays, STUN) right here.
    let Two {
        root: _root,
        mesh: _mesh,
        stun: _stun,
        alice,
        bob,
        ..
    } = two();
    alice.ok(&["transparent", "enable", "bob"]);
    bob.ok(&["transparent", "enable", "alice"]);
    wait_state(&alice, "bob", "connected");
    wait_state(&bob, "alice", "connected");

    let rt = runtime();
    let mut a = alice.client(&rt);
    let mut b = bob.client(&rt);
    let bob_events = Watch::start(&bob, 0);

    let call = rt
        .block_on(a.calls.start(pb::StartCallRequest {
            contact: "bob".into(),
        }))
        .unwrap()
        .into_inner()
        .call
        .unwrap();
    assert_eq!(call.state(), pb::CallState::Ringing);
    // Bob's cue to ring: a CallChanged event for an incoming RINGING call.
    let is_ring = |e: &Value| {
        e["kind"]["type"] == "call_changed" && e["kind"]["call"]["id"] == call.id.as_str()
    };
    let events = bob_events.read_until(DELIVERY, |events| events.iter().any(is_ring));
    let ring = &events.iter().find(|e| is_ring(e)).unwrap()["kind"]["call"];
    assert_eq!(ring["state"], "ringing");
    assert_eq!(ring["outgoing"], false);
    assert_eq!(ring["contact_name"], "alice");

    // No audio before the call is accepted; the caller cannot accept its own call.
    let early = rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::AudioIn {
            call_id: call.id.clone(),
            frame: Some(pb::AudioFrame {
                opus: vec![1; 10],
                duration_us: 20_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        let mut out = a
            .calls
            .audio(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        out.message().await
    });
    let err = jasper_client::ApiError::from_status(&early.unwrap_err());
    assert_eq!(err.code, "call_state");
    let (_, code, _) = alice.fails(&["call", "accept", &call.id]);
    assert_eq!(code, "call_state");

    let accepted = bob.ok(&["call", "accept", &call.id]);
    assert_eq!(accepted[0]["state"], "active");
    wait_until(DELIVERY, "alice to see the call answered", || {
        let calls = rt
            .block_on(a.calls.list(pb::ListCallsRequest {}))
            .ok()?
            .into_inner()
            .calls;
        calls
            .into_iter()
            .find(|c| c.id == call.id && c.state() == pb::CallState::Active)
    });

    // Both sides open their audio streams; alice sends a known sequence, bob a shorter one.
    let frames: Vec<Vec<u8>> = (0..100u32)
        .map(|i| format!("opus-frame-{i:03}").into_bytes())
        .collect();
    let (received_by_bob, received_by_alice) = rt.block_on(async {
        let (b_tx, mut b_out) = open_audio(&mut b, &call.id).await;
        let (a_tx, mut a_out) = open_audio(&mut a, &call.id).await;
        for f in &frames {
            a_tx.send(pb::AudioIn {
                call_id: String::new(),
                frame: Some(pb::AudioFrame {
                    opus: f.clone(),
                    duration_us: 20_000,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for i in 0..10u8 {
            b_tx.send(pb::AudioIn {
                call_id: String::new(),
                frame: Some(pb::AudioFrame {
                    opus: vec![i; 60],
                    duration_us: 20_000,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        }
        let mut at_bob = Vec::new();
        while at_bob.len() < frames.len() {
            match tokio::time::timeout(Duration::from_secs(10), b_out.message()).await {
                Ok(Ok(Some(m))) => at_bob.push(m.frame.unwrap()),
                other => panic!(
                    "bob's audio stream stopped early: {other:?} after {}",
                    at_bob.len()
                ),
            }
        }
        let mut at_alice = Vec::new();
        while at_alice.len() < 10 {
            match tokio::time::timeout(Duration::from_secs(10), a_out.message()).await {
                Ok(Ok(Some(m))) => at_alice.push(m.frame.unwrap()),
                other => panic!("alice's audio stream stopped early: {other:?}"),
            }
        }
        // Bob's frontend reopens its stream: the new one takes the audio over, the old one ends.
        let (_b_tx2, mut b_out2) = open_audio(&mut b, &call.id).await;
        let old = tokio::time::timeout(Duration::from_secs(10), b_out.message()).await;
        assert!(
            matches!(old, Ok(Ok(None))),
            "the replaced stream did not end: {old:?}"
        );
        for i in 0..5u8 {
            a_tx.send(pb::AudioIn {
                call_id: String::new(),
                frame: Some(pb::AudioFrame {
                    opus: vec![0xa0 + i; 20],
                    duration_us: 20_000,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        }
        for i in 0..5u8 {
            let m = tokio::time::timeout(Duration::from_secs(10), b_out2.message()).await;
            match m {
                Ok(Ok(Some(m))) => assert_eq!(m.frame.unwrap().opus, vec![0xa0 + i; 20]),
                other => panic!("the new stream got {other:?}"),
            }
        }
        // Hanging up ends the call on both sides, and bob's stream with it.
        a.calls
            .hang_up(pb::HangUpRequest {
                call_id: call.id.clone(),
            })
            .await
            .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), b_out2.message()).await;
        assert!(
            matches!(end, Ok(Ok(None))),
            "bob's stream did not end: {end:?}"
        );
        (at_bob, at_alice)
    });
    let got: Vec<Vec<u8>> = received_by_bob.iter().map(|f| f.opus.clone()).collect();
    assert_eq!(got, frames, "bob heard something else, or out of order");
    assert!(
        received_by_bob
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1)
    );
    assert!(
        received_by_bob
            .windows(2)
            .all(|w| w[1].rtp_timestamp.wrapping_sub(w[0].rtp_timestamp) == 960)
    );
    let back: Vec<Vec<u8>> = received_by_alice.iter().map(|f| f.opus.clone()).collect();
    assert_eq!(back, (0..10u8).map(|i| vec![i; 60]).collect::<Vec<_>>());

    let ended = wait_until(DELIVERY, "bob's call to end", || {
        bob.ok(&["call", "list"])
            .as_array()?
            .iter()
            .find(|c| c["id"] == call.id.as_str() && c["state"] == "ended")
            .cloned()
    });
    assert_eq!(ended["end_reason"], "remote_hung_up");
    let mine = &alice.ok(&["call", "list"])[0];
    assert_eq!(mine["state"], "ended");
    assert_eq!(mine["end_reason"], "hung_up");
    let (_, code, _) = alice.fails(&["call", "hangup", &call.id]);
    assert_eq!(code, "call_state");
    bob_events.stop();

    // A second call that bob rejects.
    let second = alice.ok(&["call", "start", "bob"]);
    let second_id = second[0]["id"].as_str().unwrap().to_owned();
    wait_until(DELIVERY, "the second call to ring at bob's", || {
        bob.jasper(&["call", "reject", &second_id])
            .success()
            .then_some(())
    });
    wait_until(DELIVERY, "alice to see the rejection", || {
        alice
            .ok(&["call", "list"])
            .as_array()?
            .iter()
            .find(|c| c["id"] == second_id.as_str() && c["end_reason"] == "rejected")
            .cloned()
    });
}

#[test]
fn without_consent_on_both_sides_no_ice_traffic_happens_at_all() {
    let Two {
        root,
        mesh,
        stun,
        alice,
        bob,
        ..
    } = two();
    let probes = stun.bindings();

    // Messages both ways, transparent mode off everywhere.
    let m = alice.ok(&["send", "--to", "bob", "plain"]);
    bob.wait_for_message("alice", m["id"].as_str().unwrap(), DELIVERY);
    let r = bob.ok(&["send", "--to", "alice", "plain back"]);
    alice.wait_for_message("bob", r["id"].as_str().unwrap(), DELIVERY);
    // Alice consents, bob never does: still nothing.
    alice.ok(&["transparent", "enable", "bob"]);
    wait_until(DELIVERY, "bob to hear alice's consent", || {
        Some(state(&bob, "alice")).filter(|s| s["peer_enabled"] == true)
    });
    let m2 = alice.ok(&["send", "--to", "bob", "still plain"]);
    bob.wait_for_message("alice", m2["id"].as_str().unwrap(), DELIVERY);
    assert_eq!(state(&alice, "bob")["state"], "waiting_for_peer");
    assert_eq!(state(&bob, "alice")["state"], "off");
    let routes = alice.ok(&["routes", m2["id"].as_str().unwrap()]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["relay"] != "webrtc")
    );

    // Refusals name their cause.
    let (code, reason, _) = bob.fails(&["call", "start", "alice"]);
    assert_eq!((code, reason.as_str()), (1, "transparent_off"));
    let (_, reason, _) = alice.fails(&["transparent", "open", "bob", "--wait-ms", "100"]);
    assert_eq!(reason, "transparent_off");
    let (_, reason, _) = alice.fails(&["transparent", "enable", "carol"]);
    assert_eq!(reason, "unknown_contact");
    let (_, reason, _) = alice.fails(&["call", "accept", "no-such-call"]);
    assert_eq!(reason, "unknown_call");

    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stun.bindings(),
        probes,
        "a STUN request was made without consent"
    );
    for d in [&alice, &bob] {
        assert_eq!(
            udp_sockets(d.pid().unwrap()),
            0,
            "{} opened a UDP socket",
            d.name
        );
    }

    // A STUN URL the library cannot serve is refused at start-up, with the reason.
    let mut opts = DaemonOptions::for_mesh(&mesh);
    opts.extra = vec!["--stun".into(), "stuns:127.0.0.1:5349".into()];
    let mut bad = Daemon::new(root.path(), "bad", opts);
    let err = bad.try_spawn().unwrap_err();
    let log = bad.log();
    assert!(
        log.contains("stuns:") && log.contains("not supported"),
        "{err}\n{log}"
    );
}

/// The relay route a copy of `id` to `key` took (`None` while unsent, `Some("webrtc")` direct).
fn route_to(d: &Daemon, id: &str, key: &str) -> Option<String> {
    d.ok(&["routes", id])
        .as_array()?
        .iter()
        .find(|r| r["recipient"] == key)?["relay"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn the_relays_carry_messages_when_the_direct_path_never_comes_up_or_dies_silently() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let stun = StunServer::start(root.path());
    let alice = transparent_daemon(root.path(), "alice", &mesh, &stun);
    let mut bob = transparent_daemon(root.path(), "bob", &mesh, &stun);
    // Carol's only WebRTC address is not on this machine: her side of a session cannot exist.
    let mut opts = DaemonOptions::for_mesh(&mesh);
    opts.extra = vec![
        "--stun".into(),
        stun.url.clone(),
        "--webrtc-bind".into(),
        "203.0.113.77:0".into(),
    ];
    let carol = Daemon::start_with(root.path(), "carol", opts);
    alice.create_identity();
    let b_key = bob.create_identity();
    let c_key = carol.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");

    // Never comes up: both consent, messages still arrive, through the relays.
    alice.ok(&["transparent", "enable", "carol"]);
    carol.ok(&["transparent", "enable", "alice"]);
    wait_until(DELIVERY, "alice to hear carol's consent", || {
        Some(state(&alice, "carol")).filter(|s| s["peer_enabled"] == true)
    });
    for text in ["one", "two"] {
        let m = alice.ok(&["send", "--to", "carol", text]);
        let id = m["id"].as_str().unwrap().to_owned();
        carol.wait_for_message("alice", &id, DELIVERY);
        let route = wait_until(DELIVERY, "the copy to carol to be sent", || {
            route_to(&alice, &id, &c_key)
        });
        assert!(mesh.addrs().contains(&route), "{route}");
    }
    assert_ne!(state(&alice, "carol")["state"], "connected");

    // Dies silently: bob's daemon is killed while the session is up. Alice's next message finds
    // no acknowledgement on the channel and goes through the relays; bob gets it on restart,
    // and the session comes back by itself.
    alice.ok(&["transparent", "enable", "bob"]);
    bob.ok(&["transparent", "enable", "alice"]);
    wait_state(&alice, "bob", "connected");
    bob.kill9();
    let m = alice.ok(&["send", "--to", "bob", "are you there?"]);
    let id = m["id"].as_str().unwrap().to_owned();
    let route = wait_until(DELIVERY, "the copy to bob to fall back to a relay", || {
        route_to(&alice, &id, &b_key)
    });
    assert!(mesh.addrs().contains(&route), "{route}");
    bob.restart();
    let got = bob.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(got["content"], "are you there?");
    wait_state(&alice, "bob", "connected");
    wait_state(&bob, "alice", "connected");
    let again = alice.ok(&["send", "--to", "bob", "back to direct"]);
    let again_id = again["id"].as_str().unwrap().to_owned();
    bob.wait_for_message("alice", &again_id, DELIVERY);
    wait_until(DELIVERY, "the next message to go direct", || {
        (route_to(&alice, &again_id, &b_key).as_deref() == Some("webrtc")).then_some(())
    });
}
