//! The one accept loop of the HTTP services (`disagg sim`, `disagg router`): HTTP/1 with a
//! header-read timeout, `TCP_NODELAY` on every connection, and graceful shutdown.
//!
//! `axum::serve` sets no timer, so hyper never times out a request header: a client that sends
//! half a header and stops holds its connection (and a file descriptor) until it goes away, and
//! enough of them exhaust the descriptor limit (docs/RELIABILITY.md, "Slow clients"). Here a
//! connection that has not sent a whole header within [`HEADER_READ_TIMEOUT`] is closed. hyper
//! runs the same timer while a keep-alive connection waits for its next request, so an idle
//! connection is closed after the same time (uvicorn, which serves TensorRT-LLM and vLLM, closes
//! idle ones after 5 s; clients' pools reconnect).
//!
//! Shutdown is axum's: when `shutdown` fires the listener closes, every connection finishes the
//! response it is writing (an SSE stream runs to its end) and then closes, and [`serve`] returns
//! once all have.
//!
//! ```no_run
//! # async fn demo(app: axum::Router) -> std::io::Result<()> {
//! use disagg_protocol::serve::{HEADER_READ_TIMEOUT, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, app, HEADER_READ_TIMEOUT, tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

use std::io;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client has to send a whole request header, and how long a keep-alive connection
/// may wait idle for its next one, before the server closes it. hyper's own default for this
/// timer; long enough for any client that means to send a request, short enough that stalled
/// connections never pile up to the descriptor limit at any plausible rate of them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` until `shutdown` fires, then stop accepting and wait for every open
/// connection to finish its response. A connection whose request header is not complete within
/// `header_read_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e, &shutdown).await;
                    continue;
                }
            },
        };
        // Every streamed chunk is a small write: never let Nagle hold one back.
        let _ = tcp.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                // A header timeout, a client gone mid-request: the client's business.
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A failed `accept`: a connection that was reset before it was accepted is nothing; anything
/// else (most likely out of file descriptors) is logged, and accepting pauses for a second so
/// that open connections can close rather than the loop spinning (hyper 0.14's and axum's rule).
async fn accept_failed(e: io::Error, shutdown: &CancellationToken) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept failed: {e}");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}
