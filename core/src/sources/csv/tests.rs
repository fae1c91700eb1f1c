//! The CSV reader: the generic layout, each dialect, and the errors a user meets.

use super::*;

#[test]
fn pair_from_file_name() {
    let s = |p: &str| symbol_from_file_name(Path::new(p)).map(|s| s.as_str().to_string());
    assert_eq!(s("data/truefx-usdjpy-ticks.csv").as_deref(), Some("USDJPY"));
    assert_eq!(s("eurusd.csv").as_deref(), Some("EURUSD"));
    assert_eq!(s("ticks.csv"), None);
    assert_eq!(s("eurusd-usdjpy.csv"), None);
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
