//! The outbox: every sealed copy waits here until a TX relay accepts it (or the contact's own
//! device, over a transparent session), is retried with backoff, and is then confirmed by the
//! witness (`witness.rs`). A message's state is its copies' states, aggregated.

pub(crate) mod witness;

use std::time::Duration;

use jasper_core::protocol::Packet;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::relays::anonymity::Role;
use crate::relays::client::RelayFailure;
use crate::store::{self, Db, OutboxState, now_ms};

const MAX_SEND_ATTEMPTS: i64 = 40;

/// `engine.outbox()`: where a message's copies went.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) engine: Engine,
}

impl Outbox {
    /// The TX relays that carried a message's copies (recipient key, relay), for inspection.
    pub fn routes(&self, msg_id: &str) -> Result<Vec<(String, Option<String>)>> {
        let (rowid, _) = self
            .engine
            .inner
            .db
            .read(|conn| Db::find_message(conn, msg_id))?
            .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
        self.engine.inner.db.outbox_tx_relays(rowid)
    }

    /// How many copies are in each state (`pending`, `waiting`, `accepted`, `visible`,
    /// `unconfirmed`, `failed`), for monitoring; every state is listed, with 0 if none.
    pub fn counts(&self) -> Result<Vec<(&'static str, u64)>> {
        let counted = self.engine.inner.db.read(|conn| {
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })?;
        Ok(OutboxState::ALL
            .iter()
            .map(|s| {
                let n = counted
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |(_, n)| *n as u64);
                (s.as_str(), n)
            })
            .collect())
    }
}

impl Engine {
    pub(crate) async fn sender(self) {
        // The first copies go out once the witness reads its feed, so that they are covered.
        self.witness_ready().await;
        loop {
            let now = now_ms();
            let items = self.inner.db.due_outbox(now, 64).unwrap_or_default();
            let mut work = Vec::new();
            for item in items {
                let engine = self.clone();
                work.push(tokio::spawn(
                    async move { engine.process_outbox(item).await },
                ));
            }
            for w in work {
                let _ = w.await;
            }
            let next = self.inner.db.next_outbox_due().ok().flatten();
            let wait = match next {
                Some(at) if at <= now_ms() => Duration::from_millis(10),
                Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 5_000) as u64),
                None => Duration::from_secs(5),
            };
            tokio::select! {
                _ = self.inner.wake_outbox.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    async fn process_outbox(&self, item: store::OutboxItem) {
        let now = now_ms();
        if item.attempts >= MAX_SEND_ATTEMPTS {
            self.finish_outbox(
                &item,
                OutboxState::Failed,
                Some("gave up after repeated failures"),
            );
            return;
        }
        if !item.self_copy
            && self
                .inner
                .transparent
                .try_direct(&item.recipient, &item.packet)
                .await
        {
            // Delivered to the contact's device itself: more than "visible on the mesh".
            let _ = self.inner.db.outbox_delivered_direct(item.id);
            self.refresh_message_state(item.message_rowid);
            return;
        }
        let relay = match self.tx_relay_for(&item.recipient_fp, &item.recipient) {
            Ok(Some(relay)) => relay,
            Ok(None) if !self.inner.db.relays().unwrap_or_default().is_empty() => {
                // Every known relay has seen another key of ours (strict): wait, without
                // counting an attempt. A new relay wakes the outbox.
                let why = self.waiting_reason();
                let _ = self.inner.db.outbox_wait(item.id, now + 5_000, &why);
                if !item.self_copy {
                    self.refresh_message_state(item.message_rowid);
                }
                return;
            }
            _ => {
                let _ = self
                    .inner
                    .db
                    .outbox_retry(item.id, now_ms() + 2_000, "no relay known");
                return;
            }
        };
        match self.inner.client.send(&relay, &item.packet).await {
            Ok(took) => {
                let _ = self
                    .inner
                    .db
                    .relay_result(&relay, true, Some(took.as_secs_f64() * 1000.0));
                // The witness task takes it from here (witness.rs).
                let _ = self.inner.db.outbox_accepted(item.id, &relay, now);
                self.refresh_message_state(item.message_rowid);
            }
            Err(RelayFailure::Rejected { status, message }) => {
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.finish_outbox(
                    &item,
                    OutboxState::Failed,
                    Some(&format!(
                        "relay {relay} rejected the packet ({status}): {message}"
                    )),
                );
            }
            Err(RelayFailure::Transient(e)) => {
                tracing::info!(relay, error = %e, "send failed; will retry");
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.maybe_move(Role::Tx, &item.recipient_fp, &item.recipient, &relay);
                let backoff = 500i64 << item.attempts.min(7);
                let _ = self
                    .inner
                    .db
                    .outbox_retry(item.id, now_ms() + backoff.min(60_000), &e);
            }
        }
    }

    fn finish_outbox(&self, item: &store::OutboxItem, state: OutboxState, error: Option<&str>) {
        let _ = self.inner.db.outbox_settle(item.id, state, error);
        self.refresh_message_state(item.message_rowid);
    }

    /// Aggregates the copies' states into the message's state; emits an event on change.
    pub(crate) fn refresh_message_state(&self, rowid: Option<i64>) {
        let Some(rowid) = rowid else { return };
        let _ = self.commit(|tx| {
            let copies = Db::copy_states(tx, rowid)?;
            if copies.is_empty() {
                return Ok(());
            }
            let (state, failure) = aggregate_state(&copies);
            if Db::set_message_state(tx, rowid, &state, failure.as_deref())? {
                let m = Db::message(tx, rowid)?;
                Db::push_event(
                    tx,
                    &EventKind::MessageStateChanged {
                        conversation_id: m.conversation_id,
                        message_id: m.id,
                        state,
                        failure,
                    },
                )?;
            }
            Ok(())
        });
    }
}

/// A message's state from its copies' outbox states (with their last errors): the worst wins,
/// in the order failed, waiting, queued, sent (accepted, not yet confirmed), unconfirmed,
/// visible.
fn aggregate_state(copies: &[(OutboxState, Option<String>)]) -> (MessageState, Option<String>) {
    let reason = |state: OutboxState| {
        copies
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, why)| why.clone())
    };
    if let Some(why) = reason(OutboxState::Failed) {
        return (MessageState::Failed, why);
    }
    if let Some(why) = reason(OutboxState::Waiting) {
        return (MessageState::Waiting, why);
    }
    if reason(OutboxState::Pending).is_some() {
        return (MessageState::Queued, None);
    }
    if reason(OutboxState::Accepted).is_some() {
        return (MessageState::Sent, None);
    }
    if let Some(why) = reason(OutboxState::Unconfirmed) {
        return (MessageState::Unconfirmed, why);
    }
    (MessageState::Visible, None)
}

pub(crate) fn to_json(p: &Packet) -> String {
    serde_json::to_string(p).expect("packet serialises")
}
