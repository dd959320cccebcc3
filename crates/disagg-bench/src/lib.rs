//! The benchmark client behind `disagg bench`: arrival schedules ([`arrival`], pure), request
//! sets ([`dataset`]: random token ids, JSONL), the load generator ([`runner`]), per-request [`timeline::Timeline`]s as plain data,
//! the run metrics derived from them with the upstream (TensorRT-LLM / vLLM `benchmark_serving`)
//! definitions ([`metrics`]), numpy-compatible statistics ([`stats`]) and the TensorRT-LLM result
//! block ([`report`]) that the upstream pipeline's regexes parse.
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
pub mod report;
pub mod runner;
pub mod stats;
pub mod timeline;
