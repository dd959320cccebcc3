//! What a benchmark is asked to do, typed: the server, the loads to run one after the other,
//! where the prompts come from, and where the results go. Both `disagg bench` (from its flags)
//! and the BENCHMARK role (from the test config) build a [`BenchPlan`] and hand it to
//! [`crate::execute`].
//!
//! [`BenchPlan::new`] holds the defaults of `disagg bench`; [`BenchPlan::validate`] reports what
//! cannot run, naming the `disagg bench` flag to change (the plan's fields mirror them).

use std::path::PathBuf;

use crate::BenchError;
use crate::metrics::Slo;
use crate::runner::{Endpoint, Load};

/// One benchmark: every load of [`BenchPlan::loads`] is a run, measured and recorded on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPlan {
    /// Server base URL, `http://host:port` (`--url`).
    pub url: String,
    /// Model name sent (`--model`).
    pub model: String,
    /// Endpoint (`--endpoint`).
    pub endpoint: Endpoint,
    /// The runs, in order: closed-loop concurrencies (`--concurrency`) or open-loop rates
    /// (`--request-rate`, `--burstiness`). None given: one run at concurrency 1. A concurrency
    /// of 0 runs as 1.
    pub loads: Vec<Load>,
    /// Prompts per run (`--num-prompts`) [default: concurrency × multi-round, or 100 ×
    /// multi-round for a rate].
    pub num_prompts: Option<usize>,
    /// Prompts per run = concurrency × K, the upstream rule (`--multi-round`); 0 counts as 1.
    pub multi_round: usize,
    /// Input length in tokens (`--isl`).
    pub isl: u32,
    /// Output length in tokens (`--osl`).
    pub osl: u32,
    /// Random range ratio for both lengths, in [0, 1) (`--range-ratio`).
    pub range_ratio: f64,
    /// Where the prompts come from (`--dataset`, `--dataset-path`).
    pub dataset: Dataset,
    /// Ask the server to ignore EOS (exact output lengths; checked by the validity gate).
    pub ignore_eos: bool,
    /// Stream the responses (`--no-stream` clears it).
    pub stream: bool,
    /// Warm-up requests before each run, not measured (`--warmup`).
    pub warmup: usize,
    /// Seed of prompts and arrivals (`--seed`).
    pub seed: u64,
    /// Goodput SLOs (`--goodput`, see [`parse_slo`]).
    pub slo: Option<Slo>,
    /// Percentiles to report (`--percentiles`).
    pub percentiles: Vec<f64>,
    /// Per-request deadline in seconds (`--timeout`); at least 1 ms is used.
    pub timeout: f64,
    /// Hard deadline of each run in seconds (`--max-duration`): what has not finished by then
    /// is dropped and the run is marked interrupted (and invalid).
    pub max_duration: f64,
    /// Write one JSON record per run (`con8.json`, `rate2.5.json`) and `results.csv` here
    /// (`--out`).
    pub out: Option<PathBuf>,
    /// A Hugging Face tokenizer, a directory holding `tokenizer.json` or the file
    /// (`--tokenizer`): text prompts of exact length, prompt lengths of text datasets, and
    /// output counts when the server sends no usage.
    pub tokenizer: Option<PathBuf>,
    /// Put every request's timeline into the JSON record (`--save-timelines`).
    pub save_timelines: bool,
    /// The servers decode speculatively and report `avg_decoded_tokens_per_iter`: a run whose
    /// requests carried none is invalid, as upstream fails a speculative-decoding test whose
    /// output lacks "Mean Avg Decoded Tokens per Iter" (its `d_al`).
    pub require_decoded_per_iter: bool,
    /// `/metrics` endpoints read every [`BenchPlan::telemetry_interval`] during each run
    /// (`--scrape NAME=URL`; a run of `disagg run` reads every worker and the router), see
    /// [`crate::telemetry`].
    pub telemetry: Vec<crate::telemetry::Target>,
    /// Seconds between two reads (`--scrape-interval`, 1).
    pub telemetry_interval: f64,
    /// Where each run's series go (`<run>.jsonl`) [default: `--out`/telemetry].
    pub telemetry_dir: Option<PathBuf>,
    /// Send token-id prompts as text, one word `w<id>` per id (`--prompt-words`), for routers
    /// that take only text prompts (sglang-router); the sim counts one token per word.
    pub prompt_words: bool,
}

/// Where the prompts come from: the one type the config's `workload:` section reads too.
pub use disagg_config::Dataset;

/// The dataset of `--dataset KIND` (`random`, `jsonl`, `trtllm-custom`) and `--dataset-path
/// FILE`.
pub fn dataset_from_flags(kind: &str, path: Option<PathBuf>) -> Result<Dataset, BenchError> {
    let invalid = |message: String| Err(BenchError::InvalidPlan(message));
    match (kind, path) {
        ("jsonl", Some(path)) => Ok(Dataset::Jsonl(path)),
        ("trtllm-custom", Some(path)) => Ok(Dataset::TrtllmCustom(path)),
        ("random", Some(_)) => {
            invalid("--dataset-path is read only with --dataset jsonl or trtllm-custom".to_string())
        }
        ("random", None) => Ok(Dataset::Random),
        (kind, None) => invalid(format!("--dataset {kind} needs --dataset-path FILE")),
        (kind, Some(_)) => invalid(format!("unknown --dataset {kind}")),
    }
}

impl BenchPlan {
    /// A plan against `url` for `model` with the defaults of `disagg bench`: completions,
    /// concurrency 1, 1024 tokens in and out, multi-round 1, random prompts, streaming, seed 0,
    /// the 99th percentile, 600 s per request, 3600 s per run, no output directory.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> BenchPlan {
        BenchPlan {
            url: url.into(),
            model: model.into(),
            endpoint: Endpoint::Completions,
            loads: vec![Load::Concurrency(1)],
            num_prompts: None,
            multi_round: 1,
            isl: 1024,
            osl: 1024,
            range_ratio: 0.0,
            dataset: Dataset::Random,
            ignore_eos: false,
            stream: true,
            warmup: 0,
            seed: 0,
            telemetry: Vec::new(),
            telemetry_interval: 1.0,
            telemetry_dir: None,
            prompt_words: false,
            slo: None,
            percentiles: vec![99.0],
            timeout: 600.0,
            max_duration: 3600.0,
            out: None,
            tokenizer: None,
            save_timelines: false,
            require_decoded_per_iter: false,
        }
    }

    /// What the plan cannot run with, first problem first; the message names the flag.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |message: String| Err(BenchError::InvalidPlan(message));
        if !(0.0..1.0).contains(&self.range_ratio) {
            return invalid(format!(
                "--range-ratio must be in [0, 1), got {}",
                self.range_ratio
            ));
        }
        if self.isl == 0 || self.osl == 0 {
            return invalid(format!(
                "--isl and --osl must be at least 1 token, got {} and {}",
                self.isl, self.osl
            ));
        }
        if !(self.max_duration.is_finite() && self.max_duration > 0.0) {
            return invalid(format!(
                "--max-duration must be positive seconds, got {}",
                self.max_duration
            ));
        }
        if !self.url.starts_with("http://") {
            return invalid(format!("--url `{}`: give http://host:port", self.url));
        }
        for load in &self.loads {
            if let Load::Rate { rate, .. } = *load {
                if !(rate > 0.0 && rate.is_finite()) {
                    return invalid(format!("--request-rate must be positive, got {rate}"));
                }
            }
            if let Load::Trace { speedup } = *load {
                if !(speedup > 0.0 && speedup.is_finite()) {
                    return invalid(format!("--trace-speedup must be positive, got {speedup}"));
                }
            }
        }
        let trace = self.loads.iter().any(|l| matches!(l, Load::Trace { .. }));
        match (&self.dataset, trace) {
            (Dataset::Mooncake { .. }, false) => {
                return invalid(
                    "--dataset mooncake replays the trace's own arrival times: give \
                     --trace-speedup (1 = as recorded) instead of a concurrency or a rate"
                        .into(),
                );
            }
            (Dataset::Mooncake { block_size: 0, .. }, _) => {
                return invalid("--trace-block-size must be at least 1".into());
            }
            (Dataset::Mooncake { .. }, true) => {}
            (_, true) => {
                return invalid("--trace-speedup replays a trace: use --dataset mooncake".into());
            }
            _ => {}
        }
        match self.dataset {
            Dataset::SharedPrefix {
                groups,
                prefix_len,
                suffix_len,
            } if groups == 0 || prefix_len + suffix_len == 0 => invalid(format!(
                "--prefix-groups must be at least 1 and --prefix-len + --suffix-len at least 1 \
                 token, got {groups}, {prefix_len} and {suffix_len}"
            )),
            Dataset::MultiTurn {
                turns, think_time, ..
            } if turns == 0 || !(think_time.is_finite() && think_time >= 0.0) => invalid(format!(
                "--turns must be at least 1 and --think-time non-negative seconds, got \
                 {turns} and {think_time}"
            )),
            _ => Ok(()),
        }
    }

    /// The runs in order, as they are labelled and executed: one at concurrency 1 when no load
    /// is given, a concurrency of 0 raised to 1.
    pub fn runs(&self) -> Vec<Load> {
        if self.loads.is_empty() {
            return vec![Load::Concurrency(1)];
        }
        self.loads
            .iter()
            .map(|load| match *load {
                Load::Concurrency(c) => Load::Concurrency(c.max(1)),
                rate => rate,
            })
            .collect()
    }

    /// The label (`con8`, `rate2.5`: the record's file name and `load`) and the number of
    /// measured requests of one run.
    pub fn label_and_prompts(&self, load: Load) -> (String, usize) {
        let rounds = self.multi_round.max(1);
        match load {
            Load::Concurrency(c) => (format!("con{c}"), self.num_prompts.unwrap_or(c * rounds)),
            Load::Rate { rate, .. } => (
                format!("rate{rate}"),
                self.num_prompts.unwrap_or(rounds * 100),
            ),
            // The whole trace unless capped; the trace's length is known once it is read.
            Load::Trace { speedup } => (
                format!("trace{speedup}x"),
                self.num_prompts.unwrap_or(usize::MAX),
            ),
        }
    }
}

/// The goodput SLOs of `--goodput`: `metric:ms` pairs separated by commas, the metrics `ttft`,
/// `tpot` and `e2el` (e.g. `ttft:300,tpot:50`).
pub fn parse_slo(text: &str) -> Result<Slo, BenchError> {
    let invalid = |message: String| BenchError::InvalidPlan(message);
    let mut slo = Slo::default();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once(':').ok_or_else(|| {
            invalid(format!(
                "--goodput `{part}`: write metric:ms, e.g. ttft:300"
            ))
        })?;
        let v: f64 = v
            .parse()
            .map_err(|_| invalid(format!("--goodput `{part}`: `{v}` is not a number of ms")))?;
        match k {
            "ttft" => slo.ttft_ms = Some(v),
            "tpot" => slo.tpot_ms = Some(v),
            "e2el" => slo.e2el_ms = Some(v),
            _ => return Err(invalid(format!("--goodput `{k}`: use ttft, tpot or e2el"))),
        }
    }
    Ok(slo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BenchPlan {
        BenchPlan::new("http://127.0.0.1:8000", "m")
    }

    fn problem(plan: &BenchPlan) -> String {
        let e = plan.validate().unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        e.to_string()
    }

    #[test]
    fn a_new_plan_has_the_defaults_of_disagg_bench() {
        let p = plan();
        assert_eq!(p.url, "http://127.0.0.1:8000");
        assert_eq!(p.model, "m");
        assert_eq!(p.endpoint, Endpoint::Completions);
        assert_eq!(p.loads, [Load::Concurrency(1)]);
        assert_eq!(p.num_prompts, None);
        assert_eq!(p.multi_round, 1);
        assert_eq!((p.isl, p.osl), (1024, 1024));
        assert_eq!(p.range_ratio, 0.0);
        assert_eq!(p.dataset, Dataset::Random);
        assert!(!p.ignore_eos);
        assert!(p.stream);
        assert_eq!((p.warmup, p.seed), (0, 0));
        assert_eq!(p.slo, None);
        assert_eq!(p.percentiles, [99.0]);
        assert_eq!(p.timeout, 600.0);
        assert_eq!(p.max_duration, 3600.0);
        assert_eq!((p.out.as_deref(), p.tokenizer.as_deref()), (None, None));
        assert!(!p.save_timelines);
        p.validate().unwrap();
    }

    #[test]
    fn without_loads_one_run_at_concurrency_1() {
        let mut p = plan();
        p.loads.clear();
        assert_eq!(p.runs(), [Load::Concurrency(1)]);
        p.validate().unwrap();
    }

    #[test]
    fn a_concurrency_of_0_runs_as_1() {
        let mut p = plan();
        p.loads = vec![Load::Concurrency(0), Load::Concurrency(4)];
        assert_eq!(p.runs(), [Load::Concurrency(1), Load::Concurrency(4)]);
    }

    #[test]
    fn runs_are_labelled_and_sized_by_the_upstream_rule() {
        let mut p = plan();
        p.multi_round = 3;
        assert_eq!(
            p.label_and_prompts(Load::Concurrency(8)),
            ("con8".into(), 24)
        );
        let rate = Load::Rate {
            rate: 2.5,
            burstiness: 1.0,
        };
        assert_eq!(p.label_and_prompts(rate), ("rate2.5".into(), 300));
        p.multi_round = 0;
        assert_eq!(
            p.label_and_prompts(Load::Concurrency(8)),
            ("con8".into(), 8)
        );
        p.num_prompts = Some(5);
        assert_eq!(
            p.label_and_prompts(Load::Concurrency(8)),
            ("con8".into(), 5)
        );
        assert_eq!(p.label_and_prompts(rate), ("rate2.5".into(), 5));
    }

    #[test]
    fn range_ratio_outside_0_to_1_is_refused() {
        for r in [1.0, -0.1, f64::NAN] {
            let mut p = plan();
            p.range_ratio = r;
            assert_eq!(
                problem(&p),
                format!("--range-ratio must be in [0, 1), got {r}")
            );
        }
        let mut p = plan();
        p.range_ratio = 0.5;
        p.validate().unwrap();
    }

    #[test]
    fn zero_token_lengths_are_refused() {
        let mut p = plan();
        p.isl = 0;
        p.osl = 7;
        assert_eq!(
            problem(&p),
            "--isl and --osl must be at least 1 token, got 0 and 7"
        );
        p.isl = 7;
        p.osl = 0;
        assert_eq!(
            problem(&p),
            "--isl and --osl must be at least 1 token, got 7 and 0"
        );
    }

    #[test]
    fn max_duration_must_be_positive_seconds() {
        for (d, shown) in [
            (0.0, "0"),
            (-1.0, "-1"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "NaN"),
        ] {
            let mut p = plan();
            p.max_duration = d;
            assert_eq!(
                problem(&p),
                format!("--max-duration must be positive seconds, got {shown}")
            );
        }
    }

    #[test]
    fn the_url_must_be_plain_http() {
        for url in ["https://h:1", "127.0.0.1:8000", ""] {
            let mut p = plan();
            p.url = url.into();
            assert_eq!(problem(&p), format!("--url `{url}`: give http://host:port"));
        }
    }

    #[test]
    fn request_rates_must_be_positive_and_finite() {
        for rate in [0.0, -2.0, f64::INFINITY] {
            let mut p = plan();
            p.loads = vec![Load::Rate {
                rate,
                burstiness: 1.0,
            }];
            assert_eq!(
                problem(&p),
                format!("--request-rate must be positive, got {rate}")
            );
        }
        let mut p = plan();
        p.loads = vec![Load::Rate {
            rate: 2.5,
            burstiness: 1.0,
        }];
        p.validate().unwrap();
    }

    #[test]
    fn the_first_problem_is_reported() {
        let mut p = plan();
        p.range_ratio = 2.0;
        p.isl = 0;
        p.url = "x".into();
        assert_eq!(problem(&p), "--range-ratio must be in [0, 1), got 2");
    }

    #[test]
    fn goodput_slos_parse_by_metric() {
        let slo = parse_slo("ttft:300,tpot:50,e2el:2000").unwrap();
        assert_eq!(
            slo,
            Slo {
                ttft_ms: Some(300.0),
                tpot_ms: Some(50.0),
                e2el_ms: Some(2000.0),
            }
        );
        assert_eq!(parse_slo("").unwrap(), Slo::default());
        assert_eq!(parse_slo("tpot:7.5,").unwrap().tpot_ms, Some(7.5));
    }

    #[test]
    fn goodput_problems_name_the_part() {
        let message = |text: &str| {
            let e = parse_slo(text).unwrap_err();
            assert!(e.is_invalid_input());
            e.to_string()
        };
        assert_eq!(
            message("ttft300"),
            "--goodput `ttft300`: write metric:ms, e.g. ttft:300"
        );
        assert_eq!(
            message("ttft:fast"),
            "--goodput `ttft:fast`: `fast` is not a number of ms"
        );
        assert_eq!(
            message("ttft:1,itl:5"),
            "--goodput `itl`: use ttft, tpot or e2el"
        );
    }

    #[test]
    fn datasets_from_flags() {
        let file = || Some(PathBuf::from("d.jsonl"));
        assert_eq!(dataset_from_flags("random", None).unwrap(), Dataset::Random);
        assert_eq!(
            dataset_from_flags("jsonl", file()).unwrap(),
            Dataset::Jsonl("d.jsonl".into())
        );
        assert_eq!(
            dataset_from_flags("trtllm-custom", file()).unwrap(),
            Dataset::TrtllmCustom("d.jsonl".into())
        );
        let message = |kind: &str, path: Option<PathBuf>| {
            let e = dataset_from_flags(kind, path).unwrap_err();
            assert!(e.is_invalid_input());
            e.to_string()
        };
        assert_eq!(
            message("random", file()),
            "--dataset-path is read only with --dataset jsonl or trtllm-custom"
        );
        assert_eq!(
            message("jsonl", None),
            "--dataset jsonl needs --dataset-path FILE"
        );
        assert_eq!(
            message("trtllm-custom", None),
            "--dataset trtllm-custom needs --dataset-path FILE"
        );
        assert_eq!(message("sharegpt", file()), "unknown --dataset sharegpt");
    }
}
