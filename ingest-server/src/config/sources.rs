//! Where [`DaemonConfig`] comes from: a TOML file, then the environment, both merged as a
//! TOML tree before one typed read, so a key is spelled and checked the same way in both.
//!
//! Environment names: `CHRISTMAS_<TABLE>_<KEY>` for a key in a table (`[spool] dir` is
//! `CHRISTMAS_SPOOL_DIR`, `[orders] events_url` is `CHRISTMAS_ORDERS_EVENTS_URL`),
//! `CHRISTMAS_<KEY>` for a top-level key (`CHRISTMAS_SHARDS`), except the three URLs,
//! which keep their usual names: `DATABASE_URL`, `READ_DATABASE_URL`, `REDIS_URL`.
//! `CHRISTMAS_API_KEYS` is `name:sha256hex:scope+scope,…`. An empty value unsets a key
//! that may be unset (a URL, `spool.dir`, `web.dir`, …).
//!
//! Old flat keys (`spool_dir`, `order_connections`, `http_max_connections_per_address`, …)
//! are read for one release as their key in a table, with a warning naming it; so are the
//! old environment names `ORDER_EVENTS_URL` and `ORDER_EVENTS_TLS_CA`.

use anyhow::{bail, Context, Result};
use toml::{Table, Value};

use super::DaemonConfig;
use crate::auth::ApiKey;

/// Old flat key → (table, key). Accepted until the next release.
pub(crate) const FLAT_KEYS: &[(&str, &str, &str)] = &[
    ("http_addr", "http", "addr"),
    ("max_body_bytes", "http", "max_body_bytes"),
    ("request_timeout_ms", "http", "request_timeout_ms"),
    ("max_connections", "http", "max_connections"),
    (
        "http_max_connections_per_address",
        "http",
        "max_connections_per_address",
    ),
    ("http_header_timeout_ms", "http", "header_timeout_ms"),
    ("http_body_timeout_ms", "http", "body_timeout_ms"),
    ("http_write_timeout_ms", "http", "write_timeout_ms"),
    ("tcp_addr", "tcp", "addr"),
    ("max_frame_bytes", "tcp", "max_frame_bytes"),
    ("tcp_max_connections", "tcp", "max_connections"),
    (
        "tcp_max_connections_per_address",
        "tcp",
        "max_connections_per_address",
    ),
    ("tcp_auth_timeout_ms", "tcp", "auth_timeout_ms"),
    ("tcp_auth_frame_bytes", "tcp", "auth_frame_bytes"),
    ("tcp_frame_timeout_ms", "tcp", "frame_timeout_ms"),
    ("ops_addr", "ops", "addr"),
    ("ops_max_connections", "ops", "max_connections"),
    ("order_connections", "orders", "connections"),
    ("order_max_group", "orders", "max_group"),
    ("order_rate_per_second", "orders", "rate_per_second"),
    ("order_rate_burst", "orders", "rate_burst"),
    ("order_events_url", "orders", "events_url"),
    ("order_events_tls_ca", "orders", "events_tls_ca"),
    ("order_events_stream", "orders", "events_stream"),
    (
        "order_events_recheck_after_ms",
        "orders",
        "events_recheck_after_ms",
    ),
    ("spool_dir", "spool", "dir"),
    ("spool_fsync_ms", "spool", "fsync_ms"),
    ("spool_max_bytes", "spool", "max_bytes"),
    ("spool_memory_bytes", "spool", "memory_bytes"),
    ("fanout_format", "fanout", "format"),
    ("fanout_stream_max_len", "fanout", "stream_max_len"),
    ("fanout_stream_max_age_ms", "fanout", "stream_max_age_ms"),
    ("fanout_key_ttl_ms", "fanout", "key_ttl_ms"),
    ("stream_client_buffer", "stream", "client_buffer"),
    (
        "stream_client_buffer_bytes",
        "stream",
        "client_buffer_bytes",
    ),
    ("web_dir", "web", "dir"),
    ("web_asset_base", "web", "asset_base"),
];

/// Old environment name → (table, key). Accepted until the next release.
const OLD_ENV: &[(&str, &str, &str)] = &[
    ("ORDER_EVENTS_URL", "orders", "events_url"),
    ("ORDER_EVENTS_TLS_CA", "orders", "events_tls_ca"),
];

/// Top-level keys read from their usual environment names, without the prefix.
const PLAIN_ENV: &[&str] = &["database_url", "read_database_url", "redis_url"];

/// The environment name of `key` in `table` (`""`: top level).
pub fn env_name(table: &str, key: &str) -> String {
    match table {
        "" if PLAIN_ENV.contains(&key) => key.to_uppercase(),
        "" => format!("CHRISTMAS_{}", key.to_uppercase()),
        t => format!("CHRISTMAS_{}_{}", t.to_uppercase(), key.to_uppercase()),
    }
}

/// Builds the config from a file's text (if any) and the environment read through `var`;
/// also returns a warning for each old key or name used.
pub fn read(
    text: Option<&str>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(DaemonConfig, Vec<String>)> {
    let mut tree: Table = match text {
        Some(t) => t.parse()?,
        None => Table::new(),
    };
    let mut warnings = move_flat_keys(&mut tree)?;
    warnings.extend(apply_env(&mut tree, &var)?);
    let mut config = DaemonConfig::deserialize_tree(tree)?;
    if let Some(v) = var("CHRISTMAS_API_KEYS") {
        config.api_keys = v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(ApiKey::parse)
            .collect::<Result<_>>()
            .context("CHRISTMAS_API_KEYS")?;
    }
    Ok((config, warnings))
}

/// Moves each old flat key in `tree` to its table.
fn move_flat_keys(tree: &mut Table) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (old, table, key) in FLAT_KEYS {
        let Some(value) = tree.remove(*old) else {
            continue;
        };
        let section = section(tree, table)?;
        if section.contains_key(*key) {
            bail!("{old}: both it and {table}.{key} are set; keep {table}.{key}");
        }
        section.insert(key.to_string(), value);
        warnings.push(format!(
            "config key `{old}` is deprecated and read as `{table}.{key}` (`{key}` in `[{table}]`); the flat key goes in the next release"
        ));
    }
    Ok(warnings)
}

fn section<'a>(tree: &'a mut Table, table: &str) -> Result<&'a mut Table> {
    match tree
        .entry(table.to_string())
        .or_insert_with(|| Value::Table(Table::new()))
    {
        Value::Table(t) => Ok(t),
        _ => bail!("{table}: must be a table ([{table}])"),
    }
}

/// Writes every environment variable that names a key into `tree`. The default config
/// gives each key and its kind, so a new field needs no code here.
fn apply_env(tree: &mut Table, var: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (old, table, key) in OLD_ENV {
        if let Some(v) = var(old) {
            let new = env_name(table, key);
            warnings.push(format!(
                "environment variable {old} is deprecated: set {new} (`{table}.{key}`); {old} goes in the next release"
            ));
            if var(&new).is_none() {
                set(section(tree, table)?, key, None, &v, old)?;
            }
        }
    }
    let defaults = serde_json::to_value(DaemonConfig::default())?;
    let serde_json::Value::Object(top) = defaults else {
        unreachable!("a struct serializes to an object")
    };
    for (key, default) in &top {
        match default {
            serde_json::Value::Object(fields) => {
                for (field, default) in fields {
                    let name = env_name(key, field);
                    if let Some(v) = var(&name) {
                        set(section(tree, key)?, field, Some(default), &v, &name)?;
                    }
                }
            }
            _ => {
                let name = env_name("", key);
                if let Some(v) = var(&name) {
                    set(tree, key, Some(default), &v, &name)?;
                }
            }
        }
    }
    Ok(warnings)
}

/// Sets `key` to the text `v` read as the kind of `default` (`None` or null: a string
/// that may be unset; empty unsets it).
fn set(
    t: &mut Table,
    key: &str,
    default: Option<&serde_json::Value>,
    v: &str,
    name: &str,
) -> Result<()> {
    use serde_json::Value as J;
    let value = match default {
        None | Some(J::Null) if v.is_empty() => {
            t.remove(key);
            return Ok(());
        }
        None | Some(J::Null) | Some(J::String(_)) => Value::String(v.to_string()),
        Some(J::Bool(_)) => Value::Boolean(
            v.parse()
                .with_context(|| format!("{name}: must be true or false"))?,
        ),
        Some(J::Number(n)) if n.is_f64() => Value::Float(
            v.parse()
                .with_context(|| format!("{name}: must be a number"))?,
        ),
        Some(J::Number(_)) => Value::Integer(
            v.parse()
                .with_context(|| format!("{name}: must be a whole number"))?,
        ),
        Some(_) => bail!("{name}: cannot be set from the environment"),
    };
    t.insert(key.to_string(), value);
    Ok(())
}
