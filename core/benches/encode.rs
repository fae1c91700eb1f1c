//! Binary COPY encoding speed, one core. Floor from the issue: ≥ 20 M trades/s.
//! Also reading a TCP ingest frame into records: decoded into owned frame records then
//! converted (a `String` per record), against read in place (none).

use bytes::BytesMut;
use christmas_core::frame::{self, FrameBuffer, FrameTrade, IngestFrame};
use christmas_core::synthetic::{SyntheticMarket, Tick};
use christmas_core::{Quote, Record, Ticks, Trade};
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
    read_frames(c, &trades[..1_000]);
}

fn read_frames(c: &mut Criterion, trades: &[Trade]) {
    let frame = IngestFrame {
        trades: trades.iter().map(FrameTrade::from).collect(),
        ..IngestFrame::default()
    };
    let bytes = frame::encode_ingest(&frame).expect("a frame encodes");
    let body = &bytes[4..];
    let mut group = c.benchmark_group("frame_read");
    group.throughput(Throughput::Elements(trades.len() as u64));
    group.bench_function(BenchmarkId::new("decode_then_convert", trades.len()), |b| {
        b.iter(|| {
            let decoded = frame::decode_ingest(body).expect("a valid frame");
            std::hint::black_box(frame::to_records(&decoded).expect("valid records"))
        })
    });
    let (mut buf, mut ticks) = (FrameBuffer::default(), Ticks::default());
    group.bench_function(BenchmarkId::new("in_place", trades.len()), |b| {
        b.iter(|| {
            buf.body_mut(body.len()).copy_from_slice(body);
            let view = buf.ingest().expect("a valid frame");
            view.read_ticks(&mut ticks).expect("valid records");
            std::hint::black_box(ticks.len())
        })
    });
    group.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(group);
