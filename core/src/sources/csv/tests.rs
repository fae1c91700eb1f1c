//! The CSV reader: the generic layout, each dialect, and the errors a user meets.

use super::*;
use crate::sources::error::SourceErrorKind;

#[test]
fn pair_from_file_name() {
    let s = |p: &str| symbol_from_file_name(Path::new(p)).map(|s| s.as_str().to_string());
    assert_eq!(s("data/truefx-usdjpy-ticks.csv").as_deref(), Some("USDJPY"));
    assert_eq!(s("eurusd.csv").as_deref(), Some("EURUSD"));
    assert_eq!(s("ticks.csv"), None);
    assert_eq!(s("eurusd-usdjpy.csv"), None);
    assert_eq!(
        s("BTCUSDT-trades-2024-07-01.csv").as_deref(),
        Some("BTCUSDT")
    );
    assert_eq!(
        s("x/ETHBTC-aggTrades-2024-07.zip.csv").as_deref(),
        Some("ETHBTC")
    );
    assert_eq!(s("notes-trades-summary.csv"), None);
}

#[test]
fn csv_from_memory() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/truefx-usdjpy-ticks.csv");
    let bytes = std::fs::read(path).unwrap();
    let usdjpy = Symbol::new("USDJPY").unwrap();
    let ticks = parse_csv(&bytes, Some(usdjpy)).unwrap();
    assert_eq!(ticks.len(), 1_000);
    assert!(matches!(ticks[0], Tick::Quote(q) if q.symbol == usdjpy && q.bid == 86.655));
    let e = parse_csv(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("no symbol column"), "{e}");
    let bad = b"time_ns,symbol,price,volume\n1,ES,NaN,1\n";
    assert!(parse_csv(bad, None).is_err());
}

#[test]
fn sides_are_read_in_every_spelling_and_an_unknown_one_is_an_error() {
    let file =
        b"time_ns,symbol,price,volume,side\n1,ES,1,1,BUY\n2,ES,1,1,A\n3,ES,1,1,\n4,ES,1,1,sell\n";
    let sides: Vec<Side> = parse_csv(file, None)
        .unwrap()
        .into_iter()
        .map(|t| match t {
            Tick::Trade(t) => t.side,
            Tick::Quote(_) => unreachable!("a trade file"),
        })
        .collect();
    assert_eq!(sides, [Side::Buy, Side::Sell, Side::None, Side::Sell]);
    let e = parse_csv(b"time_ns,symbol,price,volume,side\n1,ES,1,1,X\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: side:"), "{e}");
}

#[test]
fn a_record_its_kind_refuses_names_the_line_and_field() {
    let e = parse_csv(b"time_ns,symbol,price,volume\n1,ES,1,1\n2,ES,1,-1\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3: volume: must be"), "{e}");
    let e = parse_csv(b"time_ns,symbol,bid,ask\n1,ES,1,inf\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: ask: must be a finite number"), "{e}");
}

#[test]
fn a_file_holds_the_kinds_its_columns_name() {
    use crate::ingress::Kinds;
    let kinds = |file: &[u8]| {
        let options = CsvOptions::default();
        TickSource::kinds(&CsvReader::from_reader(file, file.len() as u64, options).unwrap())
    };
    let (trades, quotes) = (true, true);
    assert_eq!(
        kinds(b"time_ns,symbol,price,volume\n1,ES,1,1\n"),
        Kinds {
            trades,
            quotes: false
        }
    );
    assert_eq!(
        kinds(b"time_ns,symbol,bid,ask\n1,ES,1,2\n"),
        Kinds {
            trades: false,
            quotes
        }
    );
    assert_eq!(
        kinds(b"time_ns,symbol,price,volume,bid,ask\n1,ES,1,1,1,2\n"),
        Kinds::BOTH
    );
}

fn read_all(file: &[u8], options: CsvOptions) -> Result<(Vec<Tick>, Vec<String>, CsvDialect)> {
    let mut reader = CsvReader::from_reader(file, file.len() as u64, options)?;
    let mut ticks = Vec::new();
    while let Some(t) = reader.next_tick()? {
        ticks.push(t);
    }
    Ok((ticks, reader.notes().to_vec(), reader.dialect()))
}

fn kind_and_text(e: crate::Error) -> (SourceErrorKind, String) {
    let text = e.to_string();
    match e {
        crate::Error::Source(s) => (s.kind, text),
        other => panic!("not a source error: {other}"),
    }
}

fn es() -> CsvOptions {
    CsvOptions {
        symbol: Some(Symbol::new("ES").unwrap()),
        ..CsvOptions::default()
    }
}

#[test]
fn an_empty_or_semicolon_file_or_a_header_without_a_time_gets_a_sentence_naming_the_columns() {
    for empty in [&b""[..], b"\n", b"  \n"] {
        let (kind, e) = kind_and_text(read_all(empty, es()).unwrap_err());
        assert_eq!(kind, SourceErrorKind::Header);
        assert!(
            e.contains("The file is empty") && e.contains("bid_px_00"),
            "{e}"
        );
    }
    let (kind, e) = kind_and_text(read_all(b"time;price;volume\n1;2;3\n", es()).unwrap_err());
    assert_eq!(kind, SourceErrorKind::Header);
    assert!(e.contains("semicolons"), "{e}");
    let (_, e) = kind_and_text(read_all(b"when,price,volume\n1,2,3\n", es()).unwrap_err());
    assert!(
        e.contains("no time column") && e.contains("Accepted names") && e.contains("ts_event"),
        "{e}"
    );
    let (_, e) = kind_and_text(read_all(b"time,last,volume\n1,2,3\n", es()).unwrap_err());
    assert!(
        e.contains("neither price and volume") && e.contains("bid_price"),
        "{e}"
    );
}

#[test]
fn databento_exports_split_trades_from_book_updates_and_scale_fixed_point_prices() {
    let header = "ts_recv,ts_event,rtype,publisher_id,instrument_id,action,side,depth,price,size,flags,ts_in_delta,sequence,bid_px_00,ask_px_00,bid_sz_00,ask_sz_00,bid_ct_00,ask_ct_00,symbol";
    let fixed = format!(
        "{header}\n\
         1719878280000000001,1719878280000000000,1,1,42,A,B,0,5591250000000,3,0,0,10,5591250000000,5591500000000,3,7,1,1,ESU4\n\
         1719878280000000101,1719878280000000100,1,1,42,T,A,0,5591250000000,2,0,0,11,5591250000000,5591500000000,1,7,1,1,ESU4\n\
         1719878280000000201,1719878280000000200,1,1,42,C,B,0,5591250000000,1,0,0,12,,5591500000000,0,7,0,1,ESU4\n"
    );
    let (ticks, notes, dialect) = read_all(fixed.as_bytes(), CsvOptions::default()).unwrap();
    assert_eq!(dialect, CsvDialect::Databento);
    assert!(notes.is_empty(), "{notes:?}");
    // Row 1: a quote; row 2: a trade and a quote; row 3: no bid, so nothing.
    assert_eq!(ticks.len(), 3, "{ticks:?}");
    let Tick::Trade(t) = ticks[1] else {
        panic!("{ticks:?}")
    };
    assert_eq!(
        (t.price, t.volume, t.side, t.exchange_seq),
        (5591.25, 2.0, Side::Sell, 11)
    );
    assert_eq!(t.time_ns, 1_719_878_280_000_000_100);
    assert!(matches!(ticks[2], Tick::Quote(q) if q.bid == 5591.25 && q.ask == 5591.5));
    let decimal = format!(
        "{header}\n2024-07-01T23:58:00.000000101Z,2024-07-01T23:58:00.000000100Z,1,1,42,T,B,0,5591.250000000,2,0,0,11,5591.250000000,5591.500000000,1,7,1,1,ESU4\n"
    );
    let (ticks, _, _) = read_all(decimal.as_bytes(), CsvOptions::default()).unwrap();
    assert!(
        matches!(ticks[0], Tick::Trade(t) if t.price == 5591.25 && t.side == Side::Buy && t.time_ns == 1_719_878_280_000_000_100)
    );
}

#[test]
fn tardis_times_are_microseconds_and_amount_is_the_volume() {
    let trades = b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n\
        binance,BTCUSDT,1719878400000000,1719878400001000,7,buy,61000.5,0.25\n\
        binance,BTCUSDT,1719878400000500,1719878400001500,8,unknown,61000.0,1\n";
    let (ticks, notes, dialect) = read_all(trades, CsvOptions::default()).unwrap();
    assert_eq!(dialect, CsvDialect::Tardis);
    assert!(notes.is_empty(), "{notes:?}");
    let trades: Vec<Trade> = ticks
        .iter()
        .map(|t| match t {
            Tick::Trade(t) => *t,
            Tick::Quote(_) => panic!("a trade file"),
        })
        .collect();
    assert_eq!(trades[0].time_ns, 1_719_878_400_000_000_000);
    assert_eq!(
        (trades[0].volume, trades[0].side, trades[0].exchange_seq),
        (0.25, Side::Buy, 7)
    );
    assert_eq!(
        (trades[1].time_ns % 1_000_000_000, trades[1].side),
        (500_000, Side::None)
    );
    let quotes =
        b"exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n\
        binance,BTCUSDT,1719878400000000,1719878400001000,2,61001,61000,3\n";
    let (ticks, _, _) = read_all(quotes, CsvOptions::default()).unwrap();
    assert!(
        matches!(ticks[..], [Tick::Quote(q)] if q.bid == 61000.0 && q.ask_size == 2.0 && q.bid_size == 3.0)
    );
}

#[test]
fn binance_buyer_maker_is_a_sell_and_its_unit_is_guessed_with_a_note() {
    let headerless = b"101,61000.5,0.25,15250.125,1719878400000,true,true\n\
        102,61001.0,1.0,61001.0,1719878400001,false,true\n";
    let (ticks, notes, dialect) = read_all(headerless, es()).unwrap();
    assert_eq!(dialect, CsvDialect::Binance);
    assert!(
        notes[0].contains("read as ms") && notes[0].contains("--time-unit"),
        "{notes:?}"
    );
    let sides: Vec<(Side, i64, i64)> = ticks
        .iter()
        .map(|t| match t {
            Tick::Trade(t) => (t.side, t.time_ns, t.exchange_seq),
            Tick::Quote(_) => panic!("a trade file"),
        })
        .collect();
    assert_eq!(
        sides,
        [
            (Side::Sell, 1_719_878_400_000_000_000, 101),
            (Side::Buy, 1_719_878_400_001_000_000, 102)
        ]
    );
    // Microseconds (Binance spot since 2025), named: no note.
    let with_header = b"id,price,qty,quote_qty,time,is_buyer_maker\n101,61000.5,0.25,15250.125,1719878400000000,true\n";
    let options = CsvOptions {
        time_unit: Some(TimeUnit::Us),
        ..es()
    };
    let (ticks, notes, _) = read_all(with_header, options).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        matches!(ticks[..], [Tick::Trade(t)] if t.time_ns == 1_719_878_400_000_000_000 && t.side == Side::Sell)
    );
}

#[test]
fn histdata_is_headerless_and_in_est_all_year() {
    let file = b"20240701 190000000,1.07101,1.07103,0\n20240701 190000250,1.07102,1.07104,0\n";
    let (ticks, notes, dialect) = read_all(file, es()).unwrap();
    assert_eq!(dialect, CsvDialect::HistData);
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        matches!(ticks[0], Tick::Quote(q) if q.time_ns == 1_719_878_400_000_000_000 && q.bid == 1.07101)
    );
    assert!(matches!(ticks[1], Tick::Quote(q) if q.time_ns == 1_719_878_400_250_000_000));
    // --tz wins over the dialect's EST.
    let utc = CsvOptions {
        tz: Some(crate::sources::timefmt::NaiveZone::Offset(0)),
        ..es()
    };
    let (ticks, _, _) = read_all(file, utc).unwrap();
    assert_eq!(
        ticks[0].time_ns(),
        1_719_878_400_000_000_000 - 5 * 3_600 * 1_000_000_000
    );
}

#[test]
fn naive_times_are_utc_with_a_note_or_at_the_offset_given() {
    let file = b"time,price,volume\n2024-07-01 19:00:00.5,1,1\n";
    let (ticks, notes, _) = read_all(file, es()).unwrap();
    assert!(
        notes[0].contains("read as UTC") && notes[0].contains("--tz"),
        "{notes:?}"
    );
    assert_eq!(ticks[0].time_ns(), 1_719_860_400_500_000_000);
    let est = CsvOptions {
        tz: Some(crate::sources::timefmt::NaiveZone::Offset(-300)),
        ..es()
    };
    let (ticks, notes, _) = read_all(file, est).unwrap();
    assert!(notes.is_empty());
    assert_eq!(ticks[0].time_ns(), 1_719_878_400_500_000_000);
    // Seconds since the epoch, named.
    let secs = CsvOptions {
        time_unit: Some(TimeUnit::S),
        ..es()
    };
    let (ticks, _, _) = read_all(b"timestamp,bid,ask\n1719878400.25,1,2\n", secs).unwrap();
    assert_eq!(ticks[0].time_ns(), 1_719_878_400_250_000_000);
}

#[test]
fn a_bad_line_names_its_line_and_position() {
    let e = read_all(b"time_ns,price,volume\n1,1,1\n2,x,1\n", es()).unwrap_err();
    let crate::Error::Source(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.kind, SourceErrorKind::Field);
    assert_eq!(e.at.map(|a| a.record), Some(1));
    assert!(
        e.to_string().contains("line 3: price is not a number"),
        "{e}"
    );
}

#[test]
fn a_short_line_or_one_not_utf8_is_refused_naming_its_line() {
    let head = "time,symbol,price,volume\n2024-07-01T00:00:00Z,ES,1,1\n\n";
    let short = format!("{head}2024-07-01T00:00:01Z,ES,1\n");
    let e = parse_csv(short.as_bytes(), None).unwrap_err().to_string();
    assert!(
        e.contains("line 4 cannot be read: it has 3 fields, but the first line has 4"),
        "{e}"
    );
    let mut bad = head.as_bytes().to_vec();
    bad.extend_from_slice(b"2024-07-01T00:00:01Z,E\xffS,1,1\n");
    let e = parse_csv(&bad, None).unwrap_err().to_string();
    assert!(
        e.contains("line 4 cannot be read: field 2 is not UTF-8"),
        "{e}"
    );
    // Quoted, across lines, the same rows as plain.
    let quoted = "time,symbol,price,volume\r\n\"2024-07-01T00:00:00Z\",\"E\"\"S\",1,1\r\n";
    let ticks = parse_csv(quoted.as_bytes(), None).unwrap();
    assert!(matches!(ticks[..], [Tick::Trade(t)] if t.symbol.as_str() == "E\"S"));
}
