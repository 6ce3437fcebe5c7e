//! Groups: a channel id, a creator who alone adds and removes members, and membership changes
//! sent as `GROUP` inner messages to everyone involved.

use jasper_core::PublicKey;
use jasper_core::protocol::MessageKind;
use serde::{Deserialize, Serialize};

use crate::contacts::parse_keys;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::store::{Db, Tx};

/// Inner-message type of group membership changes. Content: [`GroupOp`] as JSON.
pub const TYPE_GROUP: &str = "GROUP";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupOp {
    /// `create`, `add`, `remove` or `leave`.
    pub op: String,
    pub name: String,
    /// create: every member (admin included); add/remove: those added or removed.
    pub members: Vec<String>,
}

/// A group `create` lists every member's key (~740 bytes each) and must fit in one sealed
/// inner message (64 KiB) even inside its `SENT` copy.
pub const MAX_GROUP_MEMBERS: usize = 64;

/// `engine.groups()`: create groups and change their members.
#[derive(Clone)]
pub struct Groups {
    pub(crate) engine: Engine,
}

impl Groups {
    pub async fn create(&self, name: &str, members: &[String]) -> Result<Conversation> {
        let (name, members) = (name.to_owned(), members.to_vec());
        self.engine
            .off_runtime(move |engine| engine.groups().create_blocking(&name, &members))
            .await
    }

    fn create_blocking(&self, name: &str, members: &[String]) -> Result<Conversation> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(EngineError::InvalidArgument(
                "a group name is 1-200 characters".into(),
            ));
        }
        let me = self.engine.me()?.public_key().to_text().to_owned();
        let mut keys: Vec<PublicKey> = members
            .iter()
            .map(|m| self.engine.contacts().resolve_key(m))
            .collect::<Result<_>>()?;
        keys.retain(|k| k.to_text() != me);
        keys.sort_by(|a, b| a.to_text().cmp(b.to_text()));
        keys.dedup_by(|a, b| a.to_text() == b.to_text());
        if keys.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a group needs at least one other member".into(),
            ));
        }
        if keys.len() > MAX_GROUP_MEMBERS {
            return Err(EngineError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let channel_id = uuid::Uuid::new_v4().to_string();
        let mut everyone: Vec<String> = keys.iter().map(|k| k.to_text().to_owned()).collect();
        everyone.push(me.clone());
        let op = GroupOp {
            op: "create".into(),
            name: name.to_owned(),
            members: everyone,
        };
        let inner = self.engine.messages().new_inner(
            &channel_id,
            MessageKind::Other(TYPE_GROUP.into()),
            &serde_json::to_string(&op).expect("serialises"),
            None,
        )?;
        let id = self.engine.messages().post(&keys, inner, |tx| {
            let id = apply_group_op(tx, &channel_id, &me, &me, &op)?
                .ok_or_else(|| EngineError::Storage("group not created".into()))?;
            Ok((None, id))
        })?;
        self.engine.conversations().get(id)
    }

    /// Sends a text message to a group (by name or `#id`). Refused when the target is not a
    /// group, so that a contact of the same name never receives what was meant for the group.
    pub async fn send(&self, group: &str, text: &str) -> Result<Message> {
        // Not `conversations().resolve`: that takes contact names and keys too (and creates a
        // DM for a key), where only a group may be meant here.
        let id = match group.strip_prefix('#').and_then(|s| s.parse::<i64>().ok()) {
            Some(id) => id,
            None => match self.engine.inner.db.group_by_name(group)? {
                Some(id) => id,
                // A contact or a key: a conversation, but not a group.
                None if self.engine.contacts().resolve_key(group).is_ok() => {
                    return Err(EngineError::InvalidArgument(format!(
                        "{group} is not a group"
                    )));
                }
                None => return Err(EngineError::UnknownConversation(group.to_owned())),
            },
        };
        let conversation = self.engine.conversations().get(id)?;
        if conversation.kind != ConversationKind::Group {
            return Err(EngineError::InvalidArgument(format!(
                "{group} is not a group"
            )));
        }
        self.engine
            .messages()
            .send(&format!("#{}", conversation.id), text)
            .await
    }

    /// Adds (`add = true`) or removes members; only the group's creator may.
    pub async fn change(&self, group: &str, members: &[String], add: bool) -> Result<Conversation> {
        let (group, members) = (group.to_owned(), members.to_vec());
        self.engine
            .off_runtime(move |engine| engine.groups().change_blocking(&group, &members, add))
            .await
    }

    fn change_blocking(&self, group: &str, members: &[String], add: bool) -> Result<Conversation> {
        let conversation = self.engine.conversations().resolve(group)?;
        if conversation.kind != ConversationKind::Group {
            return Err(EngineError::InvalidArgument(format!(
                "{group} is not a group"
            )));
        }
        let me = self.engine.me()?.public_key().to_text().to_owned();
        if conversation.admin.as_deref() != Some(me.as_str()) {
            return Err(EngineError::NotAuthor("change the members of"));
        }
        let keys: Vec<PublicKey> = members
            .iter()
            .map(|m| self.engine.contacts().resolve_key(m))
            .collect::<Result<_>>()?;
        let key_texts: Vec<String> = keys.iter().map(|k| k.to_text().to_owned()).collect();
        if add && conversation.members.len() + keys.len() > MAX_GROUP_MEMBERS {
            return Err(EngineError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let op = GroupOp {
            op: if add { "add" } else { "remove" }.into(),
            name: conversation.name.clone(),
            members: key_texts.clone(),
        };
        // Everyone involved hears of it: current members and those added or removed.
        let mut audience: Vec<String> = conversation
            .members
            .iter()
            .chain(key_texts.iter())
            .filter(|k| **k != me)
            .cloned()
            .collect();
        audience.sort();
        audience.dedup();
        let inner = self.engine.messages().new_inner(
            &conversation.channel_id,
            MessageKind::Other(TYPE_GROUP.into()),
            &serde_json::to_string(&op).expect("serialises"),
            None,
        )?;
        let channel = conversation.channel_id.clone();
        self.engine
            .messages()
            .post(&parse_keys(&audience)?, inner, |tx| {
                Ok((None, apply_group_op(tx, &channel, &me, &me, &op)?))
            })?;
        // New members need the whole list: send them a full `create` as well.
        if add {
            let updated = self.engine.conversations().get(conversation.id)?;
            let mut everyone = updated.members.clone();
            everyone.push(me.clone());
            let full = GroupOp {
                op: "create".into(),
                name: updated.name.clone(),
                members: everyone,
            };
            let inner = self.engine.messages().new_inner(
                &channel,
                MessageKind::Other(TYPE_GROUP.into()),
                &serde_json::to_string(&full).expect("serialises"),
                None,
            )?;
            self.engine
                .messages()
                .post(&keys, inner, |_| Ok((None, ())))?;
        }
        self.engine.conversations().get(conversation.id)
    }
}

/// Applies a group operation by `sender` (the creator for everything but `leave`). Returns
/// the conversation id when it exists afterwards.
pub(crate) fn apply_group_op(
    tx: &Tx<'_>,
    channel_id: &str,
    me: &str,
    sender: &str,
    op: &GroupOp,
) -> Result<Option<i64>> {
    let existing = Db::conversation_by_channel(tx, channel_id)?;
    let admin: Option<String> = match existing {
        Some(id) => Db::group_admin(tx, id)?,
        None => None,
    };
    let keys: Vec<String> = op
        .members
        .iter()
        .filter_map(|k| PublicKey::from_text(k).ok().map(|k| k.to_text().to_owned()))
        .collect();
    let id = match (op.op.as_str(), existing) {
        ("create", None) => {
            if !keys.iter().any(|k| k == me) && sender != me {
                return Ok(None);
            }
            let id = Db::create_group(tx, channel_id, &op.name, sender)?;
            for k in keys.iter().filter(|k| *k != me) {
                Db::add_member(tx, id, k)?;
            }
            id
        }
        ("create", Some(id)) | ("add", Some(id)) if admin.as_deref() == Some(sender) => {
            for k in keys.iter().filter(|k| *k != me) {
                Db::add_member(tx, id, k)?;
            }
            if op.op == "create" {
                Db::rename_group(tx, id, &op.name)?;
            }
            id
        }
        ("remove", Some(id)) if admin.as_deref() == Some(sender) => {
            for k in &keys {
                Db::remove_member(tx, id, k)?;
            }
            id
        }
        ("leave", Some(id)) => {
            Db::remove_member(tx, id, sender)?;
            id
        }
        _ => {
            tracing::warn!(
                op = op.op,
                "group operation refused (unknown group or not its creator)"
            );
            return Ok(None);
        }
    };
    if let Some(conversation) = Db::conversation(tx, id)? {
        Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
    }
    Ok(Some(id))
}
