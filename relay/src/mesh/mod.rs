//! The mesh: pushing new packets to peers (broadcast), pulling what we lack from them (hash
//! sync), exchanging relay addresses (server sync), and auditing peers so that those that
//! drop, forge, refuse or stall are scored down and quarantined.

pub mod client;
pub mod peer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jasper_core::MessageHash;
use jasper_core::protocol::{HashList, ServerEntry, ServerList};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::ingest::{BroadcastJob, Ingest, Source};
use client::{PeerClient, PeerFault, PushOutcome};
use peer::{Offence, Origin, PeerAddr, PeerBook};

/// Hashes per `/fetch` when pulling from a peer.
const PULL_CHUNK: usize = 500;
/// Acknowledged packets checked per peer per sync round.
const AUDIT_SAMPLE: usize = 64;
/// Peers synced at once.
const SYNC_CONCURRENCY: usize = 8;

pub struct Mesh {
    pub book: PeerBook,
    client: PeerClient,
    ingest: Arc<Ingest>,
    config: Arc<RelayConfig>,
    pub instance: String,
}

impl Mesh {
    pub fn new(config: Arc<RelayConfig>, ingest: Arc<Ingest>, instance: String) -> Self {
        let book = PeerBook::new(
            &config.peers,
            config.advertise.as_ref(),
            config.quarantine_base,
            config.max_known_servers,
        );
        let client = PeerClient::new(
            config.peer_timeout,
            config.allow_private_peers,
            config.advertise.as_ref().map(|a| a.to_string()),
            &instance,
            config.max_sync_body_bytes.max(16 * 1024 * 1024),
        );
        Self {
            book,
            client,
            ingest,
            config,
            instance,
        }
    }

    fn trusted(&self, peer: &PeerAddr) -> bool {
        self.book.origin(peer) == Some(Origin::Configured)
    }

    fn fault(&self, peer: &PeerAddr, f: &PeerFault) {
        self.book.record_offence(peer, f.offence, &f.detail);
    }

    /// Pushes each queued packet to every active peer but the one it came from.
    pub async fn run_broadcaster(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<BroadcastJob>,
        stop: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(self.config.broadcast_concurrency));
        loop {
            let job = tokio::select! {
                job = jobs.recv() => match job { Some(j) => Arc::new(j), None => return },
                _ = stop.cancelled() => return,
            };
            for peer in self.book.active() {
                if job.from.as_ref() == Some(&peer) {
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let mesh = self.clone();
                let job = job.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match mesh
                        .client
                        .push(&peer, mesh.trusted(&peer), &job.packet)
                        .await
                    {
                        Ok(PushOutcome::Accepted) => {
                            mesh.book.record_ok(&peer);
                            mesh.book.record_ack(&peer, job.hash, job.expires_at);
                        }
                        Ok(PushOutcome::Conflict | PushOutcome::Expired) => {
                            mesh.book.record_ok(&peer)
                        }
                        Err(f) => mesh.fault(&peer, &f),
                    }
                });
            }
        }
    }

    /// Runs `round` now and then every `every` until stopped.
    pub async fn every<F, Fut>(self: Arc<Self>, every: Duration, stop: CancellationToken, round: F)
    where
        F: Fn(Arc<Self>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => round(self.clone()).await,
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One hash-sync round with every active peer.
    pub async fn sync_round(self: Arc<Self>) {
        let peers = self.book.active();
        let mut running = FuturesUnordered::new();
        for peer in peers {
            let mesh = self.clone();
            let span = tracing::info_span!("sync", peer = %peer);
            running.push(async move { mesh.sync_with(&peer).await }.instrument(span));
            if running.len() >= SYNC_CONCURRENCY {
                running.next().await;
            }
        }
        while running.next().await.is_some() {}
    }

    async fn sync_with(&self, peer: &PeerAddr) {
        let trusted = self.trusted(peer);
        let ours = match self.ingest.store.live_hashes().await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot list hashes for sync");
                return;
            }
        };
        let mut claimed = Vec::new();
        for list in slices(ours, self.config.max_hashes_per_request) {
            match self.client.sync_hashes(peer, trusted, &list).await {
                Ok(mut h) => {
                    if let Some(prefix) = &list.prefix {
                        h.retain(|h| h.to_hex().starts_with(prefix.as_str()));
                    }
                    claimed.extend(h)
                }
                Err(f) => return self.fault(peer, &f),
            }
        }
        claimed.truncate(self.config.max_hashes_per_request);
        let wanted = match self.ingest.store.unknown(claimed).await {
            Ok(w) => w,
            Err(e) => return tracing::error!(error = %e, "store failed during sync"),
        };
        let pulled = self.pull(peer, trusted, &wanted).await;
        let audited = self.audit(peer, trusted).await;
        if pulled && audited {
            self.book.record_ok(peer);
        }
        if !wanted.is_empty() {
            tracing::info!(peer = %peer, wanted = wanted.len(), "hash sync pulled missing packets");
        }
    }

    /// Fetches `wanted` from `peer`, verifying every packet before storing it. Returns false
    /// if the peer misbehaved.
    pub async fn pull(&self, peer: &PeerAddr, trusted: bool, wanted: &[MessageHash]) -> bool {
        for chunk in wanted.chunks(PULL_CHUNK) {
            let answer = match self.client.fetch(peer, trusted, chunk).await {
                Ok(a) => a,
                Err(f) => {
                    self.fault(peer, &f);
                    return false;
                }
            };
            let requested: HashSet<MessageHash> = chunk.iter().copied().collect();
            let mut received = HashSet::new();
            for packet in answer.into_iter().flatten() {
                let np = match self.ingest.validate(&packet) {
                    Ok(np) => np,
                    Err(RelayError::Expired(_)) => {
                        if let Ok(h) = MessageHash::parse(&packet.hash, "hash") {
                            received.insert(h);
                        }
                        continue;
                    }
                    Err(e) => {
                        let offence = match &e {
                            RelayError::Protocol(jasper_core::Error::HashMismatch { .. }) => {
                                Offence::HashMismatch
                            }
                            _ => Offence::Garbage,
                        };
                        self.book.record_offence(
                            peer,
                            offence,
                            &format!("served invalid packet: {e}"),
                        );
                        return false;
                    }
                };
                if !requested.contains(&np.hash) {
                    continue;
                }
                received.insert(np.hash);
                match self.ingest.accept(np, Source::Sync).await {
                    Ok(_) | Err(RelayError::HashConflict(_)) | Err(RelayError::Expired(_)) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "store failed during sync");
                        return true;
                    }
                }
            }
            let missing = chunk.iter().filter(|h| !received.contains(h)).count();
            if missing > 0 {
                self.book.record_offence(
                    peer,
                    Offence::FalseClaim,
                    &format!(
                        "claimed {} hashes in /sync/hashes but did not serve {missing}",
                        chunk.len()
                    ),
                );
                return false;
            }
        }
        true
    }

    /// Checks that the peer still holds packets it acknowledged. Returns false on a finding.
    async fn audit(&self, peer: &PeerAddr, trusted: bool) -> bool {
        let grace = Duration::from_secs(1);
        let sample = self
            .book
            .take_audit(peer, grace, AUDIT_SAMPLE, crate::store::unix_now());
        if sample.is_empty() {
            return true;
        }
        let answer = match self.client.fetch(peer, trusted, &sample).await {
            Ok(a) => a,
            Err(f) => {
                self.fault(peer, &f);
                return false;
            }
        };
        let held: HashMap<String, jasper_core::protocol::Packet> = answer
            .into_iter()
            .flatten()
            .map(|p| (p.hash.to_ascii_lowercase(), p))
            .collect();
        let mut dropped = 0;
        for h in &sample {
            match held.get(&h.to_hex()) {
                None => dropped += 1,
                Some(p) if MessageHash::of_message(&p.message) != *h => {
                    self.book.record_offence(
                        peer,
                        Offence::HashMismatch,
                        "audit: held packet altered",
                    );
                    return false;
                }
                Some(_) => {}
            }
        }
        if dropped > 0 {
            self.book.record_offence(
                peer,
                Offence::DroppedAcknowledged,
                &format!(
                    "acknowledged {} packets, no longer holds {dropped}",
                    sample.len()
                ),
            );
            return false;
        }
        true
    }

    /// The list we send in `/sync/servers`: ourselves and every confirmed peer.
    pub fn server_list(&self) -> Vec<ServerEntry> {
        let mut out: Vec<ServerEntry> = self
            .config
            .advertise
            .iter()
            .map(|a| ServerEntry {
                ip: a.host.clone(),
                port: a.port,
            })
            .collect();
        let candidates: HashSet<PeerAddr> = self.book.candidates().into_iter().collect();
        out.extend(
            self.book
                .all()
                .into_iter()
                .filter(|a| !candidates.contains(a))
                .map(|a| ServerEntry {
                    ip: a.host,
                    port: a.port,
                }),
        );
        out
    }

    /// Takes in server entries from a peer: valid, learnable, not ourselves.
    pub fn learn_servers(&self, entries: &[ServerEntry]) -> usize {
        let mut learned = 0;
        for e in entries {
            let Ok(addr) = PeerAddr::new(&e.ip, e.port) else {
                continue;
            };
            if self.book.is_myself(&addr) || self.book.contains(&addr) {
                continue;
            }
            if let Err(why) = addr.learnable(self.config.allow_private_peers) {
                tracing::debug!(server = %addr, why, "not learning server");
                continue;
            }
            if self.book.learn(addr) {
                learned += 1;
            }
        }
        learned
    }

    /// Answer to an incoming `/sync/servers`: what the caller lacks; learns what we lack.
    pub fn answer_server_sync(&self, theirs: &[ServerEntry]) -> Vec<ServerEntry> {
        let known: HashSet<(String, u16)> = theirs
            .iter()
            .map(|e| (e.ip.to_ascii_lowercase(), e.port))
            .collect();
        let answer = self
            .server_list()
            .into_iter()
            .filter(|e| !known.contains(&(e.ip.clone(), e.port)))
            .collect();
        self.learn_servers(theirs);
        answer
    }

    /// One server-sync round: exchange lists with every active peer, then confirm candidates.
    pub async fn server_sync_round(self: Arc<Self>) {
        let list = ServerList {
            servers: self.server_list(),
        };
        for peer in self.book.active() {
            let trusted = self.trusted(&peer);
            if self.client.instance_of(&peer, trusted).await.as_deref()
                == Some(self.instance.as_str())
            {
                self.book.mark_myself(&peer);
                continue;
            }
            match self.client.sync_servers(&peer, trusted, &list).await {
                Ok(servers) => {
                    self.book.record_ok(&peer);
                    self.learn_servers(&servers);
                }
                Err(f) => self.fault(&peer, &f),
            }
        }
        for candidate in self.book.candidates() {
            if self.client.instance_of(&candidate, false).await.as_deref()
                == Some(self.instance.as_str())
            {
                self.book.mark_myself(&candidate);
                continue;
            }
            match self.client.sync_servers(&candidate, false, &list).await {
                Ok(servers) => {
                    self.book.promote(&candidate);
                    self.learn_servers(&servers);
                }
                Err(f) => {
                    tracing::info!(server = %candidate, detail = f.detail, "candidate did not answer like a relay; dropped");
                    self.book.forget_candidate(&candidate);
                }
            }
        }
    }

    /// After answering a peer's `/sync/hashes`, pull what it has and we lack, if it named
    /// itself and is a peer we already know (a claimed address is never trusted by itself).
    pub async fn pull_after_sync(&self, caller: PeerAddr, theirs: Vec<MessageHash>) {
        if !self.book.active().contains(&caller) {
            return;
        }
        let wanted = match self.ingest.store.unknown(theirs).await {
            Ok(w) => w,
            Err(e) => return tracing::error!(error = %e, "store failed during sync"),
        };
        if !wanted.is_empty() {
            let trusted = self.trusted(&caller);
            self.pull(&caller, trusted, &wanted).await;
        }
    }
}

/// Our hashes as `/sync/hashes` bodies: one list, or hex-prefix slices when too many.
fn slices(mut hashes: Vec<MessageHash>, max: usize) -> Vec<HashList> {
    if hashes.len() <= max {
        return vec![HashList {
            hashes: hashes.iter().map(|h| h.to_string()).collect(),
            prefix: None,
        }];
    }
    hashes.sort();
    let mut out = Vec::new();
    for nibble in 0..16u8 {
        let prefix = format!("{nibble:x}");
        let mut slice: Vec<String> = hashes
            .iter()
            .filter(|h| h.as_bytes()[0] >> 4 == nibble)
            .map(|h| h.to_string())
            .collect();
        // Beyond 16 × max hashes a slice is cut: the rest waits for later rounds.
        slice.truncate(max);
        out.push(HashList {
            hashes: slice,
            prefix: Some(prefix),
        });
    }
    out
}
