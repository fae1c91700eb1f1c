//! RabbitMQ for tests: a private [`RabbitNode`] a test may stop and start, and the node
//! shared by a test process ([`shared_amqp_url`], and over TLS [`shared_amqps`]).
//!
//! A node runs Debian's `rabbitmq-server` (`scripts/services.sh install`) from a fresh
//! temporary directory, on loopback ports of its own: AMQP, Erlang distribution and epmd,
//! so it meets neither a system node nor another test's. As root it runs as the service
//! user, like PostgreSQL.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::{as_service_user, ensure_service_user, run, temp_dir, wait_for};
use crate::net::free_port;

const BIN: &str = "/usr/lib/rabbitmq/bin";

/// A private RabbitMQ node owned by one test; stopped and removed on drop.
#[derive(Debug)]
pub struct RabbitNode {
    /// `rabbitmq-server`, in the foreground; `None` before it was started.
    server: Option<std::process::Child>,
    dir: PathBuf,
    port: u16,
    /// The TLS listener's port (`amqps://`), when the node has one.
    tls_port: Option<u16>,
    dist_port: u16,
    epmd_port: u16,
}

impl RabbitNode {
    /// Starts a node on free loopback ports and waits (up to 90 s) until it takes
    /// connections.
    pub fn start() -> Result<RabbitNode> {
        Self::start_with(false)
    }

    /// [`RabbitNode::start`], with a TLS listener too ([`RabbitNode::amqps_url`]), whose
    /// certificate a private CA signed ([`RabbitNode::tls_ca`]), made by
    /// `scripts/services.sh tls-certs` as for the development node.
    pub fn start_tls() -> Result<RabbitNode> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<RabbitNode> {
        ensure_service_user()?;
        let dir = temp_dir("christmas-rabbit")?;
        let mut node = RabbitNode {
            server: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dist_port: free_port(),
            epmd_port: free_port(),
            dir,
        };
        std::fs::write(node.dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(node.dir.join("advanced.config"), "[].\n")?;
        std::fs::write(node.dir.join("rabbitmq-env.conf"), "")?;
        let mut conf = format!(
            "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users.guest = true\n\
             log.file.level = warning\n",
            node.port
        );
        if let Some(tls_port) = node.tls_port {
            let certs = node.dir.join("tls");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
            run(Command::new("bash")
                .arg(script)
                .arg("tls-certs")
                .arg(&certs))?;
            let c = certs.display();
            conf.push_str(&format!(
                "listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {c}/ca.pem\n\
                 ssl_options.certfile = {c}/server.pem\n\
                 ssl_options.keyfile = {c}/server.key\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n"
            ));
        }
        std::fs::write(node.dir.join("rabbitmq.conf"), conf)?;
        let cookie = node.dir.join(".erlang.cookie");
        std::fs::write(&cookie, format!("christmas{}", node.port))?;
        run(Command::new("chmod").arg("600").arg(&cookie))?;
        if crate::host::is_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg(crate::host::SERVICE_USER)
                .arg(&node.dir))?;
        }
        let log = std::fs::File::create(node.dir.join("startup.log"))?;
        let server = node
            .command("rabbitmq-server")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rabbitmq-server (run `bash scripts/services.sh install`)")?;
        node.server = Some(server);
        node.wait_up()?;
        Ok(node)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://guest:guest@127.0.0.1:PORT/%2f`, when started with [`RabbitNode::start_tls`].
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("amqps://guest:guest@127.0.0.1:{p}/%2f"))
    }

    /// The file of the CA that signed the TLS listener's certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// A RabbitMQ tool of this node, with the node's name, ports, cookie and files.
    fn command(&self, tool: &str) -> Command {
        self.command_at(&Path::new(BIN).join(tool))
    }

    fn command_at(&self, program: &Path) -> Command {
        // HOME (where the Erlang cookie lives) after `runuser`, which resets it.
        let mut c = as_service_user(Path::new("/usr/bin/env"));
        let dir = self.dir.display().to_string();
        c.arg(format!("HOME={dir}")).arg(program);
        c.env("RABBITMQ_NODENAME", self.node_name())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia"))
            .env("RABBITMQ_LOG_BASE", format!("{dir}/log"))
            .env("RABBITMQ_PID_FILE", format!("{dir}/rabbitmq.pid"))
            .env("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                format!("{dir}/advanced.config"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", format!("{dir}/rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{dir}/enabled_plugins"),
            )
            // Where a crash dump goes.
            .current_dir(&self.dir);
        c
    }

    fn node_name(&self) -> String {
        format!("christmas-test-{}@localhost", self.port)
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        run(self
            .command("rabbitmqctl")
            .args(["-q", "--timeout", "60"])
            .args(args))
    }

    fn wait_up(&mut self) -> Result<()> {
        let addrs: Vec<_> = [Some(self.port), self.tls_port]
            .into_iter()
            .flatten()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let mut exited = false;
        let server = &mut self.server;
        wait_for("the RabbitMQ node", Duration::from_secs(90), || {
            // A node that exited is not coming: say so at once, not after 90 s.
            exited = server
                .as_mut()
                .is_some_and(|s| s.try_wait().ok().flatten().is_some());
            exited
                || addrs
                    .iter()
                    .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
        })
        .and_then(|()| {
            if exited {
                anyhow::bail!("rabbitmq-server exited")
            }
            Ok(())
        })
        .with_context(|| std::fs::read_to_string(self.dir.join("startup.log")).unwrap_or_default())
    }

    /// Stops the broker application (the node's AMQP listener closes and every
    /// connection drops); durable queues keep their messages.
    pub fn stop_app(&self) -> Result<()> {
        self.ctl(&["stop_app"])
    }

    /// Starts the broker application again and waits until it takes connections.
    pub fn start_app(&mut self) -> Result<()> {
        self.ctl(&["start_app"])?;
        self.wait_up()
    }

    /// Stops the node when this process ends (see [`crate::host::reap_at_exit`]), for a
    /// node kept in a static.
    fn reap_at_exit(&self) {
        crate::host::reap_at_exit(&self.dir.join("rabbitmq.pid"), &self.dir);
    }

    /// Deletes queue `name` (as a broker losing it would).
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        self.ctl(&["delete_queue", name])
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = self
            .command_at(Path::new("epmd"))
            .arg("-kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The RabbitMQ node shared by the tests of this process: `CHRISTMAS_TEST_AMQP_URL` when
/// set (`scripts/test.sh` takes it from `scripts/services.sh env`), else a [`RabbitNode`]
/// started on first use and left running until the process ends.
pub fn shared_amqp_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("CHRISTMAS_TEST_AMQP_URL").unwrap_or_else(|_| {
            let node = RabbitNode::start().expect("start the shared RabbitMQ node");
            let url = node.url();
            node.reap_at_exit();
            std::mem::forget(node);
            url
        })
    })
    .clone()
}

/// The RabbitMQ TLS listener shared by the tests of this process, and the file of the CA
/// that signed its certificate: `CHRISTMAS_TEST_AMQPS_URL` and `CHRISTMAS_TEST_AMQPS_CA`
/// when set (`scripts/test.sh` takes them from `scripts/services.sh env`), else a
/// [`RabbitNode`] with TLS started on first use and left running until the process ends.
pub fn shared_amqps() -> (String, PathBuf) {
    static SHARED: OnceLock<(String, PathBuf)> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            match (
                std::env::var("CHRISTMAS_TEST_AMQPS_URL"),
                std::env::var("CHRISTMAS_TEST_AMQPS_CA"),
            ) {
                (Ok(url), Ok(ca)) => (url, PathBuf::from(ca)),
                _ => {
                    let node = RabbitNode::start_tls().expect("start a RabbitMQ node with TLS");
                    let shared = (node.amqps_url().expect("a TLS listener"), node.tls_ca());
                    node.reap_at_exit();
                    std::mem::forget(node);
                    shared
                }
            }
        })
        .clone()
}
