//! The benchmark client behind `disagg bench` and the BENCHMARK role.
//!
//! - [`plan`]: what to run, typed ([`BenchPlan`]: server, loads, prompts, limits, output), with
//!   the defaults of `disagg bench` and [`BenchPlan::validate`]; [`parse_slo`] for `--goodput`.
//! - [`execute`] (in [`drive`]): runs a plan load after load, prints each run's result block,
//!   writes the [`record`]s (`con8.json`) and `results.csv`, keeps a [`progress::Progress`] up to
//!   date and stops on [`Hooks::stop`].
//! - The parts: arrival schedules ([`arrival`], pure), request sets ([`dataset`]: random token
//!   ids, JSONL, trtllm_custom, tokenizer text), the load generator ([`runner`]), per-request
//!   [`timeline::Timeline`]s as plain data, the run metrics derived from them with the upstream
//!   (TensorRT-LLM / vLLM `benchmark_serving`) definitions ([`metrics`]), numpy-compatible
//!   statistics ([`stats`]) and the TensorRT-LLM result block ([`report`]) that the upstream
//!   pipeline's regexes parse.
//! - [`record`]: the versioned JSON record of one run, written here and read back by
//!   `disagg-results`; [`steptime`]: the gen-only metric, the generation workers' per-iteration
//!   device step time read from their iteration logs.
//!
//! A plan starts from the defaults of `disagg bench`:
//!
//! ```
//! use disagg_bench::{BenchPlan, runner::Load};
//! let mut plan = BenchPlan::new("http://127.0.0.1:8000", "llama");
//! plan.loads = vec![Load::Concurrency(1), Load::Concurrency(8)];
//! plan.out = Some("results".into());
//! plan.validate()?;
//! assert_eq!(plan.label_and_prompts(Load::Concurrency(8)), ("con8".to_string(), 8));
//!
//! plan.range_ratio = 1.0;
//! let e = plan.validate().unwrap_err();
//! assert_eq!(e.to_string(), "--range-ratio must be in [0, 1), got 1");
//! # Ok::<(), disagg_bench::BenchError>(())
//! ```
//!
//! and runs on a runtime of the caller's, which also owns the stop signal:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use disagg_bench::{BenchPlan, Hooks, execute};
//! let runtime = tokio::runtime::Runtime::new()?;
//! let hooks = Hooks::default(); // cancel hooks.stop to end the current run
//! let outcome = execute(&BenchPlan::new("http://127.0.0.1:8000", "llama"), &runtime, &hooks)?;
//! println!("invalid runs: {}, interrupted: {}", outcome.any_invalid, outcome.interrupted);
//! # Ok(()) }
//! ```
//!
//! The metrics of a run are plain functions of its timelines:
//!
//! ```
//! use std::time::Duration;
//! use disagg_bench::{metrics, report, timeline::{Chunk, Timeline}};
//! let ms = Duration::from_millis;
//! let t = Timeline {
//!     intended: ms(0), sent: ms(0), end: ms(31), prompt_tokens: 8, requested_output_tokens: 3,
//!     chunks: vec![Chunk { at: ms(10), tokens: 1 }, Chunk { at: ms(20), tokens: 1 }, Chunk { at: ms(30), tokens: 1 }],
//!     usage_output_tokens: Some(3), usage_prompt_tokens: Some(8),
//!     output_text: None, tokenizer_output_tokens: None, decoded_per_iter: Default::default(),
//!     error: None,
//! };
//! let m = metrics::compute(&[t], &[99.0], None);
//! assert_eq!(m.tpot_ms.mean, 10.0);
//! assert!(report::console_block(&m).contains("Mean TTFT (ms):"));
//! ```

pub mod arrival;
pub mod chat_template;
pub mod dataset;
pub mod drive;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod record;
pub mod report;
pub mod runner;
pub mod stats;
pub mod steptime;
pub mod telemetry;
pub mod timeline;
pub mod trace;

pub use drive::{Hooks, Outcome, execute};
pub use plan::{BenchPlan, parse_slo};

/// Why a benchmark could not run, or its records not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plan cannot run as given; the message names the `disagg bench` flag to change.
    #[error("{0}")]
    InvalidPlan(String),
    /// The dataset or the tokenizer cannot be used.
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    /// The output directory cannot be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A result file cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The result block cannot be printed.
    #[error("cannot print the results on stdout")]
    Print(#[source] std::io::Error),
    /// A run's record cannot be turned into JSON.
    #[error("cannot write the record of {label} as JSON")]
    Serialize {
        /// The run (`con8`).
        label: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record is not what `disagg bench` writes.
    #[error(
        "{path}: not a disagg result record ({why}); it was written by another tool or version, or truncated"
    )]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error.
        why: String,
    },
}

impl BenchError {
    /// Whether the error is in what the user gave (the plan, the dataset, the tokenizer) rather
    /// than in the machine or the results: `disagg` exits 2 for these.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, BenchError::InvalidPlan(_) | BenchError::Dataset(_))
    }
}
