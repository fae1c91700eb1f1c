//! [`Ingress`](super::Ingress)'s tests, on null sinks.

use std::time::Duration;

use super::*;
use crate::config::Sink;
use crate::error::Invalid;
use crate::record::Side;
use crate::symbol::Symbol;

fn trade(i: i64) -> Trade {
    Trade {
        time_ns: 1_719_878_400_000_000_000 + i,
        symbol: Symbol::new(["ESU4", "NQU4", "CLQ4"][i as usize % 3]).unwrap(),
        price: 5_512.25,
        volume: 1.0,
        side: Side::Buy,
        exchange_seq: i,
    }
}

fn quote(i: i64) -> Quote {
    Quote {
        time_ns: 1_719_878_400_000_000_000 + i,
        symbol: Symbol::new(["ESU4", "6EU4"][i as usize % 2]).unwrap(),
        bid: 5_512.0,
        ask: 5_512.25,
        bid_size: 3.0,
        ask_size: 4.0,
    }
}

#[test]
fn a_reused_ticks_gives_back_only_a_large_buffer() {
    let mut small = ticks(10, 10);
    small.clear_and_release_over(100);
    assert!(small.is_empty());
    assert!(small.trades.capacity() >= 10 && small.quotes.capacity() >= 10);
    let mut large = ticks(500, 5);
    large.clear_and_release_over(100);
    assert!(large.is_empty());
    assert_eq!(large.trades.capacity(), 0);
    assert!(large.quotes.capacity() >= 5);
}

fn ticks(trades: i64, quotes: i64) -> Ticks {
    let mut t = Ticks::default();
    for i in 0..trades {
        t.push_trade(trade(i)).unwrap();
    }
    for i in 0..quotes {
        t.push_quote(quote(i)).unwrap();
    }
    t
}

fn null_sink() -> IngestorConfig {
    IngestorConfig {
        sink: Some(Sink::Discard),
        linger: Duration::from_millis(1),
        ..IngestorConfig::default()
    }
}

async fn null_ingress() -> Ingress {
    Ingress::start(null_sink()).await.unwrap()
}

#[test]
fn ack_levels_parse_from_their_names_and_codes() {
    for level in [AckLevel::Accepted, AckLevel::Durable, AckLevel::Committed] {
        assert_eq!(level.as_str().parse::<AckLevel>().unwrap(), level);
        assert_eq!(AckLevel::from_code(level.code()).unwrap(), level);
    }
    assert_eq!(AckLevel::default(), AckLevel::Accepted);
    assert!("Committed".parse::<AckLevel>().is_err());
    assert!(AckLevel::from_code(3).is_err());
}

#[test]
fn ticks_hold_only_valid_records() {
    let mut t = ticks(2, 1);
    let bad = Trade {
        volume: -1.0,
        ..trade(9)
    };
    assert_eq!(
        t.push_trade(bad),
        Err(FieldError::new("volume", Invalid::Negative))
    );
    let bad = Quote {
        ask: f64::NAN,
        ..quote(9)
    };
    assert_eq!(
        t.push(Tick::Quote(bad)),
        Err(FieldError::new("ask", Invalid::NotFinite))
    );
    assert_eq!((t.trades().len(), t.quotes().len(), t.len()), (2, 1, 3));
    t.clear();
    assert!(t.is_empty());
}

#[tokio::test]
async fn pushes_resolve_at_every_level_the_null_sink_serves() {
    let ingress = null_ingress().await;
    assert!(!ingress.supports(AckLevel::Durable));
    let batch = ticks(5, 3);
    for level in [AckLevel::Accepted, AckLevel::Committed] {
        let ack = ingress.push(&batch, level).await.unwrap();
        assert_eq!((ack.level(), ack.records()), (level, 8));
        let acked = ack.await.unwrap();
        assert_eq!((acked.level, acked.trades, acked.quotes), (level, 5, 3));
    }
    // Only one kind, and none at all.
    let acked = ingress
        .push(&ticks(0, 2), AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(acked.records(), 2);
    let acked = ingress
        .push(&Ticks::default(), AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(acked.records(), 0);
    let totals = ingress.shutdown().await.unwrap();
    assert_eq!(totals.trades.accepted(), 10);
    assert_eq!(totals.quotes.accepted(), 8);
    assert_eq!(totals.accepted(), 18);
}

#[tokio::test]
async fn durable_without_a_spool_pushes_nothing() {
    let ingress = null_ingress().await;
    let e = ingress
        .push(&ticks(3, 3), AckLevel::Durable)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Spool { .. }), "{e}");
    assert!(e.to_string().contains("durable"), "{e}");
    assert_eq!(ingress.shutdown().await.unwrap().accepted(), 0);
}

#[tokio::test]
async fn durable_pushes_resolve_once_spooled() {
    let dir = std::env::temp_dir().join(format!(
        "christmas-ingress-durable-{}-{}",
        std::process::id(),
        crate::query::unix_ns(std::time::SystemTime::now())
    ));
    let ingress = Ingress::start(IngestorConfig {
        spool: Some(crate::spool::SpoolConfig::new(&dir)),
        ..null_sink()
    })
    .await
    .unwrap();
    assert!(ingress.supports(AckLevel::Durable));
    let acked = ingress
        .push(&ticks(4, 2), AckLevel::Durable)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((acked.trades, acked.quotes), (4, 2));
    let totals = ingress.shutdown().await.unwrap();
    assert_eq!((totals.trades.accepted(), totals.quotes.accepted()), (4, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_ingress_of_trades_refuses_quotes_before_pushing_anything() {
    let ingress = Ingress::start_kinds(
        null_sink(),
        Kinds {
            trades: true,
            quotes: false,
        },
    )
    .await
    .unwrap();
    assert!(ingress.quotes().is_none() && ingress.is_open());
    let producer = ProducerId::new("file:kinds").unwrap();
    for e in [
        ingress.push(&ticks(3, 1), AckLevel::Committed).await,
        ingress
            .push_from(&producer, 1, &ticks(3, 1), AckLevel::Committed)
            .await,
        ingress
            .push_numbered(
                &producer,
                &ticks(3, 1),
                &[1, 2, 3],
                &[4],
                AckLevel::Accepted,
            )
            .await,
    ] {
        let e = e.unwrap_err();
        assert!(
            matches!(
                &e,
                Error::InvalidField {
                    field: "quotes",
                    ..
                }
            ),
            "{e}"
        );
    }
    let acked = ingress
        .push(&ticks(3, 0), AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((acked.trades, acked.quotes), (3, 0));
    let totals = ingress.shutdown().await.unwrap();
    // The refused pushes left nothing behind, not even their trades.
    assert_eq!((totals.trades.accepted(), totals.quotes.accepted()), (3, 0));
    assert!(!ingress.is_open());
    let none = Kinds {
        trades: false,
        quotes: false,
    };
    assert!(Ingress::start_kinds(null_sink(), none).await.is_err());
}

#[tokio::test]
async fn a_closed_ingress_refuses_pushes() {
    let ingress = null_ingress().await;
    ingress.shutdown().await.unwrap();
    for level in [AckLevel::Accepted, AckLevel::Committed] {
        let e = ingress.push(&ticks(1, 1), level).await.unwrap_err();
        assert!(matches!(e, Error::Closed), "{level:?}: {e}");
    }
}
