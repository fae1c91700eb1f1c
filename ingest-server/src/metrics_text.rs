//! `/metrics` in the Prometheus text format: the engine's counters, gauges and latency
//! summaries per record kind, the fan-out's, and HTTP request counts and latency.

use std::fmt::Write;

use christmas_core::{MetricsSnapshot, ShardSnapshot, Summary};
use hdrhistogram::Histogram;

use crate::state::AppState;

fn summary(out: &mut String, name: &str, help: &str, labels: &str, h: &Histogram<u64>, scale: f64) {
    let s = Summary::of(h);
    // One HELP and TYPE per metric, before its first series: Prometheus refuses a second.
    if !out.contains(&format!("# TYPE {name} summary\n")) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    }
    for (q, v) in [
        ("0.5", s.p50),
        ("0.9", s.p90),
        ("0.99", s.p99),
        ("0.999", s.p999),
    ] {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            out,
            "{name}{{{labels}{sep}quantile=\"{q}\"}} {}",
            v as f64 * scale
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_sum{braces} {}",
        s.mean * s.count as f64 * scale
    );
    let _ = writeln!(out, "{name}_count{braces} {}", s.count);
}

/// Name, help, and how to read a counter from a snapshot.
type Counter = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// The engine's counters, one series per record kind.
const ENGINE_COUNTERS: [Counter; 9] = [
    (
        "christmas_accepted_total",
        "Records accepted into the rings.",
        MetricsSnapshot::accepted,
    ),
    (
        "christmas_rows_committed_total",
        "Rows committed to PostgreSQL.",
        MetricsSnapshot::rows_committed,
    ),
    (
        "christmas_batches_committed_total",
        "Batches committed.",
        MetricsSnapshot::batches_committed,
    ),
    (
        "christmas_dropped_total",
        "Records evicted by drop-oldest backpressure.",
        MetricsSnapshot::dropped,
    ),
    (
        "christmas_rejected_full_total",
        "Pushes refused because a ring was full.",
        MetricsSnapshot::rejected_full,
    ),
    (
        "christmas_retries_total",
        "Commit attempts retried.",
        MetricsSnapshot::retries,
    ),
    (
        "christmas_dead_lettered_total",
        "Rows PostgreSQL rejected.",
        MetricsSnapshot::dead_lettered,
    ),
    (
        "christmas_ledger_hits_total",
        "Ambiguous failures the ledger resolved as committed.",
        MetricsSnapshot::ledger_hits,
    ),
    (
        "christmas_producer_resends_total",
        "Producer ticks left out at commit: resends of ticks already stored.",
        MetricsSnapshot::producer_resends,
    ),
];

/// Name, help, and how to read a gauge from one shard's snapshot.
type ShardGauge = (&'static str, &'static str, fn(&ShardSnapshot) -> u64);

/// The rings' gauges, one series per record kind and shard.
const SHARD_GAUGES: [ShardGauge; 2] = [
    (
        "christmas_ring_depth",
        "Records waiting in a shard's ring.",
        |sh| sh.ring_depth,
    ),
    (
        "christmas_ring_capacity",
        "Records a shard's ring holds.",
        |sh| sh.ring_capacity,
    ),
];

/// The engine's counters, ring gauges, latency summaries, fan-out and spool figures.
fn engine(out: &mut String, kinds: &[(&str, MetricsSnapshot)]) {
    for (name, help, get) in ENGINE_COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (kind, m) in kinds {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", get(m));
        }
    }
    for (name, help, get) in SHARD_GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (kind, m) in kinds {
            for (i, sh) in m.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{kind=\"{kind}\",shard=\"{i}\"}} {}", get(sh));
            }
        }
    }
    for (kind, m) in kinds {
        let labels = format!("kind=\"{kind}\"");
        summary(
            out,
            "christmas_push_to_commit_seconds",
            "Push to commit latency.",
            &labels,
            &m.push_to_commit_us,
            1e-6,
        );
        summary(
            out,
            "christmas_batch_commit_seconds",
            "Time to commit one batch.",
            &labels,
            &m.batch_commit_us,
            1e-6,
        );
        for (stage, h) in m.stages.named() {
            summary(
                out,
                "christmas_stage_seconds",
                "Push to commit, by stage: batching (ring and linger, per tick), queue (spool and writer queue), copy (BEGIN to end of COPY), commit (COMMIT).",
                &format!("{labels},stage=\"{stage}\""),
                h,
                1e-6,
            );
        }
        if let Some(r) = &m.maintenance {
            let _ = writeln!(
                out,
                "christmas_rows_in_default_partition{{{labels}}} {}",
                r.rows_in_default
            );
        }
        if let Some(f) = &m.fanout {
            for (name, v) in [
                ("christmas_fanout_published_total", f.published),
                ("christmas_fanout_dropped_total", f.dropped),
                ("christmas_fanout_spilled_total", f.spilled),
                ("christmas_fanout_messages_total", f.messages),
                ("christmas_fanout_errors_total", f.errors),
                ("christmas_fanout_queue_depth", f.queue_depth),
                ("christmas_fanout_connected", u64::from(f.connected)),
            ] {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        if let Some(sp) = &m.spool {
            for (name, v) in [
                ("christmas_spool_disk_bytes", sp.disk_bytes),
                ("christmas_spool_max_bytes", sp.max_bytes),
                ("christmas_spool_segments", sp.segments),
                ("christmas_spool_appended_total", sp.appended),
                ("christmas_spool_fsyncs_total", sp.fsyncs),
                ("christmas_spool_read_back_total", sp.read_back),
                ("christmas_spool_recovered_batches", sp.recovered),
                ("christmas_spool_truncated_bytes", sp.truncated_bytes),
                ("christmas_spool_full_waits_total", sp.full_waits),
            ] {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
}

/// The order desk's counters and latency.
fn orders(out: &mut String, o: &christmas_core::orders::OrderDeskSnapshot) {
    let _ = writeln!(
        out,
        "# HELP christmas_orders_total Order submissions by outcome.\n# TYPE christmas_orders_total counter"
    );
    for (outcome, n) in [
        ("created", o.created),
        ("existing", o.existing),
        ("conflict", o.conflicts),
        ("failed", o.failed),
    ] {
        let _ = writeln!(out, "christmas_orders_total{{outcome=\"{outcome}\"}} {n}");
    }
    for (name, kind, help, v) in [
        (
            "christmas_order_groups_total",
            "counter",
            "Order groups committed.",
            o.groups,
        ),
        (
            "christmas_order_retries_total",
            "counter",
            "Order group writes retried after a lost connection.",
            o.retries,
        ),
        (
            "christmas_order_groups_rewritten_total",
            "counter",
            "Order groups written again with ON CONFLICT: their plain INSERT met a stored key.",
            o.rewritten,
        ),
        (
            "christmas_order_queue_depth",
            "gauge",
            "Submissions waiting for an order writer.",
            o.queued,
        ),
        (
            "christmas_order_events_published_total",
            "counter",
            "order.accepted events the broker took (added to the Redis stream, or confirmed by RabbitMQ).",
            o.events_published,
        ),
        (
            "christmas_order_event_failures_total",
            "counter",
            "Event rounds that failed (the outbox keeps their events).",
            o.event_failures,
        ),
        (
            "christmas_order_events_trimmed_total",
            "counter",
            "order.accepted events trimmed from the stream after every consumer group acknowledged them.",
            o.events_trimmed,
        ),
        (
            "christmas_order_events_reannounced_total",
            "counter",
            "order.accepted events announced again: the order was still accepted long after Redis took its event.",
            o.events_reannounced,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    if let Some(backend) = o.events_backend {
        let _ = writeln!(
            out,
            "# HELP christmas_order_events_broker_up Whether the order events publisher is connected to its broker (1) or not (0; events wait in the outbox).\n# TYPE christmas_order_events_broker_up gauge\nchristmas_order_events_broker_up{{backend=\"{backend}\"}} {}",
            u8::from(o.events_broker_up)
        );
    }
    summary(
        out,
        "christmas_order_group_commit_seconds",
        "Time to write and commit one order group.",
        "",
        &o.group_commit_us,
        1e-6,
    );
    summary(
        out,
        "christmas_order_group_orders",
        "Orders per committed group.",
        "",
        &o.group_orders,
        1.0,
    );
    summary(
        out,
        "christmas_order_submit_seconds",
        "Submission to answer: the wait for a writer plus the group's commit.",
        "",
        &o.submit_us,
        1e-6,
    );
}

/// Each listener's open connections and those closed at once for their address's cap.
fn connections(out: &mut String, s: &AppState) {
    let listeners = [
        ("http", &s.http_connections),
        ("tcp", &s.tcp_connections),
        ("ops", &s.ops_connections),
    ];
    let _ = writeln!(out, "# HELP christmas_connections_open Connections open, by listener.\n# TYPE christmas_connections_open gauge");
    for (name, b) in listeners {
        let _ = writeln!(
            out,
            "christmas_connections_open{{listener=\"{name}\"}} {}",
            b.open()
        );
    }
    let _ = writeln!(out, "# HELP christmas_connections_refused_total Connections closed at once: their client address held its cap.\n# TYPE christmas_connections_refused_total counter");
    for (name, b) in listeners {
        let _ = writeln!(
            out,
            "christmas_connections_refused_total{{listener=\"{name}\"}} {}",
            b.refused()
        );
    }
}

/// The whole `/metrics` page.
pub fn render(s: &AppState) -> String {
    let mut out = String::with_capacity(8 << 10);
    let metrics = s.ingress.metrics();
    engine(
        &mut out,
        &[("trade", metrics.trades), ("quote", metrics.quotes)],
    );
    let _ = writeln!(out, "# HELP christmas_http_requests_total HTTP requests by route and status.\n# TYPE christmas_http_requests_total counter");
    for ((method, route, status), n) in s
        .http
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(out, "christmas_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
    }
    let h = s
        .http
        .latency_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    summary(
        &mut out,
        "christmas_http_request_duration_seconds",
        "HTTP request latency.",
        "",
        &h,
        1e-6,
    );
    connections(&mut out, s);
    orders(&mut out, &s.orders.metrics());
    if let Some(feed) = &s.stream {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &feed.counters;
        for (name, kind, v) in [
            ("christmas_stream_clients", "gauge", c.clients.load(Relaxed)),
            (
                "christmas_stream_dropped_slow_total",
                "counter",
                c.dropped_slow.load(Relaxed),
            ),
            (
                "christmas_stream_messages_total",
                "counter",
                c.messages.load(Relaxed),
            ),
            (
                "christmas_stream_delivered_total",
                "counter",
                c.delivered.load(Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
    }
    // Only with a replica whose lag could be measured: an absent series, not a made-up 0.
    if let Some(lag) = s.reader.replica_lag() {
        let _ = writeln!(out, "# HELP christmas_replica_lag_seconds How far the read replica's replay is behind (0: replayed all it received).\n# TYPE christmas_replica_lag_seconds gauge\nchristmas_replica_lag_seconds {}", lag.as_secs_f64());
    }
    let _ = writeln!(out, "# HELP christmas_uptime_seconds Seconds since start.\n# TYPE christmas_uptime_seconds gauge\nchristmas_uptime_seconds {}", s.started.elapsed().as_secs());
    out
}
