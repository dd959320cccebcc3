//! The benchmark client behind `disagg bench`: what to run, typed ([`plan::BenchPlan`], with
//! the defaults of `disagg bench` and its validation; [`plan::parse_slo`] for `--goodput`),
//! arrival schedules ([`arrival`], pure), request
//! sets ([`dataset`]: random token ids, JSONL), the load generator ([`runner`]), per-request [`timeline::Timeline`]s as plain data,
//! the run metrics derived from them with the upstream (TensorRT-LLM / vLLM `benchmark_serving`)
//! definitions ([`metrics`]), numpy-compatible statistics ([`stats`]) and the TensorRT-LLM result
//! block ([`report`]) that the upstream pipeline's regexes parse; the versioned JSON [`record`] of
//! a run, written by `disagg bench` and read back by `disagg-results`.
//!
//! ```
//! use std::time::Duration;
//! use disagg_bench::{metrics, report, timeline::{Chunk, Timeline}};
//! let ms = Duration::from_millis;
//! let t = Timeline {
//!     intended: ms(0), sent: ms(0), end: ms(31), prompt_tokens: 8, requested_output_tokens: 3,
//!     chunks: vec![Chunk { at: ms(10), tokens: 1 }, Chunk { at: ms(20), tokens: 1 }, Chunk { at: ms(30), tokens: 1 }],
//!     usage_output_tokens: Some(3), usage_prompt_tokens: Some(8),
//!     output_text: None, tokenizer_output_tokens: None, error: None,
//! };
//! let m = metrics::compute(&[t], &[99.0], None);
//! assert_eq!(m.tpot_ms.mean, 10.0);
//! assert!(report::console_block(&m).contains("Mean TTFT (ms):"));
//! ```

pub mod arrival;
pub mod dataset;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod report;
pub mod runner;
pub mod stats;
pub mod timeline;

pub use plan::{BenchPlan, parse_slo};

/// Why a benchmark plan cannot run, or its records not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plan cannot run as given; the message names the `disagg bench` flag to change.
    #[error("{0}")]
    InvalidPlan(String),
    /// The dataset or the tokenizer cannot be used.
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
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
