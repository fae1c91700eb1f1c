//! push → ring → batcher → sealed batch → null sink (`discard()`): the pipeline without the
//! database. Floor from the issue: ≥ 5 M records/s with 2 producers.

use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, Trade};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const RECORDS: usize = 1_000_000;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Push,
    PushBatch,
}

fn run(rt: &tokio::runtime::Runtime, trades: &[Vec<Trade>], mode: Mode) {
    rt.block_on(async {
        let ingestor = Ingestor::<Trade>::builder()
            .discard()
            .shards(2)
            .start()
            .await
            .expect("start");
        std::thread::scope(|s| {
            for mine in trades {
                let ingestor = ingestor.clone();
                s.spawn(move || match mode {
                    Mode::Push => {
                        for t in mine {
                            ingestor.push(*t).expect("push");
                        }
                    }
                    Mode::PushBatch => {
                        for chunk in mine.chunks(256) {
                            ingestor.push_batch(chunk).expect("push_batch");
                        }
                    }
                });
            }
        });
        let m = ingestor.shutdown().await.expect("shutdown");
        assert_eq!(m.rows_committed(), RECORDS as u64);
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("pipeline_null_sink");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for producers in [1usize, 2] {
        // Each producer has its own market (disjoint symbols), like separate feed handlers.
        let trades: Vec<Vec<Trade>> = (0..producers)
            .map(|p| {
                let mut m = SyntheticMarket::new(p as u64, 250);
                (0..RECORDS / producers).map(|_| m.next_trade()).collect()
            })
            .collect();
        for mode in [Mode::Push, Mode::PushBatch] {
            group.bench_with_input(
                BenchmarkId::new(format!("{mode:?}"), format!("{producers}_producers")),
                &trades,
                |b, trades| b.iter(|| run(&rt, trades, mode)),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = benches
}
criterion_main!(group);
