//! The embedded store: a time-segmented append-only log in `<data dir>/log`, with its index
//! in memory. Used when no Redis is configured.
//!
//! Packets are immutable and expire roughly in arrival order, which is the shape of a log:
//! - **One write per batch.** A put costs the single writer an index lookup, a checksum and
//!   its share of one `pwrite`; the `fdatasync` of batch n runs on another thread while the
//!   writer takes batch n+1 (`writer.rs`). Nothing is answered before it is durable.
//! - **Expiry drops whole files.** A segment is deleted once its latest `expires_at` plus the
//!   tombstone retention has passed; until then its records are also the tombstones that keep
//!   sync from reviving an expired hash (the index marks them dead at expiry, and forgets them
//!   after the retention). A segment kept alive by one long-lived packet costs disk until that
//!   packet's expiry (at most the relay's TTL plus the retention), never correctness.
//! - **The index is rebuilt on open** from each sealed segment's index file, and from the
//!   active segment itself, whose torn tail (a crash mid-write) is cut off (`format.rs`).
//!
//! A data directory of the store before this one (fjall) is migrated on first open
//! (`migrate.rs`), tombstones and arrival counter included.
//!
//! Chosen by measurement over the fjall store (four LSM inserts per packet, an fsync that
//! cannot overlap the next batch): `docs/benchmarks.md`, "The embedded store near the disk's
//! limit".

mod format;
mod index;
mod migrate;
mod writer;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jasper_core::MessageHash;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use self::format::{RecordMeta, SEGMENT_HEADER_LEN};
use self::index::{Index, Segment};
use self::writer::{Active, PreparedPut, Shared, WriteOp, Writer};
use super::{
    MessageStore, NewPacket, PutOutcome, Quotas, RecentHashes, StoreResult, StoredPacket, unix_now,
};
use crate::error::RelayError;

/// A segment is sealed and the next begun once it is this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Entries a range walk collects per hold of the index lock, so that a walk of a million
/// packets never stalls the writer for long.
const WALK_CHUNK: usize = 4096;

/// How the log is laid out (tests make segments small to exercise sealing and deletion).
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub segment_bytes: u64,
    /// What one recipient and the whole store may hold (checked by the writer, in order).
    pub quotas: Quotas,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES,
            quotas: Quotas::UNLIMITED,
        }
    }
}

pub struct LogStore {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<WriteOp>,
    /// Held for the store's life: one process per data directory.
    _lock: File,
}

impl LogStore {
    /// Opens (or creates, or migrates) the store of `data_dir`. `tombstone_retention` is how
    /// long an expired hash is remembered after its expiry.
    pub fn open(data_dir: &Path, tombstone_retention: Duration) -> StoreResult<Self> {
        Self::open_with(data_dir, tombstone_retention, LogOptions::default())
    }

    pub fn open_with(
        data_dir: &Path,
        tombstone_retention: Duration,
        options: LogOptions,
    ) -> StoreResult<Self> {
        let dir = data_dir.join("log");
        let retention = tombstone_retention.as_secs();
        migrate::from_fjall(data_dir, &dir, retention, options.segment_bytes)?;
        std::fs::create_dir_all(&dir).map_err(format::io(&dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(format::io(&lock_path))?;
        lock.try_lock().map_err(|_| {
            RelayError::Storage(format!(
                "{} is in use by another relay process",
                dir.display()
            ))
        })?;
        let (index, active, seq) = recover(&dir, retention)?;
        let shared = Arc::new(Shared {
            dir,
            index: RwLock::new(index),
            durable: AtomicU64::new(seq),
            failed: AtomicBool::new(false),
            retention,
        });
        let writer = Writer {
            shared: shared.clone(),
            active,
            seq,
            segment_bytes: options.segment_bytes,
            quotas: options.quotas,
        }
        .start()?;
        Ok(Self {
            shared,
            writer,
            _lock: lock,
        })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        super::ask_writer(&self.writer, op).await
    }

    fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    fn read(
        &self,
        found: Vec<Option<(Arc<File>, RecordMeta)>>,
    ) -> StoreResult<Vec<Option<StoredPacket>>> {
        found
            .into_iter()
            .map(|f| {
                f.map(|(file, meta)| {
                    format::read_packet(&file, &meta).map(|p| format::stored_packet(p, &meta))
                })
                .transpose()
            })
            .collect()
    }
}

/// Rebuilds the index from the segments; returns it, the segment to append to and the
/// arrival counter.
fn recover(dir: &Path, retention: u64) -> StoreResult<(Index, Active, u64)> {
    let now = unix_now();
    let mut index = Index::default();
    let mut seq = 0u64;
    let mut ids = format::segment_ids(dir)?;
    // A segment created but cut off before its header was synced holds nothing.
    if let Some(&last) = ids.last() {
        let path = format::segment_path(dir, last);
        let len = std::fs::metadata(&path).map_err(format::io(&path))?.len();
        if len < SEGMENT_HEADER_LEN {
            std::fs::remove_file(&path).map_err(format::io(&path))?;
            ids.pop();
        }
    }
    let mut active = None;
    for (k, &id) in ids.iter().enumerate() {
        let last = k + 1 == ids.len();
        let path = format::segment_path(dir, id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(last)
            .open(&path)
            .map_err(format::io(&path))?;
        let file = Arc::new(file);
        index.segments.insert(
            id,
            Segment {
                file: file.clone(),
                max_expires_at: 0,
            },
        );
        let indexed = if last {
            // The last segment is appended to, so any index file of it (left when a newer
            // segment was cut off before its header, above) is stale.
            let idx = format::index_path(dir, id);
            if idx.exists() {
                std::fs::remove_file(&idx).map_err(format::io(&idx))?;
            }
            None
        } else {
            format::read_index(dir, id)
        };
        let (records, end) = match indexed {
            Some(records) => (records, None),
            None => {
                let bytes = std::fs::read(&path).map_err(format::io(&path))?;
                let (base, records, end) = format::scan(&bytes)?;
                seq = seq.max(base);
                if end < bytes.len() as u64 && !last {
                    tracing::error!(
                        path = %path.display(),
                        at = end,
                        "sealed segment damaged; its records after this offset are lost"
                    );
                }
                if !last {
                    format::write_index(dir, id, &records)?;
                }
                if last && end < bytes.len() as u64 {
                    tracing::warn!(
                        path = %path.display(),
                        at = end,
                        dropped = bytes.len() as u64 - end,
                        "cutting a torn write off the end of the log (never acknowledged)"
                    );
                    file.set_len(end).map_err(format::io(&path))?;
                    file.sync_all().map_err(format::io(&path))?;
                }
                (records, Some(end))
            }
        };
        for m in &records {
            seq = seq.max(m.seq);
            index.insert(id, *m, now, retention);
        }
        if last {
            active = Some(Active {
                id,
                file,
                len: end.unwrap_or(SEGMENT_HEADER_LEN),
                records,
            });
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let id = index.segments.keys().next_back().map_or(1, |id| id + 1);
            let file = Arc::new(format::create_segment(dir, id, seq)?);
            index.segments.insert(
                id,
                Segment {
                    file: file.clone(),
                    max_expires_at: 0,
                },
            );
            Active {
                id,
                file,
                len: SEGMENT_HEADER_LEN,
                records: Vec::new(),
            }
        }
    };
    Ok((index, active, seq))
}

#[async_trait]
impl MessageStore for LogStore {
    async fn put(&self, packet: NewPacket) -> StoreResult<PutOutcome> {
        // The frame is built here, on the caller's thread, not on the single writer.
        let frame = format::packet_frame(&packet);
        let prepared = Box::new(PreparedPut { packet, frame });
        self.call(move |tx| WriteOp::Put(prepared, tx)).await
    }

    async fn get(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<Option<StoredPacket>>> {
        let (now, durable) = (unix_now(), self.durable());
        let found = {
            let index = self.shared.index.read();
            hashes.iter().map(|h| index.live(h, now, durable)).collect()
        };
        self.read(found)
    }

    async fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredPacket>> {
        let (now, durable) = (unix_now(), self.durable());
        let found = {
            let index = self.shared.index.read();
            let Some(list) = index.by_recipient.get(&recipient_fp).map(|h| &h.packets) else {
                return Ok(Vec::new());
            };
            let live = |(_, h): &(u64, MessageHash)| index.live(h, now, durable);
            match since {
                Some(since) => {
                    let start = list.partition_point(|(s, _)| *s <= since);
                    list.range(start..)
                        .filter_map(live)
                        .take(limit)
                        .map(Some)
                        .collect::<Vec<_>>()
                }
                None => {
                    let mut newest: Vec<_> = list
                        .iter()
                        .rev()
                        .filter_map(live)
                        .take(limit)
                        .map(Some)
                        .collect();
                    newest.reverse();
                    newest
                }
            }
        };
        Ok(self.read(found)?.into_iter().flatten().collect())
    }

    async fn recent(&self, since: Option<u64>, limit: usize) -> StoreResult<RecentHashes> {
        // Every seq up to `latest` is durable and in the index, so an answer's cursor never
        // skips a packet.
        let latest = self.durable();
        let mut out = RecentHashes {
            latest_seq: latest,
            ..RecentHashes::default()
        };
        let Some(start) = since.and_then(|s| s.checked_add(1)) else {
            return Ok(out);
        };
        let now = unix_now();
        let index = self.shared.index.read();
        for (&seq, &(hash, expires_at)) in index.by_seq.range(start..=latest.max(start)) {
            if seq > latest {
                break;
            }
            if expires_at <= now {
                continue;
            }
            if out.hashes.len() >= limit {
                out.more = true;
                break;
            }
            out.hashes.push((seq, hash));
        }
        Ok(out)
    }

    async fn unknown(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<MessageHash>> {
        let index = self.shared.index.read();
        // Live or tombstone: either way not to be fetched.
        Ok(hashes
            .into_iter()
            .filter(|h| !index.by_hash.contains_key(h))
            .collect())
    }

    async fn live_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<(MessageHash, u64)>> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let from = from.max(unix_now() + 1);
            let durable = shared.durable.load(Ordering::Acquire);
            let mut out = Vec::new();
            if from >= to {
                return out;
            }
            let lowest = MessageHash::from_bytes([0; 32]);
            let mut cursor = std::ops::Bound::Included((from, lowest));
            let end = std::ops::Bound::Excluded((to, lowest));
            while out.len() < limit {
                let index = shared.index.read();
                let mut last = None;
                for &(at, hash) in index.by_expiry.range((cursor, end)).take(WALK_CHUNK) {
                    last = Some((at, hash));
                    let committed = index
                        .by_hash
                        .get(&hash)
                        .is_some_and(|e| e.meta.seq <= durable);
                    if committed {
                        out.push((hash, at));
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                match last {
                    Some(k) => cursor = std::ops::Bound::Excluded(k),
                    None => break,
                }
            }
            out
        })
        .await
        .map_err(|e| RelayError::Storage(format!("scan task failed: {e}")))
    }

    async fn count(&self) -> StoreResult<u64> {
        Ok(self.shared.index.read().by_expiry.len() as u64)
    }

    async fn live_bytes(&self) -> StoreResult<Option<u64>> {
        Ok(Some(self.shared.index.read().live_bytes))
    }

    async fn purge_expired(&self) -> StoreResult<usize> {
        self.call(WriteOp::Purge).await
    }

    async fn close(&self) -> StoreResult<()> {
        self.call(WriteOp::Close).await
    }
}
