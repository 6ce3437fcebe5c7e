//! The delivery check that reveals nothing: a sent packet counts as spread once it shows in
//! the recent-hash feed (`sync.recent`) of a relay other than the one it went through.
//!
//! Asking a relay for one packet by hash would tell it which packet we care about, and its
//! answer names the recipient: the RX relay, which sees our own key, would learn every
//! contact. The feed names no key and no hash; we read it from the witness (our RX relay when
//! it offers the feed, else the best relay that does) at a fixed pace whether or not anything
//! was sent, so not even the timing of the requests follows our sends. Matching happens here.
//! Where no relay offers the feed, copies end `unconfirmed` instead of being checked leakily.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::db::{self, now_ms};
use crate::engine::{Engine, SUSPECT_FOR_MS};
use crate::selection;

/// Hex digits of each hash asked for: 64 bits, so a false match among recent packets is
/// negligible, at a quarter of the bytes of whole hashes.
pub const FEED_DIGITS: usize = 16;
/// Pages read per tick at most (a busy relay's backlog is read over several ticks).
const MAX_PAGES_PER_TICK: usize = 8;
/// Most hash prefixes remembered; the oldest go first.
const MAX_REMEMBERED: usize = 200_000;
/// How long an unconfirmed copy may still turn visible.
const LATE_WINDOW_MS: i64 = 60 * 60 * 1000;

/// What the witness task knows: which relays offer the feed, and the recent hashes seen.
#[derive(Default)]
pub(crate) struct WitnessState {
    /// Relays whose `/status` lists `sync.recent`.
    pub(crate) feed_relays: Mutex<HashSet<String>>,
    inner: Mutex<Feed>,
}

#[derive(Default)]
struct Feed {
    /// The relay being read and its cursor; reset when the witness changes.
    relay: Option<String>,
    cursor: Option<u64>,
    /// When reading this relay's feed began: copies accepted before it may have been missed.
    covered_since_ms: i64,
    /// When the feed was last read to its end (`more: false`): everything the relay stored
    /// before then has been seen. A read that fails or stops early does not move it.
    read_through_ms: i64,
    /// Hash prefixes seen, with when, oldest first (and as a set for lookups).
    order: VecDeque<(i64, String)>,
    seen: HashMap<String, i64>,
}

impl Feed {
    fn remember(&mut self, prefix: String, at: i64) {
        if self.seen.insert(prefix.clone(), at).is_none() {
            self.order.push_back((at, prefix));
        }
        while self.order.len() > MAX_REMEMBERED {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

impl Engine {
    /// The relay whose feed confirms delivery: the RX relay when it offers the feed, else the
    /// cheapest relay that does; `None` when none does.
    pub(crate) fn witness_relay(&self) -> Option<String> {
        let feed = self
            .inner
            .witness
            .feed_relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if feed.is_empty() {
            return None;
        }
        if let Ok(Some(rx)) = self.rx_relay()
            && feed.contains(&rx)
        {
            return Some(rx);
        }
        // Keep the relay being read while it still offers the feed: switching restarts the
        // coverage, and copies that spread before the switch could never show.
        let current = self
            .inner
            .witness
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .relay
            .clone();
        let rows = self.inner.db.relays().ok()?;
        if let Some(c) = current
            && feed.contains(&c)
            && rows.iter().any(|r| r.info.address == c && !r.info.suspect)
        {
            return Some(c);
        }
        rows.iter()
            .filter(|r| feed.contains(&r.info.address))
            .min_by(|a, b| {
                (a.info.suspect.cmp(&b.info.suspect))
                    .then(selection::cost(a).total_cmp(&selection::cost(b)))
            })
            .map(|r| r.info.address.clone())
    }

    /// Reads the witness feed every `witness_interval`, forever.
    pub(crate) async fn witness(self) {
        loop {
            self.witness_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.witness_interval) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// One tick: read the feed (a fixed number of requests for a given backlog, whatever we
    /// sent), then settle every accepted copy against what it showed.
    pub async fn witness_once(&self) {
        let now = now_ms();
        let witness = self.witness_relay();
        if let Some(relay) = &witness {
            self.read_feed(relay).await;
        }
        let Ok(copies) = self.inner.db.awaiting_confirmation(now - LATE_WINDOW_MS) else {
            return;
        };
        let timeout = self.inner.config.delivery_timeout.as_millis() as i64;
        let (seen, covered_since, read_through, reading) = {
            let feed = self
                .inner
                .witness
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let prefixes: HashSet<String> = copies
                .iter()
                .map(|c| prefix(&c.hash))
                .filter(|p| feed.seen.contains_key(p))
                .collect();
            (
                prefixes,
                feed.covered_since_ms,
                feed.read_through_ms,
                feed.relay.clone(),
            )
        };
        for copy in copies {
            let shown = seen.contains(&prefix(&copy.hash));
            let witnessed_elsewhere = reading.as_deref().is_some_and(|w| w != copy.tx_relay);
            if shown && witnessed_elsewhere {
                self.settle(&copy, "visible", None);
                continue;
            }
            if copy.unconfirmed || now - copy.accepted_at <= timeout {
                continue;
            }
            let deadline = copy.accepted_at + timeout;
            // Late. Evidence that the TX relay dropped it: a feed on another relay, read from
            // before the copy was accepted through to its end after the deadline.
            if witnessed_elsewhere && covered_since <= copy.accepted_at && read_through >= deadline
            {
                self.resend_lost(&copy);
                continue;
            }
            // No such evidence yet: wait a while for the witness to answer, then give up.
            if witnessed_elsewhere
                && covered_since <= copy.accepted_at
                && now - deadline < 3 * timeout
            {
                continue;
            }
            let why = match &witness {
                None => {
                    "not confirmed: no relay offers the private recent-hash feed (sync.recent), \
                     and asking for the packet by hash would tell a relay whom it is for"
                }
                Some(w) if *w == copy.tx_relay => {
                    "not confirmed: it went through the only relay that offers the recent-hash \
                     feed, so no other relay could show it"
                }
                Some(_) if covered_since > copy.accepted_at => {
                    "not confirmed: it was sent before the witness relay's feed was being read"
                }
                Some(_) => "not confirmed: the witness relay's feed could not be read in time",
            };
            self.settle(&copy, "unconfirmed", Some(why));
        }
    }

    async fn read_feed(&self, relay: &str) {
        let since = {
            let mut feed = self
                .inner
                .witness
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if feed.relay.as_deref() != Some(relay) {
                feed.relay = Some(relay.to_owned());
                feed.cursor = None;
                feed.covered_since_ms = i64::MAX;
                feed.read_through_ms = 0;
            }
            feed.cursor
        };
        let mut since = since;
        for _ in 0..MAX_PAGES_PER_TICK {
            let asked_at = now_ms();
            let page = tokio::select! {
                p = self.inner.client.recent(relay, since, FEED_DIGITS) => p,
                _ = self.inner.stop.cancelled() => return,
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(relay, error = %e, "witness feed read failed");
                    let _ = self.inner.db.relay_result(relay, false, None);
                    return;
                }
            };
            let at = now_ms();
            let mut feed = self
                .inner
                .witness
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if feed.relay.as_deref() != Some(relay) {
                return;
            }
            match since {
                None => {
                    // Bootstrap: from here on the feed covers everything this relay stores.
                    feed.covered_since_ms = at;
                }
                Some(s) if page.cursor < s => {
                    // The relay's sequence went backwards (it lost its store): start over.
                    feed.cursor = Some(page.cursor);
                    feed.covered_since_ms = at;
                    feed.read_through_ms = 0;
                    return;
                }
                Some(_) => {}
            }
            for h in page.hashes {
                feed.remember(h, at);
            }
            feed.cursor = Some(page.cursor);
            since = Some(page.cursor);
            if !page.more {
                // The time the request was answered bounds what it covered; `at` is just after.
                feed.read_through_ms = asked_at;
                return;
            }
        }
    }

    fn settle(&self, copy: &db::AwaitingCopy, state: &str, why: Option<&str>) {
        let _ = self.inner.db.lock().execute(
            "UPDATE outbox SET state = ?2, visible_at = CASE WHEN ?2 = 'visible' THEN ?3 ELSE visible_at END,
               last_error = CASE WHEN ?2 = 'visible' THEN NULL ELSE ?4 END WHERE id = ?1",
            rusqlite::params![copy.id, state, now_ms(), why],
        );
        if !copy.self_copy {
            self.refresh_message_state(copy.message_rowid);
        }
    }

    /// The witness saw the whole time since the TX relay accepted the copy, and not the copy:
    /// that relay dropped it. Re-sent through another relay that may see this key.
    fn resend_lost(&self, copy: &db::AwaitingCopy) {
        tracing::warn!(
            relay = copy.tx_relay,
            hash = copy.hash,
            "sent packet never reached the mesh; re-sending through another relay"
        );
        let _ = self
            .inner
            .db
            .relay_suspect(&copy.tx_relay, "lost", now_ms() + SUSPECT_FOR_MS);
        let key = self
            .inner
            .db
            .key_for_fp(&copy.recipient_fp)
            .ok()
            .flatten()
            .unwrap_or_default();
        let exclude: HashSet<String> = [copy.tx_relay.clone()].into();
        let _ = self.assigned(
            crate::anonymity::ROLE_TX,
            &copy.recipient_fp,
            &key,
            Some(&exclude),
        );
        let _ = self.inner.db.lock().execute(
            "UPDATE outbox SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            rusqlite::params![
                copy.id,
                now_ms(),
                format!("not visible after relay {} accepted it", copy.tx_relay)
            ],
        );
        if !copy.self_copy {
            self.refresh_message_state(copy.message_rowid);
        }
        self.inner.wake_outbox.notify_one();
    }
}

fn prefix(hash: &str) -> String {
    let h = hash.to_ascii_lowercase();
    h[..FEED_DIGITS.min(h.len())].to_owned()
}
