//! [`ReplayFile`]: any file replay reads, opened by its content, its ticks numbered.

use std::io::Read;
use std::path::Path;
use std::thread::JoinHandle;

use crate::error::Result;
use crate::record::Tick;
use crate::sources::csv::{CsvDialect, CsvOptions, CsvReader};
use crate::sources::error::{SourceError, SourceErrorKind};
use crate::sources::hash::ContentHash;
use crate::sources::tick_source::TickSource;
use crate::sources::timefmt::{NaiveZone, TimeUnit};
use crate::symbol::Symbol;

/// How to read a file, where the file does not say (the CSV options; a DBN file says all).
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The symbol of a CSV without a symbol column (else the pair in the file's name).
    pub symbol: Option<String>,
    /// The CSV dialect, when detection is not sure.
    pub dialect: Option<CsvDialect>,
    /// The unit of a CSV's integer times.
    pub time_unit: Option<TimeUnit>,
    /// Where a CSV's times written without an offset were taken: a fixed offset or a tz
    /// database zone.
    pub tz: Option<NaiveZone>,
}

/// What a file is, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFormat {
    /// Databento DBN.
    Dbn {
        /// The schema, as Databento names it (`mbp-1`).
        schema: String,
        /// The DBN version of the file.
        version: u8,
        /// Whether it is zstd-compressed.
        compressed: bool,
    },
    /// CSV of one dialect.
    Csv(CsvDialect),
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileFormat::Dbn {
                schema,
                version,
                compressed,
            } => {
                let zst = if *compressed { ", zstd" } else { "" };
                write!(f, "DBN v{version} {schema}{zst}")
            }
            FileFormat::Csv(d) => write!(f, "CSV ({})", d.as_str()),
        }
    }
}

/// The file's content hash: computed on a thread of its own while the file is read.
#[derive(Debug)]
enum HashState {
    Running(JoinHandle<std::result::Result<ContentHash, SourceError>>),
    Done(ContentHash),
}

/// A file's [`ContentHash`], maybe still being computed on its own thread
/// ([`ReplayFile::take_content_hash`]).
#[derive(Debug)]
pub struct PendingHash {
    state: HashState,
}

impl PendingHash {
    /// The hash; waits for the hashing thread when it is still running.
    pub fn wait(self) -> Result<ContentHash> {
        match self.state {
            HashState::Done(h) => Ok(h),
            HashState::Running(thread) => Ok(thread.join().map_err(|_| {
                SourceError::new(SourceErrorKind::Io, "The file's hashing thread panicked.")
            })??),
        }
    }
}

/// A file opened for replay: its ticks in file order, each with its position (0-based
/// index among the file's ticks), and the file's [`ContentHash`]. The same file yields the
/// same ticks at the same positions on every run, so (hash, position) names a tick.
pub struct ReplayFile {
    source: Box<dyn TickSource>,
    format: FileFormat,
    notes: Vec<String>,
    hash: Option<HashState>,
    position: u64,
}

impl std::fmt::Debug for ReplayFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFile")
            .field("format", &self.format)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// zstd's frame magic, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl ReplayFile {
    /// Opens `path`: DBN (plain or zstd) when its bytes say so, whatever its name; CSV
    /// otherwise. Starts hashing it on a thread of its own.
    pub fn open(path: &Path, options: &ReadOptions) -> Result<Self> {
        let mut magic = [0u8; 4];
        let opened = std::fs::File::open(path).and_then(|mut f| {
            let n = f.read(&mut magic)?;
            Ok(n)
        });
        let n = opened.map_err(|e| {
            SourceError::new(
                SourceErrorKind::Io,
                format!("Could not open {}: {e}.", path.display()),
            )
        })?;
        let is_dbn = n == 4 && (magic == ZSTD_MAGIC || magic[..3] == *b"DBN");
        let mut file = if is_dbn {
            Self::open_dbn(path)?
        } else {
            let symbol = options.symbol.as_deref().map(Symbol::new).transpose()?;
            let reader = CsvReader::open(
                path,
                CsvOptions {
                    symbol,
                    dialect: options.dialect,
                    time_unit: options.time_unit,
                    tz: options.tz.clone(),
                },
            )?;
            let format = FileFormat::Csv(reader.dialect());
            let notes = reader.notes().to_vec();
            ReplayFile::from_source(Box::new(reader), format, notes)
        };
        let owned = path.to_owned();
        file.hash = Some(HashState::Running(std::thread::spawn(move || {
            ContentHash::of_file(&owned)
        })));
        Ok(file)
    }

    #[cfg(feature = "dbn")]
    fn open_dbn(path: &Path) -> Result<Self> {
        let reader = crate::sources::dbn::DbnTickReader::open(path)?;
        let records = reader.records();
        let format = FileFormat::Dbn {
            schema: records.schema().to_string(),
            version: records.version(),
            compressed: records.is_compressed(),
        };
        Ok(ReplayFile::from_source(
            Box::new(reader),
            format,
            Vec::new(),
        ))
    }

    #[cfg(not(feature = "dbn"))]
    fn open_dbn(_: &Path) -> Result<Self> {
        Err(SourceError::new(
            SourceErrorKind::Unsupported,
            "The file is Databento DBN, and this build reads no DBN (feature `dbn`).",
        )
        .into())
    }

    /// A file read by `source`, of `format`; `notes` are what its reader guessed. Its hash
    /// is unknown until [`ReplayFile::set_content_hash`].
    pub fn from_source(
        source: Box<dyn TickSource>,
        format: FileFormat,
        notes: Vec<String>,
    ) -> Self {
        ReplayFile {
            source,
            format,
            notes,
            hash: None,
            position: 0,
        }
    }

    /// Sets the content hash of a file made by [`ReplayFile::from_source`].
    pub fn set_content_hash(&mut self, hash: ContentHash) {
        self.hash = Some(HashState::Done(hash));
    }

    /// The SHA-256 of the file's bytes as stored ([`ContentHash`]); waits for the hashing
    /// thread the first time.
    pub fn content_hash(&mut self) -> Result<ContentHash> {
        let Some(pending) = self.take_content_hash() else {
            return Err(SourceError::new(
                SourceErrorKind::Io,
                "The file was not opened from a path, and no hash was set.",
            )
            .into());
        };
        let done = pending.wait()?;
        self.hash = Some(HashState::Done(done));
        Ok(done)
    }

    /// The content hash as a [`PendingHash`] to wait for elsewhere, so the file can go to
    /// a reader thread while it is still being hashed; `None` once taken, or when the file
    /// was not opened from a path and no hash was set.
    pub fn take_content_hash(&mut self) -> Option<PendingHash> {
        self.hash.take().map(|state| PendingHash { state })
    }

    /// The kinds of tick the file can hold, by its format: a replay starts only their
    /// pipelines.
    pub fn kinds(&self) -> crate::ingress::Kinds {
        self.source.kinds()
    }

    /// What the file is.
    pub fn format(&self) -> &FileFormat {
        &self.format
    }

    /// What the reader guessed and the user should be told (a time unit, a time zone).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The position of the next tick: how many ticks were read so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next tick and its position (0-based, rising by one); `None` at the end.
    pub fn next_tick(&mut self) -> Result<Option<(u64, Tick)>> {
        let tick = self.source.next_tick()?;
        Ok(tick.map(|t| {
            let at = self.position;
            self.position += 1;
            (at, t)
        }))
    }

    /// Reads and drops the ticks before `position` (resuming after a committed prefix);
    /// returns how many were dropped (fewer when the file ends first).
    pub fn skip_to(&mut self, position: u64) -> Result<u64> {
        let from = self.position;
        while self.position < position {
            if self.next_tick()?.is_none() {
                break;
            }
        }
        Ok(self.position - from)
    }

    /// Fraction of the file read so far, when the reader knows it.
    pub fn progress(&self) -> Option<f64> {
        self.source.progress()
    }
}
