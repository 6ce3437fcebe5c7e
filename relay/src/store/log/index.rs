//! The log store's index, in memory: rebuilt on open from the segments' index files (or the
//! segments), changed by the writer after each batch's write and by purge.
//!
//! About 200 bytes per packet held (10^7 packets: about 2 GB), against about 3 KB per packet
//! on disk; a relay's reconciliation sketch keeps another 60 or so.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;

use jasper_core::MessageHash;

use super::format::RecordMeta;

/// Where a packet is, and whether it is still live or only remembered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub segment: u32,
    pub meta: RecordMeta,
    /// Expired (or imported as a tombstone): held only so that sync cannot revive it.
    pub dead: bool,
}

pub(super) struct Segment {
    pub file: Arc<File>,
    /// The latest `expires_at` among its records: once that plus the tombstone retention has
    /// passed, nothing in it is needed and the file goes.
    pub max_expires_at: u64,
}

/// A recipient's live packets.
#[derive(Default)]
pub(super) struct Held {
    /// In arrival order (seq, hash).
    pub packets: VecDeque<(u64, MessageHash)>,
    /// Their frames' bytes, for the recipient's quota.
    pub bytes: u64,
}

#[derive(Default)]
pub(super) struct Index {
    pub by_hash: HashMap<MessageHash, Entry>,
    /// Live packets of each recipient.
    pub by_recipient: HashMap<[u8; 32], Held>,
    /// Bytes of every live packet's frame, for the store's cap (`by_seq.len()` counts them).
    pub live_bytes: u64,
    /// Live packets by (expires_at, hash).
    pub by_expiry: BTreeSet<(u64, MessageHash)>,
    /// Live packets by arrival seq, with their expiry.
    pub by_seq: BTreeMap<u64, (MessageHash, u64)>,
    /// Dead entries by the time they are forgotten.
    pub forget: BTreeSet<(u64, MessageHash)>,
    pub segments: BTreeMap<u32, Segment>,
}

impl Index {
    /// Adds a record read back from a segment (or just written to one), as `now` sees it.
    pub fn insert(&mut self, segment: u32, meta: RecordMeta, now: u64, retention: u64) {
        if let Some(s) = self.segments.get_mut(&segment) {
            s.max_expires_at = s.max_expires_at.max(meta.expires_at);
        }
        let forget_at = meta.expires_at.saturating_add(retention);
        if forget_at <= now {
            return;
        }
        let dead = meta.tombstone || meta.expires_at <= now;
        self.by_hash.insert(
            meta.hash,
            Entry {
                segment,
                meta,
                dead,
            },
        );
        if dead {
            self.forget.insert((forget_at, meta.hash));
            return;
        }
        let held = self.by_recipient.entry(meta.recipient_fp).or_default();
        held.packets.push_back((meta.seq, meta.hash));
        held.bytes += u64::from(meta.len);
        self.live_bytes += u64::from(meta.len);
        self.by_expiry.insert((meta.expires_at, meta.hash));
        self.by_seq.insert(meta.seq, (meta.hash, meta.expires_at));
    }

    /// Turns what expired by `now` into tombstones and forgets tombstones past their
    /// retention. Returns how many packets expired.
    pub fn purge(&mut self, now: u64, retention: u64) -> usize {
        let mut expired = 0;
        while let Some(&(at, hash)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            let Some(entry) = self.by_hash.get_mut(&hash) else {
                continue;
            };
            entry.dead = true;
            let meta = entry.meta;
            self.by_seq.remove(&meta.seq);
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(meta.len));
            if let Some(held) = self.by_recipient.get_mut(&meta.recipient_fp) {
                if let Ok(i) = held.packets.binary_search_by_key(&meta.seq, |(s, _)| *s) {
                    held.packets.remove(i);
                    held.bytes = held.bytes.saturating_sub(u64::from(meta.len));
                }
                if held.packets.is_empty() {
                    self.by_recipient.remove(&meta.recipient_fp);
                }
            }
            self.forget.insert((at.saturating_add(retention), hash));
            expired += 1;
        }
        while let Some(&(at, hash)) = self.forget.first() {
            if at > now {
                break;
            }
            self.forget.pop_first();
            self.by_hash.remove(&hash);
        }
        expired
    }

    /// What `recipient` holds and what the store holds, live: (packets, bytes) each.
    pub fn usage(&self, recipient: &[u8; 32]) -> ((u64, u64), (u64, u64)) {
        let held = self
            .by_recipient
            .get(recipient)
            .map_or((0, 0), |h| (h.packets.len() as u64, h.bytes));
        (held, (self.by_seq.len() as u64, self.live_bytes))
    }

    /// Live entry for a hash, if committed (`seq <= durable`) and not expired at `now`.
    pub fn live(
        &self,
        hash: &MessageHash,
        now: u64,
        durable: u64,
    ) -> Option<(Arc<File>, RecordMeta)> {
        let e = self.by_hash.get(hash)?;
        if e.dead || e.meta.expires_at <= now || e.meta.seq > durable {
            return None;
        }
        Some((self.segments.get(&e.segment)?.file.clone(), e.meta))
    }
}
