//! `disagg check`: a run's gated metrics against their baselines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ResultsError;
use crate::baseline::{self, HISTORY_DAYS, POST_MERGE_THRESHOLD, PRE_MERGE_THRESHOLD};
use crate::record::{METRICS, maximize};
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
    /// The gate without flags: pre-merge unless `post_merge`, thresholds from the config's
    /// `results:` section, upstream's gated metrics.
    pub fn from_config(results: Option<&disagg_config::Results>, post_merge: bool) -> Gate {
        let mut gate = Gate {
            pre_merge: !post_merge,
            ..Gate::default()
        };
        if let Some(r) = results {
            if let Some(t) = r.post_merge_threshold {
                gate.post_merge_threshold = t;
            }
            if let Some(t) = r.pre_merge_threshold {
                gate.pre_merge_threshold = t;
            }
        }
        gate
    }

    /// Narrow the gated metrics to `metrics` (when any; each must be a known metric).
    pub fn with_metrics(mut self, metrics: &[String]) -> Result<Gate, ResultsError> {
        if metrics.is_empty() {
            return Ok(self);
        }
        if let Some(m) = metrics
            .iter()
            .find(|m| !METRICS.iter().any(|(n, _)| n == m))
        {
            return Err(ResultsError::Invalid(format!(
                "--metrics: unknown metric `{m}`; use {}",
                METRICS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.metrics = metrics.to_vec();
        Ok(self)
    }

    /// Per-metric thresholds from `metric=fraction` items.
    pub fn with_thresholds(mut self, items: &[String]) -> Result<Gate, ResultsError> {
        for item in items {
            let (m, v) = item.split_once('=').ok_or_else(|| {
                ResultsError::Invalid(format!(
                    "--threshold `{item}`: write metric=fraction, e.g. token_throughput=0.07"
                ))
            })?;
            let v: f64 = v.parse().map_err(|_| {
                ResultsError::Invalid(format!("--threshold `{item}`: `{v}` is not a number"))
            })?;
            self.thresholds.insert(m.to_string(), v);
        }
        Ok(self)
    }

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

/// A pinned baseline file: `metric: value` pairs (YAML or JSON, one per line).
pub fn read_baseline(path: &std::path::Path) -> Result<BTreeMap<String, f64>, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_baseline(&path.display().to_string(), &text)
}

fn parse_baseline(file: &str, text: &str) -> Result<BTreeMap<String, f64>, ResultsError> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() || line == "{" || line == "}" {
            continue;
        }
        let at = format!("{file}:{}", n + 1);
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ResultsError::Invalid(format!("{at}: write `metric: value`")))?;
        let k = k.trim().trim_matches('"').to_string();
        let v = v.trim().trim_end_matches(',');
        let v: f64 = v
            .parse()
            .map_err(|_| ResultsError::Invalid(format!("{at}: `{v}` is not a number for {k}")))?;
        if !METRICS.iter().any(|(m, _)| *m == k) {
            return Err(ResultsError::Invalid(format!("{at}: unknown metric `{k}`")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_files_name_the_line_of_a_bad_value() {
        let ok = parse_baseline("b.yaml", "# pinned\ntoken_throughput: 100.5\n").unwrap();
        assert_eq!(ok["token_throughput"], 100.5);
        let json = parse_baseline("b.json", "{\n  \"median_ttft\": 12,\n}\n").unwrap();
        assert_eq!(json["median_ttft"], 12.0);
        let bad = parse_baseline("b.yaml", "token_throughput: fast\n").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "b.yaml:1: `fast` is not a number for token_throughput"
        );
        let unknown = parse_baseline("b.yaml", "\nspeed: 1\n").unwrap_err();
        assert_eq!(unknown.to_string(), "b.yaml:2: unknown metric `speed`");
    }

    #[test]
    fn gates_take_the_config_thresholds_then_the_flags() {
        let results = disagg_config::Results {
            db: None,
            post_merge_threshold: Some(0.2),
            pre_merge_threshold: None,
        };
        let gate = Gate::from_config(Some(&results), true)
            .with_metrics(&["median_ttft".into()])
            .unwrap()
            .with_thresholds(&["median_ttft=0.07".into()])
            .unwrap();
        assert!(!gate.pre_merge);
        assert_eq!(gate.post_merge_threshold, 0.2);
        assert_eq!(gate.metrics, ["median_ttft"]);
        assert_eq!(gate.threshold("median_ttft"), 0.07);
        assert!(Gate::default().with_metrics(&["speed".into()]).is_err());
        assert!(Gate::default().with_thresholds(&["x".into()]).is_err());
    }
}
