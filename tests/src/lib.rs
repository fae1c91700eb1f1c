//! The test and bench harness: real PostgreSQL, Redis, nginx and daemons on loopback, and a
//! real HTTP client to talk to them.
//!
//! ## Layout
//!
//! | module | what it is |
//! |---|---|
//! | [`pg`] | [`PgServer`] (private, may crash and restart; TLS-only with [`PgServer::start_tls`]), [`shared_pg_url`], [`fresh_database`], [`connect`] |
//! | [`redis`] | [`RedisServer`] (plain or TLS-only), [`RedisCluster`], [`shared_redis_url`] |
//! | [`tls`] | a private CA and server certificate for the TLS tests ([`tls::make_certs`]) |
//! | [`amqp`] | [`RabbitNode`] (private, may stop and start), [`shared_amqp_url`] |
//! | [`citus`] | a database on every node of a Citus cluster ([`citus::create_database`]) |
//! | [`nginx`], [`pgbouncer`], [`netns`] | what stands between a client and the daemons in a deployment |
//! | [`net`] | [`free_addr`] / [`free_port`], [`wait_listening`] |
//! | [`http`] | [`HttpClient`]: hyper's client with the few calls the tests make |
//! | [`ticks`] | [`TickLoad`] (clients posting ticks until a daemon stops) and [`stored_ticks`] (did every acknowledged tick land) |
//! | [`daemon`] | [`InProcessDaemon`] (`christmas_ingest` in this process) and [`DaemonProcess`] (the binary: spawn, ready, SIGTERM) |
//! | `host` (private) | commands run as the service user, temporary directories, waiting |
//!
//! - A private server the test owns may be stopped, killed and restarted: data in a fresh
//!   temporary directory, a free port, removed on drop.
//! - [`shared_pg_url`] / [`shared_redis_url`] / [`shared_amqp_url`]: one server for the
//!   whole test process (the scripts' instances when `CHRISTMAS_TEST_DATABASE_URL` /
//!   `CHRISTMAS_TEST_REDIS_URL` / `CHRISTMAS_TEST_AMQP_URL` are set, as `scripts/test.sh`
//!   does).
//! - [`fresh_database`] / [`unique_name`]: how each test isolates itself.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! unprivileged system user `christmas` (created if missing) through `runuser`.

#![warn(missing_docs)]

pub mod amqp;
pub mod citus;
pub mod daemon;
mod host;
pub mod http;
pub mod net;
pub mod netns;
pub mod nginx;
pub mod pg;
pub mod pgbouncer;
pub mod redis;
pub mod ticks;
pub mod tls;

pub use amqp::{shared_amqp_url, shared_amqps, RabbitNode};
pub use daemon::{DaemonProcess, InProcessDaemon};
pub use host::unique_name;
pub use http::{HttpClient, HttpResponse};
pub use net::{free_addr, free_port, wait_listening};
pub use netns::NetNs;
pub use nginx::Nginx;
pub use pg::{connect, fresh_database, shared_pg_url, PgServer};
pub use pgbouncer::PgBouncer;
pub use redis::{shared_redis_url, RedisCluster, RedisServer};
pub use ticks::{stored_ticks, StoredTicks, TickLoad};
