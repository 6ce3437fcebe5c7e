//! Transparent mode: direct WebRTC sessions with contacts who consent, for faster messages and
//! for voice calls. The spec's trade: the peer and the STUN operator learn IP addresses.
//!
//! - Consent is per contact and per login, stored in SQLite; both sides must enable it, and
//!   nothing WebRTC happens (no socket, no STUN request) with a contact until both have.
//! - Signaling (consent, offer, answer, candidates, bye) travels through the relays as sealed,
//!   signed inner messages of type [`wire::TYPE_RTC`]. The offerer is the side whose key
//!   fingerprint sorts first, so the two never offer at once. SDPs are sent complete (ICE
//!   gathered first) so a session costs one relay round trip.
//! - The DTLS fingerprints in those SDPs are signed by the contacts' keys, so the data channel
//!   is authenticated end to end. Messages still travel in the same sealed, signed packet as
//!   on the relay path, are verified the same way on arrival, and are acknowledged once
//!   applied; without an acknowledgement the outbox sends the same packet through the relays.
//! - Calls use the session's one Opus transceiver; audio frames enter and leave through the
//!   API ([`Calls::send_audio`], [`Calls::next_audio`]).

//!
//! Files: `consent.rs` (consent and the [`Transparent`] handle), `signaling.rs` (signals through
//! the relays, offers and answers), `session.rs` (one WebRTC peer connection and its data
//! channel), `calls.rs` (calls and audio, the [`Calls`] handle), `wire.rs` (the formats).

mod calls;
mod consent;
pub mod session;
mod signaling;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jasper_core::PublicKey;
use jasper_core::protocol::Packet;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};
use crate::model::*;
use calls::CallSlot;
pub use calls::{AudioReader, Calls};
pub use consent::{DEFAULT_CONNECT_WAIT, MAX_CONNECT_WAIT, Transparent};
use session::{Session, SessionEvent, SessionSettings};
use wire::{Frame, Signal};

/// Transparent-mode settings, part of [`crate::EngineConfig`].
#[derive(Debug, Clone)]
pub struct TransparentConfig {
    /// STUN servers as `stun:HOST[:PORT]` URLs. Plain STUN over UDP only: webrtc-rs 0.21
    /// skips `stuns:` (STUN over TLS/DTLS) when gathering, so such URLs are refused.
    pub stun_servers: Vec<String>,
    /// Local UDP addresses to gather host candidates on. `0.0.0.0:0` means every non-loopback
    /// interface; tests on loopback give `127.0.0.1:0`.
    pub bind_addrs: Vec<String>,
    /// A session not up this long after its offer is abandoned (and retried later).
    pub connect_timeout: Duration,
    /// How long a packet sent over the data channel waits for its acknowledgement before
    /// the same packet goes through the relays.
    pub ack_timeout: Duration,
    /// An unanswered call ends (`no_answer`) after this long.
    pub ring_timeout: Duration,
}

impl Default for TransparentConfig {
    fn default() -> Self {
        Self {
            stun_servers: Vec::new(),
            bind_addrs: vec!["0.0.0.0:0".to_owned()],
            connect_timeout: Duration::from_secs(20),
            ack_timeout: Duration::from_secs(3),
            ring_timeout: Duration::from_secs(60),
        }
    }
}

impl TransparentConfig {
    /// Checks the STUN URLs and bind addresses; the error names the bad entry.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for url in &self.stun_servers {
            check_stun_url(url)?;
        }
        for addr in &self.bind_addrs {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("WebRTC bind address {addr:?} is not IP:PORT"))?;
        }
        Ok(())
    }
}

/// Checks a STUN server URL with the WebRTC library's own parser (RFC 7064), so that what is
/// accepted here is what the library will take when a session starts, plus what it would
/// accept but cannot use: `stuns:` (webrtc-rs 0.21 skips it) and port 0.
fn check_stun_url(url: &str) -> std::result::Result<(), String> {
    use rtc::ice::url::{SchemeType, Url};
    let parsed = Url::parse_url(url).map_err(|e| format!("STUN server {url:?}: {e}"))?;
    match parsed.scheme {
        SchemeType::Stun => {}
        SchemeType::Stuns => {
            return Err(format!(
                "STUN server {url:?}: STUN over TLS/DTLS (stuns:) is not supported by the WebRTC \
                 library (webrtc-rs 0.21 skips it); use a plain stun: URL"
            ));
        }
        _ => return Err(format!("STUN server {url:?} is not a stun: URL")),
    }
    if parsed.host.is_empty() {
        return Err(format!("STUN server {url:?} has no valid host"));
    }
    if parsed.port == 0 {
        return Err(format!("STUN server {url:?} has a bad port"));
    }
    Ok(())
}

/// Signals are dropped as stale after this long (sockets described in an SDP go away).
const SIGNAL_LIFETIME_MS: i64 = 60_000;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Transparent mode's in-memory state. Contacts are keyed by their parsed [`PublicKey`]
/// (parsed once, where the key enters: a contact the user names, a signal's verified sender).
struct Hub {
    /// Identifies this login in offers and answers (several logins share one key).
    device: String,
    settings: SessionSettings,
    config: TransparentConfig,
    sessions: Mutex<HashMap<PublicKey, Arc<Session>>>,
    /// Peers with an offer being prepared.
    starting: Mutex<HashSet<PublicKey>>,
    /// Peers whose session this side's user closed: no automatic reconnect, and automatic
    /// offers from them are refused, until the user (or the peer's user) asks to open it.
    closed_here: Mutex<HashSet<PublicKey>>,
    /// Peers who closed the session on purpose (`bye`): no automatic reconnect to them.
    closed_by_peer: Mutex<HashSet<PublicKey>>,
    /// Offerer-side reconnects: peer → (failures so far, not before).
    retries: Mutex<HashMap<PublicKey, (u32, Instant)>>,
    calls: Mutex<HashMap<String, Arc<CallSlot>>>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<SessionEvent>>>,
    /// Bounds the packets from data channels being opened at once.
    direct_receive: Arc<tokio::sync::Semaphore>,
}

/// Runs a write of the transparent handles (consent, call answers: a commit with its fsync,
/// a signal sealed) on a blocking thread, as the engine's writes do.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Storage(format!("write task failed: {e}")))?
}

impl Hub {
    fn new(config: TransparentConfig) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Self {
            device: uuid::Uuid::new_v4().to_string(),
            settings: SessionSettings {
                stun_servers: config.stun_servers.clone(),
                bind_addrs: config.bind_addrs.clone(),
            },
            config,
            sessions: Mutex::default(),
            starting: Mutex::default(),
            closed_here: Mutex::default(),
            closed_by_peer: Mutex::default(),
            retries: Mutex::default(),
            calls: Mutex::default(),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            direct_receive: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    fn session(&self, peer: &PublicKey) -> Option<Arc<Session>> {
        self.sessions.lock().get(peer).cloned()
    }

    /// The peer's session if its data channel is open.
    pub(crate) fn open_session(&self, peer: &PublicKey) -> Option<Arc<Session>> {
        self.session(peer).filter(|s| s.is_open())
    }

    fn call(&self, id: &str) -> Result<Arc<CallSlot>> {
        self.calls
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownCall(id.to_owned()))
    }

    fn live_call_with(&self, peer: &PublicKey) -> Option<Arc<CallSlot>> {
        self.calls
            .lock()
            .values()
            .find(|c| c.peer == *peer && c.info().state != CallState::Ended)
            .cloned()
    }
}

/// What transparent mode needs from the rest of the client, and all it may reach: identity,
/// contacts, consent in the store, the event log, a way to queue sealed packets, and the
/// receive path for packets that arrive on a data channel. The engine implements it
/// (`transparent_host.rs`); this module never sees the engine itself, so the two do not depend
/// on each other.
pub(crate) trait Host: Send + Sync + 'static {
    /// This client's private key (signals are sealed and signed with it); `NoIdentity` before
    /// one exists.
    fn identity(&self) -> Result<jasper_core::PrivateKey>;
    /// The key of a known contact, by name or key text (`UnknownContact` otherwise): where a
    /// contact's key enters transparent mode from the API, parsed once.
    fn contact_key(&self, contact: &str) -> Result<PublicKey>;
    /// The name of the contact with this key, `None` for a key that is not a contact.
    fn contact_name(&self, key: &PublicKey) -> Result<Option<String>>;
    /// (this login consents, the contact said it consents).
    fn consent(&self, key: &PublicKey) -> Result<(bool, bool)>;
    fn set_consent(&self, key: &PublicKey, local: Option<bool>, peer: Option<bool>) -> Result<()>;
    /// Contacts with transparent mode enabled on either side.
    fn consenting_keys(&self) -> Result<Vec<PublicKey>>;
    /// Appends an event to the durable log.
    fn record(&self, kind: EventKind) -> Result<()>;
    /// Queues packets sealed to `peer` for the relays: no history entry, no copy for this
    /// key's other logins (signals).
    fn queue_for(&self, peer: &PublicKey, packets: &[Packet]) -> Result<()>;
    /// A packet from `peer`'s data channel, into the receive path; `true` once applied.
    fn deliver_direct(&self, peer: &PublicKey, packet: &Packet) -> bool;
    /// Something for the outbox changed (a session opened): send what waits.
    fn wake_outbox(&self);
    /// A desktop notification, where the client raises them.
    fn notify(&self, title: &str, body: &str);
}

/// Transparent mode: its state and what it reaches the rest of the client through.
pub(crate) struct Core {
    host: Box<dyn Host>,
    hub: Hub,
    stop: CancellationToken,
}

impl Core {
    pub(crate) fn new(
        config: TransparentConfig,
        host: Box<dyn Host>,
        stop: CancellationToken,
    ) -> Self {
        Core {
            host,
            hub: Hub::new(config),
            stop,
        }
    }

    fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Background task: session events, reconnects, and the start-up announcements.
    pub(crate) async fn run(self: Arc<Self>) {
        let Some(mut events) = self.hub().events_rx.lock().take() else {
            return;
        };
        // Wait for an identity, then pick up where the last run left off.
        while self.host.identity().is_err() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.stop.cancelled() => return,
            }
        }
        if let Ok(statuses) = self.statuses() {
            for (key, s) in statuses {
                if s.local_enabled && s.peer_enabled {
                    if self.is_offerer(&key).unwrap_or(false) {
                        self.maybe_start(&key, false);
                    } else {
                        let _ = self.post_signal(&key, Signal::Reconnect { requested: false });
                    }
                }
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(e) => self.on_session_event(e).await,
                    None => return,
                },
                _ = tick.tick() => {
                    let due: Vec<PublicKey> = self.hub().retries.lock()
                        .iter()
                        .filter(|(_, (_, at))| *at <= Instant::now())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for peer in due {
                        self.maybe_start(&peer, false);
                    }
                }
                _ = self.stop.cancelled() => {
                    let sessions: Vec<_> = self.hub().sessions.lock().drain().map(|(_, s)| s).collect();
                    let calls: Vec<_> = self.hub().calls.lock().keys().cloned().collect();
                    for id in calls {
                        self.end_call(&id, "shutdown", None);
                    }
                    for s in sessions {
                        s.close("shutting down").await;
                    }
                    return;
                }
            }
        }
    }

    pub(super) async fn on_session_event(self: &Arc<Self>, event: SessionEvent) {
        match event {
            SessionEvent::Open { session, peer } => {
                if self.hub().session(&peer).is_some_and(|s| s.id == session) {
                    tracing::info!(session, "transparent session open");
                    self.hub().retries.lock().remove(&peer);
                    self.emit_status(&peer);
                    // Queued messages need not wait for their next relay attempt.
                    self.host.wake_outbox();
                }
            }
            SessionEvent::Down { session, peer, why } => {
                let current = {
                    let mut sessions = self.hub().sessions.lock();
                    match sessions.get(&peer) {
                        Some(s) if s.id == session => sessions.remove(&peer),
                        _ => None,
                    }
                };
                if let Some(s) = current {
                    tracing::info!(session, why, "transparent session down");
                    self.end_calls_with(&peer, "connection_lost");
                    tokio::spawn(async move { s.close("down").await });
                    if self.is_offerer(&peer).unwrap_or(false) && !self.closed_on_purpose(&peer) {
                        self.schedule_retry(&peer);
                    }
                    self.emit_status(&peer);
                }
            }
            SessionEvent::Frame {
                session,
                peer,
                frame,
            } => {
                let Some(s) = self.hub().session(&peer).filter(|s| s.id == session) else {
                    return;
                };
                match frame {
                    Frame::Packet { packet } => {
                        let engine = self.clone();
                        tokio::spawn(async move {
                            // Opening is private-key work: a contact flooding the channel gets
                            // two cores' worth, not one thread per frame.
                            let Ok(_permit) =
                                engine.hub().direct_receive.clone().acquire_owned().await
                            else {
                                return;
                            };
                            let hash = packet.hash.to_ascii_lowercase();
                            let from = peer.clone();
                            let ok = tokio::task::spawn_blocking({
                                let engine = engine.clone();
                                move || engine.host.deliver_direct(&from, &packet)
                            })
                            .await
                            .unwrap_or(false);
                            if ok {
                                s.direct_received.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = s.send_frame(&Frame::Ack { hash, ok }).await;
                        });
                    }
                    Frame::Call { call, op } => self.on_call_frame(&peer, call, op),
                    Frame::Ack { .. } => {}
                }
            }
            SessionEvent::Audio { peer, frame, .. } => {
                if let Some(call) = self.hub().live_call_with(&peer)
                    && call.info().state == CallState::Active
                    && call.audio_tx.try_send(frame).is_err()
                {
                    tracing::debug!("call audio buffer full: frame dropped");
                }
            }
        }
    }

    /// Sends an outbox packet over the peer's data channel if one is open; `true` when the
    /// peer acknowledged it (the caller then marks it delivered). `recipient` is the outbox
    /// row's key text: it is looked up among the few sessions by its canonical text rather
    /// than parsed (an RSA key parse on every send attempt, for a session that is rarely up).
    pub(crate) async fn try_direct(self: &Arc<Self>, recipient: &str, packet_json: &str) -> bool {
        let session = self
            .hub()
            .sessions
            .lock()
            .iter()
            .find(|(key, _)| key.to_text() == recipient)
            .map(|(_, s)| s.clone())
            .filter(|s| s.is_open());
        let Some(session) = session else {
            return false;
        };
        let Ok(packet) = serde_json::from_str::<Packet>(packet_json) else {
            return false;
        };
        match session
            .send_packet(packet, self.hub().config.ack_timeout)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("the contact refused a packet sent directly; using the relays");
                false
            }
            Err(e) => {
                tracing::info!(error = e, "direct send failed; using the relays");
                false
            }
        }
    }

    // ---- calls ----------------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::check_stun_url;

    #[test]
    fn stun_urls_are_checked() {
        for ok in [
            "stun:127.0.0.1:3478",
            "stun:stun.example.org",
            "stun:[::1]:3478",
            "STUN:host:19302",
        ] {
            assert!(check_stun_url(ok).is_ok(), "{ok}");
        }
        assert!(
            check_stun_url("stuns:host:5349")
                .unwrap_err()
                .contains("not supported")
        );
        for bad in [
            "turn:host",
            "host:3478",
            "stun:",
            "stun:host:0",
            "stun:host:x",
            "stun:[::1",
            // No query on a STUN URL (RFC 7064): the library refuses it at session start.
            "stun:host:19302?transport=udp",
        ] {
            assert!(check_stun_url(bad).is_err(), "{bad}");
        }
    }
}
