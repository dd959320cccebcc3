//! What every long-running command shares: its async runtime, reporting where it listens,
//! and stopping on a signal.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Write `addr` to `report` (atomically) and print `line` (which names the address) to stdout,
/// flushed, so a parent waiting on either can go on.
pub fn announce(addr: SocketAddr, report: Option<&Path>, line: &str) -> anyhow::Result<()> {
    if let Some(path) = report {
        crate::rundir::write_atomic(path, &addr.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    cancel
}

/// A tokio runtime with timers and I/O: `threads` 1 runs on the current thread (the default of
/// the serving commands: one core relays thousands of requests per second), 0 one worker per
/// core (the load generator), else that many workers.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
