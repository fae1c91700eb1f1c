//! [`BatchClaims`]: what one batch claims for its producers' ticks, per (producer, symbol),
//! and how a refused claim drops the ticks another batch already stored.

use foldhash::HashMap;
use std::sync::Arc;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::push::{ProducerId, PushOutcome};
use crate::spool::format::SpooledClaim;
use crate::symbol::Symbol;

/// A row of a batch that belongs to a producer.
#[derive(Debug, Clone, Copy)]
struct ClaimRow {
    /// Its index in the batch.
    row: u32,
    /// The producer's sequence number for it.
    seq: u64,
    /// Its push's outcome, as an index into [`BatchClaims::outcomes`].
    outcome: u32,
}

/// The sequences a batch writes for one (producer, symbol).
#[derive(Debug)]
struct KeyClaim {
    first: u64,
    last: u64,
    // Invariant: ascending by `seq` and by `row` (rows are added in sequence order).
    rows: Vec<ClaimRow>,
}

/// One producer's keys in a batch.
#[derive(Debug)]
struct ProducerClaims {
    producer: ProducerId,
    by_symbol: HashMap<Symbol, KeyClaim>,
}

/// A batch's claims: per producer and symbol, the range of sequences it writes and which of
/// its rows they are. Empty (and free) for a batch without producer ticks.
#[derive(Debug, Default)]
pub(crate) struct BatchClaims {
    producers: Vec<ProducerClaims>,
    /// The pushes whose rows the batch holds, told how many of their ticks were resends.
    outcomes: Vec<Arc<PushOutcome>>,
}

/// A push's place in a batch's claims: its producer's and its outcome's indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claimant {
    producer: usize,
    outcome: u32,
}

/// A claim the database refused, by position in [`BatchClaims::keys`] order.
pub(crate) type Refused = Vec<usize>;

impl BatchClaims {
    /// True when the batch holds no producer rows.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Notes that row `row` of the batch will be `producer`'s tick `seq` of `symbol`, pushed
    /// by the push `outcome` belongs to. False, and counted as a duplicate, when the batch
    /// already holds that sequence or a later one for the key: a resend that met its
    /// original in the same batch; the caller leaves the row out.
    pub fn add(
        &mut self,
        producer: &ProducerId,
        symbol: Symbol,
        seq: u64,
        outcome: &Arc<PushOutcome>,
        row: u32,
    ) -> bool {
        let by = self.claimant(producer, outcome);
        self.add_for(by, symbol, seq, outcome, row)
    }

    /// Where the rows of one push of `producer` (answered through `outcome`) are noted: a
    /// chunk of records looks its producer and push up once, not once per record.
    pub fn claimant(&mut self, producer: &ProducerId, outcome: &Arc<PushOutcome>) -> Claimant {
        let p = match self.producers.iter().rposition(|p| p.producer == *producer) {
            Some(p) => p,
            None => {
                self.producers.push(ProducerClaims {
                    producer: producer.clone(),
                    by_symbol: HashMap::default(),
                });
                self.producers.len() - 1
            }
        };
        let o = match self.outcomes.last() {
            Some(last) if Arc::ptr_eq(last, outcome) => self.outcomes.len() - 1,
            _ => {
                self.outcomes.push(outcome.clone());
                self.outcomes.len() - 1
            }
        };
        Claimant {
            producer: p,
            outcome: o as u32,
        }
    }

    /// [`BatchClaims::add`] for a claimant `by` from [`BatchClaims::claimant`] of this batch
    /// (`outcome` is the one it was made with).
    pub fn add_for(
        &mut self,
        by: Claimant,
        symbol: Symbol,
        seq: u64,
        outcome: &PushOutcome,
        row: u32,
    ) -> bool {
        let claim = self.producers[by.producer]
            .by_symbol
            .entry(symbol)
            .or_insert_with(|| KeyClaim {
                first: seq,
                last: 0,
                // A key's rows are many per batch: skip the first doublings.
                rows: Vec::with_capacity(16),
            });
        if !claim.rows.is_empty() && seq <= claim.last {
            outcome.add_duplicates(1);
            return false;
        }
        claim.last = seq;
        claim.rows.push(ClaimRow {
            row,
            seq,
            outcome: by.outcome,
        });
        true
    }

    /// The keys in the order they are claimed (producer, then symbol, bytewise): every
    /// transaction locks shared keys in the same order, so two cannot deadlock.
    fn keys(&self) -> Vec<(&ProducerId, &Symbol, &KeyClaim)> {
        let mut keys: Vec<_> = self
            .producers
            .iter()
            .flat_map(|p| p.by_symbol.iter().map(move |(s, c)| (&p.producer, s, c)))
            .collect();
        keys.sort_unstable_by(|a, b| {
            (a.0.as_str(), a.1.as_bytes()).cmp(&(b.0.as_str(), b.1.as_bytes()))
        });
        keys
    }

    /// Runs `christmas_claim_producers(…)` for every key, as records of `kind`, inside the
    /// caller's transaction; the positions of the claims refused.
    pub async fn claim(
        &self,
        client: &Client,
        kind: &str,
    ) -> Result<Refused, tokio_postgres::Error> {
        let keys = self.keys();
        let producers: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let kinds: Vec<&str> = vec![kind; keys.len()];
        let symbols: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let firsts: Vec<i64> = keys.iter().map(|k| k.2.first as i64).collect();
        let lasts: Vec<i64> = keys.iter().map(|k| k.2.last as i64).collect();
        let rows = client
            .query_typed(
                "SELECT christmas_claim_producers($1, $2, $3, $4, $5)",
                &[
                    (&producers, Type::TEXT_ARRAY),
                    (&kinds, Type::TEXT_ARRAY),
                    (&symbols, Type::TEXT_ARRAY),
                    (&firsts, Type::INT8_ARRAY),
                    (&lasts, Type::INT8_ARRAY),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, i32>(0) as usize - 1)
            .collect())
    }

    /// The sequence stored for each refused key (outside the failed transaction, so what
    /// the winner committed is visible).
    pub async fn stored(
        &self,
        client: &Client,
        kind: &str,
        refused: &Refused,
    ) -> Result<Vec<u64>, tokio_postgres::Error> {
        let keys = self.keys();
        let mut stored = Vec::with_capacity(refused.len());
        for &i in refused {
            let (producer, symbol, _) = keys[i];
            let row = client
                .query_typed(
                    "SELECT seq FROM ingest_producers WHERE producer = $1 AND kind = $2 AND symbol = $3",
                    &[
                        (&producer.as_str(), Type::TEXT),
                        (&kind, Type::TEXT),
                        (&symbol.as_str(), Type::TEXT),
                    ],
                )
                .await?;
            stored.push(row.first().map_or(0, |r| r.get::<_, i64>(0) as u64));
        }
        Ok(stored)
    }

    /// Takes out the rows of the refused keys whose sequence is at or below what is stored
    /// (`stored[i]` for `refused[i]`), tells their pushes, and returns their batch indexes,
    /// ascending. Keys left with no rows are no longer claimed; the others now start at their
    /// first remaining sequence.
    pub fn drop_stored(&mut self, refused: &Refused, stored: &[u64]) -> Vec<usize> {
        let targets: Vec<(ProducerId, Symbol, u64)> = {
            let keys = self.keys();
            refused
                .iter()
                .zip(stored)
                .map(|(&i, &s)| (keys[i].0.clone(), *keys[i].1, s))
                .collect()
        };
        let mut dropped = Vec::new();
        for (producer, symbol, stored) in targets {
            let Some(p) = self.producers.iter_mut().find(|p| p.producer == producer) else {
                continue;
            };
            let Some(claim) = p.by_symbol.get_mut(&symbol) else {
                continue;
            };
            let cut = claim.rows.partition_point(|r| r.seq <= stored);
            for r in claim.rows.drain(..cut) {
                self.outcomes[r.outcome as usize].add_duplicates(1);
                dropped.push(r.row as usize);
            }
            match claim.rows.first() {
                Some(r) => claim.first = r.seq,
                None => {
                    p.by_symbol.remove(&symbol);
                }
            }
        }
        self.producers.retain(|p| !p.by_symbol.is_empty());
        dropped.sort_unstable();
        dropped
    }

    /// The claims as the spool keeps them.
    pub fn to_spooled(&self) -> Vec<SpooledClaim> {
        self.keys()
            .into_iter()
            .map(|(producer, symbol, claim)| SpooledClaim {
                producer: producer.as_str().to_string(),
                symbol: symbol.as_str().to_string(),
                rows: claim.rows.iter().map(|r| r.row).collect(),
                seqs: claim.rows.iter().map(|r| r.seq).collect(),
            })
            .collect()
    }

    /// The claims of a batch an earlier run spooled. A claim that does not read back (it
    /// cannot come from this engine) is left out, and the batch is written as if its rows
    /// were unnamed.
    pub fn from_spooled(spooled: &[SpooledClaim]) -> BatchClaims {
        let nobody = Arc::new(PushOutcome::default());
        let mut claims = BatchClaims::default();
        for c in spooled {
            let (Ok(producer), Ok(symbol)) = (ProducerId::new(&c.producer), Symbol::new(&c.symbol))
            else {
                tracing::error!(producer = %c.producer, symbol = %c.symbol, "unreadable producer claim in the spool; left out");
                continue;
            };
            for (&row, &seq) in c.rows.iter().zip(&c.seqs) {
                claims.add(&producer, symbol, seq, &nobody, row);
            }
        }
        claims
    }

    /// Renumbers rows after the batch was rebuilt: `new_index[old]` is each kept row's new
    /// index (rows dropped before are no longer claimed, so every claimed row has one).
    pub fn renumber(&mut self, new_index: &[u32]) {
        for p in &mut self.producers {
            for claim in p.by_symbol.values_mut() {
                for r in &mut claim.rows {
                    r.row = new_index[r.row as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    #[test]
    fn a_resend_inside_one_batch_is_left_out() {
        let p = ProducerId::new("p").unwrap();
        let first = Arc::new(PushOutcome::default());
        let resend = Arc::new(PushOutcome::default());
        let mut c = BatchClaims::default();
        assert!(c.is_empty());
        for (row, seq) in [(0, 1), (1, 2), (2, 3)] {
            assert!(c.add(&p, sym("ES"), seq, &first, row));
        }
        assert!(!c.add(&p, sym("ES"), 2, &resend, 3));
        assert!(c.add(&p, sym("NQ"), 2, &resend, 3));
        assert_eq!((first.duplicates(), resend.duplicates()), (0, 1));
        let keys = c.keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].1.as_str(), keys[0].2.first, keys[0].2.last),
            ("ES", 1, 3)
        );
    }

    #[test]
    fn refused_keys_drop_only_what_is_stored() {
        let a = ProducerId::new("a").unwrap();
        let b = ProducerId::new("b").unwrap();
        let push = Arc::new(PushOutcome::default());
        let mut c = BatchClaims::default();
        // b/ES rows 0..4 with seqs 10..14; a/ES row 4 seq 1.
        for i in 0..4 {
            assert!(c.add(&b, sym("ES"), 10 + i, &push, i as u32));
        }
        assert!(c.add(&a, sym("ES"), 1, &push, 4));
        // Sorted: a/ES is 0, b/ES is 1. b has 11 stored.
        let dropped = c.drop_stored(&vec![1], &[11]);
        assert_eq!(dropped, vec![0, 1]);
        assert_eq!(push.duplicates(), 2);
        let keys = c.keys();
        assert_eq!((keys[1].2.first, keys[1].2.last), (12, 13));
        // Rows 2, 3, 4 become 0, 1, 2.
        c.renumber(&[u32::MAX, u32::MAX, 0, 1, 2]);
        let rows: Vec<u32> = c.keys()[1].2.rows.iter().map(|r| r.row).collect();
        assert_eq!(rows, vec![0, 1]);
        // a/ES all stored: the key goes, and with it producer a.
        assert_eq!(c.drop_stored(&vec![0], &[5]), vec![2]);
        assert_eq!(c.keys().len(), 1);
        assert_eq!(c.producers.len(), 1);
    }
}
