//! Binary COPY encoding speed, one core. Floor from the issue: ≥ 20 M trades/s.

use bytes::BytesMut;
use christmas_core::synthetic::{SyntheticMarket, Tick};
use christmas_core::{Quote, Record, Trade};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ROWS: usize = 10_000;

fn encode<R: Record>(c: &mut Criterion, name: &str, rows: &[R]) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(rows.len() as u64));
    let mut buf = BytesMut::with_capacity(rows.len() * R::MAX_ROW_BYTES);
    group.bench_function(BenchmarkId::new(name, rows.len()), |b| {
        b.iter(|| {
            buf.clear();
            for r in rows {
                r.encode_row(&mut buf);
            }
            std::hint::black_box(buf.len())
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let trades: Vec<Trade> = {
        let mut m = SyntheticMarket::new(1, 500);
        (0..ROWS).map(|_| m.next_trade()).collect()
    };
    let quotes: Vec<Quote> = SyntheticMarket::new(2, 500)
        .filter_map(|t| match t {
            Tick::Quote(q) => Some(q),
            Tick::Trade(_) => None,
        })
        .take(ROWS)
        .collect();
    encode(c, "trades", &trades);
    encode(c, "quotes", &quotes);
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(group);
