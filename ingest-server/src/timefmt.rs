//! Timestamps in and out of the HTTP API and CSV files; they live in core beside the file
//! readers that parse them ([`christmas_core::sources::timefmt`]).

pub use christmas_core::sources::timefmt::{format_ns, parse_ns};
