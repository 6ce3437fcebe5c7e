//! Relays and their figures, relay assignments (roles), what each relay has seen of this
//! client (`relay_exposure`), and the RX cursors.

use rusqlite::{OptionalExtension, params};

use super::Db;
use super::now_ms;
use crate::error::Result;
use crate::model::*;

/// A relay row with the figures used to choose relays.
#[derive(Debug, Clone)]
pub struct RelayRow {
    pub info: RelayInfo,
    pub suspect_until: Option<i64>,
}

impl Db {
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
}
