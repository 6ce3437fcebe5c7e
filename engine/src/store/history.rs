//! Contacts, conversations (direct and group, with members), messages with their edits and
//! reactions, and the hashes of packets already applied.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::Db;
use super::{now_ms, short_key};
use crate::error::{EngineError, Result};
use crate::model::*;

impl Db {
    /// Adds a contact, or renames it and changes its avatar if the key is known.
    pub fn upsert_contact(tx: &Transaction<'_>, c: &Contact) -> Result<()> {
        tx.execute(
            "INSERT INTO contacts(key, fingerprint, name, avatar, added_at) VALUES(?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(key) DO UPDATE SET name = ?3, avatar = ?4",
            params![c.key, c.fingerprint, c.name, c.avatar, c.added_at],
        )?;
        Ok(())
    }

    /// Records a hash inside the caller's transaction; false if it was already seen.
    pub fn mark_seen_in(tx: &Transaction<'_>, hash: &str) -> Result<bool> {
        Ok(tx.execute(
            "INSERT OR IGNORE INTO seen_hashes(hash, at) VALUES(?1, ?2)",
            params![hash, now_ms()],
        )? == 1)
    }

    /// Whether `key` is a member of conversation `id` (this identity is not listed).
    pub fn is_member(conn: &Connection, id: i64, key: &str) -> Result<bool> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM members WHERE conversation_id = ?1 AND key = ?2",
                params![id, key],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The author of a stored message.
    pub fn message_sender(conn: &Connection, rowid: i64) -> Result<String> {
        Ok(conn.query_row(
            "SELECT sender FROM messages WHERE rowid = ?1",
            [rowid],
            |r| r.get(0),
        )?)
    }

    /// Adds a reaction (once per reactor and reaction).
    pub fn add_reaction(
        tx: &Transaction<'_>,
        rowid: i64,
        reactor: &str,
        reaction: &str,
    ) -> Result<()> {
        tx.execute(
            "INSERT OR IGNORE INTO reactions(message_rowid, reactor, reaction, at) VALUES(?1, ?2, ?3, ?4)",
            params![rowid, reactor, reaction, now_ms()],
        )?;
        Ok(())
    }

    /// Replaces a message's content, keeping the old one in its edit history.
    pub fn edit_message(tx: &Transaction<'_>, rowid: i64, content: &str) -> Result<()> {
        tx.execute(
            "INSERT INTO edits(message_rowid, content, replaced_at) SELECT rowid, content, ?2 FROM messages WHERE rowid = ?1",
            params![rowid, now_ms()],
        )?;
        tx.execute(
            "UPDATE messages SET content = ?2, edited = 1 WHERE rowid = ?1",
            params![rowid, content],
        )?;
        Ok(())
    }

    /// Empties a message and its edit history (the row stays, marked deleted).
    pub fn delete_message(tx: &Transaction<'_>, rowid: i64) -> Result<()> {
        tx.execute("DELETE FROM edits WHERE message_rowid = ?1", [rowid])?;
        tx.execute(
            "UPDATE messages SET content = '', deleted = 1 WHERE rowid = ?1",
            [rowid],
        )?;
        Ok(())
    }

    /// Whether conversation `id` is a group.
    pub fn is_group(conn: &Connection, id: i64) -> Result<bool> {
        let kind: String =
            conn.query_row("SELECT kind FROM conversations WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        Ok(kind == "group")
    }

    /// A group's creator.
    pub fn group_admin(conn: &Connection, id: i64) -> Result<Option<String>> {
        Ok(
            conn.query_row("SELECT admin FROM conversations WHERE id = ?1", [id], |r| {
                r.get(0)
            })?,
        )
    }

    /// A new group; returns its conversation id.
    pub fn create_group(
        tx: &Transaction<'_>,
        channel_id: &str,
        name: &str,
        admin: &str,
    ) -> Result<i64> {
        tx.execute(
            "INSERT INTO conversations(kind, channel_id, name, admin, created_at) VALUES('group', ?1, ?2, ?3, ?4)",
            params![channel_id, name, admin, now_ms()],
        )?;
        Ok(tx.last_insert_rowid())
    }

    pub fn rename_group(tx: &Transaction<'_>, id: i64, name: &str) -> Result<()> {
        tx.execute(
            "UPDATE conversations SET name = ?2 WHERE id = ?1",
            params![id, name],
        )?;
        Ok(())
    }

    pub fn add_member(tx: &Transaction<'_>, id: i64, key: &str) -> Result<()> {
        tx.execute(
            "INSERT OR IGNORE INTO members(conversation_id, key) VALUES(?1, ?2)",
            params![id, key],
        )?;
        Ok(())
    }

    pub fn remove_member(tx: &Transaction<'_>, id: i64, key: &str) -> Result<()> {
        tx.execute(
            "DELETE FROM members WHERE conversation_id = ?1 AND key = ?2",
            params![id, key],
        )?;
        Ok(())
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT key, fingerprint, name, avatar, added_at FROM contacts ORDER BY name",
        )?;
        let rows = stmt.query_map([], contact_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn contact_by_key(&self, key: &str) -> Result<Option<Contact>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT key, fingerprint, name, avatar, added_at FROM contacts WHERE key = ?1",
                [key],
                contact_from_row,
            )
            .optional()?)
    }

    pub fn contact_by_name(&self, name: &str) -> Result<Option<Contact>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT key, fingerprint, name, avatar, added_at FROM contacts WHERE name = ?1",
                [name],
                contact_from_row,
            )
            .optional()?)
    }

    // ---- conversations ------------------------------------------------------------------

    pub fn conversation(conn: &Connection, id: i64) -> Result<Option<Conversation>> {
        let row = conn
            .query_row(
                "SELECT c.id, c.kind, c.channel_id, c.peer_key, c.name, c.admin, c.created_at, k.name,
                        c.read_through
                 FROM conversations c LEFT JOIN contacts k ON k.key = c.peer_key WHERE c.id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, kind, channel_id, peer_key, name, admin, created_at, contact_name, read)) =
            row
        else {
            return Ok(None);
        };
        // Both are ranges of `messages_arrival` (conversation, rowid): the messages after the
        // read marker, and the newest one by arrival, whose `created_at` is the latest (it is
        // the local clock at insertion, so it follows the rowid).
        let unread: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM messages
                 WHERE conversation_id = ?1 AND rowid > ?2 AND outgoing = 0 AND deleted = 0",
            )?
            .query_row(params![id, read], |r| r.get(0))?;
        let last_activity_at: Option<i64> = conn
            .prepare_cached(
                "SELECT created_at FROM messages WHERE conversation_id = ?1
                 ORDER BY rowid DESC LIMIT 1",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let mut stmt =
            conn.prepare_cached("SELECT key FROM members WHERE conversation_id = ?1 ORDER BY key")?;
        let members: Vec<String> = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let kind = if kind == "group" {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        };
        let name = match kind {
            ConversationKind::Group => name.unwrap_or_default(),
            ConversationKind::Direct => {
                contact_name.unwrap_or_else(|| short_key(peer_key.as_deref().unwrap_or("")))
            }
        };
        Ok(Some(Conversation {
            id,
            kind,
            channel_id,
            name,
            members,
            admin,
            created_at,
            unread: u32::try_from(unread).unwrap_or(u32::MAX),
            last_activity_at: last_activity_at.unwrap_or(created_at),
        }))
    }

    /// Moves conversation `id`'s read marker forward to message `rowid` (never back); whether
    /// it moved.
    pub fn mark_read(tx: &Transaction<'_>, id: i64, rowid: i64) -> Result<bool> {
        Ok(tx.execute(
            "UPDATE conversations SET read_through = ?2 WHERE id = ?1 AND read_through < ?2",
            params![id, rowid],
        )? > 0)
    }

    /// Records conversation `id`'s new figures (unread count, last activity) as a
    /// `ConversationUpdated` event: after a message is stored there, or an unread one deleted,
    /// so a frontend's badges follow the log without asking.
    pub fn push_conversation_figures(tx: &Transaction<'_>, id: i64) -> Result<()> {
        if let Some(conversation) = Self::conversation(tx, id)? {
            Self::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
        }
        Ok(())
    }

    /// The rowid of the message that arrived last in conversation `id`.
    pub fn newest_message_rowid(conn: &Connection, id: i64) -> Result<Option<i64>> {
        Ok(conn
            .prepare_cached("SELECT MAX(rowid) FROM messages WHERE conversation_id = ?1")?
            .query_row([id], |r| r.get(0))?)
    }

    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        let conn = self.lock();
        let ids: Vec<i64> = conn
            .prepare_cached("SELECT id FROM conversations ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter()
            .filter_map(|id| Self::conversation(&conn, id).transpose())
            .collect()
    }

    pub fn direct_conversation_id(conn: &Connection, peer_key: &str) -> Result<Option<i64>> {
        Ok(conn
            .query_row(
                "SELECT id FROM conversations WHERE peer_key = ?1",
                [peer_key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn conversation_by_channel(conn: &Connection, channel_id: &str) -> Result<Option<i64>> {
        Ok(conn
            .query_row(
                "SELECT id FROM conversations WHERE channel_id = ?1",
                [channel_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn group_by_name(&self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row("SELECT id FROM conversations WHERE kind = 'group' AND name = ?1 ORDER BY id LIMIT 1", [name], |r| r.get(0))
            .optional()?)
    }

    /// The DM conversation with `peer_key`, created if needed. Returns (id, created).
    pub fn ensure_direct(tx: &Transaction<'_>, peer_key: &str) -> Result<(i64, bool)> {
        if let Some(id) = Self::direct_conversation_id(tx, peer_key)? {
            return Ok((id, false));
        }
        tx.execute(
            "INSERT INTO conversations(kind, channel_id, peer_key, created_at) VALUES('direct', ?1, ?2, ?3)",
            params![uuid::Uuid::new_v4().to_string(), peer_key, now_ms()],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO members(conversation_id, key) VALUES(?1, ?2)",
            params![id, peer_key],
        )?;
        Ok((id, true))
    }

    // ---- messages -----------------------------------------------------------------------

    pub fn message_rowid(
        conn: &Connection,
        conversation_id: i64,
        msg_id: &str,
    ) -> Result<Option<i64>> {
        Ok(conn
            .query_row(
                "SELECT rowid FROM messages WHERE conversation_id = ?1 AND msg_id = ?2",
                params![conversation_id, msg_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Finds a message by its protocol id in any conversation.
    pub fn find_message(conn: &Connection, msg_id: &str) -> Result<Option<(i64, i64)>> {
        Ok(conn
            .query_row("SELECT rowid, conversation_id FROM messages WHERE msg_id = ?1 ORDER BY rowid LIMIT 1", [msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn message(conn: &Connection, rowid: i64) -> Result<Message> {
        let mut m = conn.query_row(
            "SELECT m.msg_id, m.conversation_id, m.sender, k.name, m.outgoing, m.kind, m.content, m.timestamp,
                    m.state, m.failure, m.edited, m.deleted
             FROM messages m LEFT JOIN contacts k ON k.key = m.sender WHERE m.rowid = ?1",
            [rowid],
            |r| {
                Ok(Message {
                    id: r.get(0)?,
                    conversation_id: r.get(1)?,
                    sender: r.get(2)?,
                    sender_name: r.get(3)?,
                    outgoing: r.get(4)?,
                    kind: r.get(5)?,
                    content: r.get(6)?,
                    timestamp: r.get(7)?,
                    state: state_from(&r.get::<_, String>(8)?),
                    failure: r.get(9)?,
                    edited: r.get(10)?,
                    deleted: r.get(11)?,
                    reactions: Vec::new(),
                    history: Vec::new(),
                    attachments: Vec::new(),
                })
            },
        )?;
        m.attachments = jasper_core::attachment::parse_attachments(&m.content)
            .iter()
            .map(crate::model::attachment_from_link)
            .collect();
        let mut stmt = conn.prepare_cached(
            "SELECT reactor, reaction FROM reactions WHERE message_rowid = ?1 ORDER BY at, reactor",
        )?;
        m.reactions = stmt
            .query_map([rowid], |r| {
                Ok(Reaction {
                    reactor: r.get(0)?,
                    reaction: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT content FROM edits WHERE message_rowid = ?1 ORDER BY replaced_at, rowid",
        )?;
        m.history = stmt
            .query_map([rowid], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(m)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_message(
        tx: &Transaction<'_>,
        conversation_id: i64,
        msg_id: &str,
        sender: &str,
        outgoing: bool,
        kind: &str,
        content: &str,
        timestamp: &str,
        state: MessageState,
    ) -> Result<Option<i64>> {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO messages(conversation_id, msg_id, sender, outgoing, kind, content, timestamp, state, created_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![conversation_id, msg_id, sender, outgoing, kind, content, timestamp, state_str(&state), now_ms()],
        )?;
        Ok((inserted == 1).then(|| tx.last_insert_rowid()))
    }

    /// A page of a conversation, ordered by author timestamp then id. `before` is an opaque
    /// cursor from a previous page.
    pub fn messages_page(
        &self,
        conversation_id: i64,
        before: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage> {
        let conn = self.lock();
        let (ts, id) = match before {
            Some(c) => {
                let (ts, id) = c
                    .split_once('|')
                    .ok_or_else(|| EngineError::InvalidArgument("invalid page cursor".into()))?;
                (ts.to_owned(), id.to_owned())
            }
            None => ("\u{10FFFF}".to_owned(), String::new()),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT rowid FROM messages WHERE conversation_id = ?1 AND (timestamp < ?2 OR (timestamp = ?2 AND msg_id < ?3))
             ORDER BY timestamp DESC, msg_id DESC LIMIT ?4",
        )?;
        let mut rowids: Vec<i64> = stmt
            .query_map(params![conversation_id, ts, id, limit as i64 + 1], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let more = rowids.len() > limit;
        rowids.truncate(limit);
        rowids.reverse();
        let messages: Vec<Message> = rowids
            .iter()
            .map(|r| Self::message(&conn, *r))
            .collect::<Result<_>>()?;
        let before = if more {
            messages
                .first()
                .map(|m| format!("{}|{}", m.timestamp, m.id))
        } else {
            None
        };
        Ok(MessagePage { messages, before })
    }

    pub fn set_message_state(
        tx: &Transaction<'_>,
        rowid: i64,
        state: &MessageState,
        failure: Option<&str>,
    ) -> Result<bool> {
        let changed = tx.execute(
            "UPDATE messages SET state = ?2, failure = ?3 WHERE rowid = ?1 AND (state != ?2 OR failure IS NOT ?3)",
            params![rowid, state_str(state), failure],
        )?;
        Ok(changed > 0)
    }

    // ---- seen hashes --------------------------------------------------------------------

    /// Records a hash; false if it was already seen.
    pub fn mark_seen(&self, hash: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "INSERT OR IGNORE INTO seen_hashes(hash, at) VALUES(?1, ?2)",
            params![hash, now_ms()],
        )? == 1)
    }

    pub fn was_seen(&self, hash: &str) -> Result<bool> {
        Ok(self
            .lock()
            .query_row("SELECT 1 FROM seen_hashes WHERE hash = ?1", [hash], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }
}

fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    Ok(Contact {
        key: r.get(0)?,
        fingerprint: r.get(1)?,
        name: r.get(2)?,
        avatar: r.get(3)?,
        added_at: r.get(4)?,
    })
}

pub fn state_str(s: &MessageState) -> &'static str {
    match s {
        MessageState::Queued => "queued",
        MessageState::Sent => "sent",
        MessageState::Visible => "visible",
        MessageState::Unconfirmed => "unconfirmed",
        MessageState::Waiting => "waiting",
        MessageState::Failed => "failed",
        MessageState::Received => "received",
    }
}

pub fn state_from(s: &str) -> MessageState {
    match s {
        "queued" => MessageState::Queued,
        "sent" => MessageState::Sent,
        "visible" => MessageState::Visible,
        "unconfirmed" => MessageState::Unconfirmed,
        "waiting" => MessageState::Waiting,
        "failed" => MessageState::Failed,
        _ => MessageState::Received,
    }
}
