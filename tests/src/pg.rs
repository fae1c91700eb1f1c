//! PostgreSQL for tests: a private [`PgServer`] (and its streaming replica), the server
//! shared by a test process, a fresh database per test, and a connected client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::{
    append, as_service_user, ensure_service_user, is_root, run, temp_dir, unique_name, wait_for,
    SERVICE_USER,
};
use crate::net::free_port;

fn pg_bindir() -> Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (run scripts/services.sh install)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, d)| d)
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// A private PostgreSQL server owned by one test.
#[derive(Debug)]
pub struct PgServer {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Where it listens (127.0.0.1 unless started in a network namespace).
    host: String,
    /// The network namespace it runs in, if any.
    netns: Option<String>,
}

impl PgServer {
    /// initdb into a fresh directory and start on a free loopback port: trust auth,
    /// superuser and database `christmas`, `fsync=off` (the OS never crashes in a test, so a
    /// killed server still recovers everything it acknowledged).
    pub fn start() -> Result<PgServer> {
        PgServer::start_at(None, "127.0.0.1", false)
    }

    /// [`PgServer::start`] with `ssl = on` and TCP connections over TLS only (`hostssl`),
    /// listening on 127.0.0.1 and 127.0.0.2; its certificate (for 127.0.0.1 and
    /// localhost, not 127.0.0.2) signed by a private CA ([`PgServer::tls_ca`]) that
    /// `scripts/services.sh tls-certs` made for this server.
    pub fn start_tls() -> Result<PgServer> {
        PgServer::start_at(None, "127.0.0.1", true)
    }

    /// The CA file that signed a [`PgServer::start_tls`] server's certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// [`PgServer::start`] inside network namespace `netns`, listening on `host` (an
    /// address of that namespace), accepting trust connections from anywhere.
    pub fn start_in_netns(netns: &str, host: &str) -> Result<PgServer> {
        PgServer::start_at(Some(netns), host, false)
    }

    fn start_at(netns: Option<&str>, host: &str, tls: bool) -> Result<PgServer> {
        ensure_service_user()?;
        let bindir = pg_bindir()?;
        let dir = temp_dir("christmas-pg")?;
        let data = dir.join("data");
        run(as_service_user(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "christmas",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]))?;
        let port = free_port();
        append(
            &data.join("postgresql.conf"),
            &format!(
                "listen_addresses = '{host}'\nport = {port}\nunix_socket_directories = '{}'\n\
                 fsync = off\nsynchronous_commit = on\nfull_page_writes = off\nmax_connections = 100\n\
                 shared_buffers = 128MB",
                dir.display()
            ),
        )?;
        if netns.is_some() {
            append(&data.join("pg_hba.conf"), "host all all 0.0.0.0/0 trust")?;
        }
        if tls {
            crate::tls::make_certs(&dir.join("tls"))?;
            for f in ["server.pem", "server.key"] {
                install_private(&dir.join("tls").join(f), &data.join(f))?;
            }
            append(
                &data.join("postgresql.conf"),
                "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
                 listen_addresses = '127.0.0.1,127.0.0.2'",
            )?;
            let hba = std::fs::read_to_string(data.join("pg_hba.conf"))?;
            std::fs::write(
                data.join("pg_hba.conf"),
                format!(
                    "{}\nhostssl all all 127.0.0.0/8 trust\n",
                    hba.replace("\nhost ", "\nhostssl ")
                ),
            )?;
        }
        let server = PgServer {
            bindir,
            dir,
            port,
            host: host.to_string(),
            netns: netns.map(str::to_string),
        };
        server.pg_ctl_start()?;
        run(Command::new(server.bindir.join("psql"))
            .args(["-h", host, "-p", &port.to_string()])
            .args(["-U", "christmas", "-d", "postgres", "-qc"])
            .arg("CREATE DATABASE christmas"))?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `pg_ctl` as the service user, in the server's namespace.
    fn pg_ctl(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                if is_root() {
                    c.args(["runuser", "-u", SERVICE_USER, "--"]);
                }
                c.arg(self.bindir.join("pg_ctl"));
                c
            }
            None => as_service_user(&self.bindir.join("pg_ctl")),
        }
    }

    fn pg_ctl_start(&self) -> Result<()> {
        run(self
            .pg_ctl()
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]))
        .with_context(|| {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            format!("starting PostgreSQL; log:\n{log}")
        })?;
        let isready = self.bindir.join("pg_isready");
        let port = self.port.to_string();
        wait_for("PostgreSQL", Duration::from_secs(30), || {
            Command::new(&isready)
                .args(["-h", &self.host, "-p", &port, "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        run(self
            .pg_ctl()
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"]))
    }

    /// `postgres://christmas@HOST:PORT/christmas`
    pub fn url(&self) -> String {
        format!("postgres://christmas@{}:{}/christmas", self.host, self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A clean shutdown (`pg_ctl -m fast`).
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// A crash: `pg_ctl -m immediate` (no checkpoint; recovery runs at the next start).
    pub fn kill(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts again on the same data and port.
    pub fn start_again(&mut self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// `stop` then `start_again`.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }
}

/// Copies `from` to `to`, readable only by the service user (the server refuses a key
/// others may read).
fn install_private(from: &Path, to: &Path) -> Result<()> {
    let mut c = Command::new("install");
    c.args(["-m", "600"]);
    if is_root() {
        c.args(["-o", SERVICE_USER]);
    }
    run(c.arg(from).arg(to))
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PgServer {
    /// A streaming replica of `self` (`pg_basebackup -R`) on its own port, started and
    /// caught up.
    pub fn start_replica(&self) -> Result<PgServer> {
        let dir = temp_dir("christmas-replica")?;
        let data = dir.join("data");
        run(as_service_user(&self.bindir.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "christmas",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]))?;
        let port = free_port();
        append(
            &data.join("postgresql.conf"),
            &format!(
                "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on",
                dir.display()
            ),
        )?;
        let replica = PgServer {
            bindir: self.bindir.clone(),
            dir,
            port,
            host: "127.0.0.1".into(),
            netns: None,
        };
        replica.pg_ctl_start()?;
        Ok(replica)
    }
}

/// The PostgreSQL server shared by the tests of this process: `CHRISTMAS_TEST_DATABASE_URL`
/// when set, else a [`PgServer`] started on first use and kept for the process.
pub fn shared_pg_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("CHRISTMAS_TEST_DATABASE_URL").unwrap_or_else(|_| {
            let server = PgServer::start().expect("start the shared PostgreSQL");
            let url = server.url();
            // Kept for the whole process; statics are never dropped, so it is stopped by a
            // watcher when the process ends.
            crate::host::reap_at_exit(&server.data().join("postmaster.pid"), &server.dir);
            std::mem::forget(server);
            url
        })
    })
    .clone()
}

/// Connects to `url` and drives the connection in the background. (The error leaves the
/// URL out: the bench's may hold a password.)
/// The URL's `sslmode` and `sslrootcert` are honoured as the engine honours them.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    christmas_core::pg::connect_url(url, "christmas-harness")
        .await
        .context("connecting to PostgreSQL")
}

/// Creates an empty database on the server of `base_url` and returns its URL.
///
/// Test databases are kept after the test (for a look at a failure) and named after the
/// process that made them, so the first call in a process drops those of earlier test
/// processes that have exited: a shared server (`scripts/test.sh`) does not fill its disk
/// over many runs, and a running test's database is never touched.
pub async fn fresh_database(base_url: &str) -> Result<String> {
    let client = connect(base_url)
        .await
        .with_context(|| format!("connecting to {base_url}"))?;
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(|| drop_stale_databases(&client)).await;
    let name = unique_name("christmas_t");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("CREATE DATABASE")?;
    drop(client);
    database_url(base_url, &name)
}

/// The URL of database `name` on the server of `base` (its query string kept).
pub fn database_url(base: &str, name: &str) -> Result<String> {
    let (prefix, query) = match base.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (base, String::new()),
    };
    let (server, _) = prefix
        .rsplit_once('/')
        .context("database URL has no path")?;
    Ok(format!("{server}/{name}{query}"))
}

/// Drops the `christmas_t_<pid>_…` databases whose process is gone. Best effort: one still
/// in use (a server a dead test left running) is skipped.
async fn drop_stale_databases(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'christmas\\_t\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        if stale_owner(&name).is_some() {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

/// The process id in a test database's name when that process no longer runs.
fn stale_owner(name: &str) -> Option<u32> {
    let pid: u32 = name
        .strip_prefix("christmas_t_")?
        .split('_')
        .next()?
        .parse()
        .ok()?;
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    (!alive).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_databases_of_exited_test_processes_are_stale() {
        // Above any pid_max (at most 2^22), so no process has it.
        assert_eq!(stale_owner("christmas_t_4194305_12_0"), Some(4_194_305));
        let mine = unique_name("christmas_t");
        assert_eq!(stale_owner(&mine), None, "{mine}");
        assert_eq!(stale_owner("christmas_bench_soak"), None);
        assert_eq!(stale_owner("christmas_t_x_1_2"), None);
    }
}
