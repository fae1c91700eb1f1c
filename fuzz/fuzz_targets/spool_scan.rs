//! The spool's segment reader: `scan_segment` on any bytes, as a restart reads what a crash
//! (or a bad disk) left.
//!
//! Asserts, beyond "no panic": the valid prefix never passes the end; the entries it
//! reports are in order, back to back from the 8-byte magic, inside the valid prefix; and
//! scanning the valid prefix alone finds the same entries, all of it valid (truncating a
//! torn tail, as recovery does, leaves a clean segment).
#![no_main]

use christmas_core::spool::scan_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (entries, valid) = scan_segment(bytes);
    assert!(valid <= bytes.len());
    let mut at = if entries.is_empty() { valid as u64 } else { 8 };
    for &(offset, len) in &entries {
        assert_eq!(offset, at, "entries are back to back");
        at = offset + 8 + u64::from(len);
    }
    assert_eq!(
        at, valid as u64,
        "the valid prefix ends after the last entry"
    );
    let (again, valid_again) = scan_segment(&bytes[..valid]);
    assert_eq!(again, entries);
    assert_eq!(valid_again, valid);
});
