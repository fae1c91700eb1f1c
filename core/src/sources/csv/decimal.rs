//! [`plain_decimal`]: the number cells of a tick file (`4750.25`, `8`, `-0.5`) read without
//! the general `f64` parser, whose exponent and long-digit paths a tick file never needs.

/// Powers of ten that an `f64` holds exactly, `10^0` to `10^15`.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Digits an `f64` mantissa holds exactly: every integer below `10^15` is below `2^53`.
const MAX_DIGITS: usize = 15;

/// `cell` as `cell.parse::<f64>()` reads it, when it is a plain decimal: an optional sign,
/// then at most 15 digits with at most one `.` among them. `None` for anything else (an
/// exponent, more digits, `inf`, a stray byte), which the caller gives to the general
/// parser.
///
/// The same value, not an approximation: the digits make an integer `m` below `2^53` and
/// `10^k` is exact, so `m / 10^k` is one correctly rounded division of exact operands, the
/// `f64` nearest the decimal, as `str::parse` returns (Clinger's fast path).
#[inline]
pub(super) fn plain_decimal(cell: &str) -> Option<f64> {
    let b = cell.as_bytes();
    let (negative, body) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa = 0u64;
    let mut point = None;
    for (i, &c) in body.iter().enumerate() {
        match c {
            b'0'..=b'9' => mantissa = mantissa * 10 + u64::from(c - b'0'),
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
        if i > MAX_DIGITS {
            return None;
        }
    }
    let digits = body.len() - usize::from(point.is_some());
    if digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    let scale = point.map_or(0, |p| body.len() - 1 - p);
    let value = mantissa as f64 / POW10[scale];
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Same bits as `str::parse` (so `-0` stays negative), or `None` where it must defer.
    fn agrees(cell: &str) {
        match (plain_decimal(cell), cell.parse::<f64>()) {
            (Some(ours), Ok(theirs)) => {
                assert_eq!(
                    ours.to_bits(),
                    theirs.to_bits(),
                    "{cell:?}: {ours} != {theirs}"
                )
            }
            (Some(ours), Err(_)) => panic!("{cell:?}: read as {ours}, but str::parse refuses it"),
            (None, _) => {}
        }
    }

    #[test]
    fn tick_cells_take_the_fast_path_with_the_parsers_value() {
        for cell in [
            "4750.25",
            "8",
            "0",
            "-0",
            "+3",
            "0.1",
            "1.",
            ".5",
            "-.5",
            "26.63",
            "0.000000001",
            "999999999999999",
            "99999999999999.9",
            "1.00000000000001",
            "0.3",
            "123456.789012345",
        ] {
            assert!(
                plain_decimal(cell).is_some(),
                "{cell:?} should take the fast path"
            );
            agrees(cell);
        }
    }

    #[test]
    fn everything_else_is_left_to_the_general_parser() {
        for cell in [
            "",
            "-",
            "+",
            ".",
            "-.",
            "1e5",
            "1E-3",
            "inf",
            "NaN",
            "1.2.3",
            "--1",
            "1,5",
            " 1",
            "1 ",
            "0x10",
            "1000000000000000",
            "0.1234567890123456",
            "١",
        ] {
            assert_eq!(plain_decimal(cell), None, "{cell:?}");
        }
    }

    proptest! {
        #[test]
        fn any_decimal_reads_as_str_parse_reads_it(
            sign in prop_oneof![Just(""), Just("-"), Just("+")],
            int in "[0-9]{0,16}",
            frac in proptest::option::of("[0-9]{0,16}"),
        ) {
            let cell = match frac {
                Some(f) => format!("{sign}{int}.{f}"),
                None => format!("{sign}{int}"),
            };
            agrees(&cell);
        }

        #[test]
        fn any_bytes_never_read_as_what_str_parse_refuses(cell in "[-+.0-9eE]{0,20}") {
            agrees(&cell);
        }
    }
}
