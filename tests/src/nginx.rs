//! nginx with the project's own configuration in front of daemons on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::{run, unique_name, wait_for};
use crate::net::free_port;

/// nginx in front of daemons on loopback, with the project's own configuration
/// (`deploy/nginx/nginx.conf`), owned by one test.
#[derive(Debug)]
pub struct Nginx {
    dir: PathBuf,
    port: u16,
    child: std::process::Child,
}

impl Nginx {
    /// Runs `nginx -g 'daemon off;'` with `conf_dir/nginx.conf`, its `listen.conf` on a free
    /// loopback port and its `servers.conf` listing `backends` (host:port).
    pub fn start(conf_dir: &Path, backends: &[String]) -> Result<Nginx> {
        let dir = std::env::temp_dir().join(unique_name("christmas-nginx"));
        std::fs::create_dir_all(&dir)?;
        // Worker processes drop root: let them use the temp directories under the prefix.
        run(Command::new("chmod").arg("777").arg(&dir))?;
        std::fs::copy(conf_dir.join("nginx.conf"), dir.join("nginx.conf"))
            .context("deploy/nginx/nginx.conf")?;
        let port = free_port();
        std::fs::write(
            dir.join("listen.conf"),
            format!("listen 127.0.0.1:{port};\n"),
        )?;
        let servers: String = backends
            .iter()
            .map(|b| format!("server {b} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        std::fs::write(dir.join("servers.conf"), servers)?;
        let mut prefix = dir.display().to_string();
        prefix.push('/');
        let child = Command::new("/usr/sbin/nginx")
            .args(["-p", &prefix, "-e", "stderr", "-g", "daemon off;"])
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("error.log"))?)
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?;
        let nginx = Nginx { dir, port, child };
        wait_for("nginx", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .with_context(|| nginx.error_log())?;
        Ok(nginx)
    }

    /// Where nginx listens.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
