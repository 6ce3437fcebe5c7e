//! Broadcast along one spanning tree of the mesh: a new packet is pushed whole to the peers
//! that are tree links (*eager*) and only announced (its hash) to the others (*lazy*).
//!
//! The tree is a shortest-path tree towards a root all relays agree on, the relay with the
//! smallest instance id (as a bridge's spanning tree protocol elects one), built from small
//! *beacons* that ride on `/mesh/announce`:
//!
//! - Every relay tells its tree peers what it knows: the root, the root's stamp (`seq`), its
//!   distance to the root, and its parent (the peer it reaches the root through). The root
//!   stamps a new `seq` every [`BEACON_EVERY`]; others carry their parent's stamp on.
//! - A relay's parent is the peer nearest the root among those whose beacon still advances
//!   (a beacon not advanced for [`BEACON_STALE`] is not followed: a root that died, or a loop
//!   left by a break, stops advancing, so neither is followed for long). A relay keeps its
//!   parent while it is among the nearest, so a tree once formed does not flap.
//! - A link is eager when one end is the other's parent. Every relay agrees on both ends of
//!   every link after one beacon, so the eager links are exactly a tree: R − 1 of them, each
//!   packet crossing each relay once, whatever the concurrency of packets in flight.
//!
//! An earlier version let the tree emerge from traffic (Plumtree: prune a link that carried a
//! duplicate). Measured at R = 100 on two cores, packets in flight together found different
//! redundant links in one cycle and cut the tree, grafts healed it with links held eager, and
//! it never settled (1.8 to 2.6 × the optimal bytes, `docs/benchmarks.md`).
//!
//! Safety nets, so a broken or forming tree costs latency, never packets:
//! - A peer without a fresh beacon (not heard yet, or stale) is pushed everything, as is a
//!   peer whose `/status` lacks `mesh.tree` (the reference relay, older ones): until the tree
//!   forms, and while it re-forms, relays flood as the spec does.
//! - Lazy peers are sent the hashes in batches. A hash announced to us that has not arrived
//!   by push after [`TreeSettings::graft_after`] (to twice that, at random) is fetched from
//!   the announcer (a *graft*) and pushed on down our own part of the tree.
//! - A relay with fewer than [`TreeSettings::min_peers`] peers pushes to all of them: few peers
//!   cost little, and each of them is then one hop away.
//! - The periodic reconciliation still finds anything the tree missed.
//!
//! Beacons and announcements are hints from peers, not facts: a peer that claims to be near
//! the root draws traffic to itself, and if it then drops what it is pushed, the relays below
//! it get every packet by grafts from their lazy peers instead (slower, still complete). A
//! peer that announces what it cannot serve is not scored (anyone can name a peer's address in
//! a header).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jasper_core::MessageHash;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::peer::PeerAddr;

/// Most hashes in one `/mesh/announce` body.
pub const MAX_ANNOUNCE_HASHES: usize = 4096;
/// Announced-but-missing hashes remembered at once; beyond it announcements are ignored
/// (reconciliation finds those packets), so peers cannot make us hold unbounded state.
const MAX_AWAITED: usize = 65_536;
/// Hashes queued to announce to one peer; beyond it the oldest are dropped (same reason).
const MAX_QUEUED_PER_PEER: usize = 4 * MAX_ANNOUNCE_HASHES;
/// How often the root stamps a new beacon, and how often a beacon is re-sent to a peer when
/// nothing changed.
pub const BEACON_EVERY: Duration = Duration::from_secs(3);
/// A peer whose beacon has not advanced for this long is not followed (and is pushed
/// everything until it advances again).
pub const BEACON_STALE: Duration = Duration::from_secs(12);
/// Longest distance to the root accepted; longer is a loop counting up.
pub const MAX_DISTANCE: u32 = 64;
/// Longest instance id accepted in a beacon.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone)]
pub struct TreeSettings {
    /// Off: push every packet to every peer (the spec's flood).
    pub enabled: bool,
    /// Below this many active peers, every peer is eager.
    pub min_peers: usize,
    /// How long an announced hash may be missing before it is grafted.
    pub graft_after: Duration,
}

impl Default for TreeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_peers: 4,
            graft_after: Duration::from_millis(500),
        }
    }
}

/// What one relay tells its peers of the tree (the `tree` field of `/mesh/announce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// The sender's instance id.
    pub id: String,
    /// The root it follows (itself when it knows no smaller id).
    pub root: String,
    /// The root's stamp, carried on unchanged: it rises while the root lives.
    pub seq: u64,
    /// Hops to the root.
    pub distance: u32,
    /// The instance id of the peer it reaches the root through (`null` at the root).
    pub parent: Option<String>,
}

impl Beacon {
    /// Checks a beacon from a peer; the error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = |name: &str, v: &str| {
            if v.is_empty() || v.len() > MAX_ID_LEN {
                return Err(format!("`tree.{name}`: 1 to {MAX_ID_LEN} characters"));
            }
            if !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("`tree.{name}`: letters, digits, `-` and `_` only"));
            }
            Ok(())
        };
        id_ok("id", &self.id)?;
        id_ok("root", &self.root)?;
        if let Some(p) = &self.parent {
            id_ok("parent", p)?;
        }
        if self.distance > MAX_DISTANCE {
            return Err(format!("`tree.distance`: at most {MAX_DISTANCE}"));
        }
        if (self.distance == 0) != (self.parent.is_none())
            || (self.distance == 0) != (self.root == self.id)
        {
            return Err("`tree`: distance 0, no parent and root = id go together".into());
        }
        Ok(())
    }
}

/// Who gets a packet, and how.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub push: Vec<PeerAddr>,
    pub announce: Vec<PeerAddr>,
}

/// One `/mesh/announce` to send: hashes, a beacon, or both.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub peer: PeerAddr,
    pub hashes: Vec<MessageHash>,
    pub beacon: Option<Beacon>,
}

struct Awaited {
    from: PeerAddr,
    /// When to graft if it has not come: `graft_after` to twice that after it was first
    /// heard of, at random, so that relays missing the same packet do not all fetch at once.
    due: Instant,
}

/// A peer's last beacon, and when it last advanced (a new root or a higher stamp).
struct PeerBeacon {
    beacon: Beacon,
    advanced_at: Instant,
}

struct Position {
    /// Peers that offer `mesh.tree` (learned from their `/status`, or from a beacon).
    capable: HashSet<PeerAddr>,
    own: Beacon,
    parent: Option<PeerAddr>,
    /// Bumped whenever `own` changes, so peers are told at the next tick.
    version: u64,
    beacons: HashMap<PeerAddr, PeerBeacon>,
    /// What each peer was last sent: the version, and when.
    told: HashMap<PeerAddr, (u64, Instant)>,
    /// The active peers at the last [`Tree::recompute`] (for `/status`).
    active: Vec<PeerAddr>,
}

pub struct Tree {
    settings: TreeSettings,
    id: String,
    /// What the tree is made of, under one lock: two locks taken in opposite orders by two
    /// paths (the broadcaster's `targets` and the announcer's `take_outgoing`) deadlocked a
    /// relay's whole runtime once.
    position: Mutex<Position>,
    queued: Mutex<HashMap<PeerAddr, Vec<MessageHash>>>,
    awaited: Mutex<HashMap<MessageHash, Awaited>>,
}

/// The root's stamp: the wall clock in [`BEACON_EVERY`] steps, so that it keeps rising across
/// the root's restarts (only compared between beacons of one root).
fn stamp_now() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / BEACON_EVERY.as_secs()
}

impl Tree {
    /// `id`: this relay's instance id (the same for every process sharing one store).
    pub fn new(settings: TreeSettings, id: String) -> Self {
        let own = Beacon {
            id: id.clone(),
            root: id.clone(),
            seq: stamp_now(),
            distance: 0,
            parent: None,
        };
        Self {
            settings,
            id,
            position: Mutex::new(Position {
                capable: HashSet::new(),
                own,
                parent: None,
                version: 0,
                beacons: HashMap::new(),
                told: HashMap::new(),
                active: Vec::new(),
            }),
            queued: Mutex::new(HashMap::new()),
            awaited: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &TreeSettings {
        &self.settings
    }

    /// Records what a peer's `/status` said about the extension.
    pub fn set_capable(&self, peer: &PeerAddr, capable: bool) {
        let mut pos = self.position.lock();
        if capable {
            pos.capable.insert(peer.clone());
        } else {
            pos.capable.remove(peer);
            pos.beacons.remove(peer);
        }
    }

    pub fn is_capable(&self, peer: &PeerAddr) -> bool {
        self.position.lock().capable.contains(peer)
    }

    /// A beacon `peer` sent (checked by the caller).
    pub fn hear_beacon(&self, peer: &PeerAddr, beacon: Beacon) {
        self.hear_beacon_at(peer, beacon, Instant::now());
    }

    fn hear_beacon_at(&self, peer: &PeerAddr, beacon: Beacon, now: Instant) {
        // Whoever sends beacons speaks the tree, whatever its `/status` said last.
        let mut pos = self.position.lock();
        pos.capable.insert(peer.clone());
        let advanced_at = match pos.beacons.get(peer) {
            Some(old) if old.beacon.root == beacon.root && beacon.seq <= old.beacon.seq => {
                old.advanced_at
            }
            _ => now,
        };
        pos.beacons.insert(
            peer.clone(),
            PeerBeacon {
                beacon,
                advanced_at,
            },
        );
    }

    /// Chooses the root and the parent again from the peers' beacons; `active` are the peers
    /// not quarantined. Called every tick and after each beacon heard.
    pub fn recompute(&self, active: &[PeerAddr]) {
        self.recompute_at(active, Instant::now(), stamp_now());
    }

    fn recompute_at(&self, active: &[PeerAddr], now: Instant, stamp: u64) {
        let mut pos = self.position.lock();
        pos.beacons.retain(|p, _| active.contains(p));
        let fresh = |b: &PeerBeacon| now.duration_since(b.advanced_at) < BEACON_STALE;
        // Peers we could follow: fresh, towards a root smaller than us, not through us.
        let followable: Vec<(&PeerAddr, &Beacon)> = pos
            .beacons
            .iter()
            .filter(|(_, b)| {
                fresh(b)
                    && b.beacon.root < self.id
                    && b.beacon.distance < MAX_DISTANCE
                    && b.beacon.id != self.id
                    && b.beacon.parent.as_deref() != Some(self.id.as_str())
            })
            .map(|(p, b)| (p, &b.beacon))
            .collect();
        let root = followable.iter().map(|(_, b)| &b.root).min().cloned();
        let (own, parent) = match root {
            None => (
                Beacon {
                    id: self.id.clone(),
                    root: self.id.clone(),
                    seq: stamp,
                    distance: 0,
                    parent: None,
                },
                None,
            ),
            Some(root) => {
                let nearest = followable
                    .iter()
                    .filter(|(_, b)| b.root == root)
                    .map(|(_, b)| b.distance)
                    .min()
                    .expect("a followable peer has this root");
                let candidates: Vec<&PeerAddr> = followable
                    .iter()
                    .filter(|(_, b)| b.root == root && b.distance == nearest)
                    .map(|(p, _)| *p)
                    .collect();
                let parent = match &pos.parent {
                    Some(p) if candidates.contains(&p) => p.clone(),
                    _ => (*candidates.iter().min().expect("one candidate")).clone(),
                };
                let theirs = &pos.beacons[&parent].beacon;
                (
                    Beacon {
                        id: self.id.clone(),
                        root,
                        seq: theirs.seq,
                        distance: theirs.distance + 1,
                        parent: Some(theirs.id.clone()),
                    },
                    Some(parent),
                )
            }
        };
        if parent != pos.parent {
            tracing::debug!(parent = ?parent, root = %own.root, distance = own.distance, "broadcast tree: new parent");
        }
        if own != pos.own || parent != pos.parent {
            pos.own = own;
            pos.parent = parent;
            pos.version += 1;
        }
        pos.active = active.to_vec();
    }

    /// Whether every packet is pushed to `peer`: a tree link, a peer without the extension, or
    /// one whose place in the tree we do not know.
    fn eager(&self, pos: &Position, peer: &PeerAddr, now: Instant) -> bool {
        if !pos.capable.contains(peer) || pos.parent.as_ref() == Some(peer) {
            return true;
        }
        match pos.beacons.get(peer) {
            None => true,
            Some(b) => {
                now.duration_since(b.advanced_at) >= BEACON_STALE
                    || b.beacon.parent.as_deref() == Some(self.id.as_str())
            }
        }
    }

    /// Splits the active peers (minus the one the packet came from) into those pushed the
    /// packet and those only told its hash.
    pub fn targets(&self, active: &[PeerAddr], from: Option<&PeerAddr>) -> Targets {
        let mut t = Targets::default();
        let everyone = !self.settings.enabled || active.len() < self.settings.min_peers;
        let now = Instant::now();
        let pos = self.position.lock();
        for peer in active.iter().filter(|p| Some(*p) != from) {
            if everyone || self.eager(&pos, peer, now) {
                t.push.push(peer.clone());
            } else {
                t.announce.push(peer.clone());
            }
        }
        t
    }

    /// Queues `hash` to be announced to each of `peers`.
    pub fn queue_announcement(&self, peers: &[PeerAddr], hash: MessageHash) {
        let mut queued = self.queued.lock();
        for peer in peers {
            let q = queued.entry(peer.clone()).or_default();
            if q.len() >= MAX_QUEUED_PER_PEER {
                q.drain(..MAX_ANNOUNCE_HASHES);
            }
            q.push(hash);
        }
    }

    /// Everything to send this tick: the queued hashes, in bodies of at most
    /// [`MAX_ANNOUNCE_HASHES`], and our beacon to each active peer with the extension that
    /// has not had this version of it, or not for [`BEACON_EVERY`] (riding on the first body
    /// to that peer when there are hashes too).
    pub fn take_outgoing(&self, active: &[PeerAddr]) -> Vec<Outgoing> {
        self.take_outgoing_at(active, Instant::now())
    }

    fn take_outgoing_at(&self, active: &[PeerAddr], now: Instant) -> Vec<Outgoing> {
        let queued = std::mem::take(&mut *self.queued.lock());
        let mut out = Vec::new();
        let mut beacons = HashMap::new();
        if self.settings.enabled {
            let mut pos = self.position.lock();
            let (version, own) = (pos.version, pos.own.clone());
            let capable: Vec<&PeerAddr> =
                active.iter().filter(|p| pos.capable.contains(*p)).collect();
            for peer in capable {
                let due = match pos.told.get(peer) {
                    Some((v, at)) => *v != version || now.duration_since(*at) >= BEACON_EVERY,
                    None => true,
                };
                if due {
                    pos.told.insert(peer.clone(), (version, now));
                    beacons.insert(peer.clone(), own.clone());
                }
            }
            pos.told.retain(|p, _| active.contains(p));
        }
        for (peer, hashes) in queued {
            let mut beacon = beacons.remove(&peer);
            for chunk in hashes.chunks(MAX_ANNOUNCE_HASHES) {
                out.push(Outgoing {
                    peer: peer.clone(),
                    hashes: chunk.to_vec(),
                    beacon: beacon.take(),
                });
            }
        }
        for (peer, beacon) in beacons {
            out.push(Outgoing {
                peer,
                hashes: Vec::new(),
                beacon: Some(beacon),
            });
        }
        out
    }

    /// `from` announced these hashes (the caller has dropped those it holds). The first
    /// announcer of a hash is the one fetched from if it does not arrive.
    pub fn heard(&self, from: &PeerAddr, hashes: impl IntoIterator<Item = MessageHash>) {
        let now = Instant::now();
        let after = self.settings.graft_after;
        let mut awaited = self.awaited.lock();
        for h in hashes {
            if awaited.len() >= MAX_AWAITED {
                break;
            }
            awaited.entry(h).or_insert_with(|| Awaited {
                from: from.clone(),
                due: now + after.mul_f64(1.0 + rand::random::<f64>()),
            });
        }
    }

    /// Hashes whose graft is due (announced `graft_after` to twice that ago), by announcer
    /// (removed from the waiting list: the caller checks which are still missing and fetches
    /// those).
    pub fn due(&self) -> Vec<(PeerAddr, Vec<MessageHash>)> {
        let now = Instant::now();
        let mut by_peer: HashMap<PeerAddr, Vec<MessageHash>> = HashMap::new();
        self.awaited.lock().retain(|h, a| {
            if now < a.due {
                return true;
            }
            by_peer.entry(a.from.clone()).or_default().push(*h);
            false
        });
        by_peer.into_iter().collect()
    }

    /// The tree as this relay sees it, for `/status`.
    pub fn report(&self) -> serde_json::Value {
        let now = Instant::now();
        let pos = self.position.lock();
        let everyone = !self.settings.enabled || pos.active.len() < self.settings.min_peers;
        let mut lazy: Vec<String> = pos
            .active
            .iter()
            .filter(|p| !everyone && !self.eager(&pos, p, now))
            .map(|p| p.to_string())
            .collect();
        lazy.sort();
        serde_json::json!({
            "enabled": self.settings.enabled,
            "tree_peers": pos.capable.len(),
            "root": pos.own.root,
            "distance": pos.own.distance,
            "parent": pos.parent.as_ref().map(|p| p.to_string()),
            "lazy_peers": lazy,
            "awaited": self.awaited.lock().len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> PeerAddr {
        PeerAddr::parse(&format!("127.0.0.1:{}", 9000 + i)).unwrap()
    }

    fn peers(n: usize) -> Vec<PeerAddr> {
        (0..n).map(addr).collect()
    }

    /// Relays `0..n` as trees in one process, linked as `links`, exchanging beacons by hand
    /// on a simulated clock.
    struct Sim {
        trees: Vec<Option<Tree>>,
        neighbours: Vec<Vec<usize>>,
        start: Instant,
        elapsed: Duration,
    }

    impl Sim {
        /// Ids chosen so that relay `i`'s id sorts by `order[i]`.
        fn new(n: usize, links: &[(usize, usize)], order: impl Fn(usize) -> usize) -> Self {
            let mut neighbours = vec![Vec::new(); n];
            for &(a, b) in links {
                neighbours[a].push(b);
                neighbours[b].push(a);
            }
            let trees = (0..n)
                .map(|i| {
                    let t = Tree::new(TreeSettings::default(), format!("id{:04}", order(i)));
                    for &j in &neighbours[i] {
                        t.set_capable(&addr(j), true);
                    }
                    Some(t)
                })
                .collect();
            Self {
                trees,
                neighbours,
                start: Instant::now(),
                elapsed: Duration::ZERO,
            }
        }

        fn active(&self, i: usize) -> Vec<PeerAddr> {
            self.neighbours[i]
                .iter()
                .filter(|&&j| self.trees[j].is_some())
                .map(|&j| addr(j))
                .collect()
        }

        /// One tick of every live relay: recompute, then deliver what each sends.
        fn tick(&mut self) {
            self.elapsed += Duration::from_millis(50);
            let now = self.start + self.elapsed;
            let stamp = self.elapsed.as_secs() / BEACON_EVERY.as_secs();
            let mut mail = Vec::new();
            for i in 0..self.trees.len() {
                let active = self.active(i);
                let Some(t) = &self.trees[i] else { continue };
                t.recompute_at(&active, now, stamp);
                for o in t.take_outgoing_at(&active, now) {
                    let to = o.peer.port as usize - 9000;
                    if let Some(b) = o.beacon {
                        mail.push((to, addr(i), b));
                    }
                }
            }
            for (to, from, b) in mail {
                b.check().unwrap();
                if let Some(t) = &self.trees[to] {
                    t.hear_beacon_at(&from, b, now);
                }
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.elapsed + d;
            while self.elapsed < end {
                self.tick();
            }
        }

        /// The links pushed every packet, each seen eager from both ends (panics otherwise).
        fn eager_links(&self) -> Vec<(usize, usize)> {
            let mut links = Vec::new();
            for i in 0..self.trees.len() {
                let Some(t) = &self.trees[i] else { continue };
                let active = self.active(i);
                for p in t.targets(&active, None).push {
                    let j = p.port as usize - 9000;
                    let back = self.trees[j]
                        .as_ref()
                        .unwrap()
                        .targets(&self.active(j), None);
                    assert!(back.push.contains(&addr(i)), "{i}→{j} eager one way only");
                    if i < j {
                        links.push((i, j));
                    }
                }
            }
            links
        }

        /// Whether `links` connect every live relay.
        fn spans(&self, links: &[(usize, usize)]) -> bool {
            let live: Vec<usize> = (0..self.trees.len())
                .filter(|&i| self.trees[i].is_some())
                .collect();
            let mut seen = HashSet::from([live[0]]);
            let mut todo = vec![live[0]];
            while let Some(i) = todo.pop() {
                for &(a, b) in links {
                    let other = if a == i {
                        b
                    } else if b == i {
                        a
                    } else {
                        continue;
                    };
                    if seen.insert(other) {
                        todo.push(other);
                    }
                }
            }
            seen.len() == live.len()
        }

        /// Hops from `from` to every relay, by breadth-first search of the links.
        fn hops_from(&self, from: usize) -> Vec<usize> {
            let mut hops = vec![usize::MAX; self.trees.len()];
            hops[from] = 0;
            let mut queue = std::collections::VecDeque::from([from]);
            while let Some(i) = queue.pop_front() {
                for &j in &self.neighbours[i] {
                    if hops[j] == usize::MAX {
                        hops[j] = hops[i] + 1;
                        queue.push_back(j);
                    }
                }
            }
            hops
        }

        fn root_of(&self, i: usize) -> String {
            self.trees[i]
                .as_ref()
                .unwrap()
                .position
                .lock()
                .own
                .root
                .clone()
        }
    }

    /// A random `degree`-regular graph: a circulant, randomised by double-edge swaps.
    fn regular_graph(n: usize, degree: usize, seed: u64) -> Vec<(usize, usize)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut edges: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (1..=degree / 2).map(move |k| (i, (i + k) % n)))
            .collect();
        let has = |e: &[(usize, usize)], a: usize, b: usize| {
            e.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        };
        for _ in 0..n * degree {
            let (i, j) = (
                rng.random_range(0..edges.len()),
                rng.random_range(0..edges.len()),
            );
            let ((a, b), (c, d)) = (edges[i], edges[j]);
            if a == c || a == d || b == c || b == d || has(&edges, a, d) || has(&edges, c, b) {
                continue;
            }
            edges[i] = (a, d);
            edges[j] = (c, b);
        }
        edges
    }

    #[test]
    fn the_eager_links_become_exactly_a_spanning_tree_towards_the_smallest_id() {
        for (n, links) in [
            (30, regular_graph(30, 8, 1)),
            (100, regular_graph(100, 8, 2)),
            (
                10,
                (0..10)
                    .flat_map(|a| (a + 1..10).map(move |b| (a, b)))
                    .collect(),
            ),
        ] {
            // Ids in a scrambled order, so the root is not relay 0.
            let mut sim = Sim::new(n, &links, |i| (i * 37 + 11) % n);
            sim.run(Duration::from_secs(2));
            let eager = sim.eager_links();
            assert_eq!(eager.len(), n - 1, "R = {n}: {eager:?}");
            assert!(sim.spans(&eager), "R = {n}");
            let root = format!("id{:04}", 0);
            assert!((0..n).all(|i| sim.root_of(i) == root), "R = {n}");
            // A shortest-path tree: each relay's distance is its hops to the root.
            let hops = sim.hops_from((0..n).find(|&i| (i * 37 + 11) % n == 0).unwrap());
            for (i, h) in hops.iter().enumerate() {
                let d = sim.trees[i].as_ref().unwrap().position.lock().own.distance;
                assert_eq!(d as usize, *h, "R = {n}, relay {i}");
            }
            // It stays: stamps advancing do not move it.
            sim.run(Duration::from_secs(20));
            assert_eq!(sim.eager_links(), eager, "R = {n}: the tree moved");
        }
    }

    #[test]
    fn when_the_root_dies_the_tree_forms_again_around_the_next_smallest_id() {
        let links = regular_graph(30, 8, 3);
        let mut sim = Sim::new(30, &links, |i| i);
        sim.run(Duration::from_secs(2));
        assert_eq!(sim.eager_links().len(), 29);
        sim.trees[0] = None;
        // Stale beacons of the dead root are still followed for a while (and their peers
        // pushed everything); past BEACON_STALE the tree re-forms.
        sim.run(BEACON_STALE + Duration::from_secs(4));
        let eager = sim.eager_links();
        assert_eq!(eager.len(), 28, "{eager:?}");
        assert!(sim.spans(&eager));
        assert!((1..30).all(|i| sim.root_of(i) == "id0001"));
        for i in 1..30 {
            assert!(sim.trees[i].as_ref().unwrap().position.lock().own.distance < 10);
        }
    }

    #[test]
    fn when_a_tree_link_breaks_the_relays_below_it_find_another_way() {
        let links = regular_graph(30, 8, 4);
        let mut sim = Sim::new(30, &links, |i| i);
        sim.run(Duration::from_secs(2));
        // Kill a relay in the middle of the tree (not the root): its children re-attach.
        let victim = (1..30)
            .find(|&i| sim.trees[i].as_ref().unwrap().position.lock().own.distance == 1)
            .unwrap();
        sim.trees[victim] = None;
        sim.run(Duration::from_secs(2));
        let eager = sim.eager_links();
        assert_eq!(eager.len(), 28, "{eager:?}");
        assert!(sim.spans(&eager));
    }

    #[test]
    fn peers_without_a_fresh_beacon_or_the_extension_are_pushed_everything() {
        let t = Tree::new(TreeSettings::default(), "b".into());
        let active = peers(6);
        for p in &active[..5] {
            t.set_capable(p, true);
        }
        let now = Instant::now();
        // Peer 0 is our parent (root "a"), 1 is our child, 2 goes elsewhere, 3 is stale,
        // 4 has sent nothing, 5 lacks the extension.
        let beacon = |id: &str, distance: u32, parent: Option<&str>| Beacon {
            id: id.into(),
            root: "a".into(),
            seq: 7,
            distance,
            parent: parent.map(Into::into),
        };
        t.hear_beacon_at(&active[0], beacon("a", 0, None), now);
        t.hear_beacon_at(&active[1], beacon("c", 2, Some("b")), now);
        t.hear_beacon_at(&active[2], beacon("d", 1, Some("a")), now);
        t.hear_beacon_at(&active[3], beacon("e", 1, Some("a")), now - BEACON_STALE);
        t.position.lock().capable.remove(&active[5]);
        t.recompute_at(&active, now, 1);
        assert_eq!(t.position.lock().parent, Some(active[0].clone()));
        let got = t.targets(&active, None);
        assert_eq!(got.announce, vec![active[2].clone()]);
        let mut pushed = got.push.clone();
        pushed.sort();
        assert_eq!(
            pushed,
            vec![
                active[0].clone(),
                active[1].clone(),
                active[3].clone(),
                active[4].clone(),
                active[5].clone()
            ]
        );
        assert!(
            !t.targets(&active, Some(&active[0]))
                .push
                .contains(&active[0]),
            "not back to the sender"
        );
    }

    /// The broadcaster (`targets`), the announcer (`take_outgoing`), `/status` (`report`) and
    /// the status refresher (`set_capable`) run on different threads at once; with the tree's
    /// state under two locks taken in opposite orders this hung a relay in `mesh_sim`.
    #[test]
    fn the_tree_is_used_from_several_threads_at_once_without_deadlock() {
        let t = std::sync::Arc::new(Tree::new(TreeSettings::default(), "b".into()));
        let active = peers(12);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for role in 0..4 {
            let (t, active, done) = (t.clone(), active.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for k in 0..20_000usize {
                    let p = &active[k % active.len()];
                    match role {
                        0 => drop(t.targets(&active, None)),
                        1 => drop(t.take_outgoing(&active)),
                        2 => drop(t.report()),
                        _ => {
                            t.set_capable(p, k % 3 != 0);
                            t.hear_beacon(
                                p,
                                Beacon {
                                    id: format!("x{}", p.port),
                                    root: "a".into(),
                                    seq: k as u64,
                                    distance: 1,
                                    parent: None,
                                },
                            );
                            t.recompute(&active);
                        }
                    }
                }
                done.send(role).expect("the test waits");
            });
        }
        drop(done_tx);
        for _ in 0..4 {
            // Liveness, not speed: a deadlock never finishes; 20,000 rounds take milliseconds.
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("a thread is stuck: the tree's locks deadlocked");
        }
    }

    #[test]
    fn a_relay_with_few_peers_or_the_tree_off_pushes_to_all() {
        let t = Tree::new(TreeSettings::default(), "b".into());
        let active = peers(3);
        let now = Instant::now();
        for p in &active {
            t.hear_beacon_at(
                p,
                Beacon {
                    id: format!("x{}", p.port),
                    root: "a".into(),
                    seq: 1,
                    distance: 3,
                    parent: Some("zz".into()),
                },
                now,
            );
        }
        assert_eq!(t.targets(&active, None).push.len(), 3);
        let flood = Tree::new(
            TreeSettings {
                enabled: false,
                ..TreeSettings::default()
            },
            "b".into(),
        );
        let many = peers(8);
        assert_eq!(flood.targets(&many, None).push.len(), 8);
        assert!(
            flood.take_outgoing(&many).is_empty(),
            "no beacons with the tree off"
        );
    }

    #[test]
    fn beacons_ride_on_announcements_and_are_sent_again_only_when_due() {
        let t = Tree::new(TreeSettings::default(), "b".into());
        let active = peers(2);
        for p in &active {
            t.set_capable(p, true);
        }
        let now = Instant::now();
        for i in 0..(MAX_ANNOUNCE_HASHES + 1) {
            t.queue_announcement(&active[..1], MessageHash::of_message(&i.to_string()));
        }
        let mut out = t.take_outgoing_at(&active, now);
        out.sort_by_key(|o| (o.peer.clone(), std::cmp::Reverse(o.hashes.len())));
        assert_eq!(out.len(), 3);
        assert_eq!(
            (out[0].hashes.len(), out[0].beacon.is_some()),
            (MAX_ANNOUNCE_HASHES, true)
        );
        assert_eq!((out[1].hashes.len(), out[1].beacon.is_some()), (1, false));
        assert_eq!((out[2].hashes.len(), out[2].beacon.is_some()), (0, true));
        assert!(
            t.take_outgoing_at(&active, now + Duration::from_millis(50))
                .is_empty()
        );
        assert_eq!(
            t.take_outgoing_at(&active, now + BEACON_EVERY).len(),
            2,
            "re-sent"
        );
    }

    #[test]
    fn beacons_are_checked() {
        let ok = Beacon {
            id: "b1".into(),
            root: "a".into(),
            seq: 1,
            distance: 1,
            parent: Some("a".into()),
        };
        assert!(ok.check().is_ok());
        let root = Beacon {
            id: "a".into(),
            root: "a".into(),
            seq: 1,
            distance: 0,
            parent: None,
        };
        assert!(root.check().is_ok());
        for (bad, says) in [
            (
                Beacon {
                    id: String::new(),
                    ..ok.clone()
                },
                "tree.id",
            ),
            (
                Beacon {
                    root: "x".repeat(MAX_ID_LEN + 1),
                    ..ok.clone()
                },
                "tree.root",
            ),
            (
                Beacon {
                    parent: Some("a b".into()),
                    ..ok.clone()
                },
                "tree.parent",
            ),
            (
                Beacon {
                    distance: MAX_DISTANCE + 1,
                    ..ok.clone()
                },
                "tree.distance",
            ),
            (
                Beacon {
                    distance: 0,
                    ..ok.clone()
                },
                "go together",
            ),
            (
                Beacon {
                    parent: None,
                    ..ok.clone()
                },
                "go together",
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn announced_hashes_fall_due_by_first_announcer_and_are_bounded() {
        let t = Tree::new(
            TreeSettings {
                graft_after: Duration::ZERO,
                ..TreeSettings::default()
            },
            "b".into(),
        );
        let p = peers(2);
        let h1 = MessageHash::of_message("one");
        let h2 = MessageHash::of_message("two");
        t.heard(&p[0], [h1]);
        t.heard(&p[1], [h1, h2]);
        let mut due = t.due();
        due.sort();
        assert_eq!(
            due,
            vec![(p[0].clone(), vec![h1]), (p[1].clone(), vec![h2])]
        );
        assert!(t.due().is_empty(), "taken once");
        t.heard(
            &p[0],
            (0..MAX_AWAITED + 10).map(|i| MessageHash::of_message(&i.to_string())),
        );
        assert_eq!(t.awaited.lock().len(), MAX_AWAITED);
    }
}
