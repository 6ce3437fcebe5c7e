//! HTTP client for talking to peer relays. Every call has a timeout and a cap on the answer
//! size, and parses answers leniently (reference-relay shapes), so a peer can cost us a
//! request but never a crash, a hang or unbounded memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jasper_core::MessageHash;
use jasper_core::protocol::{self, FetchRequest, HashList, Packet, ServerEntry, ServerList};
use reqwest::StatusCode;
use reqwest::dns::{Name, Resolve, Resolving};

use super::peer::{Offence, PeerAddr, is_public_ip};
use super::reconcile::{ReconcileRequest, decode_answer};
use super::sketch::SketchAnswer;
use super::tree::Beacon;

/// Header naming the calling relay's advertised address (lets the callee pull from it).
pub const RELAY_HEADER: &str = "x-jasper-relay";
/// Header carrying the calling relay's random instance id (detects talking to ourselves).
pub const INSTANCE_HEADER: &str = "x-jasper-instance";

/// What went wrong with a peer request, already classified as an offence.
#[derive(Debug, Clone)]
pub struct PeerFault {
    pub offence: Offence,
    pub detail: String,
}

impl PeerFault {
    fn new(offence: Offence, detail: impl Into<String>) -> Self {
        Self {
            offence,
            detail: detail.into(),
        }
    }
}

/// How a peer answered a packet we pushed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Accepted,
    /// It already held the packet (`"stored": false`): the link was redundant for this one.
    AlreadyHeld,
    /// 409: it holds that hash with other content (not its fault: someone sent it first).
    Conflict,
    /// 410: it considers the packet expired.
    Expired,
    /// 429 or 507: it is at a rate limit or a quota. Not its fault; sync offers it again.
    Declined,
}

/// What a `/sync/reconcile` request came to.
pub enum ReconcileOutcome {
    Answer(SketchAnswer),
    /// The snapshot named has gone: start over without one.
    SnapshotGone,
    /// The range asked for holds more packets than the peer builds a sketch of.
    TooLarge,
    /// The peer does not offer the extension.
    Unsupported,
}

/// The routes we call on peers, as counted in [`Traffic`].
pub const ROUTES: [&str; 7] = [
    "/send",
    "/fetch",
    "/mesh/announce",
    "/sync/reconcile",
    "/sync/hashes",
    "/sync/servers",
    "/status",
];

/// Requests and body bytes this relay sent to peers and received from them, by route: what the
/// mesh costs, measured where it is spent (HTTP headers excluded: about 200 bytes a request).
#[derive(Default)]
pub struct Traffic {
    counters: [[AtomicU64; 3]; ROUTES.len()],
}

impl Traffic {
    fn add(&self, path: &str, sent: usize, received: usize) {
        let i = ROUTES
            .iter()
            .position(|r| *r == path)
            .unwrap_or(ROUTES.len() - 1);
        let c = &self.counters[i];
        c[0].fetch_add(1, Ordering::Relaxed);
        c[1].fetch_add(sent as u64, Ordering::Relaxed);
        c[2].fetch_add(received as u64, Ordering::Relaxed);
    }

    /// (route, requests, bytes sent, bytes received), for `/metrics`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64, u64)> {
        ROUTES
            .iter()
            .zip(&self.counters)
            .map(|(r, c)| {
                let n = |i: usize| c[i].load(Ordering::Relaxed);
                (*r, n(0), n(1), n(2))
            })
            .collect()
    }

    /// `{route: {requests, bytes_sent, bytes_received}}` for `/status`.
    pub fn report(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (route, c) in ROUTES.iter().zip(&self.counters) {
            out.insert(
                (*route).to_owned(),
                serde_json::json!({
                    "requests": c[0].load(Ordering::Relaxed),
                    "bytes_sent": c[1].load(Ordering::Relaxed),
                    "bytes_received": c[2].load(Ordering::Relaxed),
                }),
            );
        }
        serde_json::Value::Object(out)
    }
}

/// What a peer's `/status` says about it, as far as the mesh cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub instance: Option<String>,
    pub extensions: Vec<String>,
    /// `limits.reconcile_symbols`: most symbols it keeps (asked for no more).
    pub reconcile_symbols: Option<usize>,
}

impl PeerStatus {
    /// Reads a peer's `/status` answer leniently: what is missing or of the wrong type is
    /// absent; `None` only when it is not a JSON value at all.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(PeerStatus {
            instance: v
                .get("instance")
                .and_then(|i| i.as_str())
                .map(str::to_owned),
            extensions: v
                .get("extensions")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            reconcile_symbols: v
                .pointer("/limits/reconcile_symbols")
                .and_then(|n| n.as_u64())
                .map(|n| n as usize),
        })
    }

    pub fn offers(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }
}

pub struct PeerClient {
    trusted: reqwest::Client,
    learned: reqwest::Client,
    max_answer_bytes: usize,
    pub traffic: Traffic,
}

impl PeerClient {
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        advertise: Option<String>,
        instance: &str,
        max_answer_bytes: usize,
    ) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = advertise.and_then(|a| a.parse().ok()) {
            headers.insert(RELAY_HEADER, a);
        }
        if let Ok(v) = instance.parse() {
            headers.insert(INSTANCE_HEADER, v);
        }
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(3)))
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(16)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("jasper-relay/", env!("CARGO_PKG_VERSION")))
                .default_headers(headers.clone())
        };
        let trusted = builder()
            .build()
            .expect("static client configuration is valid");
        let learned = if allow_private {
            trusted.clone()
        } else {
            builder()
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .build()
                .expect("static client configuration is valid")
        };
        Self {
            trusted,
            learned,
            max_answer_bytes,
            traffic: Traffic::default(),
        }
    }

    fn client(&self, trusted: bool) -> &reqwest::Client {
        if trusted {
            &self.trusted
        } else {
            &self.learned
        }
    }

    async fn post(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), PeerFault> {
        let url = format!("{}{}", peer.base_url(), path);
        let sent = body.len();
        let req = self
            .client(trusted)
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let resp = req.body(body).send().await;
        let answer = match resp {
            Ok(resp) => self.read(resp).await,
            Err(e) => Err(classify(e)),
        };
        let received = answer.as_ref().map_or(0, |(_, b)| b.len());
        self.traffic.add(path, sent, received);
        answer
    }

    async fn read(&self, mut resp: reqwest::Response) -> Result<(StatusCode, Vec<u8>), PeerFault> {
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_answer_bytes {
                return Err(PeerFault::new(
                    Offence::Garbage,
                    format!("answer larger than {} bytes", self.max_answer_bytes),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// Pushes a packet (broadcast).
    pub async fn push(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        packet: &Packet,
    ) -> Result<PushOutcome, PeerFault> {
        let body = serde_json::to_vec(packet).expect("packet serialises");
        let (status, answer) = self.post(peer, trusted, "/send", body).await?;
        match status {
            s if s.is_success() => Ok(if already_held(&answer) {
                PushOutcome::AlreadyHeld
            } else {
                PushOutcome::Accepted
            }),
            StatusCode::CONFLICT => Ok(PushOutcome::Conflict),
            StatusCode::GONE => Ok(PushOutcome::Expired),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::INSUFFICIENT_STORAGE => {
                Ok(PushOutcome::Declined)
            }
            s => Err(PeerFault::new(
                Offence::Refused,
                format!("/send answered {s}: {}", snippet(&answer)),
            )),
        }
    }

    /// Fetches packets by hash. Entries are aligned with what the peer returned, which may
    /// not be aligned with the request (callers match by hash).
    pub async fn fetch(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        hashes: &[MessageHash],
    ) -> Result<Vec<Option<Packet>>, PeerFault> {
        let req = FetchRequest {
            hashes: Some(hashes.iter().map(|h| h.to_string()).collect()),
            ..Default::default()
        };
        let (status, answer) = self
            .post(
                peer,
                trusted,
                "/fetch",
                serde_json::to_vec(&req).expect("serialises"),
            )
            .await?;
        expect_success(status, "/fetch", &answer)?;
        protocol::parse_fetch_response(&answer)
            .map_err(|e| PeerFault::new(Offence::Garbage, format!("/fetch: {e}")))
    }

    /// `/sync/hashes`: sends our hashes, returns the ones the peer says we lack.
    pub async fn sync_hashes(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        list: &HashList,
    ) -> Result<Vec<MessageHash>, PeerFault> {
        let (status, answer) = self
            .post(
                peer,
                trusted,
                "/sync/hashes",
                serde_json::to_vec(list).expect("serialises"),
            )
            .await?;
        expect_success(status, "/sync/hashes", &answer)?;
        let (hashes, dropped) = protocol::parse_hashes_response(&answer)
            .map_err(|e| PeerFault::new(Offence::Garbage, format!("/sync/hashes: {e}")))?;
        if dropped > 0 && hashes.is_empty() {
            return Err(PeerFault::new(
                Offence::Garbage,
                format!("/sync/hashes: {dropped} invalid entries"),
            ));
        }
        Ok(hashes)
    }

    /// `/sync/reconcile`: symbols of the peer's sketch.
    pub async fn reconcile(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        req: &ReconcileRequest,
    ) -> Result<ReconcileOutcome, PeerFault> {
        let (status, answer) = self
            .post(peer, trusted, "/sync/reconcile", req.to_json())
            .await?;
        match status {
            s if s.is_success() => {
                let a = decode_answer(&answer).ok_or_else(|| {
                    PeerFault::new(
                        Offence::Garbage,
                        format!("/sync/reconcile: {} bytes are no answer", answer.len()),
                    )
                })?;
                if a.symbols.len() as u64 != req.count
                    || req.snapshot.is_some_and(|s| s != a.snapshot)
                {
                    return Err(PeerFault::new(
                        Offence::Garbage,
                        "/sync/reconcile: not the symbols or snapshot asked for",
                    ));
                }
                Ok(ReconcileOutcome::Answer(a))
            }
            StatusCode::GONE => Ok(ReconcileOutcome::SnapshotGone),
            StatusCode::PAYLOAD_TOO_LARGE if req.range.is_some() => Ok(ReconcileOutcome::TooLarge),
            // A relay without the extension (the reference relay): hash sync instead.
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                Ok(ReconcileOutcome::Unsupported)
            }
            s => Err(PeerFault::new(
                Offence::Refused,
                format!("/sync/reconcile answered {s}: {}", snippet(&answer)),
            )),
        }
    }

    /// `/mesh/announce`: tells a lazy peer the hashes of packets we hold.
    pub async fn announce(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        hashes: &[MessageHash],
        beacon: Option<&Beacon>,
    ) -> Result<(), PeerFault> {
        let hashes: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
        let body = match beacon {
            Some(b) => serde_json::json!({ "hashes": hashes, "tree": b }),
            None => serde_json::json!({ "hashes": hashes }),
        };
        let (status, answer) = self
            .post(
                peer,
                trusted,
                "/mesh/announce",
                body.to_string().into_bytes(),
            )
            .await?;
        expect_success(status, "/mesh/announce", &answer)
    }

    /// `/sync/servers`: sends our list, returns what the peer says we lack.
    pub async fn sync_servers(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        list: &ServerList,
    ) -> Result<Vec<ServerEntry>, PeerFault> {
        let (status, answer) = self
            .post(
                peer,
                trusted,
                "/sync/servers",
                serde_json::to_vec(list).expect("serialises"),
            )
            .await?;
        expect_success(status, "/sync/servers", &answer)?;
        let (servers, _dropped) = protocol::parse_servers_response(&answer)
            .map_err(|e| PeerFault::new(Offence::Garbage, format!("/sync/servers: {e}")))?;
        Ok(servers)
    }

    /// `GET /status` (our extension); `None` when the peer does not offer it.
    pub async fn status(&self, peer: &PeerAddr, trusted: bool) -> Option<PeerStatus> {
        let resp = self
            .client(trusted)
            .get(format!("{}/status", peer.base_url()))
            .send()
            .await
            .ok();
        let answer = match resp {
            Some(r) => self.read(r).await.ok(),
            None => None,
        };
        self.traffic
            .add("/status", 0, answer.as_ref().map_or(0, |(_, b)| b.len()));
        let (status, body) = answer?;
        if !status.is_success() {
            return None;
        }
        PeerStatus::from_json(&body)
    }

    /// The peer's instance id, from its `/status`.
    pub async fn instance_of(&self, peer: &PeerAddr, trusted: bool) -> Option<String> {
        self.status(peer, trusted).await?.instance
    }
}

/// Whether a `/send` answer says the packet was held already (our relays' `"stored": false`;
/// the reference relay's text `ok` is never read as that).
fn already_held(answer: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v.get("stored").and_then(|s| s.as_bool()))
        == Some(false)
}

fn expect_success(status: StatusCode, what: &str, answer: &[u8]) -> Result<(), PeerFault> {
    if status.is_success() {
        Ok(())
    } else {
        Err(PeerFault::new(
            Offence::Refused,
            format!("{what} answered {status}: {}", snippet(answer)),
        ))
    }
}

fn classify(e: reqwest::Error) -> PeerFault {
    if e.is_timeout() {
        PeerFault::new(Offence::Timeout, "no answer in time")
    } else if e.is_connect() {
        PeerFault::new(Offence::Unreachable, format!("cannot connect: {e}"))
    } else {
        PeerFault::new(Offence::Garbage, format!("broken answer: {e}"))
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Resolver for learned relay names: drops every non-public address, so a learned name cannot
/// point us at loopback or the operator's private network (DNS rebinding included).
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}
