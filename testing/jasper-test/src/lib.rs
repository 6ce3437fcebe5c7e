//! # jasper-test
//!
//! The test kit every crate's tests, benches and binding tests share, so that each fixture
//! exists once:
//!
//! - [`binary`]: where a workspace binary (`jasper-relay`, `jasperd`, `jasper`, `jasper-mesh`)
//!   is, for any test, bench or tool;
//! - [`relay`]: real `jasper-relay` processes (a builder, full meshes, crash/stop/restart);
//! - [`netns`]: hosts in network namespaces on one bridge, with partitions, lossy and slow
//!   links between them (the fault tests);
//! - [`redis`]: a real `redis-server`; [`stun`]: a real STUN server (coturn);
//! - [`tmux`]: a real terminal (a tmux pane) for the terminal frontend's tests;
//! - [`process`]: starting a process that announces itself with a `listening on` line, and
//!   stopping it with SIGTERM;
//! - loopback ports, waiting for a condition, seeded random bytes ([`noise`]), and the fake relay that acknowledges and drops (a
//!   misbehaving relay is the one component a test must fake: real relays do not misbehave on
//!   request).
//!
//! The `jasper-mesh` binary of this crate starts a mesh with these parts for the tests that are
//! not written in Rust (Python, Kotlin) and for `scripts/mesh.sh`.

use std::time::{Duration, Instant};

mod binary;
#[cfg(feature = "engine")]
pub mod engine;
pub mod netns;
pub mod process;
pub mod redis;
pub mod relay;
pub mod stun;
pub mod tmux;

pub use binary::binary;

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

/// A loopback port free for both TCP and UDP at this moment (for servers that bind both, such
/// as coturn).
pub fn free_tcp_and_udp_port() -> u16 {
    loop {
        let udp = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", udp)).is_ok() {
            return udp;
        }
    }
}

/// The log level a test gives the processes it starts (`JASPER_LOG`): `JASPER_TEST_LOG` when
/// set, else `default`.
pub fn test_log_level(default: &str) -> String {
    std::env::var("JASPER_TEST_LOG").unwrap_or_else(|_| default.to_owned())
}

/// `len` deterministic, incompressible bytes (the same for the same `seed`): attachment
/// payloads whose ciphertext can be searched for plaintext windows.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
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

/// Polls the async `check` every 50 ms until it holds (`true`) or `limit` passes (`false`),
/// for checks that are requests themselves.
pub async fn eventually_async<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
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
