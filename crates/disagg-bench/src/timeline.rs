//! What happened to one request, as plain data: when it was due, when it was sent, when each
//! content chunk arrived (and how many tokens it carried), when it ended, and what the server
//! counted. Every metric is derived from these by [`crate::metrics`].

use std::time::Duration;

use serde::Serialize;

/// One content chunk (an SSE event with `choices`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Chunk {
    /// Arrival, since the start of the run.
    pub at: Duration,
    /// Tokens it carried, as far as the client can tell (1 when it cannot).
    pub tokens: u32,
}

/// The last `choices[0].avg_decoded_tokens_per_iter` of a request's chunks: TensorRT-LLM's
/// speculative-decoding acceptance (tokens per decoding iteration, `≥ 1`), a non-standard
/// field. Upstream's client (`backend_request_func.py`) starts from `0.0`, lets every chunk that
/// carries the key overwrite it, and leaves out of the statistics only a request whose last
/// value was `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodedPerIter {
    /// No chunk carried the key: counts as `0.0`.
    #[default]
    NotSent,
    /// The last chunk that carried it sent `null`: left out.
    Null,
    /// The value the last chunk that carried it sent.
    Value(f64),
}

impl DecodedPerIter {
    /// What a chunk's `choices[0]` says: `None` when it has no such key.
    pub fn from_choice(choice: &serde_json::Value) -> Option<DecodedPerIter> {
        let v = choice.get("avg_decoded_tokens_per_iter")?;
        Some(match v.as_f64() {
            Some(x) => DecodedPerIter::Value(x),
            None => DecodedPerIter::Null,
        })
    }

    /// The value upstream's statistics take for the request: `None` when it is left out.
    pub fn sample(self) -> Option<f64> {
        match self {
            DecodedPerIter::NotSent => Some(0.0),
            DecodedPerIter::Null => None,
            DecodedPerIter::Value(x) => Some(x),
        }
    }
}

/// One request's timeline. Times are offsets from the start of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// When it was due. Latencies count from here, so a late send is the system's delay, not
    /// hidden (no coordinated omission). In a closed loop it equals `sent`.
    pub intended: Duration,
    /// When the request was written.
    pub sent: Duration,
    /// Content chunks in arrival order (a non-streamed response is one chunk at its arrival).
    pub chunks: Vec<Chunk>,
    /// When the response ended (`[DONE]` or the end of the body).
    pub end: Duration,
    /// Prompt length the dataset asked for.
    pub prompt_tokens: u32,
    /// Output length requested (`max_tokens`).
    pub requested_output_tokens: u32,
    /// `usage.completion_tokens`, when the server sent it.
    pub usage_output_tokens: Option<u32>,
    /// `usage.prompt_tokens`, when the server sent it.
    pub usage_prompt_tokens: Option<u32>,
    /// The generated text, kept only when a tokenizer will count it.
    #[serde(skip)]
    pub output_text: Option<String>,
    /// Output tokens counted by the client's tokenizer, when it has one.
    pub tokenizer_output_tokens: Option<u32>,
    /// Speculative decoding's tokens per iteration, as the server reported it.
    pub decoded_per_iter: DecodedPerIter,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Where a request's output-token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage.completion_tokens`.
    Usage,
    /// The client's tokenizer, on the generated text.
    Tokenizer,
    /// The tokens counted in the chunks.
    Chunks,
}

impl Timeline {
    /// A finished request for tests: 8 prompt tokens, 4 output tokens in two chunks (at 10 and
    /// 20 ms), ended at 21 ms, with `decoded_per_iter`.
    #[cfg(test)]
    pub(crate) fn sample(decoded_per_iter: DecodedPerIter) -> Timeline {
        let ms = std::time::Duration::from_millis;
        Timeline {
            intended: ms(0),
            sent: ms(0),
            end: ms(21),
            prompt_tokens: 8,
            requested_output_tokens: 4,
            chunks: vec![
                Chunk {
                    at: ms(10),
                    tokens: 1,
                },
                Chunk {
                    at: ms(20),
                    tokens: 3,
                },
            ],
            usage_output_tokens: Some(4),
            usage_prompt_tokens: Some(8),
            output_text: None,
            tokenizer_output_tokens: None,
            decoded_per_iter,
            error: None,
        }
    }

    /// Whether it counts as a success: no error and at least one content chunk.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && !self.chunks.is_empty()
    }

    /// Output tokens: `usage.completion_tokens` when positive (the upstream rule), else the
    /// client's tokenizer count of the text, else the tokens counted in the chunks.
    pub fn output_tokens(&self) -> (u32, TokenSource) {
        match (self.usage_output_tokens, self.tokenizer_output_tokens) {
            (Some(n), _) if n > 0 => (n, TokenSource::Usage),
            (_, Some(n)) if n > 0 => (n, TokenSource::Tokenizer),
            _ => (
                self.chunks.iter().map(|c| c.tokens).sum(),
                TokenSource::Chunks,
            ),
        }
    }

    /// Time to first token: first content chunk − intended start.
    pub fn ttft(&self) -> Option<Duration> {
        Some(self.chunks.first()?.at.saturating_sub(self.intended))
    }

    /// End-to-end latency: last content chunk − intended start (not `[DONE]`, not the usage
    /// chunk, as vLLM and TensorRT-LLM's completions path).
    pub fn e2el(&self) -> Option<Duration> {
        Some(self.chunks.last()?.at.saturating_sub(self.intended))
    }

    /// Gaps between consecutive content chunks (upstream ITL: one entry per chunk, so a chunk of
    /// k tokens contributes one gap, and mean ITL ≈ k × TPOT).
    pub fn chunk_gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        self.chunks
            .windows(2)
            .map(|w| w[1].at.saturating_sub(w[0].at))
    }
}
