//! A mesh of three real relays on loopback: broadcast, catch-up by hash sync after downtime,
//! server-list convergence, and global expiry that sync never undoes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

struct Mesh {
    relays: Vec<Relay>,
    _dir: tempfile::TempDir,
}

/// Three relays, each configured with the other two.
fn full_mesh(extra: &[&str]) -> Mesh {
    full_mesh_of(3, extra)
}

/// `n` relays, each configured with all the others.
fn full_mesh_of(n: usize, extra: &[&str]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let relays = (0..n)
        .map(|i| {
            let mut args: Vec<String> = Vec::new();
            for (j, p) in ports.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("127.0.0.1:{p}"));
                }
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Relay::start_on(ports[i], &dir.path().join(format!("r{i}")), &args)
        })
        .collect();
    Mesh { relays, _dir: dir }
}

#[tokio::test]
async fn a_message_sent_to_one_relay_reaches_the_others_by_broadcast() {
    // Sync only every minute: within a second, only the broadcast can have moved it.
    let mesh = full_mesh(&["--sync-interval", "60"]);
    let (a, c) = (&mesh.relays[0], &mesh.relays[2]);
    tokio::time::sleep(Duration::from_millis(300)).await; // let the start-up sync round pass
    let p = packet(&recipients()[0], "broadcast me");
    assert_eq!(send(a, &p).await.0, 200);
    assert!(
        eventually(Duration::from_secs(1), || holds(c, &p.hash)).await,
        "C did not get it by broadcast"
    );
    assert!(holds(&mesh.relays[1], &p.hash).await);
    // C serves it to its recipient like any other message, with A's expiry.
    assert_eq!(hashes_for(c, &recipients()[0]).await, vec![p.hash.clone()]);
    let (_, at_a) = post(&a.url("/fetch"), &json!({ "hashes": [p.hash] })).await;
    let (_, at_c) = post(&c.url("/fetch"), &json!({ "hashes": [p.hash] })).await;
    assert_eq!(
        at_a["messages"][0]["expires_at"],
        at_c["messages"][0]["expires_at"]
    );
}

#[tokio::test]
async fn a_relay_that_was_down_catches_up_within_one_sync_interval() {
    let mut mesh = full_mesh(&["--sync-interval", "2"]);
    mesh.relays[2].stop();
    let p = packet(&recipients()[1], "while C was down");
    assert_eq!(send(&mesh.relays[0], &p).await.0, 200);
    assert!(eventually(Duration::from_secs(1), || holds(&mesh.relays[1], &p.hash)).await);
    mesh.relays[2].restart();
    let c = &mesh.relays[2];
    assert!(
        eventually(Duration::from_secs(3), || holds(c, &p.hash)).await,
        "C did not catch up within one sync interval (2 s) after returning"
    );
}

#[tokio::test]
async fn server_lists_converge_along_a_chain() {
    // A knows only B, B knows only C, C knows nobody.
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let fast = ["--server-sync-interval", "1", "--sync-interval", "60"];
    let peer = |p: u16| format!("127.0.0.1:{p}");
    let (b_peer, c_peer) = (peer(pb), peer(pc));
    let a = Relay::start_on(
        pa,
        &dir.path().join("a"),
        &[&["--peer", b_peer.as_str()][..], &fast].concat(),
    );
    let b = Relay::start_on(
        pb,
        &dir.path().join("b"),
        &[&["--peer", c_peer.as_str()][..], &fast].concat(),
    );
    let c = Relay::start_on(pc, &dir.path().join("c"), &fast);
    let knows = |relay: &Relay, other: String| {
        let relay_url = relay.url("/status");
        async move {
            let Ok(resp) = client().get(relay_url).send().await else {
                return false;
            };
            let s: serde_json::Value = resp.json().await.unwrap_or_default();
            s["peers"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["address"] == other.as_str() && p["state"] == "active")
            })
        }
    };
    for (relay, others) in [
        (&a, [peer(pb), peer(pc)]),
        (&b, [peer(pa), peer(pc)]),
        (&c, [peer(pa), peer(pb)]),
    ] {
        for other in others {
            assert!(
                eventually(Duration::from_secs(12), || knows(relay, other.clone())).await,
                "{} never learned {other}",
                relay.addr()
            );
        }
    }
    // Nobody lists itself.
    for relay in [&a, &b, &c] {
        let s = status(relay).await;
        assert!(
            s["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["address"] != relay.addr().as_str())
        );
        assert_eq!(s["peers"].as_array().unwrap().len(), 2);
    }
    // The answer to /sync/servers lists what the caller lacks, ports as strings.
    let (status_code, body) = post(
        &a.url("/sync/servers"),
        &json!({ "servers": [{ "ip": "127.0.0.1", "port": pb }] }),
    )
    .await;
    assert_eq!(status_code, 200);
    let servers = body["servers"].as_array().unwrap();
    assert!(servers.iter().all(|s| s["port"].is_string()));
    assert!(
        servers
            .iter()
            .any(|s| s["port"].as_str() == Some(pc.to_string().as_str()))
    );
    assert!(
        servers
            .iter()
            .all(|s| s["port"].as_str() != Some(pb.to_string().as_str()))
    );
}

#[tokio::test]
async fn expiry_is_global_and_sync_never_resurrects() {
    let mesh = full_mesh(&["--ttl", "2", "--sync-interval", "1"]);
    let p = packet(&recipients()[2], "short-lived");
    assert_eq!(send(&mesh.relays[0], &p).await.0, 200);
    for r in &mesh.relays {
        assert!(eventually(Duration::from_secs(1), || holds(r, &p.hash)).await);
    }
    for r in &mesh.relays {
        assert!(
            eventually(Duration::from_secs(4), || async {
                !holds(r, &p.hash).await
            })
            .await,
            "still held after its TTL"
        );
    }
    // Several sync rounds later it is still gone everywhere...
    tokio::time::sleep(Duration::from_secs(3)).await;
    for r in &mesh.relays {
        assert!(
            !holds(r, &p.hash).await,
            "sync resurrected an expired message"
        );
        assert!(hashes_for(r, &recipients()[2]).await.is_empty());
    }
    // ...and pushing it again (as a lagging peer would) is refused: its hash is remembered.
    for r in &mesh.relays {
        let (status_code, body) = send(r, &p).await;
        assert_eq!(status_code, 410, "{body}");
        assert_eq!(body["error"]["code"], "expired");
    }
}

/// Five relays, each with four peers, so broadcast runs along a tree (`mesh/tree.rs`): the
/// relays agree on the root (the smallest instance id) and the eager links are exactly a tree
/// (4 of the 10), every packet still reaches every relay by broadcast alone (sync is a minute
/// away), and when a relay dies the others still get everything.
#[tokio::test]
async fn broadcast_runs_along_a_spanning_tree_and_heals_around_a_dead_relay() {
    let mut mesh = full_mesh_of(5, &["--sync-interval", "60"]);
    // Peers read each other's /status at start and retry every 5 s until it answers; until
    // then they are pushed everything.
    for r in &mesh.relays {
        let knows_all = eventually(Duration::from_secs(12), || async {
            status(r).await["mesh"]["broadcast"]["tree_peers"] == 4
        });
        assert!(knows_all.await, "{}", status(r).await["mesh"]);
    }
    let keys = recipients();
    let mut sent = Vec::new();
    for i in 0..20 {
        let p = packet(&keys[i % 3], &format!("tree {i}"));
        assert_eq!(send(&mesh.relays[i % 5], &p).await.0, 200);
        sent.push(p.hash);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in &mesh.relays {
        for h in &sent {
            assert!(
                eventually(Duration::from_secs(3), || holds(r, h)).await,
                "{h} missing"
            );
        }
    }
    let mut ids = Vec::new();
    for r in &mesh.relays {
        ids.push(status(r).await["instance"].as_str().unwrap().to_owned());
    }
    let root = ids.iter().min().unwrap().clone();
    let root_at = ids.iter().position(|i| *i == root).unwrap();
    let tree_formed = eventually(Duration::from_secs(5), || async {
        let mut eager_ends = 0;
        for r in &mesh.relays {
            let s = status(r).await;
            let b = &s["mesh"]["broadcast"];
            if b["root"] != root.as_str() {
                return false;
            }
            eager_ends += 4 - b["lazy_peers"].as_array().unwrap().len();
        }
        // Each eager link is seen from both of its ends.
        eager_ends == 2 * 4
    });
    assert!(
        tree_formed.await,
        "{}",
        status(&mesh.relays[0]).await["mesh"]
    );
    for r in &mesh.relays {
        let s = status(r).await;
        assert!(
            s["mesh"]["traffic"]["/send"]["requests"].as_u64().unwrap() > 0,
            "{s}"
        );
    }

    // The root dies: until its stale beacons are dropped and a new root is chosen, the
    // relays it pushed to get packets by grafts from their lazy peers.
    mesh.relays[root_at].crash();
    let alive: Vec<usize> = (0..5).filter(|&i| i != root_at).collect();
    let mut after = Vec::new();
    for i in 0..20 {
        let p = packet(&keys[i % 3], &format!("after the crash {i}"));
        assert_eq!(send(&mesh.relays[alive[i % 4]], &p).await.0, 200);
        after.push(p.hash);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in alive.iter().map(|&i| &mesh.relays[i]) {
        for h in &after {
            assert!(
                eventually(Duration::from_secs(5), || holds(r, h)).await,
                "{h} missing after a relay died"
            );
        }
    }
}

/// `/mesh/announce` is for active peers only, and its body is checked like every other.
#[tokio::test]
async fn mesh_announce_refuses_strangers_and_bad_bodies() {
    let mesh = full_mesh(&["--sync-interval", "60"]);
    let (a, b) = (&mesh.relays[0], &mesh.relays[1]);
    let url = a.url("/mesh/announce");
    let hash = packet(&recipients()[0], "announced").hash;
    let announce = |from: Option<String>, body: Value| {
        let url = url.clone();
        async move {
            let mut req = client().post(&url).json(&body);
            if let Some(f) = from {
                req = req.header("x-jasper-relay", f);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    let (s, v) = announce(None, json!({ "hashes": [hash] })).await;
    assert_eq!((s, code(&v).as_str()), (403, "unknown_peer"), "{v}");
    let (s, v) = announce(Some("127.0.0.1:1".into()), json!({ "hashes": [hash] })).await;
    assert_eq!((s, code(&v).as_str()), (403, "unknown_peer"), "{v}");
    let peer = Some(b.addr());
    let (s, v) = announce(peer.clone(), json!({ "hashes": ["not a hash"] })).await;
    assert_eq!((s, code(&v).as_str()), (400, "invalid_hash"), "{v}");
    let (s, v) = announce(peer.clone(), json!({ "hashes": "x" })).await;
    assert_eq!((s, code(&v).as_str()), (400, "malformed_request"), "{v}");
    let many: Vec<String> = (0..4097)
        .map(|i| packet("k", &i.to_string()).hash)
        .collect();
    let (s, v) = announce(peer.clone(), json!({ "hashes": many })).await;
    assert_eq!((s, code(&v).as_str()), (413, "too_large"), "{v}");
    // A beacon (the sender's place in the broadcast tree) is checked field by field.
    let beacon = json!({ "id": "b1", "root": "a0", "seq": 1, "distance": 1, "parent": "a0" });
    let (s, v) = announce(peer.clone(), json!({ "tree": beacon })).await;
    assert_eq!(
        (s, v["awaited"].as_u64()),
        (200, Some(0)),
        "a beacon alone: {v}"
    );
    for (bad, says) in [
        (
            json!({ "id": "b 1", "root": "a0", "seq": 1, "distance": 1, "parent": "a0" }),
            "tree.id",
        ),
        (
            json!({ "id": "b1", "root": "a0", "seq": 1, "distance": 65, "parent": "a0" }),
            "tree.distance",
        ),
        (
            json!({ "id": "b1", "root": "a0", "seq": 1, "distance": 0, "parent": "a0" }),
            "go together",
        ),
        (
            json!({ "id": "b1", "root": "a0", "seq": -1, "distance": 1, "parent": "a0" }),
            "tree",
        ),
        (
            json!({ "id": "b1", "root": "a0", "distance": 1, "parent": "a0" }),
            "seq",
        ),
        (
            json!({ "id": "b1", "root": "a0", "seq": 1, "distance": 1, "parent": "a0", "x": 1 }),
            "x",
        ),
        (json!("a0"), "tree"),
    ] {
        let (s, v) = announce(peer.clone(), json!({ "hashes": [], "tree": bad })).await;
        assert_eq!((s, code(&v).as_str()), (400, "malformed_request"), "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    // A hash it lacks is awaited; one that never comes is not held against the announcer.
    let (s, v) = announce(peer, json!({ "hashes": [hash] })).await;
    assert_eq!((s, v["awaited"].as_u64()), (200, Some(1)), "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peers = status(a).await["peers"].clone();
    for p in peers.as_array().unwrap() {
        assert_eq!(p["counters"]["false_claims"], 0, "{peers}");
    }
}
