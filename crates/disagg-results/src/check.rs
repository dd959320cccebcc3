//! `disagg check`: a run's gated metrics against their baselines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::baseline::{self, HISTORY_DAYS, POST_MERGE_THRESHOLD, PRE_MERGE_THRESHOLD};
use crate::record::maximize;
use crate::store::StoredRun;

/// Metrics gated by default, as upstream (era E): output and total token throughput.
pub const DEFAULT_GATED: &[&str] = &["token_throughput", "total_token_throughput"];

/// What to gate and how strictly.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Gated metrics (upstream names).
    pub metrics: Vec<String>,
    /// A pre-merge check (wider threshold).
    pub pre_merge: bool,
    /// Default threshold after merge.
    pub post_merge_threshold: f64,
    /// Default threshold before merge.
    pub pre_merge_threshold: f64,
    /// Per-metric thresholds.
    pub thresholds: BTreeMap<String, f64>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            metrics: DEFAULT_GATED.iter().map(|m| (*m).to_string()).collect(),
            pre_merge: false,
            post_merge_threshold: POST_MERGE_THRESHOLD,
            pre_merge_threshold: PRE_MERGE_THRESHOLD,
            thresholds: BTreeMap::new(),
        }
    }
}

impl Gate {
    fn threshold(&self, metric: &str) -> f64 {
        self.thresholds
            .get(metric)
            .copied()
            .unwrap_or(if self.pre_merge {
                self.pre_merge_threshold
            } else {
                self.post_merge_threshold
            })
    }
}

/// Where a baseline came from.
#[derive(Debug, Clone, Serialize)]
pub enum Source {
    /// The rule over this many history runs.
    History(usize),
    /// A run marked as the baseline.
    Marked(i64),
    /// A baseline file.
    File,
    /// Nothing to compare with.
    None,
}

/// One line of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `con8`.
    pub run: String,
    /// Upstream metric name.
    pub metric: String,
    /// This run's value.
    pub value: f64,
    /// The baseline, if any.
    pub baseline: Option<f64>,
    /// Relative threshold.
    pub threshold: f64,
    /// Relative difference from the baseline.
    pub diff: Option<f64>,
    /// `pass`, `regression`, `exempt` (pre-merge, already regressed after merge) or
    /// `no_baseline`.
    pub verdict: &'static str,
    /// Where the baseline came from.
    pub source: Source,
}

/// Check one stored run (one concurrency) against its history, a marked baseline run, or a
/// pinned file (`pinned`, metric → value, wins over both).
pub fn check_run(
    run: &StoredRun,
    history: &[StoredRun],
    pinned: Option<&BTreeMap<String, f64>>,
    gate: &Gate,
) -> Vec<Row> {
    let window_start = run
        .created_unix_ms
        .saturating_sub(HISTORY_DAYS * 86_400_000);
    // Invalid runs and pre-merge runs never count; nor does anything outside the window.
    let usable: Vec<&StoredRun> = history
        .iter()
        .filter(|h| h.valid && h.post_merge && h.created_unix_ms >= window_start && h.id != run.id)
        .collect();
    let marked = usable.iter().rev().find(|h| h.baseline);
    gate.metrics
        .iter()
        .filter_map(|metric| {
            let value = *run.metrics.get(metric)?;
            let up = maximize(metric).unwrap_or(true);
            let (base, source) = if let Some(v) = pinned.and_then(|p| p.get(metric)) {
                (Some(*v), Source::File)
            } else if let Some(m) = marked.and_then(|m| Some((m.id, *m.metrics.get(metric)?))) {
                (Some(m.1), Source::Marked(m.0))
            } else {
                let pts: Vec<(u64, f64)> = usable
                    .iter()
                    .filter_map(|h| Some((h.created_unix_ms, *h.metrics.get(metric)?)))
                    .collect();
                match baseline::baseline(&pts, up) {
                    Some(b) => (Some(b), Source::History(pts.len())),
                    None => (None, Source::None),
                }
            };
            let threshold = gate.threshold(metric);
            // Upstream (era E): a pre-merge case is exempt when the latest post-merge value would
            // itself fail the pre-merge gate — the regression is already on the main branch.
            let latest_post_merge_fails = || {
                let latest = usable.iter().rev().find_map(|h| h.metrics.get(metric))?;
                Some(base.is_some_and(|b| baseline::regressed(*latest, b, threshold, up)))
            };
            let verdict = match base {
                None => "no_baseline",
                Some(b) if baseline::regressed(value, b, threshold, up) => {
                    if gate.pre_merge && latest_post_merge_fails() == Some(true) {
                        "exempt"
                    } else {
                        "regression"
                    }
                }
                Some(_) => "pass",
            };
            Some(Row {
                run: run.label.clone(),
                metric: metric.clone(),
                value,
                baseline: base,
                threshold,
                diff: base.map(|b| baseline::diff(value, b)),
                verdict,
                source,
            })
        })
        .collect()
}

/// The verdict table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<24} {:>12} {:>12} {:>9} {:>9}  verdict",
        "run", "metric", "value", "baseline", "threshold", "diff"
    );
    for r in rows {
        let base = r.baseline.map_or("-".to_string(), |b| format!("{b:.2}"));
        let diff = r
            .diff
            .map_or("-".to_string(), |d| format!("{:+.2}%", d * 100.0));
        let verdict = match r.verdict {
            "regression" => "REGRESSION",
            "no_baseline" => "no baseline",
            "exempt" => "exempt (main already regressed)",
            v => v,
        };
        let _ = writeln!(
            s,
            "{:<8} {:<24} {:>12.2} {:>12} {:>8.1}% {:>9}  {verdict}",
            r.run,
            r.metric,
            r.value,
            base,
            r.threshold * 100.0,
            diff
        );
    }
    s
}

/// `regression.yaml`: the rows, in the upstream info-line spirit, as YAML.
pub fn regression_yaml(config: &str, rows: &[Row]) -> String {
    let mut s = format!(
        "config: {}\nregressed: {}\nchecks:\n",
        serde_json::Value::from(config),
        rows.iter().any(|r| r.verdict == "regression")
    );
    for r in rows {
        let _ = writeln!(s, "  - run: {}", r.run);
        let _ = writeln!(s, "    metric: {}", r.metric);
        let _ = writeln!(s, "    value: {}", r.value);
        let _ = writeln!(
            s,
            "    baseline: {}",
            r.baseline.map_or("null".to_string(), |b| b.to_string())
        );
        let _ = writeln!(s, "    threshold: {}", r.threshold);
        let _ = writeln!(
            s,
            "    diff: {}",
            r.diff.map_or("null".to_string(), |d| d.to_string())
        );
        let _ = writeln!(s, "    verdict: {}", r.verdict);
        let _ = writeln!(
            s,
            "    source: {}",
            match &r.source {
                Source::History(n) => format!("history of {n} runs"),
                Source::Marked(id) => format!("marked baseline run {id}"),
                Source::File => "baseline file".to_string(),
                Source::None => "none".to_string(),
            }
        );
    }
    s
}
