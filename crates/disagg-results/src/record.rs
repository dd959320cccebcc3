//! The JSON record of one benchmark run (one concurrency or one request rate).

use std::path::{Path, PathBuf};

use disagg_bench::metrics::RunMetrics;
use serde::{Deserialize, Serialize};

use crate::ResultsError;

/// The version of [`RunRecord`]'s shape; bumped on any change of it.
pub const RECORD_VERSION: u32 = 1;

/// What the metrics mean, stored in every record so old records stay interpretable.
pub const METRIC_DEFINITIONS: &str = "TensorRT-LLM benchmark_serving: TTFT first content chunk; TPOT (E2EL-TTFT)/(out-1); ITL per chunk; E2EL last content chunk; latencies from the intended send time";

/// Where the client ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub host: String,
    /// `linux`, ...
    pub os: String,
    /// `x86_64`, ...
    pub arch: String,
    /// CPUs the client could use.
    pub cpus: usize,
    /// When the run started.
    pub started_unix_s: u64,
}

impl Environment {
    /// This machine, now.
    pub fn here() -> Environment {
        Environment {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// One run's result file (`con8.json`, `rate2.5.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_VERSION`] when written.
    pub record_version: u32,
    /// `disagg 0.1.0`.
    pub tool: String,
    /// Server measured.
    pub url: String,
    /// Model name sent.
    pub model: String,
    /// `completions` or `chat`.
    pub endpoint: String,
    /// `con8` or `rate2.5`.
    pub load: String,
    /// Measured requests planned.
    pub num_prompts: usize,
    /// Input length asked for.
    pub isl: u32,
    /// Output length asked for.
    pub osl: u32,
    /// Random range ratio of both lengths.
    pub range_ratio: f64,
    /// Streaming requests.
    pub streaming: bool,
    /// `ignore_eos` sent.
    pub ignore_eos: bool,
    /// Seed of prompts and arrivals.
    pub seed: u64,
    /// Where the client ran.
    pub environment: Environment,
    /// [`METRIC_DEFINITIONS`] when written.
    pub metric_definitions: String,
    /// Stopped before every request finished (signal, deadline, a failed role).
    pub interrupted: bool,
    /// Passed the validity gate.
    pub valid: bool,
    /// Why not.
    pub invalid_reasons: Vec<String>,
    /// The metrics.
    pub metrics: RunMetrics,
    /// Every request's timeline, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timelines: Option<serde_json::Value>,
}

impl RunRecord {
    /// The concurrency of a `con<C>` run.
    pub fn concurrency(&self) -> Option<u32> {
        self.load.strip_prefix("con")?.parse().ok()
    }
}

/// Every record in `dir` (`con*.json`, `rate*.json`), concurrencies in ascending order, then
/// rates. A file that is not a record is an error naming it: results are never silently dropped.
pub fn load_records(dir: &Path) -> Result<Vec<(PathBuf, RunRecord)>, ResultsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ResultsError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_record = (name.starts_with("con") || name.starts_with("rate"))
            && name.ends_with(".json")
            && !name.starts_with('.');
        if !is_record {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path).map_err(|source| ResultsError::Io {
            path: path.clone(),
            source,
        })?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| ResultsError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        out.push((path, record));
    }
    out.sort_by(|(_, a), (_, b)| {
        let key = |r: &RunRecord| (r.concurrency().is_none(), r.concurrency(), r.load.clone());
        key(a).cmp(&key(b))
    });
    Ok(out)
}

/// The 16 metrics of the upstream perf tests, by their upstream names (OpenSearch `d_<name>`),
/// and whether more is better.
pub const METRICS: &[(&str, bool)] = &[
    ("seq_throughput", true),
    ("token_throughput", true),
    ("total_token_throughput", true),
    ("user_throughput", true),
    ("mean_ttft", false),
    ("median_ttft", false),
    ("p99_ttft", false),
    ("mean_tpot", false),
    ("median_tpot", false),
    ("p99_tpot", false),
    ("mean_itl", false),
    ("median_itl", false),
    ("p99_itl", false),
    ("mean_e2el", false),
    ("median_e2el", false),
    ("p99_e2el", false),
];

/// Whether more of `metric` is better (throughputs); `None` for an unknown name.
pub fn maximize(metric: &str) -> Option<bool> {
    METRICS
        .iter()
        .find(|(m, _)| *m == metric)
        .map(|(_, up)| *up)
}

impl RunRecord {
    /// The record's metrics under their upstream names, in [`METRICS`] order.
    pub fn upstream_metrics(&self) -> Vec<(&'static str, f64)> {
        let m = &self.metrics;
        let p99 = |s: &disagg_bench::stats::Summary| s.percentile(99.0).unwrap_or(f64::NAN);
        let values = [
            m.request_throughput,
            m.output_throughput,
            m.total_token_throughput,
            m.user_throughput,
            m.ttft_ms.mean,
            m.ttft_ms.median,
            p99(&m.ttft_ms),
            m.tpot_ms.mean,
            m.tpot_ms.median,
            p99(&m.tpot_ms),
            m.itl_ms.mean,
            m.itl_ms.median,
            p99(&m.itl_ms),
            m.e2el_ms.mean,
            m.e2el_ms.median,
            p99(&m.e2el_ms),
        ];
        METRICS
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|((name, _), v)| (*name, v))
            .collect()
    }
}
