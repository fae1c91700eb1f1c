//! The integration tests: one binary, one module per area, real servers only.

mod browser;
mod core_faults;
mod core_ingest;
mod daemon;
mod edges;
mod fanout;
mod faults;
mod harness;
mod hostile;
mod metrics;
mod openapi;
mod orders;
mod producers;
mod producers_daemon;
mod replay;
mod replay_once;
mod replay_tz;
mod scale;
mod schema;
mod spool;
mod stream;
mod strict;
mod support;
mod tls;
mod web;
