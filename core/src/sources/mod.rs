//! File readers for replay: each turns a file format into [`Trade`](crate::Trade)s and
//! [`Quote`](crate::Quote)s, checked by their kind's `validate` on the way in.
//!
//! | module | format | feature |
//! |---|---|---|
//! | [`dbn`] | Databento DBN, MBP-1 schema (`.dbn`, `.dbn.zst`) | `dbn` |

#[cfg(feature = "dbn")]
pub mod dbn;
