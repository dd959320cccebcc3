//! What a sweep's points measured, and the answers made of it: `sweep.json` (every point, its
//! state, runs and measurements), `frontier.json` (the Pareto set of output tok/s per GPU versus
//! tok/s per user over every point × concurrency), the best point under an SLA, and the next
//! concurrency an SLA search tries. Pure: the runtime reads the store and the run directories
//! and hands the measurements over.

use std::collections::BTreeMap;

use disagg_config::Sla;
use serde::{Deserialize, Serialize};

/// Version of `sweep.json` and `frontier.json`; bumped when a field changes meaning.
pub const SWEEP_VERSION: u32 = 1;

/// One stored record of a point (one concurrency of one of its runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The point's name.
    pub point: String,
    /// `con8`.
    pub label: String,
    /// The concurrency.
    pub concurrency: u32,
    /// GPUs the point's servers use (idle GPUs of a node make no tokens; as the run report).
    pub gpus: u32,
    /// Output tokens per second (upstream `token_throughput`).
    pub output_tok_s: f64,
    /// Output tokens per second per GPU.
    pub output_tok_s_per_gpu: f64,
    /// Output tokens per second per user (upstream `user_throughput`).
    pub user_tok_s: f64,
    /// The latency metrics by upstream name (`p99_ttft`, `median_tpot`, ... in ms).
    pub latency_ms: BTreeMap<String, f64>,
    /// The run directory the record came from.
    pub run_dir: String,
    /// Whether it meets the sweep's SLA (`None`: no SLA).
    pub meets_sla: Option<bool>,
    /// The limits it breaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
}

impl Measurement {
    /// A measurement from a stored record's upstream metrics; `None` when it lacks throughputs.
    pub fn from_metrics(
        point: &str,
        label: &str,
        gpus: u32,
        metrics: &BTreeMap<String, f64>,
        run_dir: &str,
        sla: Option<&Sla>,
    ) -> Option<Measurement> {
        let concurrency = label.strip_prefix("con")?.parse().ok()?;
        let output = *metrics.get("token_throughput")?;
        let user = *metrics.get("user_throughput")?;
        let latency_ms: BTreeMap<String, f64> = metrics
            .iter()
            .filter(|(k, _)| crate::record::maximize(k) == Some(false))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let violations = sla
            .map(|s| s.violations(&|m| latency_ms.get(m).copied()))
            .unwrap_or_default();
        Some(Measurement {
            point: point.to_string(),
            label: label.to_string(),
            concurrency,
            gpus,
            output_tok_s: output,
            output_tok_s_per_gpu: output / f64::from(gpus.max(1)),
            user_tok_s: user,
            latency_ms,
            run_dir: run_dir.to_string(),
            meets_sla: sla.map(|_| violations.is_empty()),
            violations,
        })
    }
}

/// The Pareto set of `ms`: the measurements no other beats on both output tok/s per GPU and
/// tok/s per user (at least as good on both, better on one). Indices, by tok/s per user
/// ascending; of identical measurements the first is kept.
pub fn pareto(ms: &[Measurement]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ms.len())
        .filter(|&i| ms[i].user_tok_s.is_finite() && ms[i].output_tok_s_per_gpu.is_finite())
        .collect();
    // Best per user first; among equals, best per GPU first, then the earlier one.
    order.sort_by(|&a, &b| {
        ms[b]
            .user_tok_s
            .total_cmp(&ms[a].user_tok_s)
            .then(
                ms[b]
                    .output_tok_s_per_gpu
                    .total_cmp(&ms[a].output_tok_s_per_gpu),
            )
            .then(a.cmp(&b))
    });
    let mut front = Vec::new();
    let mut best_y = f64::NEG_INFINITY;
    for i in order {
        if ms[i].output_tok_s_per_gpu > best_y {
            best_y = ms[i].output_tok_s_per_gpu;
            front.push(i);
        }
    }
    front.reverse();
    front
}

/// The measurement with the most output tok/s per GPU among those that meet the SLA (ties: the
/// first).
pub fn best_under_sla(ms: &[Measurement]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, m) in ms.iter().enumerate() {
        if m.meets_sla != Some(true) {
            continue;
        }
        if best.is_none_or(|b| m.output_tok_s_per_gpu > ms[b].output_tok_s_per_gpu) {
            best = Some(i);
        }
    }
    best
}

/// The next concurrency an SLA search measures, given whether each measured one met the SLA
/// (`known`), or `None` when the answer is settled: the highest concurrency that meets it lies
/// between the largest passing one below the first failure (`lo`) and that failure (`hi`);
/// bisect while they are more than one apart, double `lo` while nothing failed. Latency is taken
/// to grow with concurrency (vLLM's SLA sweep and aiperf's max-passing-concurrency do the same).
/// The caller bounds the number of extra runs.
pub fn next_probe(known: &BTreeMap<u32, bool>) -> Option<u32> {
    let (lo, hi) = search_bounds(known);
    match hi {
        Some(hi) if hi > lo + 1 => Some(lo + (hi - lo) / 2),
        Some(_) => None,
        None if lo == 0 => None,
        None => Some(lo.saturating_mul(2)),
    }
}

/// The highest concurrency known to meet the SLA below the first failure (0: none).
pub fn sla_concurrency(known: &BTreeMap<u32, bool>) -> u32 {
    search_bounds(known).0
}

fn search_bounds(known: &BTreeMap<u32, bool>) -> (u32, Option<u32>) {
    let hi = known.iter().find(|(_, ok)| !**ok).map(|(c, _)| *c);
    let lo = known
        .iter()
        .filter(|(c, ok)| **ok && hi.is_none_or(|h| **c < h))
        .map(|(c, _)| *c)
        .max()
        .unwrap_or(0);
    (lo, hi)
}

/// One run a point made (the first, a retry, or an SLA probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRun {
    /// Its run directory.
    pub run_dir: String,
    /// The concurrencies it measured.
    pub concurrency: Vec<u32>,
    /// Why it ran: `run`, `retry`, `sla-search`.
    pub purpose: String,
    /// Its Slurm job id, when it was a job.
    pub job_id: Option<u64>,
    /// Wall time of the `disagg run`/`submit` process, s.
    pub elapsed_s: f64,
    /// `passed`, `failed`, `infrastructure`, `interrupted`.
    pub outcome: String,
    /// The failure, if any.
    pub reason: Option<String>,
}

/// One point in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointDoc {
    /// Its name.
    pub name: String,
    /// Its config file (`DIR/points/<name>.yaml`).
    pub config: String,
    /// Content hash of the config and the run's overrides: the point's identity in the store.
    pub key: String,
    /// The axis values, `path → value`.
    pub assignments: Vec<(String, String)>,
    /// Nodes allocated (0 for a point that could not be planned).
    pub nodes: u32,
    /// GPUs allocated.
    pub gpus: u32,
    /// GPUs the servers use.
    pub server_gpus: u32,
    /// Allocated GPUs no server uses.
    pub idle_gpus: u32,
    /// `passed` (stored valid, this sweep or before), `failed`, `interrupted`, `pending`,
    /// `invalid` (the config breaks a rule), `skipped` (it breaks a constraint).
    pub state: String,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// The runs it made in this sweep.
    pub runs: Vec<PointRun>,
    /// Its stored measurements.
    pub measurements: Vec<Measurement>,
    /// With `--sla-search`: the highest concurrency found to meet the SLA (0: none).
    pub sla_concurrency: Option<u32>,
}

/// `DIR/sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepDoc {
    /// [`SWEEP_VERSION`].
    pub sweep_version: u32,
    /// The id every run of the sweep is tagged with in the store (`s_sweep_id`).
    pub sweep_id: String,
    /// The spec file.
    pub spec: String,
    /// The base config.
    pub base: String,
    /// `local`, or `slurm:<cluster>`.
    pub launcher: String,
    /// Most points in flight.
    pub max_parallel: usize,
    /// The SLA, when one was given.
    pub sla: Option<Sla>,
    /// When the sweep (first) started, ms since the epoch.
    pub started_unix_ms: u64,
    /// When this file was written.
    pub updated_unix_ms: u64,
    /// Wall time of this invocation, s.
    pub elapsed_s: f64,
    /// Every point.
    pub points: Vec<PointDoc>,
    /// The best point under the SLA: its measurement.
    pub best: Option<Measurement>,
}

impl SweepDoc {
    /// Every measurement of every point.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.points
            .iter()
            .flat_map(|p| p.measurements.iter().cloned())
            .collect()
    }

    /// `frontier.json` of this sweep.
    pub fn frontier(&self) -> FrontierDoc {
        let all = self.measurements();
        let points = pareto(&all).into_iter().map(|i| all[i].clone()).collect();
        FrontierDoc {
            sweep_version: SWEEP_VERSION,
            sweep_id: self.sweep_id.clone(),
            x: "tok/s per user (user_throughput)".to_string(),
            y: "output tok/s per GPU (token_throughput / server GPUs)".to_string(),
            measurements: all.len(),
            points,
            sla: self.sla.clone(),
            best: self.best.clone(),
        }
    }
}

/// `DIR/frontier.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierDoc {
    /// [`SWEEP_VERSION`].
    pub sweep_version: u32,
    /// The sweep.
    pub sweep_id: String,
    /// What x is.
    pub x: String,
    /// What y is.
    pub y: String,
    /// How many measurements the frontier was taken over.
    pub measurements: usize,
    /// The Pareto set, by tok/s per user ascending.
    pub points: Vec<Measurement>,
    /// The SLA.
    pub sla: Option<Sla>,
    /// The best measurement under it.
    pub best: Option<Measurement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(point: &str, c: u32, user: f64, per_gpu: f64) -> Measurement {
        Measurement {
            point: point.into(),
            label: format!("con{c}"),
            concurrency: c,
            gpus: 1,
            output_tok_s: per_gpu,
            output_tok_s_per_gpu: per_gpu,
            user_tok_s: user,
            latency_ms: BTreeMap::new(),
            run_dir: String::new(),
            meets_sla: None,
            violations: Vec::new(),
        }
    }

    #[test]
    fn the_frontier_keeps_what_nothing_beats_on_both_axes() {
        let ms = vec![
            m("a", 1, 100.0, 10.0),
            m("a", 4, 80.0, 30.0),
            m("b", 1, 90.0, 5.0),  // beaten by a/1
            m("b", 4, 80.0, 30.0), // equal to a/4: the first is kept
            m("b", 16, 40.0, 60.0),
            m("c", 16, 40.0, 55.0), // beaten by b/16
            m("c", 64, 10.0, 61.0),
        ];
        assert_eq!(pareto(&ms), [6, 4, 1, 0]);
        assert!(pareto(&[]).is_empty());
    }

    #[test]
    fn the_best_under_an_sla_has_the_most_per_gpu_among_those_that_meet_it() {
        let mut ms = vec![
            m("a", 1, 100.0, 10.0),
            m("a", 4, 80.0, 30.0),
            m("a", 16, 40.0, 60.0),
        ];
        assert_eq!(best_under_sla(&ms), None, "no SLA, no answer");
        ms[0].meets_sla = Some(true);
        ms[1].meets_sla = Some(true);
        ms[2].meets_sla = Some(false);
        assert_eq!(best_under_sla(&ms), Some(1));
    }

    #[test]
    fn an_sla_search_bisects_between_a_pass_and_a_failure() {
        let mut known = BTreeMap::from([(1, true), (8, false)]);
        let mut probes = Vec::new();
        // Latency meets the SLA up to concurrency 5.
        while let Some(c) = next_probe(&known) {
            probes.push(c);
            known.insert(c, c <= 5);
        }
        assert_eq!(probes, [4, 6, 5]);
        assert_eq!(sla_concurrency(&known), 5);
    }

    #[test]
    fn an_sla_search_doubles_while_nothing_fails_and_stops_when_nothing_passes() {
        let known = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(next_probe(&known), Some(4));
        let none = BTreeMap::from([(1, false), (4, false)]);
        assert_eq!(next_probe(&none), None);
        assert_eq!(sla_concurrency(&none), 0);
        let lowest_fails = BTreeMap::from([(4, false), (16, false)]);
        assert_eq!(next_probe(&lowest_fails), Some(2));
        // A pass above the first failure (noise) does not move the answer past the failure.
        let noisy = BTreeMap::from([(1, true), (2, false), (4, true)]);
        assert_eq!((next_probe(&noisy), sla_concurrency(&noisy)), (None, 1));
    }

    #[test]
    fn measurements_read_throughputs_and_check_the_sla() {
        let metrics = BTreeMap::from([
            ("token_throughput".to_string(), 400.0),
            ("user_throughput".to_string(), 50.0),
            ("p99_ttft".to_string(), 120.0),
            ("median_tpot".to_string(), 21.0),
        ]);
        let sla = Sla::parse_flag("p99_ttft_ms=100,median_tpot_ms=25").unwrap();
        let got = Measurement::from_metrics("p", "con8", 4, &metrics, "/r", Some(&sla)).unwrap();
        assert_eq!((got.concurrency, got.output_tok_s_per_gpu), (8, 100.0));
        assert_eq!(got.meets_sla, Some(false));
        assert_eq!(got.violations, ["p99_ttft 120.0 ms > 100 ms"]);
        assert!(!got.latency_ms.contains_key("token_throughput"));
        assert!(Measurement::from_metrics("p", "rate2", 4, &metrics, "/r", None).is_none());
    }
}
