//! The Python peers of the ingest scenario (bench/peers/): what a user would write instead
//! of embedding Christmas, run on the same rows in the same database, interleaved with the
//! engine and the ceiling.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::report;

/// The peers: (name, script).
pub const PEERS: &[(&str, &str)] = &[
    ("asyncpg", "asyncpg_copy.py"),
    ("psycopg", "psycopg_copy.py"),
];

fn peers_dir() -> PathBuf {
    report::bench_dir().join("peers")
}

/// The venv's Python, creating .state/bench-venv and installing bench/peers/requirements.txt
/// when it is not there yet (or does not import the drivers).
pub fn python() -> Result<PathBuf> {
    let venv = report::bench_dir().join("../.state/bench-venv");
    let py = venv.join("bin/python");
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", "import asyncpg, psycopg"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if py.exists() && imports(&py) {
        return Ok(py);
    }
    // Debian's python3 makes venvs only with python3-venv (ensurepip), which
    // scripts/services.sh install installs.
    let can_make_venv = || {
        Command::new("python3")
            .args(["-c", "import ensurepip"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !can_make_venv() {
        crate::services::install_tools();
        ensure!(
            can_make_venv(),
            "python3 cannot make a venv; install it with `sudo bash scripts/services.sh install` \
             (or `sudo apt-get install python3-venv`)"
        );
    }
    eprintln!("creating {} for the Python peers", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?
        .success();
    ensure!(ok, "python3 -m venv failed");
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "-r"])
        .arg(peers_dir().join("requirements.txt"))
        .status()
        .context("running pip install")?
        .success();
    ensure!(
        ok && imports(&py),
        "pip install -r bench/peers/requirements.txt failed"
    );
    Ok(py)
}

/// A peer script running in `--serve` mode: it has read the rows and loads them on request.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    /// `asyncpg 0.32.0, Python 3.11.7`.
    pub version: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `script` on `rows_file` and waits until it has built its rows.
    pub fn start(
        python: &Path,
        name: &str,
        script: &str,
        url: &str,
        rows_file: &Path,
    ) -> Result<Peer> {
        let mut child = Command::new(python)
            .arg(peers_dir().join(script))
            .args(["--serve", "--dsn", url, "--rows"])
            .arg(rows_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {script}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut peer = Peer {
            name: name.to_string(),
            version: name.to_string(),
            child,
            stdin,
            stdout,
        };
        let line = peer.line()?;
        let info: Value = serde_json::from_str(
            line.strip_prefix("ready ")
                .with_context(|| format!("{script} said {line:?}, not ready"))?,
        )?;
        peer.version = format!(
            "{name} {}, Python {}",
            info["version"].as_str().unwrap_or("?"),
            info["python"].as_str().unwrap_or("?")
        );
        Ok(peer)
    }

    /// The next line the script prints; its stderr's last line when it died instead.
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let _ = self.child.wait();
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!("the {} peer exited: {last}", self.name);
        }
        Ok(line.trim().to_string())
    }

    /// Loads every row over `connections` connections; the seconds the load took (timed by
    /// the script, after connecting).
    pub fn load(&mut self, connections: usize) -> Result<f64> {
        let stdin = self.stdin.as_mut().context("peer stdin closed")?;
        writeln!(stdin, "{connections}")?;
        stdin.flush()?;
        let line = self.line()?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("the {} peer said {line:?}", self.name))?;
        v["seconds"]
            .as_f64()
            .filter(|s| *s > 0.0)
            .with_context(|| format!("no seconds in {line}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // End of input ends the script.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
