//! The HTTP face of the relay: the four endpoints of the spec plus the extensions (`GET
//! /status`, `POST /sync/recent`, `/sync/reconcile`, `/mesh/announce`), JSON errors for everything (unknown routes and methods included), and body limits enforced before a
//! body is read whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jasper_core::MessageHash;
use jasper_core::protocol::{FetchResponse, HashList, Packet, ServerEntry, ServerList};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::{Client, Hold, Refusal, Route};
use crate::config::{MAX_WAIT_SECS, RelayConfig};
use crate::error::RelayError;
use crate::ingest::{Ingest, Source};
use crate::load::LoadMeter;
use crate::mesh::Mesh;
use crate::mesh::client::{INSTANCE_HEADER, RELAY_HEADER};
use crate::mesh::peer::{Offence, PeerAddr};
use crate::mesh::reconcile::{MAX_RANGE_ITEMS, ReconcileRequest, encode_answer};
use crate::mesh::sketch::{SKETCH_SYMBOLS, SnapshotMiss, sketch_of};
use crate::mesh::tree::{Beacon, MAX_ANNOUNCE_HASHES};
use crate::metrics::{Exposition, RequestCounts, write_requests};
use crate::store::{NewPacket, PutOutcome};

/// Most packets one `/fetch {hashes}` may ask for (relays pull in chunks of 500).
pub const MAX_FETCH_HASHES: usize = 1000;

/// Most hashes one `/sync/recent` answer holds, and its default `limit`.
pub const MAX_RECENT_HASHES: u64 = 10_000;

/// Hex digits of each hash in a `/sync/recent` answer: at least (and by default at most).
const MIN_RECENT_DIGITS: u64 = 16;
const MAX_RECENT_DIGITS: u64 = 64;

pub struct AppState {
    pub config: Arc<RelayConfig>,
    pub ingest: Arc<Ingest>,
    pub mesh: Arc<Mesh>,
    pub load: LoadMeter,
    /// Requests answered, by route and status (`/metrics`).
    pub requests: RequestCounts,
    pub stop: CancellationToken,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/send", post(send))
        .route("/fetch", post(fetch))
        .route("/sync/servers", post(sync_servers))
        .route("/sync/hashes", post(sync_hashes))
        .route("/sync/recent", post(sync_recent))
        .route("/sync/reconcile", post(sync_reconcile))
        .route("/mesh/announce", post(mesh_announce))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async { RelayError::NotFound })
        .method_not_allowed_fallback(|| async { RelayError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts every request, and charges it to its client's budget before its body is read.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let _in_flight = state.load.begin();
    let path = req.uri().path().to_owned();
    let response = admit_and_run(&state, req, next).await;
    state.requests.add(&path, response.status().as_u16());
    response
}

async fn admit_and_run(state: &AppState, mut req: Request, next: Next) -> Response {
    let admission = &state.ingest.admission;
    let socket = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = admission.client(socket, req.headers());
    let route = Route::of(req.uri().path());
    if let Err(refused) = admission.admit(route, &client) {
        let RelayError::RateLimited { what, retry_after } = refused else {
            return refused.into_response();
        };
        return match admission.hold(&client) {
            Hold::For(wait, _slot) => {
                tokio::time::sleep(wait).await;
                RelayError::RateLimited {
                    what,
                    retry_after: retry_after.saturating_sub(wait),
                }
                .into_response()
            }
            Hold::CloseNow => {
                let mut response = RelayError::RateLimited { what, retry_after }.into_response();
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                response
            }
        };
    }
    if route == Route::Send {
        admission.count_send(&client);
    }
    req.extensions_mut().insert(client);
    next.run(req).await
}

/// Reads a body of at most `limit` bytes, refusing larger ones (by header, then by count).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, RelayError> {
    let too_large = || RelayError::TooLarge(format!("request body is larger than {limit} bytes"));
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// Parses JSON into `T`, naming what is wrong (syntax, missing field, wrong type).
fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RelayError> {
    // Fast path: a JSON object read straight into `T`, in one pass. Whatever it accepts, the
    // checks below accept too and read the same way; anything it refuses (including duplicate
    // fields, which they accept, the last one winning) goes through them for the same answer.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && let Ok(value) = serde_json::from_slice::<T>(bytes)
    {
        return Ok(value);
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(RelayError::MalformedRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        RelayError::MalformedRequest(format!("request body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(RelayError::MalformedRequest(
            "request body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        match msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            Some(field) => RelayError::MalformedRequest(format!("missing field `{field}`")),
            None => RelayError::MalformedRequest(format!("invalid field: {msg}")),
        }
    })
}

fn caller_relay(headers: &HeaderMap) -> Option<PeerAddr> {
    headers
        .get(RELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| PeerAddr::parse(v).ok())
}

async fn send(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let packet: Packet = parse(&bytes)?;
    let np = state.ingest.validate(&packet)?;
    let hash = np.hash;
    if let Some(bits) = state.ingest.admission.stamp_required(&client) {
        check_stamp(&state, &bytes, &np, bits)?;
    }
    let from = caller_relay(&headers).filter(|a| state.mesh.book.contains(a));
    let outcome = match state.ingest.accept(np, Source::Send(from.clone())).await {
        Err(e @ RelayError::RecipientFull(_)) => {
            if let Some(peer) = from
                .as_ref()
                .filter(|p| state.ingest.admission.is_from(p, &client))
            {
                state
                    .mesh
                    .book
                    .record_offence(peer, Offence::Flood, &e.to_string());
            }
            return Err(e);
        }
        other => other?,
    };
    let stored = matches!(outcome, PutOutcome::Stored { .. });
    Ok(
        axum::Json(json!({ "ok": true, "hash": hash.to_string(), "stored": stored }))
            .into_response(),
    )
}

/// The `stamp` of a `/send` body (read only when one is asked).
#[derive(Deserialize)]
struct StampField {
    #[serde(default)]
    stamp: Option<Value>,
}

fn check_stamp(state: &AppState, body: &[u8], np: &NewPacket, bits: u32) -> Result<(), RelayError> {
    let refuse = |detail: String| {
        state.ingest.admission.count(Refusal::StampRequired);
        RelayError::StampRequired { bits, detail }
    };
    let field: StampField = serde_json::from_slice(body).unwrap_or(StampField { stamp: None });
    match field.stamp {
        None | Some(Value::Null) => Err(refuse(String::new())),
        Some(Value::String(text)) => {
            jasper_core::stamp::check(&np.hash, &np.recipient_fp, &text, bits)
                .map_err(|e| refuse(format!(": {e}")))
        }
        Some(_) => Err(refuse(
            ": `stamp` must be a string of 16 hexadecimal digits".into(),
        )),
    }
}

/// `/fetch` body as accepted: `recipient` is checked first, as the spec says.
#[derive(Deserialize)]
struct FetchBody {
    #[serde(default)]
    recipient: Option<String>,
    #[serde(default)]
    hashes: Option<Vec<Value>>,
    #[serde(default)]
    wait: Option<Value>,
    #[serde(default)]
    since: Option<u64>,
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let req: FetchBody = parse(&bytes)?;
    if let Some(recipient) = req.recipient.filter(|r| !r.is_empty()) {
        let wait = parse_wait(req.wait.as_ref())?;
        return fetch_for_recipient(&state, &client, &recipient, req.since, wait).await;
    }
    let Some(hashes) = req.hashes else {
        return Err(RelayError::MalformedRequest(
            "either `recipient` or `hashes` is required".into(),
        ));
    };
    if hashes.len() > MAX_FETCH_HASHES {
        return Err(RelayError::TooLarge(format!(
            "{} hashes requested; at most {MAX_FETCH_HASHES} per request",
            hashes.len()
        )));
    }
    let hashes = parse_hashes(&hashes)?;
    let found = state.ingest.store.get(hashes).await?;
    let messages = found
        .into_iter()
        .map(|p| p.map(|p| p.to_packet()))
        .collect();
    Ok(axum::Json(FetchResponse {
        messages,
        cursor: None,
    })
    .into_response())
}

fn parse_wait(wait: Option<&Value>) -> Result<u64, RelayError> {
    match wait {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s >= 0.0 => Ok((s.ceil() as u64).min(MAX_WAIT_SECS)),
            _ => Err(RelayError::MalformedRequest(
                "`wait` must be a number of seconds, 0 to 30".into(),
            )),
        },
        Some(_) => Err(RelayError::MalformedRequest(
            "`wait` must be a number of seconds, 0 to 30".into(),
        )),
    }
}

fn parse_hashes(values: &[Value]) -> Result<Vec<MessageHash>, RelayError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .and_then(|text| MessageHash::parse(text, "hashes").ok())
                .ok_or_else(|| {
                    RelayError::InvalidHash(format!(
                        "hashes[{i}] is not a SHA-256 hash (64 hexadecimal characters)"
                    ))
                })
        })
        .collect()
}

async fn fetch_for_recipient(
    state: &AppState,
    client: &Client,
    recipient: &str,
    since: Option<u64>,
    wait: u64,
) -> Result<Response, RelayError> {
    let fp = state.ingest.recipient_fingerprint(recipient)?;
    let limit = state.config.max_fetch_messages;
    let store = &state.ingest.store;
    let mut found = store.by_recipient(fp, since, limit).await?;
    if found.is_empty() && wait > 0 {
        let _parked = state.ingest.admission.park(client)?;
        let sub = state.ingest.waiters.subscribe(fp);
        let notified = sub.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Re-read after subscribing: a packet stored in between would otherwise be missed.
        found = store.by_recipient(fp, since, limit).await?;
        if found.is_empty() {
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                _ = state.stop.cancelled() => {}
            }
            found = store.by_recipient(fp, since, limit).await?;
        }
    }
    let cursor = found.iter().map(|p| p.seq).max().or(since).unwrap_or(0);
    let messages = found.into_iter().map(|p| Some(p.to_packet())).collect();
    Ok(axum::Json(FetchResponse {
        messages,
        cursor: Some(cursor),
    })
    .into_response())
}

#[derive(Deserialize)]
struct ServersBody {
    servers: Vec<Value>,
}

async fn sync_servers(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_sync_body_bytes).await?;
    let req: ServersBody = parse(&bytes)?;
    if req.servers.len() > state.config.max_known_servers {
        return Err(RelayError::TooLarge(format!(
            "{} servers sent; at most {} per request",
            req.servers.len(),
            state.config.max_known_servers
        )));
    }
    let entries = req
        .servers
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ServerEntry>(v).map_err(|e| {
                RelayError::MalformedRequest(format!(
                    "servers[{i}]: {e} (expected {{\"ip\": HOST, \"port\": PORT}})"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answer = state.mesh.answer_server_sync(&entries);
    Ok(axum::Json(ServerList { servers: answer }).into_response())
}

#[derive(Deserialize)]
struct HashesBody {
    hashes: Vec<Value>,
    #[serde(default)]
    prefix: Option<String>,
}

async fn sync_hashes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_sync_body_bytes).await?;
    let req: HashesBody = parse(&bytes)?;
    if req.hashes.len() > state.config.max_hashes_per_request {
        return Err(RelayError::TooLarge(format!(
            "{} hashes sent; at most {} per request",
            req.hashes.len(),
            state.config.max_hashes_per_request
        )));
    }
    let prefix = match req.prefix {
        Some(p) if p.len() <= 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(p.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(RelayError::MalformedRequest(
                "`prefix` must be hexadecimal".into(),
            ));
        }
        None => None,
    };
    let theirs = parse_hashes(&req.hashes)?;
    let theirs_set: std::collections::HashSet<MessageHash> = theirs.iter().copied().collect();
    let ours = state.ingest.store.live_hashes().await?;
    let answer: Vec<String> = ours
        .into_iter()
        .filter(|h| !theirs_set.contains(h))
        .map(|h| h.to_string())
        .filter(|h| prefix.as_ref().is_none_or(|p| h.starts_with(p.as_str())))
        .collect();
    let caller = caller_relay(&headers);
    let is_self = headers.get(INSTANCE_HEADER).and_then(|v| v.to_str().ok())
        == Some(state.mesh.instance.as_str());
    if let (Some(caller), false) = (caller, is_self) {
        let mesh = state.mesh.clone();
        tokio::spawn(async move { mesh.pull_after_sync(caller, theirs).await });
    }
    Ok(axum::Json(HashList {
        hashes: answer,
        prefix: None,
    })
    .into_response())
}

/// `/sync/recent` body: every field optional; read as JSON values so that each wrong one gets
/// its own message.
#[derive(Deserialize)]
struct RecentBody {
    #[serde(default)]
    since: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    digits: Option<Value>,
}

/// A whole non-negative number, or `None` when absent or null; `Err(())` for anything else.
pub(crate) fn optional_u64(v: Option<&Value>) -> Result<Option<u64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(()),
    }
}

fn parse_recent(req: &RecentBody) -> Result<(Option<u64>, u64, usize), RelayError> {
    let since = optional_u64(req.since.as_ref()).map_err(|()| {
        RelayError::MalformedRequest(
            "`since` must be a whole number 0 or more (the `cursor` of an earlier answer), or \
             absent to bootstrap"
                .into(),
        )
    })?;
    let bad_limit = || {
        RelayError::MalformedRequest(format!(
            "`limit` must be a whole number of hashes, 1 to {MAX_RECENT_HASHES}"
        ))
    };
    let limit = match optional_u64(req.limit.as_ref()).map_err(|()| bad_limit())? {
        None => MAX_RECENT_HASHES,
        Some(0) => return Err(bad_limit()),
        Some(n) if n > MAX_RECENT_HASHES => {
            return Err(RelayError::TooLarge(format!(
                "`limit` is {n}; at most {MAX_RECENT_HASHES} hashes per request"
            )));
        }
        Some(n) => n,
    };
    let bad_digits = |got: String| {
        RelayError::MalformedRequest(format!(
            "`digits` must be a whole number of hex digits per hash, \
             {MIN_RECENT_DIGITS} to {MAX_RECENT_DIGITS}{got}"
        ))
    };
    let digits = match optional_u64(req.digits.as_ref()).map_err(|()| bad_digits(String::new()))? {
        None => MAX_RECENT_DIGITS,
        Some(d) if (MIN_RECENT_DIGITS..=MAX_RECENT_DIGITS).contains(&d) => d,
        Some(d) => return Err(bad_digits(format!("; got {d}"))),
    };
    Ok((since, limit, digits as usize))
}

/// Extension: the hashes this relay stored after `since`, in its arrival order, so a client
/// can look for its own packet without naming it.
async fn sync_recent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_sync_body_bytes).await?;
    let req: RecentBody = parse(&bytes)?;
    let (since, limit, digits) = parse_recent(&req)?;
    let recent = state.ingest.store.recent(since, limit as usize).await?;
    // No hashes: the latest seq, not `since`, so a client ahead of a relay that lost its
    // store sees the cursor go back and bootstraps again.
    let cursor = recent
        .hashes
        .last()
        .map_or(recent.latest_seq, |(seq, _)| *seq);
    let hashes: Vec<String> = recent
        .hashes
        .iter()
        .map(|(_, h)| {
            let mut text = h.to_string();
            text.truncate(digits);
            text
        })
        .collect();
    Ok(
        axum::Json(json!({ "hashes": hashes, "cursor": cursor, "more": recent.more }))
            .into_response(),
    )
}

/// Extension: symbols of this relay's reconciliation sketch (`mesh/reconcile.rs`), so a peer
/// finds what either side lacks with bytes in proportion to the difference, not the store.
async fn sync_reconcile(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let bytes = read_body(&headers, body, state.config.max_sync_body_bytes).await?;
    let req = ReconcileRequest::parse(&bytes)?;
    let (from, count) = (req.from as usize, req.count as usize);
    let sketch = &state.ingest.sketch;
    let answer = match (req.snapshot, req.range) {
        (Some(id), range) => {
            sketch
                .continued(id, range, from, count)
                .map_err(|miss| match miss {
                    SnapshotMiss::Gone => RelayError::SnapshotGone(format!("{id:016x}")),
                    SnapshotMiss::OtherRange => RelayError::MalformedRequest(format!(
                        "snapshot {id:016x} was taken of another `range`"
                    )),
                })?
        }
        (None, None) => sketch.answer(from, count),
        (None, Some(range)) => {
            let _one_at_a_time = sketch.ranged.acquire().await.expect("never closed");
            let entries = state
                .ingest
                .store
                .live_range(range.from, range.to, MAX_RANGE_ITEMS + 1)
                .await?;
            if entries.len() > MAX_RANGE_ITEMS {
                return Err(RelayError::TooLarge(format!(
                    "the range holds more than {MAX_RANGE_ITEMS} packets; ask for a narrower one"
                )));
            }
            let (items, symbols) = tokio::task::spawn_blocking(move || sketch_of(&entries, range))
                .await
                .map_err(|e| RelayError::Storage(format!("sketch task failed: {e}")))?;
            sketch.keep(Some(range), items, symbols, from, count)
        }
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encode_answer(&answer),
    )
        .into_response())
}

/// `/mesh/announce` body: hashes, the sender's place in the broadcast tree, or both.
#[derive(Deserialize)]
struct AnnounceBody {
    #[serde(default)]
    hashes: Vec<Value>,
    #[serde(default)]
    tree: Option<Value>,
}

/// Extension `mesh.tree`: a peer for which we are a lazy link tells us hashes it holds. Those
/// we lack are awaited; if they do not come by push in time, they are fetched from it.
async fn mesh_announce(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RelayError> {
    let Some(peer) = caller_relay(&headers) else {
        return Err(RelayError::UnknownPeer(format!(
            "the caller (it sent no `{RELAY_HEADER}` header)"
        )));
    };
    // Any peer of ours, quarantined or not: what it says is a hint, and refusing a peer we
    // quarantined would have it score us down for refusing in turn.
    if !state.mesh.book.contains(&peer) {
        return Err(RelayError::UnknownPeer(peer.to_string()));
    }
    let bytes = read_body(&headers, body, state.config.max_sync_body_bytes).await?;
    let req: AnnounceBody = parse(&bytes)?;
    if req.hashes.len() > MAX_ANNOUNCE_HASHES {
        return Err(RelayError::TooLarge(format!(
            "{} hashes announced; at most {MAX_ANNOUNCE_HASHES} per request",
            req.hashes.len()
        )));
    }
    let beacon = match req.tree {
        None => None,
        Some(v) => {
            let b: Beacon = serde_json::from_value(v)
                .map_err(|e| RelayError::MalformedRequest(format!("`tree`: {e}")))?;
            b.check().map_err(RelayError::MalformedRequest)?;
            Some(b)
        }
    };
    let hashes = parse_hashes(&req.hashes)?;
    if let Some(b) = beacon {
        state.mesh.tree.hear_beacon(&peer, b);
    }
    let mut awaited = 0;
    if !hashes.is_empty() {
        let missing = state.ingest.store.unknown(hashes).await?;
        awaited = missing.len();
        state.mesh.tree.heard(&peer, missing);
    }
    Ok(axum::Json(json!({ "ok": true, "awaited": awaited })).into_response())
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Response, RelayError> {
    let stored = state.ingest.store.count().await?;
    let body = json!({
        "software": "jasper-relay",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": jasper_core::protocol::PROTOCOL_VERSION,
        "instance": state.mesh.instance,
        "extensions": [
            "status", "fetch.wait", "fetch.since", "expires_at", "sync.prefix", "sync.recent",
            "sync.reconcile", "sync.reconcile.range", "mesh.tree", "send.stamp", "metrics",
        ],
        "stored_messages": stored,
        "load": {
            "active_requests": state.load.active().saturating_sub(1),
            "waiting_fetches": state.ingest.waiters.waiting(),
            "requests_per_second": state.load.requests_per_second(),
            "requests_total": state.load.total(),
        },
        "uptime_secs": state.load.uptime().as_secs(),
        "ttl_secs": state.config.ttl.as_secs(),
        "limits": {
            "max_body_bytes": state.config.max_body_bytes,
            "max_fetch_hashes": MAX_FETCH_HASHES,
            "max_hashes_per_request": state.config.max_hashes_per_request,
            "max_wait_secs": MAX_WAIT_SECS,
            "max_recent_hashes": MAX_RECENT_HASHES,
            "reconcile_symbols": SKETCH_SYMBOLS,
            "reconcile_range_items": MAX_RANGE_ITEMS,
            "max_announce_hashes": MAX_ANNOUNCE_HASHES,
        },
        "admission": state.ingest.admission.report(),
        "mesh": state.mesh.report(),
        "peers": state.mesh.book.report(),
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `GET /metrics` (Prometheus text format; `metrics.rs`). Charged to the `other` budget like
/// `/status`; scrape it from the operator's network.
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, RelayError> {
    let store = &state.ingest.store;
    let (stored, bytes) = (store.count().await?, store.live_bytes().await?);
    let mut out = Exposition::default();
    write_requests(&mut out, &state.requests);
    out.family(
        "jasper_relay_refusals_total",
        "counter",
        "Requests and packets refused by admission control, by reason.",
    );
    for (refusal, n) in state.ingest.admission.refusals() {
        out.sample(
            "jasper_relay_refusals_total",
            &[("reason", refusal.name())],
            n as f64,
        );
    }
    out.family("jasper_relay_stored_packets", "gauge", "Live packets held.")
        .sample("jasper_relay_stored_packets", &[], stored as f64);
    if let Some(bytes) = bytes {
        out.family(
            "jasper_relay_stored_bytes",
            "gauge",
            "Bytes of the live packets, as the quotas count them.",
        )
        .sample("jasper_relay_stored_bytes", &[], bytes as f64);
    }
    out.family(
        "jasper_relay_waiting_fetches",
        "gauge",
        "Long-polls parked now.",
    )
    .sample(
        "jasper_relay_waiting_fetches",
        &[],
        state.ingest.waiters.waiting() as f64,
    );
    out.family(
        "jasper_relay_active_requests",
        "gauge",
        "Requests in flight (this one too).",
    )
    .sample(
        "jasper_relay_active_requests",
        &[],
        state.load.active() as f64,
    );
    out.family(
        "jasper_relay_uptime_seconds",
        "gauge",
        "Seconds since the relay started.",
    )
    .sample(
        "jasper_relay_uptime_seconds",
        &[],
        state.load.uptime().as_secs() as f64,
    );
    out.histogram(
        "jasper_relay_store_put_seconds",
        "Time to store a packet durably (or refuse it), from ingest.",
        &state.ingest.store_put,
    );
    let traffic = state.mesh.traffic();
    out.family(
        "jasper_relay_mesh_requests_total",
        "counter",
        "Requests this relay made to its peers, by route (broadcast, announcements, sync).",
    );
    for (route, n, _, _) in &traffic {
        out.sample(
            "jasper_relay_mesh_requests_total",
            &[("route", route)],
            *n as f64,
        );
    }
    out.family(
        "jasper_relay_mesh_bytes_total",
        "counter",
        "Body bytes this relay sent to and received from its peers, by route.",
    );
    for (route, _, sent, received) in &traffic {
        out.sample(
            "jasper_relay_mesh_bytes_total",
            &[("route", route), ("direction", "sent")],
            *sent as f64,
        );
        out.sample(
            "jasper_relay_mesh_bytes_total",
            &[("route", route), ("direction", "received")],
            *received as f64,
        );
    }
    let peers = state.mesh.book.report();
    out.family(
        "jasper_relay_peer_score",
        "gauge",
        "Each peer's score (100 is clean; quarantined below 50).",
    );
    for p in &peers {
        out.sample(
            "jasper_relay_peer_score",
            &[("peer", &p.address), ("state", p.state)],
            f64::from(p.score),
        );
    }
    out.family(
        "jasper_relay_peer_events_total",
        "counter",
        "Each peer's clean exchanges and offences, by kind.",
    );
    for p in &peers {
        let c = &p.counters;
        for (kind, n) in [
            ("ok", c.ok),
            ("timeout", c.timeouts),
            ("unreachable", c.unreachable),
            ("garbage", c.garbage),
            ("refused", c.refused),
            ("hash_mismatch", c.hash_mismatches),
            ("dropped_acknowledged", c.dropped_acknowledged),
            ("false_claim", c.false_claims),
            ("flood", c.floods),
        ] {
            out.sample(
                "jasper_relay_peer_events_total",
                &[("peer", &p.address), ("kind", kind)],
                n as f64,
            );
        }
    }
    let tree = state.mesh.tree.report();
    out.family(
        "jasper_relay_tree_distance",
        "gauge",
        "Hops from this relay to the broadcast tree's root.",
    )
    .sample(
        "jasper_relay_tree_distance",
        &[],
        tree["distance"].as_f64().unwrap_or(0.0),
    );
    out.family(
        "jasper_relay_tree_lazy_peers",
        "gauge",
        "Peers told only the hashes of new packets (not tree links).",
    )
    .sample(
        "jasper_relay_tree_lazy_peers",
        &[],
        tree["lazy_peers"].as_array().map_or(0, Vec::len) as f64,
    );
    out.family(
        "jasper_relay_tree_awaited",
        "gauge",
        "Announced packets awaited by push before they are fetched.",
    )
    .sample(
        "jasper_relay_tree_awaited",
        &[],
        tree["awaited"].as_f64().unwrap_or(0.0),
    );
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.finish(),
    )
        .into_response())
}
