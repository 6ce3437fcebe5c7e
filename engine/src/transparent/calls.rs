//! Calls over a transparent session's Opus transceiver: ringing, answering, ending, and the
//! audio frames that enter and leave through the `Calls` handle.

use super::Core;
use std::sync::Arc;
use std::time::Duration;

use jasper_core::PublicKey;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::wire::{CallOp, Frame};
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::store::{self, now_ms};

/// Ended calls kept for `calls()`.
const ENDED_CALLS_KEPT: usize = 32;
/// Received audio frames buffered per call before the oldest are dropped (~5 s of 20 ms).
const AUDIO_BUFFER: usize = 256;

pub(super) struct CallSlot {
    /// The contact called or calling (`info.contact` is its text, for the API).
    pub(super) peer: PublicKey,
    info: Mutex<CallInfo>,
    pub(super) audio_tx: mpsc::Sender<AudioFrame>,
    audio_rx: tokio::sync::Mutex<mpsc::Receiver<AudioFrame>>,
    ended: watch::Sender<bool>,
    /// The generation of the newest [`AudioReader`] of this call.
    readers: watch::Sender<u64>,
}

impl CallSlot {
    pub(super) fn info(&self) -> CallInfo {
        self.info.lock().clone()
    }
}

/// The newest reader of one call's received audio ([`Calls::audio_reader`]).
pub struct AudioReader {
    calls: Calls,
    call: String,
    generation: u64,
    newest: watch::Receiver<u64>,
}

impl AudioReader {
    /// The next frame, waiting up to `timeout` (`Ok(None)`: nothing in time). Fails with
    /// `CallState` once the call has ended or a newer reader took over; a reader taken over
    /// never takes (and loses) another frame.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<AudioFrame>> {
        let generation = self.generation;
        let taken_over =
            || EngineError::CallState("a newer audio reader of this call took over".into());
        if *self.newest.borrow() != generation {
            return Err(taken_over());
        }
        tokio::select! {
            next = self.calls.next_audio(&self.call, timeout) => next,
            _ = self.newest.wait_for(|g| *g != generation) => Err(taken_over()),
        }
    }
}

/// `engine.calls()`: audio calls with contacts over transparent sessions.
#[derive(Clone)]
pub struct Calls {
    pub(crate) core: Arc<Core>,
}

impl Core {
    pub(super) fn new_call(
        self: &Arc<Self>,
        id: String,
        peer: &PublicKey,
        outgoing: bool,
    ) -> Arc<CallSlot> {
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_BUFFER);
        let slot = Arc::new(CallSlot {
            peer: peer.clone(),
            info: Mutex::new(CallInfo {
                id: id.clone(),
                contact: peer.to_text().to_owned(),
                contact_name: self.host.contact_name(peer).ok().flatten(),
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
            readers: watch::channel(0).0,
        });
        {
            let mut calls = self.hub().calls.lock();
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
    pub(super) fn end_call(self: &Arc<Self>, id: &str, reason: &str, notify: Option<CallOp>) {
        let Ok(slot) = self.hub().call(id) else {
            return;
        };
        let info = {
            let mut info = slot.info.lock();
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
            self.send_call_frame(&slot.peer, id, op);
        }
        self.emit(EventKind::CallChanged { call: info });
    }

    pub(super) fn end_calls_with(self: &Arc<Self>, peer: &PublicKey, reason: &str) {
        let ids: Vec<String> = self
            .hub()
            .calls
            .lock()
            .values()
            .filter(|c| c.peer == *peer)
            .map(|c| c.info())
            .filter(|i| i.state != CallState::Ended)
            .map(|i| i.id)
            .collect();
        for id in ids {
            self.end_call(&id, reason, None);
        }
    }

    pub(super) fn send_call_frame(self: &Arc<Self>, peer: &PublicKey, call: &str, op: CallOp) {
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

    pub(super) fn on_call_frame(self: &Arc<Self>, peer: &PublicKey, call: String, op: CallOp) {
        if call.is_empty() || call.len() > super::wire::MAX_ID_BYTES {
            return;
        }
        let existing = self.hub().call(&call).ok().filter(|c| c.peer == *peer);
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
                    let mut info = slot.info.lock();
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

    pub(super) fn notify_call(self: &Arc<Self>, info: &CallInfo) {
        let title = info
            .contact_name
            .clone()
            .unwrap_or_else(|| store::short_key(&info.contact));
        self.host
            .notify(&format!("Incoming call from {title}"), "Jasper call");
    }
}

impl Calls {
    /// Calls a contact. Needs transparent mode on both sides; brings the session up first if
    /// it is down (waiting up to the connect timeout). The call rings until the contact
    /// accepts, rejects, or the ring timeout passes.
    pub async fn start(&self, contact: &str) -> Result<CallInfo> {
        let key = self.core.contact_key(contact)?;
        let (local, peer) = self.core.consent(&key)?;
        if !local || !peer {
            return Err(EngineError::TransparentOff(
                "calls need transparent mode enabled on both sides".into(),
            ));
        }
        if self.core.hub().live_call_with(&key).is_some() {
            return Err(EngineError::CallBusy);
        }
        if self.core.hub().open_session(&key).is_none() {
            self.core
                .connect(&key, self.core.hub().config.connect_timeout)
                .await?;
        }
        if self.core.hub().open_session(&key).is_none() {
            return Err(EngineError::TransparentUnavailable(
                "the direct connection to the contact did not come up".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let slot = self.core.new_call(id.clone(), &key, true);
        self.core.send_call_frame(&key, &id, CallOp::Invite);
        Ok(slot.info())
    }

    pub async fn accept(&self, call: &str) -> Result<CallInfo> {
        let call = call.to_owned();
        let handle = self.clone();
        super::off_runtime(move || handle.accept_blocking(&call)).await
    }

    fn accept_blocking(&self, call: &str) -> Result<CallInfo> {
        let slot = self.core.hub().call(call)?;
        let info = {
            let mut info = slot.info.lock();
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
        self.core.send_call_frame(&slot.peer, call, CallOp::Accept);
        self.core
            .emit(EventKind::CallChanged { call: info.clone() });
        Ok(info)
    }

    pub async fn reject(&self, call: &str) -> Result<CallInfo> {
        let call = call.to_owned();
        let handle = self.clone();
        super::off_runtime(move || handle.reject_blocking(&call)).await
    }

    fn reject_blocking(&self, call: &str) -> Result<CallInfo> {
        let slot = self.core.hub().call(call)?;
        let info = slot.info();
        if info.outgoing || info.state != CallState::Ringing {
            return Err(EngineError::CallState(format!(
                "only a ringing incoming call can be rejected (this one is {})",
                describe(&info)
            )));
        }
        self.core.end_call(call, "rejected", Some(CallOp::Reject));
        Ok(slot.info())
    }

    pub async fn hang_up(&self, call: &str) -> Result<CallInfo> {
        let call = call.to_owned();
        let handle = self.clone();
        super::off_runtime(move || handle.hang_up_blocking(&call)).await
    }

    fn hang_up_blocking(&self, call: &str) -> Result<CallInfo> {
        let slot = self.core.hub().call(call)?;
        if slot.info().state == CallState::Ended {
            return Err(EngineError::CallState("the call has already ended".into()));
        }
        self.core.end_call(call, "hung_up", Some(CallOp::Hangup));
        Ok(slot.info())
    }

    pub fn get(&self, call: &str) -> Result<CallInfo> {
        Ok(self.core.hub().call(call)?.info())
    }

    /// Live calls first, then recently ended ones.
    pub fn list(&self) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = self
            .core
            .hub()
            .calls
            .lock()
            .values()
            .map(|c| c.info())
            .collect();
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
        let slot = self.core.hub().call(call)?;
        let info = slot.info();
        if info.state != CallState::Active {
            return Err(EngineError::CallState(format!(
                "audio flows only in an active call (this one is {})",
                describe(&info)
            )));
        }
        let session = self.core.hub().open_session(&slot.peer).ok_or_else(|| {
            EngineError::TransparentUnavailable("the direct connection is down".into())
        })?;
        session
            .send_audio(data, Duration::from_micros(u64::from(duration_us)))
            .await
            .map_err(EngineError::TransparentUnavailable)
    }

    /// The next received audio frame of a call, waiting up to `timeout`. `Ok(None)`: nothing
    /// arrived in time. Once the call has ended and its frames are read: `CallState` error.
    /// A reader of the call's received audio that takes it over: an older reader of the same
    /// call ends (its `next` fails with `CallState`) instead of the two splitting the frames
    /// between them, so a frontend that reopens its audio (after a restart of its own, say)
    /// gets every frame at once. The daemon's `Audio` stream is one.
    pub fn audio_reader(&self, call: &str) -> Result<AudioReader> {
        let slot = self.core.hub().call(call)?;
        let generation = slot.readers.borrow().wrapping_add(1);
        slot.readers.send_replace(generation);
        Ok(AudioReader {
            calls: self.clone(),
            call: call.to_owned(),
            generation,
            newest: slot.readers.subscribe(),
        })
    }

    pub async fn next_audio(&self, call: &str, timeout: Duration) -> Result<Option<AudioFrame>> {
        let slot = self.core.hub().call(call)?;
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
            _ = self.core.stop.cancelled() => Err(EngineError::ShuttingDown),
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
