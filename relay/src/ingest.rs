//! The one path by which packets enter this relay, whether from a client's `/send`, a peer's
//! broadcast or a sync: validate everything (a peer's word included), store durably, wake
//! long-polls, and queue the broadcast.

use std::collections::HashMap;
use std::sync::Arc;

use jasper_core::protocol::{Packet, PacketLimits};
use jasper_core::{MessageHash, PublicKey};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::admission::{Admission, Refusal};
use crate::error::RelayError;
use crate::mesh::peer::PeerAddr;
use crate::mesh::sketch::LiveSketch;
use crate::metrics::Histogram;
use crate::store::{MessageStore, NewPacket, PutOutcome, unix_now};
use crate::waiters::Waiters;

/// A stored packet to push to peers, minus the peer it came from.
pub struct BroadcastJob {
    pub packet: Packet,
    pub hash: MessageHash,
    pub expires_at: u64,
    pub from: Option<PeerAddr>,
}

/// Where a packet came from; decides whether it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `/send` from a client, or a peer's broadcast (then `Some(peer)` when it named itself).
    Send(Option<PeerAddr>),
    /// Pulled by hash sync: every relay syncs, so it is not pushed on.
    Sync,
    /// Fetched from a peer that announced it (a graft, `mesh/tree.rs`): it did not come down
    /// the tree, so this relay pushes it on down its own part.
    Graft(PeerAddr),
}

/// Parsed recipient keys by text. Parsing an RSA key costs microseconds; relays see the same
/// recipients over and over.
struct KeyCache {
    map: Mutex<HashMap<String, [u8; 32]>>,
}

const KEY_CACHE_ENTRIES: usize = 16_384;

impl KeyCache {
    fn fingerprint(&self, text: &str) -> Result<[u8; 32], jasper_core::Error> {
        if let Some(fp) = self.map.lock().get(text) {
            return Ok(*fp);
        }
        let fp = PublicKey::from_text_field(text, "recipient")?.fingerprint();
        let mut map = self.map.lock();
        if map.len() >= KEY_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(text.to_owned(), fp);
        Ok(fp)
    }
}

pub struct Ingest {
    pub store: Arc<dyn MessageStore>,
    /// Rate limits and refusal counters; the quotas themselves are the store's to check.
    pub admission: Arc<Admission>,
    pub waiters: Arc<Waiters>,
    /// The live set's reconciliation sketch: every stored packet goes in once.
    pub sketch: Arc<LiveSketch>,
    keys: KeyCache,
    /// How long each `put` took (`/metrics`).
    pub store_put: Histogram,
    limits: PacketLimits,
    ttl_secs: u64,
    broadcast: mpsc::Sender<BroadcastJob>,
}

impl Ingest {
    pub fn new(
        store: Arc<dyn MessageStore>,
        admission: Arc<Admission>,
        waiters: Arc<Waiters>,
        sketch: Arc<LiveSketch>,
        limits: PacketLimits,
        ttl_secs: u64,
        broadcast: mpsc::Sender<BroadcastJob>,
    ) -> Self {
        Self {
            store,
            admission,
            waiters,
            sketch,
            keys: KeyCache {
                map: Mutex::new(HashMap::new()),
            },
            store_put: Histogram::new(jasper_metrics::STORE_BOUNDS),
            limits,
            ttl_secs,
            broadcast,
        }
    }

    /// Recipient key to index fingerprint, through the cache.
    pub fn recipient_fingerprint(&self, text: &str) -> Result<[u8; 32], RelayError> {
        Ok(self.keys.fingerprint(text)?)
    }

    /// Checks a packet completely and fixes its expiry: a carried `expires_at` is honoured
    /// but never beyond this relay's own TTL from now (a peer cannot make a packet immortal).
    pub fn validate(&self, packet: &Packet) -> Result<NewPacket, RelayError> {
        let hash = packet.check_fields(&self.limits)?;
        let recipient_fp = self.recipient_fingerprint(&packet.recipient)?;
        let now = unix_now();
        let latest = now.saturating_add(self.ttl_secs);
        let expires_at = packet.expires_at.map_or(latest, |e| e.min(latest));
        if expires_at <= now {
            return Err(RelayError::Expired(hash.to_string()));
        }
        Ok(NewPacket {
            recipient: packet.recipient.clone(),
            recipient_fp,
            message: packet.message.clone(),
            hash,
            signature: packet.signature.clone(),
            expires_at,
        })
    }

    /// Stores a validated packet; on success wakes long-polls and queues the broadcast.
    pub async fn accept(&self, p: NewPacket, source: Source) -> Result<PutOutcome, RelayError> {
        let started = std::time::Instant::now();
        let outcome = self.store.put(p.clone()).await;
        self.store_put.observe(started.elapsed());
        let outcome = outcome?;
        match outcome {
            PutOutcome::Stored { .. } => {
                self.sketch.add(&p.hash, p.expires_at);
                self.waiters.notify(&p.recipient_fp);
                let from = match source {
                    Source::Send(from) => Some(from),
                    Source::Graft(peer) => Some(Some(peer)),
                    Source::Sync => None,
                };
                if let Some(from) = from {
                    let job = BroadcastJob {
                        hash: p.hash,
                        expires_at: p.expires_at,
                        packet: Packet {
                            recipient: p.recipient,
                            message: p.message,
                            hash: p.hash.to_string(),
                            signature: p.signature,
                            expires_at: Some(p.expires_at),
                        },
                        from,
                    };
                    // A full queue means peers are slow: sync delivers what is skipped here.
                    if self.broadcast.try_send(job).is_err() {
                        tracing::warn!(hash = %p.hash, "broadcast queue full; left to sync");
                    }
                }
                Ok(outcome)
            }
            PutOutcome::Duplicate => Ok(outcome),
            PutOutcome::Conflict => Err(RelayError::HashConflict(p.hash.to_string())),
            PutOutcome::Expired => Err(RelayError::Expired(p.hash.to_string())),
            PutOutcome::RecipientFull => {
                self.admission.count(Refusal::RecipientFull);
                Err(RelayError::RecipientFull(short_key(&p.recipient_fp)))
            }
            PutOutcome::StoreFull => {
                self.admission.count(Refusal::StorageFull);
                Err(RelayError::StorageFull)
            }
        }
    }
}

/// A recipient named in a refusal by the start of its fingerprint, not its whole key.
fn short_key(fp: &[u8; 32]) -> String {
    format!("{}…", hex::encode(&fp[..8]))
}
