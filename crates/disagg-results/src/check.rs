//! `disagg check`: a run's gated metrics against their baselines, by upstream's regression
//! rule (`perf_regression_utils.py`, `open_search_db_utils.py`):
//!
//! - History: the case's valid post-merge records (not baselines) of the 90 days before the run
//!   (from the start of that UTC day). The checked record has no day yet when upstream computes
//!   its baseline, so it never counts in its own.
//! - Baseline per metric: a pinned file, else a run marked as the baseline (ours), else the
//!   `d_baseline_<metric>` the latest history record carrying such fields embeds (when
//!   positive), else the rolling rule of [`crate::baseline`] over the history.
//! - Threshold per metric: a `--threshold` flag (ours), else the embedded
//!   `d_threshold_{post|pre}_merge_<metric>` (when positive), else 5 % post-merge, 10 % before.
//! - A pre-merge case is exempt when the latest post-merge record would itself fail the
//!   pre-merge gate against the same baselines: the regression is already on the main branch.
//!
//! [`verdict`] is what a record carries afterwards: `b_is_regression`, `s_regression_info` and,
//! after merge, the `d_baseline_*`/`d_threshold_*` fields inherited from that latest record.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ResultsError;
use crate::baseline::{self, POST_MERGE_THRESHOLD, PRE_MERGE_THRESHOLD};
use crate::record::{METRICS, maximize};
use crate::store::StoredRun;

/// Metrics gated by default, as upstream: output and total token throughput.
pub const DEFAULT_GATED: &[&str] = &["token_throughput", "total_token_throughput"];

/// Metrics gated in a gen-only test, as upstream: the generation workers' step time.
pub const GEN_ONLY_GATED: &[&str] = &[
    "mean_gen_worker_per_iter_device_step_time",
    "median_gen_worker_per_iter_device_step_time",
];

pub use disagg_bench::record::EXTRA_METRICS;

/// Whether more of `metric` is better; `None` for a metric upstream does not check.
pub fn maximizes(metric: &str) -> Option<bool> {
    maximize(metric).or_else(|| {
        EXTRA_METRICS
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, up)| *up)
    })
}

/// The metrics upstream gates for a config: the gen-only step times in a gen-only test, else
/// the two token throughputs, and `al` when either server kind decodes speculatively.
pub fn upstream_gated(config: &disagg_config::TestConfig) -> Vec<String> {
    if !matches!(config.benchmark().mode, disagg_config::Mode::E2e) {
        return GEN_ONLY_GATED.iter().map(|m| (*m).to_string()).collect();
    }
    let mut gated: Vec<String> = DEFAULT_GATED.iter().map(|m| (*m).to_string()).collect();
    if config.ctx().speculative().is_some() || config.gen_().speculative().is_some() {
        gated.push("al".into());
    }
    gated
}

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
    /// Per-metric thresholds (`--threshold`; win over the embedded ones).
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
        if let Some(m) = metrics.iter().find(|m| maximizes(m).is_none()) {
            return Err(ResultsError::Invalid(format!(
                "--metrics: unknown metric `{m}`; use {}",
                METRICS
                    .iter()
                    .chain(EXTRA_METRICS)
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

    fn default_threshold(&self) -> f64 {
        if self.pre_merge {
            self.pre_merge_threshold
        } else {
            self.post_merge_threshold
        }
    }
}

/// Where a baseline came from.
#[derive(Debug, Clone, Serialize)]
pub enum Source {
    /// The rule over this many history runs.
    History(usize),
    /// A run marked as the baseline.
    Marked(i64),
    /// The `d_baseline_*` field embedded in this history run.
    Embedded(i64),
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

/// What a checked record carries afterwards (upstream's fields of the same names).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// `b_is_regression`: a gated metric regressed (exempt or not).
    pub regression: bool,
    /// `s_regression_info`: `Regression in <case>:` and one line per metric with a baseline;
    /// empty without history.
    pub info: String,
    /// After merge: the `d_baseline_*`/`d_threshold_*` fields of the latest history record that
    /// has them, where positive, so the next run inherits them.
    pub embedded: BTreeMap<String, f64>,
}

/// A run's history as the rule sees it.
struct Case<'a> {
    /// Valid post-merge non-baseline runs in the window, oldest first.
    usable: Vec<&'a StoredRun>,
    /// The latest run marked as the baseline.
    marked: Option<&'a StoredRun>,
    /// The latest usable run.
    latest: Option<&'a StoredRun>,
    /// The latest usable run that embeds `d_baseline_*` fields.
    embedded_from: Option<&'a StoredRun>,
}

impl<'a> Case<'a> {
    fn new(run: &StoredRun, history: &'a [StoredRun]) -> Case<'a> {
        let window_start = baseline::window_start(run.created_unix_ms);
        let mut candidates: Vec<&StoredRun> = history
            .iter()
            .filter(|h| {
                h.valid
                    && h.post_merge
                    && h.created_unix_ms >= window_start
                    && h.id != run.id
                    && !(h.run_dir == run.run_dir && h.label == run.label)
            })
            .collect();
        candidates.sort_by_key(|h| (h.created_unix_ms, h.id));
        let marked = candidates.iter().rev().find(|h| h.baseline).copied();
        // Upstream's history query leaves baseline documents out.
        let usable: Vec<&StoredRun> = candidates.into_iter().filter(|h| !h.baseline).collect();
        let latest = usable.last().copied();
        let embedded_from = usable
            .iter()
            .rev()
            .find(|h| h.embedded.keys().any(|k| k.starts_with("d_baseline_")))
            .copied();
        Case {
            usable,
            marked,
            latest,
            embedded_from,
        }
    }

    fn embedded(&self, key: &str) -> Option<f64> {
        self.embedded_from?
            .embedded
            .get(key)
            .copied()
            .filter(|v| *v > 0.0)
    }

    fn baseline(
        &self,
        metric: &str,
        pinned: Option<&BTreeMap<String, f64>>,
    ) -> (Option<f64>, Source) {
        if let Some(v) = pinned.and_then(|p| p.get(metric)) {
            return (Some(*v), Source::File);
        }
        if let Some((id, v)) = self
            .marked
            .and_then(|m| Some((m.id, *m.metrics.get(metric)?)))
        {
            return (Some(v), Source::Marked(id));
        }
        if let (Some(v), Some(from)) = (
            self.embedded(&format!("d_baseline_{metric}")),
            self.embedded_from,
        ) {
            return (Some(v), Source::Embedded(from.id));
        }
        let points: Vec<(u64, f64)> = self
            .usable
            .iter()
            .filter_map(|h| Some((h.created_unix_ms, *h.metrics.get(metric)?)))
            .collect();
        match baseline::baseline(&points, maximizes(metric).unwrap_or(true)) {
            Some(b) if b > 0.0 => (Some(b), Source::History(points.len())),
            _ => (None, Source::None),
        }
    }

    fn threshold(&self, metric: &str, gate: &Gate) -> f64 {
        if let Some(t) = gate.thresholds.get(metric) {
            return *t;
        }
        let key = if gate.pre_merge {
            format!("d_threshold_pre_merge_{metric}")
        } else {
            format!("d_threshold_post_merge_{metric}")
        };
        self.embedded(&key).unwrap_or(gate.default_threshold())
    }
}

fn row(
    run: &StoredRun,
    case: &Case<'_>,
    metric: &str,
    pinned: Option<&BTreeMap<String, f64>>,
    gate: &Gate,
) -> Option<Row> {
    let value = *run.metrics.get(metric)?;
    let up = maximizes(metric).unwrap_or(true);
    let (base, source) = case.baseline(metric, pinned);
    let threshold = case.threshold(metric, gate);
    let verdict = match base {
        None => "no_baseline",
        Some(b) if baseline::regressed(value, b, threshold, up) => "regression",
        Some(_) => "pass",
    };
    Some(Row {
        run: run.label.clone(),
        metric: metric.to_string(),
        value,
        baseline: base,
        threshold,
        diff: base.map(|b| baseline::diff(value, b)),
        verdict,
        source,
    })
}

/// Check one stored run (one concurrency) against its history (the records of its case), a
/// marked baseline run, or a pinned file (`pinned`, metric → value, wins over both).
pub fn check_run(
    run: &StoredRun,
    history: &[StoredRun],
    pinned: Option<&BTreeMap<String, f64>>,
    gate: &Gate,
) -> Vec<Row> {
    let case = Case::new(run, history);
    let mut rows: Vec<Row> = gate
        .metrics
        .iter()
        .filter_map(|m| row(run, &case, m, pinned, gate))
        .collect();
    // Upstream: a pre-merge case is exempt, as a whole, when the latest post-merge record's
    // value of a gated metric would itself fail the pre-merge gate against the same baseline.
    // A value that is absent or not positive does not exempt.
    let main_regressed = || {
        let Some(latest) = case.latest else {
            return false;
        };
        rows.iter().any(|r| {
            let (Some(b), Some(v)) = (r.baseline, latest.metrics.get(&r.metric)) else {
                return false;
            };
            v.is_finite()
                && *v > 0.0
                && baseline::regressed(*v, b, r.threshold, maximizes(&r.metric).unwrap_or(true))
        })
    };
    if gate.pre_merge && rows.iter().any(|r| r.verdict == "regression") && main_regressed() {
        for r in &mut rows {
            if r.verdict == "regression" {
                r.verdict = "exempt";
            }
        }
    }
    rows
}

/// What the record carries after the check: whether a gated metric regressed, upstream's info
/// text over every metric with a baseline, and (after merge) the inherited baseline fields.
pub fn verdict(
    run: &StoredRun,
    history: &[StoredRun],
    pinned: Option<&BTreeMap<String, f64>>,
    gate: &Gate,
) -> Verdict {
    let rows = check_run(run, history, pinned, gate);
    let case = Case::new(run, history);
    let regression = rows
        .iter()
        .any(|r| matches!(r.verdict, "regression" | "exempt"));
    let info = if case.usable.is_empty() && case.marked.is_none() && pinned.is_none() {
        String::new()
    } else {
        let name = run
            .identity
            .get("s_test_case_name")
            .and_then(|v| v.as_str())
            .unwrap_or(&run.label);
        let mut lines = vec![format!("Regression in {name}:")];
        // Upstream's order: the maximized metrics, then the minimized ones.
        let ordered = METRICS
            .iter()
            .chain(EXTRA_METRICS)
            .filter(|(_, up)| *up)
            .chain(METRICS.iter().chain(EXTRA_METRICS).filter(|(_, up)| !*up));
        for (metric, up) in ordered {
            let Some(r) = row(run, &case, metric, pinned, gate) else {
                continue;
            };
            let Some(b) = r.baseline else { continue };
            // Upstream's diff is positive when better.
            let better = if b == 0.0 {
                0.0
            } else if *up {
                (r.value - b) / b * 100.0
            } else {
                (b - r.value) / b * 100.0
            };
            lines.push(format!(
                "  d_{metric}: value={:.4} baseline={b:.4} threshold={:.2}% diff={better:+.2}%",
                r.value,
                r.threshold * 100.0
            ));
        }
        lines.join("\n")
    };
    let embedded = match case.embedded_from {
        Some(from) if run.post_merge => from
            .embedded
            .iter()
            .filter(|(k, v)| {
                (k.starts_with("d_baseline_") || k.starts_with("d_threshold_")) && **v > 0.0
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        _ => BTreeMap::new(),
    };
    Verdict {
        regression,
        info,
        embedded,
    }
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
                Source::Embedded(id) => format!("baseline embedded in history run {id}"),
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
        if maximizes(&k).is_none() {
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

    const DAY: u64 = 86_400_000;
    const T0: u64 = 1_795_000_000_000;

    fn run(id: i64, day: u64, tok: f64) -> StoredRun {
        StoredRun {
            id,
            run_dir: format!("/runs/{id}"),
            label: "con4".into(),
            config_name: "cfg".into(),
            config_hash: "h".into(),
            case_key: "k".into(),
            match_key: "m".into(),
            created_unix_ms: T0 + day * DAY,
            valid: true,
            stored_valid: true,
            post_merge: true,
            baseline: false,
            identity: BTreeMap::from([(
                "s_test_case_name".to_string(),
                serde_json::Value::from("e2e-cfg-con4_iter4_isl8_osl8"),
            )]),
            job: BTreeMap::new(),
            metrics: BTreeMap::from([
                ("token_throughput".to_string(), tok),
                ("total_token_throughput".to_string(), tok * 2.0),
                ("median_ttft".to_string(), 10.0),
            ]),
            tool: "t".into(),
            regression: false,
            regression_info: String::new(),
            embedded: BTreeMap::new(),
        }
    }

    #[test]
    fn an_embedded_baseline_and_threshold_win_over_the_rule() {
        let mut history: Vec<StoredRun> = (0..4).map(|d| run(d, d as u64, 100.0)).collect();
        // The latest record embedding baseline fields sets the bar, not the 100 tok/s history.
        history[2].embedded = BTreeMap::from([
            ("d_baseline_token_throughput".to_string(), 200.0),
            ("d_threshold_post_merge_token_throughput".to_string(), 0.2),
            ("d_threshold_pre_merge_token_throughput".to_string(), 0.3),
            // Not positive: ignored, the rule applies to this metric.
            ("d_baseline_total_token_throughput".to_string(), -1.0),
        ]);
        let new = run(9, 5, 150.0);
        let rows = check_run(&new, &history, None, &Gate::default());
        let tok = &rows[0];
        assert!(matches!(tok.source, Source::Embedded(2)), "{tok:?}");
        assert_eq!((tok.baseline, tok.threshold), (Some(200.0), 0.2));
        // 150 < 200 × (1 − 0.2) = 160
        assert_eq!(tok.verdict, "regression");
        assert!(matches!(rows[1].source, Source::History(4)));
        assert_eq!(rows[1].threshold, POST_MERGE_THRESHOLD);
        let pre = Gate {
            pre_merge: true,
            ..Gate::default()
        };
        // 150 ≥ 200 × (1 − 0.3) = 140
        assert_eq!(check_run(&new, &history, None, &pre)[0].verdict, "pass");
        // A flag wins over the embedded threshold.
        let flagged = Gate::default()
            .with_thresholds(&["token_throughput=0.3".into()])
            .unwrap();
        assert_eq!(check_run(&new, &history, None, &flagged)[0].verdict, "pass");
    }

    #[test]
    fn a_post_merge_verdict_inherits_the_positive_embedded_fields() {
        let mut history: Vec<StoredRun> = (0..3).map(|d| run(d, d as u64, 100.0)).collect();
        history[1].embedded = BTreeMap::from([
            ("d_baseline_token_throughput".to_string(), 90.0),
            ("d_threshold_post_merge_token_throughput".to_string(), 0.07),
            ("d_baseline_median_ttft".to_string(), -1.0),
        ]);
        let new = run(9, 4, 50.0);
        let v = verdict(&new, &history, None, &Gate::default());
        assert!(v.regression);
        assert_eq!(
            v.embedded,
            BTreeMap::from([
                ("d_baseline_token_throughput".to_string(), 90.0),
                ("d_threshold_post_merge_token_throughput".to_string(), 0.07),
            ])
        );
        // Upstream's info: every metric with a baseline, maximized first, diff positive when
        // better. 50 vs 90: (50 − 90) / 90 = −44.44 %; median_ttft 10 vs 10: +0.00 %.
        assert_eq!(
            v.info,
            "Regression in e2e-cfg-con4_iter4_isl8_osl8:\n  \
             d_token_throughput: value=50.0000 baseline=90.0000 threshold=7.00% diff=-44.44%\n  \
             d_total_token_throughput: value=100.0000 baseline=200.0000 threshold=5.00% diff=-50.00%\n  \
             d_median_ttft: value=10.0000 baseline=10.0000 threshold=5.00% diff=+0.00%"
        );
        // Before merge nothing is embedded; without history there is no info.
        let mut pr = new.clone();
        pr.post_merge = false;
        assert!(
            verdict(&pr, &history, None, &Gate::default())
                .embedded
                .is_empty()
        );
        assert_eq!(
            verdict(&new, &[], None, &Gate::default()),
            Verdict::default()
        );
    }

    #[test]
    fn regressed_records_stay_in_later_baselines_as_upstream_keeps_them() {
        // Upstream's history query filters validity, merge and baseline documents, not
        // b_is_regression: a regressed post-merge record lowers the next baselines (the
        // "self-clearing" its README describes) until it is marked invalid.
        let mut history: Vec<StoredRun> = (0..3).map(|d| run(d, d as u64, 100.0)).collect();
        let mut regressed = run(3, 3, 50.0);
        regressed.regression = true;
        history.push(regressed);
        let new = run(9, 4, 80.0);
        let tok = &check_run(&new, &history, None, &Gate::default())[0];
        // Daily 100, 100, 100, 50 → rolling 100, 100, 100, 83.33 → P95 = 100 (k = 2.85 between
        // the sorted 100s).
        assert_eq!(tok.baseline, Some(100.0));
        assert!(matches!(tok.source, Source::History(4)));
        history[3].valid = false;
        assert!(matches!(
            check_run(&new, &history, None, &Gate::default())[0].source,
            Source::History(3)
        ));
    }

    #[test]
    fn the_pre_merge_exemption_covers_the_whole_case() {
        let mut history: Vec<StoredRun> = (0..5).map(|d| run(d, d as u64, 100.0)).collect();
        // Main's latest run: throughput already 20 % down, total throughput fine.
        let mut main = run(5, 5, 80.0);
        main.metrics.insert("total_token_throughput".into(), 200.0);
        history.push(main);
        let pre = Gate {
            pre_merge: true,
            ..Gate::default()
        };
        let mut pr = run(9, 6, 80.0);
        pr.post_merge = false;
        pr.metrics.insert("total_token_throughput".into(), 150.0);
        let rows = check_run(&pr, &history, None, &pre);
        assert!(rows.iter().all(|r| r.verdict == "exempt"), "{rows:?}");
        // Still a regression in the record (only the failure is waived).
        assert!(verdict(&pr, &history, None, &pre).regression);
        // A latest value that is absent or not positive leaves the gate armed.
        history[5].metrics.insert("token_throughput".into(), 0.0);
        let rows = check_run(&pr, &history, None, &pre);
        assert!(rows.iter().all(|r| r.verdict == "regression"), "{rows:?}");
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
        assert_eq!(gate.thresholds["median_ttft"], 0.07);
        assert!(Gate::default().with_metrics(&["speed".into()]).is_err());
        assert!(Gate::default().with_thresholds(&["x".into()]).is_err());
    }
}
