//! The outbox: one row per sealed copy, with its state, TX relay, attempts and errors.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::Db;
use super::now_ms;
use crate::error::Result;

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
    pub const ALL: [OutboxState; 6] = [
        OutboxState::Pending,
        OutboxState::Waiting,
        OutboxState::Accepted,
        OutboxState::Visible,
        OutboxState::Unconfirmed,
        OutboxState::Failed,
    ];

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

impl Db {
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
