//! A logging reverse proxy for each (daemon, relay) pair, in-process on its own tokio runtime,
//! and the attribution of what each relay saw from each daemon.
//!
//! A daemon started with `--relay` = its own proxies' addresses only (and without
//! `--allow-private-relays`, so loopback relays learned through `/sync/servers` are refused)
//! reaches every relay through a proxy: each request a relay gets from that daemon is logged
//! (method, path, request body, status, answer, time) and can be attributed to the public keys
//! it reveals. A proxy forwards method, path, body and content type unchanged and returns the
//! status, content type and body unchanged, with no timeout of its own (long-polls work).
//!
//! Requests from relays (they carry `x-jasper-instance`) are refused with 403 and logged apart:
//! a relay only calls a proxy when it learned the proxy's address, i.e. when a daemon posted
//! its relay list in `/sync/servers`; forwarding them would mix peer traffic into a daemon's log.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The header every relay-to-relay request carries (jasper-relay's `INSTANCE_HEADER`).
const RELAY_INSTANCE_HEADER: &str = "x-jasper-instance";

/// One request a proxy handled, with its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Position in the log (exchanges are logged when they finish).
    pub seq: usize,
    pub daemon: String,
    /// Index of the relay behind the proxy (the test's numbering).
    pub relay: usize,
    /// The proxy's address (what the daemon knows the relay as).
    pub proxy: String,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub request: String,
    pub status: u16,
    pub response: String,
    /// When the request arrived, since the proxies started.
    pub at: Duration,
    /// Answered by the proxy itself ("drop sends") instead of the relay.
    pub dropped: bool,
    /// Sent by a relay, not by the daemon (refused with 403, never attributed).
    pub from_relay: bool,
}

impl Exchange {
    fn request_json(&self) -> Option<Value> {
        serde_json::from_str(&self.request).ok()
    }

    fn bare_path(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// One proxy: `addr` forwards to `upstream`.
pub struct Proxy {
    pub daemon: String,
    pub relay: usize,
    pub addr: String,
    pub upstream: String,
    drop_sends: Arc<AtomicUsize>,
}

impl Proxy {
    /// Answers the next `n` `/send`s itself with the relay's usual acknowledgement and forwards
    /// none of them: a TX relay that acknowledges and drops.
    pub fn drop_next_sends(&self, n: usize) {
        self.drop_sends.store(n, Ordering::SeqCst);
    }

    /// Sends still to be dropped.
    pub fn sends_left_to_drop(&self) -> usize {
        self.drop_sends.load(Ordering::SeqCst)
    }
}

struct Shared {
    daemon: String,
    relay: usize,
    proxy: String,
    upstream: String,
    drop_sends: Arc<AtomicUsize>,
    started: Instant,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
}

/// Every proxy of a test, their runtime and their common log.
pub struct Proxies {
    rt: tokio::runtime::Runtime,
    started: Instant,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
    proxies: Vec<Proxy>,
}

impl Default for Proxies {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxies {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the proxies");
        // No overall timeout: long-polls are held as long as the relay holds them.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("proxy HTTP client");
        Self {
            rt,
            started: Instant::now(),
            http,
            log: Arc::default(),
            proxies: Vec::new(),
        }
    }

    /// Starts a proxy for `daemon` in front of relay number `relay` at `upstream`; returns its
    /// address.
    pub fn start(&mut self, daemon: &str, relay: usize, upstream: &str) -> String {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let drop_sends = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            daemon: daemon.to_owned(),
            relay,
            proxy: addr.clone(),
            upstream: upstream.to_owned(),
            drop_sends: drop_sends.clone(),
            started: self.started,
            http: self.http.clone(),
            log: self.log.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared);
        self.rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.proxies.push(Proxy {
            daemon: daemon.to_owned(),
            relay,
            addr: addr.clone(),
            upstream: upstream.to_owned(),
            drop_sends,
        });
        addr
    }

    /// One proxy for `daemon` in front of each of `upstreams` (relay `i` is `upstreams[i]`);
    /// returns their addresses in that order.
    pub fn start_for(&mut self, daemon: &str, upstreams: &[String]) -> Vec<String> {
        upstreams
            .iter()
            .enumerate()
            .map(|(i, up)| self.start(daemon, i, up))
            .collect()
    }

    /// The addresses of `daemon`'s proxies.
    pub fn addrs_of(&self, daemon: &str) -> Vec<String> {
        self.proxies
            .iter()
            .filter(|p| p.daemon == daemon)
            .map(|p| p.addr.clone())
            .collect()
    }

    /// The proxy listening on `addr`.
    pub fn by_addr(&self, addr: &str) -> Option<&Proxy> {
        self.proxies.iter().find(|p| p.addr == addr)
    }

    /// `daemon`'s proxy in front of relay `relay`.
    pub fn get(&self, daemon: &str, relay: usize) -> &Proxy {
        self.proxies
            .iter()
            .find(|p| p.daemon == daemon && p.relay == relay)
            .unwrap_or_else(|| panic!("no proxy for {daemon} in front of relay {relay}"))
    }

    /// A copy of the log so far.
    pub fn log(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    /// One line per (daemon, relay): requests per endpoint and how many keys the relay saw.
    pub fn summary(&self) -> String {
        let log = self.log();
        let att = Attribution::of(&log);
        let mut per: BTreeMap<(String, usize), BTreeMap<String, usize>> = BTreeMap::new();
        let mut from_relays = 0;
        for e in &log {
            if e.from_relay {
                from_relays += 1;
                continue;
            }
            let what = format!(
                "{} {}{}",
                e.method,
                e.bare_path(),
                if e.dropped { " (dropped)" } else { "" }
            );
            *per.entry((e.daemon.clone(), e.relay))
                .or_default()
                .entry(what)
                .or_default() += 1;
        }
        let mut lines: Vec<String> = per
            .iter()
            .map(|((d, r), counts)| {
                let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}×{n}")).collect();
                format!(
                    "{d:>7} → relay {r}: {} key(s); {}",
                    att.keys(d, *r).len(),
                    counts.join(", ")
                )
            })
            .collect();
        lines.push(format!(
            "{} exchanges logged; {from_relays} requests from relays refused",
            log.len()
        ));
        lines.join("\n")
    }

    /// What each relay saw from each daemon, from the log so far.
    pub fn attribution(&self) -> Attribution {
        Attribution::of(&self.log())
    }

    /// Every `/sync/servers` a daemon sent with a non-empty server list (a fingerprint: the
    /// relay learns which relays this client knows), plus the requests relays sent to proxies
    /// (they only know a proxy's address from such a list).
    pub fn server_list_problems(&self) -> Vec<String> {
        let log = self.log();
        let mut problems = Vec::new();
        let from_relays: Vec<&Exchange> = log.iter().filter(|e| e.from_relay).collect();
        if !from_relays.is_empty() {
            let mut pairs: BTreeSet<(String, usize)> = BTreeSet::new();
            for e in &from_relays {
                pairs.insert((e.daemon.clone(), e.relay));
            }
            problems.push(format!(
                "relays called {} times on daemons' proxies (they learned the proxies' \
                 addresses from the daemons' server lists), for (daemon, relay) {pairs:?}",
                from_relays.len()
            ));
        }
        for e in log.iter().filter(|e| !e.from_relay) {
            if e.method != "POST" || e.bare_path() != "/sync/servers" {
                continue;
            }
            let servers = e.request_json().map(|v| v["servers"].clone());
            let empty = match &servers {
                Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if !empty {
                let n = servers
                    .as_ref()
                    .and_then(Value::as_array)
                    .map_or_else(|| "a malformed".to_owned(), |a| a.len().to_string());
                problems.push(format!(
                    "daemon {} posted {n} server list entries to relay {}: {}",
                    e.daemon,
                    e.relay,
                    describe(e, &HashMap::new())
                ));
            }
        }
        problems
    }

    /// Panics naming the requests when a daemon posted a non-empty server list.
    pub fn assert_no_server_lists(&self) {
        let problems = self.server_list_problems();
        assert!(
            problems.is_empty(),
            "daemons must post an empty (or no) server list in /sync/servers: {} problem(s):\n  {}{}",
            problems.len(),
            problems
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  "),
            if problems.len() > 12 {
                format!("\n  … and {} more", problems.len() - 12)
            } else {
                String::new()
            }
        );
    }

    /// The (daemon, relay) pairs among `daemons` where the relay saw more than one key, and
    /// every hash one of them asked for that no proxy ever saw sent or served (a linkage that
    /// cannot be attributed), as readable lines. `names` are (person, key) pairs; a key equal to
    /// `own[daemon]` is that daemon's own.
    pub fn linkage_problems(
        &self,
        daemons: &[&str],
        own: &HashMap<String, String>,
        names: &[(&str, &str)],
    ) -> Vec<String> {
        let log = self.log();
        let att = Attribution::of(&log);
        let names: HashMap<String, String> = names
            .iter()
            .map(|(person, key)| (canonical_key(key), (*person).to_owned()))
            .collect();
        let label = |daemon: &str, key: &str| {
            let who = names.get(key).map_or("unknown key", String::as_str);
            let whose = if own.get(daemon).is_some_and(|k| canonical_key(k) == key) {
                "own"
            } else {
                "contact"
            };
            format!("{} ({who}, {whose})", short_key(key))
        };
        let mut problems = Vec::new();
        for ((daemon, relay), keys) in &att.seen {
            if !daemons.contains(&daemon.as_str()) || keys.len() < 2 {
                continue;
            }
            let proxy = log
                .iter()
                .find(|e| &e.daemon == daemon && e.relay == *relay)
                .map(|e| e.proxy.clone())
                .unwrap_or_default();
            let mut lines = vec![format!(
                "relay {relay} (behind {daemon}'s proxy {proxy}) saw {} keys from {daemon}:",
                keys.len()
            )];
            for (key, sightings) in keys {
                let shown: Vec<String> = sightings
                    .iter()
                    .take(3)
                    .map(|s| format!("{} [{}]", describe(&log[s.exchange], &names), s.how))
                    .collect();
                let more = sightings.len().saturating_sub(3);
                lines.push(format!(
                    "    {} via {}{}",
                    label(daemon, key),
                    shown.join("; "),
                    if more > 0 {
                        format!(" (+{more} more)")
                    } else {
                        String::new()
                    }
                ));
            }
            problems.push(lines.join("\n"));
        }
        for u in &att.unknown_hashes {
            if !daemons.contains(&u.daemon.as_str()) {
                continue;
            }
            problems.push(format!(
                "{} asked relay {} for hash {}, which no proxy saw sent or served \
                 (an unattributable linkage): {}",
                u.daemon,
                u.relay,
                u.hash,
                describe(&log[u.exchange], &names)
            ));
        }
        problems
    }

    /// Panics, naming daemon, relay, keys and requests, when a relay saw two keys from one of
    /// `daemons`.
    pub fn assert_no_linkage(
        &self,
        daemons: &[&str],
        own: &HashMap<String, String>,
        names: &[(&str, &str)],
    ) {
        let problems = self.linkage_problems(daemons, own, names);
        assert!(
            problems.is_empty(),
            "a relay saw two distinct public keys from one client: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
}

/// How one request revealed a key.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// Index into the log.
    pub exchange: usize,
    pub how: String,
}

#[derive(Debug, Clone)]
pub struct UnknownHash {
    pub daemon: String,
    pub relay: usize,
    pub hash: String,
    pub exchange: usize,
}

/// The keys each relay saw from each daemon.
#[derive(Debug, Default)]
pub struct Attribution {
    /// (daemon, relay) → key (canonical) → the requests that revealed it.
    pub seen: BTreeMap<(String, usize), BTreeMap<String, Vec<Sighting>>>,
    /// Hashes asked for that map to no known recipient.
    pub unknown_hashes: Vec<UnknownHash>,
}

impl Attribution {
    /// `/send` reveals its `recipient`; `/fetch {recipient}` that key; `/fetch {hashes}` the
    /// recipient of each hash (from every `/send` body and every answer in the log); any other
    /// request (`/sync/servers`, `GET /status`, `/sync/recent`) names no key, but a known key
    /// anywhere in any request body counts too. Requests from relays are left out.
    pub fn of(log: &[Exchange]) -> Attribution {
        let mut recipients: HashMap<String, String> = HashMap::new();
        let mut known_keys: BTreeSet<String> = BTreeSet::new();
        for e in log {
            for text in [&e.request, &e.response] {
                if let Ok(v) = serde_json::from_str::<Value>(text) {
                    collect_packets(&v, &mut recipients);
                }
            }
            if !e.from_relay
                && let Some(v) = e.request_json()
                && let Some(r) = v["recipient"].as_str()
                && !r.trim().is_empty()
            {
                known_keys.insert(canonical_key(r));
            }
        }
        known_keys.extend(recipients.values().cloned());

        let mut att = Attribution::default();
        for (i, e) in log.iter().enumerate() {
            if e.from_relay {
                continue;
            }
            let pair = (e.daemon.clone(), e.relay);
            let mut saw = |key: String, how: String| {
                att.seen
                    .entry(pair.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
                    .push(Sighting { exchange: i, how });
            };
            let body = e.request_json();
            let path = e.bare_path();
            let mut named: BTreeSet<String> = BTreeSet::new();
            match (e.method.as_str(), path, &body) {
                ("POST", "/send", Some(b)) => {
                    if let Some(r) = b["recipient"].as_str() {
                        named.insert(canonical_key(r));
                        saw(canonical_key(r), "sent to it".into());
                    }
                }
                ("POST", "/fetch", Some(b)) => {
                    match b["recipient"].as_str().filter(|r| !r.is_empty()) {
                        Some(r) => {
                            named.insert(canonical_key(r));
                            saw(canonical_key(r), "fetched for it".into());
                        }
                        None => {
                            for h in b["hashes"].as_array().into_iter().flatten() {
                                let Some(h) = h.as_str() else { continue };
                                let h = h.trim().to_ascii_lowercase();
                                match recipients.get(&h) {
                                    Some(r) => {
                                        named.insert(r.clone());
                                        saw(
                                            r.clone(),
                                            format!(
                                                "asked for hash {} of a packet to it",
                                                short_hash(&h)
                                            ),
                                        );
                                    }
                                    None => att.unknown_hashes.push(UnknownHash {
                                        daemon: e.daemon.clone(),
                                        relay: e.relay,
                                        hash: h,
                                        exchange: i,
                                    }),
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
            // A known key anywhere else in the body (an endpoint these rules do not know).
            if let Some(b) = &body {
                for s in super::json_strings(b) {
                    let k = canonical_key(s);
                    if known_keys.contains(&k) && !named.contains(&k) {
                        named.insert(k.clone());
                        saw(k, format!("named in the body of {path}"));
                    }
                }
            }
        }
        att
    }

    /// The keys relay `relay` saw from `daemon`.
    pub fn keys(&self, daemon: &str, relay: usize) -> BTreeSet<String> {
        self.seen
            .get(&(daemon.to_owned(), relay))
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Relay → keys, for the relays that saw more than one key from `daemon`.
    pub fn shared(&self, daemon: &str) -> BTreeMap<usize, BTreeSet<String>> {
        self.seen
            .iter()
            .filter(|((d, _), keys)| d == daemon && keys.len() > 1)
            .map(|((_, r), keys)| (*r, keys.keys().cloned().collect()))
            .collect()
    }
}

/// Every (hash → recipient) of the packets anywhere in a JSON document.
fn collect_packets(v: &Value, out: &mut HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(h)), Some(Value::String(r))) =
                (o.get("hash"), o.get("recipient"))
            {
                out.insert(h.trim().to_ascii_lowercase(), canonical_key(r));
            }
            o.values().for_each(|x| collect_packets(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_packets(x, out)),
        _ => {}
    }
}

/// Keys compare in their canonical text form (base64), whitespace trimmed.
pub fn canonical_key(key: &str) -> String {
    key.trim().to_owned()
}

/// A key shortened for people: a slice of the modulus (every RSA-4096 key's text starts with
/// the same 44 characters of DER header).
pub fn short_key(key: &str) -> String {
    match key.get(44..56) {
        Some(mid) => format!("…{mid}…"),
        None => key.to_owned(),
    }
}

fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// One exchange for people: `#seq t=…s METHOD PATH {body with long strings shortened} -> status`.
fn describe(e: &Exchange, names: &HashMap<String, String>) -> String {
    let body = match e.request_json() {
        Some(v) => abbreviate(&v, names).to_string(),
        None if e.request.is_empty() => String::new(),
        None => format!("{:.60}", e.request),
    };
    format!(
        "#{} t={:.1}s {} {} {}-> {}{}",
        e.seq,
        e.at.as_secs_f64(),
        e.method,
        e.path,
        if body.is_empty() {
            String::new()
        } else {
            format!("{body} ")
        },
        e.status,
        if e.dropped { " (dropped)" } else { "" }
    )
}

fn abbreviate(v: &Value, names: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => {
            let k = canonical_key(s);
            if let Some(who) = names.get(&k) {
                Value::String(format!("{}={who}", short_key(&k)))
            } else if s.len() > 24 {
                Value::String(format!("{}…({} chars)", &s[..12.min(s.len())], s.len()))
            } else {
                v.clone()
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| abbreviate(x, names)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), abbreviate(x, names)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The proxy: forward unchanged (or drop a `/send`), log, answer unchanged.
async fn forward(
    State(p): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = p.started.elapsed();
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let from_relay = headers.contains_key(RELAY_INSTANCE_HEADER);
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    let drop_this = !from_relay
        && method == Method::POST
        && uri.path() == "/send"
        && p.drop_sends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();

    let (status, answer_type, answer) = if from_relay {
        (
            StatusCode::FORBIDDEN,
            Some(header::HeaderValue::from_static("application/json")),
            Bytes::from(
                json!({"error": {"code": "not_a_relay",
                    "message": "a test proxy for one client, not a relay"}})
                .to_string(),
            ),
        )
    } else if drop_this {
        let hash = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["hash"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (
            StatusCode::OK,
            Some(header::HeaderValue::from_static("application/json")),
            Bytes::from(json!({"ok": true, "hash": hash, "stored": true}).to_string()),
        )
    } else {
        let mut req = p
            .http
            .request(method.clone(), format!("http://{}{path}", p.upstream))
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let answered = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
                resp.bytes().await.map(|b| (status, ct, b))
            }
            Err(e) => Err(e),
        };
        answered.unwrap_or_else(|e| {
            (
                StatusCode::BAD_GATEWAY,
                Some(header::HeaderValue::from_static("application/json")),
                Bytes::from(
                    json!({"error": {"code": "proxy", "message": e.to_string()}}).to_string(),
                ),
            )
        })
    };

    {
        let mut log = p.log.lock().unwrap();
        let seq = log.len();
        log.push(Exchange {
            seq,
            daemon: p.daemon.clone(),
            relay: p.relay,
            proxy: p.proxy.clone(),
            method: method.to_string(),
            path,
            request: String::from_utf8_lossy(&body).into_owned(),
            status: status.as_u16(),
            response: String::from_utf8_lossy(&answer).into_owned(),
            at,
            dropped: drop_this,
            from_relay,
        });
    }
    let mut resp = Response::builder().status(status);
    if let Some(ct) = answer_type {
        resp = resp.header(header::CONTENT_TYPE, ct);
    }
    resp.body(Body::from(answer))
        .expect("a response from valid parts")
}
