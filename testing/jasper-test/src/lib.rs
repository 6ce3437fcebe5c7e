//! # jasper-test
//!
//! The test kit every crate's tests share, so that each fixture exists once: loopback ports,
//! waiting for a condition, and the fake relay that acknowledges and drops (a misbehaving relay
//! is the one component a test must fake: real relays do not misbehave on request). Real
//! relays, daemons and engines are started by each crate's `tests/common`, with these parts.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A loopback TCP port free at this moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral TCP port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A loopback UDP port free at this moment.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind an ephemeral UDP port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what` (for synchronous
/// tests that drive processes).
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `check` every 50 ms until it holds (`true`) or `limit` passes (`false`), for async
/// tests.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The routes of a relay that acknowledges every packet and keeps none, reports itself idle,
/// and offers no recent-hash feed (as the reference relay, which never spreads what it stores).
fn dropping_routes() -> Router {
    Router::new()
        .route("/send", post(|| async { "ok" }))
        .route(
            "/fetch",
            post(|body: axum::Json<Value>| async move {
                let n = body["hashes"].as_array().map_or(0, Vec::len);
                axum::Json(json!({ "messages": vec![Value::Null; n] }))
            }),
        )
        .route("/sync/servers", post(|| async { axum::Json(json!({})) }))
        .route("/sync/hashes", post(|| async { axum::Json(json!({})) }))
        .route(
            "/status",
            get(|| async {
                axum::Json(
                    json!({ "load": { "active_requests": 0 }, "extensions": ["fetch.wait"] }),
                )
            }),
        )
}

/// Starts a dropping relay on the current runtime; its `HOST:PORT`.
pub async fn dropping_relay() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the dropping relay");
    let addr = listener.local_addr().expect("local address").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, dropping_routes()).await;
    });
    addr
}

/// Starts a dropping relay on `rt` (for synchronous tests); its `HOST:PORT`.
pub fn dropping_relay_on(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(dropping_relay())
}
