//! The fjall store: `fjall` (a log-structured key-value store) in the relay's data
//! directory, the embedded store until 2026-12, when the append-only log (`store::log`)
//! replaced it. Kept to migrate the data directories it wrote ([`export`]) and to measure
//! against; a relay no longer opens it, so it does not check [`super::Quotas`].
//!
//! All writes go through one writer thread that commits whatever has queued up as one batch
//! with an fsync (group commit): a `/send` is acknowledged only after its batch is on disk,
//! yet a busy relay pays one fsync per batch, not per message. The single writer also makes
//! "check then insert" atomic without locks. Because that thread is the bottleneck, everything
//! that can be done before it (serialising the record) is done by the caller, and a packet
//! costs the writer one lookup and four inserts.
//!
//! Layout (four keyspaces, plus `meta` for the arrival counter):
//! - `messages`: hash -> `L` ‖ seq (BE) ‖ record JSON while live, `T` ‖ forget_at (BE) once
//!   expired: the tombstone that keeps sync from reviving it, in the same place.
//! - `by_recipient`: recipient fingerprint ‖ seq (BE) -> hash.
//! - `by_expiry`: time (BE) ‖ hash -> `L` ‖ fingerprint ‖ seq for a live packet (time =
//!   expires_at), `T` for a tombstone (time = forget_at).
//! - `by_seq`: seq (BE) -> hash ‖ expires_at (BE) for every live packet, for `/sync/recent`;
//!   written with the packet, removed when purge turns it into a tombstone. Data directories
//!   from before this index have no `by_seq`: [`EmbeddedStore::open`] builds it once from the
//!   live entries of `by_expiry` (they hold seq and expiry) before the writer starts, and marks
//!   it built in `meta` (`BY_SEQ_BUILT`) only after the whole index is on disk, so a crash in
//!   between only means building it again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use jasper_core::MessageHash;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    MessageStore, NewPacket, PutOutcome, RecentHashes, StoreResult, StoredPacket, unix_now,
};
use crate::error::RelayError;

/// Most puts folded into one commit; bounds the latency a single batch adds.
const MAX_BATCH: usize = 1024;
const SEQ_KEY: &[u8] = b"seq";
/// In `meta` once `by_seq` holds every live packet (see the module comment).
const BY_SEQ_BUILT: &[u8] = b"by_seq_built";
/// `by_seq` entries written per batch while building the index of an older directory.
const INDEX_BUILD_BATCH: usize = 10_000;
const LIVE: u8 = b'L';
const TOMBSTONE: u8 = b'T';

/// The JSON part of a live value (the hash is the key; seq is in the binary prefix).
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    recipient: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    signature: std::borrow::Cow<'a, str>,
    expires_at: u64,
}

#[derive(Clone)]
struct Tables {
    db: Database,
    messages: Keyspace,
    by_recipient: Keyspace,
    by_expiry: Keyspace,
    by_seq: Keyspace,
    meta: Keyspace,
}

impl Tables {
    fn open(dir: &Path) -> StoreResult<Self> {
        let db = Database::builder(dir).open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Tables {
            messages: ks("messages")?,
            by_recipient: ks("by_recipient")?,
            by_expiry: ks("by_expiry")?,
            by_seq: ks("by_seq")?,
            meta: ks("meta")?,
            db,
        })
    }

    /// The arrival counter as last committed.
    fn seq(&self) -> StoreResult<u64> {
        Ok(self.meta.get(SEQ_KEY)?.map_or(0, |v| u64_from(&v)))
    }
}

/// A put, prepared by the caller: the value with a zero seq for the writer to fill in.
struct PreparedPut {
    packet: NewPacket,
    value: Vec<u8>,
}

enum WriteOp {
    Put(Box<PreparedPut>, oneshot::Sender<StoreResult<PutOutcome>>),
    Purge(oneshot::Sender<StoreResult<usize>>),
    Close(oneshot::Sender<StoreResult<()>>),
}

pub struct EmbeddedStore {
    tables: Tables,
    writer: mpsc::UnboundedSender<WriteOp>,
    live: Arc<AtomicU64>,
    /// The highest seq whose batch is committed (stored by the writer after each commit).
    latest: Arc<AtomicU64>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. `tombstone_retention` is how long an expired
    /// hash is remembered after its expiry.
    pub fn open(dir: &Path, tombstone_retention: Duration) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RelayError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let tables = Tables::open(dir)?;
        let seq = tables.seq()?;
        build_seq_index(&tables)?;
        let live = Arc::new(AtomicU64::new(count_live(&tables, unix_now())?));
        let latest = Arc::new(AtomicU64::new(seq));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            tables: tables.clone(),
            seq,
            retention: tombstone_retention.as_secs(),
            live: live.clone(),
            latest: latest.clone(),
        };
        std::thread::Builder::new()
            .name("jasper-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| RelayError::Storage(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            tables,
            writer: tx,
            live,
            latest,
        })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        super::ask_writer(&self.writer, op).await
    }

    fn read_record(&self, hash: &MessageHash, now: u64) -> StoreResult<Option<StoredPacket>> {
        let Some(bytes) = self.tables.messages.get(hash.as_bytes())? else {
            return Ok(None);
        };
        match decode(hash, &bytes)? {
            Value::Live { seq, record } if record.expires_at > now => Ok(Some(StoredPacket {
                recipient: record.recipient.into_owned(),
                message: record.message.into_owned(),
                hash: *hash,
                signature: record.signature.into_owned(),
                expires_at: record.expires_at,
                seq,
            })),
            _ => Ok(None),
        }
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
                    hashes.push(hash_from(&item.value()?)?);
                    if hashes.len() >= limit {
                        break;
                    }
                }
            }
            None => {
                for item in self.tables.by_recipient.prefix(fp).rev() {
                    hashes.push(hash_from(&item.value()?)?);
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

/// `/sync/recent` from `by_seq`: the live entries after `since`, one more looked for to know
/// whether there are `more`. Expired entries not purged yet are skipped.
fn recent_blocking(
    tables: &Tables,
    latest_seq: u64,
    since: Option<u64>,
    limit: usize,
) -> StoreResult<RecentHashes> {
    let mut out = RecentHashes {
        latest_seq,
        ..RecentHashes::default()
    };
    let Some(start) = since.and_then(|s| s.checked_add(1)) else {
        return Ok(out);
    };
    let now = unix_now();
    for item in tables.by_seq.range(start.to_be_bytes().to_vec()..) {
        let (key, value) = item.into_inner()?;
        if key.len() != 8 || value.len() != 40 {
            return Err(RelayError::Storage("corrupt arrival index entry".into()));
        }
        if u64_from(&value[32..]) <= now {
            continue;
        }
        if out.hashes.len() >= limit {
            out.more = true;
            break;
        }
        out.hashes.push((u64_from(&key), hash_from(&value[..32])?));
    }
    Ok(out)
}

fn seq_index_value(hash: &[u8; 32], expires_at: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(hash);
    v.extend_from_slice(&expires_at.to_be_bytes());
    v
}

/// Builds `by_seq` for a data directory written before it existed, once: every live entry of
/// `by_expiry` (`L` ‖ fingerprint ‖ seq, key expires_at ‖ hash) becomes seq -> hash ‖
/// expires_at. Runs before the writer starts, so nothing else writes meanwhile; the marker is
/// written, with a full sync, only after every entry, so an interrupted build is redone.
fn build_seq_index(tables: &Tables) -> StoreResult<()> {
    if tables.meta.contains_key(BY_SEQ_BUILT)? {
        return Ok(());
    }
    let mut batch = tables.db.batch();
    let mut in_batch = 0usize;
    let mut indexed = 0usize;
    for item in tables.by_expiry.iter() {
        let (key, value) = item.into_inner()?;
        if value.first() != Some(&LIVE) {
            continue;
        }
        if key.len() != 40 || value.len() != 41 {
            return Err(RelayError::Storage("corrupt expiry index entry".into()));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&key[8..]);
        batch.insert(
            &tables.by_seq,
            value[33..41].to_vec(),
            seq_index_value(&hash, u64_from(&key[..8])),
        );
        in_batch += 1;
        indexed += 1;
        if in_batch >= INDEX_BUILD_BATCH {
            batch.commit()?;
            batch = tables.db.batch();
            in_batch = 0;
        }
    }
    batch.insert(&tables.meta, BY_SEQ_BUILT.to_vec(), vec![1]);
    batch.commit()?;
    tables.db.persist(PersistMode::SyncAll)?;
    if indexed > 0 {
        tracing::info!(
            indexed,
            "built the arrival-order index of an older data directory"
        );
    }
    Ok(())
}

/// A decoded `messages` value.
enum Value<'a> {
    Live { seq: u64, record: Record<'a> },
    Tombstone,
}

fn decode<'a>(hash: &MessageHash, bytes: &'a [u8]) -> StoreResult<Value<'a>> {
    let corrupt = || RelayError::Storage(format!("corrupt record {hash}"));
    match bytes.first() {
        Some(&LIVE) if bytes.len() > 9 => {
            let seq = u64_from(&bytes[1..9]);
            let record = serde_json::from_slice(&bytes[9..]).map_err(|_| corrupt())?;
            Ok(Value::Live { seq, record })
        }
        Some(&TOMBSTONE) => Ok(Value::Tombstone),
        _ => Err(corrupt()),
    }
}

/// Live packets: `L` entries of `by_expiry` from `now` on (tombstones are `T`).
fn count_live(tables: &Tables, now: u64) -> StoreResult<u64> {
    let mut live = 0u64;
    for item in tables
        .by_expiry
        .range(expiry_key(now + 1, &[0u8; 32]).to_vec()..)
    {
        if item.value()?.first() == Some(&LIVE) {
            live += 1;
        }
    }
    Ok(live)
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn put(&self, packet: NewPacket) -> StoreResult<PutOutcome> {
        // Serialise here, on the caller's thread, not on the single writer.
        let record = Record {
            recipient: packet.recipient.as_str().into(),
            message: packet.message.as_str().into(),
            signature: packet.signature.as_str().into(),
            expires_at: packet.expires_at,
        };
        let mut value = Vec::with_capacity(
            9 + packet.message.len() + packet.recipient.len() + packet.signature.len() + 96,
        );
        value.push(LIVE);
        value.extend_from_slice(&[0u8; 8]);
        serde_json::to_writer(&mut value, &record).expect("record serialises");
        let prepared = Box::new(PreparedPut { packet, value });
        self.call(move |tx| WriteOp::Put(prepared, tx)).await
    }

    async fn get(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<Option<StoredPacket>>> {
        let now = unix_now();
        hashes.iter().map(|h| self.read_record(h, now)).collect()
    }

    async fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredPacket>> {
        self.by_recipient_blocking(recipient_fp, since, limit)
    }

    async fn recent(&self, since: Option<u64>, limit: usize) -> StoreResult<RecentHashes> {
        let tables = self.tables.clone();
        // Read before the scan: every seq up to it is committed, so the scan sees all of them
        // and an empty answer's cursor never skips a packet the scan missed.
        let latest = self.latest.load(Ordering::Acquire);
        tokio::task::spawn_blocking(move || recent_blocking(&tables, latest, since, limit))
            .await
            .map_err(|e| RelayError::Storage(format!("scan task failed: {e}")))?
    }

    async fn unknown(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<MessageHash>> {
        let mut out = Vec::new();
        for h in hashes {
            // Live or tombstone: either way not to be fetched.
            if !self.tables.messages.contains_key(h.as_bytes())? {
                out.push(h);
            }
        }
        Ok(out)
    }

    async fn live_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<(MessageHash, u64)>> {
        let tables = self.tables.clone();
        tokio::task::spawn_blocking(move || {
            let from = from.max(unix_now() + 1);
            let mut out = Vec::new();
            if from >= to {
                return Ok(out);
            }
            let keys = expiry_key(from, &[0u8; 32]).to_vec()..expiry_key(to, &[0u8; 32]).to_vec();
            for item in tables.by_expiry.range(keys) {
                if out.len() >= limit {
                    break;
                }
                let (key, value) = item.into_inner()?;
                if value.first() == Some(&LIVE) {
                    out.push((hash_from(&key[8..])?, u64_from(&key[..8])));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| RelayError::Storage(format!("scan task failed: {e}")))?
    }

    async fn count(&self) -> StoreResult<u64> {
        Ok(self.live.load(Ordering::Relaxed))
    }

    async fn purge_expired(&self) -> StoreResult<usize> {
        self.call(WriteOp::Purge).await
    }

    async fn close(&self) -> StoreResult<()> {
        self.call(WriteOp::Close).await
    }
}

struct Writer {
    tables: Tables,
    seq: u64,
    retention: u64,
    live: Arc<AtomicU64>,
    latest: Arc<AtomicU64>,
}

type PendingPut = (Box<PreparedPut>, oneshot::Sender<StoreResult<PutOutcome>>);

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        let mut puts: Vec<PendingPut> = Vec::with_capacity(MAX_BATCH);
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

    fn commit_puts(&mut self, puts: &mut Vec<PendingPut>) {
        if puts.is_empty() {
            return;
        }
        let now = unix_now();
        let mut batch = self
            .tables
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        // Packets of this batch by hash (to recipient and signature), for in-batch duplicates.
        let mut in_batch: HashMap<MessageHash, (&str, &str)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(puts.len());
        let seq_before = self.seq;
        let mut stored = 0u64;
        for (prepared, _) in puts.iter_mut() {
            let p = &prepared.packet;
            let outcome = match self.decide(p, now, &in_batch) {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => {
                    self.seq += 1;
                    let seq = self.seq;
                    prepared.value[1..9].copy_from_slice(&seq.to_be_bytes());
                    let h = p.hash.as_bytes();
                    batch.insert(
                        &self.tables.messages,
                        h.to_vec(),
                        std::mem::take(&mut prepared.value),
                    );
                    batch.insert(
                        &self.tables.by_recipient,
                        recipient_key(&p.recipient_fp, seq).to_vec(),
                        h.to_vec(),
                    );
                    let mut index = Vec::with_capacity(41);
                    index.push(LIVE);
                    index.extend_from_slice(&p.recipient_fp);
                    index.extend_from_slice(&seq.to_be_bytes());
                    batch.insert(
                        &self.tables.by_expiry,
                        expiry_key(p.expires_at, h).to_vec(),
                        index,
                    );
                    batch.insert(
                        &self.tables.by_seq,
                        seq.to_be_bytes().to_vec(),
                        seq_index_value(h, p.expires_at),
                    );
                    stored += 1;
                    Ok(PutOutcome::Stored { seq })
                }
                Err(e) => Err(e),
            };
            if matches!(outcome, Ok(PutOutcome::Stored { .. })) {
                in_batch.insert(p.hash, (p.recipient.as_str(), p.signature.as_str()));
            }
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
            self.latest.store(self.seq, Ordering::Release);
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
        let Some(bytes) = self.tables.messages.get(p.hash.as_bytes())? else {
            return Ok(None);
        };
        Ok(Some(match decode(&p.hash, &bytes)? {
            Value::Live { record, .. } if record.expires_at > now => {
                same(&record.recipient, &record.signature)
            }
            // Expired, or its tombstone: it stays dead.
            _ => PutOutcome::Expired,
        }))
    }

    /// Turns expired packets into tombstones and forgets tombstones past their retention, in
    /// bounded batches. Returns how many packets expired.
    fn purge(&mut self) -> StoreResult<usize> {
        let now = unix_now();
        let t = &self.tables;
        let bound = expiry_key(now + 1, &[0u8; 32]).to_vec();
        let mut expired = 0usize;
        loop {
            let mut batch = t.db.batch();
            let mut n = 0;
            let mut expired_here = 0;
            for item in t.by_expiry.range(..bound.clone()) {
                let (key, value) = item.into_inner()?;
                if key.len() != 40 {
                    return Err(RelayError::Storage("corrupt expiry index entry".into()));
                }
                let hash = key[8..].to_vec();
                batch.remove(&t.by_expiry, key.to_vec());
                match value.first() {
                    Some(&LIVE) if value.len() == 41 => {
                        let at = u64_from(&key[..8]);
                        let forget_at = at.saturating_add(self.retention);
                        let mut tomb = vec![TOMBSTONE];
                        tomb.extend_from_slice(&forget_at.to_be_bytes());
                        batch.insert(&t.messages, hash.clone(), tomb);
                        batch.remove(&t.by_recipient, value[1..].to_vec());
                        batch.remove(&t.by_seq, value[33..41].to_vec());
                        let mut hash_arr = [0u8; 32];
                        hash_arr.copy_from_slice(&hash);
                        batch.insert(
                            &t.by_expiry,
                            expiry_key(forget_at, &hash_arr).to_vec(),
                            vec![TOMBSTONE],
                        );
                        expired_here += 1;
                    }
                    Some(&TOMBSTONE) => batch.remove(&t.messages, hash),
                    _ => return Err(RelayError::Storage("corrupt expiry index entry".into())),
                }
                n += 1;
                if n >= MAX_BATCH {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            batch.commit()?;
            expired += expired_here;
            let _ = self
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(expired_here as u64))
                });
        }
        Ok(expired)
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

/// What a fjall data directory holds, read out for the log store's migration.
pub(crate) enum Exported {
    Live { packet: NewPacket, seq: u64 },
    Tombstone { hash: MessageHash, forget_at: u64 },
}

/// Reads every tombstone and then every packet (in arrival order) of the fjall store in
/// `dir` into `sink`; returns its arrival counter. Nothing else may have the store open.
pub(crate) fn export(
    dir: &Path,
    sink: &mut dyn FnMut(Exported) -> StoreResult<()>,
) -> StoreResult<u64> {
    let tables = Tables::open(dir)?;
    build_seq_index(&tables)?;
    let seq = tables.seq()?;
    for item in tables.by_expiry.iter() {
        let (key, value) = item.into_inner()?;
        if value.first() == Some(&TOMBSTONE) && key.len() == 40 {
            sink(Exported::Tombstone {
                hash: hash_from(&key[8..])?,
                forget_at: u64_from(&key[..8]),
            })?;
        }
    }
    for item in tables.by_seq.iter() {
        let (key, value) = item.into_inner()?;
        if key.len() != 8 || value.len() != 40 {
            return Err(RelayError::Storage("corrupt arrival index entry".into()));
        }
        let hash = hash_from(&value[..32])?;
        let expires_at = u64_from(&value[32..]);
        let index = tables
            .by_expiry
            .get(expiry_key(expires_at, hash.as_bytes()))?;
        let record = tables.messages.get(hash.as_bytes())?;
        let (Some(index), Some(record)) = (index, record) else {
            tracing::warn!(%hash, "packet without its record or expiry entry; not migrated");
            continue;
        };
        let Value::Live { seq, record } = decode(&hash, &record)? else {
            continue;
        };
        if index.len() != 41 {
            return Err(RelayError::Storage("corrupt expiry index entry".into()));
        }
        let mut recipient_fp = [0u8; 32];
        recipient_fp.copy_from_slice(&index[1..33]);
        sink(Exported::Live {
            packet: NewPacket {
                recipient: record.recipient.into_owned(),
                recipient_fp,
                message: record.message.into_owned(),
                hash,
                signature: record.signature.into_owned(),
                expires_at: record.expires_at,
            },
            seq,
        })?;
    }
    Ok(seq)
}
