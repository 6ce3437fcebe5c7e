//! The privacy invariant, proven by attributing every request: no relay may see two distinct
//! public keys from one client (its own and a contact's, or two contacts').
//!
//! Each daemon reaches each relay of a real, peered mesh through its own logging proxy
//! (`common::proxy`): it is started with `--relay` = its proxies only and without
//! `--allow-private-relays`, so the loopback relays it learns through `/sync/servers` are
//! refused and every request it makes is logged. From the logs we compute, per (daemon, relay),
//! the keys that relay saw from that daemon: `/send` names its recipient, `/fetch {recipient}`
//! that key, `/fetch {hashes}` the recipient of each hash (a hash never seen sent or served is
//! an unattributable linkage and fails too). Also checked: daemons post no server list in
//! `/sync/servers` (their relay list is a fingerprint) and know no relay but their proxies.
//!
//! Scenario A has enough relays for everything (DMs, an edit, a reaction, a delete, a group of
//! three, a second login, a TX relay that acknowledges and drops, transparent-mode signaling).
//! B and C have too few relays: strict mode (the default) holds the message that would link two
//! keys (`waiting`) until a relay is added; relaxed mode sends it through a shared relay and
//! `jasper relays anonymity` must report exactly the sharing the proxies saw.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::{Proxies, canonical_key, short_key};
use common::*;
use serde_json::Value;

const DELIVERY: Duration = Duration::from_secs(45);

/// Flags transparent mode needs on loopback (no STUN server: signals are packets via relays).
const TRANSPARENT: &[&str] = &["--webrtc-bind", "127.0.0.1:0"];

/// Starts `name` with one proxy per relay of `relays` as its only relays, learning none.
fn start_daemon(
    root: &Path,
    name: &str,
    proxies: &mut Proxies,
    relays: &[String],
    extra: &[&str],
) -> Daemon {
    let addrs = proxies.start_for(name, relays);
    Daemon::start_with(
        root,
        name,
        DaemonOptions {
            relays: addrs,
            allow_private_relays: false,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            ..DaemonOptions::default()
        },
    )
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("a message id").to_owned()
}

fn send(d: &Daemon, to: &str, text: &str) -> String {
    id_of(&d.ok(&["send", "--to", to, text]))
}

fn group_send(d: &Daemon, group: &str, text: &str) -> String {
    id_of(&d.ok(&["group", "send", group, text]))
}

/// Waits until `check` holds for message `id` in `d`'s conversation `with`.
fn wait_message(d: &Daemon, with: &str, id: &str, what: &str, check: impl Fn(&Value) -> bool) {
    wait_until(DELIVERY, &format!("{what} at {}", d.name), || {
        d.find_message(with, id).filter(|m| check(m)).map(|_| ())
    });
}

/// The relay (a proxy address) of the route of message `id` towards `recipient`, once routed.
fn route_relay(d: &Daemon, id: &str, recipient: &str) -> Option<String> {
    let routes = d.ok(&["routes", id]);
    routes
        .as_array()?
        .iter()
        .find(|r| r["recipient"].as_str().map(canonical_key) == Some(canonical_key(recipient)))?
        ["relay"]
        .as_str()
        .map(str::to_owned)
}

/// Every relay `d` knows is one of its own proxies: no request reached a relay otherwise.
fn assert_only_proxies(d: &Daemon, proxies: &Proxies) {
    let mine: BTreeSet<String> = proxies.addrs_of(&d.name).into_iter().collect();
    let known: BTreeSet<String> = d
        .ok(&["relays", "list"])
        .as_array()
        .expect("relays list is an array")
        .iter()
        .filter_map(|r| r["address"].as_str().map(str::to_owned))
        .collect();
    let strangers: Vec<&String> = known.difference(&mine).collect();
    assert!(
        strangers.is_empty(),
        "{} knows relays that are not its proxies (requests to them are not logged): \
         {strangers:?}; its proxies: {mine:?}",
        d.name
    );
}

/// The keys of a report's roles list (`roles`, `waiting`, or a shared relay's `roles`).
fn role_keys(roles: &Value) -> BTreeSet<String> {
    roles
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["key"].as_str().map(canonical_key))
        .collect()
}

fn anonymity(d: &Daemon) -> Value {
    d.ok(&["relays", "anonymity"])
}

struct People {
    own: HashMap<String, String>,
    names: Vec<(&'static str, String)>,
}

impl People {
    fn names(&self) -> Vec<(&str, &str)> {
        self.names.iter().map(|(n, k)| (*n, k.as_str())).collect()
    }

    fn assert_no_linkage(&self, proxies: &Proxies, daemons: &[&str]) {
        proxies.assert_no_linkage(daemons, &self.own, &self.names());
    }
}

/// Three daemons over `relays` relays with identities; alice befriends bob and carol.
struct Trio {
    alice: Daemon,
    bob: Daemon,
    carol: Daemon,
    people: People,
    proxies: Proxies,
    mesh: Mesh,
    root: tempfile::TempDir,
}

fn trio(relays: usize, alice_extra: &[&str]) -> Trio {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), relays);
    let addrs = mesh.addrs();
    let mut proxies = Proxies::new();
    let alice = start_daemon(root.path(), "alice", &mut proxies, &addrs, alice_extra);
    let bob = start_daemon(root.path(), "bob", &mut proxies, &addrs, &[]);
    let carol = start_daemon(root.path(), "carol", &mut proxies, &addrs, &[]);
    let a_key = alice.create_identity();
    let b_key = bob.create_identity();
    let c_key = carol.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");
    let people = People {
        own: [
            ("alice".to_owned(), a_key.clone()),
            ("bob".to_owned(), b_key.clone()),
            ("carol".to_owned(), c_key.clone()),
        ]
        .into(),
        names: vec![("alice", a_key), ("bob", b_key), ("carol", c_key)],
    };
    Trio {
        alice,
        bob,
        carol,
        people,
        proxies,
        mesh,
        root,
    }
}

fn key_of<'a>(people: &'a People, name: &str) -> &'a str {
    &people.own[name]
}

#[test]
fn scenario_a_with_enough_relays_no_relay_sees_two_keys_of_one_client() {
    let root = tempfile::tempdir().unwrap();
    // Each daemon needs 1 RX + 1 TX for its SENT copies + 1 TX per contact it writes to (alice,
    // bob, carol: 4 each), plus a spare for the re-send around the dropping relay.
    let mesh = Mesh::start(root.path(), 8);
    let addrs = mesh.addrs();
    let mut proxies = Proxies::new();
    let alice = start_daemon(root.path(), "alice", &mut proxies, &addrs, TRANSPARENT);
    let alice2 = start_daemon(root.path(), "alice2", &mut proxies, &addrs, &[]);
    let bob = start_daemon(root.path(), "bob", &mut proxies, &addrs, TRANSPARENT);
    let carol = start_daemon(root.path(), "carol", &mut proxies, &addrs, &[]);

    let a_key = alice.create_identity();
    let pem = alice.ok(&["identity", "export"])["pkcs8_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let imported = alice2.jasper_with_stdin(&["identity", "import", "-"], Some(&pem));
    assert!(imported.success(), "{imported:?}");
    assert_eq!(alice2.public_key(), a_key);
    let b_key = bob.create_identity();
    let c_key = carol.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");
    befriend(&bob, "bob", &carol, "carol");
    alice2.ok(&["contact", "add", &b_key, "--name", "bob"]);
    alice2.ok(&["contact", "add", &c_key, "--name", "carol"]);
    let people = People {
        own: [
            ("alice".to_owned(), a_key.clone()),
            ("alice2".to_owned(), a_key.clone()),
            ("bob".to_owned(), b_key.clone()),
            ("carol".to_owned(), c_key.clone()),
        ]
        .into(),
        names: vec![
            ("alice", a_key.clone()),
            ("bob", b_key.clone()),
            ("carol", c_key.clone()),
        ],
    };

    // DMs both ways.
    let m1 = send(&alice, "bob", "hello bob");
    bob.wait_for_message("alice", &m1, DELIVERY);
    let r1 = send(&bob, "alice", "hi alice");
    alice.wait_for_message("bob", &r1, DELIVERY);

    // Alice's TX relay for bob acknowledges and drops the next packet: alice re-sends it
    // through another relay and bob gets it anyway.
    let tx = wait_until(
        DELIVERY,
        "the route of alice's first message to bob",
        || route_relay(&alice, &m1, &b_key),
    );
    let dropper = proxies
        .by_addr(&tx)
        .unwrap_or_else(|| panic!("alice's TX relay {tx} is not one of the proxies"));
    assert_eq!(
        dropper.daemon, "alice",
        "alice routed through a proxy of another daemon"
    );
    dropper.drop_next_sends(1);
    let dropper_relay = dropper.relay;
    let m2 = send(&alice, "bob", "second, through a relay that drops it");
    let got = bob.wait_for_message("alice", &m2, DELIVERY);
    assert_eq!(got["content"], "second, through a relay that drops it");
    assert_eq!(
        proxies.get("alice", dropper_relay).sends_left_to_drop(),
        0,
        "the dropping proxy never got a send"
    );
    assert!(
        proxies
            .log()
            .iter()
            .any(|e| e.dropped && e.daemon == "alice" && e.relay == dropper_relay),
        "no send was dropped"
    );

    // An edit, a reaction, a delete.
    alice.ok(&["edit", &m1, "hello bob, edited"]);
    bob.ok(&["react", &m1, ":tada:"]);
    let doomed = send(&bob, "alice", "this one gets deleted");
    alice.wait_for_message("bob", &doomed, DELIVERY);
    bob.ok(&["delete", &doomed]);
    wait_message(&bob, "alice", &m1, "the edit", |m| {
        m["content"] == "hello bob, edited"
    });
    wait_message(&alice, "bob", &m1, "the reaction", |m| {
        m["reactions"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["reaction"] == ":tada:"))
    });
    wait_message(&alice, "bob", &doomed, "the deletion", |m| {
        m["deleted"] == true
    });

    // A group of three; each member sends once.
    alice.ok(&[
        "group", "create", "trio", "--member", "bob", "--member", "carol",
    ]);
    for d in [&bob, &carol] {
        wait_until(DELIVERY, &format!("the group at {}", d.name), || {
            d.jasper(&["messages", "--with", "trio"])
                .success()
                .then_some(())
        });
    }
    let all = [&alice, &bob, &carol];
    for (i, sender) in all.iter().enumerate() {
        let id = group_send(sender, "trio", &format!("hello trio from {}", sender.name));
        for (j, d) in all.iter().enumerate() {
            if i != j {
                d.wait_for_message("trio", &id, DELIVERY);
            }
        }
    }

    // The second login of alice's key sees her history with bob.
    wait_until(DELIVERY, "alice's history with bob at alice2", || {
        let ms = alice2.messages("bob");
        let has = |id: &str| ms.iter().find(|m| m["id"] == id);
        (has(&m1).is_some_and(|m| m["content"] == "hello bob, edited")
            && has(&m2).is_some()
            && has(&r1).is_some())
        .then_some(())
    });

    // Transparent-mode signaling (packets through relays): each side hears the other's consent.
    // No session needs to come up on loopback.
    alice.ok(&["transparent", "enable", "bob"]);
    bob.ok(&["transparent", "enable", "alice"]);
    for (d, contact) in [(&alice, "bob"), (&bob, "alice")] {
        wait_until(
            DELIVERY,
            &format!("{} to hear {contact}'s transparent-mode consent", d.name),
            || {
                let s = d.ok(&["transparent", "status", contact])[0].clone();
                (s["state"] != "off" && s["state"] != "waiting_for_peer").then_some(())
            },
        );
    }
    // Some more background traffic (discovery, polls, delivery checks) to attribute.
    std::thread::sleep(Duration::from_secs(4));

    eprintln!("scenario A, what the proxies saw:\n{}", proxies.summary());
    for d in [&alice, &alice2, &bob, &carol] {
        assert_only_proxies(d, &proxies);
    }
    people.assert_no_linkage(&proxies, &["alice", "alice2", "bob", "carol"]);
    proxies.assert_no_server_lists();
}

#[test]
fn scenario_b_with_too_few_relays_strict_mode_waits_until_a_relay_is_added() {
    let Trio {
        root,
        mesh,
        mut proxies,
        people,
        alice,
        bob,
        carol,
    } = trio(3, &[]);
    let c_key = key_of(&people, "carol").to_owned();

    // RX + own copies + bob's TX = 3 relays: delivered.
    let m1 = send(&alice, "bob", "hello bob");
    bob.wait_for_message("alice", &m1, DELIVERY);

    // A fourth role (carol's TX) has no relay of its own: the message waits.
    let m2 = send(&alice, "carol", "hello carol, once a relay is free");
    wait_message(&alice, "carol", &m2, "the message to carol waiting", |m| {
        m["state"] == "waiting" && m["failure"].as_str().is_some_and(|f| !f.is_empty())
    });
    let report = anonymity(&alice);
    assert_eq!(report["mode"], "strict", "{report:#}");
    assert!(
        role_keys(&report["waiting"]).contains(&c_key),
        "carol's key is not reported waiting: {report:#}"
    );
    let needed = report["relays_needed"].as_u64().expect("relays_needed");
    let known = report["relays_known"].as_u64().expect("relays_known");
    assert!(
        needed > known,
        "needs {needed} relays, knows {known}: {report:#}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        carol.find_message("alice", &m2).is_none(),
        "the waiting message went out anyway"
    );
    people.assert_no_linkage(&proxies, &["alice", "bob", "carol"]);

    // One more relay (peered with the mesh) and alice's proxy for it: the message goes out.
    let extra = Relay::start(&root.path().join("relay-3"), free_port(), &mesh.addrs());
    let proxy = proxies.start("alice", mesh.relays.len(), &extra.addr());
    alice.ok(&["relays", "add", &proxy]);
    let got = carol.wait_for_message("alice", &m2, DELIVERY);
    assert_eq!(got["content"], "hello carol, once a relay is free");
    wait_until(
        DELIVERY,
        "nothing waiting in alice's anonymity report",
        || {
            let r = anonymity(&alice);
            r["waiting"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));

    eprintln!("scenario B, what the proxies saw:\n{}", proxies.summary());
    for d in [&alice, &bob, &carol] {
        assert_only_proxies(d, &proxies);
    }
    people.assert_no_linkage(&proxies, &["alice", "bob", "carol"]);
    proxies.assert_no_server_lists();
}

#[test]
fn scenario_c_with_too_few_relays_relaxed_mode_reports_exactly_the_sharing_relays_see() {
    let Trio {
        root: _root,
        mesh: _mesh,
        proxies,
        people,
        alice,
        bob,
        carol,
    } = trio(3, &["--anonymity", "relaxed"]);

    let m1 = send(&alice, "bob", "hello bob");
    bob.wait_for_message("alice", &m1, DELIVERY);
    // Four roles on three relays: carol's message goes out through a shared relay.
    let m2 = send(&alice, "carol", "hello carol, through a shared relay");
    let got = carol.wait_for_message("alice", &m2, DELIVERY);
    assert_eq!(got["content"], "hello carol, through a shared relay");

    // What alice reports shared, as (relay, keys), against what the proxies saw: every relay
    // that saw more than one key from alice. Given a few seconds to settle.
    let reported = |r: &Value| -> BTreeSet<(String, BTreeSet<String>)> {
        r["shared"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["relay"].as_str().unwrap_or_default().to_owned(),
                    role_keys(&s["roles"]),
                )
            })
            .collect()
    };
    let observed = || -> BTreeSet<(String, BTreeSet<String>)> {
        proxies
            .attribution()
            .shared("alice")
            .into_iter()
            .map(|(relay, keys)| (proxies.get("alice", relay).addr.clone(), keys))
            .collect()
    };
    let show = |set: &BTreeSet<(String, BTreeSet<String>)>| -> String {
        set.iter()
            .map(|(relay, keys)| {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        let who = people
                            .names
                            .iter()
                            .find(|(_, key)| canonical_key(key) == *k)
                            .map_or("unknown", |(n, _)| n);
                        format!("{} ({who})", short_key(k))
                    })
                    .collect();
                format!("{relay}: {}", keys.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = anonymity(&alice);
        assert_eq!(report["mode"], "relaxed", "{report:#}");
        let (rep, obs) = (reported(&report), observed());
        if rep == obs && !rep.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's reported shared relays differ from what the relays saw:\n  reported: {}\n  \
             seen by the proxies: {}\n  report: {report:#}",
            show(&rep),
            show(&obs)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    eprintln!("scenario C, what the proxies saw:\n{}", proxies.summary());
    for d in [&alice, &bob, &carol] {
        assert_only_proxies(d, &proxies);
    }
    people.assert_no_linkage(&proxies, &["bob", "carol"]);
    proxies.assert_no_server_lists();
}
