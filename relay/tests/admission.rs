//! Admission control against a real relay process, each client on its own loopback address
//! (127.0.0.2, .3, ...: Linux routes all of 127/8 to the loopback, so each is another host to
//! the relay): refusals as precise JSON with `Retry-After`, quotas as 507, counters in
//! `/status`, settings checked at start; and the flood test of issue 14.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Relay, StartRelay, packet, recipients};
use jasper_core::protocol::Packet;
use serde_json::{Value, json};

/// A client whose requests leave from `ip`.
fn client_at(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> (u16, Value, Option<String>) {
    let resp = http.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let answer = resp.json().await.unwrap_or(Value::Null);
    (status, answer, retry_after)
}

fn with_config(dir: &Path, toml: &str) -> Relay {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(&config, toml).unwrap();
    Relay::start(dir, &["--config", config.to_str().unwrap()])
}

async fn status(relay: &Relay) -> Value {
    client_at("127.0.0.9")
        .get(relay.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn refusals_are_precise_json_with_retry_after_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(
        dir.path(),
        "[admission]\nsend_per_sec = 1\nsend_burst = 3\nrecipient_max_packets = 2\n",
    );
    let keys = recipients();
    let url = relay.url("/send");

    // One address: its burst of 3, then 429 with a wait, as JSON.
    let flooder = client_at("127.0.0.2");
    for (i, key) in keys.iter().enumerate().take(3) {
        let p = packet(key, &format!("burst {i}"));
        assert_eq!(post(&flooder, &url, &p).await.0, 200);
    }
    let (code, answer, retry_after) = post(&flooder, &url, &packet(&keys[0], "one more")).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/send"),
        "{answer}"
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");

    // Another address has its own budget; its third packet for keys[0] is over that
    // recipient's quota of 2 (the first address stored one): 507, naming the key's start.
    let other = client_at("127.0.0.3");
    assert_eq!(
        post(&other, &url, &packet(&keys[0], "second for 0"))
            .await
            .0,
        200
    );
    let (code, answer, _) = post(&other, &url, &packet(&keys[0], "third for 0")).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (507, Some("recipient_full")),
        "{answer}"
    );
    // A re-send of a packet it holds is still an idempotent 200, not a refusal.
    let (code, answer, _) = post(&other, &url, &packet(&keys[0], "second for 0")).await;
    assert_eq!((code, &answer["stored"]), (200, &json!(false)), "{answer}");

    let s = status(&relay).await;
    let refused = &s["admission"]["refused"];
    assert_eq!(refused["rate_send"], 1, "{s}");
    assert_eq!(refused["recipient_full"], 1, "{s}");
    assert_eq!(refused["storage_full"], 0, "{s}");
    assert_eq!(s["admission"]["rates"]["send"]["burst"], 3, "{s}");
    assert_eq!(s["admission"]["quotas"]["recipient_packets"], 2, "{s}");
    assert_eq!(s["stored_messages"], 4, "{s}");
}

#[tokio::test]
async fn a_full_store_refuses_new_packets_and_keeps_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(dir.path(), "[admission]\nmax_stored_packets = 3\n");
    let keys = recipients();
    let http = client_at("127.0.0.2");
    let url = relay.url("/send");
    let held: Vec<Packet> = (0..3)
        .map(|i| packet(&keys[i], &format!("held {i}")))
        .collect();
    for p in &held {
        assert_eq!(post(&http, &url, p).await.0, 200);
    }
    let (code, answer, _) = post(&http, &url, &packet(&keys[0], "no room")).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (507, Some("storage_full")),
        "{answer}"
    );
    let hashes: Vec<&str> = held.iter().map(|p| p.hash.as_str()).collect();
    let (code, answer, _) = post(&http, &relay.url("/fetch"), &json!({ "hashes": hashes })).await;
    assert_eq!(code, 200);
    assert!(
        answer["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.is_object()),
        "{answer}"
    );
}

#[tokio::test]
async fn bad_admission_settings_stop_the_relay_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, says) in [
        ("[admission]\nsend_per_sec = 0\n", "send_per_sec"),
        ("[admission]\nipv6_prefix = 8\n", "ipv6_prefix"),
        (
            "[admission]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
            "trusted_proxies",
        ),
        ("[admission]\nsend_per_second = 5\n", "send_per_second"),
        (
            "[admission]\nmax_connections_per_address = 0\n",
            "max_connections_per_address",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, toml).unwrap();
        let err = Relay::builder(&dir.path().join("r"))
            .args(["--config", config.to_str().unwrap()])
            .try_start()
            .err()
            .unwrap_or_else(|| panic!("started with {toml}"));
        assert!(err.contains(says), "{toml}: {err}");
    }
    let err = Relay::builder(&dir.path().join("r"))
        .args(["--rate-limits", "maybe"])
        .try_start()
        .err()
        .expect("started with --rate-limits maybe");
    assert!(err.contains("--rate-limits maybe"), "{err}");
}

/// Delivery latency of `n` messages from the honest sender (127.0.0.3) to its contact, who
/// long-polls from 127.0.0.4: from the start of each `/send` to the long-poll that returns it.
async fn honest_latencies(relay: &Relay, contact: &str, n: usize, tag: &str) -> Vec<Duration> {
    let sender = client_at("127.0.0.3");
    let receiver = client_at("127.0.0.4");
    let sent_at: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let got: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    // Where the contact's cursor stands now, so earlier messages are not counted again.
    let start: Value = receiver
        .post(relay.url("/fetch"))
        .json(&json!({ "recipient": contact, "since": 0 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut cursor = start["cursor"].as_u64().unwrap();
    let poll = {
        let (url, contact, got, done) = (
            relay.url("/fetch"),
            contact.to_owned(),
            got.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let answer: Value = receiver
                    .post(&url)
                    .json(&json!({ "recipient": contact, "since": cursor, "wait": 2 }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let now = Instant::now();
                for m in answer["messages"].as_array().unwrap() {
                    got.lock()
                        .entry(m["hash"].as_str().unwrap().to_owned())
                        .or_insert(now);
                }
                cursor = answer["cursor"].as_u64().unwrap();
            }
        })
    };
    let url = relay.url("/send");
    for i in 0..n {
        let p = packet(contact, &format!("{tag} honest {i}"));
        sent_at.lock().insert(p.hash.clone(), Instant::now());
        let (code, answer, _) = post(&sender, &url, &p).await;
        assert_eq!(code, 200, "the honest client was refused: {answer}");
        // Twenty a second: a chatty bot.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    poll.await.unwrap();
    let (sent_at, got) = (sent_at.lock(), got.lock());
    assert_eq!(got.len(), n, "{tag}: every honest message delivered");
    sent_at
        .iter()
        .map(|(h, at)| got[h].duration_since(*at))
        .collect()
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

fn rss_peak_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Issue 14's flood test. From 127.0.0.2, a flooder at full speed (16 connections, no pause,
/// Retry-After ignored) sends junk to one victim; from 127.0.0.3, an honest client sends
/// twenty messages a second to its contact. The honest messages are all delivered; the
/// flooder gets refusals (rate, then the victim's quota); memory and disk stay within their
/// caps; every packet acknowledged to anyone is held at the end. What the flood does to the
/// honest client's latency is a figure, not a pass/fail bound here (the machine is shared):
/// [`flood_latency_benchmark`] measures it against a bound, for docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_refused_and_the_honest_client_is_served() {
    flood(false).await;
}

/// The flood above with its latency bound: the honest p99 under the flood within 2 × that
/// of the same client on the idle relay, measured alternately in one run. A benchmark (run
/// it with `-- --ignored --nocapture`, figures in docs/benchmarks.md), since a timed bound on
/// a shared, noisy machine fails now and then without anything being wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test -p jasper-relay --test admission flood -- --ignored --nocapture"]
async fn flood_latency_benchmark() {
    flood(true).await;
}

/// The flood and its checks; with `latency_bound`, the honest p99's bound too.
async fn flood(latency_bound: bool) {
    // Above the 150 honest messages to each contact, well below what the flood would store.
    const VICTIM_QUOTA: u64 = 500;
    const STORE_CAP: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(
        dir.path(),
        &format!(
            "[admission]\nrecipient_max_packets = {VICTIM_QUOTA}\nmax_stored_bytes = {STORE_CAP}\n"
        ),
    );
    let keys = recipients();
    let victim = keys[0].clone();
    let contacts = [keys[1].clone(), keys[2].clone()];
    // Idle and flooded blocks alternate, so that the machine's own hiccups (it is shared)
    // fall on both alike; 300 messages each.
    const BLOCKS: usize = 10;
    const PER_BLOCK: usize = 30;

    let flooding = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // 200, 429, 507, other
    let acked: Arc<parking_lot::Mutex<Vec<String>>> = Default::default();
    let mut flooders = Vec::new();
    for t in 0..16 {
        let (url, victim, flooding, stop, counts, acked) = (
            relay.url("/send"),
            victim.clone(),
            flooding.clone(),
            stop.clone(),
            counts.clone(),
            acked.clone(),
        );
        flooders.push(tokio::spawn(async move {
            let http = client_at("127.0.0.2");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !flooding.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                i += 1;
                let p = packet(&victim, &format!("junk {t} {i}"));
                match http.post(&url).json(&p).send().await {
                    Ok(r) => {
                        let slot = match r.status().as_u16() {
                            200 => {
                                acked.lock().push(p.hash.clone());
                                0
                            }
                            429 => 1,
                            507 => 2,
                            _ => 3,
                        };
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts[3].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Connections made and caches warm before anything counts.
    honest_latencies(&relay, &contacts[0], 10, "warm-up").await;
    let (mut idle, mut flooded) = (Vec::new(), Vec::new());
    for block in 0..BLOCKS {
        let flood = block % 2 == 1;
        flooding.store(flood, Ordering::Relaxed);
        // The flood at full speed (or quiet again) before the block is measured.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Two contacts in turn, so that the honest messages stay within a recipient's quota.
        let contact = &contacts[(block / 2) % 2];
        let tag = format!("block {block}");
        let got = honest_latencies(&relay, contact, PER_BLOCK, &tag).await;
        if flood {
            flooded.extend(got)
        } else {
            idle.extend(got)
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    idle.sort();
    flooded.sort();
    let n = idle.len();
    let [ok, limited, full, other] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    eprintln!(
        "flooder: {ok} stored, {limited} rate-limited, {full} over quota, {other} other; \
         honest p99 idle {:?}, under flood {:?} (p50 {:?} / {:?})",
        p99(&idle),
        p99(&flooded),
        idle[n / 2],
        flooded[n / 2]
    );
    assert!(limited > 100, "the flooder was not rate-limited: {limited}");
    assert!(full > 0, "the victim's quota was never reached: {full}");
    assert_eq!(
        other, 0,
        "every flooder request was answered 200, 429 or 507"
    );
    assert!(
        ok <= VICTIM_QUOTA,
        "no more junk stored for the victim than its quota: {ok}"
    );
    assert!(
        !latency_bound || p99(&flooded) <= p99(&idle) * 2,
        "honest p99 under the flood {:?} is more than twice the idle relay's {:?}",
        p99(&flooded),
        p99(&idle)
    );

    // Caps: the store within its bytes (the data directory, index files included), the
    // relay's peak memory within what its caps imply (the limiters are pruned).
    let data = dir_bytes(&relay.data_dir());
    assert!(
        data <= STORE_CAP,
        "data directory {data} bytes > cap {STORE_CAP}"
    );
    let rss = rss_peak_kb(relay.pid().unwrap());
    assert!(rss < 256 * 1024, "relay peak RSS {rss} kB");

    // Nothing acknowledged is lost: every junk packet acknowledged is held (the honest ones
    // were seen by the long-poll).
    let hashes = acked.lock().clone();
    let reader = client_at("127.0.0.5");
    for chunk in hashes.chunks(1000) {
        let (code, answer, _) =
            post(&reader, &relay.url("/fetch"), &json!({ "hashes": chunk })).await;
        assert_eq!(code, 200, "{answer}");
        let held = answer["messages"].as_array().unwrap();
        assert!(
            held.iter().all(|m| m.is_object()),
            "an acknowledged packet is missing"
        );
    }
    let s = status(&relay).await;
    assert!(
        s["admission"]["refused"]["rate_send"].as_u64().unwrap() >= limited,
        "{s}"
    );
}

/// The packet's JSON with a stamp of `bits` (`jasper_core::stamp`) added.
fn stamped(p: &Packet, bits: u32) -> Value {
    let hash = jasper_core::MessageHash::parse(&p.hash, "hash").unwrap();
    let fp = jasper_core::PublicKey::from_text(&p.recipient)
        .unwrap()
        .fingerprint();
    let mut body = serde_json::to_value(p).unwrap();
    body["stamp"] =
        jasper_core::stamp::format(jasper_core::stamp::solve(&hash, &fp, bits, 0)).into();
    body
}

#[tokio::test]
async fn a_relay_that_asks_stamps_refuses_without_one_and_takes_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(
        dir.path(),
        "[admission]\nstamp = \"always\"\nstamp_bits = 10\n",
    );
    let keys = recipients();
    let http = client_at("127.0.0.2");
    let url = relay.url("/send");
    let p = packet(&keys[0], "stamped");

    let (code, answer, _) = post(&http, &url, &p).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (428, Some("stamp_required")),
        "{answer}"
    );
    assert_eq!(answer["error"]["bits"], 10, "{answer}");
    for (bad, says) in [
        (json!("nothex"), "16 hexadecimal digits"),
        (json!(12), "must be a string"),
    ] {
        let mut body = serde_json::to_value(&p).unwrap();
        body["stamp"] = bad;
        let (code, answer, _) = post(&http, &url, &body).await;
        assert_eq!(code, 428, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    // A stamp made for another packet does not pass for this one.
    let other = stamped(&packet(&keys[0], "another"), 10);
    let mut body = serde_json::to_value(&p).unwrap();
    body["stamp"] = other["stamp"].clone();
    assert_eq!(post(&http, &url, &body).await.0, 428);

    let (code, answer, _) = post(&http, &url, &stamped(&p, 10)).await;
    assert_eq!((code, &answer["stored"]), (200, &json!(true)), "{answer}");
    let s = status(&relay).await;
    assert!(
        s["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("send.stamp")),
        "{s}"
    );
    assert_eq!(s["admission"]["stamp"]["mode"], "always", "{s}");
    assert_eq!(s["admission"]["stamp"]["required_now"], true, "{s}");
    assert_eq!(s["admission"]["refused"]["stamp_required"], 4, "{s}");
}

#[tokio::test]
async fn stamps_are_asked_only_while_send_is_busier_than_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(
        dir.path(),
        "[admission]\nstamp_bits = 8\nstamp_above_sends_per_sec = 5\n",
    );
    let keys = recipients();
    let http = client_at("127.0.0.2");
    let url = relay.url("/send");
    assert_eq!(
        status(&relay).await["admission"]["stamp"]["required_now"],
        false
    );
    let mut codes = Vec::new();
    for i in 0..12 {
        codes.push(
            post(&http, &url, &packet(&keys[i % 3], &format!("busy {i}")))
                .await
                .0,
        );
    }
    // The first five in the second go through; past the threshold a stamp is asked...
    assert_eq!(&codes[..5], &[200; 5], "{codes:?}");
    assert!(codes[6..].iter().all(|c| *c == 428), "{codes:?}");
    // ...and a stamped packet is taken while it is.
    let p = packet(&keys[0], "busy, stamped");
    assert_eq!(post(&http, &url, &stamped(&p, 8)).await.0, 200);
    // Two quiet seconds later, no stamp is asked.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        status(&relay).await["admission"]["stamp"]["required_now"],
        false
    );
    assert_eq!(
        post(&http, &url, &packet(&keys[1], "quiet again")).await.0,
        200
    );
}

/// A raw HTTP/1.1 connection from `ip`: `Some(status line)` of its answer to `GET /status`, or
/// `None` when the relay closed it without answering.
async fn raw_status(relay: &Relay, ip: &str) -> (tokio::net::TcpStream, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(relay.socket_addr()).await.unwrap();
    // A closed connection may refuse the write itself (reset): no answer either way.
    if stream
        .write_all(b"GET /status HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .is_err()
    {
        return (stream, None);
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // Headers and the JSON body: enough once the body's closing brace is in.
                if got.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => panic!("the relay neither answered nor closed within 10 s"),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    (
        stream,
        text.lines()
            .next()
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_of_an_address_are_closed_unread() {
    let dir = tempfile::tempdir().unwrap();
    let relay = with_config(dir.path(), "[admission]\nmax_connections_per_address = 4\n");
    // Four kept open (keep-alive) from 127.0.0.2, each answered.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (stream, answer) = raw_status(&relay, "127.0.0.2").await;
        assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
        held.push(stream);
    }
    // The fifth is closed without an answer; another address is not affected.
    let (_, answer) = raw_status(&relay, "127.0.0.2").await;
    assert_eq!(
        answer, None,
        "a fifth connection from one address was served"
    );
    let (_, answer) = raw_status(&relay, "127.0.0.3").await;
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    // One closed, one more admitted (once the relay has seen the close).
    drop(held.pop());
    let mut admitted = None;
    for _ in 0..50 {
        let (stream, answer) = raw_status(&relay, "127.0.0.2").await;
        if answer.is_some() {
            admitted = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted.is_some(),
        "a closed connection's place was not given back"
    );
    let s = status(&relay).await;
    assert_eq!(s["admission"]["max_connections_per_address"], 4);
    assert!(
        s["admission"]["refused"]["too_many_connections"]
            .as_u64()
            .unwrap()
            >= 1,
        "{s}"
    );
}
