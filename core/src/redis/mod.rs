//! Redis plumbing that the fan-out and the orders stand on.
//!
//! | module | what |
//! |---|---|
//! | [`target`] | [`RedisTarget`]: one URL selects a single node, a master found through Sentinel, or a cluster |
//! | `tls` | `rediss://` URLs: `sslmode` and `sslrootcert` applied to the driver's clients |
//! | `connection` | one connection to a target (timeouts, the master's role checked after Sentinel) |
//! | `error` | the driver's errors as [`Error::Redis`](crate::Error::Redis) with a [`RedisErrorKind`], read once from the error's code |

pub(crate) mod connection;
pub(crate) mod error;
pub mod target;
pub(crate) mod tls;

pub use crate::error::RedisErrorKind;
pub use target::RedisTarget;
