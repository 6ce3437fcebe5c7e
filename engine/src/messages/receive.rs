//! Receiving: the RX relay long-poll, packets from transparent sessions, and applying what
//! opens (messages, edits, deletions, reactions, group operations, this identity's own copies).

use std::time::Duration;

use jasper_core::protocol::{InnerMessage, MessageKind, Packet};
use jasper_core::{PrivateKey, PublicKey};

use super::{SentCopy, TYPE_SENT, valid_reaction};
use crate::engine::{Engine, SUSPECT_FOR_MS};
use crate::error::{EngineError, Result};
use crate::groups::{GroupOp, TYPE_GROUP, apply_group_op};
use crate::model::*;
use crate::outbox::to_json;
use crate::relays::anonymity::Role;
use crate::store::{Db, Tx, now_ms};
use crate::transparent::wire::TYPE_RTC;

/// Where a packet came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Fetched from this RX relay.
    Relay(&'a str),
    /// Received on the data channel of this contact's transparent session.
    Direct(&'a PublicKey),
}

impl Engine {
    pub(crate) async fn receiver(self) {
        loop {
            let me = match self.me() {
                Ok(me) => me,
                Err(_) => {
                    tokio::select! {
                        _ = self.inner.identity_ready.notified() => continue,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = self.inner.stop.cancelled() => return,
                    }
                }
            };
            let delay = match self.receive_once(&me).await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.inner.config.poll_interval,
                Err(d) => d,
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// One fetch from the RX relay. `Ok(true)` when the next fetch may follow at once
    /// (long-poll relay), `Ok(false)` to wait the poll interval, `Err(backoff)` on failure.
    async fn receive_once(&self, me: &PrivateKey) -> std::result::Result<bool, Duration> {
        let fp = hex::encode(me.public_key().fingerprint());
        let my_key = me.public_key();
        let relay = match self.assigned(Role::Rx, &fp, my_key.to_text(), None) {
            Ok(Some(r)) => r,
            _ => return Err(Duration::from_secs(1)),
        };
        let supports_wait = self
            .inner
            .db
            .relays()
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.info.address == relay))
            .is_some_and(|r| r.info.supports_wait);
        let since = self.inner.db.rx_cursor(&relay, &fp).ok().flatten();
        let wait = if supports_wait {
            self.inner.config.long_poll
        } else {
            Duration::ZERO
        };
        let fetched = tokio::select! {
            f = self.inner.client.fetch_for(&relay, my_key.to_text(), since, wait) => f,
            _ = self.inner.stop.cancelled() => return Err(Duration::ZERO),
        };
        match fetched {
            Ok(fetched) => {
                let _ = self.inner.db.relay_result(&relay, true, None);
                let budget = &self.inner.config.open_budget;
                for (i, packet) in fetched.packets.iter().enumerate() {
                    // Seen ones cost nothing; the rest a private-key operation each, from the
                    // relay's budget. Without one, the cursor stays: the relay serves the rest
                    // again once the budget refills (messages/budget.rs).
                    let seen = self
                        .inner
                        .db
                        .was_seen(&packet.hash.to_ascii_lowercase())
                        .unwrap_or(false);
                    if !seen && let Err(wait) = self.inner.open_budget.take(budget, &relay) {
                        let left = fetched.packets.len() - i;
                        tracing::warn!(
                            relay,
                            left,
                            per_minute = budget.per_minute,
                            "packets from the RX relay exceed what we open per minute; the rest wait (a flood \
                             of junk for this key, or a long time offline)"
                        );
                        // Not held against the relay: the junk is someone else's. Each packet
                        // that then fails to open is (`forged`, below).
                        return Err(wait.max(Duration::from_millis(100)));
                    }
                    self.receive_packet(me, Source::Relay(&relay), packet);
                }
                if let Some(c) = fetched.cursor {
                    let _ = self.inner.db.set_rx_cursor(&relay, &fp, c);
                }
                // A zero long-poll setting means plain polling even where the relay could wait.
                Ok(supports_wait && !wait.is_zero())
            }
            Err(e) => {
                tracing::warn!(relay, error = %e, "fetch from RX relay failed");
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.maybe_move(Role::Rx, &fp, my_key.to_text(), &relay);
                Err(Duration::from_secs(2))
            }
        }
    }

    /// A packet received on a contact's data channel: `true` once it is applied (or was
    /// already), which the sender takes as delivery; `false` if it is refused.
    pub(crate) fn receive_direct(&self, peer: &PublicKey, packet: &Packet) -> bool {
        let Ok(me) = self.me() else { return false };
        if PublicKey::from_text(&packet.recipient)
            .map(|k| k.to_text().to_owned())
            .ok()
            .as_deref()
            != Some(me.public_key().to_text())
        {
            tracing::warn!("a packet for another key arrived on a data channel: refused");
            return false;
        }
        if let Err(e) = packet.check_fields(&Default::default()) {
            tracing::warn!(error = %e, "malformed packet on a data channel: refused");
            return false;
        }
        self.receive_packet(&me, Source::Direct(peer), packet)
    }

    /// Opens, verifies and applies one packet; `false` when it was refused.
    fn receive_packet(&self, me: &PrivateKey, source: Source<'_>, packet: &Packet) -> bool {
        let hash = packet.hash.to_ascii_lowercase();
        if self.inner.db.was_seen(&hash).unwrap_or(false) {
            return true;
        }
        let opened = match jasper_core::open(me, packet) {
            Ok(o) => o,
            Err(e) => match source {
                Source::Relay(relay) => {
                    tracing::warn!(relay, hash, error = %e, "dropping a packet that does not open");
                    let _ = self.inner.db.mark_seen(&hash);
                    let _ = self
                        .inner
                        .db
                        .relay_suspect(relay, "forged", now_ms() + SUSPECT_FOR_MS);
                    return false;
                }
                Source::Direct(_) => {
                    tracing::warn!(hash, error = %e, "a packet on a data channel does not open");
                    return false;
                }
            },
        };
        let sender = opened.sender.to_text().to_owned();
        if let Source::Direct(peer) = source
            && opened.sender != *peer
        {
            // The channel carries the contact's own packets only.
            tracing::warn!(hash, "a data channel carried another key's packet: refused");
            return false;
        }
        let me_text = me.public_key().to_text().to_owned();
        if opened.message.kind.as_str() == TYPE_RTC {
            // Handled once: only the call that marks it seen acts on it.
            if self.inner.db.mark_seen(&hash).unwrap_or(false) && sender != me_text {
                self.inner
                    .transparent
                    .handle_signal(&opened.sender, &opened.message.content);
            }
            return true;
        }
        let result = self.commit(|tx| {
            if !Db::mark_seen_in(tx, &hash)? {
                return Ok(None);
            }
            if let Source::Direct(_) = source {
                // A data channel reaches this login only; the same packet goes to this key
                // through the relays too, for the other logins (docs/protocol.md, "Other
                // logins of the recipient"). In this transaction: applied means mirrored.
                Db::enqueue(
                    tx,
                    None,
                    true,
                    &packet.recipient,
                    &hex::encode(me.public_key().fingerprint()),
                    &to_json(packet),
                    &hash,
                    self.messages().sent_copy_not_before(),
                )?;
            }
            if sender == me_text {
                if opened.message.kind.as_str() != TYPE_SENT {
                    return Ok(None);
                }
                let copy: SentCopy =
                    serde_json::from_str(&opened.message.content).map_err(|e| {
                        EngineError::Protocol(jasper_core::Error::MalformedMessage(format!(
                            "SENT copy: {e}"
                        )))
                    })?;
                if copy.message.sender != me_text {
                    return Ok(None);
                }
                apply_incoming(tx, &me_text, &copy.message, Some(&copy.to))
            } else {
                apply_incoming(tx, &me_text, &opened.message, None)
            }
        });
        if matches!(source, Source::Direct(_)) {
            self.inner.wake_outbox.notify_one();
        }
        match result {
            Ok(Some(message)) => {
                self.notify_desktop(&message);
                true
            }
            Ok(None) => true,
            Err(EngineError::Storage(e)) => {
                // Not applied, not marked seen: a later fetch or re-send applies it.
                tracing::warn!(hash, error = e, "could not store an incoming message");
                false
            }
            Err(e) => {
                tracing::warn!(hash, error = %e, "could not apply an incoming message");
                true
            }
        }
    }
}

/// Applies an opened inner message. `own_copy_to` is set for this identity's own messages
/// arriving from another login (with the recipients of the original). Returns a newly
/// received message, for notifications.
fn apply_incoming(
    tx: &Tx<'_>,
    me: &str,
    m: &InnerMessage,
    own_copy_to: Option<&Vec<String>>,
) -> Result<Option<Message>> {
    let sender = m.sender.as_str();
    if m.kind.as_str() == TYPE_GROUP {
        let op: GroupOp = serde_json::from_str(&m.content).map_err(|e| {
            EngineError::Protocol(jasper_core::Error::MalformedMessage(format!("GROUP: {e}")))
        })?;
        apply_group_op(tx, &m.channel_id, me, sender, &op)?;
        return Ok(None);
    }
    // Which conversation: a known group (the sender must be in it), else the DM.
    let conversation_id = match Db::conversation_by_channel(tx, &m.channel_id)? {
        Some(id) if Db::is_group(tx, id)? => {
            let member = sender == me || Db::is_member(tx, id, sender)?;
            if !member {
                tracing::warn!("message for a group from a non-member dropped");
                return Ok(None);
            }
            id
        }
        _ => {
            let peer = match own_copy_to {
                Some(to) if to.len() == 1 => to[0].clone(),
                Some(_) => {
                    tracing::debug!("own group message for an unknown group dropped");
                    return Ok(None);
                }
                None => sender.to_owned(),
            };
            let (id, created) = Db::ensure_direct(tx, &peer)?;
            if created && let Some(conversation) = Db::conversation(tx, id)? {
                Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
            }
            id
        }
    };
    let outgoing = sender == me;
    let target = || Db::message_rowid(tx, conversation_id, &m.id);
    match &m.kind {
        MessageKind::Edit | MessageKind::Delete => {
            let Some(rowid) = target()? else {
                tracing::debug!(id = m.id, "edit or delete of an unknown message ignored");
                return Ok(None);
            };
            let author = Db::message_sender(tx, rowid)?;
            if author != sender {
                tracing::warn!(
                    id = m.id,
                    "edit or delete by someone other than the author refused"
                );
                return Ok(None);
            }
            if m.kind == MessageKind::Edit {
                Db::edit_message(tx, rowid, &m.content)?;
            } else {
                Db::delete_message(tx, rowid)?;
            }
            let message = Db::message(tx, rowid)?;
            Db::push_event(tx, &EventKind::MessageUpdated { message })?;
            if m.kind == MessageKind::Delete {
                // A deleted message no longer counts as unread.
                Db::push_conversation_figures(tx, conversation_id)?;
            }
            Ok(None)
        }
        MessageKind::React => {
            let Some(rowid) = target()? else {
                return Ok(None);
            };
            if !valid_reaction(&m.content) {
                return Ok(None);
            }
            Db::add_reaction(tx, rowid, sender, &m.content)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(tx, &EventKind::MessageUpdated { message })?;
            Ok(None)
        }
        kind => {
            let state = if outgoing {
                MessageState::Sent
            } else {
                MessageState::Received
            };
            let Some(rowid) = Db::insert_message(
                tx,
                conversation_id,
                &m.id,
                sender,
                outgoing,
                kind.as_str(),
                &m.content,
                &m.timestamp,
                state,
            )?
            else {
                return Ok(None);
            };
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageReceived {
                    message: message.clone(),
                },
            )?;
            Db::push_conversation_figures(tx, conversation_id)?;
            Ok(Some(message))
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
        engine.identity().create().await.unwrap();
        let me = engine.me().unwrap();
        let (bob, mallory) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let bob_key = bob.public_key();
        engine
            .contacts()
            .add(bob_key.to_text(), "bob", None)
            .await
            .unwrap();
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
                .conversations()
                .messages("bob", None, 10)
                .unwrap()
                .messages
                .is_empty()
        );

        // Bob's own packet: applied, mirrored once; again: acknowledged, not applied twice.
        let good = message(&bob, &me, "hello direct");
        assert!(engine.receive_direct(&bob_key, &good));
        assert!(engine.receive_direct(&bob_key, &good));
        let history = engine
            .conversations()
            .messages("bob", None, 10)
            .unwrap()
            .messages;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].content, "hello direct");
        assert_eq!(mirrored(), 1);
        engine.shutdown();
    }
}
