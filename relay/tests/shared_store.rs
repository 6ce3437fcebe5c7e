//! Several relay processes of one operator on one Redis are one relay to the mesh: the same
//! instance id, a long-poll on one process woken by a packet another stores, and every
//! process's reconciliation sketch holding every process's packets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jasper_core::MessageHash;
use jasper_core::reconcile::{Sketch, decode_symbols};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_redis_are_one_relay() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let args = ["--redis", url.as_str()];
    let a = Relay::start(&dir.path().join("a"), &args);
    let b = Relay::start(&dir.path().join("b"), &args);

    let (sa, sb) = (status(&a).await, status(&b).await);
    assert_eq!(sa["instance"], sb["instance"], "one identity");
    assert_eq!(sa["instance"].as_str().map(str::len), Some(32), "{sa}");

    // A long-poll parked on B returns as soon as A stores a packet for its recipient, well
    // before its wait ends (it would return the packet then too, having read the store).
    let key = recipients()[0].clone();
    let (_, first) = post(&b.url("/fetch"), &json!({ "recipient": key })).await;
    let cursor = first["cursor"].clone();
    let fetch_url = b.url("/fetch");
    let poll_key = key.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let body = json!({ "recipient": poll_key, "wait": 30, "since": cursor });
        let answer = post(&fetch_url, &body).await;
        (started.elapsed(), answer)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = packet(&key, "stored through A");
    assert_eq!(send(&a, &p).await.0, 200);
    let (took, (code, body)) = poll.await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["messages"][0]["hash"], p.hash, "{body}");
    assert!(took < Duration::from_secs(25), "not woken: {took:?}");

    // Each process's sketch holds what the other stored.
    let q = packet(&recipients()[1], "stored through B");
    assert_eq!(send(&b, &q).await.0, 200);
    let mut want = Sketch::new(4096);
    for h in [&p.hash, &q.hash] {
        want.add(MessageHash::parse(h, "hash").unwrap().as_bytes());
    }
    for relay in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), || sketch_is(relay, &want)).await,
            "{}: its sketch lacks the other's packet",
            relay.addr()
        );
    }

    // A process started later loads both from the store and follows the feed from there.
    let c = Relay::start(&dir.path().join("c"), &args);
    let r = packet(&recipients()[2], "stored through A after C started");
    assert_eq!(send(&a, &r).await.0, 200);
    want.add(MessageHash::parse(&r.hash, "hash").unwrap().as_bytes());
    assert!(
        eventually(Duration::from_secs(10), || sketch_is(&c, &want)).await,
        "C's sketch is not the store's three packets"
    );
    assert_eq!(status(&c).await["instance"], sa["instance"]);
}

/// Whether the first 64 symbols of the relay's whole-set sketch are those of `want`.
async fn sketch_is(relay: &Relay, want: &Sketch) -> bool {
    let r = client()
        .post(relay.url("/sync/reconcile"))
        .json(&json!({ "count": 64 }))
        .send()
        .await
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    decode_symbols(&bytes[16..]).is_some_and(|s| s[..] == want.symbols()[..64])
}
