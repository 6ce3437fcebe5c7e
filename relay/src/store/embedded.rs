//! The embedded store: `fjall` (a log-structured key-value store) in the relay's data
//! directory, used when no Redis is configured.
//!
//! All writes go through one writer thread that commits whatever has queued up as one batch
//! with an fsync (group commit): a `/send` is acknowledged only after its batch is on disk,
//! yet a busy relay pays one fsync per batch, not per message. The single writer also makes
//! "check then insert" atomic without locks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use futures::FutureExt;
use futures::future::BoxFuture;
use jasper_core::MessageHash;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{MessageStore, NewPacket, PutOutcome, StoreResult, StoredPacket, unix_now};
use crate::error::RelayError;

/// Most puts folded into one commit; bounds the latency a single batch adds.
const MAX_BATCH: usize = 1024;
const SEQ_KEY: &[u8] = b"seq";

/// The value under a hash in `messages`.
#[derive(Deserialize)]
struct Record {
    recipient: String,
    message: String,
    signature: String,
    expires_at: u64,
    seq: u64,
}

/// [`Record`] as written: the same JSON, serialised from the queued packet without copying it.
#[derive(Serialize)]
struct RecordRef<'a> {
    recipient: &'a str,
    message: &'a str,
    signature: &'a str,
    expires_at: u64,
    seq: u64,
}

#[derive(Clone)]
struct Tables {
    db: Database,
    /// hash -> Record (JSON)
    messages: Keyspace,
    /// recipient fingerprint ‖ seq (BE) -> hash
    by_recipient: Keyspace,
    /// expires_at (BE) ‖ hash -> recipient fingerprint ‖ seq (BE)
    by_expiry: Keyspace,
    /// hash -> expires_at (BE): every hash ever stored, until its tombstone is forgotten
    seen: Keyspace,
    /// forget_at (BE) ‖ hash -> ()
    seen_expiry: Keyspace,
    meta: Keyspace,
}

enum WriteOp {
    Put(NewPacket, oneshot::Sender<StoreResult<PutOutcome>>),
    Purge(oneshot::Sender<StoreResult<usize>>),
    Close(oneshot::Sender<StoreResult<()>>),
}

pub struct EmbeddedStore {
    tables: Tables,
    writer: mpsc::UnboundedSender<WriteOp>,
    live: Arc<AtomicU64>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. `tombstone_retention` is how long an expired
    /// hash is remembered after its expiry.
    pub fn open(dir: &Path, tombstone_retention: Duration) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RelayError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let db = Database::builder(dir).open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let tables = Tables {
            messages: ks("messages")?,
            by_recipient: ks("by_recipient")?,
            by_expiry: ks("by_expiry")?,
            seen: ks("seen")?,
            seen_expiry: ks("seen_expiry")?,
            meta: ks("meta")?,
            db,
        };
        let seq = match tables.meta.get(SEQ_KEY)? {
            Some(v) => u64_from(&v),
            None => 0,
        };
        let now = unix_now();
        let mut live = 0u64;
        for item in tables
            .by_expiry
            .range(expiry_key(now + 1, &[0u8; 32]).to_vec()..)
        {
            item.key()?;
            live += 1;
        }
        let live = Arc::new(AtomicU64::new(live));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            tables: tables.clone(),
            seq,
            retention: tombstone_retention.as_secs(),
            live: live.clone(),
        };
        std::thread::Builder::new()
            .name("jasper-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| RelayError::Storage(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            tables,
            writer: tx,
            live,
        })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| RelayError::Storage("store is closed".into()))?;
        rx.await
            .map_err(|_| RelayError::Storage("store writer stopped".into()))?
    }

    fn read_record(&self, hash: &MessageHash, now: u64) -> StoreResult<Option<StoredPacket>> {
        let Some(bytes) = self.tables.messages.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| RelayError::Storage(format!("corrupt record {hash}: {e}")))?;
        if record.expires_at <= now {
            return Ok(None);
        }
        Ok(Some(StoredPacket {
            recipient: record.recipient,
            message: record.message,
            hash: *hash,
            signature: record.signature,
            expires_at: record.expires_at,
            seq: record.seq,
        }))
    }

    fn by_recipient_blocking(
        &self,
        fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredPacket>> {
        let now = unix_now();
        let mut hashes = Vec::new();
        match since {
            Some(since) => {
                let start = recipient_key(&fp, since.saturating_add(1));
                let end = recipient_key(&fp, u64::MAX);
                for item in self
                    .tables
                    .by_recipient
                    .range(start.to_vec()..=end.to_vec())
                {
                    let value = item.value()?;
                    hashes.push(hash_from(&value)?);
                    if hashes.len() >= limit {
                        break;
                    }
                }
            }
            None => {
                for item in self.tables.by_recipient.prefix(fp).rev() {
                    let value = item.value()?;
                    hashes.push(hash_from(&value)?);
                    if hashes.len() >= limit {
                        break;
                    }
                }
                hashes.reverse();
            }
        }
        let mut out = Vec::with_capacity(hashes.len());
        for h in &hashes {
            if let Some(p) = self.read_record(h, now)? {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl MessageStore for EmbeddedStore {
    fn put(&self, packet: NewPacket) -> BoxFuture<'_, StoreResult<PutOutcome>> {
        self.call(|tx| WriteOp::Put(packet, tx)).boxed()
    }

    fn get(
        &self,
        hashes: Vec<MessageHash>,
    ) -> BoxFuture<'_, StoreResult<Vec<Option<StoredPacket>>>> {
        async move {
            let now = unix_now();
            hashes.iter().map(|h| self.read_record(h, now)).collect()
        }
        .boxed()
    }

    fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredPacket>>> {
        async move { self.by_recipient_blocking(recipient_fp, since, limit) }.boxed()
    }

    fn unknown(&self, hashes: Vec<MessageHash>) -> BoxFuture<'_, StoreResult<Vec<MessageHash>>> {
        async move {
            let mut out = Vec::new();
            for h in hashes {
                if !self.tables.seen.contains_key(h.as_bytes())? {
                    out.push(h);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn live_hashes(&self) -> BoxFuture<'_, StoreResult<Vec<MessageHash>>> {
        let tables = self.tables.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let now = unix_now();
                let mut out = Vec::new();
                for item in tables
                    .by_expiry
                    .range(expiry_key(now + 1, &[0u8; 32]).to_vec()..)
                {
                    let key = item.key()?;
                    out.push(hash_from(&key[8..])?);
                }
                Ok(out)
            })
            .await
            .map_err(|e| RelayError::Storage(format!("scan task failed: {e}")))?
        }
        .boxed()
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move { Ok(self.live.load(Ordering::Relaxed)) }.boxed()
    }

    fn purge_expired(&self) -> BoxFuture<'_, StoreResult<usize>> {
        self.call(WriteOp::Purge).boxed()
    }

    fn close(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.call(WriteOp::Close).boxed()
    }
}

struct Writer {
    tables: Tables,
    seq: u64,
    retention: u64,
    live: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        let mut puts = Vec::with_capacity(MAX_BATCH);
        while let Some(op) = rx.blocking_recv() {
            let mut next = Some(op);
            // Fold everything already queued into this batch.
            while let Some(op) = next.take() {
                match op {
                    WriteOp::Put(p, tx) => puts.push((p, tx)),
                    WriteOp::Purge(tx) => {
                        self.commit_puts(&mut puts);
                        let _ = tx.send(self.purge());
                    }
                    WriteOp::Close(tx) => {
                        self.commit_puts(&mut puts);
                        let r = self
                            .tables
                            .db
                            .persist(PersistMode::SyncAll)
                            .map_err(RelayError::from);
                        let _ = tx.send(r);
                        return;
                    }
                }
                if puts.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_puts(&mut puts);
        }
    }

    fn commit_puts(
        &mut self,
        puts: &mut Vec<(NewPacket, oneshot::Sender<StoreResult<PutOutcome>>)>,
    ) {
        if puts.is_empty() {
            return;
        }
        let now = unix_now();
        let mut batch = self
            .tables
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        // Packets stored by this batch so far: (recipient, signature) by hash, borrowed.
        let mut in_batch: HashMap<MessageHash, (&str, &str)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(puts.len());
        let seq_before = self.seq;
        let mut stored = 0u64;
        for (p, _) in puts.iter() {
            let outcome = match self.decide(p, now, &in_batch) {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => {
                    self.seq += 1;
                    let seq = self.seq;
                    let record = RecordRef {
                        recipient: &p.recipient,
                        message: &p.message,
                        signature: &p.signature,
                        expires_at: p.expires_at,
                        seq,
                    };
                    let h = p.hash.as_bytes();
                    let value = serde_json::to_vec(&record).expect("record serialises");
                    batch.insert(&self.tables.messages, h.to_vec(), value);
                    batch.insert(
                        &self.tables.by_recipient,
                        recipient_key(&p.recipient_fp, seq).to_vec(),
                        h.to_vec(),
                    );
                    let mut fp_seq = p.recipient_fp.to_vec();
                    fp_seq.extend_from_slice(&seq.to_be_bytes());
                    batch.insert(
                        &self.tables.by_expiry,
                        expiry_key(p.expires_at, h).to_vec(),
                        fp_seq,
                    );
                    batch.insert(
                        &self.tables.seen,
                        h.to_vec(),
                        p.expires_at.to_be_bytes().to_vec(),
                    );
                    let forget_at = p.expires_at.saturating_add(self.retention);
                    batch.insert(
                        &self.tables.seen_expiry,
                        expiry_key(forget_at, h).to_vec(),
                        Vec::new(),
                    );
                    in_batch.insert(p.hash, (&p.recipient, &p.signature));
                    stored += 1;
                    Ok(PutOutcome::Stored { seq })
                }
                Err(e) => Err(e),
            };
            outcomes.push(outcome);
        }
        drop(in_batch);
        let committed = if stored > 0 {
            batch.insert(
                &self.tables.meta,
                SEQ_KEY.to_vec(),
                self.seq.to_be_bytes().to_vec(),
            );
            batch.commit().map_err(RelayError::from)
        } else {
            Ok(())
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, "store commit failed; {} puts refused", stored);
            self.seq = seq_before;
        } else {
            self.live.fetch_add(stored, Ordering::Relaxed);
        }
        for ((_, tx), outcome) in puts.drain(..).zip(outcomes) {
            let outcome = match (&committed, outcome) {
                (Err(e), Ok(PutOutcome::Stored { .. })) => Err(RelayError::Storage(e.to_string())),
                (_, o) => o,
            };
            let _ = tx.send(outcome);
        }
    }

    /// `Some(outcome)` when the packet must not be written; `None` to store it.
    fn decide(
        &self,
        p: &NewPacket,
        now: u64,
        in_batch: &HashMap<MessageHash, (&str, &str)>,
    ) -> StoreResult<Option<PutOutcome>> {
        if p.expires_at <= now {
            return Ok(Some(PutOutcome::Expired));
        }
        let same = |recipient: &str, signature: &str| {
            if recipient == p.recipient && signature == p.signature {
                PutOutcome::Duplicate
            } else {
                PutOutcome::Conflict
            }
        };
        if let Some((r, s)) = in_batch.get(&p.hash) {
            return Ok(Some(same(r, s)));
        }
        if !self.tables.seen.contains_key(p.hash.as_bytes())? {
            return Ok(None);
        }
        match self.tables.messages.get(p.hash.as_bytes())? {
            Some(bytes) => {
                let record: Record = serde_json::from_slice(&bytes)
                    .map_err(|e| RelayError::Storage(format!("corrupt record {}: {e}", p.hash)))?;
                if record.expires_at <= now {
                    Ok(Some(PutOutcome::Expired))
                } else {
                    Ok(Some(same(&record.recipient, &record.signature)))
                }
            }
            // Seen but no longer held: it expired; its tombstone keeps it dead.
            None => Ok(Some(PutOutcome::Expired)),
        }
    }

    /// Drops expired packets and forgets tombstones past their retention, in bounded batches.
    fn purge(&mut self) -> StoreResult<usize> {
        let now = unix_now();
        let t = &self.tables;
        let bound = expiry_key(now + 1, &[0u8; 32]).to_vec();
        let mut packets = 0usize;
        loop {
            let mut batch = t.db.batch();
            let mut n = 0;
            for item in t.by_expiry.range(..bound.clone()) {
                let (key, value) = item.into_inner()?;
                if value.len() != 40 || key.len() != 40 {
                    return Err(RelayError::Storage("corrupt expiry index entry".into()));
                }
                batch.remove(&t.messages, key[8..].to_vec());
                batch.remove(&t.by_recipient, value.to_vec());
                batch.remove(&t.by_expiry, key.to_vec());
                n += 1;
                if n >= MAX_BATCH {
                    break;
                }
            }
            let expired_here = n;
            for item in t.seen_expiry.range(..bound.clone()) {
                let key = item.key()?;
                batch.remove(&t.seen, key[8..].to_vec());
                batch.remove(&t.seen_expiry, key.to_vec());
                n += 1;
                if n >= 2 * MAX_BATCH {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            batch.commit()?;
            packets += expired_here;
            let _ = self
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(expired_here as u64))
                });
        }
        Ok(packets)
    }
}

fn recipient_key(fp: &[u8; 32], seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(fp);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn expiry_key(at: u64, hash: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..].copy_from_slice(hash);
    k
}

fn u64_from(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

fn hash_from(bytes: &[u8]) -> StoreResult<MessageHash> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| RelayError::Storage("corrupt index entry (hash length)".into()))?;
    Ok(MessageHash::from_bytes(arr))
}
