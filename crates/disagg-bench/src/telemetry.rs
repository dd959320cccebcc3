//! What the servers themselves say during a run: every `interval` the load generator reads each
//! target's Prometheus `/metrics` (the workers' and the router's; parsed by the
//! `prometheus-parse` crate) and, when `nvidia-smi` is on the PATH, the GPUs' utilization,
//! memory and power. The raw series go to `telemetry/<run>.jsonl`; [`summarize`] turns them into
//! the record's [`TelemetrySummary`] (mean and max KV usage and queue depth, prefix-cache hit
//! rate over the window, GPU figures, and the series the report draws), and [`diagnose`] into
//! the lines that explain an invalid or regressed run.
//!
//! Telemetry never fails a run: a target that does not answer, answers an error, answers
//! something that is not Prometheus text, or has a metric only from some point on, is skipped
//! where it has nothing, with one warning per target and kind of problem (aiperf #970: a metric
//! that appeared mid-run crashed the benchmark).
//!
//! Metrics read (the first present wins; values of all label sets are summed): KV usage
//! `disagg_sim_kv_cache_usage_ratio`, `vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc`,
//! `sglang:token_usage`; queue `disagg_sim_requests_waiting`, `vllm:num_requests_waiting`,
//! `sglang:num_queue_reqs`; running `disagg_sim_requests_running`, `vllm:num_requests_running`,
//! `sglang:num_running_reqs`, `disagg_router_worker_in_flight`; prefix-cache counters
//! `disagg_sim_prefix_cache_{hits,queries}_total`, `vllm:prefix_cache_{hits,queries}_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A `/metrics` endpoint to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `CTX_0`, `GEN_0`, `DISAGG_SERVER`, ...
    pub name: String,
    /// `http://host:port/metrics`.
    pub url: String,
}

/// One read of one target (or of the GPUs, target `gpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scrape {
    /// Seconds from the run's start.
    pub t: f64,
    /// Which target.
    pub target: String,
    /// `metric{labels}` → value; empty when the read failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, f64>,
    /// Why the read gave nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What scraping a run gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Every read, in time order.
    pub scrapes: Vec<Scrape>,
    /// One per target and kind of problem.
    pub warnings: Vec<String>,
}

/// A gauge over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean of the reads that had it.
    pub mean: f64,
    /// Largest value.
    pub max: f64,
    /// When it was first reached, seconds from the start.
    pub max_at_s: f64,
}

/// One target over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// The target.
    pub name: String,
    /// Reads that gave samples.
    pub scrapes: u32,
    /// KV-cache usage, 0..1.
    pub kv_usage: Option<Stat>,
    /// Requests queued.
    pub queue: Option<Stat>,
    /// Requests running (in flight, for a router).
    pub running: Option<Stat>,
    /// Prompt tokens found in the prefix cache over those looked up, during the run.
    pub cache_hit_rate: Option<f64>,
    /// `(t, KV usage)` per read.
    #[serde(default)]
    pub kv_usage_series: Vec<(f64, f64)>,
    /// `(t, queued)` per read.
    #[serde(default)]
    pub queue_series: Vec<(f64, f64)>,
}

/// One GPU over a run (from `nvidia-smi`, or a DCGM exporter read as a target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSummary {
    /// `nvidia-smi`'s index (DCGM's `gpu` label).
    pub index: u32,
    /// The target whose DCGM exporter reported it; `None`: `nvidia-smi` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Utilization, %.
    pub utilization: Option<Stat>,
    /// Memory used, MiB.
    pub memory_used_mib: Option<Stat>,
    /// Power draw, W.
    pub power_w: Option<Stat>,
}

/// The telemetry of one run, as its record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    /// Seconds between reads.
    pub interval_s: f64,
    /// Each target.
    pub targets: Vec<TargetSummary>,
    /// Each GPU, when `nvidia-smi` answered.
    #[serde(default)]
    pub gpus: Vec<GpuSummary>,
    /// The client's output tokens per second, per second of the run.
    #[serde(default)]
    pub client_output_tokens_per_s: Vec<(f64, f64)>,
    /// What could not be read.
    #[serde(default)]
    pub warnings: Vec<String>,
}

// Each engine's names. TensorRT-LLM's are those of `trtllm-serve`'s `/prometheus/metrics`
// (`tensorrt_llm/metrics/collector.py`, `MetricsCollector.log_iteration_stats`; see
// docs/upstream.md): `kv_cache_utilization` is used / max blocks, a fraction as vLLM's.
const KV_USAGE: &[&str] = &[
    "disagg_sim_kv_cache_usage_ratio",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "trtllm_kv_cache_utilization",
];
const QUEUE: &[&str] = &[
    "disagg_sim_requests_waiting",
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "trtllm_num_requests_waiting",
];
const RUNNING: &[&str] = &[
    "disagg_sim_requests_running",
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "trtllm_num_requests_running",
    "disagg_router_worker_in_flight",
];

/// A cache hit rate from two counters: hits over lookups, or hits over hits + misses.
#[derive(Clone, Copy)]
enum Hits {
    /// (hits, lookups).
    OfQueries(&'static str, &'static str),
    /// (hits, misses): TensorRT-LLM counts reused and missed blocks.
    AndMisses(&'static str, &'static str),
}

const HITS: &[Hits] = &[
    Hits::OfQueries(
        "disagg_sim_prefix_cache_hits_total",
        "disagg_sim_prefix_cache_queries_total",
    ),
    Hits::OfQueries(
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
    ),
    Hits::AndMisses(
        "trtllm_kv_cache_reused_blocks_total",
        "trtllm_kv_cache_missed_blocks_total",
    ),
];

/// The DCGM exporter's GPU fields (`dcgm-exporter`'s default counters, one sample per GPU,
/// labelled `gpu="<index>"`) and the [`GpuSummary`] field each fills.
const DCGM: &[(&str, &str)] = &[
    ("DCGM_FI_DEV_GPU_UTIL", "utilization"),
    ("DCGM_FI_DEV_FB_USED", "memory_used_mib"),
    ("DCGM_FI_DEV_POWER_USAGE", "power_w"),
];

/// What stands for `:` in metric names while the parser reads them: `prometheus-parse` 0.2
/// takes names as `\w+`, but the format allows colons (`vllm:num_requests_waiting`).
const COLON: &str = "__colon__";

/// A line with the colons of its metric name replaced by [`COLON`].
fn escape_colons(line: &str) -> String {
    let (head, rest) = match line.strip_prefix('#') {
        // `# HELP name ...` / `# TYPE name ...`: the third word.
        Some(_) => {
            let mut words = line.splitn(4, ' ');
            let (hash, kind, name, rest) = (words.next(), words.next(), words.next(), words.next());
            return match (hash, kind, name) {
                (Some(h), Some(k), Some(n)) => format!(
                    "{h} {k} {}{}",
                    n.replace(':', COLON),
                    rest.map_or(String::new(), |r| format!(" {r}"))
                ),
                _ => line.to_string(),
            };
        }
        None => line.split_at(line.find(['{', ' ', '\t']).unwrap_or(line.len())),
    };
    format!("{}{rest}", head.replace(':', COLON))
}

/// Prometheus text → `metric{labels}` → value; `None` when it holds no sample at all.
pub fn parse_metrics(text: &str) -> Option<BTreeMap<String, f64>> {
    let lines = text.lines().map(|l| Ok(escape_colons(l)));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            // Histograms and summaries are not summarized here.
            _ => continue,
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let metric = s.metric.replace(COLON, ":");
        let key = if labels.is_empty() {
            metric
        } else {
            format!("{metric}{{{}}}", labels.join(","))
        };
        out.insert(key, v);
    }
    (!out.is_empty()).then_some(out)
}

/// The sum over label sets of the first of `names` present in `samples`.
fn first_of(samples: &BTreeMap<String, f64>, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|name| {
        let mut found = false;
        let sum: f64 = samples
            .iter()
            .filter(|(k, _)| {
                k.as_str() == *name
                    || k.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{'))
            })
            .inspect(|_| found = true)
            .map(|(_, v)| v)
            .sum();
        found.then_some(sum)
    })
}

fn stat(points: &[(f64, f64)]) -> Option<Stat> {
    let first = points.first()?;
    let mut max = *first;
    for p in points {
        if p.1 > max.1 {
            max = *p;
        }
    }
    Some(Stat {
        mean: points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64,
        max: max.1,
        max_at_s: max.0,
    })
}

/// The record's summary of `series` (and the client's output tokens per second).
pub fn summarize(
    series: &Series,
    interval: Duration,
    client_tokens_per_s: Vec<(f64, f64)>,
) -> TelemetrySummary {
    let names: BTreeSet<&str> = series
        .scrapes
        .iter()
        .filter(|s| s.target != "gpu")
        .map(|s| s.target.as_str())
        .collect();
    let targets = names
        .into_iter()
        .map(|name| {
            let reads: Vec<&Scrape> = series
                .scrapes
                .iter()
                .filter(|s| s.target == name && !s.samples.is_empty())
                .collect();
            let pick = |names: &[&str]| -> Vec<(f64, f64)> {
                reads
                    .iter()
                    .filter_map(|s| Some((s.t, first_of(&s.samples, names)?)))
                    .collect()
            };
            let kv = pick(KV_USAGE);
            let queue = pick(QUEUE);
            // Hit rate over the window: counters at the last read minus the first read that had
            // them (a counter that appears late counts from its first read).
            let cache_hit_rate = HITS.iter().find_map(|&pair| {
                let (hits, other) = match pair {
                    Hits::OfQueries(h, q) | Hits::AndMisses(h, q) => (h, q),
                };
                let both: Vec<(f64, f64)> = reads
                    .iter()
                    .filter_map(|s| {
                        Some((
                            first_of(&s.samples, &[hits])?,
                            first_of(&s.samples, &[other])?,
                        ))
                    })
                    .collect();
                let (first, last) = (both.first()?, both.last()?);
                let (hit, other) = (last.0 - first.0, last.1 - first.1);
                let asked = match pair {
                    Hits::OfQueries(..) => other,
                    Hits::AndMisses(..) => hit + other,
                };
                (asked > 0.0).then(|| hit / asked)
            });
            TargetSummary {
                name: name.to_string(),
                scrapes: reads.len() as u32,
                kv_usage: stat(&kv),
                queue: stat(&queue),
                running: stat(&pick(RUNNING)),
                cache_hit_rate,
                kv_usage_series: kv,
                queue_series: queue,
            }
        })
        .collect();
    TelemetrySummary {
        interval_s: interval.as_secs_f64(),
        targets,
        gpus: gpu_summaries(series),
        client_output_tokens_per_s: client_tokens_per_s,
        warnings: series.warnings.clone(),
    }
}

/// One GPU figure: its source (`None`: nvidia-smi here), the GPU's index, the field.
type GpuField<'a> = (Option<&'a str>, u32, &'static str);

fn gpu_summaries(series: &Series) -> Vec<GpuSummary> {
    let mut points: BTreeMap<GpuField<'_>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &series.scrapes {
        let source = (s.target != "gpu").then_some(s.target.as_str());
        for (key, &v) in &s.samples {
            let found = match source {
                None => nvidia_smi_key(key),
                Some(_) => dcgm_key(key),
            };
            if let Some((index, field)) = found {
                points
                    .entry((source, index, field))
                    .or_default()
                    .push((s.t, v));
            }
        }
    }
    let gpus: BTreeSet<(Option<&str>, u32)> = points.keys().map(|k| (k.0, k.1)).collect();
    gpus.into_iter()
        .map(|(source, index)| {
            let field = |f: &str| stat(points.get(&(source, index, f))?);
            GpuSummary {
                index,
                source: source.map(str::to_string),
                utilization: field("utilization"),
                memory_used_mib: field("memory_used_mib"),
                power_w: field("power_w"),
            }
        })
        .collect()
}

/// `gpu<i>.<field>` (what [`parse_nvidia_smi`] writes) → (i, field).
fn nvidia_smi_key(key: &str) -> Option<(u32, &'static str)> {
    let (gpu, field) = key.split_once('.')?;
    let index = gpu.strip_prefix("gpu")?.parse().ok()?;
    DCGM.iter()
        .map(|d| d.1)
        .find(|f| *f == field)
        .map(|f| (index, f))
}

/// `DCGM_FI_DEV_GPU_UTIL{...,gpu="3",...}` → (3, `utilization`).
fn dcgm_key(key: &str) -> Option<(u32, &'static str)> {
    let (name, labels) = key.split_once('{')?;
    let field = DCGM.iter().find(|d| d.0 == name)?.1;
    let index = labels
        .split(',')
        .find_map(|l| l.strip_prefix("gpu=\""))?
        .trim_end_matches('}')
        .trim_end_matches('"')
        .parse()
        .ok()?;
    Some((index, field))
}

/// `nvidia-smi --query-gpu=index,utilization.gpu,memory.used,power.draw
/// --format=csv,noheader,nounits` output → `gpu<i>.<field>` samples (`[N/A]` skipped).
pub fn parse_nvidia_smi(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, util, mem, power] = cols.as_slice() else {
            continue;
        };
        let Ok(i) = index.parse::<u32>() else {
            continue;
        };
        for (name, v) in [
            ("utilization", util),
            ("memory_used_mib", mem),
            ("power_w", power),
        ] {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(format!("gpu{i}.{name}"), v);
            }
        }
    }
    out
}

/// Lines that point at what the telemetry says went wrong: a KV cache that filled up, a queue
/// that built up, a cache that hardly hit. Empty when nothing stands out.
pub fn diagnose(t: &TelemetrySummary) -> Vec<String> {
    let mut out = Vec::new();
    for s in &t.targets {
        if let Some(kv) = s.kv_usage.filter(|k| k.max >= 0.95) {
            out.push(format!(
                "{}: KV usage reached {:.0} % at {:.0} s",
                s.name,
                kv.max * 100.0,
                kv.max_at_s
            ));
        }
        if let Some(q) = s.queue.filter(|q| q.max >= 1.0) {
            out.push(format!(
                "{}: {:.0} requests queued at {:.0} s (mean {:.1})",
                s.name, q.max, q.max_at_s, q.mean
            ));
        }
    }
    for g in &t.gpus {
        if let Some(u) = g.utilization.filter(|u| u.mean < 10.0) {
            out.push(format!(
                "GPU {}: {:.0} % utilized on average",
                g.index, u.mean
            ));
        }
    }
    for w in &t.warnings {
        out.push(format!("telemetry: {w}"));
    }
    out
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn read_target(client: &HttpClient, url: &str, timeout: Duration) -> Result<String, String> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("no answer ({e})"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the answer broke ({e})"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "answered something that is not text".into())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Whether `nvidia-smi` can be run here.
pub fn nvidia_smi_present() -> bool {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nvidia_smi() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,utilization.gpu,memory.used,power.draw",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Read every target (and `nvidia-smi` when `gpus`) every `interval` until `stop` fires, the
/// first read at once. Problems become warnings, each said once per target and kind.
pub async fn scrape(
    targets: &[Target],
    gpus: bool,
    interval: Duration,
    stop: &CancellationToken,
) -> Series {
    let mut series = Series::default();
    if targets.is_empty() && !gpus {
        return series;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let start = Instant::now();
    let mut said: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = interval.mul_f64(0.8).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        let reads = targets.iter().map(|target| {
            let client = &client;
            async move { (target, read_target(client, &target.url, timeout).await) }
        });
        let (results, smi) = tokio::join!(futures_util::future::join_all(reads), async {
            if gpus {
                tokio::task::spawn_blocking(nvidia_smi).await.ok().flatten()
            } else {
                None
            }
        });
        for (target, result) in results {
            let (samples, error, kind) = match result {
                Ok(text) => match parse_metrics(&text) {
                    Some(samples) => (samples, None, ""),
                    None => (
                        BTreeMap::new(),
                        Some("its /metrics is not Prometheus text (no sample read)".to_string()),
                        "malformed",
                    ),
                },
                Err(e) => (BTreeMap::new(), Some(e), "unreachable"),
            };
            if let Some(e) = &error {
                if said.insert((target.name.clone(), kind)) {
                    let w = format!(
                        "{} ({}): {e}; its telemetry has gaps",
                        target.name, target.url
                    );
                    eprintln!("warning: telemetry: {w}");
                    series.warnings.push(w);
                }
            }
            series.scrapes.push(Scrape {
                t,
                target: target.name.clone(),
                samples,
                error,
            });
        }
        if let Some(text) = smi {
            series.scrapes.push(Scrape {
                t,
                target: "gpu".into(),
                samples: parse_nvidia_smi(&text),
                error: None,
            });
        }
    }
    series
}

/// Write `series` as JSON lines to `path` (one read per line).
pub fn write_series(path: &Path, series: &Series) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for s in &series.scrapes {
        serde_json::to_writer(&mut f, s)?;
        f.write_all(b"\n")?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(t: f64, target: &str, text: &str) -> Scrape {
        Scrape {
            t,
            target: target.into(),
            samples: parse_metrics(text).unwrap_or_default(),
            error: None,
        }
    }

    #[test]
    fn prometheus_text_is_read_by_the_parser_and_garbage_is_not() {
        let text = "# HELP disagg_sim_requests_waiting Queued.\n# TYPE disagg_sim_requests_waiting gauge\ndisagg_sim_requests_waiting{role=\"context\"} 3\nvllm:num_requests_running{model_name=\"m\",engine=\"0\"} 2\nplain 1.5\n";
        let m = parse_metrics(text).unwrap();
        assert_eq!(m["disagg_sim_requests_waiting{role=\"context\"}"], 3.0);
        assert_eq!(
            m["vllm:num_requests_running{engine=\"0\",model_name=\"m\"}"],
            2.0
        );
        assert_eq!(m["plain"], 1.5);
        assert_eq!(first_of(&m, QUEUE), Some(3.0));
        assert_eq!(first_of(&m, KV_USAGE), None);
        assert!(parse_metrics("<html>not metrics</html>").is_none());
        assert!(parse_metrics("").is_none());
    }

    #[test]
    fn a_summary_takes_metrics_that_appear_late_and_skips_gaps() {
        let series = Series {
            scrapes: vec![
                read(0.0, "CTX_0", "disagg_sim_requests_waiting 0\n"),
                Scrape {
                    t: 1.0,
                    target: "CTX_0".into(),
                    samples: BTreeMap::new(),
                    error: Some("no answer".into()),
                },
                read(
                    2.0,
                    "CTX_0",
                    "disagg_sim_requests_waiting 4\ndisagg_sim_kv_cache_usage_ratio 0.5\ndisagg_sim_prefix_cache_hits_total 100\ndisagg_sim_prefix_cache_queries_total 1000\n",
                ),
                read(
                    3.0,
                    "CTX_0",
                    "disagg_sim_requests_waiting 2\ndisagg_sim_kv_cache_usage_ratio 1.0\ndisagg_sim_prefix_cache_hits_total 700\ndisagg_sim_prefix_cache_queries_total 2000\n",
                ),
                read(3.0, "gpu", "").clone(),
            ],
            warnings: vec!["CTX_0 (u): no answer; its telemetry has gaps".into()],
        };
        let mut series = series;
        series.scrapes[4].samples = parse_nvidia_smi("0, 80, 1000, 300.5\n1, [N/A], 10, 20\n");
        let s = summarize(&series, Duration::from_secs(1), vec![(0.5, 10.0)]);
        let t = &s.targets[0];
        assert_eq!((t.name.as_str(), t.scrapes), ("CTX_0", 3));
        let q = t.queue.unwrap();
        assert_eq!((q.mean, q.max, q.max_at_s), (2.0, 4.0, 2.0));
        let kv = t.kv_usage.unwrap();
        assert_eq!((kv.mean, kv.max, kv.max_at_s), (0.75, 1.0, 3.0));
        assert_eq!(t.kv_usage_series, [(2.0, 0.5), (3.0, 1.0)]);
        assert_eq!(t.cache_hit_rate, Some(0.6), "600 of 1000 during the window");
        assert_eq!(s.gpus.len(), 2);
        assert_eq!(s.gpus[0].power_w.unwrap().max, 300.5);
        assert_eq!(s.gpus[1].utilization, None);
        let d = diagnose(&s);
        assert_eq!(
            d,
            [
                "CTX_0: KV usage reached 100 % at 3 s",
                "CTX_0: 4 requests queued at 2 s (mean 2.0)",
                "telemetry: CTX_0 (u): no answer; its telemetry has gaps"
            ]
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: TelemetrySummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    /// `trtllm-serve`'s `/prometheus/metrics` as its `MetricsCollector` writes it (names from
    /// `tensorrt_llm/metrics/collector.py`; values and labels made up here): KV usage, queue,
    /// running requests, and the hit rate from reused and missed blocks over the window.
    #[test]
    fn tensorrt_llm_metric_names_are_summarized() {
        let exposition = |waiting: u32, kv: f64, reused: u32, missed: u32| {
            format!(
                "# HELP trtllm_num_requests_waiting Number of queued requests\n\
                 # TYPE trtllm_num_requests_waiting gauge\n\
                 trtllm_num_requests_waiting{{engine_type=\"trtllm\",model_name=\"m\"}} {waiting}\n\
                 # TYPE trtllm_num_requests_running gauge\n\
                 trtllm_num_requests_running{{engine_type=\"trtllm\",model_name=\"m\"}} 8\n\
                 # TYPE trtllm_kv_cache_utilization gauge\n\
                 trtllm_kv_cache_utilization{{engine_type=\"trtllm\",model_name=\"m\"}} {kv}\n\
                 # TYPE trtllm_kv_cache_hit_rate gauge\n\
                 trtllm_kv_cache_hit_rate{{engine_type=\"trtllm\",model_name=\"m\"}} 0.9\n\
                 # TYPE trtllm_kv_cache_reused_blocks_total counter\n\
                 trtllm_kv_cache_reused_blocks_total{{engine_type=\"trtllm\",model_name=\"m\"}} {reused}\n\
                 # TYPE trtllm_kv_cache_missed_blocks_total counter\n\
                 trtllm_kv_cache_missed_blocks_total{{engine_type=\"trtllm\",model_name=\"m\"}} {missed}\n\
                 # TYPE trtllm_time_to_first_token_seconds histogram\n\
                 trtllm_time_to_first_token_seconds_bucket{{le=\"0.1\"}} 3\n\
                 trtllm_time_to_first_token_seconds_count 3\n\
                 trtllm_time_to_first_token_seconds_sum 0.2\n"
            )
        };
        let series = Series {
            scrapes: vec![
                read(0.0, "CTX_0", &exposition(0, 0.25, 10, 40)),
                read(1.0, "CTX_0", &exposition(6, 0.75, 40, 50)),
            ],
            warnings: Vec::new(),
        };
        let s = summarize(&series, Duration::from_secs(1), Vec::new());
        let t = &s.targets[0];
        assert_eq!(t.queue.unwrap().max, 6.0);
        assert_eq!(t.running.unwrap().mean, 8.0);
        assert_eq!(t.kv_usage.unwrap().max, 0.75);
        assert_eq!(
            t.cache_hit_rate,
            Some(0.75),
            "30 blocks reused of 30 + 10 looked up in the window"
        );
    }

    /// A DCGM exporter read as a target (`--scrape dcgm=http://node:9400/metrics`): its GPU
    /// utilization, framebuffer memory and power per `gpu` label become GPU summaries named
    /// after the target, beside nvidia-smi's.
    #[test]
    fn dcgm_exporter_fields_are_gpu_summaries() {
        let exposition = |util: u32, power: f64| {
            format!(
                "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n\
                 # TYPE DCGM_FI_DEV_GPU_UTIL gauge\n\
                 DCGM_FI_DEV_GPU_UTIL{{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA B200\",Hostname=\"n1\"}} {util}\n\
                 DCGM_FI_DEV_GPU_UTIL{{gpu=\"1\",UUID=\"GPU-b\",device=\"nvidia1\",modelName=\"NVIDIA B200\",Hostname=\"n1\"}} 5\n\
                 # HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n\
                 # TYPE DCGM_FI_DEV_FB_USED gauge\n\
                 DCGM_FI_DEV_FB_USED{{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA B200\",Hostname=\"n1\"}} 170000\n\
                 # HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).\n\
                 # TYPE DCGM_FI_DEV_POWER_USAGE gauge\n\
                 DCGM_FI_DEV_POWER_USAGE{{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA B200\",Hostname=\"n1\"}} {power}\n\
                 # TYPE DCGM_FI_DEV_SM_CLOCK gauge\n\
                 DCGM_FI_DEV_SM_CLOCK{{gpu=\"0\",UUID=\"GPU-a\"}} 1965\n"
            )
        };
        let mut smi = read(0.0, "gpu", "");
        smi.samples = parse_nvidia_smi("0, 50, 1000, 100\n");
        let series = Series {
            scrapes: vec![
                read(0.0, "dcgm", &exposition(60, 700.5)),
                read(1.0, "dcgm", &exposition(100, 900.0)),
                smi,
            ],
            warnings: Vec::new(),
        };
        let s = summarize(&series, Duration::from_secs(1), Vec::new());
        let ids: Vec<(Option<&str>, u32)> = s
            .gpus
            .iter()
            .map(|g| (g.source.as_deref(), g.index))
            .collect();
        assert_eq!(ids, [(None, 0), (Some("dcgm"), 0), (Some("dcgm"), 1)]);
        let g0 = &s.gpus[1];
        let util = g0.utilization.unwrap();
        assert_eq!((util.mean, util.max, util.max_at_s), (80.0, 100.0, 1.0));
        assert_eq!(g0.memory_used_mib.unwrap().max, 170_000.0);
        assert_eq!(g0.power_w.unwrap().max, 900.0);
        assert_eq!(s.gpus[2].power_w, None);
        assert_eq!(
            s.gpus[0].utilization.unwrap().max,
            50.0,
            "nvidia-smi's, apart"
        );
    }
}
