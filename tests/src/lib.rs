//! The test harness: real PostgreSQL and Redis servers on loopback.
//!
//! - [`PgServer`] / [`RedisServer`]: a private server the test owns — it may stop, kill and
//!   restart it. Data in a fresh temporary directory, a free port, removed on drop.
//! - [`shared_pg_url`] / [`shared_redis_url`]: one server for the whole test process (the
//!   scripts' instances when `CHRISTMAS_TEST_DATABASE_URL` / `CHRISTMAS_TEST_REDIS_URL` are
//!   set, as `scripts/test.sh` does).
//! - [`fresh_database`] / [`unique_name`]: how each test isolates itself.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! unprivileged system user `christmas` (created if missing) through `runuser`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

const SERVICE_USER: &str = "christmas";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A name unique within this machine's test runs: `prefix_<pid>_<nanos>_<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A command run as the service user when we are root.
fn as_service_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVICE_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn ensure_service_user() -> Result<()> {
    if is_root()
        && !Command::new("id")
            .arg(SERVICE_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success()
    {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ]))?;
    }
    Ok(())
}

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

/// A fresh temporary directory the service user owns.
fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    if is_root() {
        run(Command::new("chown").arg(SERVICE_USER).arg(&dir))?;
    }
    run(Command::new("chmod").arg("700").arg(&dir))?;
    Ok(dir)
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} was not ready after {timeout:?}")
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
        PgServer::start_at(None, "127.0.0.1")
    }

    /// [`PgServer::start`] inside network namespace `netns`, listening on `host` (an
    /// address of that namespace), accepting trust connections from anywhere.
    pub fn start_in_netns(netns: &str, host: &str) -> Result<PgServer> {
        PgServer::start_at(Some(netns), host)
    }

    fn start_at(netns: Option<&str>, host: &str) -> Result<PgServer> {
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
        let port = free_port()?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "listen_addresses = '{host}'\nport = {port}\nunix_socket_directories = '{}'\n\
                     fsync = off\nsynchronous_commit = on\nfull_page_writes = off\nmax_connections = 100\n\
                     shared_buffers = 128MB",
                    dir.display()
                )
            })?;
        if netns.is_some() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .and_then(|mut f| {
                    use std::io::Write;
                    writeln!(f, "host all all 0.0.0.0/0 trust")
                })?;
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
        let port = free_port()?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on",
                    dir.display()
                )
            })?;
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

/// A network namespace joined to the host by a veth pair: the host end has `HOST/30`, the
/// namespace end `NS/30`. Removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    /// The host end's address.
    pub host_ip: String,
    /// The namespace end's address.
    pub ns_ip: String,
}

impl NetNs {
    /// Creates it; an error (not root, no `ip`, no namespaces here) means the machine
    /// does not allow it.
    pub fn create() -> Result<NetNs> {
        let id = std::process::id() % 60_000;
        let name = format!("chr{id}");
        let host_if = format!("vchr{id}a");
        let ns_if = format!("vchr{id}b");
        let (a, b) = ((id / 64) % 250, (id % 64) * 4);
        let host_ip = format!("10.{}.{a}.{}", 200 + (id % 50), b + 1);
        let ns_ip = format!("10.{}.{a}.{}", 200 + (id % 50), b + 2);
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &name, "ip"])
                .args(args))
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn link(&self, up: bool) -> Result<()> {
        run(Command::new("ip").args(["link", "set", &self.host_if, if up { "up" } else { "down" }]))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

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
        let port = free_port()?;
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
        let port = free_port()?;
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

/// A private Redis server owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    /// Extra `redis-server` arguments, kept for restarts.
    args: Vec<String>,
    /// A sentinel runs from a config file it rewrites.
    sentinel: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, without persistence.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra arguments (`--replicaof`, `--cluster-enabled`, …).
    pub fn start_with(args: &[&str]) -> Result<RedisServer> {
        RedisServer::start_on(free_port()?, args)
    }

    fn start_on(port: u16, args: &[&str]) -> Result<RedisServer> {
        let dir = std::env::temp_dir().join(unique_name("christmas-redis"));
        std::fs::create_dir_all(&dir)?;
        let server = RedisServer {
            dir,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            sentinel: false,
        };
        server.spawn()?;
        Ok(server)
    }

    /// A Sentinel (`redis-server --sentinel`) monitoring the master on `master_port` as
    /// `name`, quorum 1, declaring it down after 1 s.
    pub fn start_sentinel(name: &str, master_port: u16) -> Result<RedisServer> {
        let dir = std::env::temp_dir().join(unique_name("christmas-sentinel"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        std::fs::write(
            dir.join("sentinel.conf"),
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\ndir {dir}\n\
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
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        if self.sentinel {
            cmd.arg(self.dir.join("sentinel.conf")).arg("--sentinel");
        } else {
            cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
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
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
            && s.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `redis-cli -p PORT args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
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
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers and joins them (no replicas).
    pub fn start(n: usize) -> Result<RedisCluster> {
        let mut nodes = Vec::with_capacity(n);
        while nodes.len() < n {
            // The cluster bus listens on port + 10000: it must exist and be free too.
            let port = free_port()?;
            if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            nodes.push(RedisServer::start_on(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"]).args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        run(&mut cmd).context("redis-cli --cluster create")?;
        let cluster = RedisCluster { nodes };
        wait_for("the cluster to be ok", Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                n.cli(&["cluster", "info"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            })
        })?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:PORT` with node `i` as the only seed.
    pub fn url_via(&self, i: usize) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[i].port())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
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
            // Kept for the whole process. Statics are never dropped, so this server outlives
            // the test binary (in the temp dir); scripts/test.sh avoids that by passing the
            // scripts' server in CHRISTMAS_TEST_DATABASE_URL.
            std::mem::forget(server);
            url
        })
    })
    .clone()
}

/// The Redis server shared by the tests of this process: `CHRISTMAS_TEST_REDIS_URL` when
/// set, else a [`RedisServer`] started on first use.
pub fn shared_redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("CHRISTMAS_TEST_REDIS_URL").unwrap_or_else(|_| {
            let server = RedisServer::start().expect("start the shared Redis");
            let url = server.url();
            std::mem::forget(server);
            url
        })
    })
    .clone()
}

/// Creates an empty database on the server of `base_url` and returns its URL.
///
/// Test databases are kept after the test (for a look at a failure) and named after the
/// process that made them, so the first call in a process drops those of earlier test
/// processes that have exited: a shared server (`scripts/test.sh`) does not fill its disk
/// over many runs, and a running test's database is never touched.
pub async fn fresh_database(base_url: &str) -> Result<String> {
    let (client, conn) = tokio_postgres::connect(base_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {base_url}"))?;
    let conn = tokio::spawn(conn);
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(|| drop_stale_databases(&client)).await;
    let name = unique_name("christmas_t");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("CREATE DATABASE")?;
    drop(client);
    let _ = conn.await;
    let (without_query, query) = match base_url.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (base_url, String::new()),
    };
    let (prefix, _) = without_query
        .rsplit_once('/')
        .context("database URL has no path")?;
    Ok(format!("{prefix}/{name}{query}"))
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
