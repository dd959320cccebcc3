//! How far a benchmark is: what [`crate::execute`] keeps up to date while it runs, and what the
//! BENCHMARK role publishes in its state file (hence serde, with these field names).

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How far the benchmark is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The run going on (`con8`).
    pub label: String,
    /// Its requests finished.
    pub done: usize,
    /// Its requests in all.
    pub total: usize,
    /// Runs finished.
    pub runs_done: usize,
    /// Runs in all.
    pub runs_total: usize,
    /// When the first request was sent, ms since the epoch.
    pub first_request_ms: Option<u64>,
}

/// Milliseconds since the epoch (0 before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keeps the progress up to date while a run goes on: in `shared` (what the BENCHMARK role
/// publishes) and, on a terminal, as a line on stderr twice a second. Never ends: race it
/// against the run.
pub(crate) async fn track(
    label: &str,
    total: usize,
    done: &AtomicUsize,
    shared: Option<&Mutex<Progress>>,
) -> Infallible {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let start = std::time::Instant::now();
    let mut tick = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        let d = done.load(Ordering::Relaxed);
        if let Some(p) = shared {
            if let Ok(mut p) = p.lock() {
                p.done = d;
            }
        }
        if terminal && tick % 2 == 0 {
            let rate = d as f64 / start.elapsed().as_secs_f64();
            eprint!("\r{label}: {d}/{total} requests, {rate:.1} req/s ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BENCHMARK role's state file carries these names; a rename breaks readers of old runs.
    #[test]
    fn progress_keeps_its_field_names() {
        let p = Progress {
            label: "con8".into(),
            done: 3,
            total: 8,
            runs_done: 1,
            runs_total: 2,
            first_request_ms: Some(1),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"label":"con8","done":3,"total":8,"runs_done":1,"runs_total":2,"first_request_ms":1}"#
        );
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
    }
}
