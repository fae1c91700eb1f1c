//! `/metrics` in the Prometheus text format (0.0.4), encoded by `prometheus-client`: the
//! engine's counters and ring gauges per record kind, latency histograms (push → commit,
//! batch commit, each stage, HTTP requests, orders), the fan-out's, the spool's, the order
//! desk's, the SSE feed's.
//!
//! The latencies are histograms with fixed buckets, so the replicas behind a load balancer
//! add up (`sum by (le) (rate(…_bucket[5m]))`) and a window's quantile is a query away; the
//! buckets are read at scrape time from the engine's own HdrHistograms (microseconds, 3
//! significant digits), which keep every sample since start like a Prometheus histogram.

use std::fmt::{self, Write};

use christmas_core::orders::OrderDeskSnapshot;
use christmas_core::MetricsSnapshot;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::{AppState, RequestCount};

/// Upper bounds of the latency buckets, seconds: 100 µs to 10 s, about 2.5× apart, denser
/// where the targets sit (commit and order p99 of 5–50 ms).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Upper bounds of the orders-per-group buckets (groups hold 1 to `orders.max_group`).
const GROUP_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// A series' labels.
type Labels = Vec<(&'static str, String)>;

/// A histogram read from an HdrHistogram: sum, count and per-bucket (not cumulative) counts
/// for `bounds`; `scale` turns the recorded unit into the exported one (µs → s: 1e-6).
fn buckets(h: &Histogram<u64>, scale: f64, bounds: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
    let mut sum = 0.0;
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to()) as f64 * scale;
        let n = v.count_at_value();
        sum += h.median_equivalent(v.value_iterated_to()) as f64 * scale * n as f64;
        // Above the last bound: only in +Inf, which the encoder adds from the count.
        if let Some(slot) = out.iter_mut().find(|(b, _)| value <= *b) {
            slot.1 += n;
        }
    }
    (sum, h.len(), out)
}

/// Writes the families of one page: each helper writes one metric (HELP, TYPE, series).
struct Page<'e, 'a> {
    enc: &'e mut DescriptorEncoder<'a>,
}

impl Page<'_, '_> {
    fn series<V>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: &[(Labels, V)],
        mut put: impl FnMut(&mut prometheus_client::encoding::MetricEncoder<'_>, &V) -> fmt::Result,
    ) -> fmt::Result {
        if series.is_empty() {
            return Ok(());
        }
        let mut m = self.enc.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in series {
            if labels.is_empty() {
                put(&mut m, v)?;
            } else {
                put(&mut m.encode_family(labels)?, v)?;
            }
        }
        Ok(())
    }

    /// A counter; `name` without `_total`, which the encoder adds.
    fn counter(&mut self, name: &str, help: &str, series: &[(Labels, u64)]) -> fmt::Result {
        self.series(name, help, MetricType::Counter, series, |m, v| {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)
        })
    }

    fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels, V)],
    ) -> fmt::Result {
        self.series(name, help, MetricType::Gauge, series, |m, v| {
            m.encode_gauge(v)
        })
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels, &Histogram<u64>)],
        scale: f64,
        bounds: &[f64],
    ) -> fmt::Result {
        self.series(name, help, MetricType::Histogram, series, |m, h| {
            let (sum, count, b) = buckets(h, scale, bounds);
            m.encode_histogram::<NoLabelSet>(sum, count, &b, None)
        })
    }
}

/// Everything one scrape reports, read once.
#[derive(Debug)]
struct Scrape {
    kinds: Vec<(&'static str, MetricsSnapshot)>,
    http_counts: Vec<RequestCount>,
    http_latency_us: Histogram<u64>,
    tcp_ack_us: Histogram<u64>,
    orders: OrderDeskSnapshot,
    /// clients, dropped_slow, messages, delivered.
    stream: Option<[u64; 4]>,
    replica_lag_s: Option<f64>,
    /// Per listener: its name, connections open, connections closed at once for their
    /// address's cap.
    connections: [(&'static str, u64, u64); 3],
    uptime_s: u64,
}

fn kind(k: &str) -> Labels {
    vec![("kind", k.to_string())]
}

/// Name, help, and how to read a counter from a snapshot.
type EngineCounter = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// The engine's counters, one series per record kind.
const ENGINE_COUNTERS: [EngineCounter; 10] = [
    (
        "christmas_accepted",
        "Records accepted into the rings.",
        MetricsSnapshot::accepted,
    ),
    (
        "christmas_rows_committed",
        "Rows committed to PostgreSQL.",
        MetricsSnapshot::rows_committed,
    ),
    (
        "christmas_batches_committed",
        "Batches committed.",
        MetricsSnapshot::batches_committed,
    ),
    (
        "christmas_dropped",
        "Records evicted by drop-oldest backpressure.",
        MetricsSnapshot::dropped,
    ),
    (
        "christmas_rejected_full",
        "Pushes refused because a ring was full.",
        MetricsSnapshot::rejected_full,
    ),
    (
        "christmas_retries",
        "Commit attempts retried.",
        MetricsSnapshot::retries,
    ),
    (
        "christmas_dead_lettered",
        "Rows PostgreSQL rejected.",
        MetricsSnapshot::dead_lettered,
    ),
    (
        "christmas_ledger_hits",
        "Ambiguous failures the ledger resolved as committed.",
        MetricsSnapshot::ledger_hits,
    ),
    (
        "christmas_producer_resends",
        "Producer ticks left out at commit: resends of ticks already stored.",
        MetricsSnapshot::producer_resends,
    ),
    (
        "christmas_grouped_commits",
        "Transactions that committed several queued batches together.",
        MetricsSnapshot::grouped_commits,
    ),
];

/// Name (a counter's without `_total`), help, and whether it is a counter (else a gauge).
type Named = (&'static str, &'static str, bool);

/// The fan-out's figures, in the order [`Scrape::fanout_and_spool`] reads them.
const FANOUT: [Named; 7] = [
    (
        "christmas_fanout_published",
        "Ticks published to Redis.",
        true,
    ),
    (
        "christmas_fanout_dropped",
        "Ticks dropped because Redis was slow or down.",
        true,
    ),
    (
        "christmas_fanout_spilled",
        "Ticks not published because the spool spilled their batch to disk.",
        true,
    ),
    (
        "christmas_fanout_messages",
        "Messages published (one per symbol per batch).",
        true,
    ),
    (
        "christmas_fanout_errors",
        "Failed publish or connect attempts.",
        true,
    ),
    (
        "christmas_fanout_queue_depth",
        "Batches waiting in the fan-out queue.",
        false,
    ),
    (
        "christmas_fanout_connected",
        "Whether the fan-out is connected to Redis (1) or not (0).",
        false,
    ),
];

/// The spool's figures, in the order [`Scrape::fanout_and_spool`] reads them.
const SPOOL: [Named; 9] = [
    (
        "christmas_spool_disk_bytes",
        "Bytes of spool segments on disk.",
        false,
    ),
    (
        "christmas_spool_max_bytes",
        "The spool's disk budget.",
        false,
    ),
    ("christmas_spool_segments", "Spool segments on disk.", false),
    (
        "christmas_spool_appended",
        "Batches appended to the spool.",
        true,
    ),
    ("christmas_spool_fsyncs", "fsyncs of spool segments.", true),
    (
        "christmas_spool_read_back",
        "Batches read back from disk.",
        true,
    ),
    (
        "christmas_spool_recovered_batches",
        "Batches recovered from disk at start.",
        false,
    ),
    (
        "christmas_spool_truncated_bytes",
        "Bytes of a torn segment tail cut at start.",
        false,
    ),
    (
        "christmas_spool_full_waits",
        "Pushes that waited for a full spool.",
        true,
    ),
];

impl Scrape {
    fn engine(&self, p: &mut Page<'_, '_>) -> fmt::Result {
        for (name, help, get) in ENGINE_COUNTERS {
            let s: Vec<_> = self.kinds.iter().map(|(k, m)| (kind(k), get(m))).collect();
            p.counter(name, help, &s)?;
        }
        let shards = |get: fn(&christmas_core::ShardSnapshot) -> u64| -> Vec<(Labels, u64)> {
            self.kinds
                .iter()
                .flat_map(|(k, m)| {
                    m.shards.iter().enumerate().map(move |(i, sh)| {
                        (
                            vec![("kind", k.to_string()), ("shard", i.to_string())],
                            get(sh),
                        )
                    })
                })
                .collect()
        };
        p.gauge(
            "christmas_ring_depth",
            "Records waiting in a shard's ring.",
            &shards(|sh| sh.ring_depth),
        )?;
        p.gauge(
            "christmas_ring_capacity",
            "Records a shard's ring holds.",
            &shards(|sh| sh.ring_capacity),
        )?;
        let per_kind =
            |get: fn(&MetricsSnapshot) -> &Histogram<u64>| -> Vec<(Labels, &Histogram<u64>)> {
                self.kinds.iter().map(|(k, m)| (kind(k), get(m))).collect()
            };
        p.histogram(
            "christmas_push_to_commit_seconds",
            "Push to commit latency.",
            &per_kind(|m| &m.push_to_commit_us),
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        p.histogram(
            "christmas_batch_commit_seconds",
            "Time to commit one batch.",
            &per_kind(|m| &m.batch_commit_us),
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        let stages: Vec<(Labels, &Histogram<u64>)> = self
            .kinds
            .iter()
            .flat_map(|(k, m)| {
                m.stages.named().into_iter().map(move |(stage, h)| {
                    (
                        vec![("kind", k.to_string()), ("stage", stage.to_string())],
                        h,
                    )
                })
            })
            .collect();
        p.histogram(
            "christmas_stage_seconds",
            "Push to commit, by stage. Per tick: ring (push to drained by the batcher), linger (drained to sealed), batching (ring and linger). Per batch: spool (sealed to handed on by the spool stage: its wait and append), queue (to taken by the writer), copy (BEGIN to end of COPY), commit (COMMIT). Per fsync: fsync (the spool's).",
            &stages,
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        let defaults: Vec<_> = self
            .kinds
            .iter()
            .filter_map(|(k, m)| Some((kind(k), m.maintenance.as_ref()?.rows_in_default)))
            .collect();
        p.gauge(
            "christmas_rows_in_default_partition",
            "Rows in the default partition: no time partition covers them.",
            &defaults,
        )?;
        let prepared: Vec<_> = self
            .kinds
            .iter()
            .filter_map(|(k, m)| Some((kind(k), m.maintenance.as_ref()?.prepared_stale)))
            .collect();
        p.gauge(
            "christmas_pg_prepared_stale",
            "Prepared transactions of the database older than a minute, on any node (Citus: commits whose rows on a worker stay invisible until Citus recovers them).",
            &prepared,
        )
    }

    /// The fan-out's and the spool's figures, per record kind where they run.
    fn fanout_and_spool(&self, p: &mut Page<'_, '_>) -> fmt::Result {
        let fanout: Vec<(&str, [u64; 7])> = self
            .kinds
            .iter()
            .filter_map(|(k, m)| {
                let f = m.fanout.as_ref()?;
                let v = [f.published, f.dropped, f.spilled, f.messages, f.errors];
                Some((
                    *k,
                    [
                        v[0],
                        v[1],
                        v[2],
                        v[3],
                        v[4],
                        f.queue_depth,
                        u64::from(f.connected),
                    ],
                ))
            })
            .collect();
        self.per_kind(p, &FANOUT, &fanout)?;
        let spool: Vec<(&str, [u64; 9])> = self
            .kinds
            .iter()
            .filter_map(|(k, m)| {
                let s = m.spool.as_ref()?;
                Some((
                    *k,
                    [
                        s.disk_bytes,
                        s.max_bytes,
                        s.segments,
                        s.appended,
                        s.fsyncs,
                        s.read_back,
                        s.recovered,
                        s.truncated_bytes,
                        s.full_waits,
                    ],
                ))
            })
            .collect();
        self.per_kind(p, &SPOOL, &spool)
    }

    /// One metric per entry of `names`, its series the kinds' values at the same index.
    fn per_kind<const N: usize>(
        &self,
        p: &mut Page<'_, '_>,
        names: &[Named; N],
        values: &[(&str, [u64; N])],
    ) -> fmt::Result {
        for (i, (name, help, is_counter)) in names.iter().enumerate() {
            let s: Vec<_> = values.iter().map(|(k, v)| (kind(k), v[i])).collect();
            if *is_counter {
                p.counter(name, help, &s)?;
            } else {
                p.gauge(name, help, &s)?;
            }
        }
        Ok(())
    }

    /// The order desk's counters, gauges and histograms.
    fn orders(&self, p: &mut Page<'_, '_>) -> fmt::Result {
        let o = &self.orders;
        let outcomes: Vec<_> = [
            ("created", o.created),
            ("existing", o.existing),
            ("conflict", o.conflicts),
            ("failed", o.failed),
        ]
        .into_iter()
        .map(|(k, v)| (vec![("outcome", k.to_string())], v))
        .collect();
        p.counter(
            "christmas_orders",
            "Order submissions by outcome.",
            &outcomes,
        )?;
        let one = |v: u64| [(Labels::new(), v)];
        for (name, help, v) in [
            ("christmas_order_groups", "Order groups committed.", o.groups),
            ("christmas_order_retries", "Order group writes retried after a lost connection.", o.retries),
            ("christmas_order_groups_rewritten", "Order groups written again with ON CONFLICT: their plain INSERT met a stored key.", o.rewritten),
            ("christmas_order_events_published", "order.accepted events the broker took (added to the Redis stream, or confirmed by RabbitMQ).", o.events_published),
            ("christmas_order_event_failures", "Event rounds that failed (the outbox keeps their events).", o.event_failures),
            ("christmas_order_events_trimmed", "order.accepted events trimmed from the stream after every consumer group acknowledged them.", o.events_trimmed),
            ("christmas_order_events_reannounced", "order.accepted events announced again: the order was still accepted long after Redis took its event.", o.events_reannounced),
        ] {
            p.counter(name, help, &one(v))?;
        }
        p.gauge(
            "christmas_order_queue_depth",
            "Submissions waiting for an order writer.",
            &one(o.queued),
        )?;
        if let Some(backend) = o.events_backend {
            p.gauge(
                "christmas_order_events_broker_up",
                "Whether the order events publisher is connected to its broker (1) or not (0; events wait in the outbox).",
                &[(vec![("backend", backend.to_string())], u64::from(o.events_broker_up))],
            )?;
        }
        let alone = |h| [(Labels::new(), h)];
        p.histogram(
            "christmas_order_group_commit_seconds",
            "Time to write and commit one order group.",
            &alone(&o.group_commit_us),
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        p.histogram(
            "christmas_order_group_orders",
            "Orders per committed group.",
            &alone(&o.group_orders),
            1.0,
            &GROUP_BUCKETS,
        )?;
        p.histogram(
            "christmas_order_submit_seconds",
            "Submission to answer: the wait for a writer plus the group's commit.",
            &alone(&o.submit_us),
            1e-6,
            &LATENCY_BUCKETS,
        )
    }

    /// HTTP, the SSE feed, the replica, uptime.
    fn server(&self, p: &mut Page<'_, '_>) -> fmt::Result {
        let counts: Vec<_> = self
            .http_counts
            .iter()
            .map(|((method, route, status), n)| {
                let labels = vec![
                    ("method", method.clone()),
                    ("route", route.clone()),
                    ("status", status.to_string()),
                ];
                (labels, *n)
            })
            .collect();
        p.counter(
            "christmas_http_requests",
            "HTTP requests by route and status.",
            &counts,
        )?;
        p.histogram(
            "christmas_http_request_duration_seconds",
            "HTTP request latency.",
            &[(Labels::new(), &self.http_latency_us)],
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        p.histogram(
            "christmas_ack_delivery_seconds",
            "Ack delivery: the last of a frame's batches committed (or fsynced) to its ack written, behind earlier frames' acks.",
            &[(vec![("transport", "tcp".to_string())], &self.tcp_ack_us)],
            1e-6,
            &LATENCY_BUCKETS,
        )?;
        if let Some([clients, dropped_slow, messages, delivered]) = self.stream {
            let one = |v: u64| [(Labels::new(), v)];
            p.gauge(
                "christmas_stream_clients",
                "SSE clients connected.",
                &one(clients),
            )?;
            p.counter(
                "christmas_stream_dropped_slow",
                "SSE clients dropped for reading too slowly.",
                &one(dropped_slow),
            )?;
            p.counter(
                "christmas_stream_messages",
                "Messages the SSE feed received from Redis.",
                &one(messages),
            )?;
            p.counter(
                "christmas_stream_delivered",
                "Frames handed to SSE client buffers.",
                &one(delivered),
            )?;
        }
        // Only with a replica whose lag could be measured: an absent series, not a made-up 0.
        if let Some(lag) = self.replica_lag_s {
            p.gauge(
                "christmas_replica_lag_seconds",
                "How far the read replica's replay is behind (0: replayed all it received).",
                &[(Labels::new(), lag)],
            )?;
        }
        let listener = |name: &str| vec![("listener", name.to_string())];
        let (open, refused): (Vec<_>, Vec<_>) = self
            .connections
            .iter()
            .map(|&(name, open, refused)| ((listener(name), open), (listener(name), refused)))
            .unzip();
        p.gauge(
            "christmas_connections_open",
            "Connections open, by listener.",
            &open,
        )?;
        p.counter(
            "christmas_connections_refused",
            "Connections closed at once: their client address held its cap.",
            &refused,
        )?;
        p.gauge(
            "christmas_uptime_seconds",
            "Seconds since start.",
            &[(Labels::new(), self.uptime_s)],
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let mut p = Page { enc: &mut enc };
        self.engine(&mut p)?;
        self.fanout_and_spool(&mut p)?;
        self.server(&mut p)?;
        self.orders(&mut p)
    }
}

/// Reads everything a page reports from the daemon's state.
fn scrape(s: &AppState) -> Scrape {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = s.ingress.metrics();
    Scrape {
        kinds: vec![("trade", metrics.trades), ("quote", metrics.quotes)],
        http_counts: s
            .http
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        http_latency_us: s
            .http
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        tcp_ack_us: s
            .tcp_ack_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        orders: s.orders.metrics(),
        stream: s.stream.as_ref().map(|feed| {
            let c = &feed.counters;
            [
                c.clients.load(Relaxed),
                c.dropped_slow.load(Relaxed),
                c.messages.load(Relaxed),
                c.delivered.load(Relaxed),
            ]
        }),
        replica_lag_s: s.reader.replica_lag().map(|lag| lag.as_secs_f64()),
        connections: [
            ("http", &s.http_connections),
            ("tcp", &s.tcp_connections),
            ("ops", &s.ops_connections),
        ]
        .map(|(name, b)| (name, b.open() as u64, b.refused())),
        uptime_s: s.started.elapsed().as_secs(),
    }
}

/// The whole `/metrics` page.
pub fn render(s: &AppState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape(s)));
    let mut out = String::with_capacity(16 << 10);
    // Writing to a String cannot fail; an encoder error would be a bug in a metric's name.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

/// The `Content-Type` of [`render`]'s page.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_samples_land_in_their_buckets() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        // 0.3 ms, 4 ms (×2), 30 s: buckets ≤ 0.5 ms, ≤ 5 ms, and only +Inf.
        for us in [300, 4_000, 4_000, 30_000_000] {
            h.record(us).unwrap();
        }
        let (sum, count, b) = buckets(&h, 1e-6, &LATENCY_BUCKETS);
        assert_eq!(count, 4);
        let at = |bound: f64| b.iter().find(|(x, _)| *x == bound).unwrap().1;
        assert_eq!((at(0.0005), at(0.005)), (1, 2));
        assert_eq!(
            b.iter().map(|(_, n)| n).sum::<u64>(),
            3,
            "30 s only in +Inf"
        );
        assert!((sum - 30.0083).abs() < 0.05, "sum {sum}");
    }
}
