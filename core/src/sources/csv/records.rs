//! The records of a CSV file, as the `csv` crate reads them (comma-separated, `"` quotes
//! with `""` inside, `\n`, `\r\n` or `\r` ending a record, empty lines skipped, every record
//! as long as the first), but split by hand where a line holds no quote and no lone `\r`:
//! almost every line of a tick file. Such a line is its fields, cut at the commas; any
//! other record goes to `csv_core`'s parser. Replay spends its time here, so the usual
//! line costs a `memchr` for its end, a pass eight bytes at a time for its commas and a
//! UTF-8 check, instead of a byte-by-byte state machine.

use std::io::Read;

use csv_core::ReadRecordResult;

/// Bytes read from the input at a time, at least.
const READ_SIZE: usize = 256 * 1024;

/// Unread bytes searched for a `\n` before the record goes to `csv_core`, which reads on
/// without holding the whole line: a file whose lines end in `\r` alone has no `\n` at all.
const MAX_LINE: usize = 64 * 1024;

/// What [`Records::line_end`] found.
enum LineEnd {
    /// The line ends at this index (its `\n`, or the end of a last line without one).
    At(usize),
    /// No `\n` within [`MAX_LINE`] bytes.
    Long,
    /// Nothing is left.
    End,
}

/// Why a record could not be read.
#[derive(Debug)]
pub(super) enum RecordError {
    Io(std::io::Error),
    /// A field is not UTF-8 (its 0-based index).
    Utf8 {
        field: usize,
    },
    /// The record has `found` fields where the first had `expected`.
    Length {
        found: usize,
        expected: usize,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Io(e) => write!(f, "{e}"),
            RecordError::Utf8 { field } => write!(f, "field {} is not UTF-8", field + 1),
            RecordError::Length { found, expected } => write!(
                f,
                "it has {found} fields, but the first line has {expected}"
            ),
        }
    }
}

/// Reads records one at a time into a buffer it reuses; the current record's fields are
/// borrowed from it until the next call.
pub(super) struct Records<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes of the input before `buf[0]`.
    base: u64,
    /// 1-based line of `buf[start]`.
    line: u64,
    /// Whether a record is held (false before the first and at the end).
    held: bool,
    /// The current record's text, checked as UTF-8 once (a line with its commas, or
    /// `csv_core`'s unquoted fields end to end): field `i` is `fields[i].0..fields[i].1`.
    text: String,
    fields: Vec<(usize, usize)>,
    /// The first field that is not UTF-8 (then `text` is empty).
    not_utf8: Option<usize>,
    /// The current record's first line and byte offset.
    at_line: u64,
    at_byte: u64,
    /// Fields the first record had: every record must have as many.
    expected: Option<usize>,
    /// `next` gives the current record again (once) instead of reading on.
    again: bool,
    /// The input holds no `\n` before this offset (from a [`LineEnd::Long`] search): its
    /// records go to `csv_core` without searching again.
    no_newline_to: u64,
    parser: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl<R> std::fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("line", &self.line)
            .field("byte", &(self.base + self.start as u64))
            .finish_non_exhaustive()
    }
}

impl<R: Read> Records<R> {
    pub fn new(inner: R) -> Self {
        Records {
            inner,
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            eof: false,
            base: 0,
            line: 1,
            held: false,
            text: String::new(),
            fields: Vec::new(),
            not_utf8: None,
            at_line: 1,
            at_byte: 0,
            expected: None,
            again: false,
            no_newline_to: 0,
            parser: csv_core::Reader::new(),
            out: vec![0; 1024],
            ends: vec![0; 64],
        }
    }

    /// Bytes of the input consumed so far (up to the end of the current record).
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The current record's first line (1-based) and its byte offset in the input.
    pub fn record_at(&self) -> (u64, u64) {
        (self.at_line, self.at_byte)
    }

    /// Makes the next [`Records::next`] give the current record again.
    pub fn hold(&mut self) {
        self.again = self.held;
    }

    /// Reads the next record; false at the end of the input.
    pub fn next(&mut self) -> Result<bool, RecordError> {
        if std::mem::take(&mut self.again) {
            return Ok(true);
        }
        self.held = false;
        loop {
            if self.base == 0 && self.start == 0 {
                self.fill_to(3)?;
                if self.buf[..self.end].starts_with(b"\xef\xbb\xbf") {
                    self.start = 3;
                }
            }
            // `None`: the record goes to `csv_core` (no `\n` near, or a quote or `\r` in it).
            let nl = if self.position() < self.no_newline_to {
                None
            } else {
                match self.line_end()? {
                    LineEnd::At(nl) => Some(nl),
                    LineEnd::Long => None,
                    LineEnd::End => return Ok(false),
                }
            };
            if let Some(nl) = nl {
                let line = &self.buf[self.start..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    self.skip_to(nl);
                    continue;
                }
                if self.split(line.len(), nl) {
                    return self.check().map(|()| true);
                }
            }
            if !self.parse()? {
                return Ok(false);
            }
            return self.check().map(|()| true);
        }
    }

    /// The current record's fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Field `i` of the current record.
    pub fn get(&self, i: usize) -> Option<&str> {
        let (a, b) = *self.fields.get(i)?;
        self.text.get(a..b).filter(|_| self.held)
    }

    /// The current record as a `csv` crate record (for the header's reading).
    pub fn to_string_record(&self) -> csv::StringRecord {
        (0..self.len()).map(|i| self.get(i).unwrap_or("")).collect()
    }

    /// Where the line at `start` ends.
    fn line_end(&mut self) -> Result<LineEnd, RecordError> {
        let mut searched = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                return Ok(LineEnd::At(searched + i));
            }
            if self.eof {
                return Ok(if self.start < self.end {
                    LineEnd::At(self.end)
                } else {
                    LineEnd::End
                });
            }
            if self.end - self.start > MAX_LINE {
                self.no_newline_to = self.base + self.end as u64;
                return Ok(LineEnd::Long);
            }
            searched = self.end - self.start;
            self.fill_to(self.end - self.start + 1)?;
            searched += self.start;
        }
    }

    /// Reads until at least `want` unread bytes are buffered or the input ends; unread
    /// bytes move to the front of the buffer.
    fn fill_to(&mut self, want: usize) -> Result<(), RecordError> {
        while self.end - self.start < want && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_SIZE / 2 {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecordError::Io(e)),
            }
        }
        Ok(())
    }

    /// Past the line ending at `nl` (its `\n`, or the end of the input).
    fn skip_to(&mut self, nl: usize) {
        self.start = (nl + 1).min(self.end);
        self.line += 1;
    }

    /// The line at `start`, `len` bytes before its end at `nl`, cut at its commas; false
    /// (and nothing read) when it holds a quote or a `\r`: `csv_core` reads it then. One
    /// pass finds the commas and what stops the split.
    fn split(&mut self, len: usize, nl: usize) -> bool {
        self.begin_record();
        self.fields.clear();
        let line = &self.buf[self.start..self.start + len];
        let mut from = 0;
        let mut at = 0;
        // Eight bytes at a time: a mask of the commas, and of the quotes and `\r`s.
        while at + 8 <= len {
            let word = u64::from_le_bytes(line[at..at + 8].try_into().unwrap_or([0; 8]));
            if bytes_equal(word, b'"') | bytes_equal(word, b'\r') != 0 {
                return false;
            }
            let mut commas = bytes_equal(word, b',');
            while commas != 0 {
                let i = at + commas.trailing_zeros() as usize / 8;
                self.fields.push((from, i));
                from = i + 1;
                commas &= commas - 1;
            }
            at += 8;
        }
        for (i, &b) in line.iter().enumerate().skip(at) {
            match b {
                b',' => {
                    self.fields.push((from, i));
                    from = i + 1;
                }
                b'"' | b'\r' => return false,
                _ => {}
            }
        }
        self.fields.push((from, len));
        // A comma cannot sit inside a UTF-8 sequence: the line is UTF-8 when every field is.
        self.text.clear();
        self.not_utf8 = match std::str::from_utf8(line) {
            Ok(line) => {
                self.text.push_str(line);
                None
            }
            Err(_) => {
                let bad = |&(a, b): &(usize, usize)| std::str::from_utf8(&line[a..b]).is_err();
                Some(self.fields.iter().position(bad).unwrap_or(0))
            }
        };
        self.held = true;
        self.skip_to(nl);
        true
    }

    /// Notes where the record about to be read starts.
    fn begin_record(&mut self) {
        self.at_line = self.line;
        self.at_byte = self.base + self.start as u64;
    }

    /// The record at `start` through `csv_core`: quoted fields, lone `\r` terminators.
    /// False when the input ends first (only line terminators were left).
    fn parse(&mut self) -> Result<bool, RecordError> {
        self.begin_record();
        self.parser.reset();
        let (mut nout, mut nend) = (0, 0);
        loop {
            let input = &self.buf[self.start..self.end];
            let (result, nin, o, e) =
                self.parser
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            self.line += memchr::memchr_iter(b'\n', &input[..nin]).count() as u64;
            self.start += nin;
            nout += o;
            nend += e;
            match result {
                ReadRecordResult::InputEmpty => {
                    if self.eof {
                        continue;
                    }
                    self.fill_to(self.end - self.start + 1)?;
                }
                ReadRecordResult::OutputFull => self.out.resize(self.out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => break,
                ReadRecordResult::End if nend == 0 => return Ok(false),
                ReadRecordResult::End => break,
            }
        }
        self.fields.clear();
        let mut from = 0;
        for &to in &self.ends[..nend] {
            self.fields.push((from, to));
            from = to;
        }
        self.text.clear();
        self.not_utf8 = None;
        for (i, &(a, b)) in self.fields.iter().enumerate() {
            match std::str::from_utf8(&self.out[a..b]) {
                Ok(field) => self.text.push_str(field),
                Err(_) => {
                    self.not_utf8 = Some(i);
                    self.text.clear();
                    break;
                }
            }
        }
        self.held = true;
        Ok(true)
    }

    /// Checks the current record: as many fields as the first record, and UTF-8.
    fn check(&mut self) -> Result<(), RecordError> {
        let expected = *self.expected.get_or_insert(self.fields.len());
        if self.fields.len() != expected {
            return Err(RecordError::Length {
                found: self.fields.len(),
                expected,
            });
        }
        match self.not_utf8 {
            Some(field) => Err(RecordError::Utf8 { field }),
            None => Ok(()),
        }
    }
}

/// The high bit of each byte of `word` that equals `b` (exactly: no false hits).
#[inline]
fn bytes_equal(word: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from(b) * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The records as this reader reads them, or the first error's kind.
    fn ours(input: &[u8], read_size: usize) -> Result<Vec<Vec<String>>, String> {
        let mut records = Records::new(Chunked(input, read_size));
        let mut all = Vec::new();
        loop {
            match records.next() {
                Ok(true) => all.push(
                    (0..records.len())
                        .map(|i| records.get(i).unwrap().to_owned())
                        .collect(),
                ),
                Ok(false) => return Ok(all),
                Err(RecordError::Utf8 { .. }) => return Err("utf8".into()),
                Err(RecordError::Length { .. }) => return Err("length".into()),
                Err(RecordError::Io(e)) => return Err(e.to_string()),
            }
        }
    }

    /// The records as the `csv` crate reads them (no header, not flexible).
    fn theirs(input: &[u8]) -> Result<Vec<Vec<String>>, String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(input);
        let mut all = Vec::new();
        for r in reader.records() {
            match r {
                Ok(r) => all.push(r.iter().map(str::to_owned).collect()),
                Err(e) => {
                    return Err(match e.kind() {
                        csv::ErrorKind::Utf8 { .. } => "utf8".into(),
                        csv::ErrorKind::UnequalLengths { .. } => "length".into(),
                        other => format!("{other:?}"),
                    })
                }
            }
        }
        Ok(all)
    }

    /// A reader that gives at most `n` bytes a call, to cut records across reads.
    struct Chunked<'a>(&'a [u8], usize);

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_what_the_csv_crate_reads() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n\n",
            b"a,b\n1,2\n",
            b"a,b\r\n1,2\r\n\r\n3,4",
            b"a,b\r1,2\r3,4\n",
            b"\xef\xbb\xbftime,price\n1,2\n",
            b"a,b\n\"1,5\",\"x\"\"y\"\n",
            b"a,b\n\"multi\nline\",2\n3,4\n",
            b"a,b\n1,2,3\n",
            b"a,b\n1\n",
            b"a,b\n\xff,2\n",
            b" a , b \n 1 , 2 \n",
            b"a\n\n\nb\n",
            b"a,\"b\nc\"\r\n\"\",\"\"",
            // Fields that are UTF-8 only end to end.
            b"\xc3,\xa9\r\r",
        ];
        for case in cases {
            for read_size in [1, 2, 3, 7, 64, READ_SIZE] {
                assert_eq!(
                    ours(case, read_size),
                    theirs(case),
                    "{:?} read {read_size} bytes at a time",
                    String::from_utf8_lossy(case)
                );
            }
        }
    }

    #[test]
    fn bytes_equal_marks_exactly_the_equal_bytes() {
        let word = u64::from_le_bytes(*b",a,\x00\x80\xac,,");
        assert_eq!(bytes_equal(word, b','), 0x8080_0000_0080_0080);
        assert_eq!(bytes_equal(word, 0), 0x0000_0000_8000_0000);
        assert_eq!(bytes_equal(word, 0x80), 0x0000_0080_0000_0000);
        assert_eq!(bytes_equal(word, b'"'), 0);
    }

    #[test]
    fn positions_name_the_line_and_byte_a_record_starts_at() {
        let input = b"a,b\n\n\"x\ny\",2\r\n3,4\n";
        let mut records = Records::new(&input[..]);
        let mut at = Vec::new();
        while records.next().unwrap() {
            at.push(records.record_at());
        }
        // The line a record starts on, past blank lines (the csv crate names the end of
        // the record before: line 2, byte 4 for the second).
        assert_eq!(at, vec![(1, 0), (3, 5), (5, 14)]);
        assert_eq!(records.position(), input.len() as u64);
    }

    #[test]
    fn lines_ended_by_cr_alone_stream_through_csv_core() {
        let mut input = b"time,price\r".to_vec();
        for i in 0..200_000 {
            input.extend_from_slice(format!("{i},{}.5\r", i % 97).as_bytes());
        }
        let mut records = Records::new(Chunked(&input, 4_096));
        let mut n = 0;
        while records.next().unwrap() {
            n += 1;
        }
        assert_eq!(n, 200_001);
        // Read as it came, not held whole (the input is 2.6 MB).
        assert!(records.buf.len() <= 2 * READ_SIZE, "{}", records.buf.len());
        assert_eq!(ours(&input, 4_096), theirs(&input));
        // A long first line without a `\n` at all, then ordinary lines.
        let mut long = vec![b'x'; 3 * MAX_LINE];
        long.extend_from_slice(b"\r\n");
        long.extend_from_slice(&[b'y'; 10]);
        long.push(b'\n');
        assert_eq!(ours(&long, 1_000), theirs(&long));
    }

    proptest! {
        #[test]
        fn any_input_reads_as_the_csv_crate_reads_it(
            bytes in proptest::collection::vec(
                prop_oneof![
                    4 => Just(b'a'), 2 => Just(b','), 1 => Just(b'"'), 1 => Just(b'\n'),
                    1 => Just(b'\r'), 1 => Just(b' '), 1 => Just(0xc3u8), 1 => Just(0xa9u8),
                ],
                0..80,
            ),
            read_size in 1usize..20,
        ) {
            prop_assert_eq!(ours(&bytes, read_size), theirs(&bytes));
        }
    }
}
