//! HTTP client for relays, as a client uses them: send a packet, long-poll the RX relay,
//! read another relay's recent-hash feed to see that a packet spread, read load figures,
//! learn server lists.

use std::time::{Duration, Instant};

use jasper_core::protocol::{self, FetchRequest, Packet, ServerEntry, ServerList};

/// Why a relay request failed.
#[derive(Debug, Clone)]
pub enum RelayFailure {
    /// Timeout, refused connection, broken answer: try again later or elsewhere.
    Transient(String),
    /// The relay refused the packet for what it is (4xx): re-sending it unchanged is pointless.
    Rejected { status: u16, message: String },
}

impl std::fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayFailure::Transient(m) => write!(f, "{m}"),
            RelayFailure::Rejected { status, message } => {
                write!(f, "rejected ({status}): {message}")
            }
        }
    }
}

/// Load figures from `GET /status`.
#[derive(Debug, Clone, Default)]
pub struct RelayStatus {
    pub load: Option<f64>,
    pub supports_wait: bool,
    /// Offers the private recent-hash feed (`sync.recent`).
    pub supports_recent: bool,
}

/// A page of a relay's recent-hash feed.
#[derive(Debug, Clone)]
pub struct RecentHashes {
    /// Hash prefixes (lowercase hex), in the relay's arrival order.
    pub hashes: Vec<String>,
    /// The relay's cursor after this page (it may go backwards if the relay lost its store).
    pub cursor: u64,
    /// More hashes follow the cursor.
    pub more: bool,
}

pub struct RelayClient {
    http: reqwest::Client,
    timeout: Duration,
}

/// The answer of a recipient fetch.
pub struct Fetched {
    pub packets: Vec<Packet>,
    pub cursor: Option<u64>,
}

const MAX_ANSWER: usize = 32 * 1024 * 1024;

impl RelayClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jasperd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client configuration is valid");
        Self { http, timeout }
    }

    async fn post(
        &self,
        relay: &str,
        path: &str,
        body: Vec<u8>,
        extra: Duration,
    ) -> Result<(u16, Vec<u8>, Duration), RelayFailure> {
        let started = Instant::now();
        let mut resp = self
            .http
            .post(format!("http://{relay}{path}"))
            .header("content-type", "application/json")
            .timeout(self.timeout + extra)
            .body(body)
            .send()
            .await
            .map_err(|e| RelayFailure::Transient(format!("{relay}{path}: {e}")))?;
        let status = resp.status().as_u16();
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| RelayFailure::Transient(format!("{relay}{path}: {e}")))?
        {
            if out.len() + chunk.len() > MAX_ANSWER {
                return Err(RelayFailure::Transient(format!(
                    "{relay}{path}: answer too large"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok((status, out, started.elapsed()))
    }

    /// Sends a packet; `Ok(latency)` when the relay accepted it (or already held it). A relay
    /// that asks a proof-of-work stamp (`428 stamp_required`, extension `send.stamp`) gets
    /// one computed and the packet again, once; one that asks more than
    /// [`jasper_core::stamp::MAX_BITS`] is a failure to try elsewhere. `429` (a rate limit) is
    /// transient, whatever else 4xx means.
    pub async fn send(&self, relay: &str, packet_json: &str) -> Result<Duration, RelayFailure> {
        let (mut status, mut body, mut took) = self
            .post(
                relay,
                "/send",
                packet_json.as_bytes().to_vec(),
                Duration::ZERO,
            )
            .await?;
        if status == 428 && error_code(&body).as_deref() == Some("stamp_required") {
            let bits = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["bits"].as_u64())
                .unwrap_or(0) as u32;
            let stamped = stamp(packet_json, bits).await.map_err(|e| {
                RelayFailure::Transient(format!("{relay}/send asks a stamp we will not make: {e}"))
            })?;
            let started = Instant::now();
            let (s, b, _) = self.post(relay, "/send", stamped, Duration::ZERO).await?;
            (status, body, took) = (s, b, took + started.elapsed());
        }
        match status {
            200..=299 => Ok(took),
            429 => Err(RelayFailure::Transient(format!(
                "{relay}/send: rate limited: {}",
                error_message(&body)
            ))),
            400..=499 => Err(RelayFailure::Rejected {
                status,
                message: error_message(&body),
            }),
            _ => Err(RelayFailure::Transient(format!(
                "{relay}/send answered {status}: {}",
                error_message(&body)
            ))),
        }
    }

    /// Fetches packets for `recipient`, after `since`, holding up to `wait` for new ones.
    pub async fn fetch_for(
        &self,
        relay: &str,
        recipient: &str,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<Fetched, RelayFailure> {
        let req = FetchRequest {
            recipient: Some(recipient.to_owned()),
            hashes: None,
            wait: (!wait.is_zero()).then_some(wait.as_secs()),
            since,
        };
        let body = serde_json::to_vec(&req).expect("serialises");
        let (status, answer, _) = self.post(relay, "/fetch", body, wait).await?;
        if !(200..300).contains(&status) {
            return Err(RelayFailure::Transient(format!(
                "{relay}/fetch answered {status}: {}",
                error_message(&answer)
            )));
        }
        let packets = protocol::parse_fetch_response(&answer)
            .map_err(|e| RelayFailure::Transient(format!("{relay}/fetch: {e}")))?
            .into_iter()
            .flatten()
            .collect();
        let cursor = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("cursor").and_then(|c| c.as_u64()));
        Ok(Fetched { packets, cursor })
    }

    /// One page of the relay's private recent-hash feed (`POST /sync/recent`, extension
    /// `sync.recent`, docs/protocol.md): the leading `digits` hex digits of the hashes it
    /// stored after `since` (its own arrival cursor; `None` to start at its newest). The
    /// request names no key and no hash, so the relay learns nothing about what we look for.
    pub async fn recent(
        &self,
        relay: &str,
        since: Option<u64>,
        digits: usize,
    ) -> Result<RecentHashes, RelayFailure> {
        let body = serde_json::json!({ "since": since, "digits": digits });
        let (status, answer, _) = self
            .post(
                relay,
                "/sync/recent",
                serde_json::to_vec(&body).expect("serialises"),
                Duration::ZERO,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(RelayFailure::Transient(format!(
                "{relay}/sync/recent answered {status}: {}",
                error_message(&answer)
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            hashes: Vec<String>,
            cursor: u64,
            #[serde(default)]
            more: bool,
        }
        let a: Answer = serde_json::from_slice(&answer)
            .map_err(|e| RelayFailure::Transient(format!("{relay}/sync/recent: {e}")))?;
        let hashes = a
            .hashes
            .into_iter()
            .filter(|h| h.len() >= digits.min(64) && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|h| h[..digits.min(64)].to_ascii_lowercase())
            .collect();
        Ok(RecentHashes {
            hashes,
            cursor: a.cursor,
            more: a.more,
        })
    }

    /// Load figures; `Ok(default)` for relays without `/status` (the reference relay).
    pub async fn status(&self, relay: &str) -> Result<(RelayStatus, Duration), RelayFailure> {
        let started = Instant::now();
        let resp = self
            .http
            .get(format!("http://{relay}/status"))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| RelayFailure::Transient(format!("{relay}/status: {e}")))?;
        let took = started.elapsed();
        if !resp.status().is_success() {
            return Ok((RelayStatus::default(), took));
        }
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        let load = v.get("load").map(|l| {
            let f = |k: &str| l.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
            f("active_requests") + f("waiting_fetches") / 1000.0 + f("requests_per_second") / 100.0
        });
        let extension = |name: &str| {
            v.get("extensions")
                .and_then(|e| e.as_array())
                .is_some_and(|e| e.iter().any(|x| x == name))
        };
        Ok((
            RelayStatus {
                load,
                supports_wait: extension("fetch.wait"),
                supports_recent: extension("sync.recent"),
            },
            took,
        ))
    }

    /// `/sync/servers` with our list; returns what the relay says we lack.
    pub async fn servers(
        &self,
        relay: &str,
        ours: Vec<ServerEntry>,
    ) -> Result<Vec<ServerEntry>, RelayFailure> {
        let body = serde_json::to_vec(&ServerList { servers: ours }).expect("serialises");
        let (status, answer, _) = self
            .post(relay, "/sync/servers", body, Duration::ZERO)
            .await?;
        if !(200..300).contains(&status) {
            return Err(RelayFailure::Transient(format!(
                "{relay}/sync/servers answered {status}"
            )));
        }
        protocol::parse_servers_response(&answer)
            .map(|(s, _)| s)
            .map_err(|e| RelayFailure::Transient(format!("{relay}/sync/servers: {e}")))
    }
}

/// The packet's JSON with a stamp of `bits` added (`jasper_core::stamp`), computed off the
/// async threads.
async fn stamp(packet_json: &str, bits: u32) -> Result<Vec<u8>, String> {
    if bits == 0 || bits > jasper_core::stamp::MAX_BITS {
        return Err(format!(
            "{bits} bits (we make 1 to {})",
            jasper_core::stamp::MAX_BITS
        ));
    }
    let mut body: serde_json::Value =
        serde_json::from_str(packet_json).map_err(|e| format!("our packet: {e}"))?;
    let hash = jasper_core::MessageHash::parse(body["hash"].as_str().unwrap_or_default(), "hash")
        .map_err(|e| e.to_string())?;
    let fp = jasper_core::PublicKey::from_text(body["recipient"].as_str().unwrap_or_default())
        .map_err(|e| e.to_string())?
        .fingerprint();
    // A random start, so that two sends of one packet do not redo the same work in order.
    let from: u64 = rand::random();
    let nonce =
        tokio::task::spawn_blocking(move || jasper_core::stamp::solve(&hash, &fp, bits, from))
            .await
            .map_err(|e| format!("stamp task: {e}"))?;
    body["stamp"] = jasper_core::stamp::format(nonce).into();
    Ok(serde_json::to_vec(&body).expect("serialises"))
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jasper_test::relay::Relay;

    /// A real relay that asks a stamp of every `/send` (`stamp = "always"`): the client makes
    /// one and the packet is stored; a relay asking more than we make is a transient failure,
    /// and a rate limit (429) is transient too, not a rejection of the packet.
    #[tokio::test]
    async fn a_relay_asking_a_stamp_gets_one_and_a_rate_limit_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let start = |name: &str, toml: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("relay.toml"), toml).unwrap();
            Relay::builder(&d)
                .args([
                    "--config".to_owned(),
                    d.join("relay.toml").display().to_string(),
                ])
                .start()
        };
        let stamps = start(
            "stamps",
            "[admission]\nstamp = \"always\"\nstamp_bits = 12\n",
        );
        let limited = start("limited", "[admission]\nsend_per_sec = 1\nsend_burst = 1\n");
        let key = jasper_core::PrivateKey::generate().unwrap().public_key();
        let b64 = base64::engine::general_purpose::STANDARD;
        let packet = |text: &str| {
            let message = b64.encode(text);
            serde_json::to_string(&Packet {
                recipient: key.to_text().to_owned(),
                hash: jasper_core::MessageHash::of_message(&message).to_string(),
                message,
                signature: b64.encode("signature"),
                expires_at: None,
            })
            .unwrap()
        };
        let client = RelayClient::new(Duration::from_secs(10));
        client
            .send(&stamps.addr(), &packet("stamped by the client"))
            .await
            .expect("sent with a stamp");
        let status: serde_json::Value = reqwest::get(stamps.url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["stored_messages"], 1, "{status}");
        assert_eq!(
            status["admission"]["refused"]["stamp_required"], 1,
            "{status}"
        );

        client
            .send(&limited.addr(), &packet("first"))
            .await
            .unwrap();
        match client.send(&limited.addr(), &packet("second")).await {
            Err(RelayFailure::Transient(e)) => assert!(e.contains("rate limited"), "{e}"),
            other => panic!("a 429 must be transient: {other:?}"),
        }
    }

    #[tokio::test]
    async fn more_bits_than_we_make_are_refused_before_any_work() {
        let err = stamp("{}", jasper_core::stamp::MAX_BITS + 1)
            .await
            .unwrap_err();
        assert!(err.contains("25 bits"), "{err}");
        assert!(stamp("{}", 0).await.is_err());
    }
}
