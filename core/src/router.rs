//! [`ShardRouter`]: which shard a symbol's records go through.

use crate::symbol::Symbol;

/// Maps a symbol to a shard with a stable hash, so every record of a symbol goes through
/// one ring, one batcher and one writer, and reaches the database in push order.
///
/// The hash is FNV-1a over the symbol's bytes: fixed across processes and versions, so
/// partitioned feed handlers and several daemons agree on the mapping.
#[derive(Debug, Clone, Copy)]
pub struct ShardRouter {
    shards: usize,
}

impl ShardRouter {
    /// A router over `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        ShardRouter {
            shards: shards.max(1),
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard for `symbol`, in `0..shards`.
    #[inline]
    pub fn shard_for(&self, symbol: &Symbol) -> usize {
        (fnv1a(symbol.as_bytes()) % self.shards as u64) as usize
    }
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
    fn zero_shards_means_one() {
        let r = ShardRouter::new(0);
        assert_eq!(r.shards(), 1);
        assert_eq!(r.shard_for(&Symbol::new("X").unwrap()), 0);
    }
}
