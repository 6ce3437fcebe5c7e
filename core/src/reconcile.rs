//! Set reconciliation between relays with rateless invertible Bloom lookup tables (Yang,
//! Gilad and Alizadeh, "Practical Rateless Set Reconciliation", SIGCOMM 2024): two relays
//! find the packets one holds and the other lacks by exchanging about 1.35-1.7 coded symbols
//! per difference, whatever the number of packets they hold. Pure computation, no I/O: the
//! relay keeps a [`Sketch`] of its live hashes and serves ranges of it; the peer subtracts
//! its own and peels ([`reconcile`]).
//!
//! Why not range-based reconciliation (negentropy): its cost grows with the differences
//! times the branching factor times the depth, about 290 kB for 300 differences among
//! 100,000 hashes with its fixed 32-byte ids and 16-way splits, against ~20 kB here; see
//! docs/protocol.md ("`/sync/reconcile`"), which also gives the test vectors.
//!
//! Every item is a 32-byte packet hash. An item maps to symbol 0 and then to a sparse,
//! deterministic sequence of further indices (density about 1/(1 + i/2)), seeded by its
//! checksum, so the first `n` symbols of a set can be kept up to date item by item.

use sha2::{Digest, Sha256};

/// Bytes of one coded symbol on the wire: the XOR of the items (32), the XOR of their
/// checksums (8, little-endian), and their count (4, little-endian, signed: a difference of
/// two sketches counts items of one side as +1 and of the other as -1).
pub const SYMBOL_BYTES: usize = 44;

/// Domain separation of the checksum, so it is independent of the packet hash itself.
const CHECKSUM_DOMAIN: &[u8] = b"jasper/reconcile/v1";

/// The checksum of an item: the first 8 bytes of SHA-256(domain ‖ item), little-endian. It
/// tells a pure symbol (exactly one item left) from a mixed one, and seeds the item's indices.
pub fn checksum(item: &[u8; 32]) -> u64 {
    let digest = Sha256::new()
        .chain_update(CHECKSUM_DOMAIN)
        .chain_update(item)
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The symbol indices an item maps to, in increasing order, without end: 0 first, then each
/// next one from a 64-bit multiplicative generator seeded with the checksum:
/// `r = r * 0xda942042e4dd58b5` (wrapping), then
/// `i += max(1, ceil((i + 1.5) * (2^32 / sqrt(r + 1) - 1)))` in IEEE double precision.
#[derive(Debug, Clone)]
pub struct Indices {
    state: u64,
    next: Option<u64>,
}

impl Indices {
    pub fn of(checksum: u64) -> Self {
        Self {
            state: checksum,
            next: Some(0),
        }
    }
}

impl Iterator for Indices {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let current = self.next?;
        self.state = self.state.wrapping_mul(0xda94_2042_e4dd_58b5);
        let scale = (4_294_967_296.0_f64 / ((self.state as f64) + 1.0).sqrt()) - 1.0;
        let step = ((current as f64 + 1.5) * scale).ceil();
        // The step is at least 1 (the formula can give 0 for the largest states), and an
        // index past u64 ends the sequence rather than wrapping.
        let step = if step.is_finite() && step >= 1.0 {
            step.min(u64::MAX as f64) as u64
        } else {
            1
        };
        self.next = current.checked_add(step);
        Some(current)
    }
}

/// One coded symbol: the XOR of the items mapped to it, the XOR of their checksums, and how
/// many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodedSymbol {
    pub sum: [u8; 32],
    pub checksum: u64,
    pub count: i32,
}

impl CodedSymbol {
    fn apply(&mut self, item: &[u8; 32], checksum: u64, direction: i32) {
        for (s, b) in self.sum.iter_mut().zip(item) {
            *s ^= b;
        }
        self.checksum ^= checksum;
        self.count = self.count.wrapping_add(direction);
    }

    /// Holds exactly one item (of either side): its count is ±1 and the checksum matches.
    fn pure(&self) -> bool {
        (self.count == 1 || self.count == -1) && checksum(&self.sum) == self.checksum
    }

    fn is_empty(&self) -> bool {
        self.count == 0 && self.checksum == 0 && self.sum == [0; 32]
    }

    pub fn to_bytes(&self) -> [u8; SYMBOL_BYTES] {
        let mut out = [0u8; SYMBOL_BYTES];
        out[..32].copy_from_slice(&self.sum);
        out[32..40].copy_from_slice(&self.checksum.to_le_bytes());
        out[40..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; SYMBOL_BYTES]) -> Self {
        Self {
            sum: bytes[..32].try_into().expect("32 bytes"),
            checksum: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
            count: i32::from_le_bytes(bytes[40..].try_into().expect("4 bytes")),
        }
    }
}

/// Symbols as wire bytes, [`SYMBOL_BYTES`] each.
pub fn encode_symbols(symbols: &[CodedSymbol]) -> Vec<u8> {
    let mut out = Vec::with_capacity(symbols.len() * SYMBOL_BYTES);
    for s in symbols {
        out.extend_from_slice(&s.to_bytes());
    }
    out
}

/// Wire bytes as symbols; `None` when the length is not a multiple of [`SYMBOL_BYTES`].
pub fn decode_symbols(bytes: &[u8]) -> Option<Vec<CodedSymbol>> {
    if !bytes.len().is_multiple_of(SYMBOL_BYTES) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(SYMBOL_BYTES)
            .map(|c| CodedSymbol::from_bytes(c.try_into().expect("chunk size")))
            .collect(),
    )
}

/// The first `len` coded symbols of a set, kept up to date as items come and go: adding or
/// removing an item touches about 2·ln(len) symbols.
#[derive(Debug, Clone)]
pub struct Sketch {
    symbols: Vec<CodedSymbol>,
}

impl Sketch {
    pub fn new(len: usize) -> Self {
        Self {
            symbols: vec![CodedSymbol::default(); len],
        }
    }

    pub fn add(&mut self, item: &[u8; 32]) {
        self.apply(item, 1);
    }

    pub fn remove(&mut self, item: &[u8; 32]) {
        self.apply(item, -1);
    }

    fn apply(&mut self, item: &[u8; 32], direction: i32) {
        let c = checksum(item);
        let len = self.symbols.len() as u64;
        for i in Indices::of(c).take_while(|&i| i < len) {
            self.symbols[i as usize].apply(item, c, direction);
        }
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Items counted in (symbol 0 holds every item).
    pub fn items(&self) -> i64 {
        self.symbols.first().map_or(0, |s| i64::from(s.count))
    }

    pub fn symbols(&self) -> &[CodedSymbol] {
        &self.symbols
    }
}

/// Symbols `from..to` of a set, computed from its items (for ranges beyond a kept
/// [`Sketch`]): each item costs the steps up to `to`, so a far range costs a pass over the
/// items rather than memory.
pub fn encode_range<'a>(
    items: impl IntoIterator<Item = &'a [u8; 32]>,
    from: u64,
    to: u64,
) -> Vec<CodedSymbol> {
    let mut out = vec![CodedSymbol::default(); to.saturating_sub(from) as usize];
    for item in items {
        let c = checksum(item);
        for i in Indices::of(c)
            .skip_while(|&i| i < from)
            .take_while(|&i| i < to)
        {
            out[(i - from) as usize].apply(item, c, 1);
        }
    }
    out
}

/// What two sets differ by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Items the remote side holds and the local side lacks.
    pub remote_only: Vec<[u8; 32]>,
    /// Items the local side holds and the remote side lacks.
    pub local_only: Vec<[u8; 32]>,
}

impl Difference {
    pub fn len(&self) -> usize {
        self.remote_only.len() + self.local_only.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why [`reconcile`] found no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileError {
    /// These symbols are too few for this many differences: ask for more.
    NeedMore,
    /// The symbols contradict themselves (an item peeled twice, or symbols left over once
    /// every item is out): not an honest sketch.
    Inconsistent,
}

/// The difference of two sets from the same first `n` symbols of each (`remote` and `local`
/// are cut to the shorter). Peels pure symbols until symbol 0, which holds every item, is
/// empty; fails with [`ReconcileError::NeedMore`] when it is not, so the caller asks for more
/// symbols and tries again.
pub fn reconcile(
    remote: &[CodedSymbol],
    local: &[CodedSymbol],
) -> Result<Difference, ReconcileError> {
    let n = remote.len().min(local.len());
    if n == 0 {
        return Err(ReconcileError::NeedMore);
    }
    let mut diff: Vec<CodedSymbol> = remote[..n]
        .iter()
        .zip(&local[..n])
        .map(|(r, l)| {
            let mut d = *r;
            d.apply(&l.sum, l.checksum, 0);
            d.count = r.count.wrapping_sub(l.count);
            d
        })
        .collect();
    let mut pending: Vec<usize> = (0..n).filter(|&i| diff[i].pure()).collect();
    let mut out = Difference::default();
    let mut peeled = std::collections::HashSet::new();
    while let Some(i) = pending.pop() {
        if !diff[i].pure() {
            continue;
        }
        let item = diff[i].sum;
        let c = diff[i].checksum;
        let direction = diff[i].count;
        if !peeled.insert(item) || peeled.len() > n * 2 {
            return Err(ReconcileError::Inconsistent);
        }
        if direction == 1 {
            out.remote_only.push(item);
        } else {
            out.local_only.push(item);
        }
        for j in Indices::of(c).take_while(|&j| j < n as u64) {
            let j = j as usize;
            diff[j].apply(&item, c, -direction);
            if diff[j].pure() {
                pending.push(j);
            }
        }
    }
    if !diff[0].is_empty() {
        return Err(ReconcileError::NeedMore);
    }
    // Every item has been peeled: an honest difference leaves every symbol empty.
    if diff.iter().all(CodedSymbol::is_empty) {
        Ok(out)
    } else {
        Err(ReconcileError::Inconsistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u64) -> [u8; 32] {
        Sha256::digest(n.to_le_bytes()).into()
    }

    fn sketch(items: impl Iterator<Item = u64>, len: usize) -> Sketch {
        let mut s = Sketch::new(len);
        for i in items {
            s.add(&item(i));
        }
        s
    }

    #[test]
    fn indices_start_at_zero_increase_and_thin_out() {
        for seed in [0u64, 1, 42, u64::MAX, 0xda94_2042_e4dd_58b5] {
            let idx: Vec<u64> = Indices::of(seed).take(40).collect();
            assert_eq!(idx[0], 0);
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "{seed}: {idx:?}");
        }
        // Density about 1/(1 + i/2): an item lands in about 2·ln(n) of the first n symbols.
        let total: usize = (0..1000u64)
            .map(|n| {
                Indices::of(checksum(&item(n)))
                    .take_while(|&i| i < 10_000)
                    .count()
            })
            .sum();
        let mean = total as f64 / 1000.0;
        assert!((12.0..24.0).contains(&mean), "{mean}");
    }

    #[test]
    fn the_vector_of_docs_protocol_md() {
        // docs/protocol.md, "`/sync/reconcile`": the checksum and first indices of the item
        // SHA-256("jasper") and the first symbol of the set {that item}.
        let x: [u8; 32] = Sha256::digest(b"jasper").into();
        let c = checksum(&x);
        let idx: Vec<u64> = Indices::of(c).take(8).collect();
        let mut s = Sketch::new(4);
        s.add(&x);
        let printed = format!(
            "{} {c:016x} {idx:?} {}",
            hex::encode(x),
            hex::encode(s.symbols()[0].to_bytes())
        );
        assert_eq!(
            printed, VECTOR,
            "update docs/protocol.md if this changes on purpose"
        );
    }

    const VECTOR: &str = "3721e1a2ad55f5ac10498a98a9069121be19ea3363cf44f18f10008728c360ad a1cb52152a62344e [0, 1, 5, 7, 17, 24, 68, 805] 3721e1a2ad55f5ac10498a98a9069121be19ea3363cf44f18f10008728c360ad4e34622a1552cba101000000";

    #[test]
    fn add_then_remove_leaves_an_empty_sketch_and_bytes_round_trip() {
        let mut s = sketch(0..500, 256);
        assert_eq!(s.items(), 500);
        let bytes = encode_symbols(s.symbols());
        assert_eq!(bytes.len(), 256 * SYMBOL_BYTES);
        assert_eq!(decode_symbols(&bytes).unwrap(), s.symbols());
        assert!(decode_symbols(&bytes[1..]).is_none());
        for i in 0..500 {
            s.remove(&item(i));
        }
        assert!(s.symbols().iter().all(CodedSymbol::is_empty));
    }

    #[test]
    fn encode_range_matches_the_kept_sketch() {
        let items: Vec<[u8; 32]> = (0..300).map(item).collect();
        let s = sketch(0..300, 512);
        assert_eq!(encode_range(&items, 0, 512), s.symbols());
        assert_eq!(encode_range(&items, 100, 300), &s.symbols()[100..300]);
    }

    #[test]
    fn finds_both_sides_of_a_difference_and_asks_for_more_when_short() {
        // 10,000 shared, 150 only remote, 150 only local: 300 differences.
        let remote = sketch((0..10_000).chain(20_000..20_150), 1024);
        let local = sketch((0..10_000).chain(30_000..30_150), 1024);
        assert_eq!(
            reconcile(&remote.symbols()[..100], &local.symbols()[..100]),
            Err(ReconcileError::NeedMore)
        );
        let mut needed = None;
        for n in (300..=1024).step_by(20) {
            if let Ok(d) = reconcile(&remote.symbols()[..n], &local.symbols()[..n]) {
                let mut r = d.remote_only.clone();
                r.sort();
                let mut want: Vec<[u8; 32]> = (20_000..20_150).map(item).collect();
                want.sort();
                assert_eq!(r, want);
                assert_eq!(d.local_only.len(), 150);
                needed = Some(n);
                break;
            }
        }
        let needed = needed.expect("decodes within 1024 symbols");
        // About 1.35-1.7 symbols per difference.
        assert!(needed <= 600, "{needed} symbols for 300 differences");
    }

    #[test]
    fn equal_sets_reconcile_from_one_symbol() {
        let a = sketch(0..1000, 8);
        assert_eq!(
            reconcile(&a.symbols()[..1], &a.symbols()[..1]),
            Ok(Difference::default())
        );
    }

    #[test]
    fn an_item_pure_in_a_symbol_it_does_not_map_to_is_inconsistent() {
        // A lying peer: the item shows alone in symbols 0 and 1, but does not map to 1, so
        // after peeling it from its own symbols, symbol 1 still shows it.
        let x = (0..)
            .map(item)
            .find(|x| !Indices::of(checksum(x)).take(3).any(|i| i == 1))
            .unwrap();
        let mut alone = CodedSymbol::default();
        alone.apply(&x, checksum(&x), 1);
        let remote = vec![alone, alone, CodedSymbol::default(), CodedSymbol::default()];
        let local = vec![CodedSymbol::default(); 4];
        assert_eq!(
            reconcile(&remote, &local),
            Err(ReconcileError::Inconsistent)
        );
    }
}
