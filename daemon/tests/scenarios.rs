//! Whole-product scenarios with real daemons, relays, key stores and a real session bus:
//! a three-member group, a crash right after `send`, two logins of one key, the private key
//! living only in the OS key store, and a desktop notification.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const DELIVERY: Duration = Duration::from_secs(45);

fn message(d: &Daemon, with: &str, id: &str) -> Option<Value> {
    d.messages(with).into_iter().find(|m| m["id"] == id)
}

#[test]
fn a_group_of_three_fans_out_over_distinct_relays_and_edits_deletes_reactions_arrive() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 5);
    let alice = Daemon::start(root.path(), "alice", &mesh);
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let carol = Daemon::start(root.path(), "carol", &mesh);
    for d in [&alice, &bob, &carol] {
        d.create_identity();
    }
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");
    befriend(&bob, "bob", &carol, "carol");

    alice.ok(&[
        "group", "create", "trio", "--member", "bob", "--member", "carol",
    ]);
    for d in [&bob, &carol] {
        wait_until(DELIVERY, &format!("the group at {}", d.name), || {
            let out = d.jasper(&["messages", "--with", "trio"]);
            out.success().then_some(())
        });
    }
    let sent = alice.ok(&["group", "send", "trio", "hello trio"]);
    let id = sent["id"].as_str().unwrap().to_owned();
    // Every copy through a different TX relay.
    let rt = runtime();
    let mut client = alice.client(&rt);
    let routes = wait_until(DELIVERY, "routes of the group message", || {
        let routes = rt
            .block_on(
                client
                    .messages
                    .routes(jasper_proto::v1::MessageRoutesRequest { id: id.clone() }),
            )
            .unwrap()
            .into_inner()
            .routes;
        routes.iter().all(|r| r.relay.is_some()).then_some(routes)
    });
    assert_eq!(routes.len(), 2);
    assert_ne!(
        routes[0].relay, routes[1].relay,
        "two copies through one relay"
    );

    for d in [&bob, &carol] {
        d.wait_for_message("trio", &id, DELIVERY);
    }
    alice.ok(&["edit", &id, "hello trio, edited"]);
    bob.ok(&["react", &id, ":tada:"]);
    let (code, reason, _) = carol.fails(&["edit", &id, "not mine"]);
    assert_ne!(code, 0);
    assert_eq!(reason, "not_author");
    for d in [&alice, &bob, &carol] {
        wait_until(
            DELIVERY,
            &format!("edit and reaction at {}", d.name),
            || {
                let m = message(d, "trio", &id)?;
                (m["content"] == "hello trio, edited"
                    && m["reactions"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x["reaction"] == ":tada:")))
                .then_some(())
            },
        );
    }
    alice.ok(&["delete", &id]);
    for d in [&alice, &bob, &carol] {
        wait_until(DELIVERY, &format!("deletion at {}", d.name), || {
            message(d, "trio", &id)
                .filter(|m| m["deleted"] == true && m["content"] == "")
                .map(|_| ())
        });
    }
}

#[test]
fn a_crash_right_after_send_delivers_the_message_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let mut alice = Daemon::start(root.path(), "alice", &mesh);
    let bob = Daemon::start(root.path(), "bob", &mesh);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    let mut ids = Vec::new();
    for i in 0..3 {
        let m = alice.ok(&[
            "send",
            "--to",
            "bob",
            &format!("sent just before a crash {i}"),
        ]);
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    alice.kill9();
    alice.restart();
    for id in &ids {
        bob.wait_for_message("alice", id, DELIVERY);
    }
    // Give duplicates a chance to show up, then count.
    std::thread::sleep(Duration::from_secs(3));
    let messages = bob.messages("alice");
    for id in &ids {
        assert_eq!(
            messages.iter().filter(|m| m["id"] == id.as_str()).count(),
            1,
            "{id} not exactly once"
        );
    }
    assert_eq!(messages.len(), 3);
    wait_until(DELIVERY, "alice's messages to become visible", || {
        ids.iter()
            .all(|id| message(&alice, "bob", id).is_some_and(|m| m["state"] == "visible"))
            .then_some(())
    });
}

#[test]
fn two_daemons_holding_the_same_key_end_with_identical_histories() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let phone = Daemon::start(root.path(), "phone", &mesh);
    let laptop = Daemon::start(root.path(), "laptop", &mesh);
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let key = phone.create_identity();
    let pem = phone.ok(&["identity", "export"])["pkcs8_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let imported = laptop.jasper_with_stdin(&["identity", "import", "-"], Some(&pem));
    assert!(imported.success(), "{imported:?}");
    assert_eq!(laptop.public_key(), key);
    bob.create_identity();
    befriend(&phone, "me", &bob, "bob");
    laptop.ok(&["contact", "add", &bob.public_key(), "--name", "bob"]);

    let m1 = phone.ok(&["send", "--to", "bob", "one, from the phone"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m2 = bob.ok(&["send", "--to", "me", "two, from bob"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    laptop.wait_for_message("bob", &m1, DELIVERY);
    laptop.wait_for_message("bob", &m2, DELIVERY);
    let m3 = laptop.ok(&["send", "--to", "bob", "three, from the laptop"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    phone.wait_for_message("bob", &m3, DELIVERY);
    laptop.ok(&["edit", &m1, "one, edited on the laptop"]);
    bob.ok(&["react", &m3, ":ok:"]);
    phone.ok(&["react", &m2, ":heart:"]);

    let view = |d: &Daemon| -> Vec<Value> {
        d.messages("bob")
            .into_iter()
            .map(|m| {
                serde_json::json!([
                    m["id"],
                    m["sender"],
                    m["content"],
                    m["outgoing"],
                    m["edited"],
                    m["reactions"]
                ])
            })
            .collect()
    };
    wait_until(DELIVERY, "both logins to converge", || {
        let (p, l) = (view(&phone), view(&laptop));
        let settled = p.len() == 3
            && p.iter().any(|m| m[2] == "one, edited on the laptop")
            && p.iter().all(|m| m[5].as_array().is_some())
            && p.iter()
                .map(|m| m[5].as_array().map_or(0, Vec::len))
                .sum::<usize>()
                == 2;
        (settled && p == l).then_some(())
    });
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The private key's base64 body lines, and its DER.
fn key_fingerprints(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap();
    let mut needles: Vec<Vec<u8>> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 48)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    // The private exponent region of the DER (well past the public modulus).
    needles.push(der[der.len() / 2..der.len() / 2 + 64].to_vec());
    needles
}

fn assert_no_private_key_in(dir: &std::path::Path, pem: &str) {
    let needles = key_fingerprints(pem);
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} contains private key material",
                file.display()
            );
        }
    }
}

fn require_secret_service() {
    assert!(
        std::env::var_os("JASPER_TEST_SECRET_SERVICE").is_some(),
        "needs a running Secret Service: run through scripts/test.sh (scripts/with-secret-service.sh)"
    );
}

#[test]
fn the_private_key_lives_in_the_secret_service_and_never_in_the_data_directory() {
    require_secret_service();
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 2);
    let opts = DaemonOptions {
        key_store: Some("secret-service".into()),
        ..DaemonOptions::for_mesh(&mesh)
    };
    let mut alice = Daemon::start_with(root.path(), "alice", opts);
    let key = alice.create_identity();
    assert_eq!(
        alice.ok(&["identity", "show"])["key_store"],
        "secret-service"
    );
    let pem = alice.ok(&["identity", "export"])["pkcs8_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read back independently of our code.
    let search = std::process::Command::new("secret-tool")
        .args(["search", "--all", "--unlock", "service", "jasper"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&search.stdout).to_string()
        + &String::from_utf8_lossy(&search.stderr);
    let account = listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("attribute.username = "))
        .find(|acct| {
            let out = std::process::Command::new("secret-tool")
                .args(["lookup", "service", "jasper", "username", acct])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == pem.trim()
        });
    assert!(
        account.is_some(),
        "no Secret Service item holds the key: {listing}"
    );
    assert_no_private_key_in(&alice.dir, &pem);
    // A restarted daemon gets its identity back from the Secret Service.
    alice.stop();
    alice.restart();
    assert_eq!(alice.public_key(), key);
}

#[test]
fn the_private_key_lives_in_keyutils_and_never_in_the_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 2);
    let mut alice = Daemon::start(root.path(), "alice", &mesh);
    let key = alice.create_identity();
    assert_eq!(alice.ok(&["identity", "show"])["key_store"], "keyutils");
    let pem = alice.ok(&["identity", "export"])["pkcs8_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_no_private_key_in(&alice.dir, &pem);
    alice.kill9();
    alice.restart();
    assert_eq!(alice.public_key(), key);
    // Two daemons side by side never share a key entry.
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let bob_key = bob.create_identity();
    assert_ne!(bob_key, key);
    assert_eq!(alice.public_key(), key);
}

/// A minimal org.freedesktop.Notifications server on the session bus, recording calls.
struct NotificationServer {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl NotificationServer {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut seen = self.seen.lock().unwrap();
        seen.push((app_name, summary, body));
        seen.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "jasper-test".into(),
            "jasper".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    fn close_notification(&self, _id: u32) {}
}

#[test]
fn an_incoming_message_raises_a_notification_on_the_session_bus() {
    require_secret_service();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _bus = zbus::blocking::connection::Builder::session()
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            NotificationServer { seen: seen.clone() },
        )
        .unwrap()
        .build()
        .expect("a session bus (scripts/with-secret-service.sh provides one)");
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let opts = DaemonOptions {
        notifications: true,
        ..DaemonOptions::for_mesh(&mesh)
    };
    let bob = Daemon::start_with(root.path(), "bob", opts);
    let alice = Daemon::start(root.path(), "alice", &mesh);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    alice.ok(&["send", "--to", "bob", "ping with a notification"]);
    wait_until(DELIVERY, "a notification", || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(_, summary, body)| summary == "alice" && body == "ping with a notification")
            .cloned()
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "Jasper");
    assert_eq!(
        seen.len(),
        1,
        "one notification per incoming message, none for our own"
    );
}

#[test]
fn a_tx_relay_that_drops_messages_is_routed_around_and_the_message_still_arrives() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let rt = runtime();
    let addrs = mesh.addrs();
    // Alice knows three real relays and learns no others (loopback addresses are not
    // learned): her RX, her own copies' TX and carol's TX take them all.
    let opts = DaemonOptions {
        relays: addrs[..3].to_vec(),
        allow_private_relays: false,
        ..DaemonOptions::default()
    };
    let alice = Daemon::start_with(root.path(), "alice", opts);
    let bob = Daemon::start_with(
        root.path(),
        "bob",
        DaemonOptions {
            relays: addrs[1..].to_vec(),
            ..DaemonOptions::default()
        },
    );
    let carol = Daemon::start_with(
        root.path(),
        "carol",
        DaemonOptions {
            relays: addrs[1..].to_vec(),
            ..DaemonOptions::default()
        },
    );
    alice.create_identity();
    bob.create_identity();
    carol.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");
    let first = alice.ok(&["send", "--to", "carol", "takes the last free relay"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    carol.wait_for_message("alice", &first, DELIVERY);
    // The dropper is then the only relay free for bob's TX assignment.
    let dropper = dropping_relay_on(&rt);
    alice.ok(&["relays", "add", &dropper]);
    let id = alice.ok(&["send", "--to", "bob", "through a relay that drops it"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(DELIVERY, "the first route through the dropper", || {
        let routes = alice.ok(&["routes", &id]);
        routes
            .as_array()?
            .iter()
            .any(|r| r["relay"] == dropper.as_str())
            .then_some(())
    });
    // A relay that has seen no key of alice's, for the re-send (strict anonymity: each of the
    // others has seen one of her keys already).
    alice.ok(&["relays", "add", &addrs[3]]);
    let got = bob.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(got["content"], "through a relay that drops it");
    // The route is recorded when the new relay's acknowledgement is processed, which may come
    // after bob already fetched the copy: wait for it, and for the message to be visible.
    wait_until(DELIVERY, "the re-sent copy visible", || {
        message(&alice, "bob", &id)
            .is_some_and(|m| m["state"] == "visible")
            .then_some(())
    });
    let routes = alice.ok(&["routes", &id]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["relay"] != dropper.as_str()),
        "still routed through the dropper: {routes}"
    );
    let relays = alice.ok(&["relays", "list"]);
    let bad = relays
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == dropper.as_str())
        .unwrap()
        .clone();
    assert_eq!(bad["suspect"], true, "{bad}");
    assert!(bad["lost"].as_u64().unwrap() >= 1, "{bad}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        bob.messages("alice")
            .iter()
            .filter(|m| m["id"] == id.as_str())
            .count(),
        1
    );
}
