//! The accuracy step (`accuracy.enable_accuracy_test`): after the benchmark, `lm_eval` runs
//! every configured task against the router, its scores are read back from the results file it
//! writes, gated as upstream gates them, and recorded in `results/accuracy.json`.
//!
//! - The command is upstream's (`AccuracyConfig.build_lm_eval_invocations` in
//!   `tests/integration/defs/perf/test_perf_sanity.py`): `lm_eval --model <model> --tasks <task>
//!   --model_args model=<model path>,base_url=http://<router>/v1/completions,<model_args_extra>
//!   --log_samples --output_path <dir>/accuracy_eval_<task>`, then `--include_path` and every
//!   `extra_kwargs` entry as `--<key> <value>` (`--<key>` for a true flag).
//! - The scores are every `<metric>,<filter>` number of the task in lm_eval's
//!   `results_<time>.json` (`{"results": {"gsm8k": {"exact_match,flexible-extract": 0.91, ...}}}`).
//! - The gate is upstream's hypothesis test (`perf/disagg/reporting/accuracy_validator.py`): for a
//!   dataset of `metadata.accuracy.datasets`, with its own or the dataset's default `alpha`,
//!   `sigma` and `num_samples`, the run passes when `100 × exact_match,<filter> ≥ reference +
//!   z(alpha) × sqrt(2 sigma² / n)` (the reference in percent; `≤ reference − …` when lower is
//!   better). Upstream reads the score from lm_eval's printed table (4 decimals); the results
//!   file has it unrounded.

use std::path::{Path, PathBuf};

use disagg_config::{AccuracyTask, DatasetThreshold, KwargValue};
use serde::{Deserialize, Serialize};

/// The version of [`AccuracyRecord`]'s shape.
pub const ACCURACY_RECORD_VERSION: u32 = 1;

/// The endpoint an lm_eval model type talks to.
fn endpoint(model: &str) -> &'static str {
    match model {
        "local-chat-completions" => "v1/chat/completions",
        _ => "v1/completions",
    }
}

/// The directory lm_eval writes one task's results to, under `dir`.
pub fn output_dir(dir: &Path, task: &AccuracyTask) -> PathBuf {
    dir.join(format!("accuracy_eval_{}", task.tasks))
}

/// The `lm_eval` command of one task: the model at `model_path`, served by the router at
/// `router` (`host:port`), writing under `output`; `include_path` when the task has one
/// (given, or made from its `custom_config`).
pub fn command(
    task: &AccuracyTask,
    model_path: &str,
    router: &str,
    output: &Path,
    include_path: Option<&str>,
) -> Vec<String> {
    let base_url = format!("http://{router}/{}", endpoint(&task.model));
    // As upstream writes it, a trailing comma when there is nothing extra (lm_eval skips empty
    // arguments).
    let model_args = format!(
        "model={model_path},base_url={base_url},{}",
        task.model_args_extra
    );
    let mut argv: Vec<String> = [
        "lm_eval",
        "--model",
        &task.model,
        "--tasks",
        &task.tasks,
        "--model_args",
        &model_args,
        "--log_samples",
        "--output_path",
        &output.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    if let Some(p) = include_path {
        argv.extend(["--include_path".to_string(), p.to_string()]);
    }
    for (key, value) in &task.extra_kwargs {
        if key == "include_path" || key == "custom_config" {
            continue;
        }
        match value {
            KwargValue::Flag(true) => argv.push(format!("--{key}")),
            KwargValue::Flag(false) => {}
            KwargValue::Text(v) => argv.extend([format!("--{key}"), v.clone()]),
        }
    }
    argv
}

/// The task's `include_path` as written, if any.
pub fn include_path(task: &AccuracyTask) -> Option<&str> {
    text_kwarg(task, "include_path")
}

/// The task's `custom_config` (an lm_eval task YAML whose `LLM_MODELS_ROOT` is replaced by the
/// models root, upstream's way to point a task at local data), if any and no `include_path`.
pub fn custom_config(task: &AccuracyTask) -> Option<&str> {
    text_kwarg(task, "custom_config").filter(|_| include_path(task).is_none())
}

fn text_kwarg<'t>(task: &'t AccuracyTask, key: &str) -> Option<&'t str> {
    task.extra_kwargs.iter().find_map(|(k, v)| match v {
        KwargValue::Text(t) if k == key => Some(t.as_str()),
        _ => None,
    })
}

/// One score lm_eval reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Task (`gsm8k`).
    pub task: String,
    /// Metric (`exact_match`).
    pub metric: String,
    /// Filter (`flexible-extract`, `strict-match`, `none`).
    pub filter: String,
    /// The score, a fraction.
    pub value: f64,
    /// Its standard error, when reported.
    pub stderr: Option<f64>,
}

/// The scores of an lm_eval results file (`results_<time>.json`), by task and key.
pub fn parse_results(text: &str) -> Result<Vec<Score>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let results = v
        .get("results")
        .and_then(|r| r.as_object())
        .ok_or("no `results` object")?;
    let mut scores = Vec::new();
    for (task, metrics) in results {
        let Some(metrics) = metrics.as_object() else {
            continue;
        };
        for (key, value) in metrics {
            let (Some((metric, filter)), Some(value)) = (key.split_once(','), value.as_f64())
            else {
                continue;
            };
            if metric.ends_with("_stderr") {
                continue;
            }
            let stderr = metrics
                .get(&format!("{metric}_stderr,{filter}"))
                .and_then(serde_json::Value::as_f64);
            scores.push(Score {
                task: task.clone(),
                metric: metric.to_string(),
                filter: filter.to_string(),
                value,
                stderr,
            });
        }
    }
    Ok(scores)
}

/// The newest `results_*.json` under `dir` (lm_eval writes `<dir>/<model>/results_<time>.json`).
pub fn find_results(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with("results") && name.ends_with(".json") {
                found.push(p);
            }
        }
    }
    found
        .into_iter()
        .max_by(|a, b| a.file_name().cmp(&b.file_name()))
}

/// Upstream's per-dataset test parameters when a config gives none
/// (`DATASET_DEFAULTS` of `accuracy_validator.py`): alpha, beta, sigma, samples, higher better.
fn dataset_defaults(name: &str) -> (f64, f64, f64, u64, bool) {
    match name.to_ascii_lowercase().as_str() {
        "aime25" => (0.05, 0.2, 50.0, 30, true),
        "gsm8k" => (0.05, 0.2, 50.0, 1319, true),
        "mmlu" => (0.05, 0.2, 50.0, 4096, true),
        "humaneval" => (0.002, 0.2, 15.08, 164, true),
        "cnn_dailymail" => (0.002, 0.2, 11.06, 512, true),
        "gpqa_diamond" | "gpqa_diamond_local" => (0.05, 0.2, 50.0, 198, true),
        "json_mode_eval" => (0.05, 0.2, 50.0, 100, true),
        "mmmu" => (0.05, 0.2, 50.0, 900, true),
        "passkey_retrieval_64k" | "passkey_retrieval_128k" => (0.5, 0.2, 0.0, 20, true),
        "zero_scrolls" => (0.002, 0.2, 6.97, 80, true),
        "slimpajama-6b" => (0.01, 0.2, 4.48, 86, false),
        _ => (0.05, 0.2, 50.0, 1000, true),
    }
}

/// The standard normal quantile (`scipy.stats.norm.ppf`), by P. J. Acklam's rational
/// approximation (relative error below 1.2e-9 on (0, 1): far below the 2-decimal thresholds it
/// sets).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < low {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - low {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// One dataset's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Dataset.
    pub dataset: String,
    /// Filter gated.
    pub filter: String,
    /// The score, in percent (`None`: lm_eval reported none).
    pub actual_pct: Option<f64>,
    /// The reference, in percent.
    pub expected_pct: f64,
    /// The bound the score must reach, in percent.
    pub threshold_pct: f64,
    /// `>=` (higher is better) or `<=`.
    pub op: String,
    /// Passed.
    pub passed: bool,
    /// What a person reads.
    pub message: String,
}

/// Gate `scores` (every task's) by `thresholds`: one verdict per threshold; a dataset or filter
/// lm_eval did not report fails, as upstream.
pub fn gate(scores: &[Score], thresholds: &[DatasetThreshold]) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| {
            let (alpha, _beta, sigma, n, higher) = dataset_defaults(&t.name);
            let alpha = t.alpha.unwrap_or(alpha);
            let sigma = t.sigma.unwrap_or(sigma);
            let n = t.num_samples.unwrap_or(n).max(1);
            let higher = t.higher_is_better.unwrap_or(higher);
            // A fraction reference against a percent sigma is a percentage (upstream).
            let reference = if t.expected_value <= 1.0 && sigma > 1.0 {
                t.expected_value * 100.0
            } else {
                t.expected_value
            };
            let scale = (2.0 * sigma * sigma / n as f64).sqrt();
            let z = normal_quantile(alpha);
            let threshold = if higher {
                reference + z * scale
            } else {
                reference - z * scale
            };
            let op = if higher { ">=" } else { "<=" };
            let actual = scores
                .iter()
                .find(|s| {
                    s.task.eq_ignore_ascii_case(&t.name)
                        && s.metric == "exact_match"
                        && s.filter == t.filter
                })
                .map(|s| s.value * 100.0);
            let (passed, message) = match actual {
                Some(a) => {
                    let passed = if higher {
                        a >= threshold
                    } else {
                        a <= threshold
                    };
                    (
                        passed,
                        format!(
                            "{} {}: actual {a:.2}%, expected {reference:.2}%, threshold \
                             {threshold:.2}%, required {op} threshold",
                            t.name, t.filter
                        ),
                    )
                }
                None => (
                    false,
                    format!(
                        "{} {}: lm_eval reported no exact_match score for it",
                        t.name, t.filter
                    ),
                ),
            };
            Verdict {
                dataset: t.name.clone(),
                filter: t.filter.clone(),
                actual_pct: actual,
                expected_pct: reference,
                threshold_pct: threshold,
                op: op.to_string(),
                passed,
                message,
            }
        })
        .collect()
}

/// One lm_eval run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    /// `--tasks`.
    pub tasks: String,
    /// The command line.
    pub command: Vec<String>,
    /// lm_eval's exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// The results file read.
    pub results_file: Option<String>,
    /// Its scores.
    pub scores: Vec<Score>,
    /// Why there are none, when there are none.
    pub error: Option<String>,
}

/// `results/accuracy.json`: the accuracy step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRecord {
    /// [`ACCURACY_RECORD_VERSION`].
    pub record_version: u32,
    /// Every run, in the config's order.
    pub runs: Vec<TaskRun>,
    /// The gates of `metadata.accuracy.datasets` (empty: scores recorded, not gated).
    pub verdicts: Vec<Verdict>,
}

impl AccuracyRecord {
    /// What failed: runs that did not produce scores, gates not reached. Empty: passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("lm_eval --tasks {}: {e}", r.tasks))
            })
            .collect();
        out.extend(
            self.verdicts
                .iter()
                .filter(|v| !v.passed)
                .map(|v| v.message.clone()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(extra: Vec<(&str, KwargValue)>) -> AccuracyTask {
        AccuracyTask {
            tasks: "gsm8k".into(),
            model: "local-completions".into(),
            model_args_extra: "num_concurrent=512,max_retries=3".into(),
            extra_kwargs: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    #[test]
    fn the_command_is_upstreams() {
        let t = task(vec![
            ("custom_config", KwargValue::Text("tasks/gsm8k.yaml".into())),
            ("apply_chat_template", KwargValue::Flag(true)),
            ("log_samples", KwargValue::Flag(false)),
            ("num_fewshot", KwargValue::Text("5".into())),
        ]);
        let out = output_dir(Path::new("/runs/r/results"), &t);
        let argv = command(
            &t,
            "/models/DeepSeek-R1",
            "node3:8333",
            &out,
            Some("/runs/r/results/lm_eval_configs"),
        );
        assert_eq!(
            argv.join(" "),
            "lm_eval --model local-completions --tasks gsm8k --model_args \
             model=/models/DeepSeek-R1,base_url=http://node3:8333/v1/completions,num_concurrent=512,max_retries=3 \
             --log_samples --output_path /runs/r/results/accuracy_eval_gsm8k \
             --include_path /runs/r/results/lm_eval_configs --apply_chat_template --num_fewshot 5"
        );
        assert_eq!(custom_config(&t), Some("tasks/gsm8k.yaml"));
        let mut chat = task(Vec::new());
        chat.model = "local-chat-completions".into();
        chat.model_args_extra.clear();
        let argv = command(&chat, "m", "h:1", Path::new("/o"), None);
        assert_eq!(argv[6], "model=m,base_url=http://h:1/v1/chat/completions,");
    }

    /// A results file shaped as lm_eval 0.4 writes it (`EvaluationTracker.save_results_aggregated`).
    const RESULTS: &str = r#"{
      "results": {
        "gsm8k": {
          "alias": "gsm8k",
          "exact_match,strict-match": 0.9431387414708112,
          "exact_match_stderr,strict-match": 0.006388469007434148,
          "exact_match,flexible-extract": 0.9454131918119788,
          "exact_match_stderr,flexible-extract": 0.006257932232906442
        }
      },
      "group_subtasks": {"gsm8k": []},
      "configs": {"gsm8k": {"task": "gsm8k", "num_fewshot": 5}},
      "versions": {"gsm8k": 3.0},
      "n-shot": {"gsm8k": 5},
      "higher_is_better": {"gsm8k": {"exact_match": true}},
      "n-samples": {"gsm8k": {"original": 1319, "effective": 1319}},
      "config": {"model": "local-completions", "model_args": "model=/m,base_url=http://h:1/v1/completions,"},
      "git_hash": null,
      "date": 1735000000.0,
      "total_evaluation_time_seconds": "312.5"
    }"#;

    #[test]
    fn scores_come_from_the_results_file() {
        let scores = parse_results(RESULTS).unwrap();
        assert_eq!(scores.len(), 2);
        assert_eq!(
            *scores
                .iter()
                .find(|s| s.filter == "flexible-extract")
                .unwrap(),
            Score {
                task: "gsm8k".into(),
                metric: "exact_match".into(),
                filter: "flexible-extract".into(),
                value: 0.9454131918119788,
                stderr: Some(0.006257932232906442),
            }
        );
        assert!(parse_results("{}").unwrap_err().contains("results"));
        assert!(parse_results("not json").is_err());
    }

    #[test]
    fn the_newest_results_file_is_found_under_the_model_directory() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("__models__DeepSeek-R1");
        std::fs::create_dir_all(&model).unwrap();
        for name in [
            "results_2025-01-01T10-00-00.json",
            "results_2025-01-02T10-00-00.json",
            "samples_gsm8k_2025-01-02T10-00-00.jsonl",
        ] {
            std::fs::write(model.join(name), "{}").unwrap();
        }
        assert_eq!(
            find_results(dir.path()),
            Some(model.join("results_2025-01-02T10-00-00.json"))
        );
        assert_eq!(find_results(&dir.path().join("none")), None);
    }

    #[test]
    fn the_normal_quantile_matches_scipy() {
        // scipy.stats.norm.ppf
        for (p, z) in [
            (0.05, -1.6448536269514729),
            (0.002, -2.878161739095483),
            (0.01, -2.3263478740408408),
            (0.2, -0.8416212335729143),
            (0.5, 0.0),
            (0.975, 1.959963984540054),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-8,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn the_gate_is_upstreams_hypothesis_test() {
        let scores = parse_results(RESULTS).unwrap();
        let t = |filter: &str, expected: f64| DatasetThreshold {
            name: "gsm8k".into(),
            expected_value: expected,
            filter: filter.into(),
            alpha: None,
            beta: None,
            sigma: None,
            num_samples: None,
            higher_is_better: None,
        };
        // gsm8k defaults: alpha 0.05, sigma 50, n 1319. scale = sqrt(2 × 2500 / 1319)
        // = 1.946978...; threshold = 95 − 1.644854 × 1.946978 = 91.797486...
        let v = gate(
            &scores,
            &[t("flexible-extract", 0.95), t("strict-match", 0.97)],
        );
        let expected_threshold = 95.0 - 1.6448536269514729 * (5000.0f64 / 1319.0).sqrt();
        assert!((v[0].threshold_pct - expected_threshold).abs() < 1e-7);
        assert!((v[0].threshold_pct - 91.7975).abs() < 1e-4);
        assert!(v[0].passed, "{}", v[0].message);
        assert_eq!(
            v[0].message,
            "gsm8k flexible-extract: actual 94.54%, expected 95.00%, threshold 91.80%, required >= threshold"
        );
        // 97 − 3.2025 = 93.80 > 94.31? No: 94.31 ≥ 93.80 passes; a reference of 0.99 does not.
        assert!(v[1].passed);
        let strict = gate(&scores, &[t("strict-match", 0.99)]);
        assert!(!strict[0].passed, "{}", strict[0].message);
        // A dataset lm_eval did not report fails.
        let mut mmlu = t("flexible-extract", 0.8);
        mmlu.name = "mmlu".into();
        let v = gate(&scores, &[mmlu]);
        assert!(!v[0].passed && v[0].actual_pct.is_none());
        // Explicit parameters and a lower-is-better dataset: reference 10 (sigma ≤ 1 keeps it
        // as given), scale sqrt(2 × 0.25 / 50) = 0.1, z(0.01) = −2.3263: bound 10.2326.
        let mut low = t("flexible-extract", 10.0);
        low.sigma = Some(0.5);
        low.num_samples = Some(50);
        low.alpha = Some(0.01);
        low.higher_is_better = Some(false);
        let v = gate(&scores, &[low]);
        assert!((v[0].threshold_pct - (10.0 + 2.3263478740408408 * 0.1)).abs() < 1e-7);
        assert_eq!(v[0].op, "<=");
    }

    #[test]
    fn a_record_fails_on_missing_scores_and_failed_gates() {
        let record = AccuracyRecord {
            record_version: ACCURACY_RECORD_VERSION,
            runs: vec![TaskRun {
                tasks: "gsm8k".into(),
                command: Vec::new(),
                exit_code: Some(1),
                results_file: None,
                scores: Vec::new(),
                error: Some("exited with status 1".into()),
            }],
            verdicts: gate(&[], &[]),
        };
        assert_eq!(
            record.failures(),
            ["lm_eval --tasks gsm8k: exited with status 1"]
        );
    }
}
