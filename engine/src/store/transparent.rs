//! Transparent-mode consent per contact: this login's and what the contact said.

use rusqlite::OptionalExtension;

use super::{Db, now_ms};
use crate::error::Result;

impl Db {
    /// (this login consents, the contact said it consents) for `key`; both false if unknown.
    pub fn consent(&self, key: &str) -> Result<(bool, bool)> {
        Ok(self
            .lock()
            .query_row(
                "SELECT local, peer FROM transparent WHERE key = ?1",
                [key],
                |r| Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()?
            .unwrap_or((false, false)))
    }

    /// Sets either side's consent for `key` (`None` leaves it as it is).
    pub fn set_consent(&self, key: &str, local: Option<bool>, peer: Option<bool>) -> Result<()> {
        self.lock().execute(
            "INSERT INTO transparent(key, local, peer, changed_at) VALUES(?1, COALESCE(?2, 0), COALESCE(?3, 0), ?4)
             ON CONFLICT(key) DO UPDATE SET local = COALESCE(?2, local), peer = COALESCE(?3, peer), changed_at = ?4",
            rusqlite::params![key, local, peer, now_ms()],
        )?;
        Ok(())
    }

    /// Every contact with transparent mode enabled on either side.
    pub fn consenting_keys(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT key FROM transparent WHERE local = 1 OR peer = 1 ORDER BY key")?;
        let keys = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(keys)
    }
}
