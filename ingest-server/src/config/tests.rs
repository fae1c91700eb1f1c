use super::*;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn base() -> DaemonConfig {
    DaemonConfig {
        database_url: Some("postgres://u:hunter2@h/db".into()),
        ..DaemonConfig::default()
    }
}

fn read(text: &str, env: &[(&str, &str)]) -> Result<(DaemonConfig, Vec<String>)> {
    sources::read(Some(text), |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn files_parse_and_unknown_keys_are_refused() {
    let (c, warnings) = read(
        &format!(
            r#"
            shards = 4
            [http]
            addr = "0.0.0.0:80"
            [spool]
            dir = "/var/lib/christmas/spool"
            fsync_ms = 5
            [[api_keys]]
            name = "feed"
            sha256 = "{HASH}"
            scopes = ["ingest"]
            "#
        ),
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!((c.shards, c.http.addr.as_str()), (4, "0.0.0.0:80"));
    assert_eq!(c.api_keys[0].scopes, vec![Scope::Ingest]);
    let spool = c.spool.core().unwrap().unwrap();
    assert_eq!(spool.dir, Path::new("/var/lib/christmas/spool"));
    assert_eq!(
        spool.fsync,
        christmas_core::spool::FsyncPolicy::Every(Duration::from_millis(5))
    );
    for bad in [
        "shard = 4",
        "[spool]\ndirectory = \"/x\"",
        "[pool]\ndir = \"/x\"",
    ] {
        let e = format!("{:#}", read(bad, &[]).unwrap_err());
        assert!(e.contains("unknown field"), "{bad}: {e}");
    }
}

#[test]
fn flat_keys_read_as_their_table_key_with_a_warning_naming_it() {
    let flat = r#"
        http_addr = "0.0.0.0:80"
        max_connections = 4096
        spool_dir = "/var/lib/christmas/spool"
        spool_fsync_ms = 5
        order_connections = 4
        order_rate_per_second = 100.5
        order_events_url = "amqp://u:p@mq:5672/%2f"
        fanout_format = "rkyv"
        web_dir = "/srv/web"
    "#;
    let nested = r#"
        [http]
        addr = "0.0.0.0:80"
        max_connections = 4096
        [spool]
        dir = "/var/lib/christmas/spool"
        fsync_ms = 5
        [orders]
        connections = 4
        rate_per_second = 100.5
        events_url = "amqp://u:p@mq:5672/%2f"
        [fanout]
        format = "rkyv"
        [web]
        dir = "/srv/web"
    "#;
    let (old, warnings) = read(flat, &[]).unwrap();
    let (new, none) = read(nested, &[]).unwrap();
    assert_eq!(old, new);
    assert_ne!(new, DaemonConfig::default());
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(warnings.len(), 9, "{warnings:?}");
    for (flat, key) in [
        ("spool_dir", "`spool.dir`"),
        ("order_connections", "`orders.connections`"),
        ("max_connections", "`http.max_connections`"),
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(flat) && w.contains(key)),
            "{key}: {warnings:?}"
        );
    }
    // Both spellings at once is a mistake, not a merge.
    let e = read("spool_dir = \"/a\"\n[spool]\ndir = \"/b\"", &[]).unwrap_err();
    assert!(e.to_string().starts_with("spool_dir: both"), "{e}");
    // The old environment name, too.
    let url = "amqp://u:p@mq:5672/%2f";
    let (old, warnings) = read("", &[("ORDER_EVENTS_URL", url)]).unwrap();
    let (new, none) = read("", &[("CHRISTMAS_ORDERS_EVENTS_URL", url)]).unwrap();
    assert_eq!(old, new);
    assert_eq!(
        new.orders.events_url.as_ref().map(Secret::expose),
        Some(url)
    );
    assert!(none.is_empty());
    assert!(
        warnings[0].contains("CHRISTMAS_ORDERS_EVENTS_URL"),
        "{warnings:?}"
    );
}

#[test]
fn every_flat_key_names_a_key_of_its_table() {
    let defaults = serde_json::to_value(DaemonConfig::default()).unwrap();
    for (old, table, key) in sources::FLAT_KEYS {
        let default = &defaults[table][key];
        assert!(!default.is_object(), "{table}.{key}");
        let value = match default {
            serde_json::Value::Null => "\"x\"".to_string(),
            v => v.to_string(),
        };
        let (_, warnings) = read(&format!("{old} = {value}"), &[])
            .unwrap_or_else(|e| panic!("{old} → {table}.{key}: {e:#}"));
        assert_eq!(warnings.len(), 1);
    }
}

#[test]
fn every_key_has_an_environment_variable() {
    let (c, warnings) = read(
        "[web]\ndir = \"/srv/web\"",
        &[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("REDIS_URL", "redis://h:1/"),
            ("CHRISTMAS_SHARDS", "3"),
            ("CHRISTMAS_AUTH_READS", "true"),
            ("CHRISTMAS_HTTP_ADDR", "0.0.0.0:80"),
            ("CHRISTMAS_TCP_ADDR", ""),
            ("CHRISTMAS_ORDERS_CONNECTIONS", "7"),
            ("CHRISTMAS_ORDERS_RATE_PER_SECOND", "100"),
            ("CHRISTMAS_SPOOL_DIR", "/spool"),
            ("CHRISTMAS_SPOOL_MAX_BYTES", "2147483648"),
            ("CHRISTMAS_FANOUT_KEY_TTL_MS", "0"),
            ("CHRISTMAS_STREAM_CLIENT_BUFFER", "16"),
            ("CHRISTMAS_WEB_DIR", ""),
            ("CHRISTMAS_API_KEYS", &format!("feed:{HASH}:ingest+read")),
        ],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.redis_url.as_ref().map(Secret::expose),
        Some("redis://h:1/")
    );
    assert_eq!((c.shards, c.auth_reads), (3, true));
    assert_eq!(
        (c.http.addr.as_str(), c.tcp.addr.as_str()),
        ("0.0.0.0:80", "")
    );
    assert_eq!((c.orders.connections, c.orders.rate_per_second), (7, 100.0));
    assert_eq!(c.spool.dir.as_deref(), Some("/spool"));
    assert_eq!(c.spool.max_bytes, 2 << 30);
    assert_eq!(c.fanout.key_ttl_ms, 0);
    assert_eq!(c.stream.client_buffer, 16);
    assert_eq!(c.web.dir, None, "an empty value unsets");
    assert_eq!(c.api_keys[0].scopes, vec![Scope::Ingest, Scope::Read]);
    c.validate().unwrap();
    let e = read("", &[("CHRISTMAS_ORDERS_CONNECTIONS", "many")]).unwrap_err();
    assert!(
        e.to_string().starts_with("CHRISTMAS_ORDERS_CONNECTIONS:"),
        "{e}"
    );
}

#[test]
fn an_events_tls_ca_needs_an_amqps_events_url() {
    let (c, _) = read(
        "database_url = \"postgres://u@h/db\"",
        &[
            ("CHRISTMAS_ORDERS_EVENTS_URL", "amqps://u:p@broker:5671/%2f"),
            ("CHRISTMAS_ORDERS_EVENTS_TLS_CA", "/etc/christmas/ca.pem"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.orders.events_tls_ca.as_deref(),
        Some("/etc/christmas/ca.pem")
    );
    c.validate().unwrap();
    for url in [
        None,
        Some("amqp://u:p@broker:5672/%2f"),
        Some("redis://h:1/"),
    ] {
        let mut bad = c.clone();
        bad.orders.events_url = url.map(Into::into);
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with("orders.events_tls_ca:"), "{e}");
    }
}

#[test]
fn errors_name_the_field() {
    base().validate().unwrap();
    let mut bad: Vec<(DaemonConfig, &str)> = Vec::new();
    let mut with = |f: &dyn Fn(&mut DaemonConfig), field| {
        let mut c = base();
        f(&mut c);
        bad.push((c, field));
    };
    with(&|c| c.database_url = None, "database_url");
    with(&|c| c.http.addr = "nowhere".into(), "http.addr");
    with(&|c| c.shards = 0, "shards");
    with(&|c| c.linger_ms = 10_001, "linger_ms");
    with(&|c| c.redis_url = Some("http://x".into()), "redis_url");
    with(&|c| c.fanout.format = "xml".into(), "fanout.format");
    with(&|c| c.orders.connections = 0, "orders.connections");
    with(&|c| c.tcp.auth_timeout_ms = 0, "tcp.auth_timeout_ms");
    with(
        &|c| {
            c.spool.dir = Some("/x".into());
            c.spool.max_bytes = 1;
        },
        "spool.max_bytes",
    );
    for (c, f) in bad {
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.starts_with(f), "{f}: {e}");
    }
}

#[test]
fn debug_shows_no_password() {
    let mut c = base();
    c.redis_url = Some("redis://:hunter2@h:1/".into());
    c.orders.events_url = Some("amqp://u:hunter2@mq/%2f".into());
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
}

#[test]
fn every_key_is_set_by_its_environment_variable() {
    // Each key's variable, given a value other than the default, changes that key alone.
    let defaults = serde_json::to_value(DaemonConfig::default()).unwrap();
    let mut keys = Vec::new();
    for (key, default) in defaults.as_object().unwrap() {
        match default.as_object() {
            Some(fields) => keys.extend(fields.iter().map(|(f, d)| (key.as_str(), f, d))),
            None => keys.push(("", key, default)),
        }
    }
    assert!(keys.len() > 40, "{}", keys.len());
    for (table, key, default) in keys {
        let value = match default {
            serde_json::Value::Bool(b) => (!b).to_string(),
            serde_json::Value::Number(n) if n.is_f64() => "0.5".into(),
            serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).to_string(),
            // A URL without a password: a Secret serializes it unchanged.
            _ => "x://h:1".into(),
        };
        let name = sources::env_name(table, key);
        let (c, warnings) = read("", &[(name.as_str(), value.as_str())]).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let got = serde_json::to_value(&c).unwrap();
        let got = if table.is_empty() {
            &got[key]
        } else {
            &got[table][key]
        };
        assert_ne!(got, default, "{name}");
        if default.is_number() {
            assert_eq!(got.as_f64(), value.parse().ok(), "{name}");
        } else {
            assert_eq!(got.as_str().unwrap_or(&got.to_string()), value, "{name}");
        }
    }
}
