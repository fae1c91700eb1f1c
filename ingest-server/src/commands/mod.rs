//! The binary's commands other than `serve`: each is a library function the binary calls
//! with its parsed flags, so tests and the bench run the same code.

pub mod demo;
pub mod feed;
pub mod migrate;
pub mod replay;

/// A URL flag that may come from the environment: none when unset or empty (`REDIS_URL=`),
/// as `serve`'s configuration reads it.
pub(crate) fn set_url(url: &Option<String>) -> Option<&str> {
    url.as_deref().filter(|u| !u.trim().is_empty())
}
