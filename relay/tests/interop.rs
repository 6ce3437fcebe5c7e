//! Interoperation with a peer that answers exactly like the protocol's reference relay (as
//! recorded in shared/spec/wire-notes.md): text `ok` from `/send`, `{}` from both sync
//! endpoints, `null` for unknown hashes, HTML error pages. Such a peer is not misbehaving: it
//! must keep its standing, receive our broadcasts, and pass our audits.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post as route_post;
use common::*;
use serde_json::{Value, json};

type Stored = Arc<Mutex<HashMap<String, Value>>>;

fn html(status: StatusCode, text: &'static str) -> Response {
    (status, [("content-type", "text/html; charset=utf-8")], text).into_response()
}

async fn reference_send(State(stored): State<Stored>, body: axum::body::Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return html(
            StatusCode::BAD_REQUEST,
            "<!DOCTYPE html><pre>SyntaxError: Unexpected token</pre>",
        );
    };
    let hash = v["hash"].as_str().unwrap_or("undefined").to_owned();
    stored.lock().unwrap().insert(hash, v);
    html(StatusCode::OK, "ok")
}

async fn reference_fetch(State(stored): State<Stored>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let stored = stored.lock().unwrap();
    if let Some(r) = v["recipient"].as_str().filter(|r| !r.is_empty()) {
        let messages: Vec<Value> = stored
            .values()
            .filter(|m| m["recipient"] == r)
            .cloned()
            .collect();
        return axum::Json(json!({ "messages": messages })).into_response();
    }
    match v["hashes"].as_array() {
        Some(hashes) => {
            let messages: Vec<Value> = hashes
                .iter()
                .map(|h| {
                    h.as_str()
                        .and_then(|h| stored.get(h))
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect();
            axum::Json(json!({ "messages": messages })).into_response()
        }
        None => html(StatusCode::BAD_REQUEST, "Bad Request"),
    }
}

async fn reference_sync() -> Response {
    axum::Json(json!({})).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_style_peer_keeps_its_standing_and_gets_our_packets() {
    let stored: Stored = Arc::default();
    let app = Router::new()
        .route("/send", route_post(reference_send))
        .route("/fetch", route_post(reference_fetch))
        .route("/sync/servers", route_post(reference_sync))
        .route("/sync/hashes", route_post(reference_sync))
        .with_state(stored.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ref_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let reference = format!("127.0.0.1:{ref_port}");
    let relay = Relay::start(
        dir.path(),
        &[
            "--peer",
            &reference,
            "--sync-interval",
            "1",
            "--server-sync-interval",
            "1",
        ],
    );
    let mut sent = Vec::new();
    for i in 0..5 {
        let p = packet(&recipients()[i % 3], &format!("to the reference {i}"));
        assert_eq!(send(&relay, &p).await.0, 200);
        sent.push(p);
    }
    // Our broadcast reached it, in exactly the spec's shape plus the additive expires_at.
    let arrived = eventually(Duration::from_secs(2), || {
        let stored = stored.clone();
        let n = sent.len();
        async move { stored.lock().unwrap().len() == n }
    })
    .await;
    assert!(arrived, "broadcast did not reach the reference-style peer");
    {
        let stored = stored.lock().unwrap();
        let first = &stored[&sent[0].hash];
        for field in ["recipient", "message", "hash", "signature"] {
            assert!(first[field].is_string(), "{field} missing in {first}");
        }
    }
    // Several sync rounds, server syncs and audits later, it is still in good standing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = peer_report(&relay, &reference).await.unwrap();
    assert_eq!(report["state"], "active", "{report}");
    assert!(report["score"].as_i64().unwrap() >= 90, "{report}");
    let counters = &report["counters"];
    for c in [
        "garbage",
        "refused",
        "false_claims",
        "dropped_acknowledged",
        "hash_mismatches",
        "timeouts",
    ] {
        assert_eq!(counters[c], 0, "{c}: {report}");
    }
    assert!(counters["ok"].as_u64().unwrap() >= 5);

    // Servers announced with numeric ports (as the reference relay sends them) are learned.
    let other = free_port();
    let (code, _) = post(
        &relay.url("/sync/servers"),
        &json!({ "servers": [{ "ip": "127.0.0.1", "port": other }] }),
    )
    .await;
    assert_eq!(code, 200);
    let s = status(&relay).await;
    assert!(
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["address"] == format!("127.0.0.1:{other}"))
    );
}

#[tokio::test]
async fn a_thousand_parked_long_polls_are_all_woken_by_one_message() {
    let dir = tempfile::tempdir().unwrap();
    // A thousand long-polls from one address: more than one client may park.
    let relay = Relay::start(dir.path(), &["--rate-limits", "off"]);
    let key = recipients()[1].clone();
    let (_, first) = post(&relay.url("/fetch"), &json!({ "recipient": key })).await;
    let cursor = first["cursor"].as_u64().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let mut waiting = Vec::new();
    for _ in 0..1000 {
        let (client, url, key) = (client.clone(), relay.url("/fetch"), key.clone());
        waiting.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({ "recipient": key, "since": cursor, "wait": 30 }))
                .send()
                .await?;
            resp.json::<Value>().await
        }));
    }
    let all_parked = eventually(Duration::from_secs(20), || async {
        status(&relay).await["load"]["waiting_fetches"].as_u64() == Some(1000)
    })
    .await;
    assert!(
        all_parked,
        "not all long-polls were parked: {}",
        status(&relay).await["load"]
    );
    let p = packet(&key, "wake up");
    assert_eq!(send(&relay, &p).await.0, 200);
    for w in waiting {
        let body = w.await.unwrap().expect("long-poll answered");
        assert_eq!(body["messages"][0]["hash"], p.hash);
    }
    assert_eq!(status(&relay).await["load"]["waiting_fetches"], 0);
}
