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
//!   API ([`Engine::send_audio`], [`Engine::next_audio`]).

pub mod session;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jasper_core::PublicKey;
use jasper_core::protocol::{InnerMessage, MessageKind, Packet, timestamp_now};
use tokio::sync::{mpsc, watch};

use crate::db::{Db, now_ms};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use session::{Session, SessionEvent, SessionSettings};
use wire::{CallOp, Frame, SIGNAL_VERSION, Signal, SignalEnvelope, TYPE_RTC};

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

fn check_stun_url(url: &str) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("STUN server {url:?} is not a stun: URL"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "stun" => {}
        "stuns" => {
            return Err(format!(
                "STUN server {url:?}: STUN over TLS/DTLS (stuns:) is not supported by the WebRTC \
                 library (webrtc-rs 0.21 skips it); use a plain stun: URL"
            ));
        }
        _ => return Err(format!("STUN server {url:?} is not a stun: URL")),
    }
    let host_port = rest.split('?').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| format!("STUN server {url:?}: unclosed IPv6 bracket"))?;
        (h, p.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("STUN server {url:?} has no valid host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("STUN server {url:?} has a bad port"));
    }
    Ok(())
}

/// Signals are dropped as stale after this long (sockets described in an SDP go away).
const SIGNAL_LIFETIME_MS: i64 = 60_000;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Ended calls kept for `calls()`.
const ENDED_CALLS_KEPT: usize = 32;
/// Received audio frames buffered per call before the oldest are dropped (~5 s of 20 ms).
const AUDIO_BUFFER: usize = 256;

struct CallSlot {
    info: Mutex<CallInfo>,
    audio_tx: mpsc::Sender<AudioFrame>,
    audio_rx: tokio::sync::Mutex<mpsc::Receiver<AudioFrame>>,
    ended: watch::Sender<bool>,
}

impl CallSlot {
    fn info(&self) -> CallInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Transparent mode's in-memory state, owned by the engine.
pub struct Hub {
    /// Identifies this login in offers and answers (several logins share one key).
    device: String,
    settings: SessionSettings,
    config: TransparentConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Peers with an offer being prepared.
    starting: Mutex<HashSet<String>>,
    /// Peers whose session this side's user closed: no automatic reconnect, and automatic
    /// offers from them are refused, until the user (or the peer's user) asks to open it.
    closed_here: Mutex<HashSet<String>>,
    /// Peers who closed the session on purpose (`bye`): no automatic reconnect to them.
    closed_by_peer: Mutex<HashSet<String>>,
    /// Offerer-side reconnects: peer → (failures so far, not before).
    retries: Mutex<HashMap<String, (u32, Instant)>>,
    calls: Mutex<HashMap<String, Arc<CallSlot>>>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<SessionEvent>>>,
    /// Bounds the packets from data channels being opened at once.
    direct_receive: Arc<tokio::sync::Semaphore>,
}

impl Hub {
    pub fn new(config: TransparentConfig) -> Self {
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

    fn session(&self, peer: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(peer).cloned()
    }

    /// The peer's session if its data channel is open.
    pub(crate) fn open_session(&self, peer: &str) -> Option<Arc<Session>> {
        self.session(peer).filter(|s| s.is_open())
    }

    fn call(&self, id: &str) -> Result<Arc<CallSlot>> {
        lock(&self.calls)
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownCall(id.to_owned()))
    }

    fn live_call_with(&self, peer: &str) -> Option<Arc<CallSlot>> {
        lock(&self.calls)
            .values()
            .find(|c| {
                let i = c.info();
                i.contact == peer && i.state != CallState::Ended
            })
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    fn hub(&self) -> &Hub {
        &self.inner.transparent
    }

    fn consent(&self, key: &str) -> Result<(bool, bool)> {
        Ok(self
            .inner
            .db
            .lock()
            .query_row(
                "SELECT local, peer FROM transparent WHERE key = ?1",
                [key],
                |r| Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?
            .unwrap_or((false, false)))
    }

    fn status_of(&self, key: &str) -> Result<TransparentStatus> {
        let (local, peer) = self.consent(key)?;
        let contact = self.inner.db.contact_by_key(key)?;
        let session = self.hub().session(key);
        let state = match (&session, local, peer) {
            (_, false, _) => TransparentState::Off,
            (_, true, false) => TransparentState::WaitingForPeer,
            (Some(s), true, true) if s.is_open() => TransparentState::Connected,
            (Some(_), true, true) => TransparentState::Connecting,
            (None, true, true) if lock(&self.hub().starting).contains(key) => {
                TransparentState::Connecting
            }
            (None, true, true) => TransparentState::Idle,
        };
        Ok(TransparentStatus {
            contact: key.to_owned(),
            contact_name: contact.map(|c| c.name),
            local_enabled: local,
            peer_enabled: peer,
            state,
            session_id: session.as_ref().map(|s| s.id.clone()),
            direct_sent: session
                .as_ref()
                .map_or(0, |s| s.direct_sent.load(Ordering::Relaxed)),
            direct_received: session
                .as_ref()
                .map_or(0, |s| s.direct_received.load(Ordering::Relaxed)),
        })
    }

    fn emit_status(&self, key: &str) {
        if let Ok(status) = self.status_of(key) {
            self.emit(EventKind::TransparentChanged { status });
        }
    }

    fn emit(&self, kind: EventKind) {
        if let Err(e) = self.commit(|tx| Db::push_event(tx, &kind)) {
            tracing::warn!(error = %e, "could not record a transparent-mode event");
        }
    }

    fn contact_key(&self, contact: &str) -> Result<String> {
        let key = self.resolve_key(contact)?;
        if self.inner.db.contact_by_key(&key)?.is_none() {
            return Err(EngineError::UnknownContact(contact.to_owned()));
        }
        Ok(key)
    }

    fn set_consent(&self, key: &str, local: Option<bool>, peer: Option<bool>) -> Result<()> {
        self.inner.db.lock().execute(
            "INSERT INTO transparent(key, local, peer, changed_at) VALUES(?1, COALESCE(?2, 0), COALESCE(?3, 0), ?4)
             ON CONFLICT(key) DO UPDATE SET local = COALESCE(?2, local), peer = COALESCE(?3, peer), changed_at = ?4",
            rusqlite::params![key, local, peer, now_ms()],
        )?;
        Ok(())
    }

    /// Whether this side offers: the side whose key fingerprint sorts first.
    fn is_offerer(&self, peer: &str) -> Result<bool> {
        let me = self.me()?.public_key().fingerprint();
        let them = PublicKey::from_text(peer)
            .map_err(|e| EngineError::InvalidKey(e.to_string()))?
            .fingerprint();
        Ok(me < them)
    }

    /// Every contact with transparent mode enabled on either side.
    pub fn transparent_statuses(&self) -> Result<Vec<TransparentStatus>> {
        let keys: Vec<String> = {
            let conn = self.inner.db.lock();
            let mut stmt = conn
                .prepare("SELECT key FROM transparent WHERE local = 1 OR peer = 1 ORDER BY key")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        keys.iter().map(|k| self.status_of(k)).collect()
    }

    /// Transparent mode with one contact (name or key).
    pub fn transparent_status(&self, contact: &str) -> Result<TransparentStatus> {
        let key = self.contact_key(contact)?;
        self.status_of(&key)
    }

    /// Enables or disables transparent mode for a contact (see [`TRANSPARENT_MODE_WARNING`]).
    /// Enabling tells the contact through the relays; once both sides have enabled it, a
    /// session comes up by itself. Disabling closes the session and ends its calls.
    pub fn set_transparent(&self, contact: &str, enabled: bool) -> Result<TransparentStatus> {
        let key = self.contact_key(contact)?;
        let (was, _) = self.consent(&key)?;
        self.set_consent(&key, Some(enabled), None)?;
        if was != enabled {
            let yours_known = self.consent(&key)?.1;
            self.post_signal(
                &key,
                Signal::Consent {
                    enabled,
                    yours_known,
                },
            )?;
        }
        if enabled {
            self.clear_closed(&key);
            self.maybe_start(&key, false);
        } else {
            self.end_calls_with(&key, "transparent_disabled");
            if let Some(s) = lock(&self.hub().sessions).remove(&key) {
                tokio::spawn(async move { s.close("transparent mode disabled").await });
            }
            lock(&self.hub().retries).remove(&key);
        }
        self.emit_status(&key);
        self.status_of(&key)
    }

    /// Brings the session with a contact up (after a deliberate close, or to wait for it),
    /// waiting up to `wait` for the data channel to open.
    pub async fn connect_transparent(
        &self,
        contact: &str,
        wait: Duration,
    ) -> Result<TransparentStatus> {
        let key = self.contact_key(contact)?;
        let (local, peer) = self.consent(&key)?;
        if !local || !peer {
            return Err(EngineError::TransparentOff(format!(
                "transparent mode is not enabled on {} side",
                if local { "the contact's" } else { "this" }
            )));
        }
        self.clear_closed(&key);
        lock(&self.hub().retries).remove(&key);
        if self.hub().session(&key).is_none() {
            if self.is_offerer(&key)? {
                self.maybe_start(&key, true);
            } else {
                self.post_signal(&key, Signal::Reconnect { requested: true })?;
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.hub().session(&key) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if s.wait_open(left).await {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.status_of(&key)
    }

    /// Closes the session with a contact on purpose: messages go through the relays until
    /// [`Engine::connect_transparent`] (on either side) or a restart. Consent is unchanged.
    pub async fn disconnect_transparent(&self, contact: &str) -> Result<TransparentStatus> {
        let key = self.contact_key(contact)?;
        lock(&self.hub().closed_here).insert(key.clone());
        lock(&self.hub().retries).remove(&key);
        let session = lock(&self.hub().sessions).remove(&key);
        if let Some(s) = session {
            self.end_calls_with(&key, "hung_up");
            let _ = self.post_signal(
                &key,
                Signal::Bye {
                    session: s.id.clone(),
                },
            );
            s.close("closed on purpose").await;
        }
        self.emit_status(&key);
        self.status_of(&key)
    }

    /// Seals a signal to `peer` and queues it (no history entry, no copy to other logins).
    fn post_signal(&self, peer: &str, signal: Signal) -> Result<()> {
        let me = self.me()?;
        let key = PublicKey::from_text(peer).map_err(|e| EngineError::InvalidKey(e.to_string()))?;
        let content = serde_json::to_string(&SignalEnvelope {
            v: SIGNAL_VERSION,
            expires_at: now_ms() + SIGNAL_LIFETIME_MS,
            signal,
        })
        .expect("signals serialise");
        let inner = InnerMessage {
            sender: me.public_key().to_text().to_owned(),
            // Signaling belongs to no conversation.
            channel_id: String::new(),
            kind: MessageKind::Other(TYPE_RTC.into()),
            content,
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: timestamp_now(),
        };
        let packets = jasper_core::seal(&me, std::slice::from_ref(&key), &inner)?;
        self.commit(|tx| {
            for p in &packets {
                Db::enqueue(
                    tx,
                    None,
                    false,
                    &p.recipient,
                    &hex::encode(key.fingerprint()),
                    &crate::engine::to_json(p),
                    &p.hash,
                    0,
                )?;
            }
            Ok(())
        })?;
        self.inner.wake_outbox.notify_one();
        Ok(())
    }

    fn clear_closed(&self, peer: &str) {
        lock(&self.hub().closed_here).remove(peer);
        lock(&self.hub().closed_by_peer).remove(peer);
    }

    fn closed_on_purpose(&self, peer: &str) -> bool {
        lock(&self.hub().closed_here).contains(peer)
            || lock(&self.hub().closed_by_peer).contains(peer)
    }

    /// Starts an offer to `peer` if both consent, none is up or starting, it was not closed
    /// on purpose, this side is the offerer and no retry back-off is pending. `requested`:
    /// the user asked (the offer then overrides a deliberate close on the other side).
    fn maybe_start(&self, peer: &str, requested: bool) {
        let Ok((true, true)) = self.consent(peer) else {
            return;
        };
        if !self.is_offerer(peer).unwrap_or(false)
            || self.hub().session(peer).is_some()
            || self.closed_on_purpose(peer)
            || lock(&self.hub().retries)
                .get(peer)
                .is_some_and(|(_, at)| *at > Instant::now())
            || !lock(&self.hub().starting).insert(peer.to_owned())
        {
            return;
        }
        let engine = self.clone();
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let result = Session::offer(
                &engine.hub().settings,
                id.clone(),
                peer.clone(),
                engine.hub().events_tx.clone(),
            )
            .await;
            lock(&engine.hub().starting).remove(&peer);
            let session = match result {
                Ok((session, sdp)) => {
                    let session = Arc::new(session);
                    lock(&engine.hub().sessions).insert(peer.clone(), session.clone());
                    let signal = Signal::Offer {
                        session: id.clone(),
                        device: engine.hub().device.clone(),
                        sdp,
                        requested,
                    };
                    if let Err(e) = engine.post_signal(&peer, signal) {
                        tracing::warn!(error = %e, "could not queue an offer");
                    }
                    session
                }
                Err(e) => {
                    tracing::warn!(error = e, "could not start a WebRTC session");
                    engine.schedule_retry(&peer);
                    return;
                }
            };
            tracing::info!(session = id, "transparent session offered");
            engine.emit_status(&peer);
            engine.watch_connect(session);
        });
    }

    /// Abandons a session that does not open within the connect timeout.
    fn watch_connect(&self, session: Arc<Session>) {
        let timeout = self.hub().config.connect_timeout;
        tokio::spawn(async move {
            if !session.wait_open(timeout).await {
                session.close("not connected in time").await;
            }
        });
    }

    fn schedule_retry(&self, peer: &str) {
        let mut retries = lock(&self.hub().retries);
        let entry = retries
            .entry(peer.to_owned())
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        let delay =
            (Duration::from_secs(2) * 2u32.saturating_pow(entry.0.min(10))).min(MAX_RETRY_DELAY);
        entry.1 = Instant::now() + delay;
        tracing::info!(?delay, "transparent session will be retried");
    }

    /// Applies a signal from `sender` (an opened, verified `RTC` inner message).
    pub(crate) fn handle_signal(&self, sender: &str, content: &str) {
        let known = self
            .inner
            .db
            .contact_by_key(sender)
            .ok()
            .flatten()
            .is_some();
        if !known {
            tracing::debug!("WebRTC signal from a key that is not a contact: ignored");
            return;
        }
        let env = match SignalEnvelope::parse(content) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = e, "malformed WebRTC signal ignored");
                return;
            }
        };
        let stale = env.expires_at < now_ms();
        let Ok((local, peer_before)) = self.consent(sender) else {
            return;
        };
        match env.signal {
            Signal::Consent {
                enabled,
                yours_known,
            } => {
                if peer_before != enabled {
                    let _ = self.set_consent(sender, None, Some(enabled));
                }
                if enabled {
                    // The contact's user (re-)enabled it: their earlier close no longer holds.
                    lock(&self.hub().closed_by_peer).remove(sender);
                    lock(&self.hub().retries).remove(sender);
                    if local && !yours_known {
                        // Tell them ours: they enabled it before hearing of ours.
                        let _ = self.post_signal(
                            sender,
                            Signal::Consent {
                                enabled: true,
                                yours_known: true,
                            },
                        );
                    }
                    self.maybe_start(sender, false);
                } else {
                    self.end_calls_with(sender, "transparent_disabled");
                    if let Some(s) = lock(&self.hub().sessions).remove(sender) {
                        tokio::spawn(async move { s.close("the contact disabled it").await });
                    }
                }
                self.emit_status(sender);
            }
            Signal::Reconnect { requested } => {
                if !local || stale || !self.is_offerer(sender).unwrap_or(false) {
                    return;
                }
                if !requested && lock(&self.hub().closed_here).contains(sender) {
                    tracing::info!("automatic reconnect after a deliberate close: ignored");
                    return;
                }
                if !peer_before {
                    let _ = self.set_consent(sender, None, Some(true));
                }
                self.clear_closed(sender);
                lock(&self.hub().retries).remove(sender);
                // The contact has no session: whatever we hold is dead.
                if let Some(old) = lock(&self.hub().sessions).remove(sender) {
                    self.end_calls_with(sender, "connection_lost");
                    tokio::spawn(async move { old.close("the contact reconnects").await });
                }
                self.maybe_start(sender, false);
                self.emit_status(sender);
            }
            Signal::Offer {
                session,
                device,
                sdp,
                requested,
            } => {
                if !local {
                    tracing::info!(
                        "WebRTC offer from a contact without transparent mode enabled here: ignored"
                    );
                    return;
                }
                if stale {
                    tracing::info!(session, "stale WebRTC offer ignored");
                    return;
                }
                if !peer_before {
                    let _ = self.set_consent(sender, None, Some(true));
                }
                if self.hub().session(sender).is_some_and(|s| s.id == session) {
                    return;
                }
                if !requested && lock(&self.hub().closed_here).contains(sender) {
                    // An automatic reconnect racing our `bye`: say it again.
                    tracing::info!(session, "automatic offer after a deliberate close: refused");
                    let _ = self.post_signal(sender, Signal::Bye { session });
                    return;
                }
                self.clear_closed(sender);
                tracing::info!(session, device, "answering a WebRTC offer");
                self.answer(sender.to_owned(), session, sdp);
            }
            Signal::Answer {
                session,
                device,
                sdp,
            } => {
                let Some(s) = self
                    .hub()
                    .session(sender)
                    .filter(|s| s.id == session && s.offerer)
                else {
                    return;
                };
                let engine = self.clone();
                tokio::spawn(async move {
                    if s.has_remote_description().await {
                        // Another login of the same key answered first.
                        tracing::debug!(device, "second answer to one offer ignored");
                        return;
                    }
                    if let Err(e) = s.accept_answer(sdp).await {
                        tracing::warn!(error = e, "WebRTC answer refused");
                        s.close("bad answer").await;
                    }
                    engine.emit_status(&s.peer);
                });
            }
            Signal::Candidate {
                session,
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                if let Some(s) = self.hub().session(sender).filter(|s| s.id == session) {
                    tokio::spawn(async move {
                        if let Err(e) = s.add_candidate(candidate, sdp_mid, sdp_mline_index).await {
                            tracing::debug!(error = e, "ICE candidate refused");
                        }
                    });
                }
            }
            Signal::Bye { session } => {
                // Applies to that session, or to none (ours may already be gone: the channel
                // closing can beat the `bye` through the relays). A newer session stands.
                let current = self.hub().session(sender);
                if current.as_ref().is_some_and(|s| s.id != session) {
                    return;
                }
                lock(&self.hub().closed_by_peer).insert(sender.to_owned());
                lock(&self.hub().retries).remove(sender);
                if let Some(s) = current {
                    lock(&self.hub().sessions).remove(sender);
                    self.end_calls_with(sender, "remote_hung_up");
                    tokio::spawn(async move { s.close("the contact closed it").await });
                }
                self.emit_status(sender);
            }
        }
    }

    fn answer(&self, peer: String, id: String, offer_sdp: String) {
        let engine = self.clone();
        tokio::spawn(async move {
            let result = Session::answer(
                &engine.hub().settings,
                id.clone(),
                peer.clone(),
                offer_sdp,
                engine.hub().events_tx.clone(),
            )
            .await;
            match result {
                Ok((session, sdp)) => {
                    let session = Arc::new(session);
                    let old = lock(&engine.hub().sessions).insert(peer.clone(), session.clone());
                    if let Some(old) = old {
                        engine.end_calls_with(&peer, "connection_lost");
                        old.close("replaced by a new offer").await;
                    }
                    let signal = Signal::Answer {
                        session: id,
                        device: engine.hub().device.clone(),
                        sdp,
                    };
                    if let Err(e) = engine.post_signal(&peer, signal) {
                        tracing::warn!(error = %e, "could not queue an answer");
                    }
                    engine.emit_status(&peer);
                    engine.watch_connect(session);
                }
                Err(e) => tracing::warn!(error = e, "could not answer a WebRTC offer"),
            }
        });
    }

    /// Background task: session events, reconnects, and the start-up announcements.
    pub(crate) async fn run_transparent(self) {
        let Some(mut events) = lock(&self.hub().events_rx).take() else {
            return;
        };
        // Wait for an identity, then pick up where the last run left off.
        while self.me().is_err() {
            tokio::select! {
                _ = self.inner.identity_ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
        if let Ok(statuses) = self.transparent_statuses() {
            for s in statuses {
                if s.local_enabled && s.peer_enabled {
                    if self.is_offerer(&s.contact).unwrap_or(false) {
                        self.maybe_start(&s.contact, false);
                    } else {
                        let _ =
                            self.post_signal(&s.contact, Signal::Reconnect { requested: false });
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
                    let due: Vec<String> = lock(&self.hub().retries)
                        .iter()
                        .filter(|(_, (_, at))| *at <= Instant::now())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for peer in due {
                        self.maybe_start(&peer, false);
                    }
                }
                _ = self.inner.stop.cancelled() => {
                    let sessions: Vec<_> = lock(&self.hub().sessions).drain().map(|(_, s)| s).collect();
                    let calls: Vec<_> = lock(&self.hub().calls).keys().cloned().collect();
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

    async fn on_session_event(&self, event: SessionEvent) {
        match event {
            SessionEvent::Open { session, peer } => {
                if self.hub().session(&peer).is_some_and(|s| s.id == session) {
                    tracing::info!(session, "transparent session open");
                    lock(&self.hub().retries).remove(&peer);
                    self.emit_status(&peer);
                    // Queued messages need not wait for their next relay attempt.
                    self.inner.wake_outbox.notify_one();
                }
            }
            SessionEvent::Down { session, peer, why } => {
                let current = {
                    let mut sessions = lock(&self.hub().sessions);
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
                                move || engine.receive_direct(&from, &packet)
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
    /// peer acknowledged it (the caller then marks it delivered).
    pub(crate) async fn try_direct(&self, recipient: &str, packet_json: &str) -> bool {
        let Some(session) = self.hub().open_session(recipient) else {
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

    fn new_call(&self, id: String, peer: &str, outgoing: bool) -> Arc<CallSlot> {
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_BUFFER);
        let slot = Arc::new(CallSlot {
            info: Mutex::new(CallInfo {
                id: id.clone(),
                contact: peer.to_owned(),
                contact_name: self
                    .inner
                    .db
                    .contact_by_key(peer)
                    .ok()
                    .flatten()
                    .map(|c| c.name),
                outgoing,
                state: CallState::Ringing,
                end_reason: None,
                started_at: now_ms(),
                answered_at: None,
                ended_at: None,
            }),
            audio_tx,
            audio_rx: tokio::sync::Mutex::new(audio_rx),
            ended: watch::channel(false).0,
        });
        {
            let mut calls = lock(&self.hub().calls);
            let mut ended: Vec<(i64, String)> = calls
                .values()
                .map(|c| c.info())
                .filter(|i| i.state == CallState::Ended)
                .map(|i| (i.ended_at.unwrap_or(0), i.id))
                .collect();
            if ended.len() >= ENDED_CALLS_KEPT {
                ended.sort();
                for (_, id) in &ended[..ended.len() + 1 - ENDED_CALLS_KEPT] {
                    calls.remove(id);
                }
            }
            calls.insert(id.clone(), slot.clone());
        }
        self.emit(EventKind::CallChanged { call: slot.info() });
        let engine = self.clone();
        let ring = self.hub().config.ring_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(ring).await;
            if engine
                .hub()
                .call(&id)
                .is_ok_and(|c| c.info().state == CallState::Ringing)
            {
                engine.end_call(&id, "no_answer", Some(CallOp::Hangup));
            }
        });
        slot
    }

    /// Ends a call (idempotent), telling the peer with `notify` when given.
    fn end_call(&self, id: &str, reason: &str, notify: Option<CallOp>) {
        let Ok(slot) = self.hub().call(id) else {
            return;
        };
        let info = {
            let mut info = lock(&slot.info);
            if info.state == CallState::Ended {
                return;
            }
            info.state = CallState::Ended;
            info.end_reason = Some(reason.to_owned());
            info.ended_at = Some(now_ms());
            info.clone()
        };
        slot.ended.send_replace(true);
        if let Some(op) = notify {
            self.send_call_frame(&info.contact, id, op);
        }
        self.emit(EventKind::CallChanged { call: info });
    }

    fn end_calls_with(&self, peer: &str, reason: &str) {
        let ids: Vec<String> = lock(&self.hub().calls)
            .values()
            .map(|c| c.info())
            .filter(|i| i.contact == peer && i.state != CallState::Ended)
            .map(|i| i.id)
            .collect();
        for id in ids {
            self.end_call(&id, reason, None);
        }
    }

    fn send_call_frame(&self, peer: &str, call: &str, op: CallOp) {
        if let Some(s) = self.hub().open_session(peer) {
            let frame = Frame::Call {
                call: call.to_owned(),
                op,
            };
            tokio::spawn(async move {
                if let Err(e) = s.send_frame(&frame).await {
                    tracing::debug!(error = e, "call signal not sent");
                }
            });
        }
    }

    fn on_call_frame(&self, peer: &str, call: String, op: CallOp) {
        if call.is_empty() || call.len() > wire::MAX_ID_BYTES {
            return;
        }
        let existing = self
            .hub()
            .call(&call)
            .ok()
            .filter(|c| c.info().contact == peer);
        match (op, existing) {
            (CallOp::Invite, None) => {
                if self.hub().live_call_with(peer).is_some() {
                    self.send_call_frame(peer, &call, CallOp::Busy);
                    return;
                }
                let slot = self.new_call(call, peer, false);
                self.notify_call(&slot.info());
            }
            (CallOp::Accept, Some(slot)) => {
                let info = {
                    let mut info = lock(&slot.info);
                    if !(info.outgoing && info.state == CallState::Ringing) {
                        return;
                    }
                    info.state = CallState::Active;
                    info.answered_at = Some(now_ms());
                    info.clone()
                };
                self.emit(EventKind::CallChanged { call: info });
            }
            (CallOp::Reject, Some(_)) => self.end_call(&call, "rejected", None),
            (CallOp::Busy, Some(_)) => self.end_call(&call, "busy", None),
            (CallOp::Hangup, Some(slot)) => {
                let info = slot.info();
                let reason = if !info.outgoing && info.state == CallState::Ringing {
                    // The caller gave up before it was answered.
                    "cancelled"
                } else {
                    "remote_hung_up"
                };
                self.end_call(&call, reason, None);
            }
            _ => tracing::debug!(?op, "call signal for no matching call ignored"),
        }
    }

    fn notify_call(&self, info: &CallInfo) {
        let title = info
            .contact_name
            .clone()
            .unwrap_or_else(|| crate::db::short_key(&info.contact));
        self.notify_text(&format!("Incoming call from {title}"), "Jasper call");
    }

    /// Calls a contact. Needs transparent mode on both sides; brings the session up first if
    /// it is down (waiting up to the connect timeout). The call rings until the contact
    /// accepts, rejects, or the ring timeout passes.
    pub async fn start_call(&self, contact: &str) -> Result<CallInfo> {
        let key = self.contact_key(contact)?;
        let (local, peer) = self.consent(&key)?;
        if !local || !peer {
            return Err(EngineError::TransparentOff(
                "calls need transparent mode enabled on both sides".into(),
            ));
        }
        if self.hub().live_call_with(&key).is_some() {
            return Err(EngineError::CallBusy);
        }
        if self.hub().open_session(&key).is_none() {
            self.connect_transparent(&key, self.hub().config.connect_timeout)
                .await?;
        }
        if self.hub().open_session(&key).is_none() {
            return Err(EngineError::TransparentUnavailable(
                "the direct connection to the contact did not come up".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let slot = self.new_call(id.clone(), &key, true);
        self.send_call_frame(&key, &id, CallOp::Invite);
        Ok(slot.info())
    }

    pub fn accept_call(&self, call: &str) -> Result<CallInfo> {
        let slot = self.hub().call(call)?;
        let info = {
            let mut info = lock(&slot.info);
            if info.outgoing || info.state != CallState::Ringing {
                return Err(EngineError::CallState(format!(
                    "only a ringing incoming call can be accepted (this one is {})",
                    describe(&info)
                )));
            }
            info.state = CallState::Active;
            info.answered_at = Some(now_ms());
            info.clone()
        };
        self.send_call_frame(&info.contact, call, CallOp::Accept);
        self.emit(EventKind::CallChanged { call: info.clone() });
        Ok(info)
    }

    pub fn reject_call(&self, call: &str) -> Result<CallInfo> {
        let slot = self.hub().call(call)?;
        let info = slot.info();
        if info.outgoing || info.state != CallState::Ringing {
            return Err(EngineError::CallState(format!(
                "only a ringing incoming call can be rejected (this one is {})",
                describe(&info)
            )));
        }
        self.end_call(call, "rejected", Some(CallOp::Reject));
        Ok(slot.info())
    }

    pub fn hang_up(&self, call: &str) -> Result<CallInfo> {
        let slot = self.hub().call(call)?;
        if slot.info().state == CallState::Ended {
            return Err(EngineError::CallState("the call has already ended".into()));
        }
        self.end_call(call, "hung_up", Some(CallOp::Hangup));
        Ok(slot.info())
    }

    pub fn call_info(&self, call: &str) -> Result<CallInfo> {
        Ok(self.hub().call(call)?.info())
    }

    /// Live calls first, then recently ended ones.
    pub fn calls(&self) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = lock(&self.hub().calls).values().map(|c| c.info()).collect();
        calls.sort_by_key(|c| (c.state == CallState::Ended, std::cmp::Reverse(c.started_at)));
        calls
    }

    /// Sends one Opus frame (1..=1200 bytes, 2.5..=120 ms) into an active call.
    pub async fn send_audio(&self, call: &str, data: Vec<u8>, duration_us: u32) -> Result<()> {
        if data.is_empty() || data.len() > 1200 {
            return Err(EngineError::InvalidArgument(format!(
                "an audio frame is one Opus packet of 1..=1200 bytes, not {}",
                data.len()
            )));
        }
        if !(2_500..=120_000).contains(&duration_us) || !duration_us.is_multiple_of(2_500) {
            return Err(EngineError::InvalidArgument(format!(
                "an Opus frame lasts a multiple of 2.5 ms up to 120 ms, not {duration_us} µs"
            )));
        }
        let slot = self.hub().call(call)?;
        let info = slot.info();
        if info.state != CallState::Active {
            return Err(EngineError::CallState(format!(
                "audio flows only in an active call (this one is {})",
                describe(&info)
            )));
        }
        let session = self.hub().open_session(&info.contact).ok_or_else(|| {
            EngineError::TransparentUnavailable("the direct connection is down".into())
        })?;
        session
            .send_audio(data, Duration::from_micros(u64::from(duration_us)))
            .await
            .map_err(EngineError::TransparentUnavailable)
    }

    /// The next received audio frame of a call, waiting up to `timeout`. `Ok(None)`: nothing
    /// arrived in time. Once the call has ended and its frames are read: `CallState` error.
    pub async fn next_audio(&self, call: &str, timeout: Duration) -> Result<Option<AudioFrame>> {
        let slot = self.hub().call(call)?;
        let mut ended = slot.ended.subscribe();
        let mut rx = slot.audio_rx.lock().await;
        if let Ok(frame) = rx.try_recv() {
            return Ok(Some(frame));
        }
        if *ended.borrow() {
            return Err(EngineError::CallState("the call has ended".into()));
        }
        tokio::select! {
            frame = rx.recv() => Ok(frame),
            _ = ended.wait_for(|e| *e) => Ok(rx.try_recv().ok()),
            _ = tokio::time::sleep(timeout) => Ok(None),
            _ = self.inner.stop.cancelled() => Err(EngineError::ShuttingDown),
        }
    }
}

fn describe(info: &CallInfo) -> String {
    match (info.state, info.outgoing) {
        (CallState::Ringing, true) => "ringing, outgoing".into(),
        (CallState::Ringing, false) => "ringing, incoming".into(),
        (CallState::Active, _) => "active".into(),
        (CallState::Ended, _) => {
            format!("ended: {}", info.end_reason.as_deref().unwrap_or("unknown"))
        }
    }
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
            "STUN:host:19302?transport=udp",
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
        ] {
            assert!(check_stun_url(bad).is_err(), "{bad}");
        }
    }
}

/// What a data channel may deliver, through `receive_direct` on a real engine (its own
/// database, no relays): only the contact's own packets, addressed to this key, and each one
/// applied is also queued for this key's other logins.
#[cfg(test)]
mod direct_packets {
    use std::sync::Arc;

    use jasper_core::PrivateKey;
    use jasper_core::protocol::{InnerMessage, MessageKind, timestamp_now};

    use crate::{Engine, EngineConfig, EphemeralSecretStore};

    fn message(from: &PrivateKey, to: &PrivateKey, text: &str) -> jasper_core::protocol::Packet {
        let inner = InnerMessage {
            sender: from.public_key().to_text().to_owned(),
            channel_id: uuid::Uuid::new_v4().to_string(),
            kind: MessageKind::Message,
            content: text.into(),
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: timestamp_now(),
        };
        jasper_core::seal(from, &[to.public_key()], &inner)
            .unwrap()
            .remove(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_contacts_own_packets_to_this_key_are_applied_and_mirrored() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.notifications = false;
        let engine = Engine::open(config, Arc::new(EphemeralSecretStore::default()))
            .await
            .unwrap();
        engine.create_identity().await.unwrap();
        let me = engine.me().unwrap();
        let (bob, mallory) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let bob_key = bob.public_key().to_text().to_owned();
        engine.add_contact(&bob_key, "bob", None).unwrap();
        let mirrored = || {
            engine
                .inner
                .db
                .due_outbox(i64::MAX, 100)
                .unwrap()
                .into_iter()
                .filter(|i| i.self_copy)
                .count()
        };

        // Another key's packet on bob's channel, and bob's packet for someone else: refused.
        assert!(!engine.receive_direct(&bob_key, &message(&mallory, &me, "forwarded")));
        assert!(!engine.receive_direct(&bob_key, &message(&bob, &mallory, "not yours")));
        // A packet whose fields are broken: refused.
        let mut broken = message(&bob, &me, "broken");
        broken.hash = "00".repeat(32);
        assert!(!engine.receive_direct(&bob_key, &broken));
        assert_eq!(mirrored(), 0);
        assert!(
            engine
                .messages("bob", None, 10)
                .unwrap()
                .messages
                .is_empty()
        );

        // Bob's own packet: applied, mirrored once; again: acknowledged, not applied twice.
        let good = message(&bob, &me, "hello direct");
        assert!(engine.receive_direct(&bob_key, &good));
        assert!(engine.receive_direct(&bob_key, &good));
        let history = engine.messages("bob", None, 10).unwrap().messages;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].content, "hello direct");
        assert_eq!(mirrored(), 1);
        engine.shutdown();
    }
}
