//! PostgreSQL plumbing the engine shares: one connect policy for every connection it
//! opens (writers, maintenance, migrations, readers, the order desk and workers), the batch
//! ledger (`ledger.rs`) and the writers' COPY sink (`copy_sink.rs`).

mod connect;
pub(crate) mod read;
mod url;

pub(crate) use connect::{connect, is_connection_error, parse_url};
pub use connect::{connect_url, ConnectPolicy, PgUrl};
pub(crate) mod copy_sink;
pub(crate) mod ledger;
pub(crate) mod placement;
