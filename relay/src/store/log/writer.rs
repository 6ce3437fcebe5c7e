//! The log store's two threads: the writer, which decides and appends whole batches, and the
//! syncer, which makes them durable and answers the puts.
//!
//! The writer takes everything queued (at most [`MAX_BATCH`] puts), decides each against the
//! index, appends the new records with one `pwrite`, adds them to the index and hands the
//! batch's answers to the syncer; then it takes the next batch while the syncer's
//! `fdatasync` runs. The syncer takes every batch handed over since its last sync, syncs once
//! and answers them all. So batch n+1 is written while batch n is being synced, and no put is
//! answered before a sync that started after its write.
//!
//! Readers see a record only once it is durable (`seq <= durable`): a packet served, pushed to
//! a peer or counted in a cursor is never one a crash could take back, and a seq is never
//! handed out twice. A duplicate of a packet not yet durable waits for the same sync as the
//! batch it arrives in.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use jasper_core::MessageHash;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use super::format::{self, RecordMeta, SEGMENT_HEADER_LEN};
use super::index::{Index, Segment};
use crate::error::RelayError;
use crate::store::{NewPacket, PutOutcome, Quotas, StoreResult, unix_now};

/// Most puts folded into one batch; bounds the latency a batch adds.
pub(super) const MAX_BATCH: usize = 1024;

/// What the store's handle, the writer and the syncer share.
pub(super) struct Shared {
    pub dir: PathBuf,
    pub index: RwLock<Index>,
    /// The highest seq that is durable; readers see nothing above it.
    pub durable: AtomicU64,
    /// A write or sync failed: what is on disk is unknown, so no more puts are taken.
    pub failed: AtomicBool,
    pub retention: u64,
}

/// A put prepared by the caller: the packet and its frame (seq and checksum still blank).
pub(super) struct PreparedPut {
    pub packet: NewPacket,
    pub frame: Vec<u8>,
}

pub(super) type PutReply = oneshot::Sender<StoreResult<PutOutcome>>;

pub(super) enum WriteOp {
    Put(Box<PreparedPut>, PutReply),
    Purge(oneshot::Sender<StoreResult<usize>>),
    Close(oneshot::Sender<StoreResult<()>>),
}

/// The segment being appended to.
pub(super) struct Active {
    pub id: u32,
    pub file: Arc<std::fs::File>,
    pub len: u64,
    /// Its records so far, for its index file when it is sealed.
    pub records: Vec<RecordMeta>,
}

/// A batch's answers, to be sent once `file` is synced.
struct SyncJob {
    file: Arc<std::fs::File>,
    seq: u64,
    replies: Vec<(PutReply, StoreResult<PutOutcome>)>,
    closed: Option<oneshot::Sender<StoreResult<()>>>,
}

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub active: Active,
    pub seq: u64,
    pub segment_bytes: u64,
    pub quotas: Quotas,
}

type PendingPut = (Box<PreparedPut>, PutReply);

fn broken() -> RelayError {
    RelayError::Storage("the store's disk failed; restart the relay".into())
}

impl Writer {
    /// Starts the writer and the syncer threads.
    pub fn start(self) -> StoreResult<mpsc::UnboundedSender<WriteOp>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let spawn_err = |e| RelayError::Storage(format!("cannot start a store thread: {e}"));
        std::thread::Builder::new()
            .name("jasper-log-sync".into())
            .spawn(move || syncer(shared, sync_rx))
            .map_err(spawn_err)?;
        std::thread::Builder::new()
            .name("jasper-log-writer".into())
            .spawn(move || self.run(rx, sync_tx))
            .map_err(spawn_err)?;
        Ok(tx)
    }

    fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<WriteOp>,
        sync: std::sync::mpsc::Sender<SyncJob>,
    ) {
        let mut puts: Vec<PendingPut> = Vec::with_capacity(MAX_BATCH);
        while let Some(op) = rx.blocking_recv() {
            let mut next = Some(op);
            while let Some(op) = next.take() {
                match op {
                    WriteOp::Put(p, tx) => puts.push((p, tx)),
                    WriteOp::Purge(tx) => {
                        self.commit(&mut puts, &sync);
                        let _ = tx.send(self.purge());
                    }
                    WriteOp::Close(tx) => {
                        self.commit(&mut puts, &sync);
                        let _ = sync.send(SyncJob {
                            file: self.active.file.clone(),
                            seq: self.seq,
                            replies: Vec::new(),
                            closed: Some(tx),
                        });
                        return;
                    }
                }
                if puts.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut puts, &sync);
        }
    }

    fn commit(&mut self, puts: &mut Vec<PendingPut>, sync: &std::sync::mpsc::Sender<SyncJob>) {
        if puts.is_empty() {
            return;
        }
        if self.shared.failed.load(Ordering::Acquire) {
            for (_, tx) in puts.drain(..) {
                let _ = tx.send(Err(broken()));
            }
            return;
        }
        let now = unix_now();
        let durable = self.shared.durable.load(Ordering::Acquire);
        let seq_before = self.seq;
        let mut buf = Vec::with_capacity(puts.iter().map(|(p, _)| p.frame.len()).sum());
        let mut written = Vec::new();
        // Outcome, and whether it may only be told once this batch is synced.
        let mut outcomes: Vec<(StoreResult<PutOutcome>, bool)> = Vec::with_capacity(puts.len());
        {
            let index = self.shared.index.read();
            let mut in_batch: HashMap<MessageHash, usize> = HashMap::new();
            // What this batch adds before the index has it, per recipient and in all.
            let mut added: HashMap<[u8; 32], (u64, u64)> = HashMap::new();
            let mut added_all = (0u64, 0u64);
            for i in 0..puts.len() {
                let p = &puts[i].0.packet;
                let (hash, expires_at, recipient_fp) = (p.hash, p.expires_at, p.recipient_fp);
                let same = |recipient: &str, signature: &str| {
                    if recipient == p.recipient && signature == p.signature {
                        PutOutcome::Duplicate
                    } else {
                        PutOutcome::Conflict
                    }
                };
                let outcome = if p.expires_at <= now {
                    (Ok(PutOutcome::Expired), false)
                } else if let Some(&j) = in_batch.get(&p.hash) {
                    let first = &puts[j].0.packet;
                    (Ok(same(&first.recipient, &first.signature)), true)
                } else if let Some(e) = index.by_hash.get(&p.hash) {
                    if e.dead || e.meta.expires_at <= now {
                        (Ok(PutOutcome::Expired), false)
                    } else {
                        let held = index
                            .segments
                            .get(&e.segment)
                            .ok_or_else(|| {
                                RelayError::Storage("record in a missing segment".into())
                            })
                            .and_then(|s| format::read_packet(&s.file, &e.meta));
                        match held {
                            Ok(h) => {
                                let o = same(&h.recipient, &h.signature);
                                (Ok(o), o == PutOutcome::Duplicate && e.meta.seq > durable)
                            }
                            Err(e) => (Err(e), false),
                        }
                    }
                } else if let Some(full) = {
                    let ((rp, rb), (sp, sb)) = index.usage(&recipient_fp);
                    let (ap, ab) = added.get(&recipient_fp).copied().unwrap_or((0, 0));
                    self.quotas.refuse(
                        (rp + ap, rb + ab),
                        (sp + added_all.0, sb + added_all.1),
                        puts[i].0.frame.len() as u64,
                    )
                } {
                    (Ok(full), false)
                } else {
                    let len = puts[i].0.frame.len() as u64;
                    let a = added.entry(recipient_fp).or_default();
                    *a = (a.0 + 1, a.1 + len);
                    added_all = (added_all.0 + 1, added_all.1 + len);
                    self.seq += 1;
                    let seq = self.seq;
                    let frame = &mut puts[i].0.frame;
                    format::seal_frame(frame, seq);
                    written.push(RecordMeta {
                        tombstone: false,
                        seq,
                        expires_at,
                        hash,
                        recipient_fp,
                        offset: self.active.len + buf.len() as u64,
                        len: frame.len() as u32,
                    });
                    buf.extend_from_slice(frame);
                    in_batch.insert(hash, i);
                    (Ok(PutOutcome::Stored { seq }), true)
                };
                outcomes.push(outcome);
            }
        }
        if !buf.is_empty() {
            if let Err(e) = self.active.file.write_all_at(&buf, self.active.len) {
                // A partial write may be on disk: nothing more is appended after it.
                tracing::error!(error = %e, "store write failed; refusing further puts");
                self.shared.failed.store(true, Ordering::Release);
                self.seq = seq_before;
                for ((_, tx), (outcome, after_sync)) in puts.drain(..).zip(outcomes) {
                    let _ = tx.send(if after_sync { Err(broken()) } else { outcome });
                }
                return;
            }
            self.active.len += buf.len() as u64;
            let mut index = self.shared.index.write();
            for m in &written {
                index.insert(self.active.id, *m, now, self.shared.retention);
            }
            drop(index);
            self.active.records.extend(written);
        }
        let mut replies = Vec::new();
        for ((_, tx), (outcome, after_sync)) in puts.drain(..).zip(outcomes) {
            if after_sync {
                replies.push((tx, outcome));
            } else {
                let _ = tx.send(outcome);
            }
        }
        if !replies.is_empty() {
            let _ = sync.send(SyncJob {
                file: self.active.file.clone(),
                seq: self.seq,
                replies,
                closed: None,
            });
        }
        if self.active.len >= self.segment_bytes
            && let Err(e) = self.rotate()
        {
            tracing::error!(error = %e, "cannot start a new segment; refusing further puts");
            self.shared.failed.store(true, Ordering::Release);
        }
    }

    /// Seals the active segment (synced, then its index file) and starts the next.
    fn rotate(&mut self) -> StoreResult<()> {
        let dir = self.shared.dir.clone();
        self.active
            .file
            .sync_data()
            .map_err(format::io(&format::segment_path(&dir, self.active.id)))?;
        format::write_index(&dir, self.active.id, &self.active.records)?;
        let id = self.active.id + 1;
        let file = Arc::new(format::create_segment(&dir, id, self.seq)?);
        self.shared.index.write().segments.insert(
            id,
            Segment {
                file: file.clone(),
                max_expires_at: 0,
            },
        );
        self.active = Active {
            id,
            file,
            len: SEGMENT_HEADER_LEN,
            records: Vec::new(),
        };
        Ok(())
    }

    /// Expires what is due and deletes the segments nothing in them is needed of any more.
    fn purge(&mut self) -> StoreResult<usize> {
        let now = unix_now();
        let retention = self.shared.retention;
        let (expired, doomed) = {
            let mut index = self.shared.index.write();
            let expired = index.purge(now, retention);
            let doomed: Vec<u32> = index
                .segments
                .iter()
                .filter(|(id, s)| {
                    **id != self.active.id && s.max_expires_at.saturating_add(retention) <= now
                })
                .map(|(id, _)| *id)
                .collect();
            for id in &doomed {
                index.segments.remove(id);
            }
            (expired, doomed)
        };
        for id in &doomed {
            for path in [
                format::index_path(&self.shared.dir, *id),
                format::segment_path(&self.shared.dir, *id),
            ] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot delete"),
                }
            }
        }
        if !doomed.is_empty() {
            tracing::debug!(segments = doomed.len(), "deleted expired segments");
            format::sync_dir(&self.shared.dir)?;
        }
        Ok(expired)
    }
}

/// Syncs whatever batches were handed over since the last sync, with one `fdatasync` per
/// file, then publishes the durable seq and answers them.
fn syncer(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<SyncJob>) {
    while let Ok(job) = rx.recv() {
        let mut jobs = vec![job];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let mut synced: Vec<&Arc<std::fs::File>> = Vec::new();
        let mut result = Ok(());
        for j in &jobs {
            if synced.iter().any(|f| Arc::ptr_eq(f, &j.file)) {
                continue;
            }
            if let Err(e) = j.file.sync_data() {
                result = Err(e);
                break;
            }
            synced.push(&j.file);
        }
        match result {
            Ok(()) => {
                let seq = jobs.iter().map(|j| j.seq).max().unwrap_or(0);
                shared.durable.fetch_max(seq, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(error = %e, "store sync failed; refusing further puts");
                shared.failed.store(true, Ordering::Release);
            }
        }
        let ok = !shared.failed.load(Ordering::Acquire);
        for j in jobs {
            for (tx, outcome) in j.replies {
                let _ = tx.send(if ok { outcome } else { Err(broken()) });
            }
            if let Some(closed) = j.closed {
                let _ = closed.send(if ok { Ok(()) } else { Err(broken()) });
            }
        }
    }
}
