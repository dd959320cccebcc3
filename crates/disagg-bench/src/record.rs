//! The JSON record of one benchmark run (one concurrency or one request rate): what
//! [`crate::execute`] writes as `con8.json` / `rate2.5.json`, and what `disagg-results` reads
//! back ([`load_records`]) for the summary, the store, the check and the report. Versioned by
//! [`RECORD_VERSION`]; its JSON shape is pinned by the snapshots of `disagg-results`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::metrics::RunMetrics;

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
    /// Gen-only runs: the generation workers' per-iteration device step time, ms (upstream's
    /// `d_*_gen_worker_per_iter_device_step_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_step_time_ms: Option<crate::steptime::StepTimeStats>,
    /// The workload when it is not random prompts of `isl`/`osl`: `shared-prefix groups=16
    /// prefix=2048 suffix=128`, `multi-turn turns=4 turn=128 think=0s`, `mooncake FILE
    /// block=512`, `jsonl FILE`, `trtllm-custom FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// What the servers said during the run ([`crate::telemetry`]), when they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::telemetry::TelemetrySummary>,
}

impl RunRecord {
    /// Upstream's `d_al` (speculative decoding's mean tokens per decoding iteration), when the
    /// servers reported it.
    pub fn al(&self) -> Option<f64> {
        self.metrics
            .avg_decoded_tokens_per_iter
            .as_ref()
            .map(|a| a.summary.mean)
    }

    /// The concurrency of a `con<C>` run.
    pub fn concurrency(&self) -> Option<u32> {
        self.load.strip_prefix("con")?.parse().ok()
    }
}

/// Every record in `dir` (`con*.json`, `rate*.json`, `trace*.json`), concurrencies in ascending
/// order, then the others. A file that is not a record is an error naming it: results are never silently dropped.
pub fn load_records(dir: &Path) -> Result<Vec<(PathBuf, RunRecord)>, BenchError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BenchError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_record =
            (name.starts_with("con") || name.starts_with("rate") || name.starts_with("trace"))
                && name.ends_with(".json")
                && !name.starts_with('.');
        if !is_record {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| BenchError::Corrupt {
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

/// Metrics upstream records and checks besides the 16 of [`METRICS`], and whether more is
/// better: accepted tokens per iteration (`d_al`, speculative decoding) and the gen-only step
/// time statistics (`d_*_gen_worker_per_iter_device_step_time`). A record has them only when
/// they were measured.
pub const EXTRA_METRICS: &[(&str, bool)] = &[
    ("al", true),
    ("mean_gen_worker_per_iter_device_step_time", false),
    ("median_gen_worker_per_iter_device_step_time", false),
    ("std_gen_worker_per_iter_device_step_time", false),
    ("p75_gen_worker_per_iter_device_step_time", false),
    ("p99_gen_worker_per_iter_device_step_time", false),
];

/// Whether more of `metric` is better (throughputs); `None` for an unknown name.
pub fn maximize(metric: &str) -> Option<bool> {
    METRICS
        .iter()
        .find(|(m, _)| *m == metric)
        .map(|(_, up)| *up)
}

impl RunRecord {
    /// The record's metrics under their upstream names, in [`METRICS`] order, then those of
    /// [`EXTRA_METRICS`] that were measured.
    pub fn upstream_metrics(&self) -> Vec<(&'static str, f64)> {
        let m = &self.metrics;
        let p99 = |s: &crate::stats::Summary| s.percentile(99.0).unwrap_or(f64::NAN);
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
        let extra = [
            m.avg_decoded_tokens_per_iter
                .as_ref()
                .map(|a| a.summary.mean),
            self.gen_step_time_ms.as_ref().map(|s| s.mean),
            self.gen_step_time_ms.as_ref().map(|s| s.median),
            self.gen_step_time_ms.as_ref().map(|s| s.std),
            self.gen_step_time_ms.as_ref().map(|s| s.p75),
            self.gen_step_time_ms.as_ref().map(|s| s.p99),
        ];
        METRICS
            .iter()
            .zip(values)
            .chain(
                EXTRA_METRICS
                    .iter()
                    .zip(extra)
                    .filter_map(|(m, v)| Some((m, v?))),
            )
            .filter(|(_, v)| v.is_finite())
            .map(|((name, _), v)| (*name, v))
            .collect()
    }
}

/// Write `text` to `path` through a temporary file in the same directory and a rename, so a
/// reader (another role, a launcher following the run) sees the old file or the new one, never
/// half of it. Every file of a run is written this way.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // A full disk fails the write half-way: leave no half file behind to fill it further.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::timeline::{Chunk, Timeline};

    fn record(load: &str) -> RunRecord {
        let ms = Duration::from_millis;
        let t = Timeline {
            intended: ms(0),
            sent: ms(0),
            end: ms(21),
            prompt_tokens: 8,
            requested_output_tokens: 2,
            chunks: vec![
                Chunk {
                    at: ms(10),
                    tokens: 1,
                },
                Chunk {
                    at: ms(20),
                    tokens: 1,
                },
            ],
            usage_output_tokens: Some(2),
            usage_prompt_tokens: Some(8),
            output_text: None,
            tokenizer_output_tokens: None,
            decoded_per_iter: Default::default(),
            error: None,
        };
        RunRecord {
            record_version: RECORD_VERSION,
            tool: "disagg test".into(),
            url: "http://127.0.0.1:1".into(),
            model: "m".into(),
            endpoint: "completions".into(),
            load: load.into(),
            num_prompts: 1,
            isl: 8,
            osl: 2,
            range_ratio: 0.0,
            streaming: true,
            ignore_eos: true,
            seed: 0,
            environment: Environment::here(),
            metric_definitions: METRIC_DEFINITIONS.into(),
            interrupted: false,
            valid: true,
            invalid_reasons: Vec::new(),
            metrics: crate::metrics::compute(&[t], &[99.0], None),
            timelines: None,
            gen_step_time_ms: None,
            dataset: None,
            telemetry: None,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn records_come_back_concurrencies_ascending_then_rates() {
        let dir = tempfile::tempdir().unwrap();
        for load in ["rate2.5", "con16", "con2", "rate10"] {
            let text = serde_json::to_string_pretty(&record(load)).unwrap();
            write(dir.path(), &format!("{load}.json"), &text);
        }
        write(dir.path(), "results.csv", "not a record");
        write(dir.path(), ".con4.json.123.tmp", "half written");
        let loads: Vec<String> = load_records(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.load)
            .collect();
        assert_eq!(loads, ["con2", "con16", "rate10", "rate2.5"]);
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("con8");
        let text = serde_json::to_string_pretty(&r).unwrap();
        write(dir.path(), "con8.json", &text);
        let mut back = load_records(dir.path()).unwrap();
        assert_eq!(back.len(), 1);
        let (path, mut read) = back.remove(0);
        assert_eq!(path, dir.path().join("con8.json"));
        assert_eq!(read.concurrency(), Some(8));
        // serde_json (without its `float_roundtrip` feature) may read a float back one ulp off
        // (95.23809523809524 as ...23), so the metrics are compared to within that.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
        assert!(close(
            read.metrics.output_throughput,
            r.metrics.output_throughput
        ));
        assert_eq!(
            read.metrics.total_output_tokens,
            r.metrics.total_output_tokens
        );
        read.metrics = r.metrics.clone();
        assert_eq!(read, r);
    }

    #[test]
    fn a_file_that_is_not_a_record_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "con1.json", "{\"load\": \"con1\"}");
        let e = load_records(dir.path()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: not a disagg result record (",
                dir.path().join("con1.json").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_missing_directory_has_no_records() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load_records(&dir.path().join("nothing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_upstream_metrics_are_named_in_order_and_know_their_direction() {
        let names: Vec<&str> = record("con1")
            .upstream_metrics()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let all: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, all);
        assert_eq!(maximize("token_throughput"), Some(true));
        assert_eq!(maximize("p99_ttft"), Some(false));
        // Measured extras follow, under upstream's names: d_al, the gen-only step times.
        let mut spec = record("con1");
        spec.metrics.avg_decoded_tokens_per_iter =
            crate::metrics::PerIterStats::of(&[2.0, 3.0], &[50.0, 99.0]);
        spec.gen_step_time_ms = Some(crate::steptime::StepTimeStats {
            mean: 8.05,
            median: 8.0,
            std: 0.1,
            p75: 8.1,
            p99: 8.3,
        });
        let extra: Vec<(&str, f64)> = spec.upstream_metrics()[METRICS.len()..].to_vec();
        assert_eq!(
            extra,
            [
                ("al", 2.5),
                ("mean_gen_worker_per_iter_device_step_time", 8.05),
                ("median_gen_worker_per_iter_device_step_time", 8.0),
                ("std_gen_worker_per_iter_device_step_time", 0.1),
                ("p75_gen_worker_per_iter_device_step_time", 8.1),
                ("p99_gen_worker_per_iter_device_step_time", 8.3),
            ]
        );
        assert_eq!(maximize("p99_ttfb"), None);
        assert_eq!(record("rate2").concurrency(), None);
    }
}
