//! The schema as numbered migrations on `PRAGMA user_version`.

use rusqlite::Connection;

use super::Db;
use crate::error::{EngineError, Result};

/// The schema as numbered steps. A database records the last step applied in `PRAGMA
/// user_version`; opening applies the rest in order, each in one transaction with its version
/// bump, and refuses a database from a newer version without touching it. Steps only add: a
/// change to what exists is a new step that moves the data, never an edit of an old one.
pub(super) const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    MIGRATION_2_RELAY_EXPOSURE,
    MIGRATION_3_READ_STATE,
];

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

/// Step 3: per-conversation read state. `read_through` is the `messages.rowid` of the last
/// message this login has read there (`conversations().mark_read`); a message from someone
/// else with a greater rowid is unread. The rowid is the local arrival order, not the author's
/// timestamp, so a late message written long ago is still unread when it arrives. Databases
/// from before had no notion of read, and their users have seen their history (every frontend
/// showed it in full): the marker starts at each conversation's newest message, so an upgrade
/// does not flood every conversation with unread counts; only what arrives after it counts.
/// The index `messages_arrival` is a conversation's messages in arrival order (an index holds
/// the rowid after its columns): the unread count is a range of it, and the newest message
/// (`last_activity_at`) its last entry, so neither reads a whole conversation.
const MIGRATION_3_READ_STATE: &str = "
ALTER TABLE conversations ADD COLUMN read_through INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS messages_arrival ON messages(conversation_id);
UPDATE conversations SET read_through =
  COALESCE((SELECT MAX(m.rowid) FROM messages m WHERE m.conversation_id = conversations.id), 0);";

/// Applies the migrations a database lacks (see [`MIGRATIONS`]).
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
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
