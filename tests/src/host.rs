//! Commands on this host: run as the service user when we are root, fresh temporary
//! directories it owns, and waiting for a server to come up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

pub(crate) const SERVICE_USER: &str = "christmas";

pub(crate) fn is_root() -> bool {
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

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
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
pub(crate) fn as_service_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVICE_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn ensure_service_user() -> Result<()> {
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

/// A fresh temporary directory the service user owns.
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    if is_root() {
        run(Command::new("chown").arg(SERVICE_USER).arg(&dir))?;
    }
    run(Command::new("chmod").arg("700").arg(&dir))?;
    Ok(dir)
}

pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} was not ready after {timeout:?}")
}

/// Appends `text` and a newline to the file at `path`.
pub(crate) fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// Makes a server this process started and keeps in a static (never dropped) end with the
/// process: a small watcher waits for this process to exit, then stops the server (SIGTERM
/// to the pid in `pid_file`'s first line, SIGKILL 10 s later) and removes `dir`. Without it
/// a test binary's shared PostgreSQL, Redis or RabbitMQ outlives it, one more per run.
pub(crate) fn reap_at_exit(pid_file: &Path, dir: &Path) {
    const WATCH: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(head -n 1 "$2" 2>/dev/null)
if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$3""#;
    let spawned = Command::new("sh")
        .args(["-c", WATCH, "christmas-reaper"])
        .arg(std::process::id().to_string())
        .arg(pid_file)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "the shared server in {} will outlive this process: {e}",
            dir.display()
        );
    }
}
