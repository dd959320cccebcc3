//! What the benchmarks share: settings from the environment, child processes that cannot outlive
//! the benchmark, and the HTTP client.

use std::process::Child;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A number from the environment, or the default.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed and reaped when dropped (the tests' one).
pub use disagg_test_support::ChildGuard as Proc;

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of /proc/PID/stat.
    fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    }) / 100.0
}

/// The benchmarks' HTTP client: hyper 1, keep-alive, `TCP_NODELAY`, ordinary delayed ACKs.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// A client keeping up to `idle` connections per host.
pub fn client(idle: usize) -> Http {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(c)
}
