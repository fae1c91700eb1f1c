//! Idempotent producers: a producer names itself with a [`ProducerId`] and numbers its ticks,
//! so a resend after a timeout, a reconnect, a crash or a retry to another daemon is dropped
//! instead of stored twice.
//!
//! How (see also `sql/0007_producers.sql`):
//!
//! 1. [`Ingress::push_from`](crate::ingress::Ingress::push_from) numbers a push's ticks
//!    `first_seq, first_seq + 1, …` (its trades in order, then its quotes) and enqueues them
//!    per shard as one chunk, under the producer's lock, so one producer's ticks reach each
//!    shard in sequence order.
//! 2. The batcher keeps a chunk's rows together and records, per (producer, kind, symbol),
//!    the range of sequences the batch writes ([`BatchClaims`]); a row whose sequence is not
//!    above what the batch already holds for its key is a resend and is not encoded.
//! 3. The writer runs `christmas_claim_producers(…)` in the batch's transaction, before the
//!    `COPY`: one upsert per key, which succeeds only when what is stored for the key is below
//!    the batch's first sequence. A key that fails was committed by an earlier batch (or by
//!    another daemon, whose transaction the row lock made this one wait for): its rows up to
//!    the stored sequence are dropped and the batch is sent again without them.
//!
//! The cost is one statement per batch that carries producer ticks, with one row per key,
//! and nothing per row. Ticks pushed without a producer take none of this path.
//!
//! A producer must send in order: one push at a time (or pipelined on one TCP connection),
//! each starting above the last. A push whose sequences are not above what was stored for a
//! symbol is taken as a resend and its ticks are reported as duplicates.

pub(crate) mod claim;
mod push;

pub(crate) use claim::BatchClaims;
pub use push::ProducerId;
pub(crate) use push::{ProducerLocks, PushOutcome, Seqs};
