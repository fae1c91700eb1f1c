//! # christmas-ingest
//!
//! The daemon around `christmas-core`: HTTP and TCP ingest, market-data reads, health,
//! readiness and Prometheus metrics, file replay, migrations and a demo market. The binary
//! only parses flags and config, binds, and calls [`server::run`]; everything here is also
//! usable (and tested) as a library.
//!
//! ## Layout
//!
//! | module | what it is |
//! |---|---|
//! | [`config`] | [`DaemonConfig`](config::DaemonConfig): TOML file + environment, validated |
//! | [`server`] | [`AppState`](server::AppState) (the engine behind the daemon) and [`run`](server::run) |
//! | [`http`] | the HTTP routes ([`router`](http::router)) and their JSON errors |
//! | [`ticks`] | the JSON / NDJSON tick format of `POST /api/ticks` |
//! | [`tcp`] | the TCP ingest listener (rkyv frames, acks) |
//! | [`auth`] | API keys: hashed, scoped |
//! | [`orders`] | the order endpoints (over `christmas_core::orders::OrderDesk`) |
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

pub mod auth;
pub mod config;
pub mod demo;
pub mod feed;
pub mod http;
pub mod metrics_text;
pub mod migrate;
pub mod orders;
pub mod pipelines;
pub mod ratelimit;
pub mod replay;
pub mod server;
pub mod tcp;
pub mod ticks;
pub mod timefmt;
