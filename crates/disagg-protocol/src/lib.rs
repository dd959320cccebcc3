//! The wire protocol shared by the simulated engine, the router and the benchmark: OpenAI
//! completions and chat requests/responses/stream chunks, usage and errors; TensorRT-LLM's
//! `disaggregated_params` and its internal request signature (`auth`); a Server-Sent Events
//! codec; and the one accept loop of the sim and the router (`serve`: HTTP/1 with a header-read
//! timeout and graceful shutdown).
//!
//! Requests keep fields they do not model in `extra`, so a router can forward a body without
//! dropping what a client sent. Field names follow the OpenAI API and TensorRT-LLM's
//! `openai_protocol.py` (`DisaggregatedParams`).
//!
//! ```
//! use disagg_protocol::{CompletionRequest, Prompt};
//! let req: CompletionRequest =
//!     serde_json::from_str(r#"{"model":"m","prompt":[1,2,3],"max_tokens":4,"stream":true}"#).unwrap();
//! assert_eq!(req.prompt, Prompt::Tokens(vec![1, 2, 3]));
//! ```

pub mod auth;
pub mod body;
pub mod kv_cache;
pub mod prompt;
pub mod serve;
mod sse;
mod types;

pub use sse::{DONE, SseDecoder, SseEvent, sse_data};
pub use types::*;
