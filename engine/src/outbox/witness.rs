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
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::engine::{Engine, SUSPECT_FOR_MS};
use crate::relays::anonymity::Role;
use crate::relays::selection;
use crate::store::{self, OutboxState, now_ms};

/// Hex digits of each hash asked for: 64 bits, so a false match among recent packets is
/// negligible, at a quarter of the bytes of whole hashes.
pub const FEED_DIGITS: usize = 16;
/// Pages read per tick at most (a busy relay's backlog is read over several ticks).
const MAX_PAGES_PER_TICK: usize = 8;
/// Most hash prefixes remembered; the oldest go first.
const MAX_REMEMBERED: usize = 200_000;
/// Arrivals read back on a relay's first read: up to one page, so that copies that reached it
/// before it became the witness still show (at 10 packets a second mesh-wide, about 17
/// minutes; at most ~190 kB, once per witness change).
const READ_BACK: u64 = 10_000;
/// How long an unconfirmed copy may still turn visible.
const LATE_WINDOW_MS: i64 = 60 * 60 * 1000;

/// How long start-up waits for the first discovery pass and the first feed read.
const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// The feed cursor is saved at most this often (a restart re-reads a little, harmlessly).
const SAVE_CURSOR_EVERY_MS: i64 = 30_000;

/// The meta key of the saved feed position.
const SAVED_FEED: &str = "witness_feed";

/// The feed position kept across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedFeed {
    relay: String,
    cursor: u64,
    covered_since_ms: i64,
}

/// What the witness task knows: which relays offer the feed, and the recent hashes seen.
#[derive(Default)]
pub(crate) struct WitnessState {
    /// Relays whose `/status` lists `sync.recent`.
    pub(crate) feed_relays: Mutex<HashSet<String>>,
    /// The first discovery pass is over (set by the discovery task).
    pub(crate) discovered: AtomicBool,
    /// The witness has read its feed once since start.
    ready: AtomicBool,
    ready_notify: Notify,
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
    /// When the cursor was last saved to the database.
    saved_at_ms: i64,
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
    fn feed(&self) -> MutexGuard<'_, Feed> {
        self.inner.witness.inner.lock()
    }

    /// Where an earlier run of this engine stopped reading a feed.
    fn saved_feed(&self) -> Option<SavedFeed> {
        let saved = self.inner.db.meta(SAVED_FEED).ok().flatten()?;
        serde_json::from_str(&saved).ok()
    }

    /// The relay whose feed is being read now, if any.
    pub(crate) fn reading_witness(&self) -> Option<String> {
        self.feed().relay.clone()
    }

    /// The relay whose feed confirms delivery; `None` when no known relay offers the feed.
    /// Preferred: the RX relay, else the cheapest relay carrying no TX role of ours (a TX
    /// relay cannot witness its own copies). The relay being read is kept while it offers the
    /// feed, unless something better exists and no copy awaits confirmation: a switch restarts
    /// the coverage, so a copy in flight that the old witness would have shown as lost cannot
    /// be proven lost by the new one. One exception: a relay read since before any role
    /// existed (the witness is chosen at start) that has since become a TX relay is left at
    /// once, because it can never show its own copies, and a copy it dropped would otherwise
    /// never be found out and re-sent. In-flight copies already spread still show on the new
    /// witness, whose first read reaches back over its recent arrivals ([`READ_BACK`]).
    pub(crate) fn witness_relay(&self) -> Option<String> {
        let feed = self.inner.witness.feed_relays.lock().clone();
        if feed.is_empty() {
            return None;
        }
        let rows = self.inner.db.relays().ok()?;
        let usable = |a: &str| {
            feed.contains(a) && rows.iter().any(|r| r.info.address == a && !r.info.suspect)
        };
        let tx: HashSet<String> = self
            .inner
            .db
            .assignments()
            .unwrap_or_default()
            .into_iter()
            .filter(|(role, ..)| role == Role::Tx.as_str())
            .map(|(.., relay)| relay)
            .collect();
        let rx = self.relays().rx().ok().flatten();
        let preferred = rx.clone().filter(|r| usable(r)).or_else(|| {
            rows.iter()
                .filter(|r| feed.contains(&r.info.address))
                .min_by(|a, b| {
                    (a.info.suspect, tx.contains(&a.info.address))
                        .cmp(&(b.info.suspect, tx.contains(&b.info.address)))
                        .then(selection::cost(a).total_cmp(&selection::cost(b)))
                })
                .map(|r| r.info.address.clone())
        });
        // After a restart nothing is being read yet: the relay an earlier run read is the
        // current one, so that copies it left in flight stay covered by its saved position
        // (starting afresh elsewhere would leave them `unconfirmed`).
        let current = self
            .feed()
            .relay
            .clone()
            .or_else(|| self.saved_feed().map(|s| s.relay))
            .filter(|c| usable(c));
        match current {
            Some(c) if Some(&c) == preferred.as_ref() => Some(c),
            Some(c) if tx.contains(&c) && preferred.as_ref().is_some_and(|p| !tx.contains(p)) => {
                tracing::debug!(
                    relay = c,
                    "witness relay became a TX relay; reading another"
                );
                preferred
            }
            Some(c) => {
                let awaiting = self
                    .inner
                    .db
                    .awaiting_confirmation(i64::MAX)
                    .map(|v| !v.is_empty())
                    .unwrap_or(true);
                if awaiting { Some(c) } else { preferred }
            }
            None => preferred,
        }
    }

    /// Reads the witness feed every `witness_interval`, forever. The first read waits for the
    /// first discovery pass (which learns the relays that offer the feed), and the sender
    /// waits for that first read, so that even the first message after start is covered.
    pub(crate) async fn witness(self) {
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        while !self.inner.witness.discovered.load(Ordering::Acquire)
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
        loop {
            self.witness_once().await;
            if !self.inner.witness.ready.swap(true, Ordering::AcqRel) {
                self.inner.witness.ready_notify.notify_waiters();
            }
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.witness_interval) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Until the witness has read its feed once (at most [`STARTUP_WAIT`]).
    pub(crate) async fn witness_ready(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        while !self.inner.witness.ready.load(Ordering::Acquire) {
            tokio::select! {
                _ = self.inner.witness.ready_notify.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// One tick: read the feed (a fixed number of requests for a given backlog, whatever we
    /// sent), then settle every accepted copy against what it showed.
    pub(crate) async fn witness_once(&self) {
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
            let feed = self.feed();
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
                self.settle(&copy, OutboxState::Visible, None);
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
            self.settle(&copy, OutboxState::Unconfirmed, Some(why));
        }
    }

    async fn read_feed(&self, relay: &str) {
        let since = {
            let mut feed = self.feed();
            if feed.relay.as_deref() != Some(relay) {
                // Resumed where an earlier run of this engine left this relay's feed: the
                // relay kept storing meanwhile, so the coverage goes on unbroken.
                let saved = self.saved_feed().filter(|s| s.relay == relay);
                feed.relay = Some(relay.to_owned());
                feed.cursor = saved.as_ref().map(|s| s.cursor);
                feed.covered_since_ms = saved.map_or(i64::MAX, |s| s.covered_since_ms);
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
            let mut feed = self.feed();
            if feed.relay.as_deref() != Some(relay) {
                return;
            }
            match since {
                None => {
                    // Bootstrap: from here on the feed covers everything this relay stores.
                    // Then the relay's recent arrivals are read too, so that copies that
                    // reached it before (in flight when the witness changed) still show;
                    // coverage, the proof that a copy was lost, starts only now.
                    feed.covered_since_ms = at;
                    let back = page.cursor.saturating_sub(READ_BACK);
                    feed.cursor = Some(back);
                    since = Some(back);
                    save_feed(&self.inner.db, &mut feed, relay, back, at);
                    continue;
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
            let moved = feed.cursor != Some(page.cursor);
            feed.cursor = Some(page.cursor);
            since = Some(page.cursor);
            if moved && at - feed.saved_at_ms >= SAVE_CURSOR_EVERY_MS {
                save_feed(&self.inner.db, &mut feed, relay, page.cursor, at);
            }
            if !page.more {
                // The time the request was answered bounds what it covered; `at` is just after.
                feed.read_through_ms = asked_at;
                return;
            }
        }
    }

    fn settle(&self, copy: &store::AwaitingCopy, state: OutboxState, why: Option<&str>) {
        let _ = self.inner.db.outbox_settle(copy.id, state, why);
        if !copy.self_copy {
            self.refresh_message_state(copy.message_rowid);
        }
    }

    /// The witness saw the whole time since the TX relay accepted the copy, and not the copy:
    /// that relay dropped it. Re-sent through another relay that may see this key.
    fn resend_lost(&self, copy: &store::AwaitingCopy) {
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
        let _ = self.assigned(Role::Tx, &copy.recipient_fp, &key, Some(&exclude));
        let _ = self.inner.db.outbox_retry(
            copy.id,
            now_ms(),
            &format!("not visible after relay {} accepted it", copy.tx_relay),
        );
        if !copy.self_copy {
            self.refresh_message_state(copy.message_rowid);
        }
        self.inner.wake_outbox.notify_one();
    }
}

/// Saves the feed position, so that a restart resumes it with its coverage unbroken.
fn save_feed(db: &store::Db, feed: &mut Feed, relay: &str, cursor: u64, at: i64) {
    feed.saved_at_ms = at;
    let saved = SavedFeed {
        relay: relay.to_owned(),
        cursor,
        covered_since_ms: feed.covered_since_ms,
    };
    let _ = db.put_meta(
        SAVED_FEED,
        &serde_json::to_string(&saved).expect("serialises"),
    );
}

fn prefix(hash: &str) -> String {
    let h = hash.to_ascii_lowercase();
    h[..FEED_DIGITS.min(h.len())].to_owned()
}
