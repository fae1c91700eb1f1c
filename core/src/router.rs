//! [`ShardRouter`]: which shard a symbol's records go through; on Citus, by the worker
//! that holds the symbol ([`Placement`]); for a replayed file, by its rows
//! ([`SymbolShards`]).

use std::sync::Arc;

use crate::symbol::Symbol;

/// Maps a symbol to a shard with a stable hash, so every record of a symbol goes through
/// one ring, one batcher and one writer, and reaches the database in push order.
///
/// The hash is FNV-1a over the symbol's bytes: fixed across processes and versions, so
/// partitioned feed handlers and several daemons agree on the mapping. With a
/// [`Placement`] (a table distributed by Citus) a symbol goes to the shard that writes the
/// Citus shards of its worker instead, so one batch's COPY reaches as few workers as it
/// can. Without a placement, symbols a [`SymbolShards`] names go where it says (a replay
/// spreading a file's rows evenly), the rest by the hash. The mapping is fixed for the
/// router's life either way.
#[derive(Debug, Clone)]
pub struct ShardRouter {
    shards: usize,
    placement: Option<Arc<Placement>>,
    symbols: Option<Arc<SymbolShards>>,
}

impl ShardRouter {
    /// A router over `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        ShardRouter {
            shards: shards.max(1),
            placement: None,
            symbols: None,
        }
    }

    /// A router over `shards` shards that sends each symbol where `placement` says.
    pub fn placed(shards: usize, placement: Placement) -> Self {
        ShardRouter {
            shards: shards.max(1),
            placement: Some(Arc::new(placement)),
            symbols: None,
        }
    }

    /// This router, with the symbols `symbols` names sent where it says unless a Citus
    /// placement routes them (keeping a batch on one worker is worth more there).
    pub fn with_symbols(mut self, symbols: Option<Arc<SymbolShards>>) -> Self {
        if self.placement.is_none() {
            self.symbols = symbols.filter(|s| !s.is_empty());
        }
        self
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The placement it routes by, if any.
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_deref()
    }

    /// The shard for `symbol`, in `0..shards`.
    #[inline]
    pub fn shard_for(&self, symbol: &Symbol) -> usize {
        if let Some(p) = &self.placement {
            return p.shard_for(symbol.as_bytes());
        }
        let hash = fnv1a(symbol.as_bytes());
        if let Some(shard) = self.symbols.as_ref().and_then(|s| s.by_hash(hash)) {
            return shard % self.shards;
        }
        (hash % self.shards as u64) as usize
    }
}

/// Chosen shards for some symbols: what a replay uses to spread a file's rows evenly over
/// its writers. The hash gives a shard the symbols it happens to give it: in a file where a
/// few symbols carry most rows (most real files), one writer can get far more rows than the
/// others, and the load lasts as long as that writer. A symbol's rows still all go through
/// one shard, so they keep their order and their producer claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolShards {
    /// Open addressing by the symbol's FNV-1a hash, which the router computes anyway, at
    /// most a quarter full: a lookup on the push path is one or two slot reads. Two symbols
    /// of one hash (1 in 2^64 a pair) would share the first one's shard, still each in one.
    slots: Box<[(u64, u32)]>,
    len: usize,
}

/// The shard of an empty slot.
const NO_SHARD: u32 = u32::MAX;

impl SymbolShards {
    /// Symbols dealt over `shards` shards by their rows in `counts` (a sample of the file,
    /// its first chunk): the symbol with the most rows first, each to the shard with the
    /// fewest rows so far (ties: the lower shard; equal counts: the symbol's bytes), so the
    /// same sample gives the same shards.
    pub fn balanced(counts: impl IntoIterator<Item = (Symbol, u64)>, shards: usize) -> Self {
        let shards = shards.max(1);
        let mut counts: Vec<(Symbol, u64)> = counts.into_iter().collect();
        counts.sort_unstable_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
        });
        let mut load = vec![0u64; shards];
        let size = (counts.len() * 4).next_power_of_two().max(8);
        let mut table = SymbolShards {
            slots: vec![(0, NO_SHARD); size].into_boxed_slice(),
            len: 0,
        };
        for (symbol, rows) in counts {
            let (shard, _) = load
                .iter()
                .enumerate()
                .min_by_key(|&(i, &l)| (l, i))
                .expect("at least one shard");
            if table.insert(fnv1a(symbol.as_bytes()), shard as u32) {
                load[shard] += rows;
            }
        }
        table
    }

    /// Notes `shard` for `hash`; false when the hash has one already.
    fn insert(&mut self, hash: u64, shard: u32) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            match self.slots[i] {
                (_, NO_SHARD) => {
                    self.slots[i] = (hash, shard);
                    self.len += 1;
                    return true;
                }
                (h, _) if h == hash => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The shard chosen for the symbol of FNV-1a hash `hash`.
    #[inline]
    fn by_hash(&self, hash: u64) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = hash as usize & mask;
        loop {
            match self.slots[i] {
                (_, NO_SHARD) => return None,
                (h, shard) if h == hash => return Some(shard as usize),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The shard chosen for `symbol`, if any.
    pub fn get(&self, symbol: &Symbol) -> Option<usize> {
        self.by_hash(fnv1a(symbol.as_bytes()))
    }

    /// How many symbols have a chosen shard.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no symbol has one.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest shard chosen (to check against the shards an ingestor runs).
    pub fn max_shard(&self) -> Option<usize> {
        let shards = self.slots.iter().map(|&(_, shard)| shard);
        shards.filter(|&s| s != NO_SHARD).max().map(|s| s as usize)
    }
}

/// Where a Citus-distributed table keeps each symbol, as engine shards: the table's hash
/// ranges (Citus hashes a text column as PostgreSQL's `hashtext()` does), each given to the
/// engine shard that writes its worker's ranges. Only speed depends on it: a stale
/// placement (after a rebalance) means batches reach more workers, never a wrong row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Each range's lowest hash, ascending.
    mins: Vec<i32>,
    /// The engine shard of each range.
    shard: Vec<usize>,
}

impl Placement {
    /// From the table's Citus shards as (lowest hash, node group), over `shards` engine
    /// shards: ordered by node, then hash, the ranges are dealt out in contiguous blocks, so
    /// with as many engine shards as workers (or a multiple) each engine shard writes to
    /// one worker. `None` for no ranges.
    pub fn new(mut ranges: Vec<(i32, i32)>, shards: usize) -> Option<Placement> {
        if ranges.is_empty() {
            return None;
        }
        let shards = shards.max(1);
        ranges.sort_unstable_by_key(|&(min, group)| (group, min));
        let n = ranges.len();
        let mut dealt: Vec<(i32, usize)> = ranges
            .iter()
            .enumerate()
            .map(|(i, &(min, _))| (min, i * shards / n))
            .collect();
        dealt.sort_unstable_by_key(|&(min, _)| min);
        Some(Placement {
            mins: dealt.iter().map(|d| d.0).collect(),
            shard: dealt.iter().map(|d| d.1).collect(),
        })
    }

    /// The engine shard for a symbol's bytes.
    #[inline]
    pub fn shard_for(&self, symbol: &[u8]) -> usize {
        let h = pg_hashtext(symbol);
        let i = self.mins.partition_point(|&m| m <= h).saturating_sub(1);
        self.shard[i]
    }

    /// How many hash ranges (Citus shards) it knows.
    pub fn ranges(&self) -> usize {
        self.mins.len()
    }
}

/// PostgreSQL's `hashtext()` of text with a deterministic collation: Bob Jenkins' lookup3
/// (`hashlittle`) over the bytes, seeded with PostgreSQL's constant, read little-endian as
/// PostgreSQL does on every platform it hashes text the same on. Tested against the
/// server's own `hashtext()`.
pub fn pg_hashtext(bytes: &[u8]) -> i32 {
    let mut a = 0x9e37_79b9u32
        .wrapping_add(bytes.len() as u32)
        .wrapping_add(3_923_095);
    let (mut b, mut c) = (a, a);
    let mut rest = bytes;
    while rest.len() >= 12 {
        a = a.wrapping_add(le32(&rest[0..4]));
        b = b.wrapping_add(le32(&rest[4..8]));
        c = c.wrapping_add(le32(&rest[8..12]));
        (a, b, c) = lookup3_mix(a, b, c);
        rest = &rest[12..];
    }
    // The last 0-11 bytes, little-endian into a, b and the top three bytes of c (its low
    // byte is left for the length, already added).
    a = a.wrapping_add(le32(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(le32(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(le32(&rest[8..]) << 8);
    }
    lookup3_final(a, b, c) as i32
}

/// Up to 4 bytes as a little-endian u32.
#[inline]
fn le32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |v, (i, &b)| v | u32::from(b) << (8 * i))
}

#[inline]
fn lookup3_mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(c) ^ c.rotate_left(4);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a) ^ a.rotate_left(6);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b) ^ b.rotate_left(8);
    b = b.wrapping_add(a);
    a = a.wrapping_sub(c) ^ c.rotate_left(16);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a) ^ a.rotate_left(19);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b) ^ b.rotate_left(4);
    b = b.wrapping_add(a);
    (a, b, c)
}

#[inline]
fn lookup3_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

/// 64-bit FNV-1a.
#[inline]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        let r = ShardRouter::new(4);
        let es = Symbol::new("ESU4").unwrap();
        assert_eq!(r.shard_for(&es), r.shard_for(&Symbol::new("ESU4").unwrap()));
        // Published FNV-1a test vector: "a" -> 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for i in 0..1000 {
            let s = Symbol::new(&format!("S{i}")).unwrap();
            assert!(r.shard_for(&s) < 4);
        }
    }

    #[test]
    fn spreads_symbols() {
        let r = ShardRouter::new(4);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[r.shard_for(&Symbol::new(&format!("SYM{i}")).unwrap())] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn hashtext_is_postgresql_s() {
        // What PostgreSQL 15's `SELECT hashtext(s)` returns (every tail length is covered
        // by the integration test against a live server).
        for (s, h) in [
            ("", -1_477_818_771),
            ("a", 1_075_015_857),
            ("ESU4", -90_973_117),
            ("SYM0001", 2_113_972_914),
            ("EURUSD", 1_525_658_419),
            ("abcdefghijkl", -1_586_087_212),
            ("abcdefghijklmnopqrstuvwxyz0123", 89_653_194),
        ] {
            assert_eq!(pg_hashtext(s.as_bytes()), h, "{s:?}");
        }
    }

    #[test]
    fn placement_gives_each_shard_one_worker_s_ranges() {
        // Four hash ranges, two on group 1 and two on group 2, interleaved.
        let ranges = vec![
            (i32::MIN, 1),
            (-1_073_741_824, 2),
            (0, 1),
            (1_073_741_824, 2),
        ];
        let p = Placement::new(ranges.clone(), 2).unwrap();
        assert_eq!(p.ranges(), 4);
        let r = ShardRouter::placed(2, p);
        let mut seen = [[false; 2]; 2];
        for i in 0..2000 {
            let s = Symbol::new(&format!("SYM{i}")).unwrap();
            let h = pg_hashtext(s.as_bytes());
            let group = ranges.iter().rev().find(|r| r.0 <= h).unwrap().1 as usize - 1;
            seen[r.shard_for(&s)][group] = true;
        }
        // Each engine shard writes to exactly one group, and each group is written.
        assert_eq!(seen, [[true, false], [false, true]]);
        // More engine shards than ranges: each range still goes to one shard in range.
        let p = Placement::new(ranges, 8).unwrap();
        assert!((0..500).all(|i| p.shard_for(format!("S{i}").as_bytes()) < 8));
        assert!(Placement::new(Vec::new(), 2).is_none());
    }

    #[test]
    fn balanced_symbols_spread_rows_evenly_and_the_rest_hash() {
        let sym = |s: &str| Symbol::new(s).unwrap();
        // One heavy symbol and many light ones: the heavy one gets a shard nearly to itself.
        let mut counts = vec![(sym("ES"), 600)];
        counts.extend((0..60).map(|i| (sym(&format!("S{i:02}")), 10)));
        let shards = SymbolShards::balanced(counts.clone(), 2);
        assert_eq!(shards.len(), 61);
        let mut rows = [0u64; 2];
        for (s, n) in &counts {
            rows[shards.get(s).unwrap()] += n;
        }
        assert_eq!(rows, [600, 600]);
        // The same sample in another order gives the same shards.
        counts.reverse();
        assert_eq!(SymbolShards::balanced(counts, 2), shards);
        let r = ShardRouter::new(2).with_symbols(Some(Arc::new(shards.clone())));
        assert_eq!(r.shard_for(&sym("ES")), shards.get(&sym("ES")).unwrap());
        // A symbol it does not name goes by the hash.
        let plain = ShardRouter::new(2);
        assert_eq!(r.shard_for(&sym("NQ")), plain.shard_for(&sym("NQ")));
        // A Citus placement wins.
        let placed = ShardRouter::placed(2, Placement::new(vec![(i32::MIN, 1)], 2).unwrap())
            .with_symbols(Some(Arc::new(shards)));
        assert_eq!(placed.shard_for(&sym("ES")), 0);
        assert!(placed.symbols.is_none());
        // Many symbols: every one is found, each shard gets its share, none beyond 4.
        let many: Vec<_> = (0..5_000)
            .map(|i| (sym(&format!("M{i}")), 1 + i % 7))
            .collect();
        let dealt = SymbolShards::balanced(many.clone(), 4);
        let mut rows = [0u64; 4];
        for (s, n) in &many {
            rows[dealt.get(s).expect("dealt")] += n;
        }
        assert_eq!((dealt.len(), dealt.max_shard()), (5_000, Some(3)));
        assert!(
            rows.iter().max().unwrap() - rows.iter().min().unwrap() <= 6,
            "{rows:?}"
        );
        assert_eq!(dealt.get(&sym("unseen")), None);
    }

    #[test]
    fn zero_shards_means_one() {
        let r = ShardRouter::new(0);
        assert_eq!(r.shards(), 1);
        assert_eq!(r.shard_for(&Symbol::new("X").unwrap()), 0);
    }
}
