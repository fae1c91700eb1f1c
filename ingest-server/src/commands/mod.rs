//! The binary's commands other than `serve`: each is a library function the binary calls
//! with its parsed flags, so tests and the bench run the same code.

pub mod demo;
pub mod feed;
pub mod migrate;
pub mod replay;
