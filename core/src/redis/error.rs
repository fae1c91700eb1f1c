//! Converting the driver's errors: each becomes an [`Error::Redis`] whose
//! [`RedisErrorKind`] is read once, here, from the error's code or kind, so callers match
//! a variant and never the error's text.

use ::redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::error::{Error, RedisErrorKind};

/// The driver's error `e`, met while doing `context`; a failed TLS handshake is an
/// [`Error::Tls`].
pub(crate) fn redis_error(context: &'static str, e: RedisError) -> Error {
    if let Some(r) = crate::tls::rustls_cause(&e) {
        return crate::tls::tls_error(context, "Redis", r);
    }
    Error::Redis {
        context,
        kind: classify(&e),
        reason: e.to_string(),
    }
}

/// A topology problem the engine found itself (the driver reported none).
pub(crate) fn topology_error(context: &'static str, reason: impl Into<String>) -> Error {
    Error::Redis {
        context,
        kind: RedisErrorKind::Topology,
        reason: reason.into(),
    }
}

/// What kind of failure `e` is.
pub(crate) fn classify(e: &RedisError) -> RedisErrorKind {
    match e.code() {
        Some("BUSYGROUP") => return RedisErrorKind::BusyGroup,
        Some("NOGROUP") => return RedisErrorKind::NoGroup,
        _ => {}
    }
    match e.kind() {
        // A generic `ERR` reply: only its detail tells a missing key from the rest.
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if e.detail().is_some_and(|d| d.starts_with("no such key")) =>
        {
            RedisErrorKind::NoSuchKey
        }
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => RedisErrorKind::Connection,
        ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel
        | ErrorKind::EmptySentinelList => RedisErrorKind::Topology,
        ErrorKind::Server(_) | ErrorKind::Extension => RedisErrorKind::Server,
        _ => RedisErrorKind::Client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error the driver makes of the server's reply `line` (RESP, without `\r\n`).
    fn reply_error(line: &str) -> RedisError {
        ::redis::parse_redis_value(format!("{line}\r\n").as_bytes())
            .and_then(|v| v.extract_error())
            .expect_err("an error reply")
    }

    #[test]
    fn server_replies_are_classified_by_their_code() {
        let cases = [
            (
                "-BUSYGROUP Consumer Group name already exists",
                RedisErrorKind::BusyGroup,
            ),
            (
                "-NOGROUP No such key 'orders:events' or consumer group 'order-workers' in \
                 XREADGROUP with GROUP option",
                RedisErrorKind::NoGroup,
            ),
            ("-ERR no such key", RedisErrorKind::NoSuchKey),
            (
                "-OOM command not allowed when used memory > 'maxmemory'.",
                RedisErrorKind::Server,
            ),
            (
                "-READONLY You can't write against a read only replica.",
                RedisErrorKind::Server,
            ),
            ("-ERR unknown command 'XFOO'", RedisErrorKind::Server),
        ];
        for (line, kind) in cases {
            assert_eq!(classify(&reply_error(line)), kind, "{line}");
        }
    }

    #[test]
    fn the_kind_travels_in_the_error_and_the_text_stays_the_drivers() {
        let e = reply_error("-BUSYGROUP Consumer Group name already exists");
        let text = e.to_string();
        match redis_error("creating the group", e) {
            Error::Redis {
                context,
                kind: RedisErrorKind::BusyGroup,
                reason,
            } => assert_eq!((context, reason), ("creating the group", text)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_side_failures_are_connection_or_client() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&io), RedisErrorKind::Connection);
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(classify(&timeout), RedisErrorKind::Connection);
        let bad_url = ::redis::Client::open("http://not-redis").expect_err("not a Redis URL");
        assert_eq!(classify(&bad_url), RedisErrorKind::Client);
        let wrong_type = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert_eq!(classify(&wrong_type), RedisErrorKind::Client);
    }
}
