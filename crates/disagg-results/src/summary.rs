//! `summary.json` and the table printed at the end of a run.

use std::fmt::Write as _;

use disagg_bench::stats::Summary as Stat;
use serde::{Deserialize, Serialize};

use crate::record::RunRecord;

/// The version of [`Summary`]'s shape.
pub const SUMMARY_VERSION: u32 = 1;

/// The verdict of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned run finished and is valid.
    Passed,
    /// Every planned run finished, at least one is invalid.
    Invalid,
    /// The run did not finish: a role failed, a timeout, a signal.
    Failed,
}

/// One planned run (one concurrency) of the test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// `con8`.
    pub label: String,
    /// `valid`, `invalid` or `not_run`.
    pub status: String,
    /// Why it is invalid or was not run.
    pub reasons: Vec<String>,
    /// Requests measured.
    pub requests: usize,
    /// Of which failed.
    pub failed: usize,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Output tokens per second per user.
    pub user_throughput: f64,
    /// TTFT median, ms.
    pub ttft_median_ms: f64,
    /// TTFT p99, ms.
    pub ttft_p99_ms: f64,
    /// TPOT median, ms.
    pub tpot_median_ms: f64,
    /// ITL median, ms.
    pub itl_median_ms: f64,
    /// E2EL median, ms.
    pub e2el_median_ms: f64,
    /// E2EL p99, ms.
    pub e2el_p99_ms: f64,
}

/// p99 when it was computed, else the highest percentile there is, else the median.
fn p99(s: &Stat) -> f64 {
    s.percentile(99.0)
        .or_else(|| s.percentiles.last().map(|(_, v)| *v))
        .unwrap_or(s.median)
}

impl RunSummary {
    /// From a record.
    pub fn from_record(r: &RunRecord) -> RunSummary {
        let m = &r.metrics;
        RunSummary {
            label: r.load.clone(),
            status: if r.valid { "valid" } else { "invalid" }.to_string(),
            reasons: r.invalid_reasons.clone(),
            requests: m.total_requests,
            failed: m.failed,
            request_throughput: m.request_throughput,
            output_throughput: m.output_throughput,
            user_throughput: m.user_throughput,
            ttft_median_ms: m.ttft_ms.median,
            ttft_p99_ms: p99(&m.ttft_ms),
            tpot_median_ms: m.tpot_ms.median,
            itl_median_ms: m.itl_ms.median,
            e2el_median_ms: m.e2el_ms.median,
            e2el_p99_ms: p99(&m.e2el_ms),
        }
    }

    /// A planned run that has no record.
    pub fn not_run(label: &str, why: &str) -> RunSummary {
        RunSummary {
            label: label.to_string(),
            status: "not_run".to_string(),
            reasons: vec![why.to_string()],
            requests: 0,
            failed: 0,
            request_throughput: 0.0,
            output_throughput: 0.0,
            user_throughput: 0.0,
            ttft_median_ms: 0.0,
            ttft_p99_ms: 0.0,
            tpot_median_ms: 0.0,
            itl_median_ms: 0.0,
            e2el_median_ms: 0.0,
            e2el_p99_ms: 0.0,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_VERSION`].
    pub summary_version: u32,
    /// The test config's name.
    pub config: String,
    /// The run directory.
    pub run_dir: String,
    /// The verdict.
    pub outcome: Outcome,
    /// Why it failed (the failing role, its exit, ...).
    pub reason: Option<String>,
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it took, s.
    pub duration_s: f64,
    /// From the start to the benchmark's first request, s.
    pub first_request_s: Option<f64>,
    /// Every planned run, in plan order, then any unplanned record.
    pub runs: Vec<RunSummary>,
}

/// What a run was meant to do and how it went; see [`Summary::build`].
#[derive(Debug, Clone)]
pub struct RunFacts<'a> {
    /// Config name.
    pub config: &'a str,
    /// Run directory.
    pub run_dir: &'a str,
    /// Planned labels (`con1`, `con8`).
    pub planned: &'a [String],
    /// Why the run failed, if it did.
    pub failure: Option<&'a str>,
    /// Start, ms since the epoch.
    pub started_unix_ms: u64,
    /// Duration, s.
    pub duration_s: f64,
    /// Time to the first request, s.
    pub first_request_s: Option<f64>,
}

impl Summary {
    /// Combine the plan, the records found and the failure (if any) into the verdict: a planned
    /// run without a record is `not_run` and fails the test.
    pub fn build(facts: &RunFacts<'_>, records: &[RunRecord]) -> Summary {
        let mut runs: Vec<RunSummary> = facts
            .planned
            .iter()
            .map(|label| match records.iter().find(|r| &r.load == label) {
                Some(r) => RunSummary::from_record(r),
                None => RunSummary::not_run(
                    label,
                    &format!("not run: {}", facts.failure.unwrap_or("no result record")),
                ),
            })
            .collect();
        for r in records {
            if !facts.planned.contains(&r.load) {
                runs.push(RunSummary::from_record(r));
            }
        }
        let outcome = if facts.failure.is_some() || runs.iter().any(|r| r.status == "not_run") {
            Outcome::Failed
        } else if runs.iter().any(|r| r.status == "invalid") {
            Outcome::Invalid
        } else {
            Outcome::Passed
        };
        let reason = facts.failure.map(str::to_string).or_else(|| {
            runs.iter()
                .find(|r| r.status != "valid")
                .map(|r| format!("{}: {}", r.label, r.reasons.join("; ")))
        });
        Summary {
            summary_version: SUMMARY_VERSION,
            config: facts.config.to_string(),
            run_dir: facts.run_dir.to_string(),
            outcome,
            reason,
            started_unix_ms: facts.started_unix_ms,
            duration_s: facts.duration_s,
            first_request_s: facts.first_request_s,
            runs,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>6} {:>9} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10}  status",
            "run",
            "reqs",
            "failed",
            "req/s",
            "out tok/s",
            "tok/s/usr",
            "TTFT p50",
            "TPOT p50",
            "E2EL p50",
            "E2EL p99"
        );
        for r in &self.runs {
            if r.status == "not_run" {
                let _ = writeln!(out, "{:<8} {:>94}  not run", r.label, "-");
                continue;
            }
            let _ = writeln!(
                out,
                "{:<8} {:>7} {:>6} {:>9.2} {:>10.1} {:>9.1} {:>8.2}ms {:>7.2}ms {:>8.1}ms {:>8.1}ms  {}",
                r.label,
                r.requests,
                r.failed,
                r.request_throughput,
                r.output_throughput,
                r.user_throughput,
                r.ttft_median_ms,
                r.tpot_median_ms,
                r.e2el_median_ms,
                r.e2el_p99_ms,
                r.status
            );
        }
        out
    }
}
