//! Hostile peers written here, each misbehaving one way, peered with one real relay beside an
//! honest relay. Each hostile peer must end up quarantined for what it did, the honest one
//! must not, and the relay must stay healthy and store nothing bad.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;
use jasper_core::MessageHash;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Answers `/send` with 200 and keeps nothing.
    DropsAcknowledged,
    /// Claims in `/sync/hashes` to hold hashes it cannot serve.
    LiesInSyncHashes,
    /// Claims in `/sync/reconcile` symbols to hold hashes it cannot serve.
    LiesInReconcile,
    /// Offers `sync.reconcile.range`, answers the whole set with symbols that never decode
    /// (as with too many differences), and claims in the slices' symbols to hold hashes it
    /// cannot serve.
    LiesInSlices,
    /// Serves a packet whose content does not match its hash.
    ServesWrongHashes,
    /// Answers everything with an HTML page.
    AnswersGarbage,
    /// Accepts connections and never answers.
    Hangs,
}

struct Hostile {
    mode: Mode,
    forged: Value,
    forged_hash: String,
}

async fn hostile_handler(
    State(h): State<Arc<Hostile>>,
    path: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let path = path.path();
    match h.mode {
        Mode::Hangs => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Mode::AnswersGarbage => (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>Internal oops</body></html>",
        )
            .into_response(),
        Mode::DropsAcknowledged => match path {
            "/send" => "ok".into_response(),
            "/fetch" => {
                let req: Value = serde_json::from_slice(&body).unwrap_or_default();
                let n = req["hashes"].as_array().map_or(0, Vec::len);
                axum::Json(json!({ "messages": vec![Value::Null; n] })).into_response()
            }
            _ => spec_only(path),
        },
        Mode::LiesInReconcile => match path {
            "/sync/reconcile" => lying_symbols(&body),
            "/fetch" => axum::Json(json!({ "messages": [] })).into_response(),
            _ => spec_only(path),
        },
        Mode::LiesInSlices => match path {
            "/status" => axum::Json(json!({
                "extensions": ["sync.reconcile", "sync.reconcile.range"],
                "limits": { "reconcile_symbols": 4096 },
            }))
            .into_response(),
            "/sync/reconcile" => {
                let req: Value = serde_json::from_slice(&body).unwrap_or_default();
                if req.get("range").is_some() || req.get("prefix").is_some() {
                    return lying_symbols(&body);
                }
                never_decoding_answer(&body).into_response()
            }
            "/fetch" => axum::Json(json!({ "messages": [] })).into_response(),
            _ => spec_only(path),
        },
        Mode::LiesInSyncHashes => match path {
            "/sync/hashes" => {
                let fake: Vec<String> = (0..5)
                    .map(|i| MessageHash::of_message(&format!("fake {i}")).to_string())
                    .collect();
                axum::Json(json!({ "hashes": fake })).into_response()
            }
            "/fetch" => axum::Json(json!({ "messages": [] })).into_response(),
            _ => spec_only(path),
        },
        Mode::ServesWrongHashes => match path {
            "/sync/hashes" => axum::Json(json!({ "hashes": [h.forged_hash] })).into_response(),
            "/fetch" => axum::Json(json!({ "messages": [h.forged] })).into_response(),
            _ => spec_only(path),
        },
    }
}

/// Symbols of a sketch holding five hashes the peer cannot serve, as asked for.
fn lying_symbols(body: &[u8]) -> Response {
    let req: Value = serde_json::from_slice(body).unwrap_or_default();
    let from = req["from"].as_u64().unwrap_or(0) as usize;
    let count = req["count"].as_u64().unwrap_or(256) as usize;
    let mut sketch = jasper_core::reconcile::Sketch::new(from + count);
    for i in 0..5 {
        sketch.add(MessageHash::of_message(&format!("fake {i}")).as_bytes());
    }
    let mut answer = 7u64.to_be_bytes().to_vec();
    answer.extend_from_slice(&5u64.to_be_bytes());
    answer.extend(jasper_core::reconcile::encode_symbols(
        &sketch.symbols()[from..from + count],
    ));
    answer.into_response()
}

/// The hostile peers look like relays that offer only the spec's endpoints: an empty object
/// for those, and what a relay answers for an endpoint it lacks for our extensions.
fn spec_only(path: &str) -> Response {
    if path == "/sync/reconcile" {
        let body = json!({"error": {"code": "not_found"}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    axum::Json(json!({})).into_response()
}

async fn start_hostile(mode: Mode) -> (u16, tokio::task::JoinHandle<()>, String) {
    let honest = packet(&recipients()[0], "original");
    let forged_hash = honest.hash.clone();
    let mut forged = serde_json::to_value(&honest).unwrap();
    forged["message"] = json!(base64_of("tampered content"));
    let state = Arc::new(Hostile {
        mode,
        forged,
        forged_hash: forged_hash.clone(),
    });
    let app = Router::new()
        .route("/{*path}", post(hostile_handler).get(hostile_handler))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, task, forged_hash)
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_quarantined_and_the_relay_stays_healthy() {
    let modes = [
        (Mode::DropsAcknowledged, "dropped_acknowledged"),
        (Mode::LiesInSyncHashes, "false_claims"),
        (Mode::LiesInReconcile, "false_claims"),
        (Mode::LiesInSlices, "false_claims"),
        (Mode::ServesWrongHashes, "hash_mismatches"),
        (Mode::AnswersGarbage, "garbage"),
        (Mode::Hangs, "timeouts"),
    ];
    let mut hostile = HashMap::new();
    let mut forged_hash = String::new();
    let mut _tasks = Vec::new();
    for (mode, counter) in modes {
        let (port, task, forged) = start_hostile(mode).await;
        if mode == Mode::ServesWrongHashes {
            forged_hash = forged;
        }
        hostile.insert(format!("127.0.0.1:{port}"), (mode, counter));
        _tasks.push(task);
    }
    let dir = tempfile::tempdir().unwrap();
    let (relay_port, honest_port) = (free_port(), free_port());
    let honest = Relay::start_on(
        honest_port,
        &dir.path().join("honest"),
        &[
            "--peer",
            &format!("127.0.0.1:{relay_port}"),
            "--sync-interval",
            "1",
        ],
    );
    let mut args = vec![
        "--sync-interval".to_owned(),
        "1".into(),
        "--peer-timeout".into(),
        "1".into(),
    ];
    args.extend([
        "--quarantine-secs".into(),
        "120".into(),
        "--peer".into(),
        honest.addr(),
    ]);
    for addr in hostile.keys() {
        args.extend(["--peer".to_owned(), addr.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = Relay::start_on(relay_port, &dir.path().join("relay"), &args);

    // Traffic, so that broadcasts reach every peer (and get acknowledged or not).
    let mut sent = Vec::new();
    for i in 0..6 {
        let p = packet(&recipients()[i % 3], &format!("traffic {i}"));
        assert_eq!(send(&relay, &p).await.0, 200);
        sent.push(p);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (addr, (mode, counter)) in &hostile {
        let quarantined = eventually(Duration::from_secs(20), || async {
            peer_report(&relay, addr)
                .await
                .is_some_and(|r| r["state"] == "quarantined")
        })
        .await;
        let report = peer_report(&relay, addr).await.unwrap();
        assert!(quarantined, "{mode:?} peer was not quarantined: {report}");
        assert!(
            report["counters"][counter].as_u64().unwrap() >= 1,
            "{mode:?} not caught as {counter}: {report}"
        );
        assert!(report["quarantine_remaining_secs"].as_u64().unwrap() > 0);
    }

    // The honest relay is still in good standing and has everything.
    let honest_report = peer_report(&relay, &honest.addr()).await.unwrap();
    assert_eq!(honest_report["state"], "active", "{honest_report}");
    assert!(
        honest_report["score"].as_i64().unwrap() >= 80,
        "{honest_report}"
    );
    for p in &sent {
        assert!(holds(&honest, &p.hash).await);
    }

    // Nothing forged was stored; the relay still serves and accepts.
    assert!(
        !holds(&relay, &forged_hash).await,
        "stored a packet whose hash does not match"
    );
    for fake in 0..5 {
        assert!(
            !holds(
                &relay,
                &MessageHash::of_message(&format!("fake {fake}")).to_string()
            )
            .await
        );
    }
    let s = status(&relay).await;
    assert_eq!(s["stored_messages"], 6);
    let late = packet(&recipients()[1], "after the attack");
    assert_eq!(send(&relay, &late).await.0, 200);
    assert!(eventually(Duration::from_secs(2), || holds(&honest, &late.hash)).await);
}
