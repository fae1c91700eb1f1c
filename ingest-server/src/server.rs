//! Bind and run: [`listen`] binds with a real backlog, and [`run`] serves HTTP and TCP
//! until `shutdown` resolves, then drains and flushes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

// Re-exported where it lived before it got its own module: `server::AppState` is the path
// tests, the bench and the binary use.
pub use crate::state::AppState;
use crate::{http, tcp};

/// A TCP connection holding one of the daemon's connection permits.
#[derive(Debug)]
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Binds `addr` with a listen backlog of `backlog` connection attempts (the kernel caps it
/// at `net.core.somaxconn`).
///
/// `TcpListener::bind` asks for 128. A load balancer or a few hundred clients connecting
/// at once (after a restart, say) overflow that, and every dropped SYN is retried only a
/// second later. The daemon passes its `max_connections`.
pub async fn listen(addr: &str, backlog: usize) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As TcpListener::bind does: a restarted daemon may bind while old connections
        // are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(backlog.clamp(128, 65_535) as u32),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// An HTTP listener that accepts at most `max_connections` connections at once.
#[derive(Debug)]
pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(p) => p,
                // The semaphore is never closed; if it were, accept nothing more.
                Err(_) => return std::future::pending().await,
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        CappedStream {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves `http` (and `tcp`, when given) until `shutdown` resolves; then stops accepting,
/// finishes in-flight requests and frames, and flushes every accepted record to PostgreSQL
/// (within `shutdown_timeout`).
pub async fn run(
    http: TcpListener,
    tcp: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tcp_task = tcp.map(|l| tokio::spawn(tcp::serve(l, state.clone(), stop_rx.clone())));
    let listener = CappedListener {
        inner: http,
        permits: state.connections.clone(),
    };
    tracing::info!(
        http = %listener.inner.local_addr()?,
        "christmas-ingest serving"
    );
    let mut http_stop = stop_rx.clone();
    let server =
        axum::serve(listener, http::router(state.clone())).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down: no new requests; draining");
    let _ = stop_tx.send(true);
    // Open event streams would hold the graceful shutdown until its deadline.
    if let Some(feed) = &state.stream {
        feed.close();
    }
    let deadline = state.config.shutdown_timeout();
    let drained = tokio::time::timeout(deadline, async {
        let _ = server.await;
        if let Some(t) = tcp_task {
            let _ = t.await;
        }
        state.orders.shutdown().await;
        state.ingress.shutdown().await
    })
    .await;
    match drained {
        Ok(totals) => {
            let totals = totals?;
            tracing::info!(
                trades = totals.trades.rows_committed(),
                quotes = totals.quotes.rows_committed(),
                "stopped; everything accepted is committed"
            );
            Ok(())
        }
        Err(_) => anyhow::bail!(
            "shutdown took longer than {deadline:?}; some records may not be committed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_listen_backlog_holds_a_connection_storm() {
        // Nothing accepts: every connection waits in the backlog. With the 128 that
        // `TcpListener::bind` asks for, the 129th SYN is dropped and retried a second later.
        let listener = listen("127.0.0.1:0", 1_024).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for i in 0..400 {
            let c = tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .unwrap_or_else(|_| panic!("connection {i} was not queued"))
            .unwrap();
            held.push(c);
        }
        assert_eq!(held.len(), 400);
        // The port is taken (SO_REUSEADDR does not share a listening port).
        let taken = listen(&addr.to_string(), 1_024).await.unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
}
