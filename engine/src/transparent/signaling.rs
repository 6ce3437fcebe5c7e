//! Signaling through the relays (consent, offer, answer, reconnect, bye as sealed `RTC` inner
//! messages), who offers, reconnects with back-off, and answering offers.

use super::Core;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_core::PublicKey;
use jasper_core::protocol::{InnerMessage, MessageKind, timestamp_now};

use super::session::Session;
use super::wire::{SIGNAL_VERSION, Signal, SignalEnvelope, TYPE_RTC};
use super::{MAX_RETRY_DELAY, SIGNAL_LIFETIME_MS};
use crate::error::Result;
use crate::store::now_ms;

impl Core {
    /// Seals a signal to `peer` and queues it (no history entry, no copy to other logins).
    pub(super) fn post_signal(self: &Arc<Self>, peer: &PublicKey, signal: Signal) -> Result<()> {
        let me = self.host.identity()?;
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
        let packets = jasper_core::seal(&me, std::slice::from_ref(peer), &inner)?;
        self.host.queue_for(peer, &packets)
    }

    pub(super) fn clear_closed(self: &Arc<Self>, peer: &PublicKey) {
        self.hub().closed_here.lock().remove(peer);
        self.hub().closed_by_peer.lock().remove(peer);
    }

    pub(super) fn closed_on_purpose(self: &Arc<Self>, peer: &PublicKey) -> bool {
        self.hub().closed_here.lock().contains(peer)
            || self.hub().closed_by_peer.lock().contains(peer)
    }

    /// Starts an offer to `peer` if both consent, none is up or starting, it was not closed
    /// on purpose, this side is the offerer and no retry back-off is pending. `requested`:
    /// the user asked (the offer then overrides a deliberate close on the other side).
    pub(super) fn maybe_start(self: &Arc<Self>, peer: &PublicKey, requested: bool) {
        let Ok((true, true)) = self.consent(peer) else {
            return;
        };
        if !self.is_offerer(peer).unwrap_or(false)
            || self.hub().session(peer).is_some()
            || self.closed_on_purpose(peer)
            || self
                .hub()
                .retries
                .lock()
                .get(peer)
                .is_some_and(|(_, at)| *at > Instant::now())
            || !self.hub().starting.lock().insert(peer.clone())
        {
            return;
        }
        let engine = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let result = Session::offer(
                &engine.hub().settings,
                id.clone(),
                peer.clone(),
                engine.hub().events_tx.clone(),
            )
            .await;
            engine.hub().starting.lock().remove(&peer);
            let session = match result {
                Ok((session, sdp)) => {
                    let session = Arc::new(session);
                    engine
                        .hub()
                        .sessions
                        .lock()
                        .insert(peer.clone(), session.clone());
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
    pub(super) fn watch_connect(self: &Arc<Self>, session: Arc<Session>) {
        let timeout = self.hub().config.connect_timeout;
        tokio::spawn(async move {
            if !session.wait_open(timeout).await {
                session.close("not connected in time").await;
            }
        });
    }

    pub(super) fn schedule_retry(self: &Arc<Self>, peer: &PublicKey) {
        let mut retries = self.hub().retries.lock();
        let entry = retries.entry(peer.clone()).or_insert((0, Instant::now()));
        entry.0 += 1;
        let delay =
            (Duration::from_secs(2) * 2u32.saturating_pow(entry.0.min(10))).min(MAX_RETRY_DELAY);
        entry.1 = Instant::now() + delay;
        tracing::info!(?delay, "transparent session will be retried");
    }

    /// Applies a signal from `sender` (an opened, verified `RTC` inner message; the key is the
    /// one the packet was opened and verified with).
    pub(crate) fn handle_signal(self: &Arc<Self>, sender: &PublicKey, content: &str) {
        let known = self.host.contact_name(sender).is_ok_and(|c| c.is_some());
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
                    self.hub().closed_by_peer.lock().remove(sender);
                    self.hub().retries.lock().remove(sender);
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
                    if let Some(s) = self.hub().sessions.lock().remove(sender) {
                        tokio::spawn(async move { s.close("the contact disabled it").await });
                    }
                }
                self.emit_status(sender);
            }
            Signal::Reconnect { requested } => {
                if !local || stale || !self.is_offerer(sender).unwrap_or(false) {
                    return;
                }
                if !requested && self.hub().closed_here.lock().contains(sender) {
                    tracing::info!("automatic reconnect after a deliberate close: ignored");
                    return;
                }
                if !peer_before {
                    let _ = self.set_consent(sender, None, Some(true));
                }
                self.clear_closed(sender);
                self.hub().retries.lock().remove(sender);
                // The contact has no session: whatever we hold is dead.
                if let Some(old) = self.hub().sessions.lock().remove(sender) {
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
                if !requested && self.hub().closed_here.lock().contains(sender) {
                    // An automatic reconnect racing our `bye`: say it again.
                    tracing::info!(session, "automatic offer after a deliberate close: refused");
                    let _ = self.post_signal(sender, Signal::Bye { session });
                    return;
                }
                self.clear_closed(sender);
                tracing::info!(session, device, "answering a WebRTC offer");
                self.answer(sender.clone(), session, sdp);
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
                self.hub().closed_by_peer.lock().insert(sender.clone());
                self.hub().retries.lock().remove(sender);
                if let Some(s) = current {
                    self.hub().sessions.lock().remove(sender);
                    self.end_calls_with(sender, "remote_hung_up");
                    tokio::spawn(async move { s.close("the contact closed it").await });
                }
                self.emit_status(sender);
            }
        }
    }

    pub(super) fn answer(self: &Arc<Self>, peer: PublicKey, id: String, offer_sdp: String) {
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
                    let old = engine
                        .hub()
                        .sessions
                        .lock()
                        .insert(peer.clone(), session.clone());
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
}
