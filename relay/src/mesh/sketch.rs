//! The live set's reconciliation sketch (`jasper_core::reconcile`): the first
//! [`SKETCH_SYMBOLS`] coded symbols of every live hash, kept up to date as packets are stored
//! and expire, so that answering `/sync/reconcile` costs a copy, not a pass over the store.
//!
//! Memory: the symbols (44 bytes each, 180 kB) plus an expiry queue of 40 bytes per live
//! packet (40 MB at a million packets), and at most [`MAX_SNAPSHOTS`] snapshots held for
//! peers that ask for more symbols of the same set (180 kB each).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_core::MessageHash;
use jasper_core::reconcile::{CodedSymbol, Sketch};
use parking_lot::Mutex;

/// Symbols kept: enough for about 2,900 differences per reconciliation (1.4 per difference).
pub const SKETCH_SYMBOLS: usize = 4096;
/// Snapshots held at once for follow-up requests; the oldest goes first.
pub const MAX_SNAPSHOTS: usize = 16;
/// How long a snapshot can be continued.
pub const SNAPSHOT_LIFETIME: Duration = Duration::from_secs(30);

struct State {
    sketch: Sketch,
    /// (expires_at, hash) of every item in the sketch, soonest first.
    expiries: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

struct Snapshot {
    id: u64,
    taken: Instant,
    items: i64,
    symbols: Arc<Vec<CodedSymbol>>,
}

/// What a reconciliation answer carries: which snapshot, how many items it holds, and the
/// symbols asked for.
pub struct SketchAnswer {
    pub snapshot: u64,
    pub items: i64,
    pub symbols: Vec<CodedSymbol>,
}

pub struct LiveSketch {
    state: Mutex<State>,
    snapshots: Mutex<VecDeque<Snapshot>>,
}

impl Default for LiveSketch {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                sketch: Sketch::new(SKETCH_SYMBOLS),
                expiries: BinaryHeap::new(),
            }),
            snapshots: Mutex::new(VecDeque::new()),
        }
    }
}

impl LiveSketch {
    /// A sketch of these live packets (hash, expires_at), as the store lists them at start.
    pub fn of(entries: impl IntoIterator<Item = (MessageHash, u64)>) -> Self {
        let sketch = Self::default();
        for (hash, expires_at) in entries {
            sketch.add(&hash, expires_at);
        }
        sketch
    }

    /// A newly stored packet (call once per packet: on `Stored`, never on a duplicate).
    pub fn add(&self, hash: &MessageHash, expires_at: u64) {
        let mut state = self.state.lock();
        state.sketch.add(hash.as_bytes());
        state.expiries.push(Reverse((expires_at, *hash.as_bytes())));
    }

    /// Takes out every packet whose `expires_at` is at or before `now` (the store stops
    /// serving it then). Returns how many went.
    pub fn expire(&self, now: u64) -> usize {
        let mut state = self.state.lock();
        let mut gone = 0;
        while let Some(Reverse((at, _))) = state.expiries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, hash))) = state.expiries.pop() else {
                break;
            };
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

    /// Symbols `from..from + count` of a new snapshot (`snapshot: None`) or of a held one.
    /// `None` when the snapshot is gone (too old, or pushed out by newer ones).
    pub fn answer(&self, snapshot: Option<u64>, from: usize, count: usize) -> Option<SketchAnswer> {
        let end = (from + count).min(SKETCH_SYMBOLS);
        let from = from.min(end);
        let mut snapshots = self.snapshots.lock();
        snapshots.retain(|s| s.taken.elapsed() < SNAPSHOT_LIFETIME);
        let (id, items, symbols) = match snapshot {
            Some(id) => {
                let s = snapshots.iter().find(|s| s.id == id)?;
                (s.id, s.items, s.symbols.clone())
            }
            None => {
                let (items, symbols) = {
                    let state = self.state.lock();
                    (
                        state.sketch.items(),
                        Arc::new(state.sketch.symbols().to_vec()),
                    )
                };
                let id = rand::random::<u64>();
                if snapshots.len() >= MAX_SNAPSHOTS {
                    snapshots.pop_front();
                }
                snapshots.push_back(Snapshot {
                    id,
                    taken: Instant::now(),
                    items,
                    symbols: symbols.clone(),
                });
                (id, items, symbols)
            }
        };
        Some(SketchAnswer {
            snapshot: id,
            items,
            symbols: symbols[from..end].to_vec(),
        })
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
        let first = s.answer(None, 0, 8).unwrap();
        assert_eq!((first.items, first.symbols.len()), (10, 8));
        assert_eq!(s.expire(104), 5);
        assert_eq!(s.items(), 5);
        // The held snapshot still answers for the set it was taken of.
        let more = s.answer(Some(first.snapshot), 8, 8).unwrap();
        assert_eq!(more.items, 10);
        assert_eq!(more.symbols.len(), 8);
        assert!(s.answer(Some(first.snapshot ^ 1), 0, 8).is_none());
        // Past the kept symbols: cut, never a panic.
        assert!(
            s.answer(None, SKETCH_SYMBOLS + 5, 10)
                .unwrap()
                .symbols
                .is_empty()
        );
        for n in 0..10 {
            s.add(&hash(100 + n), 1);
        }
        assert_eq!(s.expire(1), 10);
        // Adding then expiring leaves what was there.
        let mut want = Sketch::new(SKETCH_SYMBOLS);
        for n in 5..10 {
            want.add(hash(n).as_bytes());
        }
        assert_eq!(s.symbols(), want.symbols());
    }

    #[test]
    fn snapshots_are_bounded() {
        let s = LiveSketch::default();
        let first = s.answer(None, 0, 1).unwrap().snapshot;
        for _ in 0..MAX_SNAPSHOTS {
            s.answer(None, 0, 1).unwrap();
        }
        assert!(s.answer(Some(first), 0, 1).is_none());
        assert_eq!(s.snapshots.lock().len(), MAX_SNAPSHOTS);
    }
}
