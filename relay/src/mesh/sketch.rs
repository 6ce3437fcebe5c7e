//! The live set's reconciliation sketch (`jasper_core::reconcile`): the first
//! [`SKETCH_SYMBOLS`] coded symbols of every live hash, kept up to date as packets are stored
//! and expire, so that answering `/sync/reconcile` costs a copy, not a pass over the store.
//!
//! Adding is idempotent (a packet already in, or already expired, is not added again), so the
//! same packet may be reported by the relay's own puts, by the feed of a store other processes
//! share, and by a reload from the store, in any order.
//!
//! Memory: the symbols (44 bytes each, 180 kB) plus an ordered set of (expires_at, hash), about
//! 60 bytes per live packet (60 MB at a million packets, 600 MB at ten million), and at most
//! [`MAX_SNAPSHOTS`] snapshots held for peers that ask for more symbols of the same set
//! (180 kB each).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_core::MessageHash;
use jasper_core::reconcile::{CodedSymbol, Sketch};
use parking_lot::Mutex;

use crate::store::{MessageStore, StoreResult};

/// Symbols kept: enough for about 2,900 differences per reconciliation (1.4 per difference).
pub const SKETCH_SYMBOLS: usize = 4096;
/// Snapshots held at once for follow-up requests; the oldest goes first.
pub const MAX_SNAPSHOTS: usize = 16;
/// How long a snapshot can be continued.
pub const SNAPSHOT_LIFETIME: Duration = Duration::from_secs(30);

struct State {
    sketch: Sketch,
    /// (expires_at, hash) of every item in the sketch, soonest first.
    items: BTreeSet<(u64, [u8; 32])>,
    /// The `now` of the last [`LiveSketch::expire`]: nothing expiring by then is added.
    expired_upto: u64,
}

struct Snapshot {
    id: u64,
    taken: Instant,
    /// The `expires_at` range it was taken of; `None` for the whole live set.
    range: Option<SetSlice>,
    items: i64,
    symbols: Arc<Vec<CodedSymbol>>,
}

/// Packets whose `expires_at` is in `from..to` and whose hash starts with `prefix`: the part
/// of the set a ranged reconciliation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSlice {
    pub from: u64,
    pub to: u64,
    pub prefix: HashPrefix,
}

impl SetSlice {
    pub fn contains(&self, hash: &MessageHash, expires_at: u64) -> bool {
        (self.from..self.to).contains(&expires_at) && self.prefix.matches(hash)
    }
}

/// The first `len` hex digits (0 to [`HashPrefix::MAX_DIGITS`]) of a hash, as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashPrefix {
    pub value: u64,
    pub len: u8,
}

impl HashPrefix {
    pub const MAX_DIGITS: u8 = 16;

    /// From 1 to 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let len = u8::try_from(text.len()).ok()?;
        if !(1..=Self::MAX_DIGITS).contains(&len) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            value: u64::from_str_radix(text, 16).ok()?,
            len,
        })
    }

    /// The digits, empty for the prefix of every hash.
    pub fn to_hex(self) -> String {
        if self.len == 0 {
            return String::new();
        }
        format!("{:0width$x}", self.value, width = self.len as usize)
    }

    pub fn matches(self, hash: &MessageHash) -> bool {
        if self.len == 0 {
            return true;
        }
        let head = u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        head >> (64 - 4 * u32::from(self.len)) == self.value
    }

    /// The 16 prefixes one digit longer; `None` at the longest.
    pub fn children(self) -> Option<impl Iterator<Item = HashPrefix>> {
        (self.len < Self::MAX_DIGITS).then(|| {
            (0..16).map(move |d| HashPrefix {
                value: self.value * 16 + d,
                len: self.len + 1,
            })
        })
    }
}

/// What a reconciliation answer carries: which snapshot, how many items it holds, and the
/// symbols asked for.
pub struct SketchAnswer {
    pub snapshot: u64,
    pub items: i64,
    pub symbols: Vec<CodedSymbol>,
}

/// Why a follow-up request cannot be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotMiss {
    /// Too old, or pushed out by newer ones.
    Gone,
    /// It was taken of another range than the request names.
    OtherRange,
}

pub struct LiveSketch {
    state: Mutex<State>,
    snapshots: Mutex<VecDeque<Snapshot>>,
    /// Sketches of ranges are computed from the store on demand, one at a time, so that
    /// callers cannot make the relay build many at once.
    pub ranged: tokio::sync::Semaphore,
}

impl Default for LiveSketch {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                sketch: Sketch::new(SKETCH_SYMBOLS),
                items: BTreeSet::new(),
                expired_upto: 0,
            }),
            snapshots: Mutex::new(VecDeque::new()),
            ranged: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The [`SKETCH_SYMBOLS`] symbols of those of these entries in `slice`: a sketch of a part of
/// the store.
pub fn sketch_of(entries: &[(MessageHash, u64)], slice: SetSlice) -> (i64, Vec<CodedSymbol>) {
    let mut sketch = Sketch::new(SKETCH_SYMBOLS);
    for (hash, at) in entries {
        if slice.contains(hash, *at) {
            sketch.add(hash.as_bytes());
        }
    }
    (sketch.items(), sketch.symbols().to_vec())
}

impl LiveSketch {
    /// A sketch of these live packets (hash, expires_at).
    pub fn of(entries: impl IntoIterator<Item = (MessageHash, u64)>) -> Self {
        let sketch = Self::default();
        for (hash, expires_at) in entries {
            sketch.add(&hash, expires_at);
        }
        sketch
    }

    /// A sketch of everything live in the store, read in pages of the expiry index so that a
    /// store of millions is never listed into memory at once.
    pub async fn load(store: &dyn MessageStore) -> StoreResult<Self> {
        Self::load_paged(store, LOAD_PAGE).await
    }

    /// [`LiveSketch::load`] with pages of `page` packets.
    pub async fn load_paged(store: &dyn MessageStore, page_len: usize) -> StoreResult<Self> {
        let sketch = Self::default();
        sketch.add_from(store, page_len).await?;
        Ok(sketch)
    }

    /// Adds every live packet of the store that the sketch lacks (after a gap in a shared
    /// store's feed). Returns how many were added.
    pub async fn catch_up(&self, store: &dyn MessageStore) -> StoreResult<usize> {
        self.add_from(store, LOAD_PAGE).await
    }

    async fn add_from(&self, store: &dyn MessageStore, page_len: usize) -> StoreResult<usize> {
        let mut added = 0;
        let mut add = |entries: &[(MessageHash, u64)]| {
            added += entries.iter().filter(|(h, at)| self.add(h, *at)).count();
        };
        let mut from = 0u64;
        loop {
            let page = store.live_range(from, u64::MAX, page_len).await?;
            let full = page.len() >= page_len;
            let Some(&(_, last)) = page.last() else { break };
            if !full {
                add(&page);
                break;
            }
            // The page may end inside the packets of its last second: those are read whole
            // with the next one.
            let (before, _) = page.split_at(page.partition_point(|(_, at)| *at < last));
            if before.is_empty() {
                add(&store.live_range(last, last + 1, usize::MAX).await?);
                from = last + 1;
            } else {
                add(before);
                from = last;
            }
        }
        Ok(added)
    }

    /// A stored packet. Returns whether it was new to the sketch (not already in, nor expired
    /// by the last [`LiveSketch::expire`]).
    pub fn add(&self, hash: &MessageHash, expires_at: u64) -> bool {
        let mut state = self.state.lock();
        if expires_at <= state.expired_upto || !state.items.insert((expires_at, *hash.as_bytes())) {
            return false;
        }
        state.sketch.add(hash.as_bytes());
        true
    }

    /// Takes out every packet whose `expires_at` is at or before `now` (the store stops
    /// serving it then). Returns how many went.
    pub fn expire(&self, now: u64) -> usize {
        let mut state = self.state.lock();
        state.expired_upto = state.expired_upto.max(now);
        let mut gone = 0;
        while let Some(&(at, hash)) = state.items.first() {
            if at > now {
                break;
            }
            state.items.pop_first();
            state.sketch.remove(&hash);
            gone += 1;
        }
        gone
    }

    /// Items in the sketch.
    pub fn items(&self) -> i64 {
        self.state.lock().sketch.items()
    }

    /// A copy of the whole sketch, for reconciling with a peer.
    pub fn symbols(&self) -> Vec<CodedSymbol> {
        self.state.lock().sketch.symbols().to_vec()
    }

    /// Symbols `from..from + count` of a new snapshot of the whole live set.
    pub fn answer(&self, from: usize, count: usize) -> SketchAnswer {
        let (items, symbols) = {
            let state = self.state.lock();
            (state.sketch.items(), state.sketch.symbols().to_vec())
        };
        self.keep(None, items, symbols, from, count)
    }

    /// Holds symbols computed for `range` (or the whole set) as a new snapshot, and answers
    /// `from..from + count` of them.
    pub fn keep(
        &self,
        range: Option<SetSlice>,
        items: i64,
        symbols: Vec<CodedSymbol>,
        from: usize,
        count: usize,
    ) -> SketchAnswer {
        let symbols = Arc::new(symbols);
        let id = rand::random::<u64>();
        let mut snapshots = self.snapshots.lock();
        snapshots.retain(|s| s.taken.elapsed() < SNAPSHOT_LIFETIME);
        if snapshots.len() >= MAX_SNAPSHOTS {
            snapshots.pop_front();
        }
        snapshots.push_back(Snapshot {
            id,
            taken: Instant::now(),
            range,
            items,
            symbols: symbols.clone(),
        });
        cut(id, items, &symbols, from, count)
    }

    /// Symbols `from..from + count` of a held snapshot, which must be of `range`.
    pub fn continued(
        &self,
        id: u64,
        range: Option<SetSlice>,
        from: usize,
        count: usize,
    ) -> Result<SketchAnswer, SnapshotMiss> {
        let mut snapshots = self.snapshots.lock();
        snapshots.retain(|s| s.taken.elapsed() < SNAPSHOT_LIFETIME);
        let s = snapshots
            .iter()
            .find(|s| s.id == id)
            .ok_or(SnapshotMiss::Gone)?;
        if s.range != range {
            return Err(SnapshotMiss::OtherRange);
        }
        Ok(cut(s.id, s.items, &s.symbols, from, count))
    }
}

/// Packets read per page when the sketch is built at start.
const LOAD_PAGE: usize = 100_000;

fn cut(id: u64, items: i64, symbols: &[CodedSymbol], from: usize, count: usize) -> SketchAnswer {
    let end = from.saturating_add(count).min(symbols.len());
    let from = from.min(end);
    SketchAnswer {
        snapshot: id,
        items,
        symbols: symbols[from..end].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> MessageHash {
        MessageHash::of_message(&format!("packet {n}"))
    }

    #[test]
    fn expiry_takes_items_out_and_snapshots_stay_as_taken() {
        let s = LiveSketch::of((0..10).map(|n| (hash(n), 100 + n)));
        assert_eq!(s.items(), 10);
        let first = s.answer(0, 8);
        assert_eq!((first.items, first.symbols.len()), (10, 8));
        assert_eq!(s.expire(104), 5);
        assert_eq!(s.items(), 5);
        // The held snapshot still answers for the set it was taken of.
        let more = s.continued(first.snapshot, None, 8, 8).unwrap();
        assert_eq!(more.items, 10);
        assert_eq!(more.symbols.len(), 8);
        assert_eq!(
            s.continued(first.snapshot ^ 1, None, 0, 8).err(),
            Some(SnapshotMiss::Gone)
        );
        let range = Some(SetSlice {
            from: 0,
            to: 9,
            prefix: HashPrefix::default(),
        });
        assert_eq!(
            s.continued(first.snapshot, range, 0, 8).err(),
            Some(SnapshotMiss::OtherRange)
        );
        // Past the kept symbols: cut, never a panic.
        assert!(s.answer(SKETCH_SYMBOLS + 5, 10).symbols.is_empty());
        // Adding twice, or what has expired, changes nothing; adding then expiring leaves
        // what was there.
        assert!(!s.add(&hash(3), 103), "expired");
        assert!(!s.add(&hash(7), 107), "already in");
        for n in 0..10 {
            assert!(s.add(&hash(100 + n), 105));
        }
        assert_eq!(s.expire(105), 11);
        let mut want = Sketch::new(SKETCH_SYMBOLS);
        for n in 6..10 {
            want.add(hash(n).as_bytes());
        }
        assert_eq!(s.symbols(), want.symbols());
    }

    #[test]
    fn prefixes_match_the_leading_hex_digits() {
        let h = hash(7);
        let hex = h.to_hex();
        assert!(HashPrefix::default().matches(&h));
        for len in 1..=16 {
            let p = HashPrefix::parse(&hex[..len]).unwrap();
            assert_eq!(p.to_hex(), hex[..len]);
            assert!(p.matches(&h), "{len}");
            let children: Vec<_> = p.children().into_iter().flatten().collect();
            assert_eq!(children.len(), if len == 16 { 0 } else { 16 });
            if len < 16 {
                assert_eq!(children.iter().filter(|c| c.matches(&h)).count(), 1);
            }
        }
        let flipped = format!(
            "{:x}",
            (u8::from_str_radix(&hex[..1], 16).unwrap() + 1) % 16
        );
        assert!(!HashPrefix::parse(&flipped).unwrap().matches(&h));
        for bad in ["", "xyz", "00000000000000000"] {
            assert_eq!(HashPrefix::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn snapshots_are_bounded() {
        let s = LiveSketch::default();
        let first = s.answer(0, 1).snapshot;
        for _ in 0..MAX_SNAPSHOTS {
            s.answer(0, 1);
        }
        assert_eq!(
            s.continued(first, None, 0, 1).err(),
            Some(SnapshotMiss::Gone)
        );
        assert_eq!(s.snapshots.lock().len(), MAX_SNAPSHOTS);
    }
}
