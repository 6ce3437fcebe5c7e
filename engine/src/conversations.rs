//! Conversations (direct and group) and their history.

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::store::Db;

/// `engine.conversations()`: list, resolve (`#id`, group name, contact name or key) and page
/// through history.
#[derive(Clone)]
pub struct Conversations {
    pub(crate) engine: Engine,
}

impl Conversations {
    pub fn list(&self) -> Result<Vec<Conversation>> {
        self.engine.inner.db.conversations()
    }

    pub fn get(&self, id: i64) -> Result<Conversation> {
        self.engine
            .inner
            .db
            .read(|conn| Db::conversation(conn, id))?
            .ok_or_else(|| EngineError::UnknownConversation(id.to_string()))
    }

    /// A conversation by `#id`, group name, contact name or key (a DM is created for a key).
    pub fn resolve(&self, target: &str) -> Result<Conversation> {
        if let Some(id) = target.strip_prefix('#').and_then(|s| s.parse::<i64>().ok()) {
            return self.get(id);
        }
        if let Some(id) = self.engine.inner.db.group_by_name(target)? {
            return self.get(id);
        }
        let key = self
            .engine
            .contacts()
            .resolve_key(target)
            .map_err(|e| match e {
                EngineError::UnknownContact(t) => EngineError::UnknownConversation(t),
                other => other,
            })?
            .to_text()
            .to_owned();
        if key == self.engine.me()?.public_key().to_text() {
            return Err(EngineError::InvalidArgument(
                "that is this identity's own key".into(),
            ));
        }
        let id = self.engine.commit(|tx| {
            let (id, created) = Db::ensure_direct(tx, &key)?;
            if created {
                let conversation = Db::conversation(tx, id)?
                    .ok_or_else(|| EngineError::UnknownConversation(id.to_string()))?;
                Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
            }
            Ok(id)
        })?;
        self.get(id)
    }

    /// Moves the read marker of the conversation `target` names (as [`Self::resolve`]) forward
    /// to the message `through`, or to its newest message when `None`; never back, so an older
    /// `through` changes nothing. When it moves, a `ConversationUpdated` event carries the new
    /// unread count to every frontend of this login. The marker is local: nothing is sent.
    pub fn mark_read(&self, target: &str, through: Option<&str>) -> Result<Conversation> {
        if target.trim().is_empty() {
            return Err(EngineError::InvalidArgument(
                "name the conversation to mark read".into(),
            ));
        }
        let id = self.resolve(target)?.id;
        self.engine.commit(|tx| {
            let rowid = match through {
                Some(msg_id) => Db::message_rowid(tx, id, msg_id)?.ok_or_else(|| {
                    EngineError::UnknownMessage(format!("{msg_id} (in conversation #{id})"))
                })?,
                None => Db::newest_message_rowid(tx, id)?.unwrap_or(0),
            };
            let moved = Db::mark_read(tx, id, rowid)?;
            let conversation = Db::conversation(tx, id)?
                .ok_or_else(|| EngineError::UnknownConversation(id.to_string()))?;
            if moved {
                Db::push_event(
                    tx,
                    &EventKind::ConversationUpdated {
                        conversation: conversation.clone(),
                    },
                )?;
            }
            Ok(conversation)
        })
    }

    pub fn messages(
        &self,
        target: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage> {
        let conversation = self.resolve(target)?;
        self.engine
            .inner
            .db
            .messages_page(conversation.id, before, limit.clamp(1, 500))
    }
}
