//! Peer relays: their addresses, what may be learned from other relays, and the score that
//! decides whether a peer is used, quarantined (with exponential backoff) or forgotten.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use jasper_core::MessageHash;
use parking_lot::Mutex;
use serde::Serialize;

pub use jasper_core::addr::{RelayAddr as PeerAddr, is_public_ip};

/// How a peer became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Given with `--peer`: trusted whatever its address, never forgotten.
    Configured,
    /// Learned through `/sync/servers`.
    Learned,
}

/// Misbehaviour a peer can be caught at, with the score it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// No answer within the peer timeout.
    Timeout,
    /// Connection refused or reset.
    Unreachable,
    /// An answer that is not what the endpoint returns (not JSON, wrong shape, too large).
    Garbage,
    /// Refused a valid request (error status to a packet we checked, a sync, ...).
    Refused,
    /// Served a packet whose hash does not match its content.
    HashMismatch,
    /// Acknowledged a packet, then did not hold it.
    DroppedAcknowledged,
    /// Claimed in `/sync/hashes` to hold hashes it then did not serve.
    FalseClaim,
    /// Pushed a packet for a recipient already at this relay's quota: it forwards a flood
    /// (or keeps larger quotas). Mild, so that an honest peer that also forwards plenty of
    /// good packets stays; one that mostly forwards junk drifts into quarantine.
    Flood,
}

impl Offence {
    fn penalty(self) -> i32 {
        match self {
            Offence::Timeout | Offence::Unreachable | Offence::Refused => 10,
            Offence::Garbage => 20,
            Offence::FalseClaim => 25,
            Offence::DroppedAcknowledged => 30,
            Offence::Flood => 1,
            Offence::HashMismatch => 50,
        }
    }
}

/// Counters per offence, exposed in `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerCounters {
    pub ok: u64,
    pub timeouts: u64,
    pub unreachable: u64,
    pub garbage: u64,
    pub refused: u64,
    pub hash_mismatches: u64,
    pub dropped_acknowledged: u64,
    pub false_claims: u64,
    pub floods: u64,
}

const MAX_SCORE: i32 = 100;
const QUARANTINE_BELOW: i32 = 50;
/// A peer released from quarantine starts here: one more serious offence sends it back.
const PROBATION_SCORE: i32 = 60;
/// Longest quarantine, however often a peer misbehaves.
const MAX_QUARANTINE: Duration = Duration::from_secs(3600);
/// Learned peers quarantined this often are forgotten.
const FORGET_AFTER_STRIKES: u32 = 6;
/// Acknowledged packets remembered per peer for audits.
const MAX_ACKED: usize = 1024;

#[derive(Debug)]
struct PeerState {
    origin: Origin,
    /// Learned peers start as candidates until they answer like a relay.
    candidate: bool,
    score: i32,
    strikes: u32,
    quarantined_until: Option<Instant>,
    counters: PeerCounters,
    last_error: Option<String>,
    /// (hash, when acknowledged, expires_at) of packets the peer accepted from us.
    acked: VecDeque<(MessageHash, Instant, u64)>,
}

impl PeerState {
    fn new(origin: Origin) -> Self {
        Self {
            origin,
            candidate: origin == Origin::Learned,
            score: MAX_SCORE,
            strikes: 0,
            quarantined_until: None,
            counters: PeerCounters::default(),
            last_error: None,
            acked: VecDeque::new(),
        }
    }
}

/// One peer as reported by `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    pub address: String,
    pub origin: Origin,
    /// `active`, `candidate` or `quarantined`.
    pub state: &'static str,
    pub score: i32,
    pub strikes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_remaining_secs: Option<u64>,
    pub counters: PeerCounters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// All known relays and their standing.
pub struct PeerBook {
    peers: Mutex<HashMap<PeerAddr, PeerState>>,
    /// Addresses found to be this relay itself.
    myself: Mutex<Vec<PeerAddr>>,
    quarantine_base: Duration,
    max_known: usize,
}

impl PeerBook {
    pub fn new(
        configured: &[PeerAddr],
        myself: Option<&PeerAddr>,
        quarantine_base: Duration,
        max_known: usize,
    ) -> Self {
        let mut peers = HashMap::new();
        for p in configured {
            if Some(p) != myself {
                peers.insert(p.clone(), PeerState::new(Origin::Configured));
            }
        }
        Self {
            peers: Mutex::new(peers),
            myself: Mutex::new(myself.cloned().into_iter().collect()),
            quarantine_base,
            max_known,
        }
    }

    pub fn is_myself(&self, addr: &PeerAddr) -> bool {
        self.myself.lock().contains(addr)
    }

    /// Records that `addr` reaches this very relay, and forgets it as a peer.
    pub fn mark_myself(&self, addr: &PeerAddr) {
        tracing::info!(peer = %addr, "address leads back to this relay; not a peer");
        self.myself.lock().push(addr.clone());
        self.peers.lock().remove(addr);
    }

    /// Adds a learned address as a candidate. Returns false when known, ourselves or full.
    pub fn learn(&self, addr: PeerAddr) -> bool {
        if self.is_myself(&addr) {
            return false;
        }
        let mut peers = self.peers.lock();
        if peers.contains_key(&addr) || peers.len() >= self.max_known {
            return false;
        }
        tracing::info!(peer = %addr, "learned relay address (candidate)");
        peers.insert(addr, PeerState::new(Origin::Learned));
        true
    }

    pub fn contains(&self, addr: &PeerAddr) -> bool {
        self.peers.lock().contains_key(addr)
    }

    /// Every known address (for `/sync/servers`).
    pub fn all(&self) -> Vec<PeerAddr> {
        let mut v: Vec<_> = self.peers.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Peers to broadcast to and sync with: not candidates, not in quarantine.
    pub fn active(&self) -> Vec<PeerAddr> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .peers
            .lock()
            .iter_mut()
            .filter(|(_, s)| !s.candidate)
            .filter_map(|(a, s)| match s.quarantined_until {
                Some(until) if until > now => None,
                Some(_) => {
                    s.quarantined_until = None;
                    s.score = PROBATION_SCORE;
                    tracing::info!(peer = %a, "quarantine over; peer on probation");
                    Some(a.clone())
                }
                None => Some(a.clone()),
            })
            .collect();
        v.sort();
        v
    }

    /// Learned addresses not yet confirmed to be relays.
    pub fn candidates(&self) -> Vec<PeerAddr> {
        self.peers
            .lock()
            .iter()
            .filter(|(_, s)| s.candidate)
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn origin(&self, addr: &PeerAddr) -> Option<Origin> {
        self.peers.lock().get(addr).map(|s| s.origin)
    }

    /// A candidate answered like a relay: start using it.
    pub fn promote(&self, addr: &PeerAddr) {
        if let Some(s) = self.peers.lock().get_mut(addr)
            && s.candidate
        {
            tracing::info!(peer = %addr, "candidate answered like a relay; now active");
            s.candidate = false;
        }
    }

    /// A candidate that never answered like a relay is dropped.
    pub fn forget_candidate(&self, addr: &PeerAddr) {
        let mut peers = self.peers.lock();
        if peers.get(addr).is_some_and(|s| s.candidate) {
            peers.remove(addr);
        }
    }

    pub fn record_ok(&self, addr: &PeerAddr) {
        if let Some(s) = self.peers.lock().get_mut(addr) {
            s.counters.ok += 1;
            s.score = (s.score + 2).min(MAX_SCORE);
            if s.score == MAX_SCORE {
                s.strikes = 0;
            }
        }
    }

    /// Scores an offence; quarantines (and possibly forgets) the peer when its score drops
    /// too low. Returns true when this put the peer into quarantine.
    pub fn record_offence(&self, addr: &PeerAddr, offence: Offence, detail: &str) -> bool {
        let mut peers = self.peers.lock();
        let Some(s) = peers.get_mut(addr) else {
            return false;
        };
        let c = &mut s.counters;
        match offence {
            Offence::Timeout => c.timeouts += 1,
            Offence::Unreachable => c.unreachable += 1,
            Offence::Garbage => c.garbage += 1,
            Offence::Refused => c.refused += 1,
            Offence::HashMismatch => c.hash_mismatches += 1,
            Offence::DroppedAcknowledged => c.dropped_acknowledged += 1,
            Offence::FalseClaim => c.false_claims += 1,
            Offence::Flood => c.floods += 1,
        }
        s.last_error = Some(format!("{offence:?}: {detail}"));
        s.score -= offence.penalty();
        tracing::warn!(peer = %addr, ?offence, score = s.score, detail, "peer offence");
        let already = s.quarantined_until.is_some_and(|u| u > Instant::now());
        if s.score >= QUARANTINE_BELOW || already {
            return false;
        }
        s.strikes += 1;
        let factor = 1u32 << (s.strikes - 1).min(16);
        let length = (self.quarantine_base * factor).min(MAX_QUARANTINE);
        s.quarantined_until = Some(Instant::now() + length);
        s.score = QUARANTINE_BELOW;
        tracing::warn!(peer = %addr, strikes = s.strikes, secs = length.as_secs(), "peer quarantined");
        if s.origin == Origin::Learned && s.strikes >= FORGET_AFTER_STRIKES {
            tracing::warn!(peer = %addr, "learned peer misbehaved too often; forgotten");
            peers.remove(addr);
        }
        true
    }

    /// Remembers that `addr` acknowledged `hash`, for a later audit.
    pub fn record_ack(&self, addr: &PeerAddr, hash: MessageHash, expires_at: u64) {
        if let Some(s) = self.peers.lock().get_mut(addr) {
            if s.acked.len() >= MAX_ACKED {
                s.acked.pop_front();
            }
            s.acked.push_back((hash, Instant::now(), expires_at));
        }
    }

    /// Takes up to `max` acknowledged hashes older than `grace` (and not expired) to audit.
    pub fn take_audit(
        &self,
        addr: &PeerAddr,
        grace: Duration,
        max: usize,
        now_unix: u64,
    ) -> Vec<MessageHash> {
        let mut out = Vec::new();
        if let Some(s) = self.peers.lock().get_mut(addr) {
            let now = Instant::now();
            while out.len() < max {
                match s.acked.front() {
                    Some((_, at, _)) if now.duration_since(*at) >= grace => {
                        let (h, _, exp) = s.acked.pop_front().expect("front exists");
                        // Leave a margin so a packet expiring during the audit is not blamed.
                        if exp > now_unix + 5 {
                            out.push(h);
                        }
                    }
                    _ => break,
                }
            }
        }
        out
    }

    pub fn report(&self) -> Vec<PeerReport> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .peers
            .lock()
            .iter()
            .map(|(a, s)| {
                let remaining = s
                    .quarantined_until
                    .filter(|u| *u > now)
                    .map(|u| (u - now).as_secs());
                PeerReport {
                    address: a.to_string(),
                    origin: s.origin,
                    state: if remaining.is_some() {
                        "quarantined"
                    } else if s.candidate {
                        "candidate"
                    } else {
                        "active"
                    },
                    score: s.score,
                    strikes: s.strikes,
                    quarantine_remaining_secs: remaining,
                    counters: s.counters.clone(),
                    last_error: s.last_error.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offences_quarantine_with_doubling_backoff() {
        let p = PeerAddr::parse("127.0.0.1:9").unwrap();
        let book = PeerBook::new(std::slice::from_ref(&p), None, Duration::from_secs(10), 10);
        assert_eq!(book.active(), vec![p.clone()]);
        assert!(!book.record_offence(&p, Offence::HashMismatch, "x"));
        assert!(book.record_offence(&p, Offence::HashMismatch, "x"));
        assert!(book.active().is_empty());
        let r = &book.report()[0];
        assert_eq!(r.state, "quarantined");
        assert_eq!(r.strikes, 1);
        assert!(r.quarantine_remaining_secs.unwrap() <= 10);
        assert_eq!(r.counters.hash_mismatches, 2);
    }

    #[test]
    fn myself_is_never_learned() {
        let me = PeerAddr::parse("127.0.0.1:7").unwrap();
        let book = PeerBook::new(&[], Some(&me), Duration::from_secs(1), 10);
        assert!(!book.learn(me.clone()));
        assert!(book.learn(PeerAddr::parse("127.0.0.1:8").unwrap()));
        assert_eq!(book.candidates().len(), 1);
    }
}
