//! Local state in SQLite (WAL, full fsync): contacts, conversations, messages with their
//! edit and reaction history, relays and their figures, relay assignments, the outbox, the
//! hashes seen and the durable event log. Everything the API acknowledges is committed first.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{EngineError, Result};
use crate::model::*;

/// The schema as numbered steps. A database records the last step applied in `PRAGMA
/// user_version`; opening applies the rest in order, each in one transaction with its version
/// bump, and refuses a database from a newer version without touching it. Steps only add: a
/// change to what exists is a new step that moves the data, never an edit of an old one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, MIGRATION_2_RELAY_EXPOSURE];

/// Step 1: the schema as every release before numbered migrations created it (`IF NOT
/// EXISTS`, so such a database, at `user_version` 0, is adopted as it is).
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts(
  key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
  avatar TEXT, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conversations(
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, channel_id TEXT NOT NULL UNIQUE,
  peer_key TEXT UNIQUE, name TEXT, admin TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members(
  conversation_id INTEGER NOT NULL REFERENCES conversations(id), key TEXT NOT NULL,
  PRIMARY KEY(conversation_id, key));
CREATE TABLE IF NOT EXISTS messages(
  rowid INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL REFERENCES conversations(id),
  msg_id TEXT NOT NULL, sender TEXT NOT NULL, outgoing INTEGER NOT NULL, kind TEXT NOT NULL,
  content TEXT NOT NULL, timestamp TEXT NOT NULL, state TEXT NOT NULL, failure TEXT,
  edited INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
  UNIQUE(conversation_id, msg_id));
CREATE INDEX IF NOT EXISTS messages_order ON messages(conversation_id, timestamp, msg_id);
CREATE TABLE IF NOT EXISTS edits(message_rowid INTEGER NOT NULL, content TEXT NOT NULL, replaced_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reactions(
  message_rowid INTEGER NOT NULL, reactor TEXT NOT NULL, reaction TEXT NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY(message_rowid, reactor, reaction));
CREATE TABLE IF NOT EXISTS relays(
  address TEXT PRIMARY KEY, origin TEXT NOT NULL, reported_load REAL, latency_ms REAL,
  successes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
  forged INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0,
  suspect_until INTEGER, supports_wait INTEGER NOT NULL DEFAULT 0,
  added_at INTEGER NOT NULL, removed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS assignments(
  role TEXT NOT NULL, key_fp TEXT NOT NULL, relay TEXT NOT NULL, assigned_at INTEGER NOT NULL,
  PRIMARY KEY(role, key_fp));
CREATE TABLE IF NOT EXISTS rx_cursors(relay TEXT NOT NULL, key_fp TEXT NOT NULL, cursor INTEGER NOT NULL,
  PRIMARY KEY(relay, key_fp));
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY, message_rowid INTEGER, self_copy INTEGER NOT NULL,
  recipient TEXT NOT NULL, recipient_fp TEXT NOT NULL, packet TEXT NOT NULL, hash TEXT NOT NULL,
  state TEXT NOT NULL, tx_relay TEXT, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL, accepted_at INTEGER, visible_at INTEGER, last_error TEXT,
  created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS seen_hashes(hash TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transparent(
  key TEXT PRIMARY KEY, local INTEGER NOT NULL DEFAULT 0, peer INTEGER NOT NULL DEFAULT 0,
  changed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, payload TEXT NOT NULL);
"#;

/// Step 2: what each relay has seen of this client (`anonymity.rs`), recovered for databases
/// from before: every relay that held an assignment saw that key, and the delivery check of
/// that time asked the RX relay by hash for packets to every contact, so the RX relay saw each
/// of them too (an over-count where another relay did the checking: the safe side). The
/// anonymity report then shows what an older version already gave away. Key texts missing
/// here are filled in from contacts or the outbox when reported.
const MIGRATION_2_RELAY_EXPOSURE: &str = "
CREATE TABLE IF NOT EXISTS relay_exposure(
  relay TEXT NOT NULL, key_fp TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
  first_at INTEGER NOT NULL, PRIMARY KEY(relay, key_fp));
INSERT OR IGNORE INTO relay_exposure(relay, key_fp, key, kind, first_at)
  SELECT relay, key_fp, '', role, assigned_at FROM assignments;
INSERT OR IGNORE INTO relay_exposure(relay, key_fp, key, kind, first_at)
  SELECT a.relay, o.recipient_fp, o.recipient, 'tx', MIN(o.created_at)
  FROM outbox o JOIN assignments a ON a.role = 'rx'
  WHERE o.self_copy = 0 AND o.accepted_at IS NOT NULL AND COALESCE(o.tx_relay, '') <> a.relay
    AND COALESCE(o.tx_relay, '') <> 'webrtc'
  GROUP BY a.relay, o.recipient_fp;";

/// Applies the migrations a database lacks (see [`MIGRATIONS`]).
fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > Db::SCHEMA_VERSION {
        return Err(EngineError::Storage(format!(
            "this database was written by a newer Jasper (schema {current}; this version knows \
             up to {}); it was left untouched",
            Db::SCHEMA_VERSION
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Db {
    conn: Mutex<Connection>,
}

/// Where one outbox copy stands (the `outbox.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// To be sent (first try, or again after a failure or a drop).
    Pending,
    /// Its role has no relay of its own yet (anonymity strict): looked at again, not counted.
    Waiting,
    /// Its TX relay accepted it; the witness has not shown it yet.
    Accepted,
    /// Seen in the witness feed on another relay, or acknowledged over a data channel.
    Visible,
    /// Accepted, but its spread could not be confirmed privately (reason in `last_error`).
    Unconfirmed,
    /// Given up on (reason in `last_error`).
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Waiting => "waiting",
            OutboxState::Accepted => "accepted",
            OutboxState::Visible => "visible",
            OutboxState::Unconfirmed => "unconfirmed",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "pending" => OutboxState::Pending,
            "waiting" => OutboxState::Waiting,
            "accepted" => OutboxState::Accepted,
            "visible" => OutboxState::Visible,
            "unconfirmed" => OutboxState::Unconfirmed,
            "failed" => OutboxState::Failed,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown outbox state {other:?}").into(),
                ));
            }
        })
    }
}

impl rusqlite::types::FromSql for OutboxState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        OutboxState::parse(v.as_str()?).map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

impl rusqlite::types::ToSql for OutboxState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// One outbox row, as the sender loop sees it.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub message_rowid: Option<i64>,
    pub self_copy: bool,
    pub recipient: String,
    pub recipient_fp: String,
    pub packet: String,
    pub hash: String,
    pub state: OutboxState,
    pub tx_relay: Option<String>,
    pub attempts: i64,
    pub accepted_at: Option<i64>,
}

/// An accepted copy waiting for the witness relay's feed to show it.
#[derive(Debug, Clone)]
pub struct AwaitingCopy {
    pub id: i64,
    pub message_rowid: Option<i64>,
    pub self_copy: bool,
    pub recipient_fp: String,
    pub hash: String,
    pub tx_relay: String,
    pub accepted_at: i64,
    pub unconfirmed: bool,
}

/// A relay row with the figures used to choose relays.
#[derive(Debug, Clone)]
pub struct RelayRow {
    pub info: RelayInfo,
    pub suspect_until: Option<i64>,
}

impl Db {
    /// The schema version this build writes: the number of [`MIGRATIONS`].
    pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

    /// The schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        restrict_permissions(dir);
        let mut conn = Connection::open(dir.join("jasper.sqlite3"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Before anything writes: a newer database must be left exactly as it is.
        migrate(&mut conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction (committed only if `f` succeeds).
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// [`Db::set_meta`] in a transaction of its own.
    pub fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx(|tx| Db::set_meta(tx, key, value))
    }

    pub fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
        tx.execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            [key, value],
        )?;
        Ok(())
    }

    // ---- events -------------------------------------------------------------------------

    /// Appends an event inside the caller's transaction; returns its sequence number.
    pub fn push_event(tx: &Transaction<'_>, kind: &EventKind) -> Result<u64> {
        let payload =
            serde_json::to_string(kind).map_err(|e| EngineError::Storage(e.to_string()))?;
        tx.execute(
            "INSERT INTO events(at, payload) VALUES(?1, ?2)",
            params![now_ms(), payload],
        )?;
        Ok(tx.last_insert_rowid() as u64)
    }

    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, payload) = row?;
            let kind = serde_json::from_str(&payload)
                .map_err(|e| EngineError::Storage(format!("event {seq}: {e}")))?;
            out.push(Event {
                seq: seq as u64,
                at,
                kind,
            });
        }
        Ok(out)
    }

    pub fn last_event_seq(&self) -> Result<u64> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    // ---- contacts -----------------------------------------------------------------------

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
                "SELECT c.id, c.kind, c.channel_id, c.peer_key, c.name, c.admin, c.created_at, k.name
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
                    ))
                },
            )
            .optional()?;
        let Some((id, kind, channel_id, peer_key, name, admin, created_at, contact_name)) = row
        else {
            return Ok(None);
        };
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
        }))
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

    // ---- relays -------------------------------------------------------------------------

    pub fn add_relay(&self, address: &str, origin: &str) -> Result<bool> {
        let conn = self.lock();
        let existing: Option<bool> = conn
            .query_row(
                "SELECT removed FROM relays WHERE address = ?1",
                [address],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(false) => Ok(false),
            // A relay the user removed is only re-added by the user.
            Some(true) if origin != "added" && origin != "configured" => Ok(false),
            Some(true) => {
                conn.execute(
                    "UPDATE relays SET removed = 0, origin = ?2 WHERE address = ?1",
                    [address, origin],
                )?;
                Ok(true)
            }
            None => {
                conn.execute(
                    "INSERT INTO relays(address, origin, added_at) VALUES(?1, ?2, ?3)",
                    params![address, origin, now_ms()],
                )?;
                Ok(true)
            }
        }
    }

    pub fn remove_relay(&self, address: &str) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE relays SET removed = 1 WHERE address = ?1 AND removed = 0",
            [address],
        )?;
        conn.execute("DELETE FROM assignments WHERE relay = ?1", [address])?;
        Ok(n > 0)
    }

    pub fn relays(&self) -> Result<Vec<RelayRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT address, origin, reported_load, latency_ms, successes, failures, forged, lost, suspect_until, supports_wait
             FROM relays WHERE removed = 0 ORDER BY address",
        )?;
        let now = now_ms();
        let rows = stmt.query_map([], |r| {
            let suspect_until: Option<i64> = r.get(8)?;
            Ok(RelayRow {
                info: RelayInfo {
                    address: r.get(0)?,
                    origin: r.get(1)?,
                    reported_load: r.get(2)?,
                    latency_ms: r.get(3)?,
                    successes: r.get::<_, i64>(4)? as u64,
                    failures: r.get::<_, i64>(5)? as u64,
                    forged: r.get::<_, i64>(6)? as u64,
                    lost: r.get::<_, i64>(7)? as u64,
                    suspect: suspect_until.is_some_and(|u| u > now),
                    supports_wait: r.get(9)?,
                    roles: Vec::new(),
                },
                suspect_until,
            })
        })?;
        let mut out: Vec<RelayRow> = rows.collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare_cached("SELECT role, relay FROM assignments")?;
        let roles: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for row in &mut out {
            let mut rs: Vec<String> = roles
                .iter()
                .filter(|(_, relay)| *relay == row.info.address)
                .map(|(role, _)| role.clone())
                .collect();
            rs.sort();
            rs.dedup();
            row.info.roles = rs;
        }
        Ok(out)
    }

    /// Records the outcome of one request to a relay (latency averaged exponentially).
    pub fn relay_result(&self, address: &str, ok: bool, latency_ms: Option<f64>) -> Result<()> {
        let conn = self.lock();
        if ok {
            conn.execute(
                "UPDATE relays SET successes = successes + 1,
                   latency_ms = CASE WHEN ?2 IS NULL THEN latency_ms WHEN latency_ms IS NULL THEN ?2 ELSE latency_ms * 0.8 + ?2 * 0.2 END
                 WHERE address = ?1",
                params![address, latency_ms],
            )?;
        } else {
            conn.execute(
                "UPDATE relays SET failures = failures + 1 WHERE address = ?1",
                [address],
            )?;
        }
        Ok(())
    }

    pub fn relay_status(
        &self,
        address: &str,
        reported_load: Option<f64>,
        supports_wait: bool,
    ) -> Result<()> {
        self.lock().execute(
            "UPDATE relays SET reported_load = ?2, supports_wait = ?3 WHERE address = ?1",
            params![address, reported_load, supports_wait],
        )?;
        Ok(())
    }

    /// Marks a relay suspect until `until_ms`, counting why (`forged` or `lost`).
    pub fn relay_suspect(&self, address: &str, why: &str, until_ms: i64) -> Result<()> {
        let column = if why == "forged" { "forged" } else { "lost" };
        self.lock().execute(
            &format!("UPDATE relays SET {column} = {column} + 1, suspect_until = MAX(COALESCE(suspect_until, 0), ?2) WHERE address = ?1"),
            params![address, until_ms],
        )?;
        Ok(())
    }

    pub fn assignment(&self, role: &str, key_fp: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT relay FROM assignments WHERE role = ?1 AND key_fp = ?2",
                [role, key_fp],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn assignments(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT role, key_fp, relay FROM assignments")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_assignment(&self, role: &str, key_fp: &str, relay: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO assignments(role, key_fp, relay, assigned_at) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(role, key_fp) DO UPDATE SET relay = ?3, assigned_at = ?4",
            params![role, key_fp, relay, now_ms()],
        )?;
        Ok(())
    }

    /// Records that `relay` sees `key` from this client, before the first request that shows
    /// it: what a relay has seen, it keeps knowing, so roles never move onto it for another key.
    pub fn expose(&self, relay: &str, key_fp: &str, key: &str, kind: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO relay_exposure(relay, key_fp, key, kind, first_at) VALUES(?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(relay, key_fp) DO UPDATE SET key = CASE WHEN key = '' THEN ?3 ELSE key END",
            params![relay, key_fp, key, kind, now_ms()],
        )?;
        Ok(())
    }

    /// Every (relay, key) this client has shown: `(relay, key_fp, key, kind)`, oldest first.
    pub fn exposures(&self) -> Result<Vec<(String, String, String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT relay, key_fp, key, kind FROM relay_exposure ORDER BY first_at, relay",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keys (fingerprint, text) that unsent outbox copies are addressed to.
    pub fn outbox_recipients(&self) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT recipient_fp, recipient FROM outbox WHERE state IN ('pending', 'waiting')",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A key's text from its fingerprint, from any copy ever queued to it.
    pub fn key_for_fp(&self, key_fp: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT recipient FROM outbox WHERE recipient_fp = ?1 LIMIT 1",
                [key_fp],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Copies a TX relay accepted whose spread is not confirmed yet, or was given up on as
    /// unconfirmed within the last `window_ms` (they still turn visible if the witness shows
    /// them): `(id, message_rowid, hash, tx_relay, accepted_at, state)`.
    pub fn awaiting_confirmation(&self, since_ms: i64) -> Result<Vec<AwaitingCopy>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, message_rowid, self_copy, recipient_fp, hash, tx_relay, accepted_at, state FROM outbox
             WHERE state = 'accepted' OR (state = 'unconfirmed' AND accepted_at >= ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(AwaitingCopy {
                id: r.get(0)?,
                message_rowid: r.get(1)?,
                self_copy: r.get(2)?,
                recipient_fp: r.get(3)?,
                hash: r.get(4)?,
                tx_relay: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                accepted_at: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                unconfirmed: r.get::<_, OutboxState>(7)? == OutboxState::Unconfirmed,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rx_cursor(&self, relay: &str, key_fp: &str) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT cursor FROM rx_cursors WHERE relay = ?1 AND key_fp = ?2",
                [relay, key_fp],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|c| c as u64))
    }

    pub fn set_rx_cursor(&self, relay: &str, key_fp: &str, cursor: u64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO rx_cursors(relay, key_fp, cursor) VALUES(?1, ?2, ?3) ON CONFLICT(relay, key_fp) DO UPDATE SET cursor = ?3",
            params![relay, key_fp, cursor as i64],
        )?;
        Ok(())
    }

    // ---- outbox -------------------------------------------------------------------------

    /// Queues one copy; it is not sent before `not_before` (unix ms; 0: at once).
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        tx: &Transaction<'_>,
        message_rowid: Option<i64>,
        self_copy: bool,
        recipient: &str,
        recipient_fp: &str,
        packet: &str,
        hash: &str,
        not_before: i64,
    ) -> Result<i64> {
        tx.execute(
            "INSERT INTO outbox(message_rowid, self_copy, recipient, recipient_fp, packet, hash, state, next_attempt_at, created_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?8, ?7)",
            params![message_rowid, self_copy, recipient, recipient_fp, packet, hash, now_ms(), not_before],
        )?;
        Ok(tx.last_insert_rowid())
    }

    pub fn due_outbox(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, message_rowid, self_copy, recipient, recipient_fp, packet, hash, state, tx_relay, attempts, accepted_at
             FROM outbox WHERE state IN ('pending', 'waiting') AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                message_rowid: r.get(1)?,
                self_copy: r.get(2)?,
                recipient: r.get(3)?,
                recipient_fp: r.get(4)?,
                packet: r.get(5)?,
                hash: r.get(6)?,
                state: r.get(7)?,
                tx_relay: r.get(8)?,
                attempts: r.get(9)?,
                accepted_at: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn next_outbox_due(&self) -> Result<Option<i64>> {
        Ok(self.lock().query_row(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state IN ('pending', 'waiting')",
            [],
            |r| r.get(0),
        )?)
    }

    /// The copy was delivered over a data channel: visible at once, route `webrtc`.
    pub fn outbox_delivered_direct(&self, id: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET state = 'visible', tx_relay = 'webrtc', accepted_at = ?2, visible_at = ?2, last_error = NULL WHERE id = ?1",
            params![id, now_ms()],
        )?;
        Ok(())
    }

    /// The copy waits for a relay of its own until `next_attempt_at`; no attempt is counted.
    pub fn outbox_wait(&self, id: i64, next_attempt_at: i64, why: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET state = 'waiting', next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, next_attempt_at, why],
        )?;
        Ok(())
    }

    /// `relay` accepted the copy at `at`.
    pub fn outbox_accepted(&self, id: i64, relay: &str, at: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET state = 'accepted', tx_relay = ?2, accepted_at = ?3, last_error = NULL WHERE id = ?1",
            params![id, relay, at],
        )?;
        Ok(())
    }

    /// Back to `pending` after a failure or a drop: one more attempt, next at `next_attempt_at`.
    pub fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, next_attempt_at, error],
        )?;
        Ok(())
    }

    /// A final or settled state (`visible`, `unconfirmed`, `failed`); `why` replaces the last
    /// error (a visible copy has none).
    pub fn outbox_settle(&self, id: i64, state: OutboxState, why: Option<&str>) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET state = ?2, visible_at = CASE WHEN ?2 = 'visible' THEN ?3 ELSE visible_at END,
               last_error = CASE WHEN ?2 = 'visible' THEN NULL ELSE COALESCE(?4, last_error) END WHERE id = ?1",
            params![id, state, now_ms(), why],
        )?;
        Ok(())
    }

    /// The states of every non-self copy of a message.
    pub fn copy_states(
        conn: &Connection,
        message_rowid: i64,
    ) -> Result<Vec<(OutboxState, Option<String>)>> {
        let mut stmt = conn.prepare_cached(
            "SELECT state, last_error FROM outbox WHERE message_rowid = ?1 AND self_copy = 0",
        )?;
        let rows = stmt.query_map([message_rowid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn outbox_tx_relays(&self, message_rowid: i64) -> Result<Vec<(String, Option<String>)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT recipient, tx_relay FROM outbox WHERE message_rowid = ?1 AND self_copy = 0 ORDER BY id")?;
        let rows = stmt.query_map([message_rowid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
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

/// First 16 characters of a key's fingerprint-like identifier, for unnamed peers.
pub fn short_key(key: &str) -> String {
    use sha2::Digest;
    let fp = jasper_core::PublicKey::from_text(key)
        .map(|k| k.short_id())
        .unwrap_or_else(|_| hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]));
    format!("key:{fp}")
}

fn restrict_permissions(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory written before `relay_exposure` existed: its relays' past sight of
    /// keys, including what the old by-hash delivery check showed the RX relay, is recovered.
    #[test]
    fn exposure_is_backfilled_once_from_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let conn = db.lock();
            // As schema 1 left it: no exposure table.
            conn.execute_batch(
                "DROP TABLE relay_exposure; PRAGMA user_version = 1;
                 INSERT INTO assignments VALUES('rx', 'me', 'rx:1', 1), ('tx', 'me', 'self:1', 1),
                   ('tx', 'bob', 'bobtx:1', 1), ('tx', 'carol', 'caroltx:1', 1);
                 INSERT INTO outbox(message_rowid, self_copy, recipient, recipient_fp, packet, hash,
                   state, tx_relay, next_attempt_at, accepted_at, created_at)
                 VALUES(1, 0, 'BOB', 'bob', '{}', 'h1', 'visible', 'bobtx:1', 0, 5, 5),
                       (1, 1, 'ME', 'me', '{}', 'h2', 'visible', 'self:1', 0, 5, 5),
                       (2, 0, 'CAROL', 'carol', '{}', 'h3', 'visible', 'webrtc', 0, 6, 6),
                       (3, 0, 'DAVE', 'dave', '{}', 'h4', 'pending', NULL, 0, NULL, 7);",
            )
            .unwrap();
        }
        let exposures = |db: &Db| {
            let mut e: Vec<(String, String)> = db
                .exposures()
                .unwrap()
                .into_iter()
                .map(|(relay, fp, ..)| (relay, fp))
                .collect();
            e.sort();
            e
        };
        let db = Db::open(dir.path()).unwrap();
        let want: Vec<(String, String)> = [
            ("bobtx:1", "bob"),
            ("caroltx:1", "carol"),
            // The old check asked the RX relay for bob's packet (carol's went direct, dave's
            // was never sent).
            ("rx:1", "bob"),
            ("rx:1", "me"),
            ("self:1", "me"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(exposures(&db), want);
        // Once: a later open adds nothing for assignments that exist by then.
        db.set_assignment("tx", "erin", "erintx:1").unwrap();
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(exposures(&db), want);
    }
}
