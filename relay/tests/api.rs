//! The relay's HTTP API against a real `jasper-relay` process, on both storage backends:
//! every class of bad input gets its precise error, nothing acknowledged is lost.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use jasper_core::MessageHash;
use serde_json::{Value, json};

/// One relay per backend: embedded store, and Redis.
fn relays(dir: &std::path::Path) -> (Vec<Relay>, Redis) {
    let redis = Redis::start();
    let embedded = Relay::start(&dir.join("embedded"), &[]);
    let with_redis = Relay::start(&dir.join("unused"), &["--redis", &redis.url()]);
    (vec![embedded, with_redis], redis)
}

#[tokio::test]
async fn send_then_fetch_by_recipient_and_by_hash_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in &relays {
        let a = packet(&keys[0], "one");
        let b = packet(&keys[0], "two");
        let other = packet(&keys[1], "three");
        for p in [&a, &b, &other] {
            let (status, body) = send(relay, p).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["stored"], true);
            assert_eq!(body["hash"], p.hash);
        }
        assert_eq!(
            hashes_for(relay, &keys[0]).await,
            vec![a.hash.clone(), b.hash.clone()]
        );
        assert_eq!(hashes_for(relay, &keys[1]).await, vec![other.hash.clone()]);
        assert!(hashes_for(relay, &keys[2]).await.is_empty());

        let unknown = MessageHash::of_message("nope").to_string();
        let (status, body) = post(
            &relay.url("/fetch"),
            &json!({ "hashes": [b.hash, unknown, a.hash] }),
        )
        .await;
        assert_eq!(status, 200);
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0]["message"], b.message);
        assert_eq!(m[0]["signature"], b.signature);
        assert_eq!(m[0]["recipient"], b.recipient);
        assert!(m[1].is_null());
        assert_eq!(m[2]["hash"], a.hash);
        // The global expiry travels with every packet (extension field).
        assert!(m[0]["expires_at"].as_u64().unwrap() > 1_700_000_000);
    }
}

#[tokio::test]
async fn resending_is_idempotent_and_a_reused_hash_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in &relays {
        let p = packet(&keys[0], "same");
        assert_eq!(send(relay, &p).await.0, 200);
        let (status, body) = send(relay, &p).await;
        assert_eq!((status, &body["stored"]), (200, &json!(false)), "{body}");
        assert_eq!(hashes_for(relay, &keys[0]).await.len(), 1);

        // Same message (so same hash) for someone else: the reference relay's overwrite hole.
        let mut hijack = p.clone();
        hijack.recipient = keys[1].clone();
        let (status, body) = send(relay, &hijack).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "hash_conflict");
        let mut resigned = p.clone();
        resigned.signature = "b3RoZXI=".into();
        assert_eq!(send(relay, &resigned).await.0, 409);
        assert!(hashes_for(relay, &keys[1]).await.is_empty());
        let (_, body) = post(&relay.url("/fetch"), &json!({ "hashes": [p.hash] })).await;
        assert_eq!(body["messages"][0]["signature"], p.signature);
    }
}

#[tokio::test]
async fn every_class_of_bad_input_gets_its_precise_error() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in &relays {
        let good = packet(&keys[0], "x");
        let send_url = relay.url("/send");
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&good).unwrap();
            f(&mut v);
            v
        };
        let cases: Vec<(&str, serde_json::Value, u16, &str, &str)> = vec![
            (
                "missing hash",
                with(&|v| {
                    v.as_object_mut().unwrap().remove("hash");
                }),
                400,
                "malformed_request",
                "missing field `hash`",
            ),
            (
                "number for message",
                with(&|v| v["message"] = json!(5)),
                400,
                "malformed_request",
                "invalid field",
            ),
            (
                "empty signature",
                with(&|v| v["signature"] = json!("")),
                400,
                "empty_field",
                "signature",
            ),
            (
                "message not base64",
                with(&|v| {
                    v["message"] = json!("not base64!");
                    v["hash"] = json!(MessageHash::of_message("not base64!").to_string());
                }),
                400,
                "invalid_base64",
                "message",
            ),
            (
                "signature not base64",
                with(&|v| v["signature"] = json!("%%%")),
                400,
                "invalid_base64",
                "signature",
            ),
            (
                "hash not hex",
                with(&|v| v["hash"] = json!("xyz")),
                400,
                "invalid_hash",
                "hash",
            ),
            (
                "hash of something else",
                with(&|v| v["hash"] = json!(MessageHash::of_message("else").to_string())),
                422,
                "hash_mismatch",
                "does not match",
            ),
            (
                "PEM key",
                with(&|v| {
                    v["recipient"] = json!(format!(
                        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
                        keys[0]
                    ))
                }),
                422,
                "invalid_key",
                "PEM",
            ),
            (
                "key with a line break",
                with(&|v| {
                    v["recipient"] = json!(format!("{}\n{}", &keys[0][..64], &keys[0][64..]))
                }),
                422,
                "invalid_key",
                "whitespace",
            ),
            (
                "2048-bit key",
                with(&|v| v["recipient"] = json!(rsa2048_key())),
                422,
                "invalid_key",
                "2048-bit",
            ),
            (
                "garbage key",
                with(&|v| v["recipient"] = json!("aGVsbG8=")),
                422,
                "invalid_key",
                "recipient",
            ),
            (
                "expired",
                with(&|v| v["expires_at"] = json!(1_000)),
                410,
                "expired",
                "expired",
            ),
        ];
        for (name, body, status, code, needle) in cases {
            let (got, answer) = post(&send_url, &body).await;
            assert_eq!(got, status, "{name}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{name}: {message:?} should mention {needle:?}"
            );
        }
        let raw: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            ("empty body", vec![], 400, "malformed_request"),
            ("not JSON", b"{nope".to_vec(), 400, "malformed_request"),
            ("array body", b"[1,2]".to_vec(), 400, "malformed_request"),
            ("body over 100 kB", vec![b' '; 102_401], 413, "too_large"),
        ];
        for (name, body, status, code) in raw {
            let (got, answer) = post_raw(&send_url, body).await;
            assert_eq!(
                (got, answer["error"]["code"].as_str().unwrap()),
                (status, code),
                "{name}: {answer}"
            );
        }
        // Nothing of the above was stored.
        assert!(hashes_for(relay, &keys[0]).await.is_empty());

        let fetch = relay.url("/fetch");
        let fetch_cases = vec![
            (json!({}), 400, "malformed_request"),
            (json!({ "hashes": ["abc"] }), 400, "invalid_hash"),
            (json!({ "hashes": [7] }), 400, "invalid_hash"),
            (
                json!({ "hashes": vec![good.hash.clone(); 1001] }),
                413,
                "too_large",
            ),
            (json!({ "recipient": "bm9wZQ==" }), 422, "invalid_key"),
            (
                json!({ "recipient": keys[0], "wait": "soon" }),
                400,
                "malformed_request",
            ),
            (
                json!({ "recipient": keys[0], "wait": -1 }),
                400,
                "malformed_request",
            ),
        ];
        for (body, status, code) in fetch_cases {
            let (got, answer) = post(&fetch, &body).await;
            assert_eq!(
                (got, answer["error"]["code"].as_str().unwrap()),
                (status, code),
                "{body}: {answer}"
            );
        }
        let (got, answer) = post(&relay.url("/sync/hashes"), &json!({ "hashes": ["zz"] })).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (400, "invalid_hash")
        );
        let (got, answer) = post(&relay.url("/sync/hashes"), &json!({})).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (400, "malformed_request")
        );
        let (got, answer) = post(
            &relay.url("/sync/servers"),
            &json!({ "servers": [{ "ip": "x" }] }),
        )
        .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (400, "malformed_request"),
            "{answer}"
        );
        let (got, answer) = post(&relay.url("/nowhere"), &json!({})).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (404, "not_found")
        );
        let resp = client().get(relay.url("/send")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "method_not_allowed");
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_a_crash_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in relays.iter_mut() {
        // Concurrent sends, so the embedded store folds them into group commits.
        let packets: Vec<_> = (0..200)
            .map(|i| packet(&keys[i % 3], &format!("crash-{i}")))
            .collect();
        let mut tasks = Vec::new();
        for p in packets.clone() {
            let url = relay.url("/send");
            tasks.push(tokio::spawn(async move {
                post(&url, &serde_json::to_value(&p).unwrap()).await.0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        relay.crash();
        relay.restart();
        for p in &packets {
            assert!(holds(relay, &p.hash).await, "lost {} after a crash", p.hash);
        }
        relay.stop();
        relay.restart();
        let total: usize = futures_len(relay, &keys).await;
        assert_eq!(
            total, 200,
            "each message exactly once after a graceful restart"
        );
        let s = status(relay).await;
        assert_eq!(s["stored_messages"], 200);
    }
}

/// A kill -9 while sends are in flight: every packet acknowledged before the crash is held
/// after it, none twice, and the arrival cursor goes on past them (the embedded store answers
/// a batch only once it is synced, while it writes the next).
#[tokio::test]
async fn a_crash_in_the_middle_of_sends_keeps_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    // 16 senders from one address at full speed: a load test, so without rate limits.
    let mut relay = Relay::start(&dir.path().join("embedded"), &["--rate-limits", "off"]);
    let keys = recipients();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut senders = Vec::new();
    for t in 0..16 {
        let (url, keys, acked) = (relay.url("/send"), keys.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let recipient = keys[(t + i) % 3].clone();
                let p = packet(&recipient, &format!("in flight {t} {i}"));
                let sent = client()
                    .post(&url)
                    .json(&p)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 200 => {
                        acked.lock().unwrap().push((p.hash, recipient))
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "sends too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.crash();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    relay.restart();
    let mut held = std::collections::HashMap::new();
    for k in &keys {
        for h in hashes_for(&relay, k).await {
            *held.entry(h).or_insert(0) += 1;
        }
    }
    for (hash, _) in &acked {
        assert_eq!(held.get(hash), Some(&1), "{hash} after the crash");
    }
    assert!(held.values().all(|n| *n == 1));
    let before = status(&relay).await["stored_messages"].as_u64().unwrap();
    assert_eq!(before as usize, held.len());
    // A packet stored now comes after all of them in its recipient's arrival order.
    let last = packet(&keys[0], "after the crash");
    send(&relay, &last).await;
    let order = hashes_for(&relay, &keys[0]).await;
    assert_eq!(order.last(), Some(&last.hash));
}

async fn futures_len(relay: &Relay, keys: &[String]) -> usize {
    let mut n = 0;
    for k in keys {
        n += hashes_for(relay, k).await.len();
    }
    n
}

#[tokio::test]
async fn cursor_and_long_poll_deliver_only_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in &relays {
        let first = packet(&keys[2], "first");
        send(relay, &first).await;
        let (_, body) = post(&relay.url("/fetch"), &json!({ "recipient": keys[2] })).await;
        let cursor = body["cursor"].as_u64().unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);

        // Nothing after the cursor: the request is held until the next message arrives.
        let url = relay.url("/fetch");
        let key = keys[2].clone();
        let started = Instant::now();
        let waiting = tokio::spawn(async move {
            post(
                &url,
                &json!({ "recipient": key, "since": cursor, "wait": 20 }),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "long-poll answered before any new message"
        );
        let waiting_now = status(relay).await["load"]["waiting_fetches"]
            .as_u64()
            .unwrap();
        assert_eq!(waiting_now, 1);
        let second = packet(&keys[2], "second");
        send(relay, &second).await;
        let (status_code, body) = waiting.await.unwrap();
        assert_eq!(status_code, 200);
        let hashes: Vec<_> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["hash"].clone())
            .collect();
        assert_eq!(hashes, vec![json!(second.hash)]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "woken by the message, not the timeout"
        );
        assert!(body["cursor"].as_u64().unwrap() > cursor);

        // A wait with nothing arriving ends empty, with the cursor unchanged.
        let (_, body) = post(
            &relay.url("/fetch"),
            &json!({ "recipient": keys[2], "since": body["cursor"], "wait": 1 }),
        )
        .await;
        assert!(body["messages"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn status_reports_version_load_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    send(&relay, &packet(&recipients()[0], "s")).await;
    let s = status(&relay).await;
    assert_eq!(s["protocol"], "1.0.0");
    assert_eq!(s["stored_messages"], 1);
    assert!(s["load"]["requests_total"].as_u64().unwrap() >= 2);
    assert!(s["instance"].as_str().unwrap().len() == 32);
    assert!(
        s["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("fetch.wait"))
    );
}

/// `POST /sync/recent` with `body`; asserts a 200 and returns (hashes, cursor, more).
async fn recent(relay: &Relay, body: serde_json::Value) -> (Vec<String>, u64, bool) {
    let (status, answer) = post(&relay.url("/sync/recent"), &body).await;
    assert_eq!(status, 200, "{body}: {answer}");
    let hashes = answer["hashes"]
        .as_array()
        .unwrap_or_else(|| panic!("no hashes: {answer}"))
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    (
        hashes,
        answer["cursor"].as_u64().unwrap(),
        answer["more"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn sync_recent_lists_stored_hashes_in_arrival_order_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    let mut expiring = Vec::new();
    for relay in &relays {
        let s = status(relay).await;
        assert!(
            s["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!("sync.recent")),
            "{s}"
        );
        assert_eq!(s["limits"]["max_recent_hashes"], 10_000);

        // Bootstrap: no hashes, the latest cursor (0 on a fresh relay); null is the same.
        assert_eq!(recent(relay, json!({})).await, (vec![], 0, false));
        assert_eq!(
            recent(relay, json!({ "since": null })).await,
            (vec![], 0, false)
        );

        let packets: Vec<_> = (0..5)
            .map(|i| packet(&keys[i % 3], &format!("recent-{i}")))
            .collect();
        for p in &packets {
            assert_eq!(send(relay, p).await.0, 200);
        }
        send(relay, &packets[0]).await; // a re-send adds nothing
        let all: Vec<String> = packets.iter().map(|p| p.hash.clone()).collect();
        let (hashes, cursor, more) = recent(relay, json!({ "since": 0 })).await;
        assert_eq!((&hashes, more), (&all, false));
        assert_eq!(cursor, 5, "the seq of the last hash returned");
        assert_eq!(recent(relay, json!({})).await, (vec![], 5, false));
        // Unknown fields are ignored, as on every endpoint.
        assert_eq!(
            recent(relay, json!({ "since": 3, "extra": [1] })).await,
            (all[3..].to_vec(), 5, false)
        );

        // Paging with `limit` and `more`.
        let (page1, c1, more1) = recent(relay, json!({ "since": 0, "limit": 2 })).await;
        assert_eq!((page1, c1, more1), (all[..2].to_vec(), 2, true));
        let (page2, c2, more2) = recent(relay, json!({ "since": c1, "limit": 2 })).await;
        assert_eq!((page2, c2, more2), (all[2..4].to_vec(), 4, true));
        let (page3, c3, more3) = recent(relay, json!({ "since": c2, "limit": 2 })).await;
        assert_eq!((page3, c3, more3), (all[4..].to_vec(), 5, false));
        assert_eq!(
            recent(relay, json!({ "since": c3, "limit": 2 })).await,
            (vec![], 5, false)
        );

        // `digits`: leading hex digits of each hash.
        let (short, _, _) = recent(relay, json!({ "since": 0, "digits": 16 })).await;
        let prefixes: Vec<String> = all.iter().map(|h| h[..16].to_owned()).collect();
        assert_eq!(short, prefixes);
        let (mid, _, _) = recent(relay, json!({ "since": 4, "digits": 40 })).await;
        assert_eq!(mid, vec![all[4][..40].to_owned()]);
        let (full, _, _) = recent(relay, json!({ "since": 4, "digits": 64 })).await;
        assert_eq!(full, vec![all[4].clone()]);

        // A client ahead of the relay (which lost its store): the cursor goes back.
        assert_eq!(
            recent(relay, json!({ "since": 1000 })).await,
            (vec![], 5, false)
        );

        // Packets that expire in 2 s, between live ones; checked below, after one wait.
        let now = jasper_relay::store::unix_now();
        let keep1 = packet(&keys[0], "recent keep 1");
        let mut short_lived = packet(&keys[1], "recent short");
        short_lived.expires_at = Some(now + 2);
        let keep2 = packet(&keys[2], "recent keep 2");
        for p in [&keep1, &short_lived, &keep2] {
            assert_eq!(send(relay, p).await.0, 200);
        }
        let (before, cursor, _) = recent(relay, json!({ "since": 5 })).await;
        assert_eq!(
            (before, cursor),
            (
                vec![
                    keep1.hash.clone(),
                    short_lived.hash.clone(),
                    keep2.hash.clone()
                ],
                8
            )
        );
        expiring.push((keep1.hash, keep2.hash));
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for (relay, (keep1, keep2)) in relays.iter().zip(expiring) {
        assert_eq!(
            recent(relay, json!({ "since": 5 })).await,
            (vec![keep1.clone(), keep2.clone()], 8, false),
            "the expired packet is left out"
        );
        assert_eq!(
            recent(relay, json!({ "since": 5, "limit": 1 })).await,
            (vec![keep1], 6, true)
        );
        assert_eq!(
            recent(relay, json!({ "since": 6, "limit": 1 })).await,
            (vec![keep2], 8, false)
        );
    }
}

#[tokio::test]
async fn sync_recent_answers_bad_requests_with_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    for relay in &relays {
        let url = relay.url("/sync/recent");
        let cases = vec![
            (json!({ "since": -1 }), 400, "malformed_request", "`since`"),
            (json!({ "since": "5" }), 400, "malformed_request", "`since`"),
            (json!({ "since": 1.5 }), 400, "malformed_request", "`since`"),
            (
                json!({ "limit": 0 }),
                400,
                "malformed_request",
                "1 to 10000",
            ),
            (json!({ "limit": -3 }), 400, "malformed_request", "`limit`"),
            (
                json!({ "limit": "all" }),
                400,
                "malformed_request",
                "`limit`",
            ),
            (
                json!({ "limit": 10_001 }),
                413,
                "too_large",
                "at most 10000",
            ),
            (
                json!({ "since": 0, "digits": 15 }),
                400,
                "malformed_request",
                "16 to 64; got 15",
            ),
            (json!({ "digits": 65 }), 400, "malformed_request", "got 65"),
            (json!({ "digits": 0 }), 400, "malformed_request", "`digits`"),
            (
                json!({ "digits": 32.5 }),
                400,
                "malformed_request",
                "`digits`",
            ),
            (
                json!({ "digits": "64" }),
                400,
                "malformed_request",
                "`digits`",
            ),
        ];
        for (body, status, code, needle) in cases {
            assert_refused(&url, &body, status, code, needle).await;
        }
        // Largest limit and shortest digits are fine.
        assert_eq!(
            recent(relay, json!({ "since": 0, "limit": 10_000, "digits": 16 })).await,
            (vec![], 0, false)
        );
        let raw: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            ("empty body", vec![], 400, "malformed_request"),
            ("not JSON", b"{nope".to_vec(), 400, "malformed_request"),
            ("array body", b"[1,2]".to_vec(), 400, "malformed_request"),
            ("number body", b"7".to_vec(), 400, "malformed_request"),
        ];
        for (name, body, status, code) in raw {
            let (got, answer) = post_raw(&url, body).await;
            assert_eq!(
                (got, answer["error"]["code"].as_str().unwrap()),
                (status, code),
                "{name}: {answer}"
            );
        }
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405);
    }
}

#[tokio::test]
async fn sync_reconcile_serves_the_sketch_of_what_is_stored_and_refuses_bad_requests() {
    use jasper_core::reconcile::{SYMBOL_BYTES, Sketch, decode_symbols};
    let dir = tempfile::tempdir().unwrap();
    let (relays, _redis) = relays(dir.path());
    let keys = recipients();
    for relay in &relays {
        let s = status(relay).await;
        assert!(
            s["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!("sync.reconcile")),
            "{s}"
        );
        assert_eq!(s["limits"]["reconcile_symbols"], 4096, "{s}");
        let mut want = Sketch::new(4096);
        for i in 0..5 {
            let p = packet(&keys[i % 3], &format!("sketched {i}"));
            assert_eq!(send(relay, &p).await.0, 200);
            want.add(MessageHash::parse(&p.hash, "hash").unwrap().as_bytes());
        }
        let url = relay.url("/sync/reconcile");
        let raw = |body: Value| {
            let url = url.clone();
            async move {
                let r = client().post(&url).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
            }
        };
        // A new snapshot: header (id, live packets) and the symbols of exactly what it holds.
        let (code, first) = raw(json!({ "count": 64 })).await;
        assert_eq!(code, 200);
        assert_eq!(first.len(), 16 + 64 * SYMBOL_BYTES);
        assert_eq!(u64::from_be_bytes(first[8..16].try_into().unwrap()), 5);
        assert_eq!(decode_symbols(&first[16..]).unwrap(), &want.symbols()[..64]);
        // The same snapshot continued, even after a packet arrived meanwhile.
        assert_eq!(
            send(relay, &packet(&keys[0], "after the snapshot")).await.0,
            200
        );
        let id = hex::encode(&first[..8]);
        let (code, more) = raw(json!({ "from": 64, "count": 64, "snapshot": id })).await;
        assert_eq!(code, 200);
        assert_eq!(&more[..8], &first[..8]);
        assert_eq!(
            decode_symbols(&more[16..]).unwrap(),
            &want.symbols()[64..128]
        );
        // Ranges of expires_at (extension sync.reconcile.range), built from the store's
        // expiry index: one holding everything is the whole set's sketch, one in the past is
        // empty, and a ranged snapshot continues only for its range.
        assert!(
            s["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!("sync.reconcile.range")),
            "{s}"
        );
        assert_eq!(s["limits"]["reconcile_range_items"], 1_000_000, "{s}");
        let (code, whole) = raw(json!({ "count": 128 })).await;
        assert_eq!(code, 200);
        let (code, ranged) = raw(json!({ "count": 64, "range": [0, u64::MAX] })).await;
        assert_eq!(code, 200);
        assert_eq!(u64::from_be_bytes(ranged[8..16].try_into().unwrap()), 6);
        assert_eq!(&ranged[16..], &whole[16..16 + 64 * SYMBOL_BYTES]);
        let ranged_id = hex::encode(&ranged[..8]);
        let (code, rest) = raw(json!({
            "from": 64, "count": 64, "snapshot": ranged_id, "range": [0, u64::MAX]
        }))
        .await;
        assert_eq!(code, 200);
        assert_eq!(&rest[16..], &whole[16 + 64 * SYMBOL_BYTES..]);
        assert_refused(
            &url,
            &json!({ "from": 64, "count": 1, "snapshot": ranged_id }),
            400,
            "malformed_request",
            "another `range`",
        )
        .await;
        let (code, past) = raw(json!({ "count": 8, "range": [0, 1_000_000] })).await;
        assert_eq!(code, 200);
        assert_eq!(u64::from_be_bytes(past[8..16].try_into().unwrap()), 0);
        assert!(
            decode_symbols(&past[16..])
                .unwrap()
                .iter()
                .all(|s| s.count == 0)
        );
        // Bad requests, each with its own status, code and message.
        for (body, status_code, code, says) in [
            (
                json!({ "range": [9, 3] }),
                400,
                "malformed_request",
                "below",
            ),
            (
                json!({ "range": "recent" }),
                400,
                "malformed_request",
                "[from, to]",
            ),
            (json!({ "count": 0 }), 400, "malformed_request", "1 or more"),
            (json!({ "from": -1 }), 400, "malformed_request", "`from`"),
            (
                json!({ "count": "all" }),
                400,
                "malformed_request",
                "`count`",
            ),
            (json!({ "count": 4097 }), 413, "too_large", "4096"),
            (
                json!({ "snapshot": 5 }),
                400,
                "malformed_request",
                "`snapshot`",
            ),
            (
                json!({ "snapshot": "0123456789abcdeg" }),
                400,
                "malformed_request",
                "`snapshot`",
            ),
            (
                json!({ "snapshot": "0000000000000001" }),
                410,
                "snapshot_gone",
                "gone",
            ),
        ] {
            assert_refused(&url, &body, status_code, code, says).await;
        }
        let (got, answer) = post_raw(&url, "not json").await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (400, Some("malformed_request"))
        );
    }
}
