//! The DBN reader on the CME sample and on cut and corrupted copies of it.

use std::io::Read;
use std::path::Path;

use ::dbn::decode::DynReader;

use super::framing::RecordFraming;
use super::*;
use crate::sources::error::SourceErrorKind;

fn sample_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/glbx-futures-mbp-1.dbn.zst")
}

/// The CME sample decompressed (DBN v1) and where its first record starts.
fn sample_bytes() -> (Vec<u8>, usize) {
    let mut file = Vec::new();
    DynReader::from_file(sample_path())
        .unwrap()
        .read_to_end(&mut file)
        .unwrap();
    let first_record = 8 + u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
    (file, first_record)
}

/// Reads `file` to its first error, which it must have: the records read and the error.
fn read_to_error(name: &str, file: &[u8]) -> (usize, String) {
    let path = std::env::temp_dir().join(format!("christmas-{name}-{}.dbn", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let reader = DbnReader::open(&path);
    std::fs::remove_file(&path).unwrap();
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => return (0, e.to_string()),
    };
    let mut read = 0;
    loop {
        match reader.next_ticks() {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("no error after {read} records"),
            Err(e) => return (read, e.to_string()),
        }
    }
}

#[test]
fn the_cme_sample_still_reads() {
    let ticks: Vec<RecordTicks> = DbnReader::open(sample_path())
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(ticks.len(), 2_288);
    assert_eq!(ticks.iter().filter(|t| t.trade.is_some()).count(), 120);
}

#[test]
fn tick_by_tick_each_trade_comes_before_its_quote() {
    let mut reader = DbnTickReader::open(sample_path()).unwrap();
    let mut ticks = Vec::new();
    while let Some(t) = reader.next_tick().unwrap() {
        ticks.push(t);
    }
    let trades = ticks.iter().filter(|t| matches!(t, Tick::Trade(_))).count();
    assert_eq!((trades, ticks.len() - trades), (120, 2_288));
    let first_trade = ticks
        .iter()
        .position(|t| matches!(t, Tick::Trade(_)))
        .unwrap();
    assert!(
        matches!(ticks[first_trade + 1], Tick::Quote(q) if q.time_ns == ticks[first_trade].time_ns())
    );
    assert_eq!(reader.progress(), Some(1.0));
}

/// Hands out at most `chunk` bytes a read, so record headers straddle reads.
struct Chunked<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn framing_passes_whole_records_and_stops_before_a_bad_one() {
    let (file, first) = sample_bytes();
    let framed = |bytes: &[u8], chunk: usize| {
        let mut out = Vec::new();
        let types = &[(dbn::rtype::MBP_1, 80)];
        let result = RecordFraming::new(Chunked { bytes, chunk }, types, false, first as u64)
            .read_to_end(&mut out);
        (result, out)
    };
    let fifth = first + 4 * 80;
    let mut bad_type = file.clone();
    bad_type[fifth + 1] = 0x15;
    for chunk in [1, 2, 7, 80, 81, 4096, 1 << 20] {
        let (result, out) = framed(&file, chunk);
        result.unwrap();
        assert_eq!(out, file, "chunk {chunk}");
        let (result, out) = framed(&bad_type, chunk);
        let e = result.unwrap_err().to_string();
        assert!(e.contains("type 0x15"), "chunk {chunk}: {e}");
        // Nothing of the bad record but (with one-byte reads) its length byte.
        assert!((fifth..=fifth + 1).contains(&out.len()), "chunk {chunk}");
    }
}

/// Found by fuzzing (dbn_reader): a record length byte of 21 words (84 bytes) left the
/// next record misaligned in the decoder's buffer, which `dbn` asserts against (and reads
/// anyway in a release build).
#[test]
fn a_record_length_off_the_8_byte_grid_is_an_error() {
    let (mut file, first) = sample_bytes();
    file.truncate(first + 10 * 80);
    let fifth = first + 4 * 80;
    assert_eq!(file[fifth], 20, "an 80-byte MBP-1 record");
    file[fifth] = 21;
    let (read, e) = read_to_error("dbn-record-length", &file);
    assert_eq!(read, 4, "the records before it are read");
    assert!(e.contains("a record length of 84 bytes"), "{e}");
}

/// Found by fuzzing (dbn_reader): an 80-byte error record (type 0x15) in a v1 file whose
/// metadata sets `ts_out` made `dbn`'s upgrade to v3 panic (it expected 88 bytes).
#[test]
fn a_record_of_another_type_is_an_error() {
    let (mut file, first) = sample_bytes();
    file.truncate(first + 10 * 80);
    file[60] = 1; // ts_out, in the v1 metadata's fixed part
    file[first + 4 * 80 + 1] = 0x15;
    let (read, e) = read_to_error("dbn-record-type", &file);
    assert_eq!(read, 4, "the records before it are read");
    assert!(e.contains("a record of type 0x15"), "{e}");
}

/// Found by fuzzing (dbn_reader): a metadata length word of 0xC6000000 in a 500-byte
/// file made the decoder allocate 3.3 GB before reading any metadata.
#[test]
fn a_metadata_length_past_the_end_is_an_error() {
    let mut file = b"DBN\x01\x00\x00\x00\xc6GLBX.MDP3".to_vec();
    file.resize(500, 0);
    let (read, e) = read_to_error("dbn-metadata-length", &file);
    assert_eq!(read, 0);
    assert!(
        e.contains("metadata header is 3321888768 bytes long"),
        "{e}"
    );
}

/// A copy of the sample cut at `keep` bytes of its decompressed stream, compressed again
/// (`zst`) or not: the error and the records read before it.
fn cut(keep: usize, zst: bool) -> (usize, crate::Error) {
    let (file, _) = sample_bytes();
    let bytes = if zst {
        zstd_of(&file[..keep])
    } else {
        file[..keep].to_vec()
    };
    let path = std::env::temp_dir().join(format!(
        "christmas-cut-{keep}-{zst}-{}.dbn",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let reader = DbnReader::open(&path);
    std::fs::remove_file(&path).unwrap();
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => return (0, e),
    };
    let mut read = 0;
    loop {
        match reader.next_ticks() {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("no error after {read} records"),
            Err(e) => return (read, e),
        }
    }
}

fn zstd_of(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut w = dbn::encode::DynWriter::new(&mut out, dbn::Compression::Zstd).unwrap();
    w.write_all(bytes).unwrap();
    drop(w);
    out
}

#[test]
fn a_dbn_cut_inside_a_record_is_a_truncation_naming_the_record() {
    let (_, first) = sample_bytes();
    let (read, e) = cut(first + 100 * 80 + 33, false);
    assert_eq!(read, 100, "the whole records before the cut are read");
    let crate::Error::Source(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.kind, SourceErrorKind::Truncated, "{e}");
    let at = e.at.unwrap();
    assert_eq!((at.record, at.byte), (100, Some((first + 100 * 80) as u64)));
    assert!(e.to_string().contains("33 of its 80 bytes"), "{e}");
}

#[test]
fn a_zst_cut_anywhere_is_a_truncation() {
    let (file, first) = sample_bytes();
    let whole = zstd_of(&file);
    let path = std::env::temp_dir().join(format!("christmas-cut-{}.dbn.zst", std::process::id()));
    // Cut at 9/10 the first zstd block is whole, so records are read before the error; cut
    // in half not even the metadata is, and the error comes from `open`.
    for (keep, some_read) in [(whole.len() * 9 / 10, true), (whole.len() / 2, false)] {
        std::fs::write(&path, &whole[..keep]).unwrap();
        let mut read = 0u64;
        let e = match DbnReader::open(&path) {
            Err(e) => e,
            Ok(mut reader) => loop {
                match reader.next_ticks() {
                    Ok(Some(_)) => read += 1,
                    Ok(None) => panic!("no error after {read} records"),
                    Err(e) => break e,
                }
            },
        };
        let crate::Error::Source(e) = e else {
            panic!("{e}")
        };
        assert_eq!(e.kind, SourceErrorKind::Truncated, "{e}");
        assert!(read < 2_288 && (read > 0) == some_read, "{read}");
        assert!(e.to_string().contains("zstd"), "{e}");
    }
    std::fs::remove_file(&path).unwrap();
    // A whole zstd stream of a file cut inside a record: the record framing finds it.
    let (read, e) = cut(first + 100 * 80 + 1, true);
    assert_eq!(read, 100);
    assert!(matches!(e, crate::Error::Source(ref s) if s.kind == SourceErrorKind::Truncated));
}
