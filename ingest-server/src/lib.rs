//! # christmas-ingest
//!
//! The daemon around `christmas-core`: HTTP and TCP ingest, market-data reads, health,
//! readiness and Prometheus metrics, file replay, migrations and a demo market. The binary
//! only parses flags and config, binds, and calls [`server::run`]; everything here is also
//! usable (and tested) as a library.
//!
//! ## Layout
//!
//! The modules import downward only: `server` → `http`, `tcp` → `state` → `config`; nothing
//! imports `server` (`cargo run -p christmas-tests --bin layout-check`
//! checks there is no circle).
//!
//! | module | what it is |
//! |---|---|
//! | [`config`] | [`DaemonConfig`](config::DaemonConfig): TOML file + environment, validated |
//! | [`state`] | [`AppState`](state::AppState): the engine behind the daemon, started from the config; its [`Ingress`](christmas_core::Ingress) is the one way HTTP and TCP ticks go in |
//! | [`server`] | bind ([`listen`](server::listen)) and [`run`](server::run): HTTP and TCP until shutdown, then drain |
//! | [`http`] | [`router`](http::router) and the request middleware; handlers by area: [`ticks`](http::ticks), [`market_data`](http::market_data), [`orders`], [`ops`](http::ops) (health, ready, metrics, OpenAPI); the [`Authorized`](http::auth::Authorized) extractor and the JSON [`reply`](http::reply) helpers |
//! | [`live_feed`] | [`LiveFeed`](live_feed::LiveFeed): one Redis subscription per daemon relayed to every `GET /api/stream` client, each through a bounded buffer |
//! | [`web`] | the page at `/`: built files served from `web.dir`, hashed assets cached for a year |
//! | [`stall`] | [`WriteDeadline`](stall::WriteDeadline): HTTP writes fail once the peer has read nothing for `http.write_timeout_ms` |
//! | [`tcp`] | the TCP ingest listener (rkyv frames, acks) |
//! | [`ticks`] | the JSON / NDJSON tick format of `POST /api/ticks` |
//! | [`json_fields`] | strict field-by-field reading of a flat JSON object (unknown and repeated keys refused), for ticks and orders |
//! | [`auth`] | API keys: hashed, scoped |
//! | [`budget`] | each listener's connection budget, in all and per client address |
//! | [`ratelimit`] | per-account token buckets (429) |
//! | [`metrics`] | `/metrics` in the Prometheus text format (prometheus-client) |
//! | [`commands`] | the other commands: [`replay`] (DBN or CSV into the engine), [`feed`] (a synthetic market sent to a daemon over TCP, like a feed handler), [`migrate`](commands::migrate), [`demo`](commands::demo) (engine in-process) |
//! | [`timefmt`] | RFC 3339 / nanosecond timestamps (core's `sources::timefmt`, re-exported) |

// Request helpers return the error response itself; boxing it to shrink the `Err` arm buys
// nothing on a path that builds one response per request.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

pub mod auth;
pub mod budget;
pub mod commands;
pub mod config;
pub mod http;
pub mod json_fields;
pub mod live_feed;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod stall;
pub mod state;
pub mod tcp;
pub mod ticks;
pub mod timefmt;
pub mod web;

// Paths other crates use, kept where they were before the modules moved: the order body
// parser (fuzz), replay and feed (tests, bench).
pub use commands::{feed, replay};
pub use http::orders;
