//! Bind and run: [`listen`] binds with a real backlog, and [`run`] serves HTTP, TCP and
//! the operations port until `shutdown` resolves, then drains and flushes.
//!
//! HTTP connections are served by hyper directly (not `axum::serve`), so that each has a
//! timer: a request head, and the wait for the next request on a kept-alive connection,
//! take at most `http.header_timeout_ms`; an answer the peer stops reading fails after
//! `http.write_timeout_ms` ([`WriteDeadline`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::budget::{self, ConnectionBudget};
use crate::stall::WriteDeadline;
// Re-exported where it lived before it got its own module: `server::AppState` is the path
// tests, the bench and the binary use.
pub use crate::state::AppState;
use crate::{http, tcp};

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

/// Serves `http` (and `tcp`, when given) until `shutdown` resolves; then stops accepting,
/// finishes in-flight requests and frames, and flushes every accepted record to PostgreSQL
/// (within `shutdown_timeout`).
pub async fn run(
    http: TcpListener,
    tcp: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with_ops(http, tcp, None, state, shutdown).await
}

/// [`run`], with the operations listener `ops` (`/health`, `/ready`, `/metrics` on a
/// connection budget of their own) when given.
pub async fn run_with_ops(
    http: TcpListener,
    tcp: Option<TcpListener>,
    ops: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tcp_task = tcp.map(|l| tokio::spawn(tcp::serve(l, state.clone(), stop_rx.clone())));
    tracing::info!(http = %http.local_addr()?, "christmas-ingest serving");
    let timeouts = (
        Duration::from_millis(state.config.http.header_timeout_ms),
        Duration::from_millis(state.config.http.write_timeout_ms),
    );
    let ops_task = match ops {
        Some(l) => {
            tracing::info!(ops = %l.local_addr()?, "operations listening");
            let (state, stop) = (state.clone(), stop_rx.clone());
            Some(tokio::spawn(async move {
                let router = http::ops_router(state.clone());
                serve_http(l, router, &state.ops_connections, timeouts, stop).await
            }))
        }
        None => None,
    };
    let server = {
        let (state, stop) = (state.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let router = http::router(state.clone());
            serve_http(http, router, &state.http_connections, timeouts, stop).await
        })
    };
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
        if let Some(t) = ops_task {
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

/// Serves `router` on `listener`'s connections, as many at once as `budget` allows, until
/// `stop` turns true; then lets each connection finish its request in flight and waits for
/// all of them.
async fn serve_http(
    listener: TcpListener,
    router: Router,
    budget: &ConnectionBudget,
    (header_timeout, write_timeout): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer, admission) = tokio::select! {
            a = budget::accept(&listener, budget) => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        while conns.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _admission = admission;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let io = WriteDeadline::new(stream, write_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let served = match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection closed");
            }
        });
    }
    while conns.join_next().await.is_some() {}
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
