//! Replay of a request trace in the public Mooncake format (FAST'25 "Mooncake" traces, also read
//! by aiperf, guidellm and Dynamo's tools): JSONL, one request per line,
//!
//! ```json
//! {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]}
//! ```
//!
//! - `timestamp`: when the request arrives, milliseconds from the trace's start;
//! - `input_length`, `output_length`: prompt and output tokens;
//! - `hash_ids`: the prompt's blocks of `block_size` tokens (512 in Mooncake's traces), each id
//!   naming one block's content *under its prefix* — two prompts with the same first k ids share
//!   their first k blocks.
//!
//! The prompts are built so that equal ids give equal token blocks: block `h` is `block_size`
//! ids drawn from `h` and the seed; a prompt is its blocks in order, cut to `input_length` (or
//! filled up with ids of its own when the blocks are fewer). Request `i` is due at
//! `(timestamp_i − timestamp_0) / speedup` seconds from the run's start, whatever happened to the
//! others, and its latency counts from then (the open loop of [`crate::runner`]).

use std::path::Path;

use crate::dataset::{DatasetError, PromptInput, Request, block, positive, read_json_lines};

/// Mooncake's block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 512;

/// One line of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// Arrival, ms from the trace's start.
    pub timestamp_ms: f64,
    /// Prompt tokens.
    pub input_length: u32,
    /// Output tokens.
    pub output_length: u32,
    /// The prompt's block ids.
    pub hash_ids: Vec<u64>,
}

/// The longest prompt a trace line may ask for, in tokens: a replay builds every prompt up front
/// (4 bytes a token), so a line of `input_length: 4294967295` would ask for 16 GiB; 16 M tokens is
/// past every model's context and 64 MiB at most.
pub const MAX_INPUT_LENGTH: u32 = 1 << 24;

/// Read a Mooncake trace; lines out of time order are refused (a replay would reorder them).
/// Every refusal names the line and the field ([`DatasetError::TraceLine`]).
pub fn load_mooncake(path: &Path) -> Result<Vec<TraceEntry>, DatasetError> {
    // The previous line's timestamp: checked here, so that the error names the file's line.
    let last = std::cell::Cell::new(0.0_f64);
    let entries = read_json_lines(path, |v| {
        if !v.is_object() {
            return Err(format!("not an object: {}", shown(v)));
        }
        let timestamp_ms = v["timestamp"]
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| {
                format!(
                    "timestamp must be a non-negative number of milliseconds, got {}",
                    shown(&v["timestamp"])
                )
            })?;
        if timestamp_ms < last.get() {
            return Err(format!(
                "timestamps must not decrease ({timestamp_ms} after {})",
                last.get()
            ));
        }
        last.set(timestamp_ms);
        let input_length = positive(&v["input_length"])
            .filter(|n| *n <= MAX_INPUT_LENGTH)
            .ok_or_else(|| {
                format!(
                    "input_length must be a positive integer of at most {MAX_INPUT_LENGTH} tokens, got {}",
                    shown(&v["input_length"])
                )
            })?;
        let output_length = positive(&v["output_length"]).ok_or_else(|| {
            format!(
                "output_length must be a positive integer below 2^32, got {}",
                shown(&v["output_length"])
            )
        })?;
        let hash_ids = match &v["hash_ids"] {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(ids) => ids
                .iter()
                .map(serde_json::Value::as_u64)
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| {
                    format!(
                        "hash_ids must be non-negative integers below 2^64, got {}",
                        shown(&v["hash_ids"])
                    )
                })?,
            other => {
                return Err(format!(
                    "hash_ids must be a list of integers, got {}",
                    shown(other)
                ));
            }
        };
        Ok(TraceEntry {
            timestamp_ms,
            input_length,
            output_length,
            hash_ids,
        })
    })
    .map_err(|e| match e {
        DatasetError::Line { path, line, why } => DatasetError::TraceLine { path, line, why },
        other => other,
    })?;
    Ok(entries)
}

/// A value as the error shows it: missing, or its JSON cut to 40 characters.
fn shown(v: &serde_json::Value) -> String {
    if v.is_null() {
        return "nothing (missing or null)".into();
    }
    let text = v.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The requests of `entries` and when each is due (seconds from the start at `speedup`×).
pub fn trace_requests(
    entries: &[TraceEntry],
    block_size: u32,
    speedup: f64,
    vocab: u32,
    seed: u64,
) -> (Vec<Request>, Vec<f64>) {
    let t0 = entries.first().map_or(0.0, |e| e.timestamp_ms);
    let speedup = if speedup > 0.0 { speedup } else { 1.0 };
    let requests = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut prompt: Vec<u32> = Vec::with_capacity(e.input_length as usize);
            for h in &e.hash_ids {
                if prompt.len() >= e.input_length as usize {
                    break;
                }
                prompt.extend(block(seed, *h, block_size, vocab));
            }
            prompt.truncate(e.input_length as usize);
            let missing = e.input_length - prompt.len() as u32;
            // Blocks the trace does not name are this request's own.
            prompt.extend(block(seed, (4 << 60) + i as u64, missing, vocab));
            Request {
                prompt_tokens: Some(prompt.len() as u32),
                prompt: PromptInput::Ids(prompt),
                output_tokens: e.output_length,
                session: None,
            }
        })
        .collect();
    let offsets = entries
        .iter()
        .map(|e| (e.timestamp_ms - t0) / 1000.0 / speedup)
        .collect();
    (requests, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: &Request) -> &[u32] {
        match &r.prompt {
            PromptInput::Ids(ids) => ids,
            PromptInput::Text(_) => panic!("ids expected"),
        }
    }

    /// The sample trace the tests and the docs use (generated for this project).
    const SAMPLE: &str = include_str!("../tests/data/sample-trace.jsonl");

    #[test]
    fn the_sample_trace_replays_with_shared_blocks_and_its_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, SAMPLE).unwrap();
        let entries = load_mooncake(&path).unwrap();
        assert_eq!(entries.len(), 48);
        let (reqs, offsets) = trace_requests(&entries, 512, 2.0, 32_000, 3);
        assert_eq!(reqs.len(), 48);
        for (r, e) in reqs.iter().zip(&entries) {
            assert_eq!(r.prompt_tokens, Some(e.input_length));
            assert_eq!(r.output_tokens, e.output_length);
        }
        // Twice as fast: each offset is half the trace's gap from the first line.
        for (o, e) in offsets.iter().zip(&entries) {
            assert!((o - (e.timestamp_ms - entries[0].timestamp_ms) / 2000.0).abs() < 1e-9);
        }
        // Two requests sharing their first k ids share exactly k × 512 leading tokens.
        for (a, ea) in reqs.iter().zip(&entries) {
            for (b, eb) in reqs.iter().zip(&entries) {
                let k = ea
                    .hash_ids
                    .iter()
                    .zip(&eb.hash_ids)
                    .take_while(|(x, y)| x == y)
                    .count();
                let n = (k * 512)
                    .min(ea.input_length as usize)
                    .min(eb.input_length as usize);
                assert_eq!(ids(a)[..n], ids(b)[..n]);
                if k < ea.hash_ids.len().min(eb.hash_ids.len()) {
                    let at = k * 512;
                    if at < ids(a).len().min(ids(b).len()) {
                        assert_ne!(ids(a)[at..], ids(b)[at..], "they part at block {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [1]}\n{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 2}\n",
        )
        .unwrap();
        let e = load_mooncake(&path).unwrap_err().to_string();
        assert!(e.contains("t.jsonl:2: timestamps must not decrease"), "{e}");
        std::fs::write(
            &path,
            "{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 2}\n",
        )
        .unwrap();
        let e = load_mooncake(&path).unwrap_err().to_string();
        assert!(e.contains("input_length must be a positive integer"), "{e}");
        std::fs::write(&path, "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [\"x\"]}\n").unwrap();
        assert!(load_mooncake(&path).is_err());
        // Fewer blocks than the length: the rest is the request's own.
        std::fs::write(&path, "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [9]}\n{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [9]}\n").unwrap();
        let (reqs, _) = trace_requests(&load_mooncake(&path).unwrap(), 512, 1.0, 100, 0);
        assert_eq!(ids(&reqs[0])[..512], ids(&reqs[1])[..512]);
        assert_ne!(ids(&reqs[0])[512..], ids(&reqs[1])[512..]);
    }
}
