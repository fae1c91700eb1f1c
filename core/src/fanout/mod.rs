//! Redis fan-out: live ticks to subscribers, capped per-symbol streams and a latest
//! trade/quote hash, without ever slowing the PostgreSQL path.
//!
//! Enable it with [`IngestorBuilder::fanout`](crate::IngestorBuilder::fanout). Every batch,
//! grouped by symbol, becomes one [`TickMessage`] per symbol, sent pipelined:
//!
//! - `PUBLISH md:{SYMBOL}` (`SPUBLISH` on a cluster: sharded pub/sub);
//! - `XADD md:{SYMBOL}:ticks MAXLEN ~ N` for replay (once a second `MINID` now − age
//!   instead, so the stream's reach is bounded in time too);
//! - `HSET md:{SYMBOL}:latest` with the latest trade or quote;
//! - `PEXPIRE` on both keys, at most every quarter of [`FanoutConfig::key_ttl`], so an idle
//!   symbol's keys leave Redis and its memory is bounded by the symbols active lately.
//!
//! Messages carry per-symbol sequences so consumers detect gaps. The fan-out queue is
//! bounded, in batches and in ticks, and drops its oldest batches (counted in [`FanoutSnapshot`]) when Redis is slow or
//! down; the publisher reconnects with backoff and resumes by itself.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`FanoutConfig`]; its URL picks a [`RedisTarget`] (single node / Sentinel / Cluster, in [`redis`](crate::redis)) |
//! | [`wire`] | message format (JSON or rkyv) and key names |
//! | `publisher` | the bounded queue and the publishing task |
//! | [`subscriber`] | [`TickSubscription`]: live pub/sub, or stream replay with resume |
//! | [`live_set`] | [`LiveSet`]: one subscription, symbols added and removed while it runs; retained messages read back |
//! | [`latest`] | [`LatestCache`]: the latest trade / quote hashes, read back |

pub mod config;
pub mod latest;
pub mod live_set;
pub(crate) mod publisher;
pub(crate) mod snapshot;
pub mod subscriber;
pub mod wire;

pub use crate::redis::target::RedisTarget;
pub use config::{FanoutConfig, PublishPoint};
pub use latest::{LatestCache, LatestTicks};
pub use live_set::LiveSet;
pub use snapshot::FanoutSnapshot;
pub use subscriber::{Delivery, TickSubscription};
pub use wire::{access_rkyv, ArchivedTickMessage, PayloadFormat, TickKind, TickMessage};
