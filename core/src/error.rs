//! The library's error type.

use std::fmt;

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `christmas-core`.
///
/// Errors carry the context needed to act on them (which shard, which field, which batch);
/// nothing in the library panics on bad input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The shard's ring is full and the caller asked not to wait.
    #[error("shard {shard} ring is full ({capacity} records); {accepted} records of the call were accepted")]
    Full {
        /// Shard whose ring was full.
        shard: usize,
        /// The ring's capacity.
        capacity: usize,
        /// How many records of a batch call went in before this one (0 for single pushes).
        accepted: usize,
    },
    /// The ingestor is shutting down or has shut down; the record was not accepted.
    #[error("ingestor is closed")]
    Closed,
    /// A configuration value is out of range.
    #[error("invalid config `{field}`: {reason}")]
    Config {
        /// Name of the offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A record field is invalid (e.g. a symbol that is empty, too long or contains NUL).
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// Name of the offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary COPY row could not be decoded.
    #[error("malformed COPY row: {reason}")]
    MalformedRow {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// PostgreSQL returned an error, or the connection failed. Displays the server's
    /// message too (`postgres: reading bars: db error: value out of range: overflow`): the
    /// driver's own text for a server error is only `db error`.
    #[error("postgres: {context}: {source}{}", server_message(source))]
    Postgres {
        /// What the engine was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The records a receipt waited for were dropped before they could be committed
    /// (drop-oldest backpressure evicted them, or the pipeline stopped).
    #[error("records were dropped before commit on shard {shard}")]
    Dropped {
        /// Shard that dropped them.
        shard: usize,
    },
    /// The database's schema cannot be migrated as asked (a different variant is installed,
    /// an applied migration was edited, TimescaleDB was asked for and is missing, …).
    #[error("schema: {reason}")]
    Schema {
        /// What is wrong, and what to do about it.
        reason: String,
    },
    /// Redis returned an error, or the connection failed.
    #[error("redis: {context}: {reason}")]
    Redis {
        /// What the engine was doing.
        context: &'static str,
        /// What kind of failure it was: match on this, not on `reason`.
        kind: RedisErrorKind,
        /// The driver's error.
        reason: String,
    },
    /// TLS to PostgreSQL or Redis failed: the server's certificate was not trusted, named
    /// another host, or the handshake broke off.
    #[error("tls to {store}: {context}: {reason}")]
    Tls {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// What the engine was doing.
        context: &'static str,
        /// What kind of failure it was: match on this, not on `reason`.
        kind: TlsErrorKind,
        /// rustls's error.
        reason: String,
    },
    /// RabbitMQ (AMQP 0-9-1) refused an operation, or the connection failed.
    #[error("amqp: {context}: {reason}")]
    Amqp {
        /// What the engine was doing.
        context: &'static str,
        /// What kind of failure it was: match on this, not on `reason`.
        kind: AmqpErrorKind,
        /// The driver's or the broker's error.
        reason: String,
    },
    /// The spool's files could not be read or written (I/O error, in use by another
    /// process, a batch too large), or it is needed and not configured.
    #[error("spool: {reason}")]
    Spool {
        /// What went wrong, with the path.
        reason: String,
    },
    /// A file read for replay cannot be read on: truncated, corrupt, of a kind replay does
    /// not read, or a record refused; [`SourceError::kind`](crate::sources::SourceError)
    /// says which and where.
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    /// A pipeline task stopped unexpectedly.
    #[error("pipeline task failed: {0}")]
    Task(String),
}

/// What kind of failure an [`Error::Tls`] is, read once from rustls's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The certificate does not chain to a trusted root (wrong or missing CA file).
    UntrustedCertificate,
    /// The certificate is trusted but names another host (`verify-full`).
    HostMismatch,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// Anything else in the handshake (no common protocol, a broken connection, …).
    Handshake,
}

/// What kind of failure an [`Error::Redis`] is, classified once from the driver's error
/// (its error code or kind) where the error is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisErrorKind {
    /// `BUSYGROUP`: the consumer group to create exists already.
    BusyGroup,
    /// `NOGROUP`: the consumer group (or its stream) does not exist, e.g. Redis lost it.
    NoGroup,
    /// `ERR no such key`: the key a command inspects does not exist (`XINFO GROUPS` of a
    /// stream not made yet).
    NoSuchKey,
    /// Redis could not be reached, or the connection broke or timed out.
    Connection,
    /// The servers a URL names are not what it says: a sentinel does not know the master,
    /// or the server it names is not a master (a failover in progress).
    Topology,
    /// Any other error reply from the server (out of memory, a read-only replica, …).
    Server,
    /// Anything else on the client's side: a bad URL or config, a reply of an unexpected
    /// type.
    Client,
}

/// What kind of failure an [`Error::Amqp`] is, classified once from the broker's reply code
/// (or the driver's error kind) where the error is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AmqpErrorKind {
    /// `404 NOT_FOUND`, or a publish the broker returned as unroutable: the queue is gone.
    NotFound,
    /// `406 PRECONDITION_FAILED`: a queue exists with other arguments (e.g. classic, not
    /// quorum).
    PreconditionFailed,
    /// The broker answered a publish with a negative confirm: it did not take it.
    Refused,
    /// The broker could not be reached, or the connection or channel broke.
    Connection,
    /// The TLS handshake of an `amqps://` connection failed: the broker's certificate does
    /// not chain to a trusted CA (the system's roots, or the CA file given), or does not
    /// name the URL's host.
    Tls,
    /// Any other error from the broker or the client (a bad URL, an unsupported scheme).
    Other,
}

/// Why a record field's value is refused: the typed reason of a [`FieldError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// An empty text (a symbol).
    #[error("must not be empty")]
    Empty,
    /// A text longer than the field holds.
    #[error("{len} bytes is longer than {max}")]
    TooLong {
        /// The text's length in bytes.
        len: usize,
        /// The longest the field holds.
        max: usize,
    },
    /// A text holding a NUL byte (PostgreSQL `text` cannot store one).
    #[error("must not contain NUL")]
    ContainsNul,
    /// Bytes that are not UTF-8.
    #[error("is not UTF-8")]
    NotUtf8,
    /// NaN or an infinity.
    #[error("must be a finite number")]
    NotFinite,
    /// A quantity below zero.
    #[error("must be ≥ 0")]
    Negative,
    /// A quantity above [`crate::Trade::MAX_VOLUME`] (1e18): no real trade is that large,
    /// and bars add volumes as `float8`, whose sum PostgreSQL refuses once it overflows.
    #[error("must be ≤ 1e18")]
    TooLarge,
    /// A one-byte code outside the field's vocabulary.
    #[error("unknown code {:?}", char::from(*.0))]
    UnknownCode(u8),
    /// A side written as text outside `B`/`buy`/`bid`, `S`/`sell`/`A`/`ask`, `N`/`none`.
    #[error("one of B, S, N (or buy, sell, none; A or ask for sell, bid for buy)")]
    UnknownSideText,
    /// A name holding a character outside printable ASCII (a producer id).
    #[error("must be printable ASCII without spaces")]
    NotPrintable,
    /// A sequence number that must be at least 1.
    #[error("must be at least 1")]
    NotPositive,
}

/// A record field that failed validation: which field, and why.
///
/// Carries no text, so building one costs nothing; the message is written by `Display`
/// (`price: must be a finite number`). Converts into [`Error::InvalidField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's name, as in the record type and on the wire (`price`, `bid_size`).
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: Invalid,
}

impl FieldError {
    /// `field` is refused for `reason`.
    pub const fn new(field: &'static str, reason: Invalid) -> Self {
        FieldError { field, reason }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::InvalidField {
            field: e.field,
            reason: e.reason.to_string(),
        }
    }
}

/// `: <message>` of a server error, else nothing. Not its detail, which can quote row
/// values (a duplicate key's) to a client that reads the error.
fn server_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(String::new, |db| format!(": {}", db.message()))
}

impl Error {
    pub(crate) fn pg(context: &'static str, source: tokio_postgres::Error) -> Self {
        Error::Postgres { context, source }
    }

    pub(crate) fn config(field: &'static str, reason: impl fmt::Display) -> Self {
        Error::Config {
            field,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn schema(reason: impl fmt::Display) -> Self {
        Error::Schema {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn field(field: &'static str, reason: impl fmt::Display) -> Self {
        Error::InvalidField {
            field,
            reason: reason.to_string(),
        }
    }
}
