//! Consent (per contact and per login, in the store; both sides must enable it) and the
//! `Transparent` handle: each contact's status, enabling, connecting and closing sessions.

use super::Core;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jasper_core::PublicKey;

use super::wire::Signal;
use crate::error::{EngineError, Result};
use crate::model::*;

/// How long [`Transparent::connect`] waits when asked for no particular time.
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// The longest wait [`Transparent::connect`] accepts; longer ones are cut to it.
pub const MAX_CONNECT_WAIT: Duration = Duration::from_secs(60);

/// `engine.transparent()`: direct WebRTC sessions with contacts who consent.
#[derive(Clone)]
pub struct Transparent {
    pub(crate) core: Arc<Core>,
}

/// How long a connect waits for the session: the caller's wait, [`DEFAULT_CONNECT_WAIT`] for
/// zero (what gRPC and the bindings send when none is given), never over [`MAX_CONNECT_WAIT`].
/// Decided here, so that every shell behaves alike.
pub(super) fn connect_wait(asked: Duration) -> Duration {
    if asked.is_zero() {
        DEFAULT_CONNECT_WAIT
    } else {
        asked.min(MAX_CONNECT_WAIT)
    }
}

impl Core {
    pub(super) fn consent(self: &Arc<Self>, key: &PublicKey) -> Result<(bool, bool)> {
        self.host.consent(key)
    }

    /// Every contact with transparent mode enabled on either side, with its status.
    pub(super) fn statuses(self: &Arc<Self>) -> Result<Vec<(PublicKey, TransparentStatus)>> {
        let keys = self.host.consenting_keys()?;
        keys.into_iter()
            .map(|k| {
                let status = self.status_of(&k)?;
                Ok((k, status))
            })
            .collect()
    }

    pub(super) fn status_of(self: &Arc<Self>, key: &PublicKey) -> Result<TransparentStatus> {
        let (local, peer) = self.consent(key)?;
        let contact_name = self.host.contact_name(key)?;
        let session = self.hub().session(key);
        let state = match (&session, local, peer) {
            (_, false, _) => TransparentState::Off,
            (_, true, false) => TransparentState::WaitingForPeer,
            (Some(s), true, true) if s.is_open() => TransparentState::Connected,
            (Some(_), true, true) => TransparentState::Connecting,
            (None, true, true) if self.hub().starting.lock().contains(key) => {
                TransparentState::Connecting
            }
            (None, true, true) => TransparentState::Idle,
        };
        Ok(TransparentStatus {
            contact: key.to_text().to_owned(),
            contact_name,
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

    pub(super) fn emit_status(self: &Arc<Self>, key: &PublicKey) {
        if let Ok(status) = self.status_of(key) {
            self.emit(EventKind::TransparentChanged { status });
        }
    }

    pub(super) fn emit(self: &Arc<Self>, kind: EventKind) {
        if let Err(e) = self.host.record(kind) {
            tracing::warn!(error = %e, "could not record a transparent-mode event");
        }
    }

    /// A contact's key, from a name or key text given by the API user.
    pub(super) fn contact_key(self: &Arc<Self>, contact: &str) -> Result<PublicKey> {
        self.host.contact_key(contact)
    }

    pub(super) fn set_consent(
        &self,
        key: &PublicKey,
        local: Option<bool>,
        peer: Option<bool>,
    ) -> Result<()> {
        self.host.set_consent(key, local, peer)
    }

    /// Whether this side offers: the side whose key fingerprint sorts first.
    pub(super) fn is_offerer(self: &Arc<Self>, peer: &PublicKey) -> Result<bool> {
        let me = self.host.identity()?.public_key().fingerprint();
        Ok(me < peer.fingerprint())
    }

    /// [`Transparent::connect`] for a contact's key.
    pub(super) async fn connect(
        self: &Arc<Self>,
        key: &PublicKey,
        wait: Duration,
    ) -> Result<TransparentStatus> {
        let wait = connect_wait(wait);
        let (local, peer) = self.consent(key)?;
        if !local || !peer {
            return Err(EngineError::TransparentOff(format!(
                "transparent mode is not enabled on {} side",
                if local { "the contact's" } else { "this" }
            )));
        }
        self.clear_closed(key);
        self.hub().retries.lock().remove(key);
        if self.hub().session(key).is_none() {
            if self.is_offerer(key)? {
                self.maybe_start(key, true);
            } else {
                self.post_signal(key, Signal::Reconnect { requested: true })?;
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.hub().session(key) {
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
        self.status_of(key)
    }
}

impl Transparent {
    /// Every contact with transparent mode enabled on either side.
    pub fn statuses(&self) -> Result<Vec<TransparentStatus>> {
        Ok(self
            .core
            .statuses()?
            .into_iter()
            .map(|(_, status)| status)
            .collect())
    }

    /// Transparent mode with one contact (name or key).
    pub fn status(&self, contact: &str) -> Result<TransparentStatus> {
        let key = self.core.contact_key(contact)?;
        self.core.status_of(&key)
    }

    /// Enables or disables transparent mode for a contact (see [`TRANSPARENT_MODE_WARNING`]).
    /// Enabling tells the contact through the relays; once both sides have enabled it, a
    /// session comes up by itself. Disabling closes the session and ends its calls.
    pub async fn set(&self, contact: &str, enabled: bool) -> Result<TransparentStatus> {
        let contact = contact.to_owned();
        let handle = self.clone();
        super::off_runtime(move || handle.set_blocking(&contact, enabled)).await
    }

    fn set_blocking(&self, contact: &str, enabled: bool) -> Result<TransparentStatus> {
        let key = self.core.contact_key(contact)?;
        let (was, _) = self.core.consent(&key)?;
        self.core.set_consent(&key, Some(enabled), None)?;
        if was != enabled {
            let yours_known = self.core.consent(&key)?.1;
            self.core.post_signal(
                &key,
                Signal::Consent {
                    enabled,
                    yours_known,
                },
            )?;
        }
        if enabled {
            self.core.clear_closed(&key);
            self.core.maybe_start(&key, false);
        } else {
            self.core.end_calls_with(&key, "transparent_disabled");
            if let Some(s) = self.core.hub().sessions.lock().remove(&key) {
                tokio::spawn(async move { s.close("transparent mode disabled").await });
            }
            self.core.hub().retries.lock().remove(&key);
        }
        self.core.emit_status(&key);
        self.core.status_of(&key)
    }

    /// Brings the session with a contact up (after a deliberate close, or to wait for it),
    /// waiting up to `wait` for the data channel to open: zero means
    /// [`DEFAULT_CONNECT_WAIT`], and no wait is longer than [`MAX_CONNECT_WAIT`] (a caller
    /// cannot park a task for longer than a session can take to come up).
    pub async fn connect(&self, contact: &str, wait: Duration) -> Result<TransparentStatus> {
        let key = self.core.contact_key(contact)?;
        self.core.connect(&key, wait).await
    }

    /// Closes the session with a contact on purpose: messages go through the relays until
    /// [`Transparent::connect`] (on either side) or a restart. Consent is unchanged.
    pub async fn disconnect(&self, contact: &str) -> Result<TransparentStatus> {
        let key = self.core.contact_key(contact)?;
        self.core.hub().closed_here.lock().insert(key.clone());
        self.core.hub().retries.lock().remove(&key);
        let session = self.core.hub().sessions.lock().remove(&key);
        if let Some(s) = session {
            self.core.end_calls_with(&key, "hung_up");
            let _ = self.core.post_signal(
                &key,
                Signal::Bye {
                    session: s.id.clone(),
                },
            );
            s.close("closed on purpose").await;
        }
        self.core.emit_status(&key);
        self.core.status_of(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_wait_defaults_for_zero_and_is_capped() {
        assert_eq!(connect_wait(Duration::ZERO), DEFAULT_CONNECT_WAIT);
        assert_eq!(
            connect_wait(Duration::from_millis(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            connect_wait(Duration::from_secs(25)),
            Duration::from_secs(25)
        );
        assert_eq!(connect_wait(MAX_CONNECT_WAIT), MAX_CONNECT_WAIT);
        assert_eq!(connect_wait(Duration::from_secs(3600)), MAX_CONNECT_WAIT);
        assert_eq!(connect_wait(Duration::MAX), MAX_CONNECT_WAIT);
    }
}
