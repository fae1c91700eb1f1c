//! PostgreSQL plumbing the engine shares: one connect policy for every connection it
//! opens (writers, maintenance, migrations, readers, the order desk and workers).

mod connect;
pub(crate) mod read;

pub use connect::ConnectPolicy;
pub(crate) use connect::{connect, is_connection_error, parse_url};
