//! The mesh: pushing new packets to peers (broadcast), pulling what we lack from them (hash
//! sync), exchanging relay addresses (server sync), and auditing peers so that those that
//! drop, forge, refuse or stall are scored down and quarantined.

pub mod client;
pub mod peer;
pub mod reconcile;
pub mod sketch;
pub mod tree;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use client::{PeerClient, PeerFault, PeerStatus, PushOutcome, ReconcileOutcome};
use jasper_core::reconcile::{CodedSymbol, ReconcileError, reconcile as decode_difference};
use parking_lot::Mutex;
use peer::{Offence, Origin, PeerAddr, PeerBook};
use reconcile::{MAX_RANGE_ITEMS, ReconcileRequest};
use sketch::{HashPrefix, SKETCH_SYMBOLS, SetSlice, sketch_of};
use tree::Tree;

/// Hashes per `/fetch` when pulling from a peer.
const PULL_CHUNK: usize = 500;
/// Acknowledged packets checked per peer per sync round.
const AUDIT_SAMPLE: usize = 64;
/// Peers synced at once.
const SYNC_CONCURRENCY: usize = 8;

/// How a reconciliation with a peer ended.
enum Reconciled {
    /// The hashes the peer holds and we lack (the peer finds what it lacks in its own round).
    Lacking(Vec<MessageHash>),
    /// The peer misbehaved or could not be reached; it has been scored.
    Faulted,
    /// The peer lacks `/sync/reconcile`.
    Unsupported,
    /// More differences than the kept symbols can find.
    TooDifferent,
}

/// How reconciling one part of the set ended.
enum Part {
    /// The hashes the peer holds and we lack, and the size of the whole difference.
    Found {
        theirs: Vec<MessageHash>,
        differences: usize,
    },
    Faulted,
    Unsupported,
    /// More differences than the kept symbols find, or more packets than a ranged sketch
    /// may be built of.
    TooDifferent,
}

/// Symbols first asked for of a slice in a bisection (doubled until they decode); most
/// slices but those on the path to the differences are settled by this many.
const BISECT_FIRST_ASK: usize = 256;
/// Ranges reconciled with one peer in one round: at 1,024 to 4,096 symbols (45 to 180 kB)
/// each, at most about 90 MB, which finds several hundred thousand differences.
const MAX_BISECT_PARTS: usize = 512;

/// How long a peer that lacks `/sync/reconcile` is synced by hashes before it is asked again.
const NO_RECONCILE_RETRY: Duration = Duration::from_secs(600);

/// How often queued announcements are sent and announced hashes checked for grafting: the
/// batching delay of a lazy link.
const TREE_TICK: Duration = Duration::from_millis(50);
/// A peer's `/status` (its extensions and limits) is asked again after this long, and after
/// [`STATUS_RETRY`] when it did not answer.
const STATUS_REFRESH: Duration = Duration::from_secs(300);
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// Why packets are pulled from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullKind {
    /// Sync found that the peer holds them: one it does not serve made a false claim.
    Sync,
    /// The peer announced them and they have not come by push: fetch them and push them on
    /// down our part of the tree. Announcements are hints, so what is not served is no offence.
    Graft,
}

pub struct Mesh {
    pub book: PeerBook,
    client: PeerClient,
    /// Hashes a sync round is pulling now, from whichever peer claimed them first.
    pulling: Mutex<HashSet<MessageHash>>,
    /// Peers that answered that they lack `/sync/reconcile`, with when.
    no_reconcile: Mutex<HashMap<PeerAddr, std::time::Instant>>,
    /// The difference found with each peer last time: how many symbols to ask for first.
    last_difference: Mutex<HashMap<PeerAddr, usize>>,
    /// Each peer's last `/status` (`None`: it did not answer), with when it was asked.
    statuses: Mutex<HashMap<PeerAddr, (Instant, Option<PeerStatus>)>>,
    /// Which peers are pushed new packets and which are only told their hashes.
    pub tree: Tree,
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
            no_reconcile: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashSet::new()),
            last_difference: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
            tree: Tree::new(config.tree.clone(), instance.clone()),
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

    /// Pushes each queued packet to the eager peers but the one it came from, and queues its
    /// hash for the lazy ones (`tree.rs`).
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
            let active = self.book.active();
            let targets = self.tree.targets(&active, job.from.as_ref());
            if !targets.announce.is_empty() {
                self.tree.queue_announcement(&targets.announce, job.hash);
            }
            for peer in targets.push {
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
                        Ok(PushOutcome::Accepted | PushOutcome::AlreadyHeld) => {
                            mesh.book.record_ok(&peer);
                            mesh.book.record_ack(&peer, job.hash, job.expires_at);
                        }
                        Ok(PushOutcome::Conflict | PushOutcome::Expired) => {
                            mesh.book.record_ok(&peer)
                        }
                        Ok(PushOutcome::Declined) => {}
                        Err(f) => mesh.fault(&peer, &f),
                    }
                });
            }
        }
    }

    /// The tree's upkeep, every [`TREE_TICK`]: chooses the parent again from the beacons
    /// heard, sends queued announcements and due beacons, grafts what was announced and has
    /// not come, and keeps peers' `/status` fresh (whether they offer `mesh.tree`, and their
    /// limits).
    pub async fn run_tree(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(TREE_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status_check = Instant::now() - STATUS_RETRY;
        loop {
            tokio::select! {
                _ = ticker.tick() => {},
                _ = stop.cancelled() => return,
            }
            if last_status_check.elapsed() >= STATUS_RETRY {
                last_status_check = Instant::now();
                self.clone().refresh_statuses().await;
            }
            let active = self.book.active();
            self.tree.recompute(&active);
            for out in self.tree.take_outgoing(&active) {
                let mesh = self.clone();
                tokio::spawn(async move {
                    let trusted = mesh.trusted(&out.peer);
                    let sent = mesh
                        .client
                        .announce(&out.peer, trusted, &out.hashes, out.beacon.as_ref())
                        .await;
                    if let Err(f) = sent {
                        mesh.fault(&out.peer, &f);
                    }
                });
            }
            for (peer, hashes) in self.tree.due() {
                let mesh = self.clone();
                tokio::spawn(async move {
                    let missing = match mesh.ingest.store.unknown(hashes).await {
                        Ok(m) => m,
                        Err(e) => return tracing::error!(error = %e, "store failed in graft"),
                    };
                    if missing.is_empty() || !mesh.book.active().contains(&peer) {
                        return;
                    }
                    tracing::debug!(peer = %peer, missing = missing.len(), "grafting");
                    let trusted = mesh.trusted(&peer);
                    mesh.pull(&peer, trusted, &missing, PullKind::Graft).await;
                });
            }
        }
    }

    /// Asks `/status` of every active peer not asked lately.
    async fn refresh_statuses(self: Arc<Self>) {
        let due: Vec<PeerAddr> = {
            let statuses = self.statuses.lock();
            self.book
                .active()
                .into_iter()
                .filter(|p| match statuses.get(p) {
                    None => true,
                    Some((at, Some(_))) => at.elapsed() >= STATUS_REFRESH,
                    Some((at, None)) => at.elapsed() >= STATUS_RETRY,
                })
                .collect()
        };
        let mut running = FuturesUnordered::new();
        for peer in due {
            let mesh = self.clone();
            running.push(async move {
                let status = mesh.client.status(&peer, mesh.trusted(&peer)).await;
                mesh.learn_status(peer, status);
            });
        }
        while running.next().await.is_some() {}
    }

    /// Keeps what a peer's `/status` said (`None`: it did not answer).
    fn learn_status(&self, peer: PeerAddr, status: Option<PeerStatus>) {
        if let Some(s) = &status {
            self.tree.set_capable(&peer, s.offers("mesh.tree"));
        }
        self.statuses.lock().insert(peer, (Instant::now(), status));
    }

    /// Whether the peer's last `/status` lists this extension.
    fn peer_offers(&self, peer: &PeerAddr, extension: &str) -> bool {
        self.statuses
            .lock()
            .get(peer)
            .and_then(|(_, s)| s.as_ref().map(|s| s.offers(extension)))
            .unwrap_or(false)
    }

    /// Most symbols to ask of `peer`: ours, or fewer if its `/status` says it keeps fewer.
    fn reconcile_cap(&self, peer: &PeerAddr) -> usize {
        let theirs = self
            .statuses
            .lock()
            .get(peer)
            .and_then(|(_, s)| s.as_ref()?.reconcile_symbols);
        theirs.map_or(SKETCH_SYMBOLS, |n| n.clamp(1, SKETCH_SYMBOLS))
    }

    /// What this relay's peer client sent and received, by route (`/metrics`).
    pub fn traffic(&self) -> Vec<(&'static str, u64, u64, u64)> {
        self.client.traffic.snapshot()
    }

    /// Bytes and requests this relay spent on its peers, and the tree's state (`/status`).
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "broadcast": self.tree.report(),
            "traffic": self.client.traffic.report(),
        })
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
        if self.may_reconcile(peer) {
            match self.reconcile_with(peer, trusted).await {
                Reconciled::Lacking(theirs) => {
                    let wanted = match self.ingest.store.unknown(theirs).await {
                        Ok(w) => w,
                        Err(e) => return tracing::error!(error = %e, "store failed during sync"),
                    };
                    return self.pull_and_audit(peer, trusted, wanted).await;
                }
                Reconciled::Faulted => return,
                Reconciled::Unsupported => {
                    self.no_reconcile
                        .lock()
                        .insert(peer.clone(), std::time::Instant::now());
                }
                Reconciled::TooDifferent => {
                    tracing::info!(peer = %peer, "too many differences to reconcile; hash sync");
                }
            }
        }
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
        self.pull_and_audit(peer, trusted, wanted).await;
    }

    /// Whether to try `/sync/reconcile` with this peer: unless it lately answered that it
    /// lacks the extension (asked again after [`NO_RECONCILE_RETRY`], in case it was upgraded).
    fn may_reconcile(&self, peer: &PeerAddr) -> bool {
        let mut no = self.no_reconcile.lock();
        match no.get(peer) {
            Some(at) if at.elapsed() < NO_RECONCILE_RETRY => false,
            Some(_) => {
                no.remove(peer);
                true
            }
            None => true,
        }
    }

    /// Reconciles with the peer's sketch of its whole live set, and when the difference is
    /// more than that finds, with sketches of ever narrower `expires_at` ranges
    /// ([`Mesh::bisect`]) if the peer offers them; else the caller falls back to hash sync.
    async fn reconcile_with(&self, peer: &PeerAddr, trusted: bool) -> Reconciled {
        if !self.statuses.lock().contains_key(peer) {
            // Before the first round: its status says whether it offers ranges.
            let status = self.client.status(peer, trusted).await;
            self.learn_status(peer.clone(), status);
        }
        let guess = self.last_difference.lock().get(peer).copied().unwrap_or(0);
        let want = first_ask(guess);
        match self.reconcile_part(peer, trusted, None, want).await {
            Part::Found {
                theirs,
                differences,
            } => {
                self.last_difference
                    .lock()
                    .insert(peer.clone(), differences);
                Reconciled::Lacking(theirs)
            }
            Part::Faulted => Reconciled::Faulted,
            Part::Unsupported => Reconciled::Unsupported,
            Part::TooDifferent if self.peer_offers(peer, "sync.reconcile.range") => {
                self.bisect(peer, trusted).await
            }
            Part::TooDifferent => Reconciled::TooDifferent,
        }
    }

    /// Splits the live set by `expires_at` (the same on every relay) and reconciles each part
    /// whose difference its sketch cannot find as two halves, until every part decodes: bytes
    /// in proportion to the differences times the depth, never to the store, so relays of
    /// any size sync after any partition. At most [`MAX_BISECT_PARTS`] parts per round; the
    /// rest waits for the next.
    async fn bisect(&self, peer: &PeerAddr, trusted: bool) -> Reconciled {
        let now = crate::store::unix_now();
        // Nothing we hold expires later than this (ingest caps expiry at our TTL); the part
        // above it is one range of its own.
        let horizon = now + self.config.ttl.as_secs() + 60;
        // The whole set did not decode: start from its halves (below the horizon) and the
        // rest.
        let mid = now + 1 + (horizon - now - 1) / 2;
        let every = HashPrefix::default();
        let mut parts = vec![
            SetSlice {
                from: horizon,
                to: u64::MAX,
                prefix: every,
            },
            SetSlice {
                from: mid,
                to: horizon,
                prefix: every,
            },
            SetSlice {
                from: now + 1,
                to: mid,
                prefix: every,
            },
        ];
        let (mut theirs, mut differences, mut asked) = (Vec::new(), 0, 0);
        while let Some(range) = parts.pop() {
            if asked == MAX_BISECT_PARTS {
                tracing::info!(peer = %peer, left = parts.len() + 1, "bisection continues next round");
                break;
            }
            asked += 1;
            match self
                .reconcile_part(peer, trusted, Some(range), BISECT_FIRST_ASK)
                .await
            {
                Part::Found {
                    theirs: t,
                    differences: d,
                } => {
                    theirs.extend(t);
                    differences += d;
                }
                Part::Faulted => return Reconciled::Faulted,
                Part::Unsupported => return Reconciled::TooDifferent,
                Part::TooDifferent => parts.extend(split(range, horizon)),
            }
        }
        tracing::info!(peer = %peer, parts = asked, differences, "reconciled by ranges");
        self.last_difference
            .lock()
            .insert(peer.clone(), differences);
        Reconciled::Lacking(theirs)
    }

    /// Our symbols of the whole live set (kept up to date) or of a range (built from the
    /// store); `None` when the range holds more than a ranged sketch may.
    async fn local_symbols(
        &self,
        range: Option<SetSlice>,
    ) -> Result<Option<Vec<CodedSymbol>>, RelayError> {
        let Some(range) = range else {
            return Ok(Some(self.ingest.sketch.symbols()));
        };
        let entries = self
            .ingest
            .store
            .live_range(range.from, range.to, MAX_RANGE_ITEMS + 1)
            .await?;
        if entries.len() > MAX_RANGE_ITEMS {
            return Ok(None);
        }
        let (_, symbols) = tokio::task::spawn_blocking(move || sketch_of(&entries, range))
            .await
            .map_err(|e| RelayError::Storage(format!("sketch task failed: {e}")))?;
        Ok(Some(symbols))
    }

    /// Reconciles one part of the set (all of it with `range: None`): asks for `want`
    /// symbols, then for twice as many of the same snapshot until they decode. A peer whose
    /// symbols contradict themselves is scored like one that lies in hash sync; what it
    /// claims to hold is still validated and checked when pulled.
    async fn reconcile_part(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        range: Option<SetSlice>,
        want: usize,
    ) -> Part {
        let cap = self.reconcile_cap(peer);
        let mut want = want.min(cap);
        let mut local = match self.local_symbols(range).await {
            Ok(Some(l)) => l,
            Ok(None) => return Part::TooDifferent,
            Err(e) => {
                tracing::error!(error = %e, "cannot build our sketch");
                return Part::Faulted;
            }
        };
        let mut remote: Vec<CodedSymbol> = Vec::new();
        let mut snapshot = None;
        let mut restarts = 0;
        loop {
            let req = ReconcileRequest {
                from: remote.len() as u64,
                count: (want - remote.len()) as u64,
                snapshot,
                range,
            };
            match self.client.reconcile(peer, trusted, &req).await {
                Ok(ReconcileOutcome::Answer(a)) => {
                    snapshot = Some(a.snapshot);
                    remote.extend(a.symbols);
                }
                Ok(ReconcileOutcome::SnapshotGone) if restarts < 2 => {
                    restarts += 1;
                    (remote, snapshot) = (Vec::new(), None);
                    local = match self.local_symbols(range).await {
                        Ok(Some(l)) => l,
                        Ok(None) => return Part::TooDifferent,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot build our sketch");
                            return Part::Faulted;
                        }
                    };
                    continue;
                }
                Ok(ReconcileOutcome::SnapshotGone | ReconcileOutcome::TooLarge) => {
                    return Part::TooDifferent;
                }
                Ok(ReconcileOutcome::Unsupported) => return Part::Unsupported,
                Err(f) => {
                    self.fault(peer, &f);
                    return Part::Faulted;
                }
            }
            match decode_difference(&remote, &local[..remote.len()]) {
                Ok(diff) => {
                    if !diff.is_empty() {
                        tracing::debug!(
                            peer = %peer,
                            theirs = diff.remote_only.len(),
                            ours = diff.local_only.len(),
                            symbols = remote.len(),
                            ?range,
                            "reconciled"
                        );
                    }
                    return Part::Found {
                        differences: diff.len(),
                        theirs: diff
                            .remote_only
                            .iter()
                            .map(|h| MessageHash::from_bytes(*h))
                            .collect(),
                    };
                }
                Err(ReconcileError::NeedMore) if remote.len() < cap => {
                    want = (remote.len() * 2).min(cap);
                }
                Err(ReconcileError::NeedMore) => return Part::TooDifferent,
                Err(ReconcileError::Inconsistent) => {
                    self.book.record_offence(
                        peer,
                        Offence::FalseClaim,
                        "/sync/reconcile: symbols that contradict themselves",
                    );
                    return Part::Faulted;
                }
            }
        }
    }

    /// Pulls what the peer has and we lack, audits it, and scores the round.
    /// Hashes being pulled by one peer's sync are not pulled from another meanwhile (the
    /// peers of a relay back from a partition all hold what it missed); one whose pull fails
    /// is found again in the next round.
    async fn pull_and_audit(&self, peer: &PeerAddr, trusted: bool, wanted: Vec<MessageHash>) {
        let wanted: Vec<MessageHash> = {
            let mut pulling = self.pulling.lock();
            wanted.into_iter().filter(|h| pulling.insert(*h)).collect()
        };
        // Another peer's pull may have stored some since they were found missing.
        let claimed = wanted.clone();
        let wanted = match self.ingest.store.unknown(wanted).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "store failed during sync");
                Vec::new()
            }
        };
        let pulled = self.pull(peer, trusted, &wanted, PullKind::Sync).await;
        {
            let mut pulling = self.pulling.lock();
            claimed.iter().for_each(|h| {
                pulling.remove(h);
            });
        }
        let audited = self.audit(peer, trusted).await;
        if pulled && audited {
            self.book.record_ok(peer);
        }
        if !wanted.is_empty() {
            tracing::info!(peer = %peer, wanted = wanted.len(), "sync pulled missing packets");
        }
    }

    /// Fetches `wanted` from `peer`, verifying every packet before storing it. Returns false
    /// if the peer misbehaved.
    pub async fn pull(
        &self,
        peer: &PeerAddr,
        trusted: bool,
        wanted: &[MessageHash],
        kind: PullKind,
    ) -> bool {
        let graft = kind == PullKind::Graft;
        let source = match kind {
            PullKind::Sync => Source::Sync,
            PullKind::Graft => Source::Graft(peer.clone()),
        };
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
                match self.ingest.accept(np, source.clone()).await {
                    // Over a quota here: not the peer's fault that it holds it (it may keep
                    // more); refused like any other sender's packet, counted by ingest.
                    Ok(_)
                    | Err(RelayError::HashConflict(_))
                    | Err(RelayError::Expired(_))
                    | Err(RelayError::RecipientFull(_))
                    | Err(RelayError::StorageFull) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "store failed during sync");
                        return true;
                    }
                }
            }
            let missing = chunk.iter().filter(|h| !received.contains(h)).count();
            if missing > 0 && graft {
                tracing::debug!(peer = %peer, missing, "announced packets not served");
            } else if missing > 0 {
                self.book.record_offence(
                    peer,
                    Offence::FalseClaim,
                    &format!(
                        "claimed {} hashes in sync but did not serve {missing}",
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
            self.pull(&caller, trusted, &wanted, PullKind::Sync).await;
        }
    }
}

/// Symbols first asked of a peer whose last difference was `guess`: about 1.6 per difference
/// (decoding needs 1.35 to 1.5 on average) plus 64, in multiples of 64, at least 256 (11 kB,
/// enough for about 180 differences). Measured: 300 differences found in two round trips and
/// 22.5 kB from a peer not reconciled before, in one from one whose last difference was
/// similar.
fn first_ask(guess: usize) -> usize {
    (guess.saturating_mul(8) / 5 + 64)
        .next_multiple_of(64)
        .max(256)
}

/// A slice of the set whose difference did not decode, as smaller ones: two halves of its
/// time range (the part above `horizon`, where nothing of ours is, first cut there), or when
/// it is one second, its 16 sub-prefixes (a burst of packets expiring in the same second).
fn split(slice: SetSlice, horizon: u64) -> Vec<SetSlice> {
    let mid = if slice.to == u64::MAX && slice.from < horizon {
        horizon
    } else {
        slice.from + (slice.to - slice.from) / 2
    };
    if mid > slice.from {
        return vec![
            SetSlice { from: mid, ..slice },
            SetSlice { to: mid, ..slice },
        ];
    }
    match slice.prefix.children() {
        Some(children) => children
            .map(|prefix| SetSlice { prefix, ..slice })
            .collect(),
        None => {
            // 2^-64 of a second's packets differing by thousands: not in this universe.
            tracing::warn!(?slice, "a slice that cannot be split is left unreconciled");
            Vec::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(from: u64, to: u64, prefix: &str) -> SetSlice {
        SetSlice {
            from,
            to,
            prefix: HashPrefix::parse(prefix).unwrap_or_default(),
        }
    }

    #[test]
    fn slices_split_by_time_then_by_prefix() {
        // The open top is cut at the horizon first, then halved.
        assert_eq!(
            split(slice(100, u64::MAX, ""), 1000),
            vec![slice(1000, u64::MAX, ""), slice(100, 1000, "")]
        );
        assert_eq!(
            split(slice(1000, u64::MAX, ""), 1000),
            vec![
                slice(1000 + (u64::MAX - 1000) / 2, u64::MAX, ""),
                slice(1000, 1000 + (u64::MAX - 1000) / 2, "")
            ]
        );
        assert_eq!(
            split(slice(10, 20, "a"), 1000),
            vec![slice(15, 20, "a"), slice(10, 15, "a")]
        );
        // One second: its 16 sub-prefixes, which between them cover it once.
        let parts = split(slice(7, 8, "3f"), 1000);
        assert_eq!(parts.len(), 16);
        assert!(parts.iter().all(|p| (p.from, p.to) == (7, 8)));
        let hash = MessageHash::of_message("some packet");
        let under = |prefix: &str| parts.iter().filter(|p| p.prefix.to_hex() == prefix).count();
        assert_eq!(under("3f0") + under("3ff"), 2);
        let top = slice(7, 8, "");
        assert_eq!(
            split(top, 1000)
                .iter()
                .filter(|p| p.contains(&hash, 7))
                .count(),
            1
        );
        // The longest prefix of one second cannot be split: nothing, not a loop.
        assert!(split(slice(7, 8, "0123456789abcdef"), 1000).is_empty());
    }

    #[test]
    fn the_first_ask_grows_with_the_last_difference() {
        assert_eq!(first_ask(0), 256);
        assert_eq!(first_ask(100), 256);
        // 300 differences need about 420 symbols: asked at once.
        assert_eq!(first_ask(300), 576);
        assert_eq!(first_ask(2000) % 64, 0);
        assert!(first_ask(2000) >= 3200);
        assert_eq!(first_ask(usize::MAX / 2) % 64, 0);
    }
}
