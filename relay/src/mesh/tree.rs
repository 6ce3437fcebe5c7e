//! Broadcast along a tree (Plumtree, Leitão et al. 2007, over plain HTTP): a new packet is
//! pushed whole to the *eager* peers and only announced (its hash) to the *lazy* ones.
//!
//! - Every link starts eager, so the first packets flood and reach everyone at once.
//! - A push the peer already held (`/send` answers `"stored": false`) is a redundant link: that
//!   peer is moved to lazy (Plumtree's PRUNE, read from the answer instead of sent), and the
//!   peer that received the duplicate moves the pusher to lazy too, so the eager links stay
//!   undirected. What stays eager converges to a spanning tree, so each packet crosses each
//!   relay about once.
//! - Lazy peers are sent the hashes in batches (`POST /mesh/announce`). A hash announced to us
//!   that has not arrived by push after [`TreeSettings::graft_after`] (to twice that, at
//!   random) is fetched from the announcer with `x-jasper-graft: 1` (Plumtree's GRAFT): both sides make the link eager
//!   again, so a broken tree heals where it broke, and the grafted packet is pushed on.
//! - Only peers whose `/status` lists `mesh.tree` are ever pruned or announced to; any other
//!   relay (the reference relay, older ones) is pushed every packet, as the spec's flood does.
//! - A relay with fewer than [`TreeSettings::min_peers`] peers pushes to all of them: few peers
//!   cost little, and each of them is then one hop away.
//!
//! Announcements are hints: a peer that announces what it cannot serve is not scored (anyone
//! can name a peer's address in a header), and the periodic reconciliation still finds
//! anything the tree missed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use jasper_core::MessageHash;
use parking_lot::Mutex;

use super::peer::PeerAddr;

/// Header on a `/fetch {hashes}` that grafts: "push to me eagerly again".
pub const GRAFT_HEADER: &str = "x-jasper-graft";
/// Most hashes in one `/mesh/announce` body.
pub const MAX_ANNOUNCE_HASHES: usize = 4096;
/// Announced-but-missing hashes remembered at once; beyond it announcements are ignored
/// (reconciliation finds those packets), so peers cannot make us hold unbounded state.
const MAX_AWAITED: usize = 65_536;
/// Hashes queued to announce to one peer; beyond it the oldest are dropped (same reason).
const MAX_QUEUED_PER_PEER: usize = 4 * MAX_ANNOUNCE_HASHES;
/// Grafted packets remembered, so that their duplicates do not prune links.
const RECENT_GRAFTS: usize = 16_384;
/// A grafted link stays eager at least this long. Packets in flight from different relays
/// find different redundant links in the same cycle at once, and pruning all of them cuts
/// the tree; holding the link that healed a cut keeps the next packets from cutting it
/// again, so the tree settles instead of flapping between cuts and grafts.
const GRAFT_HOLD: Duration = Duration::from_secs(10);

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

/// Who gets a packet, and how.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub push: Vec<PeerAddr>,
    pub announce: Vec<PeerAddr>,
}

struct Awaited {
    from: PeerAddr,
    /// When to graft if it has not come: `graft_after` to twice that after it was first
    /// heard of, at random, so that the relays cut off by a break in the tree do not all
    /// graft at once (one graft heals the break, and its push reaches the others before
    /// their turn; many at once make cycles, whose duplicates cut the tree again).
    due: Instant,
}

pub struct Tree {
    settings: TreeSettings,
    /// Peers that offer `mesh.tree` (learned from their `/status`).
    capable: Mutex<HashSet<PeerAddr>>,
    lazy: Mutex<HashSet<PeerAddr>>,
    /// When each link was last grafted: it is not pruned again for [`GRAFT_HOLD`].
    grafted: Mutex<HashMap<PeerAddr, Instant>>,
    /// The last [`RECENT_GRAFTS`] packets this relay fetched by a graft, oldest first.
    recent_grafts: Mutex<(VecDeque<MessageHash>, HashSet<MessageHash>)>,
    queued: Mutex<HashMap<PeerAddr, Vec<MessageHash>>>,
    awaited: Mutex<HashMap<MessageHash, Awaited>>,
}

impl Tree {
    pub fn new(settings: TreeSettings) -> Self {
        Self {
            settings,
            capable: Mutex::new(HashSet::new()),
            lazy: Mutex::new(HashSet::new()),
            grafted: Mutex::new(HashMap::new()),
            recent_grafts: Mutex::new((VecDeque::new(), HashSet::new())),
            queued: Mutex::new(HashMap::new()),
            awaited: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &TreeSettings {
        &self.settings
    }

    /// Records what a peer's `/status` said about the extension.
    pub fn set_capable(&self, peer: &PeerAddr, capable: bool) {
        if capable {
            self.capable.lock().insert(peer.clone());
        } else {
            self.capable.lock().remove(peer);
            self.lazy.lock().remove(peer);
        }
    }

    pub fn is_capable(&self, peer: &PeerAddr) -> bool {
        self.capable.lock().contains(peer)
    }

    /// Splits the active peers (minus the one the packet came from) into those pushed the
    /// packet and those only told its hash.
    pub fn targets(&self, active: &[PeerAddr], from: Option<&PeerAddr>) -> Targets {
        let mut t = Targets::default();
        let everyone = !self.settings.enabled || active.len() < self.settings.min_peers;
        let lazy = self.lazy.lock();
        for peer in active.iter().filter(|p| Some(*p) != from) {
            if !everyone && lazy.contains(peer) {
                t.announce.push(peer.clone());
            } else {
                t.push.push(peer.clone());
            }
        }
        t
    }

    /// A push that `peer` already held: the link is redundant. Returns whether it was pruned
    /// (never the last eager link among `active`, never a peer without the extension).
    pub fn prune(&self, peer: &PeerAddr, active: &[PeerAddr]) -> bool {
        if !self.settings.enabled
            || active.len() < self.settings.min_peers
            || !self.is_capable(peer)
        {
            return false;
        }
        let mut lazy = self.lazy.lock();
        let eager = active
            .iter()
            .filter(|p| !lazy.contains(*p) && *p != peer)
            .count();
        if eager == 0 || lazy.contains(peer) {
            return false;
        }
        if self
            .grafted
            .lock()
            .get(peer)
            .is_some_and(|at| at.elapsed() < GRAFT_HOLD)
        {
            return false;
        }
        tracing::debug!(peer = %peer, "broadcast tree: pruned (pushes it already held)");
        lazy.insert(peer.clone())
    }

    /// The link to `peer` carries packets again.
    pub fn graft(&self, peer: &PeerAddr) {
        self.grafted.lock().insert(peer.clone(), Instant::now());
        if self.lazy.lock().remove(peer) {
            tracing::debug!(peer = %peer, "broadcast tree: grafted");
        }
    }

    /// A packet this relay fetched by a graft (and now pushes on).
    pub fn note_graft(&self, hash: MessageHash) {
        let mut recent = self.recent_grafts.lock();
        let (order, set) = &mut *recent;
        if set.insert(hash) {
            order.push_back(hash);
            if order.len() > RECENT_GRAFTS
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
    }

    /// Whether this relay got the packet by a graft lately.
    pub fn came_by_graft(&self, hash: &MessageHash) -> bool {
        self.recent_grafts.lock().1.contains(hash)
    }

    pub fn is_lazy(&self, peer: &PeerAddr) -> bool {
        self.lazy.lock().contains(peer)
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

    /// Everything queued, in bodies of at most [`MAX_ANNOUNCE_HASHES`] hashes.
    pub fn take_announcements(&self) -> Vec<(PeerAddr, Vec<MessageHash>)> {
        let queued = std::mem::take(&mut *self.queued.lock());
        let mut out = Vec::new();
        for (peer, hashes) in queued {
            for chunk in hashes.chunks(MAX_ANNOUNCE_HASHES) {
                out.push((peer.clone(), chunk.to_vec()));
            }
        }
        out
    }

    /// `from` announced these hashes (the caller has dropped those it holds). The first
    /// announcer of a hash is the one grafted if it does not arrive.
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
    /// (removed from the waiting list: the caller checks which are still missing and grafts
    /// for those).
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

    /// Peers known to offer the extension, lazy peers and hashes awaited, for `/status`.
    pub fn report(&self) -> serde_json::Value {
        let mut lazy: Vec<String> = self.lazy.lock().iter().map(|p| p.to_string()).collect();
        lazy.sort();
        serde_json::json!({
            "enabled": self.settings.enabled,
            "tree_peers": self.capable.lock().len(),
            "lazy_peers": lazy,
            "awaited": self.awaited.lock().len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u16) -> Vec<PeerAddr> {
        (0..n)
            .map(|i| PeerAddr::parse(&format!("127.0.0.1:{}", 9000 + i)).unwrap())
            .collect()
    }

    fn tree() -> Tree {
        let t = Tree::new(TreeSettings::default());
        for p in peers(8) {
            t.set_capable(&p, true);
        }
        t
    }

    #[test]
    fn every_link_starts_eager_and_the_sender_is_skipped() {
        let t = tree();
        let active = peers(8);
        let got = t.targets(&active, Some(&active[3]));
        assert_eq!(got.push.len(), 7);
        assert!(!got.push.contains(&active[3]));
        assert!(got.announce.is_empty());
    }

    #[test]
    fn a_pruned_peer_is_announced_to_until_grafted() {
        let t = tree();
        let active = peers(8);
        assert!(t.prune(&active[1], &active));
        assert!(!t.prune(&active[1], &active), "already lazy");
        let got = t.targets(&active, None);
        assert_eq!(got.announce, vec![active[1].clone()]);
        assert_eq!(got.push.len(), 7);
        t.graft(&active[1]);
        assert_eq!(t.targets(&active, None).push.len(), 8);
        assert!(
            !t.prune(&active[1], &active),
            "a grafted link is held eager"
        );
    }

    #[test]
    fn grafted_packets_are_remembered_boundedly() {
        let t = tree();
        let hash = |n: usize| MessageHash::of_message(&format!("grafted {n}"));
        for n in 0..=RECENT_GRAFTS {
            t.note_graft(hash(n));
        }
        assert!(!t.came_by_graft(&hash(0)), "the oldest is forgotten");
        assert!(t.came_by_graft(&hash(1)));
        assert!(t.came_by_graft(&hash(RECENT_GRAFTS)));
        assert_eq!(t.recent_grafts.lock().1.len(), RECENT_GRAFTS);
    }

    #[test]
    fn the_last_eager_link_and_peers_without_the_extension_are_never_pruned() {
        let t = tree();
        let active = peers(5);
        for p in &active[..4] {
            assert!(t.prune(p, &active));
        }
        assert!(!t.prune(&active[4], &active), "the last eager link stays");
        let other = PeerAddr::parse("127.0.0.1:9999").unwrap();
        let mut with_other = active.clone();
        with_other.push(other.clone());
        assert!(!t.prune(&other, &with_other), "no mesh.tree: always pushed");
    }

    #[test]
    fn a_relay_with_few_peers_pushes_to_all_of_them() {
        let t = tree();
        let active = peers(3);
        assert!(!t.prune(&active[0], &active));
        // Pruned while it had many peers, then left with few: all are pushed again.
        let many = peers(8);
        assert!(t.prune(&active[0], &many));
        assert_eq!(t.targets(&active, None).push.len(), 3);
        let flood = Tree::new(TreeSettings {
            enabled: false,
            ..TreeSettings::default()
        });
        assert_eq!(flood.targets(&many, None).push.len(), 8);
    }

    #[test]
    fn announced_hashes_fall_due_by_first_announcer_and_are_bounded() {
        let t = Tree::new(TreeSettings {
            graft_after: Duration::ZERO,
            ..TreeSettings::default()
        });
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

    #[test]
    fn announcements_are_taken_in_bounded_bodies() {
        let t = tree();
        let p = peers(1);
        for i in 0..(MAX_ANNOUNCE_HASHES + 1) {
            t.queue_announcement(&p, MessageHash::of_message(&i.to_string()));
        }
        let bodies = t.take_announcements();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0].1.len(), MAX_ANNOUNCE_HASHES);
        assert!(t.take_announcements().is_empty());
    }
}
