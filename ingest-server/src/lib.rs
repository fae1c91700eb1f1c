//! # christmas-ingest
//!
//! The daemon around `christmas-core`: HTTP and TCP ingest, market-data reads, health,
//! readiness and Prometheus metrics, file replay, migrations and a demo market. The binary
//! only parses flags and config, binds, and calls [`server::run`]; everything here is also
//! usable (and tested) as a library.
//!
//! ## Layout
//!
//! The modules import downward only: `server` → `http`, `tcp` → `state` → `config`,
//! `pipelines`; nothing imports `server`.
//!
//! | module | what it is |
//! |---|---|
//! | [`config`] | [`DaemonConfig`](config::DaemonConfig): TOML file + environment, validated |
//! | [`state`] | [`AppState`](state::AppState): the engine behind the daemon, started from the config |
//! | [`server`] | bind ([`listen`](server::listen)) and [`run`](server::run): HTTP and TCP until shutdown, then drain |
//! | [`http`] | [`router`](http::router) and the request middleware; handlers by area: [`ticks`](http::ticks), [`market_data`](http::market_data), [`orders`](http::orders), [`ops`](http::ops) (health, ready, metrics, OpenAPI); the [`Authorized`](http::auth::Authorized) extractor and the JSON [`reply`](http::reply) helpers |
//! | [`tcp`] | the TCP ingest listener (rkyv frames, acks) |
//! | [`ticks`] | the JSON / NDJSON tick format of `POST /api/ticks` |
//! | [`auth`] | API keys: hashed, scoped |
//! | [`ratelimit`] | per-account token buckets (429) |
//! | [`metrics_text`] | `/metrics` in the Prometheus text format |
//! | [`pipelines`] | the trade and quote pipelines every command starts |
//! | [`replay`] | `replay FILE`: DBN or CSV into the engine |
//! | [`feed`] | `feed`: a synthetic market sent to a daemon over TCP, like a feed handler |
//! | [`migrate`], [`demo`] | the `migrate` and `demo` (engine in-process) commands |
//! | [`timefmt`] | RFC 3339 / nanosecond timestamps |

// Request helpers return the error response itself; boxing it to shrink the `Err` arm buys
// nothing on a path that builds one response per request.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod demo;
pub mod feed;
pub mod http;
pub mod metrics_text;
pub mod migrate;
pub mod pipelines;
pub mod ratelimit;
pub mod replay;
pub mod server;
pub mod state;
pub mod tcp;
pub mod ticks;
pub mod timefmt;

// The order endpoints moved under `http`; `christmas_ingest::orders::parse_order` (the fuzz
// target's path) stays.
pub use http::orders;
