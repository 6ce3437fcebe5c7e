//! Admission control: how much an outsider may make this relay do.
//!
//! Every request is charged to its client address before its body is read: IPv4 addresses
//! one by one, IPv6 by prefix (a /64 by default, since one subscriber gets at least that), and
//! behind a proxy the address the proxy reports only when the proxy is configured as trusted.
//! `/send`, `/fetch` and everything else have budgets of their own (rate and burst, GCRA by
//! `governor`); the addresses of configured peers have one larger budget for all routes, since
//! a peer pushes every packet of its clients. A refusal is `429 rate_limited` with
//! `Retry-After`. Long-polls parked at once are bounded per address too.
//!
//! What may be stored (per recipient, and in all) is the store's to check, atomically with
//! the write ([`crate::store::Quotas`]); this module holds the settings and counts refusals.
//!
//! The limiters' memory is bounded by [`Admission::prune`], which forgets every address whose
//! budget is full again (so what is held is the addresses active in the last burst/rate
//! seconds).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::error::RelayError;
use crate::mesh::peer::PeerAddr;
use crate::store::Quotas;

/// A budget: `per_sec` requests a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Quota {
        let per_sec = NonZeroU32::new(self.per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(per_sec).allow_burst(burst)
    }
}

/// An address range `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    len: u8,
}

impl IpRange {
    /// `10.0.0.1`, `10.0.0.0/8`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or ADDRESS/LENGTH"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address that arrived as IPv4-mapped IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The admission settings (`[admission]` in the relay's TOML file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Rate limits, the bound on parked long-polls and `auto` stamps at all (on by default;
    /// off for a private relay, or a load test). Quotas and `stamp = always` apply either way.
    pub rate_limits: bool,
    pub send: Rate,
    pub fetch: Rate,
    /// `/sync/*`, `/mesh/announce`, `/status` and unknown routes.
    pub other: Rate,
    /// Everything from the address of a configured peer.
    pub peer: Rate,
    /// IPv6 clients are charged by this prefix length.
    pub ipv6_prefix: u8,
    /// Proxies whose `X-Forwarded-For` is believed; nobody's by default.
    pub trusted_proxies: Vec<IpRange>,
    /// Long-polls one address may have parked at once.
    pub max_waiting_per_address: usize,
    /// TCP connections one address may hold open at once; more are closed as they are
    /// accepted, before a byte is read (peers and trusted proxies are exempt).
    pub max_connections_per_address: usize,
    pub quotas: Quotas,
    /// When `/send` must carry a proof-of-work stamp (`jasper_core::stamp`).
    pub stamp: StampPolicy,
}

/// When a proof-of-work stamp is demanded of `/send` (never of a configured peer's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampPolicy {
    pub mode: StampMode,
    /// Leading zero bits asked (at most `jasper_core::stamp::MAX_BITS`).
    pub bits: u32,
    /// `auto`: demanded while the relay's `/send` rate from clients is above this.
    pub above_sends_per_sec: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampMode {
    Off,
    /// Only while `/send` is busier than [`StampPolicy::above_sends_per_sec`] (a flood).
    Auto,
    Always,
}

impl StampMode {
    pub fn name(self) -> &'static str {
        match self {
            StampMode::Off => "off",
            StampMode::Auto => "auto",
            StampMode::Always => "always",
        }
    }
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            rate_limits: true,
            // Generous for one person or a bot (and for several behind one NAT); a flooder at
            // full speed is cut to this within its first burst.
            send: Rate {
                per_sec: 50,
                burst: 200,
            },
            fetch: Rate {
                per_sec: 50,
                burst: 200,
            },
            other: Rate {
                per_sec: 20,
                burst: 100,
            },
            peer: Rate {
                per_sec: 5000,
                burst: 20_000,
            },
            ipv6_prefix: 64,
            trusted_proxies: Vec::new(),
            max_waiting_per_address: 64,
            // Browsers open 6 per host, a phone behind carrier NAT shares its address with
            // many others: generous for people, a ceiling for a flooder's sockets.
            max_connections_per_address: 256,
            // 2^16 hashes, tens of milliseconds on a phone, per packet: nothing for a person,
            // a wall for a flood; asked only while /send is far busier than people make it.
            stamp: StampPolicy {
                mode: StampMode::Auto,
                bits: 16,
                above_sends_per_sec: 1000,
            },
            quotas: Quotas {
                // A week of 100 messages a day from 14 contacts, several times over.
                recipient_packets: 10_000,
                recipient_bytes: 64 << 20,
                // The log store's index holds about 260 bytes a packet: 5 M is about 1.3 GB.
                stored_packets: 5_000_000,
                stored_bytes: 16 << 30,
            },
        }
    }
}

/// `[admission]` as written in the TOML file: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionFile {
    pub rate_limits: Option<bool>,
    pub send_per_sec: Option<u32>,
    pub send_burst: Option<u32>,
    pub fetch_per_sec: Option<u32>,
    pub fetch_burst: Option<u32>,
    pub other_per_sec: Option<u32>,
    pub other_burst: Option<u32>,
    pub peer_per_sec: Option<u32>,
    pub peer_burst: Option<u32>,
    pub ipv6_prefix: Option<u8>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub max_waiting_per_address: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub recipient_max_packets: Option<u64>,
    pub recipient_max_bytes: Option<u64>,
    pub max_stored_packets: Option<u64>,
    pub max_stored_bytes: Option<u64>,
    /// `off`, `auto` or `always`.
    pub stamp: Option<String>,
    pub stamp_bits: Option<u32>,
    pub stamp_above_sends_per_sec: Option<u64>,
}

impl AdmissionFile {
    pub fn settings(self) -> Result<AdmissionSettings, String> {
        let d = AdmissionSettings::default();
        let rate = |per_sec: Option<u32>, burst: Option<u32>, d: Rate, name: &str| {
            let r = Rate {
                per_sec: per_sec.unwrap_or(d.per_sec),
                burst: burst.unwrap_or(d.burst),
            };
            if r.per_sec == 0 || r.burst == 0 {
                Err(format!(
                    "admission.{name}_per_sec and _burst must be at least 1"
                ))
            } else {
                Ok(r)
            }
        };
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(d.ipv6_prefix);
        if !(16..=128).contains(&ipv6_prefix) {
            return Err("admission.ipv6_prefix must be 16 to 128".into());
        }
        let positive = |v: Option<u64>, d: u64, name: &str| match v {
            Some(0) => Err(format!("admission.{name} must be at least 1")),
            v => Ok(v.unwrap_or(d)),
        };
        let stamp = StampPolicy {
            mode: match self.stamp.as_deref() {
                None => d.stamp.mode,
                Some("off") => StampMode::Off,
                Some("auto") => StampMode::Auto,
                Some("always") => StampMode::Always,
                Some(other) => {
                    return Err(format!(
                        "admission.stamp = {other:?}: expected \"off\", \"auto\" or \"always\""
                    ));
                }
            },
            bits: match self.stamp_bits {
                None => d.stamp.bits,
                Some(b) if (1..=jasper_core::stamp::MAX_BITS).contains(&b) => b,
                Some(_) => {
                    return Err(format!(
                        "admission.stamp_bits must be 1 to {}",
                        jasper_core::stamp::MAX_BITS
                    ));
                }
            },
            above_sends_per_sec: positive(
                self.stamp_above_sends_per_sec,
                d.stamp.above_sends_per_sec,
                "stamp_above_sends_per_sec",
            )?,
        };
        Ok(AdmissionSettings {
            stamp,
            rate_limits: self.rate_limits.unwrap_or(d.rate_limits),
            send: rate(self.send_per_sec, self.send_burst, d.send, "send")?,
            fetch: rate(self.fetch_per_sec, self.fetch_burst, d.fetch, "fetch")?,
            other: rate(self.other_per_sec, self.other_burst, d.other, "other")?,
            peer: rate(self.peer_per_sec, self.peer_burst, d.peer, "peer")?,
            ipv6_prefix,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|t| IpRange::parse(t).map_err(|e| format!("admission.trusted_proxies: {e}")))
                .collect::<Result<_, _>>()?,
            max_waiting_per_address: self
                .max_waiting_per_address
                .unwrap_or(d.max_waiting_per_address),
            max_connections_per_address: positive(
                self.max_connections_per_address.map(|n| n as u64),
                d.max_connections_per_address as u64,
                "max_connections_per_address",
            )? as usize,
            quotas: Quotas {
                recipient_packets: positive(
                    self.recipient_max_packets,
                    d.quotas.recipient_packets,
                    "recipient_max_packets",
                )?,
                recipient_bytes: positive(
                    self.recipient_max_bytes,
                    d.quotas.recipient_bytes,
                    "recipient_max_bytes",
                )?,
                stored_packets: positive(
                    self.max_stored_packets,
                    d.quotas.stored_packets,
                    "max_stored_packets",
                )?,
                stored_bytes: positive(
                    self.max_stored_bytes,
                    d.quotas.stored_bytes,
                    "max_stored_bytes",
                )?,
            },
        })
    }
}

/// Which budget a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Send,
    Fetch,
    Other,
}

impl Route {
    pub fn of(path: &str) -> Self {
        match path {
            "/send" => Route::Send,
            "/fetch" => Route::Fetch,
            _ => Route::Other,
        }
    }
}

/// Who a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    /// The address.
    pub ip: IpAddr,
    /// The address, IPv6 cut to its prefix: what is charged.
    pub key: IpAddr,
    /// From a configured peer's address: the peer budget.
    pub peer: bool,
}

/// Why something was refused, for the counters in `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateSend,
    RateFetch,
    RateOther,
    RatePeer,
    TooManyWaiting,
    RecipientFull,
    StorageFull,
    StampRequired,
    TooManyConnections,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::RateSend,
        Refusal::RateFetch,
        Refusal::RateOther,
        Refusal::RatePeer,
        Refusal::TooManyWaiting,
        Refusal::RecipientFull,
        Refusal::StorageFull,
        Refusal::StampRequired,
        Refusal::TooManyConnections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::RateSend => "rate_send",
            Refusal::RateFetch => "rate_fetch",
            Refusal::RateOther => "rate_other",
            Refusal::RatePeer => "rate_peer",
            Refusal::TooManyWaiting => "too_many_waiting",
            Refusal::RecipientFull => "recipient_full",
            Refusal::StorageFull => "storage_full",
            Refusal::StampRequired => "stamp_required",
            Refusal::TooManyConnections => "too_many_connections",
        }
    }
}

pub struct Admission {
    settings: AdmissionSettings,
    send: DefaultKeyedRateLimiter<IpAddr>,
    fetch: DefaultKeyedRateLimiter<IpAddr>,
    other: DefaultKeyedRateLimiter<IpAddr>,
    peer: DefaultKeyedRateLimiter<IpAddr>,
    /// The configured peers' addresses, resolved (again by [`Admission::resolve_peers`]).
    peer_ips: RwLock<HashSet<IpAddr>>,
    waiting: Mutex<HashMap<IpAddr, usize>>,
    /// Open TCP connections, per address (see [`Admission::connect`]).
    connections: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals being held back, per address (see [`Admission::hold`]).
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Their sum, kept beside the map so that a refusal does not add the map up.
    held_total: std::sync::atomic::AtomicUsize,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// `/send` requests from clients (not peers) in the current second, and the last full
    /// second's count: the rate `auto` stamps go by.
    sends: Mutex<(std::time::Instant, u64, u64)>,
}

/// Refusals held back at once for one address, and in all: beyond these, a refusal is
/// answered at once and the connection closed.
const HELD_PER_ADDRESS: usize = 32;
const HELD_IN_ALL: usize = 4096;
/// How long a refusal is held back.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// An open connection, counted against its address until dropped.
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.admission.connections.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A parked long-poll, counted against its address until dropped.
pub struct Waiting<'a> {
    counts: &'a Mutex<HashMap<IpAddr, usize>>,
    total: Option<&'a std::sync::atomic::AtomicUsize>,
    key: IpAddr,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(total) = self.total {
            total.fetch_sub(1, Ordering::Relaxed);
        }
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// How a refusal is to be answered.
pub enum Hold<'a> {
    /// After waiting this long (the slot is released when dropped).
    For(Duration, Waiting<'a>),
    /// At once, closing the connection: the address holds too many refusals already.
    CloseNow,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        Self {
            send: DefaultKeyedRateLimiter::keyed(settings.send.quota()),
            fetch: DefaultKeyedRateLimiter::keyed(settings.fetch.quota()),
            other: DefaultKeyedRateLimiter::keyed(settings.other.quota()),
            peer: DefaultKeyedRateLimiter::keyed(settings.peer.quota()),
            settings,
            peer_ips: RwLock::new(HashSet::new()),
            waiting: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            held_total: Default::default(),
            refused: Default::default(),
            sends: Mutex::new((std::time::Instant::now(), 0, 0)),
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// Resolves the configured peers' hosts; their addresses get the peer budget. A host
    /// that does not resolve keeps the addresses it had.
    pub async fn resolve_peers(&self, peers: &[PeerAddr]) {
        let mut found = HashSet::new();
        for peer in peers {
            match tokio::net::lookup_host((peer.host.as_str(), peer.port)).await {
                Ok(addrs) => found.extend(addrs.map(|a| canonical(a.ip()))),
                Err(e) => tracing::debug!(%peer, error = %e, "cannot resolve a peer's host"),
            }
        }
        let mut ips = self.peer_ips.write();
        ips.extend(found);
    }

    /// The client a request is charged to: the connection's address, or behind a trusted
    /// proxy the nearest address in `X-Forwarded-For` that is not a trusted proxy.
    pub fn client(&self, socket: Option<SocketAddr>, headers: &HeaderMap) -> Client {
        // No address (a router served without connection info, as in-process tests do): all
        // such requests share one budget.
        let mut ip = socket.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |s| canonical(s.ip()));
        if self.trusted(ip) {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            for hop in forwarded.iter().rev() {
                match hop.parse::<IpAddr>() {
                    Ok(hop) if self.trusted(canonical(hop)) => continue,
                    Ok(hop) => {
                        ip = canonical(hop);
                        break;
                    }
                    // An unreadable hop: stop at the last address we could trust.
                    Err(_) => break,
                }
            }
        }
        let peer = self.peer_ips.read().contains(&ip);
        Client {
            ip,
            key: self.key(ip),
            peer,
        }
    }

    /// Whether a request that names itself as coming from relay `peer` (a header anyone can
    /// write) really comes from its address: an IP literal equal to the client's, or a
    /// configured peer's host that resolved to it. Only then is the peer blamed for what the
    /// request carried.
    pub fn is_from(&self, peer: &PeerAddr, client: &Client) -> bool {
        match peer.host.parse::<IpAddr>() {
            Ok(ip) => canonical(ip) == client.ip,
            Err(_) => client.peer,
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.settings.trusted_proxies.iter().any(|r| r.contains(ip))
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.settings.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        }
    }

    /// Charges one request to its budget, or refuses it with how long to wait.
    pub fn admit(&self, route: Route, client: &Client) -> Result<(), RelayError> {
        if !self.settings.rate_limits {
            return Ok(());
        }
        let (limiter, refusal, what) = match (client.peer, route) {
            (true, _) => (&self.peer, Refusal::RatePeer, "requests from a peer"),
            (false, Route::Send) => (&self.send, Refusal::RateSend, "/send"),
            (false, Route::Fetch) => (&self.fetch, Refusal::RateFetch, "/fetch"),
            (false, Route::Other) => (&self.other, Refusal::RateOther, "requests"),
        };
        limiter.check_key(&client.key).map_err(|not_until| {
            self.count(refusal);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RelayError::RateLimited {
                what,
                retry_after: wait.max(Duration::from_millis(1)),
            }
        })
    }

    /// Counts one `/send` from a client towards the rate `auto` stamps go by.
    pub fn count_send(&self, client: &Client) {
        if client.peer {
            return;
        }
        let mut s = self.sends.lock();
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(s.0);
        if elapsed >= Duration::from_secs(1) {
            // The second that ended is the rate; a gap of several seconds means none.
            let last = if elapsed < Duration::from_secs(2) {
                s.1
            } else {
                0
            };
            *s = (now, 0, last);
        }
        s.1 += 1;
    }

    /// The bits a `/send` from `client` must carry a stamp of now, if any.
    pub fn stamp_required(&self, client: &Client) -> Option<u32> {
        let policy = self.settings.stamp;
        if client.peer {
            return None;
        }
        match policy.mode {
            StampMode::Off => None,
            StampMode::Always => Some(policy.bits),
            // A relay without rate limits is a private one or a load test: no flood to meet.
            StampMode::Auto if !self.settings.rate_limits => None,
            StampMode::Auto => {
                let s = self.sends.lock();
                // The busier of the last full second and the one under way, as of now (the
                // window only moves when a send comes).
                let rate = match s.0.elapsed() {
                    e if e < Duration::from_secs(1) => s.1.max(s.2),
                    e if e < Duration::from_secs(2) => s.1,
                    _ => 0,
                };
                (rate > policy.above_sends_per_sec).then_some(policy.bits)
            }
        }
    }

    /// Counts a connection just accepted from `remote` against its address; `None` (counted
    /// as a refusal) when the address holds its maximum already, and the connection is to be
    /// closed unread. Configured peers and trusted proxies are not limited, nor anyone with
    /// rate limits off. The slot is released when dropped, with the connection.
    pub fn connect(self: &Arc<Self>, remote: IpAddr) -> Option<ConnectionSlot> {
        let ip = canonical(remote);
        let key = self.key(ip);
        let exempt =
            !self.settings.rate_limits || self.trusted(ip) || self.peer_ips.read().contains(&ip);
        let mut open = self.connections.lock();
        let n = open.entry(key).or_default();
        if *n >= self.settings.max_connections_per_address && !exempt {
            if *n == 0 {
                open.remove(&key);
            }
            drop(open);
            self.count(Refusal::TooManyConnections);
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            admission: self.clone(),
            key,
        })
    }

    /// Counts a long-poll about to park against its address, or refuses it.
    pub fn park(&self, client: &Client) -> Result<Waiting<'_>, RelayError> {
        let mut waiting = self.waiting.lock();
        let n = waiting.entry(client.key).or_default();
        if *n >= self.settings.max_waiting_per_address && !client.peer && self.settings.rate_limits
        {
            drop(waiting);
            self.count(Refusal::TooManyWaiting);
            return Err(RelayError::RateLimited {
                what: "long-polls waiting at once",
                retry_after: Duration::from_secs(1),
            });
        }
        *n += 1;
        Ok(Waiting {
            counts: &self.waiting,
            total: None,
            key: client.key,
        })
    }

    /// A client over its rate is answered only after [`MAX_HOLD`] (its own wait is often a
    /// few milliseconds, too short to slow anyone): an HTTP/1.1 client waits for each answer before its next request on
    /// that connection, so a flooder that ignores `Retry-After` is slowed to its connections
    /// per second instead of costing the relay a request parse per microsecond, while the
    /// relay holds only a timer. Bounded per address and in all; beyond that the refusal is
    /// immediate and the connection closed.
    pub fn hold(&self, client: &Client) -> Hold<'_> {
        let mut held = self.held.lock();
        let total = self.held_total.load(Ordering::Relaxed);
        let n = held.entry(client.key).or_default();
        if *n >= HELD_PER_ADDRESS || total >= HELD_IN_ALL {
            if *n == 0 {
                held.remove(&client.key);
            }
            return Hold::CloseNow;
        }
        *n += 1;
        self.held_total.fetch_add(1, Ordering::Relaxed);
        Hold::For(
            MAX_HOLD,
            Waiting {
                counts: &self.held,
                total: Some(&self.held_total),
                key: client.key,
            },
        )
    }

    pub fn count(&self, refusal: Refusal) {
        let i = Refusal::ALL
            .iter()
            .position(|r| *r == refusal)
            .expect("every refusal is listed");
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by reason.
    pub fn refusals(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Forgets every address whose budget is full again; returns how many are still held.
    pub fn prune(&self) -> usize {
        let mut held = 0;
        for l in [&self.send, &self.fetch, &self.other, &self.peer] {
            l.retain_recent();
            l.shrink_to_fit();
            held += l.len();
        }
        held
    }

    /// For `/status`: the settings and the refusals.
    pub fn report(&self) -> serde_json::Value {
        let s = &self.settings;
        let rate = |r: Rate| serde_json::json!({ "per_sec": r.per_sec, "burst": r.burst });
        let refused: serde_json::Map<String, serde_json::Value> = self
            .refusals()
            .into_iter()
            .map(|(r, n)| (r.name().to_owned(), n.into()))
            .collect();
        let tracked: usize = [&self.send, &self.fetch, &self.other, &self.peer]
            .iter()
            .map(|l| l.len())
            .sum();
        serde_json::json!({
            "rate_limits": s.rate_limits,
            "rates": {
                "send": rate(s.send),
                "fetch": rate(s.fetch),
                "other": rate(s.other),
                "peer": rate(s.peer),
            },
            "ipv6_prefix": s.ipv6_prefix,
            "max_waiting_per_address": s.max_waiting_per_address,
            "max_connections_per_address": s.max_connections_per_address,
            "stamp": {
                "mode": s.stamp.mode.name(),
                "bits": s.stamp.bits,
                "above_sends_per_sec": s.stamp.above_sends_per_sec,
                "required_now": self.stamp_required(&Client {
                    ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    key: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    peer: false,
                }).is_some(),
            },
            "quotas": {
                "recipient_packets": s.quotas.recipient_packets,
                "recipient_bytes": s.quotas.recipient_bytes,
                "stored_packets": s.quotas.stored_packets,
                "stored_bytes": s.quotas.stored_bytes,
            },
            "addresses_tracked": tracked,
            "refused": refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(f: impl FnOnce(&mut AdmissionSettings)) -> Admission {
        let mut s = AdmissionSettings::default();
        f(&mut s);
        Admission::new(s)
    }

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn a_burst_is_admitted_then_refused_with_a_wait_and_counted() {
        let a = admission(|s| {
            s.send = Rate {
                per_sec: 1,
                burst: 3,
            }
        });
        let c = a.client(at("192.0.2.1"), &HeaderMap::new());
        for _ in 0..3 {
            a.admit(Route::Send, &c).unwrap();
        }
        let err = a.admit(Route::Send, &c).unwrap_err();
        let RelayError::RateLimited { retry_after, .. } = err else {
            panic!("{err}");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        // Another address, and another route of the same address, have budgets of their own.
        a.admit(Route::Send, &a.client(at("192.0.2.2"), &HeaderMap::new()))
            .unwrap();
        a.admit(Route::Fetch, &c).unwrap();
        let refused = a.refusals();
        assert_eq!(refused[0], (Refusal::RateSend, 1));
        assert!(refused[1..].iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn ipv6_is_charged_by_its_prefix_and_mapped_ipv4_as_ipv4() {
        let a = admission(|_| {});
        let h = HeaderMap::new();
        assert_eq!(
            a.client(at("2001:db8:1:2:aaaa::1"), &h).key,
            a.client(at("2001:db8:1:2:ffff::9"), &h).key
        );
        assert_ne!(
            a.client(at("2001:db8:1:2::1"), &h).key,
            a.client(at("2001:db8:1:3::1"), &h).key
        );
        assert_eq!(
            a.client(at("::ffff:192.0.2.7"), &h).key,
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let a = admission(|s| s.trusted_proxies = vec![IpRange::parse("10.0.0.0/8").unwrap()]);
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.9, 10.1.1.1".parse().unwrap());
        // From the proxy: the nearest untrusted hop.
        assert_eq!(
            a.client(at("10.0.0.5"), &h).key,
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        // From anyone else: the header is theirs to forge, so it is ignored.
        assert_eq!(
            a.client(at("203.0.113.4"), &h).key,
            "203.0.113.4".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn configured_peers_have_their_own_budget() {
        let a = admission(|s| {
            s.send = Rate {
                per_sec: 1,
                burst: 1,
            }
        });
        a.resolve_peers(&[PeerAddr::parse("127.0.0.9:7000").unwrap()])
            .await;
        let peer = a.client(at("127.0.0.9"), &HeaderMap::new());
        assert!(peer.peer);
        for _ in 0..100 {
            a.admit(Route::Send, &peer).unwrap();
        }
        let stranger = a.client(at("127.0.0.8"), &HeaderMap::new());
        assert!(!stranger.peer);
        a.admit(Route::Send, &stranger).unwrap();
        assert!(a.admit(Route::Send, &stranger).is_err());
    }

    #[test]
    fn parked_long_polls_are_bounded_per_address() {
        let a = admission(|s| s.max_waiting_per_address = 2);
        let c = a.client(at("192.0.2.1"), &HeaderMap::new());
        let one = a.park(&c).unwrap();
        let _two = a.park(&c).unwrap();
        assert!(a.park(&c).is_err());
        drop(one);
        let _three = a.park(&c).unwrap();
        assert_eq!(a.refusals()[4], (Refusal::TooManyWaiting, 1));
    }

    #[test]
    fn connections_are_bounded_per_address_and_given_back_when_closed() {
        let a = Arc::new(admission(|s| s.max_connections_per_address = 2));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open: Vec<_> = (0..2)
            .map(|_| a.connect(ip("192.0.2.1")).unwrap())
            .collect();
        assert!(a.connect(ip("192.0.2.1")).is_none());
        // The same host as an IPv4-mapped IPv6 address is the same address.
        assert!(a.connect(ip("::ffff:192.0.2.1")).is_none());
        // An IPv6 client is counted by its /64.
        let v6: Vec<_> = (1..=2)
            .map(|i| a.connect(ip(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        assert!(a.connect(ip("2001:db8::99")).is_none());
        assert!(a.connect(ip("2001:db8:0:1::1")).is_some());
        assert!(a.connect(ip("192.0.2.2")).is_some());
        assert_eq!(
            a.refusals()
                .iter()
                .find(|(r, _)| *r == Refusal::TooManyConnections),
            Some(&(Refusal::TooManyConnections, 3))
        );
        drop(open);
        drop(v6);
        assert!(a.connections.lock().is_empty());
        assert!(a.connect(ip("192.0.2.1")).is_some());
        // Without rate limits (a private relay, a load test) nothing is bounded.
        let off = Arc::new(admission(|s| {
            s.max_connections_per_address = 1;
            s.rate_limits = false;
        }));
        let _both = (off.connect(ip("192.0.2.1")), off.connect(ip("192.0.2.1")));
        assert!(_both.0.is_some() && _both.1.is_some());
    }

    #[test]
    fn held_refusals_are_bounded_per_address_and_released() {
        let a = admission(|_| {});
        let c = a.client(at("192.0.2.1"), &HeaderMap::new());
        let slots: Vec<_> = (0..HELD_PER_ADDRESS)
            .map(|_| match a.hold(&c) {
                Hold::For(wait, slot) => {
                    assert_eq!(wait, MAX_HOLD);
                    slot
                }
                Hold::CloseNow => panic!("a slot was free"),
            })
            .collect();
        assert!(matches!(a.hold(&c), Hold::CloseNow));
        // Another address still has its own slots.
        let other = a.client(at("192.0.2.2"), &HeaderMap::new());
        assert!(matches!(a.hold(&other), Hold::For(..)));
        drop(slots);
        assert_eq!(a.held_total.load(Ordering::Relaxed), 0);
        assert!(matches!(a.hold(&c), Hold::For(..)));
    }

    #[test]
    fn ranges_and_settings_are_checked() {
        assert!(
            IpRange::parse("10.0.0.0/8")
                .unwrap()
                .contains("10.9.9.9".parse().unwrap())
        );
        assert!(
            !IpRange::parse("10.0.0.0/8")
                .unwrap()
                .contains("11.0.0.1".parse().unwrap())
        );
        assert!(
            IpRange::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("nope").is_err());
        let bad = AdmissionFile {
            send_per_sec: Some(0),
            ..AdmissionFile::default()
        };
        assert!(bad.settings().unwrap_err().contains("send_per_sec"));
        let bad = AdmissionFile {
            max_stored_bytes: Some(0),
            ..AdmissionFile::default()
        };
        assert!(bad.settings().unwrap_err().contains("max_stored_bytes"));
    }
}
