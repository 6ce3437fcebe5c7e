//! Several relay processes of one operator on one Redis are one relay to the mesh: the same
//! instance id, a long-poll on one process woken by a packet another stores, and every
//! process's reconciliation sketch holding every process's packets; on a single Redis and on a
//! Redis Cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jasper_core::MessageHash;
use jasper_core::reconcile::{Sketch, decode_symbols};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_redis_are_one_relay() {
    let redis = Redis::start();
    processes_are_one_relay(&["--redis", &redis.url()]).await;
}

/// The same on a Redis Cluster of three primaries, each process given all three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_redis_cluster_are_one_relay() {
    let cluster = RedisCluster::start(3);
    processes_are_one_relay(&["--redis", &cluster.urls(), "--redis-cluster"]).await;
}

async fn processes_are_one_relay(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let args = args.to_vec();
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

/// A process stopped (SIGSTOP) while another stores far more packets than the feed keeps
/// finds the gap when it resumes, and catches its sketch up from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_fell_behind_the_feed_catches_up_from_the_store() {
    use futures::StreamExt;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        Relay::builder(&dir.path().join(name))
            .redis(redis.url())
            .env("JASPER_RELAY_REDIS_FEED_LEN", "50")
            // 1,500 packets from one address, faster than a client may send.
            .rate_limits(false)
            .start()
    };
    let a = start("a");
    let b = start("b");
    let pid = b.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let keys = recipients();
    let packets: Vec<_> = (0..1500)
        .map(|i| packet(&keys[i % keys.len()], &format!("while B was stopped {i}")))
        .collect();
    let sent: Vec<u16> = futures::stream::iter(&packets)
        .map(|p| {
            let a = &a;
            async move { send(a, p).await.0 }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(sent.iter().all(|c| *c == 200));
    signal("-CONT");
    let mut want = Sketch::new(4096);
    for p in &packets {
        want.add(MessageHash::parse(&p.hash, "hash").unwrap().as_bytes());
    }
    assert!(
        eventually(Duration::from_secs(20), || sketch_is(&b, &want)).await,
        "B's sketch did not catch up; its log: {}",
        b.log()
    );
    assert!(b.log().contains("feed gap"), "{}", b.log());
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
