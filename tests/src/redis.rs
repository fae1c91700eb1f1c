//! Redis for tests: a private [`RedisServer`] (or Sentinel), a [`RedisCluster`], and the
//! server shared by a test process.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::host::{run, unique_name, wait_for};
use crate::net::free_port;

/// A private Redis server owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    /// Extra `redis-server` arguments, kept for restarts.
    args: Vec<String>,
    /// A sentinel runs from a config file it rewrites.
    sentinel: bool,
    /// TLS only: the port is the TLS port, with the certificates in this directory.
    tls: Option<PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, without persistence.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra arguments (`--replicaof`, `--cluster-enabled`, …).
    pub fn start_with(args: &[&str]) -> Result<RedisServer> {
        RedisServer::start_on(free_port(), args)
    }

    fn start_on(port: u16, args: &[&str]) -> Result<RedisServer> {
        let dir = std::env::temp_dir().join(unique_name("christmas-redis"));
        std::fs::create_dir_all(&dir)?;
        let server = RedisServer {
            dir,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            sentinel: false,
            tls: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// A server that speaks TLS only (`--port 0 --tls-port PORT`), its certificate (for
    /// 127.0.0.1 and localhost) signed by a private CA ([`RedisServer::tls_ca`]); clients
    /// need no certificate of their own.
    pub fn start_tls() -> Result<RedisServer> {
        let dir = std::env::temp_dir().join(unique_name("christmas-redis-tls"));
        std::fs::create_dir_all(&dir)?;
        let certs = dir.join("tls");
        crate::tls::make_certs(&certs)?;
        RedisServer::start_tls_in(dir, free_port(), certs, &[])
    }

    /// A TLS-only server in `dir` on `port`, with the certificates in `certs` and `extra`
    /// arguments.
    fn start_tls_in(
        dir: PathBuf,
        port: u16,
        certs: PathBuf,
        extra: &[&str],
    ) -> Result<RedisServer> {
        let mut server = RedisServer {
            args: vec![
                "--tls-cert-file".into(),
                certs.join("server.pem").display().to_string(),
                "--tls-key-file".into(),
                certs.join("server.key").display().to_string(),
                "--tls-ca-cert-file".into(),
                certs.join("ca.pem").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
                // A second address the certificate does not name.
                "--bind".into(),
                "127.0.0.1".into(),
                "127.0.0.2".into(),
            ],
            dir,
            port,
            sentinel: false,
            tls: Some(certs),
        };
        server.args.extend(extra.iter().map(|a| a.to_string()));
        server.spawn()?;
        Ok(server)
    }

    /// The CA file that signed a TLS server's certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self.tls
            .as_ref()
            .map(|c| c.join("ca.pem"))
            .unwrap_or_default()
    }

    /// A Sentinel (`redis-server --sentinel`) monitoring the master on `master_port` as
    /// `name`, quorum 1, declaring it down after 1 s.
    pub fn start_sentinel(name: &str, master_port: u16) -> Result<RedisServer> {
        RedisServer::start_sentinel_with(name, master_port, None)
    }

    /// [`RedisServer::start_sentinel`] speaking TLS only, to clients and to the master
    /// (`tls-replication`), with the certificates of the TLS server `master`.
    pub fn start_sentinel_tls(name: &str, master: &RedisServer) -> Result<RedisServer> {
        RedisServer::start_sentinel_with(name, master.port, master.tls.clone())
    }

    fn start_sentinel_with(
        name: &str,
        master_port: u16,
        tls: Option<PathBuf>,
    ) -> Result<RedisServer> {
        let dir = std::env::temp_dir().join(unique_name("christmas-sentinel"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let listen = match &tls {
            None => format!("port {port}\n"),
            Some(c) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {c}/server.pem\n\
                 tls-key-file {c}/server.key\ntls-ca-cert-file {c}/ca.pem\n\
                 tls-auth-clients no\ntls-replication yes\n",
                c = c.display()
            ),
        };
        std::fs::write(
            dir.join("sentinel.conf"),
            format!(
                "{listen}bind 127.0.0.1\ndaemonize yes\ndir {dir}\n\
                 pidfile {dir}/redis.pid\nlogfile {dir}/redis.log\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display()
            ),
        )?;
        let server = RedisServer {
            dir,
            port,
            args: Vec::new(),
            sentinel: true,
            tls,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        if self.sentinel {
            cmd.arg(self.dir.join("sentinel.conf")).arg("--sentinel");
        } else {
            let port = self.port.to_string();
            match self.tls {
                Some(_) => cmd.args(["--port", "0", "--tls-port", &port]),
                None => cmd.args(["--port", &port]),
            };
            cmd.args(["--bind", "127.0.0.1"])
                .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .arg("--pidfile")
                .arg(self.dir.join("redis.pid"))
                .arg("--logfile")
                .arg(self.dir.join("redis.log"))
                .args(&self.args);
        }
        run(&mut cmd).context("starting redis-server (run scripts/services.sh install)")?;
        wait_for("Redis", Duration::from_secs(10), || self.ping())
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        if self.tls.is_some() {
            return self.cli(&["PING"]).is_ok_and(|r| r.trim() == "PONG");
        }
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
            && s.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT/` (`rediss://…` for a TLS server: add its `sslrootcert`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `redis-cli -p PORT args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("redis-cli");
        if self.tls.is_some() {
            cmd.arg("--tls").arg("--cacert").arg(self.tls_ca());
        }
        let out = cmd
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL: the server is gone at once.
    pub fn kill(&mut self) -> Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("redis.pid"))?;
        run(Command::new("kill").args(["-9", pid.trim()]))?;
        wait_for("Redis to die", Duration::from_secs(10), || !self.ping())?;
        let _ = std::fs::remove_file(self.dir.join("redis.pid"));
        Ok(())
    }

    /// Starts again on the same port.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }
}

/// A Redis Cluster of `n` masters on loopback, created with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes; each owns a third (for 3) of the slots.
    pub nodes: Vec<RedisServer>,
    /// A TLS cluster's certificates, removed on drop.
    certs: Option<PathBuf>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if let Some(certs) = &self.certs {
            let _ = std::fs::remove_dir_all(certs);
        }
    }
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers and joins them (no replicas).
    pub fn start(n: usize) -> Result<RedisCluster> {
        RedisCluster::start_with(n, None)
    }

    /// [`RedisCluster::start`] speaking TLS only, to clients and on the cluster bus
    /// (`tls-cluster`), every node's certificate signed by one CA the cluster made
    /// ([`RedisServer::tls_ca`] of any node).
    pub fn start_tls(n: usize) -> Result<RedisCluster> {
        let certs = std::env::temp_dir().join(unique_name("christmas-cluster-tls"));
        crate::tls::make_certs(&certs)?;
        RedisCluster::start_with(n, Some(certs))
    }

    fn start_with(n: usize, certs: Option<PathBuf>) -> Result<RedisCluster> {
        let mut nodes = Vec::with_capacity(n);
        while nodes.len() < n {
            // The cluster bus listens on port + 10000: it must exist and be free too.
            let port = free_port();
            if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(match &certs {
                None => RedisServer::start_on(port, &args)?,
                Some(certs) => {
                    let dir = std::env::temp_dir().join(unique_name("christmas-redis-tls"));
                    std::fs::create_dir_all(&dir)?;
                    let tls_args = [&args[..], &["--tls-cluster", "yes"]].concat();
                    RedisServer::start_tls_in(dir, port, certs.clone(), &tls_args)?
                }
            });
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        // Bounded: it waits for the nodes to join for as long as it takes.
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "redis-cli"]);
        if let Some(certs) = &certs {
            cmd.arg("--tls").arg("--cacert").arg(certs.join("ca.pem"));
        }
        cmd.args(["--cluster", "create"]).args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        run(&mut cmd).context("redis-cli --cluster create")?;
        let cluster = RedisCluster { nodes, certs };
        wait_for("the cluster to be ok", Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                n.cli(&["cluster", "info"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            })
        })?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:PORT` with node `i` as the only seed
    /// (`rediss+cluster://…?sslrootcert=CA` for a TLS cluster).
    pub fn url_via(&self, i: usize) -> String {
        let node = &self.nodes[i];
        match &node.tls {
            None => format!("redis+cluster://127.0.0.1:{}", node.port()),
            Some(_) => format!(
                "rediss+cluster://127.0.0.1:{}?sslrootcert={}",
                node.port(),
                node.tls_ca().display()
            ),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis server shared by the tests of this process: `CHRISTMAS_TEST_REDIS_URL` when
/// set, else a [`RedisServer`] started on first use.
pub fn shared_redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("CHRISTMAS_TEST_REDIS_URL").unwrap_or_else(|_| {
            let server = RedisServer::start().expect("start the shared Redis");
            let url = server.url();
            crate::host::reap_at_exit(&server.dir.join("redis.pid"), &server.dir);
            std::mem::forget(server);
            url
        })
    })
    .clone()
}
