//! The config's `profiling` and `accuracy` sections, and the accuracy thresholds of
//! `metadata.accuracy`, in every shape upstream reads them.
//!
//! - `profiling: {nsys_on, ctx_profile_range, gen_profile_range}`: the ranges default to
//!   `10-30` and `200-250` (`examples/disaggregated/slurm/benchmark/submit.py`).
//! - `accuracy`, read only when `enable_accuracy_test: true` (upstream's `AccuracyConfig`
//!   short-circuits a disabled section, so its legacy shape is never parsed): either the current
//!   shape, `tasks: {<task>: {model, model_args_extra, extra_kwargs}}` with `env_var: {NAME:
//!   value}` (`test_perf_sanity.py`), or the legacy one, `model`, `tasks: "gsm8k,mmlu"` and
//!   `model_args_extra` beside `enable_accuracy_test` (`accuracy_eval.sh`), which is one run of
//!   every listed task.
//! - `metadata.accuracy.datasets: [{name, expected_value, filter_type, threshold_type, alpha,
//!   beta, sigma, num_samples, higher_is_better}]`: the hypothesis-test gate of upstream's
//!   disaggregated perf tests (`perf/disagg/utils/config_loader.py`).

use crate::diag::Sink;
use crate::reader::{self, MapRef, Need};
use crate::yaml::{Node, Scalar, Value};

/// `profiling`: Nsight Systems around the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiling {
    /// Wrap every worker in `nsys profile`.
    pub nsys_on: bool,
    /// `TLLM_PROFILE_START_STOP` of context workers (iterations).
    pub ctx_profile_range: String,
    /// `TLLM_PROFILE_START_STOP` of generation workers.
    pub gen_profile_range: String,
}

impl Default for Profiling {
    fn default() -> Self {
        Profiling {
            nsys_on: false,
            ctx_profile_range: "10-30".to_string(),
            gen_profile_range: "200-250".to_string(),
        }
    }
}

/// A value of `extra_kwargs`, passed to `lm_eval` as `--<key> <value>` (`true`: `--<key>`).
#[derive(Debug, Clone, PartialEq)]
pub enum KwargValue {
    /// A flag: given when true, left out when false.
    Flag(bool),
    /// Anything else, as its text.
    Text(String),
}

/// One `lm_eval` run.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyTask {
    /// `--tasks` (one task, or the legacy comma-separated list).
    pub tasks: String,
    /// `--model`: `local-completions` (default) or `local-chat-completions`.
    pub model: String,
    /// Appended to `--model_args` after `model=...,base_url=...`.
    pub model_args_extra: String,
    /// `extra_kwargs`, in order (`include_path`, `custom_config` and the rest).
    pub extra_kwargs: Vec<(String, KwargValue)>,
}

/// A score gate: upstream's hypothesis test on one dataset's `exact_match` score.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetThreshold {
    /// Task name (`gsm8k`).
    pub name: String,
    /// Reference accuracy, a fraction or a percentage.
    pub expected_value: f64,
    /// lm_eval filter (`flexible-extract`, `strict-match`).
    pub filter: String,
    /// Type I error; `None`: the dataset's default.
    pub alpha: Option<f64>,
    /// Type II error.
    pub beta: Option<f64>,
    /// Standard deviation of one sample, in percent.
    pub sigma: Option<f64>,
    /// Samples the task has.
    pub num_samples: Option<u64>,
    /// Whether a higher score is better.
    pub higher_is_better: Option<bool>,
}

/// `accuracy` with `enable_accuracy_test: true`.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// The runs, in the config's order.
    pub tasks: Vec<AccuracyTask>,
    /// `env_var`: extra environment of every run.
    pub env: Vec<(String, String)>,
    /// `metadata.accuracy.datasets`: the gates (none: scores are recorded, not gated).
    pub thresholds: Vec<DatasetThreshold>,
}

const PROFILING_KEYS: &[&str] = &["nsys_on", "ctx_profile_range", "gen_profile_range"];
const ACCURACY_KEYS: &[&str] = &[
    "enable_accuracy_test",
    "env_var",
    "tasks",
    "model",
    "model_args_extra",
    // Era-A spellings of model arguments (`perf/deepseek-r1-fp4_007.yaml`).
    "num_concurrent",
    "max_retries",
    "tokenized_requests",
    "timeout",
    "max_gen_toks",
    "max_length",
];
const TASK_KEYS: &[&str] = &["model", "model_args_extra", "extra_kwargs"];
const DATASET_KEYS: &[&str] = &[
    "name",
    "expected_value",
    "threshold_type",
    "filter_type",
    "alpha",
    "beta",
    "sigma",
    "num_samples",
    "higher_is_better",
];
const MODELS: &[&str] = &["local-completions", "local-chat-completions"];
const DEFAULT_MODEL: &str = "local-completions";

pub(crate) fn read_profiling(sink: &mut Sink, top: MapRef<'_>) -> Profiling {
    let Some(p) = reader::section(sink, top, "profiling", "profiling") else {
        return Profiling::default();
    };
    reader::check_keys(sink, p, PROFILING_KEYS, false);
    let d = Profiling::default();
    let hint = "iterations to profile, `start-stop`, e.g. 200-250";
    let mut range = |key: &str| {
        let value = reader::string(sink, p, key, Need::Optional, hint)?;
        let ok = value
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
        if !ok {
            sink.error(
                p.get(key).map(|n| n.pos),
                &reader::join(p.path, key),
                Some(value),
                "not an iteration range",
                hint,
            );
            return None;
        }
        Some(value)
    };
    let ctx_profile_range = range("ctx_profile_range").unwrap_or(d.ctx_profile_range);
    let gen_profile_range = range("gen_profile_range").unwrap_or(d.gen_profile_range);
    Profiling {
        nsys_on: reader::bool(sink, p, "nsys_on", Need::Optional, "true or false").unwrap_or(false),
        ctx_profile_range,
        gen_profile_range,
    }
}

fn text_of(node: &Node) -> Option<String> {
    match (&node.value, node.scalar()) {
        (_, Some(Scalar::Null)) => None,
        (Value::Scalar { text, .. }, _) => Some(text.clone()),
        _ => None,
    }
}

fn read_task(sink: &mut Sink, name: &str, node: &Node, path: &str) -> Option<AccuracyTask> {
    let t = MapRef { node, path };
    if node.as_map().is_none() {
        sink.error(
            Some(node.pos),
            path,
            Some(node.display()),
            "a task must be a mapping",
            "write `model`, `model_args_extra` and `extra_kwargs` under the task name",
        );
        return None;
    }
    reader::check_keys(sink, t, TASK_KEYS, false);
    let model = reader::choice(
        sink,
        t,
        "model",
        MODELS,
        "local-completions or local-chat-completions",
    )
    .unwrap_or(DEFAULT_MODEL)
    .to_string();
    let model_args_extra = reader::string(
        sink,
        t,
        "model_args_extra",
        Need::Optional,
        "comma-separated lm_eval model arguments, e.g. num_concurrent=512,max_retries=3",
    )
    .unwrap_or_default();
    let kw_path = format!("{path}.extra_kwargs");
    let mut extra_kwargs = Vec::new();
    if let Some(kw) = reader::section(sink, t, "extra_kwargs", &kw_path) {
        for (key, value) in kw.node.as_map().unwrap_or_default() {
            let v = match value.scalar() {
                Some(Scalar::Bool(b)) => KwargValue::Flag(b),
                _ => match text_of(value) {
                    Some(s) => KwargValue::Text(s),
                    None => {
                        sink.error(
                            Some(value.pos),
                            &reader::join(&kw_path, &key.text),
                            Some(value.display()),
                            "expected a flag or a value",
                            "write `true` for a flag, else the value lm_eval takes",
                        );
                        continue;
                    }
                },
            };
            extra_kwargs.push((key.text.clone(), v));
        }
    }
    Some(AccuracyTask {
        tasks: name.to_string(),
        model,
        model_args_extra,
        extra_kwargs,
    })
}

fn read_env(sink: &mut Sink, a: MapRef<'_>) -> Vec<(String, String)> {
    let Some(e) = reader::section(sink, a, "env_var", "accuracy.env_var") else {
        return Vec::new();
    };
    e.node
        .as_map()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| match text_of(v) {
            Some(text) => Some((k.text.clone(), text)),
            None => {
                sink.error(
                    Some(v.pos),
                    &reader::join("accuracy.env_var", &k.text),
                    Some(v.display()),
                    "expected a value",
                    "write NAME: value",
                );
                None
            }
        })
        .collect()
}

pub(crate) fn read_accuracy(sink: &mut Sink, top: MapRef<'_>) -> Option<Accuracy> {
    let a = reader::section(sink, top, "accuracy", "accuracy")?;
    reader::check_keys(sink, a, ACCURACY_KEYS, false);
    let on = reader::bool(
        sink,
        a,
        "enable_accuracy_test",
        Need::Optional,
        "true to run lm_eval against the router after the benchmark",
    )
    .unwrap_or(false);
    if !on {
        return None;
    }
    let tasks = match a.get("tasks") {
        Some(node) if node.as_map().is_some() => node
            .as_map()
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, v)| {
                read_task(sink, &k.text, v, &reader::join("accuracy.tasks", &k.text))
            })
            .collect(),
        Some(_) => {
            // Legacy: one lm_eval run of the listed tasks, the model arguments beside them.
            let tasks = reader::string(
                sink,
                a,
                "tasks",
                Need::Optional,
                "comma-separated lm_eval tasks, e.g. gsm8k",
            );
            let model = reader::choice(
                sink,
                a,
                "model",
                MODELS,
                "local-completions or local-chat-completions",
            )
            .unwrap_or(DEFAULT_MODEL)
            .to_string();
            let mut extra: Vec<String> = reader::string(
                sink,
                a,
                "model_args_extra",
                Need::Optional,
                "comma-separated lm_eval model arguments",
            )
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
            for key in &ACCURACY_KEYS[5..] {
                if let Some(v) = a.get(key).and_then(text_of) {
                    extra.push(format!("{key}={v}"));
                }
            }
            tasks
                .map(|t| AccuracyTask {
                    tasks: t,
                    model,
                    model_args_extra: extra.join(","),
                    extra_kwargs: Vec::new(),
                })
                .into_iter()
                .collect()
        }
        None => Vec::new(),
    };
    if tasks.is_empty() {
        sink.error(
            Some(a.pos()),
            "accuracy.tasks",
            None,
            "enable_accuracy_test is true but no task is given",
            "add `tasks: {gsm8k: {model: local-completions, model_args_extra: ...}}`, or set \
             enable_accuracy_test: false",
        );
    }
    Some(Accuracy {
        tasks,
        env: read_env(sink, a),
        thresholds: read_thresholds(sink, top),
    })
}

fn read_thresholds(sink: &mut Sink, top: MapRef<'_>) -> Vec<DatasetThreshold> {
    // `metadata` itself is checked where it is read.
    let Some(node) = top.get("metadata").filter(|n| n.as_map().is_some()) else {
        return Vec::new();
    };
    let m = MapRef {
        node,
        path: "metadata",
    };
    let Some(acc) = reader::section(sink, m, "accuracy", "metadata.accuracy") else {
        return Vec::new();
    };
    let Some(list) = acc.get("datasets") else {
        return Vec::new();
    };
    let Value::Seq(items) = &list.value else {
        sink.error(
            Some(list.pos),
            "metadata.accuracy.datasets",
            Some(list.display()),
            "expected a list",
            "one `- name: gsm8k\n  expected_value: 0.95` entry per dataset",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("metadata.accuracy.datasets[{i}]");
        let d = MapRef {
            node: item,
            path: &path,
        };
        if item.as_map().is_none() {
            sink.error(
                Some(item.pos),
                &path,
                Some(item.display()),
                "a dataset must be a mapping",
                "write name, expected_value and the optional test parameters",
            );
            continue;
        }
        reader::check_keys(sink, d, DATASET_KEYS, false);
        if let Some(t) = reader::string(sink, d, "threshold_type", Need::Optional, "") {
            if t != "hypothesis_test" {
                sink.error(
                    d.get("threshold_type").map(|n| n.pos),
                    &reader::join(&path, "threshold_type"),
                    Some(t),
                    "only hypothesis_test is supported, as upstream",
                    "drop threshold_type or write hypothesis_test",
                );
            }
        }
        let prob = |sink: &mut Sink, key: &str| {
            reader::float(
                sink,
                d,
                key,
                Need::Optional,
                0.0,
                "a probability, e.g. 0.05",
            )
        };
        let alpha = prob(sink, "alpha");
        let beta = prob(sink, "beta");
        out.push(DatasetThreshold {
            name: reader::string(
                sink,
                d,
                "name",
                Need::Optional,
                "an lm_eval task, e.g. gsm8k",
            )
            .unwrap_or_else(|| "gsm8k".to_string()),
            expected_value: reader::float(
                sink,
                d,
                "expected_value",
                Need::Optional,
                0.0,
                "the reference accuracy, e.g. 0.95 or 95",
            )
            .unwrap_or(0.0),
            filter: reader::string(
                sink,
                d,
                "filter_type",
                Need::Optional,
                "flexible-extract or strict-match",
            )
            .unwrap_or_else(|| "flexible-extract".to_string()),
            alpha,
            beta,
            sigma: reader::float(
                sink,
                d,
                "sigma",
                Need::Optional,
                0.0,
                "a standard deviation",
            ),
            num_samples: reader::int(
                sink,
                d,
                "num_samples",
                Need::Optional,
                1,
                i64::from(u32::MAX),
                "the samples of the task",
            )
            .map(|v| v as u64),
            higher_is_better: reader::bool(
                sink,
                d,
                "higher_is_better",
                Need::Optional,
                "true or false",
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::TestConfig;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/trtllm-configs")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<TestConfig, crate::ConfigError> {
        TestConfig::parse(Path::new("t.yaml"), text)
    }

    const LEGACY: &str = "disaggregated/b200_deepseek-r1-fp4_8k1k_con1536_ctx1_dep4_gen1_dep8_eplb0_mtp1_ccb-NIXL.yaml";

    #[test]
    fn the_fixtures_disabled_sections_read_as_off() {
        let config = parse(&fixture(LEGACY)).unwrap();
        assert_eq!(config.profiling(), &Profiling::default());
        assert_eq!(config.accuracy(), None);
    }

    #[test]
    fn the_legacy_shape_is_one_run_of_the_listed_tasks() {
        let text = fixture(LEGACY)
            .replace("enable_accuracy_test: false", "enable_accuracy_test: true")
            .replace("  tasks: gsm8k\n", "  tasks: gsm8k,mmlu\n");
        let config = parse(&text).unwrap();
        let a = config.accuracy().unwrap();
        assert_eq!(
            a.tasks,
            [AccuracyTask {
                tasks: "gsm8k,mmlu".into(),
                model: "local-completions".into(),
                model_args_extra: "num_concurrent=512,max_retries=3,tokenized_requests=false,timeout=1200,max_gen_toks=256,max_length=4096".into(),
                extra_kwargs: Vec::new(),
            }]
        );
        assert!(a.thresholds.is_empty() && a.env.is_empty());
    }

    #[test]
    fn the_current_shape_has_tasks_env_and_thresholds() {
        let text = fixture(LEGACY)
            .replace(
                "accuracy:\n  enable_accuracy_test: false\n  model: local-completions\n  tasks: gsm8k\n",
                "accuracy:\n  enable_accuracy_test: true\n  env_var: {HF_DATASETS_OFFLINE: 1}\n  tasks:\n    gsm8k:\n      model: local-chat-completions\n      model_args_extra: num_concurrent=64\n      extra_kwargs: {apply_chat_template: true, num_fewshot: 5, log_samples: false}\n    gpqa_diamond_local:\n      model_args_extra: max_gen_toks=1024\n  old_model_args_extra: x\n",
            )
            .replace(
                "metadata:\n",
                "metadata:\n  accuracy:\n    datasets:\n    - name: gsm8k\n      expected_value: 0.95\n      num_samples: 200\n",
            );
        let config = parse(&text).unwrap();
        let a = config.accuracy().unwrap();
        assert_eq!(a.tasks.len(), 2);
        assert_eq!(a.tasks[0].model, "local-chat-completions");
        assert_eq!(
            a.tasks[0].extra_kwargs,
            [
                ("apply_chat_template".to_string(), KwargValue::Flag(true)),
                ("num_fewshot".to_string(), KwargValue::Text("5".into())),
                ("log_samples".to_string(), KwargValue::Flag(false)),
            ]
        );
        assert_eq!(a.tasks[1].model, "local-completions");
        assert_eq!(
            a.env,
            [("HF_DATASETS_OFFLINE".to_string(), "1".to_string())]
        );
        assert_eq!(a.thresholds.len(), 1);
        assert_eq!(a.thresholds[0].filter, "flexible-extract");
        assert_eq!(a.thresholds[0].num_samples, Some(200));
        assert!(
            config
                .warnings()
                .warnings()
                .any(|w| w.path == "accuracy.old_model_args_extra"),
            "an unknown upstream key is a warning"
        );
    }

    #[test]
    fn profiling_ranges_default_and_are_checked() {
        let text = fixture(LEGACY).replace(
            "profiling:\n  nsys_on: false\n",
            "profiling:\n  nsys_on: true\n  gen_profile_range: 100-150\n",
        );
        let p = parse(&text).unwrap().profiling().clone();
        assert_eq!(
            p,
            Profiling {
                nsys_on: true,
                ctx_profile_range: "10-30".into(),
                gen_profile_range: "100-150".into(),
            }
        );
        let bad = fixture(LEGACY).replace(
            "profiling:\n  nsys_on: false\n",
            "profiling:\n  nsys_on: true\n  ctx_profile_range: ten\n",
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("1 problem"), "{e}");
        let enabled_without_tasks = fixture(LEGACY)
            .replace("enable_accuracy_test: false", "enable_accuracy_test: true")
            .replace("  tasks: gsm8k\n", "");
        assert!(parse(&enabled_without_tasks).is_err());
    }
}
