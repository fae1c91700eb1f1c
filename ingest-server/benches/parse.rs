//! `POST /api/ticks` parsing speed, one core: a 5,000-tick NDJSON body and the same ticks
//! as a JSON array, as `christmas-bench daemon` sends them, read into a core `Ticks` by
//! `ticks::parse` (its fast path) and by `ticks::parse_reference` (the serde walk).

use christmas_core::synthetic::{SyntheticMarket, Tick};
use christmas_ingest::ticks;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ROWS: usize = 5_000;

/// The bench's NDJSON line of a tick (integer times, as feed handlers send them).
fn line(t: &Tick) -> String {
    match t {
        Tick::Trade(t) => format!(
            r#"{{"kind":"trade","symbol":"{}","time_ns":{},"price":{},"volume":{},"side":"{}","exchange_seq":{}}}"#,
            t.symbol.as_str(),
            t.time_ns,
            t.price,
            t.volume,
            t.side.code() as char,
            t.exchange_seq
        ),
        Tick::Quote(q) => format!(
            r#"{{"kind":"quote","symbol":"{}","time":"2024-07-02T00:00:00.{:09}Z","bid":{},"ask":{},"bid_size":{},"ask_size":{}}}"#,
            q.symbol.as_str(),
            q.time_ns.rem_euclid(1_000_000_000),
            q.bid,
            q.ask,
            q.bid_size,
            q.ask_size
        ),
    }
}

fn benches(c: &mut Criterion) {
    let lines: Vec<String> = SyntheticMarket::new(7, 500)
        .take(ROWS)
        .map(|t| line(&t))
        .collect();
    let ndjson = lines.join("\n").into_bytes();
    let array = format!("[{}]", lines.join(",")).into_bytes();
    let mut group = c.benchmark_group("http_ticks");
    type Parser = fn(&[u8]) -> Result<christmas_core::Ticks, ticks::TickError>;
    let parsers: [(&str, Parser); 2] = [
        ("fast", ticks::parse),
        ("reference", ticks::parse_reference),
    ];
    for (form, body) in [("ndjson", &ndjson), ("array", &array)] {
        assert!(
            ticks::fast::parse(body).is_some(),
            "the fast path reads the bench's body"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (parser, parse) in parsers {
            let parsed = parse(body).expect("the bench's body parses");
            assert_eq!(parsed.len(), ROWS);
            group.bench_function(BenchmarkId::new(format!("{form}/{parser}"), ROWS), |b| {
                b.iter(|| std::hint::black_box(parse(body).map(|t| t.len())))
            });
        }
    }
    group.finish();
}

criterion_group!(parse, benches);
criterion_main!(parse);
