//! Loopback addresses for servers the harness starts, and waiting until one listens.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// A loopback port free right now (the kernel's pick for port 0).
///
/// Another process may take it before the server binds it; the tests and the bench accept
/// that small race for servers that can only be told a port, not handed a socket.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `127.0.0.1:PORT` with a port free right now (see [`free_port`]).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Waits until something accepts connections on `addr`, up to `timeout`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > timeout {
            bail!("nothing listened on {addr} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
