//! End-to-end figures of the engine through real release relays on loopback:
//! delivery latency from `send` to the recipient's event (long-poll, and 1 s polling),
//! packets opened per second (beside `openssl speed rsa4096` in the same run), and a
//! 50-member group send.
//!
//!   cargo build --release -p jasper-relay && cargo bench -p jasper-engine --bench delivery
//!
//! Options after `--`: `--messages N` (default 200).

use jasper_test::engine::befriend;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_engine::{Engine, EngineConfig, EphemeralSecretStore, MessageState};

mod common;
use common::*;

fn config(dir: &Path, relays: &[Relay], long_poll: bool) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.relays = relays.iter().map(|r| r.1.clone()).collect();
    c.allow_private_relays = true;
    c.notifications = false;
    c.poll_interval = Duration::from_secs(1);
    c.long_poll = if long_poll {
        Duration::from_secs(25)
    } else {
        Duration::ZERO
    };
    c
}

async fn latency_run(dir: &Path, relays: &[Relay], long_poll: bool, n: usize) -> Vec<Duration> {
    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = Engine::open(
        config(&dir.join("alice"), relays, long_poll),
        secrets.clone(),
    )
    .await
    .unwrap();
    let bob = Engine::open(config(&dir.join("bob"), relays, long_poll), secrets.clone())
        .await
        .unwrap();
    befriend(&alice, "alice", &bob, "bob").await;
    let mut events = Box::pin(bob.events().subscribe(0));
    // Warm-up: assignments made, connections open.
    let warm = alice.messages().send("bob", "warm-up").await.unwrap();
    wait_for(&mut events, &warm.id).await;
    let out = deliveries(&alice, "bob", &mut events, n, !long_poll).await;
    alice.shutdown();
    bob.shutdown();
    out
}

fn openssl_rsa4096_signs_per_sec() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa4096"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 4096 bits 0.002200s 0.000034s    454.5  29411.8"
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rsa 4096 bits") || l.contains("rsa  4096 bits"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    nums.get(nums.len().checked_sub(2)?).copied()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = messages_arg(200);
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "jasper-engine delivery bench: 4 release relays on loopback, 2 in-process engines, {n} messages per mode\n"
    );

    let lp = latency_run(&dir.path().join("lp"), &relays, true, n).await;
    let poll = latency_run(&dir.path().join("poll"), &relays, false, n.min(60)).await;
    println!("| delivery, send -> recipient event | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| long-poll (TX != RX relay) | {} | {} | {} | {} |",
        lp.len(),
        ms(percentile(&lp, 0.5)),
        ms(percentile(&lp, 0.99)),
        ms(*lp.last().unwrap())
    );
    println!(
        "| 1 s polling | {} | {} | {} | {} |",
        poll.len(),
        ms(percentile(&poll, 0.5)),
        ms(percentile(&poll, 0.99)),
        ms(*poll.last().unwrap())
    );

    // Opening: the recipient's private-key work per packet.
    let alice = jasper_core::PrivateKey::generate().unwrap();
    let bob = jasper_core::PrivateKey::generate().unwrap();
    let inner = jasper_core::protocol::InnerMessage {
        sender: alice.public_key().to_text().to_owned(),
        channel_id: uuid::Uuid::new_v4().to_string(),
        kind: jasper_core::protocol::MessageKind::Message,
        content: "a typical short chat message".into(),
        id: uuid::Uuid::new_v4().to_string(),
        timestamp: jasper_core::protocol::timestamp_now(),
    };
    let packets: Vec<_> = (0..300)
        .map(|_| {
            jasper_core::seal(&alice, &[bob.public_key()], &inner)
                .unwrap()
                .remove(0)
        })
        .collect();
    let started = Instant::now();
    for p in &packets {
        jasper_core::open(&bob, p).unwrap();
    }
    let opened = packets.len() as f64 / started.elapsed().as_secs_f64();
    let openssl = openssl_rsa4096_signs_per_sec();
    println!("\n| opening packets (one core) | per second |");
    println!("|---|---|");
    println!("| `jasper_core::open` (RSA-OAEP decrypt + PSS verify + 2 AES-GCM) | {opened:.0} |");
    match openssl {
        Some(s) => println!("| `openssl speed rsa4096` private-key ops, same run | {s:.0} |"),
        None => println!("| `openssl speed rsa4096` | (openssl not available) |"),
    }

    // A 50-member group send. 52 roles on 4 relays: relaxed anonymity (shared relays) so that
    // the figure is the engine's work, not a wait for 48 more relays.
    let secrets = Arc::new(EphemeralSecretStore::default());
    let mut group_config = config(&dir.path().join("group"), &relays, true);
    group_config.anonymity = jasper_engine::AnonymityMode::Relaxed;
    let sender = Engine::open(group_config, secrets).await.unwrap();
    sender.identity().create().await.unwrap();
    let keys: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| {
                            jasper_core::PrivateKey::generate()
                                .unwrap()
                                .public_key()
                                .to_text()
                                .to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for (i, k) in keys.iter().enumerate() {
        sender
            .contacts()
            .add(k, &format!("member{i}"), None)
            .await
            .unwrap();
    }
    let names: Vec<String> = (0..50).map(|i| format!("member{i}")).collect();
    sender.groups().create("fifty", &names).await.unwrap();
    let started = Instant::now();
    let m = sender
        .messages()
        .send("fifty", "hello fifty")
        .await
        .unwrap();
    let api = started.elapsed();
    let mut sent_at = None;
    loop {
        let state = sender.messages().get(&m.id).unwrap().state;
        if state == MessageState::Sent && sent_at.is_none() {
            sent_at = Some(started.elapsed());
        }
        if state == MessageState::Visible {
            sent_at.get_or_insert(started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "group send did not complete: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let visible = started.elapsed();
    println!("\n| 50-member group send | time |");
    println!("|---|---|");
    println!(
        "| `send` returns (1 signature + 50 OAEP wraps + self-copy, committed) | {} |",
        ms(api)
    );
    println!(
        "| all 50 copies accepted by TX relays | {} |",
        ms(sent_at.unwrap())
    );
    println!("| all 50 copies seen on another relay | {} |", ms(visible));

    // What anyone reading the mesh sees of that one group message: every member's copy, with
    // its global expiry (its entry second) and the length of its signature field (which
    // carries the recipient set). Why the copies are not spaced (docs/threat-model.md).
    let http = reqwest::Client::new();
    let mut entry_secs = Vec::new();
    let mut signature_lens = std::collections::BTreeSet::new();
    for k in &keys {
        let body = serde_json::to_vec(&serde_json::json!({ "recipient": k })).unwrap();
        let bytes = post_json(&http, format!("http://{}/fetch", relays[0].1), body).await;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for p in answer["messages"].as_array().unwrap() {
            entry_secs.push(p["expires_at"].as_u64().unwrap());
            signature_lens.insert(p["signature"].as_str().unwrap().len());
        }
    }
    entry_secs.sort();
    let others = {
        // A DM's signature field, for comparison: one recipient.
        let dm = jasper_core::seal(&alice, &[bob.public_key()], &inner).unwrap();
        dm[0].signature.len()
    };
    println!("\n| the group message as the mesh shows it | value |");
    println!("|---|---|");
    println!("| copies found on one relay | {} |", entry_secs.len());
    println!(
        "| entry seconds spanned (last `expires_at` - first) | {} s |",
        entry_secs.last().unwrap() - entry_secs.first().unwrap()
    );
    println!(
        "| distinct `signature` lengths among the copies | {} ({:?} characters; a DM's: {others}) |",
        signature_lens.len(),
        signature_lens
    );
    sender.shutdown();
}
