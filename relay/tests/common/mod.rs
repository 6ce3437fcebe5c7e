//! Shared fixtures of the relay's integration tests: real `jasper-relay` processes on
//! loopback and a real `redis-server` (the kit's), test packets and a small HTTP client.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jasper_core::MessageHash;
use jasper_core::protocol::Packet;
use serde_json::{Value, json};

/// RSA-4096 public keys in canonical text form (test fixtures, no private halves kept).
pub fn recipients() -> Vec<String> {
    include_str!("../fixtures/recipients.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn rsa2048_key() -> String {
    include_str!("../fixtures/rsa2048.txt").trim().to_owned()
}

/// A well-formed packet for `recipient` whose sealed content is `text` (relays do not look
/// inside, so any base64 does).
pub fn packet(recipient: &str, text: &str) -> Packet {
    let engine = base64::engine::general_purpose::STANDARD;
    let message = engine.encode(format!("sealed:{text}"));
    Packet {
        recipient: recipient.to_owned(),
        hash: MessageHash::of_message(&message).to_string(),
        message,
        signature: engine.encode(format!("signature of {text}")),
        expires_at: None,
    }
}

// Not every test file uses every fixture.
#[allow(unused_imports)]
pub use jasper_test::redis::{Redis, RedisCluster};
#[allow(unused_imports)]
pub use jasper_test::{eventually_async as eventually, free_port};

pub use jasper_test::relay::Relay;

/// How these tests start the kit's relay (`Relay::start`, `Relay::start_on`): its own directory
/// `dir` (the embedded store in `dir/data`, the log in `dir/relay.log`), private peers allowed,
/// the relay's own sync intervals unless `extra` names others.
pub trait StartRelay {
    /// Starts a relay on a fresh port in `dir` with `extra` flags.
    fn start(dir: &Path, extra: &[&str]) -> Relay;

    fn start_on(port: u16, dir: &Path, extra: &[&str]) -> Relay;
}

impl StartRelay for Relay {
    fn start(dir: &Path, extra: &[&str]) -> Relay {
        Self::start_on(free_port(), dir, extra)
    }

    fn start_on(port: u16, dir: &Path, extra: &[&str]) -> Relay {
        Relay::builder(dir)
            .port(port)
            .relay_default_sync()
            .args(extra.iter().copied())
            .log_level(jasper_test::test_log_level("warn"))
            .start()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

/// POSTs a raw body; returns the status and the JSON answer.
pub async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON: {text:?}"));
    (status, value)
}

pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, serde_json::to_vec(body).unwrap()).await
}

/// Posts `body` and asserts the refusal: its status, its stable code, and a message that
/// mentions `says` (each wrong field gets its own words).
pub async fn assert_refused(url: &str, body: &Value, status: u16, code: &str, says: &str) {
    let (got, answer) = post(url, body).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str().unwrap_or_default()),
        (status, code),
        "{body}: {answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "{body}: {message:?} should mention {says:?}"
    );
}

pub async fn send(relay: &Relay, p: &Packet) -> (u16, Value) {
    post(&relay.url("/send"), &serde_json::to_value(p).unwrap()).await
}

/// Hashes of the messages a relay holds for `recipient`.
pub async fn hashes_for(relay: &Relay, recipient: &str) -> Vec<String> {
    let (status, body) = post(&relay.url("/fetch"), &json!({ "recipient": recipient })).await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hash"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the relay holds `hash` (fetch by hash).
pub async fn holds(relay: &Relay, hash: &str) -> bool {
    let Ok(resp) = client()
        .post(relay.url("/fetch"))
        .json(&json!({ "hashes": [hash] }))
        .send()
        .await
    else {
        return false;
    };
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    body["messages"].get(0).is_some_and(|m| !m.is_null())
}

pub async fn status(relay: &Relay) -> Value {
    client()
        .get(relay.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The entry for `peer` in a relay's `/status`.
pub async fn peer_report(relay: &Relay, peer: &str) -> Option<Value> {
    let s = status(relay).await;
    s["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == peer)
        .cloned()
}

/// A `/sync/reconcile` answer of well-formed symbols that never decode (count 7 everywhere:
/// never ±1, so never pure), as from a peer that differs by more than a sketch finds; as many
/// symbols as the request body asks for.
#[allow(dead_code)]
pub fn never_decoding_answer(request: &[u8]) -> Vec<u8> {
    let req: Value = serde_json::from_slice(request).unwrap_or_default();
    let count = req["count"].as_u64().unwrap_or(256) as usize;
    let mut answer = 9u64.to_be_bytes().to_vec();
    answer.extend_from_slice(&1_000_000u64.to_be_bytes());
    let symbol = jasper_core::reconcile::CodedSymbol {
        sum: [0xab; 32],
        checksum: 1,
        count: 7,
    };
    answer.extend(jasper_core::reconcile::encode_symbols(&vec![symbol; count]));
    answer
}
