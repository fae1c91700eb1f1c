//! Which flavour of the schema a database has: its own module, so the migration list and
//! the migrator both read it without importing each other.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Which flavour of the schema a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Native declarative partitioning (range on time, hash on symbol), bars via `date_bin`.
    Postgres,
    /// Hypertables, compression, retention policies, a continuous aggregate.
    TimescaleDb,
    /// Citus: time partitions distributed by symbol across worker nodes, old partitions
    /// columnar.
    Citus,
}

impl Variant {
    /// The name stored in `christmas_settings.variant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Postgres => "postgres",
            Variant::TimescaleDb => "timescaledb",
            Variant::Citus => "citus",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Variant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "postgres" | "postgresql" => Ok(Variant::Postgres),
            "timescaledb" => Ok(Variant::TimescaleDb),
            "citus" => Ok(Variant::Citus),
            _ => Err(Error::config(
                "variant",
                format!("{s:?} is not one of postgres, timescaledb, citus"),
            )),
        }
    }
}
