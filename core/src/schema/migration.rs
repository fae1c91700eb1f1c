//! The versioned SQL files of `sql/`, in the order the migrator applies them.

use crate::router::fnv1a;
use crate::schema::variant::Variant;

/// One versioned schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Applied in ascending order; recorded in `christmas_migrations`.
    pub version: u32,
    /// A short name, recorded beside the version.
    pub name: &'static str,
    /// The SQL text (a file of `sql/`).
    pub sql: &'static str,
}

/// First line of a file that must run outside a transaction, one statement at a time
/// (TimescaleDB continuous aggregates).
const NO_TRANSACTION: &str = "-- christmas: no-transaction";

impl Migration {
    /// False for files marked `-- christmas: no-transaction`.
    pub fn transactional(&self) -> bool {
        !self.sql.starts_with(NO_TRANSACTION)
    }

    /// FNV-1a of the text, in hex: recorded when applied, compared on every later run.
    pub fn checksum(&self) -> String {
        format!("{:016x}", fnv1a(self.sql.as_bytes()))
    }
}

/// Created before anything else, in both variants: `christmas_migrations`,
/// `christmas_settings`.
pub const BOOTSTRAP_SQL: &str = include_str!("../../../sql/0000_bootstrap.sql");

/// Privileges of the least-privilege role; `{{role}}` stands for its quoted name.
pub const GRANTS_SQL: &str = include_str!("../../../sql/grants.sql");

const CORE_TABLES: Migration = Migration {
    version: 1,
    name: "core_tables",
    sql: include_str!("../../../sql/0001_core_tables.sql"),
};

const ORDER_WORKFLOW: Migration = Migration {
    version: 4,
    name: "order_workflow",
    sql: include_str!("../../../sql/0004_order_workflow.sql"),
};

const QUEUE_TABLES: Migration = Migration {
    version: 5,
    name: "queue_tables",
    sql: include_str!("../../../sql/0005_queue_tables.sql"),
};

const PRODUCERS: Migration = Migration {
    version: 7,
    name: "producers",
    sql: include_str!("../../../sql/0007_producers.sql"),
};

const SERVER_CLOCK: Migration = Migration {
    version: 8,
    name: "server_clock",
    sql: include_str!("../../../sql/0008_server_clock.sql"),
};

const COMPRESS_NOTHING: Migration = Migration {
    version: 11,
    name: "compress_partitions",
    sql: include_str!("../../../sql/0011_compress_partitions.sql"),
};

const PRODUCER_CLAIMS_IN_PLACE: Migration = Migration {
    version: 12,
    name: "producer_claims_in_place",
    sql: include_str!("../../../sql/0012_producer_claims_in_place.sql"),
};

const POSTGRES_BARS: Migration = Migration {
    version: 3,
    name: "bars",
    sql: include_str!("../../../sql/postgres/0003_bars.sql"),
};

const POSTGRES_AUTOVACUUM: Migration = Migration {
    version: 6,
    name: "partition_autovacuum",
    sql: include_str!("../../../sql/postgres/0006_partition_autovacuum.sql"),
};

const POSTGRES_SETTINGS: Migration = Migration {
    version: 9,
    name: "settings_in_place",
    sql: include_str!("../../../sql/postgres/0009_settings_in_place.sql"),
};

const POSTGRES_ASCENDING: Migration = Migration {
    version: 10,
    name: "ascending_symbol_time",
    sql: include_str!("../../../sql/postgres/0010_ascending_symbol_time.sql"),
};

const POSTGRES: &[Migration] = &[
    CORE_TABLES,
    Migration {
        version: 2,
        name: "market_data",
        sql: include_str!("../../../sql/postgres/0002_market_data.sql"),
    },
    POSTGRES_BARS,
    ORDER_WORKFLOW,
    QUEUE_TABLES,
    POSTGRES_AUTOVACUUM,
    PRODUCERS,
    SERVER_CLOCK,
    POSTGRES_SETTINGS,
    POSTGRES_ASCENDING,
    COMPRESS_NOTHING,
    PRODUCER_CLAIMS_IN_PLACE,
];

const TIMESCALEDB: &[Migration] = &[
    CORE_TABLES,
    Migration {
        version: 2,
        name: "market_data",
        sql: include_str!("../../../sql/timescaledb/0002_market_data.sql"),
    },
    Migration {
        version: 3,
        name: "bars",
        sql: include_str!("../../../sql/timescaledb/0003_market_data_1m.sql"),
    },
    ORDER_WORKFLOW,
    QUEUE_TABLES,
    Migration {
        version: 6,
        name: "partition_autovacuum",
        sql: include_str!("../../../sql/timescaledb/0006_partition_autovacuum.sql"),
    },
    PRODUCERS,
    SERVER_CLOCK,
    Migration {
        version: 9,
        name: "settings_in_place",
        sql: include_str!("../../../sql/timescaledb/0009_settings_in_place.sql"),
    },
    Migration {
        version: 10,
        name: "ascending_symbol_time",
        sql: include_str!("../../../sql/timescaledb/0010_ascending_symbol_time.sql"),
    },
    COMPRESS_NOTHING,
    PRODUCER_CLAIMS_IN_PLACE,
];

/// Citus: its own market_data (distributed, one level of partitions) and columnar
/// partitions; the plain variant's bars, autovacuum hand-over and retention preview, which
/// read the same partition registry.
const CITUS: &[Migration] = &[
    CORE_TABLES,
    Migration {
        version: 2,
        name: "market_data",
        // The plain variant's tables and functions, then their distribution and the
        // partition function Citus needs, in one transaction.
        sql: concat!(
            include_str!("../../../sql/postgres/0002_market_data.sql"),
            "\n",
            include_str!("../../../sql/citus/0002_market_data.sql")
        ),
    },
    POSTGRES_BARS,
    ORDER_WORKFLOW,
    QUEUE_TABLES,
    POSTGRES_AUTOVACUUM,
    PRODUCERS,
    SERVER_CLOCK,
    POSTGRES_SETTINGS,
    POSTGRES_ASCENDING,
    Migration {
        version: 11,
        name: "compress_partitions",
        sql: include_str!("../../../sql/citus/0011_columnar_partitions.sql"),
    },
    PRODUCER_CLAIMS_IN_PLACE,
];

/// The migrations of `variant`, oldest first.
pub fn migrations(variant: Variant) -> &'static [Migration] {
    match variant {
        Variant::Postgres => POSTGRES,
        Variant::TimescaleDb => TIMESCALEDB,
        Variant::Citus => CITUS,
    }
}

/// Splits SQL text into statements at top-level semicolons, skipping comments and keeping
/// quoted strings, quoted identifiers and dollar-quoted bodies whole. Empty statements are
/// dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
            }
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        // A doubled quote is an escaped quote.
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => match dollar_tag(&sql[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = sql[body..]
                        .find(tag)
                        .map_or(bytes.len(), |n| body + n + tag.len());
                }
                None => i += 1,
            },
            b';' => {
                push_statement(&mut out, &sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_statement(&mut out, &sql[start..]);
    out
}

fn push_statement<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    if !strip_comments(s).trim().is_empty() {
        out.push(s.trim());
    }
}

/// `$tag$` or `$$` at the start of `s`.
fn dollar_tag(s: &str) -> Option<&str> {
    let rest = &s[1..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    (rest.as_bytes()[end] == b'$' && !rest[..end].starts_with(|c: char| c.is_ascii_digit()))
        .then(|| &s[..end + 2])
}

fn strip_comments(s: &str) -> String {
    s.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_and_all_variants_share_names() {
        for v in [Variant::Postgres, Variant::TimescaleDb, Variant::Citus] {
            let ms = migrations(v);
            for (i, m) in ms.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{v:?}");
            }
        }
        let names = |v| migrations(v).iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(Variant::Postgres), names(Variant::TimescaleDb));
        assert_eq!(names(Variant::Postgres), names(Variant::Citus));
    }

    #[test]
    fn only_the_continuous_aggregate_runs_outside_a_transaction() {
        let outside: Vec<_> = [Variant::Postgres, Variant::TimescaleDb, Variant::Citus]
            .iter()
            .flat_map(|v| migrations(*v))
            .filter(|m| !m.transactional())
            .map(|m| m.sql.lines().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(outside.len(), 1);
        assert!(outside[0].contains("TimescaleDB"), "{outside:?}");
    }

    #[test]
    fn split_keeps_bodies_strings_and_comments_whole() {
        let sql = "-- a; comment\nSELECT 'x;y', \"a;b\";\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n\
                   DO $body$ BEGIN PERFORM 1; END $body$;\n/* c; */ SELECT 'it''s;';\n-- end";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[0].ends_with("\"a;b\""));
        assert!(parts[1].ends_with("SELECT 1; $$"));
        assert!(parts[2].starts_with("DO $body$"));
        assert!(parts[3].ends_with("'it''s;'"));
    }

    #[test]
    fn the_timescaledb_aggregate_file_splits_into_its_statements() {
        let m = &migrations(Variant::TimescaleDb)[2];
        let parts = split_statements(m.sql);
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[0].contains("CREATE MATERIALIZED VIEW"));
        assert!(parts[3].contains("CREATE OR REPLACE FUNCTION christmas_bars"));
    }

    #[test]
    fn checksum_changes_with_the_text() {
        let a = Migration {
            version: 1,
            name: "a",
            sql: "SELECT 1",
        };
        let b = Migration {
            sql: "SELECT 2",
            ..a
        };
        assert_ne!(a.checksum(), b.checksum());
        assert_eq!(a.checksum().len(), 16);
    }
}
