//! The fallbacks of reconciliation, against peers written here that hold one packet our relay
//! lacks and offer it through `/sync/hashes`: a peer whose snapshots are always gone, and one
//! whose symbols never decode (as with more differences than the kept symbols can find). The
//! relay must fall back to hash sync, get the packet, and not score the peer down for it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;
use jasper_core::protocol::Packet;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `/sync/reconcile` always answers 410 `snapshot_gone`.
    SnapshotAlwaysGone,
    /// `/sync/reconcile` answers well-formed symbols that never peel (no symbol is pure).
    NeverDecodes,
}

struct Peer {
    mode: Mode,
    held: Packet,
}

async fn handler(
    State(p): State<Arc<Peer>>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    match uri.path() {
        "/sync/reconcile" => match p.mode {
            Mode::SnapshotAlwaysGone => (
                StatusCode::GONE,
                axum::Json(json!({"error": {"code": "snapshot_gone", "message": "gone"}})),
            )
                .into_response(),
            Mode::NeverDecodes => never_decoding_answer(&body).into_response(),
        },
        "/sync/hashes" => axum::Json(json!({ "hashes": [p.held.hash] })).into_response(),
        "/fetch" => {
            let req: Value = serde_json::from_slice(&body).unwrap_or_default();
            let asked: Vec<Value> = req["hashes"].as_array().cloned().unwrap_or_default();
            let messages: Vec<Value> = asked
                .iter()
                .map(|h| {
                    if h.as_str() == Some(p.held.hash.as_str()) {
                        serde_json::to_value(&p.held).unwrap()
                    } else {
                        Value::Null
                    }
                })
                .collect();
            axum::Json(json!({ "messages": messages })).into_response()
        }
        _ => axum::Json(json!({})).into_response(),
    }
}

async fn start_peer(mode: Mode, held: Packet) -> u16 {
    let app = Router::new()
        .route("/{*path}", post(handler).get(handler))
        .with_state(Arc::new(Peer { mode, held }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_that_cannot_finish_falls_back_to_hash_sync() {
    let keys = recipients();
    let mut peers = Vec::new();
    for (i, mode) in [Mode::SnapshotAlwaysGone, Mode::NeverDecodes]
        .into_iter()
        .enumerate()
    {
        let held = packet(&keys[i], &format!("only the {mode:?} peer holds this"));
        let port = start_peer(mode, held.clone()).await;
        peers.push((format!("127.0.0.1:{port}"), mode, held));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--sync-interval".to_owned(), "1".to_owned()];
    for (addr, ..) in &peers {
        args.extend(["--peer".to_owned(), addr.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = Relay::start(&dir.path().join("relay"), &args);
    for (addr, mode, held) in &peers {
        assert!(
            eventually(Duration::from_secs(20), || holds(&relay, &held.hash)).await,
            "the packet of the {mode:?} peer never arrived by hash sync"
        );
        let report = peer_report(&relay, addr).await.unwrap();
        assert_eq!(report["state"], "active", "{mode:?}: {report}");
        let c = &report["counters"];
        for offence in ["false_claims", "garbage", "refused"] {
            assert_eq!(c[offence], 0, "{mode:?} scored for {offence}: {report}");
        }
    }
}

/// More differences than one sketch finds (3,500; about 2,900 decode from the 4,096 symbols
/// kept), all expiring in the same second: the relay reconciles by slices of the set (ranges
/// of `expires_at` down to that second, then hash prefixes), never by listing hashes, and ends
/// holding everything; a restarted relay builds its sketch from its store and finds nothing
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_differences_are_found_by_slices_not_by_listing_hashes() {
    use futures::StreamExt;
    const PACKETS: usize = 3_500;
    let dir = tempfile::tempdir().unwrap();
    // Filled from one address faster than a client may send.
    let full = Relay::start(
        &dir.path().join("full"),
        &["--sync-interval", "3600", "--rate-limits", "off"],
    );
    let keys = recipients();
    let second = jasper_relay::store::unix_now() + 3600;
    let sent: Vec<u16> = futures::stream::iter(0..PACKETS)
        .map(|i| {
            let mut p = packet(&keys[i % keys.len()], &format!("burst {i}"));
            p.expires_at = Some(second);
            let full = &full;
            async move { send(full, &p).await.0 }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(sent.iter().all(|c| *c == 200), "every packet stored");
    let args = ["--sync-interval", "1", "--peer", &full.addr()];
    let mut empty = Relay::start(&dir.path().join("empty"), &args);
    assert!(
        eventually(Duration::from_secs(90), || holds_all(&empty, PACKETS)).await,
        "the burst never arrived: {}",
        status(&empty).await
    );
    let traffic = &status(&empty).await["mesh"]["traffic"];
    assert_eq!(traffic["/sync/hashes"]["requests"], 0, "{traffic}");
    let asked = traffic["/sync/reconcile"]["requests"].as_u64().unwrap();
    // The whole set (7 requests), 18 or so halvings down to the second, then its prefixes.
    assert!(asked > 30, "the whole set, then slices: {traffic}");
    let report = peer_report(&empty, &full.addr()).await.unwrap();
    assert_eq!(report["counters"]["false_claims"], 0, "{report}");

    // Restarted: the sketch comes from the store, and the next round finds no difference.
    empty.stop();
    empty.restart();
    assert!(
        eventually(Duration::from_secs(20), || reconciled_once(&empty)).await,
        "no reconciliation after the restart"
    );
    let after = status(&empty).await;
    assert_eq!(after["stored_messages"], PACKETS as u64, "{after}");
    let traffic = &after["mesh"]["traffic"];
    assert_eq!(traffic["/fetch"]["requests"], 0, "{traffic}");
    assert_eq!(traffic["/sync/hashes"]["requests"], 0, "{traffic}");
}

async fn holds_all(relay: &Relay, n: usize) -> bool {
    status(relay).await["stored_messages"].as_u64() == Some(n as u64)
}

async fn reconciled_once(relay: &Relay) -> bool {
    status(relay).await["mesh"]["traffic"]["/sync/reconcile"]["requests"]
        .as_u64()
        .is_some_and(|n| n >= 1)
}
