//! Local state in SQLite (WAL, full fsync): contacts, conversations, messages with their
//! edit and reaction history, relays and their figures, relay assignments, the outbox, the
//! hashes seen and the durable event log. Everything the API acknowledges is committed first.
//!
//! The parts reach it only through these typed functions (no SQL outside this directory):
//! `history.rs` (contacts, conversations, messages), `outbox.rs`, `relays.rs`, `transparent.rs`
//! (consent), and here the meta table and the event log. `migrations.rs` holds the schema as
//! numbered steps.

mod history;
mod migrations;
mod outbox;
mod relays;
mod transparent;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{EngineError, Result};
use crate::model::*;
pub use history::{state_from, state_str};
use migrations::{MIGRATIONS, migrate};
pub use outbox::{AwaitingCopy, OutboxItem, OutboxState};
pub use relays::RelayRow;

/// The transaction a part writes in (`engine.commit(|tx| ..)`): it hands it to the store's
/// functions, never runs SQL on it itself.
pub type Tx<'c> = Transaction<'c>;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Db {
    conn: Mutex<Connection>,
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

    /// Runs `f` with the connection, for reads: the store's typed functions on a `Connection`
    /// (`Db::message(conn, ..)`), several under one lock.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
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
            // As schema 1 left it: no exposure table (nor read state, step 3).
            conn.execute_batch(
                "DROP TABLE relay_exposure; DROP INDEX messages_arrival;
                 ALTER TABLE conversations DROP COLUMN read_through; PRAGMA user_version = 1;
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

    /// A data directory of schema 2 (the release before read state): its history counts as
    /// read, and a message arriving after the upgrade is unread.
    #[test]
    fn read_state_starts_at_the_newest_message_of_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let (dm, empty) = {
            let db = Db::open(dir.path()).unwrap();
            let ids = db
                .tx(|tx| {
                    let (dm, _) = Db::ensure_direct(tx, "BOB")?;
                    let (empty, _) = Db::ensure_direct(tx, "CAROL")?;
                    for (i, outgoing) in [false, true, false].into_iter().enumerate() {
                        let id = format!("m{i}");
                        let ts = format!("2024-01-0{}T00:00:00.000Z", i + 1);
                        Db::insert_message(
                            tx,
                            dm,
                            &id,
                            if outgoing { "ME" } else { "BOB" },
                            outgoing,
                            "text",
                            "hi",
                            &ts,
                            MessageState::Received,
                        )?;
                    }
                    Ok((dm, empty))
                })
                .unwrap();
            db.lock()
                .execute_batch(
                    "DROP INDEX messages_arrival; ALTER TABLE conversations DROP COLUMN read_through;
                     PRAGMA user_version = 2;",
                )
                .unwrap();
            ids
        };
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.schema_version().unwrap(), Db::SCHEMA_VERSION);
        let conversation = |id| db.read(|c| Db::conversation(c, id)).unwrap().unwrap();
        let before = conversation(dm);
        assert_eq!(before.unread, 0, "{before:?}");
        assert!(before.last_activity_at >= before.created_at);
        let none = conversation(empty);
        assert_eq!((none.unread, none.last_activity_at), (0, none.created_at));
        // A late message (an author timestamp older than all of them) is still unread.
        db.tx(|tx| {
            Db::insert_message(
                tx,
                dm,
                "late",
                "BOB",
                false,
                "text",
                "from long ago",
                "2000-01-01T00:00:00.000Z",
                MessageState::Received,
            )
            .map(|_| ())
        })
        .unwrap();
        assert_eq!(conversation(dm).unread, 1);
    }
}
