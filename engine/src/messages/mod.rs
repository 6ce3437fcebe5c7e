//! Messages: sending text, edits, deletions and reactions (sealed for every recipient plus a
//! `SENT` copy for this identity's other logins, written to the outbox in one transaction),
//! and receiving (`receive.rs`).

pub mod budget;
pub(crate) mod receive;

use jasper_core::PublicKey;
use jasper_core::protocol::{InnerMessage, MessageKind, timestamp_now};
use serde::{Deserialize, Serialize};

use crate::contacts::parse_keys;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::groups::TYPE_GROUP;
use crate::model::*;
use crate::outbox::to_json;
use crate::store::{Db, Tx, now_ms};

/// Inner-message type of the copy of everything this identity sends, addressed to itself so
/// its other logins see the same history. Content: [`SentCopy`] as JSON.
pub const TYPE_SENT: &str = "SENT";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentCopy {
    /// The peer of a DM; empty for group traffic (the channel identifies the group).
    pub to: Vec<String>,
    /// The original inner message.
    pub message: InnerMessage,
}

/// `engine.messages()`: send, edit, delete and react; read one message.
#[derive(Clone)]
pub struct Messages {
    pub(crate) engine: Engine,
}

impl Messages {
    /// One message by id, in whichever conversation.
    pub fn get(&self, msg_id: &str) -> Result<Message> {
        self.engine.inner.db.read(|conn| {
            let (rowid, _) = Db::find_message(conn, msg_id)?
                .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
            Db::message(conn, rowid)
        })
    }

    pub(crate) fn check_content(&self, content: &str) -> Result<()> {
        let max = self.engine.inner.config.max_message_bytes;
        if content.len() > max {
            return Err(EngineError::MessageTooLarge {
                len: content.len(),
                max,
            });
        }
        Ok(())
    }

    /// Seals `inner` to `recipients` plus a self-copy, and writes message, outbox and event in
    /// one transaction (`apply` runs inside it, to update local state atomically).
    pub(crate) fn post<T>(
        &self,
        keys: &[PublicKey],
        inner: InnerMessage,
        apply: impl FnOnce(&Tx<'_>) -> Result<(Option<i64>, T)>,
    ) -> Result<T> {
        let me = self.engine.me()?;
        let packets = if keys.is_empty() {
            Vec::new()
        } else {
            jasper_core::seal(&me, keys, &inner)?
        };
        // Group traffic is identified by its channel (and group operations list their members),
        // so only DM copies name the peer: this keeps a large group's copies small.
        let group_traffic = inner.kind.as_str() == TYPE_GROUP
            || self.engine.inner.db.read(|conn| {
                match Db::conversation_by_channel(conn, &inner.channel_id)? {
                    Some(id) => Db::is_group(conn, id),
                    None => Ok(false),
                }
            })?;
        let copy = InnerMessage {
            sender: me.public_key().to_text().to_owned(),
            channel_id: inner.channel_id.clone(),
            kind: MessageKind::Other(TYPE_SENT.into()),
            content: serde_json::to_string(&SentCopy {
                to: if group_traffic {
                    Vec::new()
                } else {
                    keys.iter().map(|k| k.to_text().to_owned()).collect()
                },
                message: inner,
            })
            .expect("serialises"),
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: timestamp_now(),
        };
        let self_packets = jasper_core::seal(&me, &[me.public_key()], &copy)?;
        let out = self.engine.commit(|tx| {
            let (rowid, out) = apply(tx)?;
            for (p, key) in packets.iter().zip(keys) {
                Db::enqueue(
                    tx,
                    rowid,
                    false,
                    &p.recipient,
                    &hex::encode(key.fingerprint()),
                    &to_json(p),
                    &p.hash,
                    0,
                )?;
            }
            for p in &self_packets {
                Db::enqueue(
                    tx,
                    rowid,
                    true,
                    &p.recipient,
                    &hex::encode(me.public_key().fingerprint()),
                    &to_json(p),
                    &p.hash,
                    self.sent_copy_not_before(),
                )?;
                // Our own copy will come back from the RX relay: it is already applied here.
                Db::mark_seen_in(tx, &p.hash)?;
            }
            Ok(out)
        })?;
        self.engine.inner.wake_outbox.notify_one();
        Ok(out)
    }

    /// When a copy for this key's other logins may leave: a uniformly random time within
    /// `sent_copy_delay` from now, so that it does not enter the mesh with what it copies.
    pub(crate) fn sent_copy_not_before(&self) -> i64 {
        let max = self.engine.inner.config.sent_copy_delay.as_millis() as i64;
        if max == 0 {
            return 0;
        }
        now_ms() + rand::Rng::random_range(&mut rand::rng(), 0..=max)
    }

    pub(crate) fn new_inner(
        &self,
        channel_id: &str,
        kind: MessageKind,
        content: &str,
        id: Option<&str>,
    ) -> Result<InnerMessage> {
        Ok(InnerMessage {
            sender: self.engine.me()?.public_key().to_text().to_owned(),
            channel_id: channel_id.to_owned(),
            kind,
            content: content.to_owned(),
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            timestamp: timestamp_now(),
        })
    }

    /// Sends a text message to a conversation (`#id`, group name, contact name or key).
    pub async fn send(&self, target: &str, content: &str) -> Result<Message> {
        let (target, content) = (target.to_owned(), content.to_owned());
        self.engine
            .off_runtime(move |engine| engine.messages().send_blocking(&target, &content))
            .await
    }

    fn send_blocking(&self, target: &str, content: &str) -> Result<Message> {
        self.check_content(content)?;
        if content.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a message cannot be empty".into(),
            ));
        }
        let conversation = self.engine.conversations().resolve(target)?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Message,
            content,
            None,
        )?;
        let me_text = inner.sender.clone();
        let recipients: Vec<String> = conversation
            .members
            .iter()
            .filter(|k| **k != me_text)
            .cloned()
            .collect();
        if recipients.is_empty() {
            return Err(EngineError::InvalidArgument(
                "this conversation has no other members".into(),
            ));
        }
        let (msg_id, timestamp) = (inner.id.clone(), inner.timestamp.clone());
        self.post(&parse_keys(&recipients)?, inner, |tx| {
            let rowid = Db::insert_message(
                tx,
                conversation.id,
                &msg_id,
                &me_text,
                true,
                "MESSAGE",
                content,
                &timestamp,
                MessageState::Queued,
            )?
            .ok_or_else(|| EngineError::Storage("message id collision".into()))?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageSent {
                    message: message.clone(),
                },
            )?;
            Db::push_conversation_figures(tx, conversation.id)?;
            Ok((Some(rowid), message))
        })
    }

    fn own_message(
        &self,
        msg_id: &str,
        action: &'static str,
    ) -> Result<(i64, Conversation, Message)> {
        let me = self.engine.me()?.public_key().to_text().to_owned();
        let (rowid, conversation_id, message) = self.engine.inner.db.read(|conn| {
            let (rowid, conversation_id) = Db::find_message(conn, msg_id)?
                .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
            Ok((rowid, conversation_id, Db::message(conn, rowid)?))
        })?;
        if action != "react" && message.sender != me {
            return Err(EngineError::NotAuthor(action));
        }
        if message.deleted {
            return Err(EngineError::UnknownMessage(format!("{msg_id} was deleted")));
        }
        Ok((
            rowid,
            self.engine.conversations().get(conversation_id)?,
            message,
        ))
    }

    pub async fn edit(&self, msg_id: &str, content: &str) -> Result<Message> {
        let (msg_id, content) = (msg_id.to_owned(), content.to_owned());
        self.engine
            .off_runtime(move |engine| engine.messages().edit_blocking(&msg_id, &content))
            .await
    }

    fn edit_blocking(&self, msg_id: &str, content: &str) -> Result<Message> {
        self.check_content(content)?;
        if content.is_empty() {
            return Err(EngineError::InvalidArgument(
                "an edit cannot be empty; delete the message instead".into(),
            ));
        }
        let (rowid, conversation, _) = self.own_message(msg_id, "edit")?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Edit,
            content,
            Some(msg_id),
        )?;
        self.post(&parse_keys(&conversation.members)?, inner, |tx| {
            Db::edit_message(tx, rowid, content)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageUpdated {
                    message: message.clone(),
                },
            )?;
            Ok((None, message))
        })
    }

    pub async fn delete(&self, msg_id: &str) -> Result<Message> {
        let msg_id = msg_id.to_owned();
        self.engine
            .off_runtime(move |engine| engine.messages().delete_blocking(&msg_id))
            .await
    }

    fn delete_blocking(&self, msg_id: &str) -> Result<Message> {
        let (rowid, conversation, _) = self.own_message(msg_id, "delete")?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Delete,
            "",
            Some(msg_id),
        )?;
        self.post(&parse_keys(&conversation.members)?, inner, |tx| {
            Db::delete_message(tx, rowid)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageUpdated {
                    message: message.clone(),
                },
            )?;
            Ok((None, message))
        })
    }

    pub async fn react(&self, msg_id: &str, reaction: &str) -> Result<Message> {
        let (msg_id, reaction) = (msg_id.to_owned(), reaction.to_owned());
        self.engine
            .off_runtime(move |engine| engine.messages().react_blocking(&msg_id, &reaction))
            .await
    }

    fn react_blocking(&self, msg_id: &str, reaction: &str) -> Result<Message> {
        if !valid_reaction(reaction) {
            return Err(EngineError::InvalidArgument(format!(
                "{reaction:?} is not a reaction of the form :name:"
            )));
        }
        let (rowid, conversation, _) = self.own_message(msg_id, "react")?;
        let me = self.engine.me()?.public_key().to_text().to_owned();
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::React,
            reaction,
            Some(msg_id),
        )?;
        self.post(&parse_keys(&conversation.members)?, inner, |tx| {
            Db::add_reaction(tx, rowid, &me, reaction)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageUpdated {
                    message: message.clone(),
                },
            )?;
            Ok((None, message))
        })
    }
}

fn valid_reaction(r: &str) -> bool {
    r.len() >= 3
        && r.len() <= 64
        && r.starts_with(':')
        && r.ends_with(':')
        && r[1..r.len() - 1]
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '+')
}
