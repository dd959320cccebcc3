//! What a server is: its model, role, handshake and the knobs that shape its answers.

use std::sync::Arc;
use std::time::Duration;

use disagg_config::AuthKey;

use crate::handoff;
use crate::prefix_cache::CacheSettings;
use crate::scheduler::{CostModel, Speculation};
use crate::text;

/// Which legs a server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Prefill legs (and aggregated requests).
    Context,
    /// Decode legs (and aggregated requests).
    Generation,
    /// Everything.
    Both,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Context => "context",
            Role::Generation => "generation",
            Role::Both => "both",
        }
    }
}

/// Which disaggregation handshake the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TensorRT-LLM `disaggregated_params`.
    Trtllm,
    /// vLLM `kv_transfer_params` (NIXL connector, as vllm-router drives it).
    Vllm,
    /// SGLang `bootstrap_host/port/room` (as sglang-router drives it).
    Sglang,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Model name served; requests for another are refused.
    pub model: String,
    /// Legs taken.
    pub role: Role,
    /// Handshake.
    pub protocol: Protocol,
    /// Tokens per streamed chunk after the first.
    pub stream_interval: u32,
    /// Longest prompt + output.
    pub max_seq_len: u32,
    /// Output length when a request gives none.
    pub default_max_tokens: u32,
    /// Seed of the generated tokens.
    pub seed: u64,
    /// Chance that a token is the end of the output (0 = outputs always run to `max_tokens`).
    pub eos_probability: f64,
    /// Key of the hand-off digest, shared by the servers of one test.
    pub handoff_key: String,
    /// This server's name in the hand-offs it issues (its address once bound).
    pub issuer: String,
    /// `internal_request_auth_key`: when set, a request whose `disaggregated_params` carry
    /// `ctx_info_endpoint` or `encoded_opaque_state` must be signed with it
    /// (`x-trtllm-disagg-auth`), else it is refused with 401, as upstream's workers refuse it.
    pub auth_key: Option<AuthKey>,
    /// Accept `generation_only` requests without an opaque state, as upstream's gen-only
    /// benchmark mode sends (`TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1`).
    pub accept_synthetic_handoff: bool,
    /// How long a decode leg waits for its prefill (SGLang).
    pub bootstrap_timeout: Duration,
    /// Cost model (for transfer times).
    pub cost: CostModel,
    /// Speculative decoding; when on, every streamed choice carries TensorRT-LLM's
    /// `avg_decoded_tokens_per_iter`.
    pub speculation: Speculation,
    /// Print every engine step to stderr as TensorRT-LLM does with `print_iter_log: true` (the
    /// gen-only benchmark reads the generation workers' step times from those lines).
    pub print_iter_log: bool,
    /// Block size, reuse and KV cache events (`kv_cache_config`).
    pub kv_cache: CacheSettings,
    /// How text prompts become token ids: a real tokenizer (so that prompt lengths, and with
    /// them prefill times, match what clients with that tokenizer meant), else one token per
    /// whitespace-separated word.
    pub tokenizer: Option<TextTokenizer>,
}

/// Text → token ids.
pub type TokenizeFn = dyn Fn(&str) -> Vec<u32> + Send + Sync;

/// A text → token ids function (the binary plugs in a Hugging Face tokenizer).
#[derive(Clone)]
pub struct TextTokenizer(pub Arc<TokenizeFn>);

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextTokenizer")
    }
}

impl SimConfig {
    pub(super) fn tokenize(&self, text: &str) -> Vec<u32> {
        match &self.tokenizer {
            Some(t) => (t.0)(text),
            None => text::tokenize(text),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "sim".to_string(),
            role: Role::Both,
            protocol: Protocol::Trtllm,
            stream_interval: 1,
            max_seq_len: 131_072,
            default_max_tokens: 16,
            seed: 0,
            eos_probability: 0.0,
            handoff_key: handoff::DEFAULT_KEY.to_string(),
            issuer: "sim".to_string(),
            auth_key: None,
            accept_synthetic_handoff: false,
            bootstrap_timeout: Duration::from_secs(60),
            cost: CostModel::default(),
            speculation: Speculation::default(),
            print_iter_log: false,
            kv_cache: CacheSettings::default(),
            tokenizer: None,
        }
    }
}
