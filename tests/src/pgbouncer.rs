//! PgBouncer in transaction mode in front of a test's PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::{
    as_service_user, ensure_service_user, is_root, run, temp_dir, wait_for, SERVICE_USER,
};
use crate::net::free_port;

/// PgBouncer in transaction mode in front of a PostgreSQL server, owned by one test.
#[derive(Debug)]
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: std::process::Child,
}

impl PgBouncer {
    /// Debian's `pgbouncer` on a free loopback port, pooling every database of the server
    /// on `pg_port` as user `christmas`, `pool_mode = transaction`.
    pub fn start(pg_port: u16) -> Result<PgBouncer> {
        ensure_service_user()?;
        let dir = temp_dir("christmas-pgbouncer")?;
        let port = free_port();
        let conf = dir.join("pgbouncer.ini");
        std::fs::write(
            &conf,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port} user=christmas\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = transaction\nmax_client_conn = 1000\n\
                 default_pool_size = 20\nserver_reset_query = DISCARD ALL\n\
                 server_reset_query_always = 1\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )?;
        if is_root() {
            run(Command::new("chown").arg(SERVICE_USER).arg(&conf))?;
        }
        let child = as_service_user(Path::new("/usr/sbin/pgbouncer"))
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pgbouncer (apt-get install pgbouncer)")?;
        let bouncer = PgBouncer { dir, port, child };
        wait_for("PgBouncer", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(bouncer)
    }

    /// The URL of `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://christmas@127.0.0.1:{}/{database}", self.port)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
