//! What confirming delivery costs, side by side in one run, on two release relays peered on
//! loopback with 10,000 packets already stored:
//! - the old check (until this revision): after the TX relay accepts, ask the other relay
//!   `/fetch {"hashes": [h]}` 500 ms later and then every 700 ms until it answers the packet.
//!   It tells that relay which packet we care about (and so its recipient);
//! - the witness feed (now): read the other relay's `/sync/recent` every 2 s with a cursor and
//!   16-digit prefixes, whatever was sent, and match locally. It tells the relay nothing.
//!
//! Both observe the same messages, sent one per second through the first relay. Bytes are
//! request plus response bodies (HTTP headers add ~150 bytes per request to either).
//!
//!   cargo build --release -p jasper-relay && cargo bench -p jasper-engine --bench delivery_check
//!
//! Options after `--`: `--messages N` (default 60).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jasper_core::protocol::InnerMessage;
use jasper_core::protocol::Packet;
use jasper_core::{MessageHash, PrivateKey};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

mod common;
use common::*;

const STORED: usize = 10_000;
const FEED_EVERY: Duration = Duration::from_secs(2);
const OLD_FIRST: Duration = Duration::from_millis(500);
const OLD_EVERY: Duration = Duration::from_millis(700);

#[derive(Default)]
struct Cost {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Cost {
    fn add(&self, sent: usize, received: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add((sent + received) as u64, Ordering::Relaxed);
    }
}

async fn post(http: &reqwest::Client, url: String, body: Vec<u8>, cost: &Cost) -> Vec<u8> {
    let sent = body.len();
    let answer = post_json(http, url, body).await;
    cost.add(sent, answer.len());
    answer
}

/// A packet the relay accepts (valid fields, matching hash) without real sealing: filler.
fn filler(template: &Packet) -> Packet {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    let message: String = (0..template.message.len() / 4 * 4)
        .map(|_| B64[rng.random_range(0..64)] as char)
        .collect();
    Packet {
        recipient: template.recipient.clone(),
        hash: MessageHash::of_message(&message).to_hex(),
        message,
        signature: template.signature.clone(),
        expires_at: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = messages_arg(60);
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(2, dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tx, witness) = (relays[0].1.clone(), relays[1].1.clone());
    let http = reqwest::Client::new();
    let alice = PrivateKey::generate().unwrap();
    let bob = PrivateKey::generate().unwrap();
    let seal = |text: &str| {
        let inner = InnerMessage {
            sender: alice.public_key().to_text().to_owned(),
            channel_id: uuid::Uuid::new_v4().to_string(),
            kind: jasper_core::protocol::MessageKind::Message,
            content: text.into(),
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: jasper_core::protocol::timestamp_now(),
        };
        jasper_core::seal(&alice, &[bob.public_key()], &inner)
            .unwrap()
            .remove(0)
    };
    let template = seal("a typical short chat message");
    let ignore = Cost::default();
    for _ in 0..STORED {
        let p = filler(&template);
        post(
            &http,
            format!("http://{witness}/send"),
            serde_json::to_vec(&p).unwrap(),
            &ignore,
        )
        .await;
    }
    let status: Value = http
        .get(format!("http://{witness}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "jasper-engine delivery-check bench: 2 release relays, {} packets stored on the witness, {n} messages, one per second\n",
        status["stored_messages"]
    );

    // The witness feed, read at a fixed pace for the whole run.
    let feed_cost = Arc::new(Cost::default());
    let seen: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let bootstrap_bytes = Arc::new(AtomicU64::new(0));
    let feed = {
        let (http, witness, cost, seen, stop, bootstrap_bytes) = (
            http.clone(),
            witness.clone(),
            feed_cost.clone(),
            seen.clone(),
            stop.clone(),
            bootstrap_bytes.clone(),
        );
        tokio::spawn(async move {
            let mut since: Option<u64> = None;
            let mut ticker = tokio::time::interval(FEED_EVERY);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.cancelled() => return,
                }
                loop {
                    let body =
                        serde_json::to_vec(&json!({ "since": since, "digits": 16 })).unwrap();
                    let boot = since.is_none();
                    let before = cost.bytes.load(Ordering::Relaxed);
                    let answer =
                        post(&http, format!("http://{witness}/sync/recent"), body, &cost).await;
                    if boot {
                        bootstrap_bytes.store(
                            cost.bytes.load(Ordering::Relaxed) - before,
                            Ordering::Relaxed,
                        );
                    }
                    let a: Value = serde_json::from_slice(&answer).unwrap();
                    let now = Instant::now();
                    let mut s = seen.lock().await;
                    for h in a["hashes"].as_array().unwrap() {
                        s.entry(h.as_str().unwrap().to_owned()).or_insert(now);
                    }
                    since = a["cursor"].as_u64();
                    if a["more"] != true {
                        break;
                    }
                }
            }
        })
    };
    tokio::time::sleep(FEED_EVERY + Duration::from_millis(100)).await;
    let feed_before = (
        feed_cost.requests.load(Ordering::Relaxed),
        feed_cost.bytes.load(Ordering::Relaxed),
    );

    // The messages: sent one per second; the old check polls each one by hash.
    let old_cost = Arc::new(Cost::default());
    let mut old_checks = Vec::new();
    let mut sent = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let p = seal(&format!("message {i}"));
        post(
            &http,
            format!("http://{tx}/send"),
            serde_json::to_vec(&p).unwrap(),
            &ignore,
        )
        .await;
        let accepted = Instant::now();
        sent.push((p.hash.clone(), accepted));
        let (http, witness, cost, hash) = (
            http.clone(),
            witness.clone(),
            old_cost.clone(),
            p.hash.clone(),
        );
        old_checks.push(tokio::spawn(async move {
            tokio::time::sleep(OLD_FIRST).await;
            loop {
                let body = serde_json::to_vec(&json!({ "hashes": [hash] })).unwrap();
                let answer = post(&http, format!("http://{witness}/fetch"), body, &cost).await;
                let a: Value = serde_json::from_slice(&answer).unwrap();
                if a["messages"][0]["hash"] == hash.as_str() {
                    return accepted.elapsed();
                }
                tokio::time::sleep(OLD_EVERY).await;
            }
        }));
        let next = started + Duration::from_secs(i as u64 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let mut old_latency = Vec::new();
    for c in old_checks {
        old_latency.push(c.await.unwrap());
    }
    // Let the feed catch the last ones, then stop it at the same point of its cycle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut new_latency = Vec::new();
    loop {
        let s = seen.lock().await;
        if sent.iter().all(|(h, _)| s.contains_key(&h[..16])) || Instant::now() > deadline {
            for (h, at) in &sent {
                if let Some(t) = s.get(&h[..16]) {
                    new_latency.push(t.saturating_duration_since(*at));
                }
            }
            break;
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let span = started.elapsed();
    stop.cancel();
    let _ = feed.await;
    let feed_requests = feed_cost.requests.load(Ordering::Relaxed) - feed_before.0;
    let feed_bytes = feed_cost.bytes.load(Ordering::Relaxed) - feed_before.1;
    assert_eq!(new_latency.len(), n, "the feed missed messages");
    old_latency.sort();
    new_latency.sort();

    let per = |v: u64| v as f64 / n as f64;
    println!(
        "| delivery check, {n} messages over {:.0} s | requests per message | body bytes per message | time to confirmed p50 | p99 | what the checking relay learns |",
        span.as_secs_f64()
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| old: `/fetch {{hashes: [h]}}` every 700 ms | {:.2} | {:.0} | {} | {} | the hash, hence the recipient, of every packet checked |",
        per(old_cost.requests.load(Ordering::Relaxed)),
        per(old_cost.bytes.load(Ordering::Relaxed)),
        ms(percentile(&old_latency, 0.5)),
        ms(percentile(&old_latency, 0.99)),
    );
    println!(
        "| new: `/sync/recent` every 2 s, 16 digits | {:.2} | {:.0} | {} | {} | nothing (no key, no hash, fixed pace) |",
        per(feed_requests),
        per(feed_bytes),
        ms(percentile(&new_latency, 0.5)),
        ms(percentile(&new_latency, 0.99)),
    );
    println!(
        "\nfeed: {feed_requests} requests, {feed_bytes} body bytes in all ({:.0} per request); bootstrap request {} bytes (independent of the {STORED} stored)",
        feed_bytes as f64 / feed_requests.max(1) as f64,
        bootstrap_bytes.load(Ordering::Relaxed)
    );
}
