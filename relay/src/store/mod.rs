//! Message storage behind one trait, with backends that pass the same test suite: Redis
//! ([`redis::RedisStore`]), the embedded store, an append-only log ([`log::LogStore`]), and
//! the fjall store it replaced ([`embedded::EmbeddedStore`], kept to migrate older data
//! directories and for side-by-side measurement).
//!
//! Contract every backend keeps: `put` returns only once the packet is durable; the check
//! "held already / held with other content / expired" and the write are one atomic step; an
//! expired hash is remembered (`seen`) for the tombstone retention so sync cannot revive it;
//! nothing past its `expires_at` is ever returned.

pub mod embedded;
pub mod log;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jasper_core::MessageHash;
use jasper_core::protocol::Packet;
use serde::{Deserialize, Serialize};

use crate::error::RelayError;

pub type StoreResult<T> = Result<T, RelayError>;

/// A validated packet about to be stored.
#[derive(Debug, Clone)]
pub struct NewPacket {
    pub recipient: String,
    /// SHA-256 of the recipient key's DER: the index key for `/fetch {recipient}`.
    pub recipient_fp: [u8; 32],
    pub message: String,
    pub hash: MessageHash,
    pub signature: String,
    /// Unix seconds; global across the mesh.
    pub expires_at: u64,
}

/// A packet as held by this relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPacket {
    pub recipient: String,
    pub message: String,
    pub hash: MessageHash,
    pub signature: String,
    pub expires_at: u64,
    /// Relay-local arrival order: the cursor of `/fetch {recipient, since}`.
    pub seq: u64,
}

impl StoredPacket {
    pub fn to_packet(&self) -> Packet {
        Packet {
            recipient: self.recipient.clone(),
            message: self.message.clone(),
            hash: self.hash.to_string(),
            signature: self.signature.clone(),
            expires_at: Some(self.expires_at),
        }
    }
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored under this arrival sequence number.
    Stored { seq: u64 },
    /// The identical packet was already held: nothing changed (idempotent re-send).
    Duplicate,
    /// The hash is held with a different recipient or signature: refused.
    Conflict,
    /// Expired, or expired before and still remembered: refused.
    Expired,
    /// Storing it would take its recipient past [`Quotas::recipient_packets`] or
    /// [`Quotas::recipient_bytes`]: refused, nothing held is dropped.
    RecipientFull,
    /// Storing it would take the store past [`Quotas::stored_packets`] or
    /// [`Quotas::stored_bytes`]: refused, nothing held is dropped.
    StoreFull,
}

/// What a store may hold, for one recipient and in all; checked by `put` in the same atomic
/// step as its other checks, so that concurrent puts cannot overshoot. Bytes are those the
/// backend counts for a packet (the log store's frame, Redis's value), about the JSON size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub recipient_packets: u64,
    pub recipient_bytes: u64,
    pub stored_packets: u64,
    pub stored_bytes: u64,
}

impl Quotas {
    /// No limits (the default of a store opened without quotas: tools and tests).
    pub const UNLIMITED: Quotas = Quotas {
        recipient_packets: u64::MAX,
        recipient_bytes: u64::MAX,
        stored_packets: u64::MAX,
        stored_bytes: u64::MAX,
    };

    /// Whether one more packet of `bytes` fits, given what the recipient and the store hold
    /// (packets, bytes); the refusal if not. The store's cap is checked first: when the
    /// whole store is full, that is the answer whatever the recipient holds.
    pub fn refuse(
        &self,
        recipient: (u64, u64),
        stored: (u64, u64),
        bytes: u64,
    ) -> Option<PutOutcome> {
        if stored.0 >= self.stored_packets || stored.1.saturating_add(bytes) > self.stored_bytes {
            Some(PutOutcome::StoreFull)
        } else if recipient.0 >= self.recipient_packets
            || recipient.1.saturating_add(bytes) > self.recipient_bytes
        {
            Some(PutOutcome::RecipientFull)
        } else {
            None
        }
    }
}

/// What [`MessageStore::recent`] answers: the extension `POST /sync/recent`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecentHashes {
    /// Live packets that arrived after `since`, as (arrival seq, hash), in increasing seq
    /// order, at most `limit`.
    pub hashes: Vec<(u64, MessageHash)>,
    /// The highest arrival seq assigned (and committed) when the read began.
    pub latest_seq: u64,
    /// Whether live packets after the last one returned exist (the answer was cut at `limit`).
    pub more: bool,
}

/// A place in a shared store's feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPosition {
    /// The backend's id of the entry (a Redis stream id).
    pub id: String,
    /// The arrival sequence number of its packet.
    pub seq: u64,
}

/// A packet some process stored, as its feed tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub hash: MessageHash,
    pub expires_at: u64,
    pub recipient_fp: [u8; 32],
}

/// What one read of the feed returned.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// Where to read on from.
    pub end: FeedPosition,
    /// Entries were lost before this read (trimmed, or unreadable): the reader must catch up
    /// from the store itself.
    pub gap: bool,
}

/// Storage backend of a relay. Used as `Arc<dyn MessageStore>` (the backend is chosen at
/// start-up), which native `async fn` in traits does not allow, hence `async_trait`.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a packet durably (or reports why not). Atomic with its checks.
    async fn put(&self, packet: NewPacket) -> StoreResult<PutOutcome>;

    /// Live packets for these hashes, in the same order, `None` where not held.
    async fn get(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<Option<StoredPacket>>>;

    /// Live packets for a recipient in arrival order: after `since` (at most `limit`), or
    /// without a cursor the newest `limit`.
    async fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredPacket>>;

    /// Live hashes in arrival order after `since` (at most `limit`), from an index ordered by
    /// arrival seq (never a scan of the store), plus the latest seq. `None` (a bootstrap)
    /// answers no hashes, only the latest seq.
    async fn recent(&self, since: Option<u64>, limit: usize) -> StoreResult<RecentHashes>;

    /// The hashes among these that are neither held nor remembered as expired: what sync
    /// should fetch.
    async fn unknown(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<MessageHash>>;

    /// Every live hash held (for `/sync/hashes`, which lists them all).
    async fn live_hashes(&self) -> StoreResult<Vec<MessageHash>> {
        Ok(self
            .live_range(0, u64::MAX, usize::MAX)
            .await?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }

    /// Live packets whose `expires_at` is in `from..to`, as (hash, expires_at), soonest
    /// first, at most `limit`: a walk of the expiry index, never a scan or sort of the store.
    /// What reconciliation sketches are built from (at start, and for ranges a peer asks).
    async fn live_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<(MessageHash, u64)>>;

    /// Number of live packets held.
    async fn count(&self) -> StoreResult<u64>;

    /// Bytes of the live packets as the quotas count them, if the backend keeps the figure.
    async fn live_bytes(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    /// Whether other relay processes may write this store too (a Redis several processes of
    /// one operator share). Then each process follows the store's feed to learn the packets
    /// the others store: its sketch must hold them, and its long-polls must wake for them.
    fn shared(&self) -> bool {
        false
    }

    /// The mesh identity (`/status` `instance`) of every process sharing the store, made by
    /// the first; `None` for a store only one process uses (each run draws its own).
    async fn instance(&self) -> StoreResult<Option<String>> {
        Ok(None)
    }

    /// The feed's newest position (a shared store only).
    async fn feed_end(&self) -> StoreResult<FeedPosition> {
        Ok(FeedPosition::default())
    }

    /// Packets stored by any process after `after`, in store order, waiting up to `wait` for
    /// the first (a shared store only).
    async fn feed_after(&self, after: &FeedPosition, wait: Duration) -> StoreResult<FeedPage> {
        tokio::time::sleep(wait).await;
        Ok(FeedPage {
            entries: Vec::new(),
            end: after.clone(),
            gap: false,
        })
    }

    /// Drops what has expired (backends with native expiry may do little). Returns how many
    /// packets were dropped.
    async fn purge_expired(&self) -> StoreResult<usize>;

    /// Flushes and releases the backend; called once at shutdown.
    async fn close(&self) -> StoreResult<()>;
}

/// Sends an operation to a store's writer thread and waits for its answer (both embedded
/// stores funnel writes through one thread).
pub(crate) async fn ask_writer<Op, T>(
    writer: &tokio::sync::mpsc::UnboundedSender<Op>,
    op: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<T>>) -> Op,
) -> StoreResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    writer
        .send(op(tx))
        .map_err(|_| RelayError::Storage("store is closed".into()))?;
    rx.await
        .map_err(|_| RelayError::Storage("store writer stopped".into()))?
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
