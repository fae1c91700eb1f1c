//! [`SyntheticMarket`]: a deterministic stream of realistic-looking ticks for demos,
//! benchmarks and tests.
//!
//! Symbols are drawn with a Zipf popularity (a few are busy, most are quiet), each symbol's
//! mid price follows a random walk, quotes straddle the mid by a spread, and trades print at
//! the bid or the ask. The same seed always gives the same ticks.

pub use crate::record::Tick;
use crate::record::{Quote, Side, Trade};
use crate::symbol::Symbol;

/// SplitMix64: tiny, fast and good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A deterministic synthetic market; an endless iterator of [`Tick`]s.
#[derive(Debug, Clone)]
pub struct SyntheticMarket {
    rng: SplitMix64,
    symbols: Vec<Symbol>,
    /// Cumulative Zipf weights, last = 1.0.
    cdf: Vec<f64>,
    mids: Vec<f64>,
    seqs: Vec<i64>,
    time_ns: i64,
    trade_share: f64,
}

impl SyntheticMarket {
    /// `symbols` instruments named `SYM0000`…, Zipf exponent 1, one trade per four quotes,
    /// starting at 2024-07-02 00:00 UTC.
    pub fn new(seed: u64, symbols: usize) -> Self {
        let names = (0..symbols.max(1))
            // "SYM" and at most 20 digits: always a valid symbol.
            .map(|i| Symbol::new(&format!("SYM{i:04}")).expect("SYMnnnn is a valid symbol"))
            .collect();
        Self::with_symbols(seed, names)
    }

    /// A market over the given symbols, most popular first.
    pub fn with_symbols(seed: u64, symbols: Vec<Symbol>) -> Self {
        let mut rng = SplitMix64::new(seed);
        let weights: Vec<f64> = (1..=symbols.len()).map(|r| 1.0 / r as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        let mids = (0..symbols.len())
            .map(|_| 10.0 + rng.next_f64() * 990.0)
            .collect();
        SyntheticMarket {
            rng,
            seqs: vec![0; symbols.len()],
            symbols,
            cdf,
            mids,
            time_ns: 1_719_878_400_000_000_000,
            trade_share: 0.2,
        }
    }

    /// Starts the clock at `time_ns` (default 2024-07-02 00:00 UTC, so tests are
    /// reproducible). Live runs start at now: the schema's retention applies to tick time.
    pub fn starting_at(mut self, time_ns: i64) -> Self {
        self.time_ns = time_ns;
        self
    }

    /// Sets the share of trades among ticks (default 0.2).
    pub fn trade_share(mut self, share: f64) -> Self {
        self.trade_share = share.clamp(0.0, 1.0);
        self
    }

    /// The symbols, most popular first.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// The next trade, skipping quotes.
    pub fn next_trade(&mut self) -> Trade {
        let i = self.pick();
        self.trade_at(i)
    }

    fn pick(&mut self) -> usize {
        let u = self.rng.next_f64();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.symbols.len() - 1)
    }

    fn step(&mut self, i: usize) -> f64 {
        // ~1 bp moves, mean-reverting toward nothing: a plain random walk kept positive.
        let r = self.rng.next_f64() * 2.0 - 1.0;
        self.mids[i] = (self.mids[i] * (1.0 + r * 1e-4)).max(0.01);
        self.time_ns += 1_000 + (self.rng.next_u64() % 9_000) as i64;
        self.seqs[i] += 1;
        // Half a spread of ~1 bp, on a 0.01 tick grid.
        (self.mids[i] * 5e-5).max(0.005)
    }

    fn trade_at(&mut self, i: usize) -> Trade {
        let half = self.step(i);
        let buy = self.rng.next_u64() & 1 == 0;
        let price = if buy {
            self.mids[i] + half
        } else {
            self.mids[i] - half
        };
        Trade {
            time_ns: self.time_ns,
            symbol: self.symbols[i],
            price: (price * 100.0).round() / 100.0,
            volume: (1 + self.rng.next_u64() % 10) as f64,
            side: if buy { Side::Buy } else { Side::Sell },
            exchange_seq: self.seqs[i],
        }
    }

    fn quote_at(&mut self, i: usize) -> Quote {
        let half = self.step(i);
        Quote {
            time_ns: self.time_ns,
            symbol: self.symbols[i],
            bid: ((self.mids[i] - half) * 100.0).floor() / 100.0,
            ask: ((self.mids[i] + half) * 100.0).ceil() / 100.0,
            bid_size: (1 + self.rng.next_u64() % 50) as f64,
            ask_size: (1 + self.rng.next_u64() % 50) as f64,
        }
    }
}

impl Iterator for SyntheticMarket {
    type Item = Tick;

    fn next(&mut self) -> Option<Tick> {
        let i = self.pick();
        Some(if self.rng.next_f64() < self.trade_share {
            Tick::Trade(self.trade_at(i))
        } else {
            Tick::Quote(self.quote_at(i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let a: Vec<Tick> = SyntheticMarket::new(7, 50).take(1000).collect();
        let b: Vec<Tick> = SyntheticMarket::new(7, 50).take(1000).collect();
        assert_eq!(a, b);
        let c: Vec<Tick> = SyntheticMarket::new(8, 50).take(1000).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn popularity_is_skewed_and_quotes_are_sane() {
        let mut m = SyntheticMarket::new(1, 100);
        let first = m.symbols()[0];
        let last = m.symbols()[99];
        let (mut hot, mut cold, mut trades) = (0, 0, 0);
        let mut last_time = 0;
        for tick in m.by_ref().take(100_000) {
            if *tick.symbol() == first {
                hot += 1;
            }
            if *tick.symbol() == last {
                cold += 1;
            }
            match tick {
                Tick::Trade(t) => {
                    trades += 1;
                    assert!(t.price > 0.0 && t.volume >= 1.0);
                    assert!(t.time_ns > last_time);
                    last_time = t.time_ns;
                }
                Tick::Quote(q) => {
                    assert!(q.bid < q.ask, "{q:?}");
                    assert!(q.time_ns > last_time);
                    last_time = q.time_ns;
                }
            }
        }
        assert!(hot > 10 * cold, "hot {hot} cold {cold}");
        assert!((15_000..25_000).contains(&trades), "{trades}");
    }

    #[test]
    fn shift_time_moves_trades_and_quotes() {
        let ticks: Vec<Tick> = SyntheticMarket::new(3, 10).take(200).collect();
        assert!(ticks.iter().any(|t| matches!(t, Tick::Trade(_))));
        assert!(ticks.iter().any(|t| matches!(t, Tick::Quote(_))));
        for tick in ticks {
            let mut moved = tick;
            moved.shift_time(-86_400_000_000_000);
            assert_eq!(moved.time_ns(), tick.time_ns() - 86_400_000_000_000);
            assert_eq!(moved.symbol(), tick.symbol());
        }
    }
}
