//! `worker_config.ctx|gen`: the engine's options, passed through untouched, with typed access
//! to the keys that planning, the simulator and the results need.

use crate::diag::Sink;
use crate::reader::{self, MapRef, Need};
use crate::yaml::{Node, Pos, Scalar, Value};

/// Keys the upstream harness strips before writing the engine's options file, exactly its
/// `exclude_keys` (`tests/integration/defs/perf/test_perf_sanity.py`, `ServerConfig.__init__`).
/// `internal_request_auth_key` is not among them: upstream puts the run's key into every
/// worker's options on purpose, and a key written under `worker_config` reaches the engine too.
pub const HARNESS_KEYS: &[&str] = &[
    "mode",
    "concurrency",
    "name",
    "model_name",
    "disagg_run_type",
    "gpus",
    "gpus_per_node",
    "match_mode",
    "client_configs",
    "backend",
    "extra_llm_api_config_path",
    "server_env_var",
];

/// Speculative decoding settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speculative {
    /// `MTP`, `Eagle3`, ...
    pub decoding_type: String,
    /// Draft length (`max_draft_len`, or the older `num_nextn_predict_layers`).
    pub draft_len: u32,
    /// Which key gave the draft length.
    pub draft_len_key: &'static str,
}

/// One server kind's engine options.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    raw: Option<Node>,
    pos: Option<Pos>,
    tp: u32,
    pp: u32,
    cp: u32,
    moe_ep: u32,
    attention_dp: bool,
    max_batch_size: u32,
    max_batch_size_set: bool,
    max_num_tokens: u32,
    max_seq_len: Option<u32>,
    stream_interval: u32,
    cache_transceiver_backend: Option<String>,
    moe_backend: Option<String>,
    eplb_slots: Option<u32>,
    load_balancer_file: Option<String>,
    speculative: Option<Speculative>,
    tp_pos: Option<Pos>,
    kv_cache: KvCacheOptions,
}

/// `kv_cache_config`: the keys the simulator and the router act on, upstream's defaults when
/// absent (`KvCacheConfig` in `llm_args.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheOptions {
    /// `tokens_per_block` (32).
    pub tokens_per_block: u32,
    /// `enable_block_reuse` (true).
    pub enable_block_reuse: bool,
    /// `event_buffer_max_size` (0: no KV cache events).
    pub event_buffer_max_size: u32,
    /// Whether `tokens_per_block` was written (upstream's router copies only a written one).
    pub tokens_per_block_set: bool,
}

impl Default for KvCacheOptions {
    fn default() -> Self {
        KvCacheOptions {
            tokens_per_block: 32,
            enable_block_reuse: true,
            event_buffer_max_size: 0,
            tokens_per_block_set: false,
        }
    }
}

fn read_kv_cache(sink: &mut Sink, map: MapRef<'_>, path: &str) -> KvCacheOptions {
    let kv_path = format!("{path}.kv_cache_config");
    let Some(kv) = reader::section(sink, map, "kv_cache_config", &kv_path) else {
        return KvCacheOptions::default();
    };
    let d = KvCacheOptions::default();
    let tokens_per_block = reader::int(
        sink,
        kv,
        "tokens_per_block",
        Need::Optional,
        1,
        1 << 20,
        "tokens per KV-cache block (a power of two, e.g. 32)",
    )
    .map(|v| v as u32);
    KvCacheOptions {
        tokens_per_block: tokens_per_block.unwrap_or(d.tokens_per_block),
        tokens_per_block_set: tokens_per_block.is_some(),
        enable_block_reuse: reader::bool(
            sink,
            kv,
            "enable_block_reuse",
            Need::Optional,
            "true to reuse cached prompt blocks across requests",
        )
        .unwrap_or(d.enable_block_reuse),
        event_buffer_max_size: reader::int(
            sink,
            kv,
            "event_buffer_max_size",
            Need::Optional,
            0,
            i64::from(u32::MAX),
            "KV cache events kept for the router; 0 keeps none",
        )
        .map_or(d.event_buffer_max_size, |v| v as u32),
    }
}

/// Upstream defaults used when a key is absent (`ServerConfig` in the upstream harness).
const DEFAULT_MAX_BATCH_SIZE: u32 = 512;
const DEFAULT_MAX_NUM_TOKENS: u32 = 2048;
const DEFAULT_STREAM_INTERVAL: u32 = 10;

fn positive(sink: &mut Sink, map: MapRef<'_>, key: &str, default: u32, hint: &str) -> u32 {
    reader::int(sink, map, key, Need::Optional, 1, i64::from(u32::MAX), hint)
        .map_or(default, |v| v as u32)
}

impl WorkerOptions {
    /// Read the options of one server kind at `path` (`worker_config.gen`).
    pub(crate) fn read(sink: &mut Sink, node: Option<&Node>, path: &str) -> WorkerOptions {
        let Some(node) = node.filter(|n| n.as_map().is_some()) else {
            return WorkerOptions::defaults();
        };
        let map = MapRef { node, path };
        let size_hint =
            "a positive integer; GPUs per server = tensor × pipeline × context parallel size";
        let tp = positive(sink, map, "tensor_parallel_size", 1, size_hint);
        let pp = positive(sink, map, "pipeline_parallel_size", 1, size_hint);
        let cp = positive(sink, map, "context_parallel_size", 1, size_hint);
        let moe_ep = positive(
            sink,
            map,
            "moe_expert_parallel_size",
            1,
            "a positive integer (expert parallelism is carved from the same ranks)",
        );
        let attention_dp = reader::bool(
            sink,
            map,
            "enable_attention_dp",
            Need::Optional,
            "true for attention data parallel (`dep`), false for `tep`",
        )
        .unwrap_or(false);
        let max_batch_size = positive(
            sink,
            map,
            "max_batch_size",
            DEFAULT_MAX_BATCH_SIZE,
            "the most requests the engine schedules at once",
        );
        let max_num_tokens = positive(
            sink,
            map,
            "max_num_tokens",
            DEFAULT_MAX_NUM_TOKENS,
            "the most tokens the engine batches in one step",
        );
        let max_seq_len = reader::int(
            sink,
            map,
            "max_seq_len",
            Need::Optional,
            0,
            i64::from(u32::MAX),
            "the longest prompt + output in tokens",
        )
        .map(|v| v as u32)
        .filter(|v| *v > 0);
        let stream_interval = positive(
            sink,
            map,
            "stream_interval",
            DEFAULT_STREAM_INTERVAL,
            "tokens generated between two streamed chunks",
        );
        let tc_path = format!("{path}.cache_transceiver_config");
        let transceiver = reader::section(sink, map, "cache_transceiver_config", &tc_path);
        let cache_transceiver_backend = transceiver.and_then(|t| {
            reader::string(
                sink,
                t,
                "backend",
                Need::Optional,
                "UCX, NIXL, MPI or DEFAULT",
            )
        });
        let moe_path = format!("{path}.moe_config");
        let moe = reader::section(sink, map, "moe_config", &moe_path);
        let moe_backend = moe.and_then(|m| {
            reader::string(
                sink,
                m,
                "backend",
                Need::Optional,
                "CUTLASS, TRTLLM, CUTEDSL or WIDEEP",
            )
        });
        let lb_path = format!("{moe_path}.load_balancer");
        let (eplb_slots, load_balancer_file) = match moe {
            Some(m) => read_load_balancer(sink, m, &lb_path),
            None => (None, None),
        };
        let spec_path = format!("{path}.speculative_config");
        let speculative = reader::section(sink, map, "speculative_config", &spec_path)
            .map(|s| read_speculative(sink, s));
        let kv_cache = read_kv_cache(sink, map, path);
        WorkerOptions {
            raw: Some(node.clone()),
            pos: Some(node.pos),
            tp,
            pp,
            cp,
            moe_ep,
            attention_dp,
            max_batch_size,
            max_batch_size_set: node.get("max_batch_size").is_some(),
            max_num_tokens,
            max_seq_len,
            stream_interval,
            cache_transceiver_backend,
            moe_backend,
            eplb_slots,
            load_balancer_file,
            speculative,
            tp_pos: node.get("tensor_parallel_size").map(|n| n.pos),
            kv_cache,
        }
    }

    fn defaults() -> WorkerOptions {
        WorkerOptions {
            raw: None,
            pos: None,
            tp: 1,
            pp: 1,
            cp: 1,
            moe_ep: 1,
            attention_dp: false,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_size_set: false,
            max_num_tokens: DEFAULT_MAX_NUM_TOKENS,
            max_seq_len: None,
            stream_interval: DEFAULT_STREAM_INTERVAL,
            cache_transceiver_backend: None,
            moe_backend: None,
            eplb_slots: None,
            load_balancer_file: None,
            speculative: None,
            tp_pos: None,
            kv_cache: KvCacheOptions::default(),
        }
    }

    /// The options as written, in source order (`None` when the section is absent).
    pub fn raw(&self) -> Option<&Node> {
        self.raw.as_ref()
    }

    /// The options to hand to the engine: everything but the harness's own keys.
    pub fn engine_options(&self) -> Vec<(&str, &Node)> {
        self.raw
            .as_ref()
            .and_then(Node::as_map)
            .unwrap_or_default()
            .iter()
            .filter(|(k, _)| !HARNESS_KEYS.contains(&k.text.as_str()))
            .map(|(k, v)| (k.text.as_str(), v))
            .collect()
    }

    /// Where the section starts.
    pub fn pos(&self) -> Option<Pos> {
        self.pos
    }

    /// Where `tensor_parallel_size` is written (or the section, if it is not).
    pub fn size_pos(&self) -> Option<Pos> {
        self.tp_pos.or(self.pos)
    }

    /// Tensor parallel size.
    pub fn tp(&self) -> u32 {
        self.tp
    }
    /// Pipeline parallel size.
    pub fn pp(&self) -> u32 {
        self.pp
    }
    /// Context parallel size.
    pub fn cp(&self) -> u32 {
        self.cp
    }
    /// GPUs one server of this kind uses: tp × pp × cp (EP and attention DP add none).
    pub fn gpus(&self) -> u32 {
        self.tp.saturating_mul(self.pp).saturating_mul(self.cp)
    }
    /// MoE expert parallel size.
    pub fn moe_ep(&self) -> u32 {
        self.moe_ep
    }
    /// Attention data parallel.
    pub fn attention_dp(&self) -> bool {
        self.attention_dp
    }
    /// `max_batch_size` (upstream default 512).
    pub fn max_batch_size(&self) -> u32 {
        self.max_batch_size
    }
    /// `max_batch_size` only when the config writes it (upstream's gen-only queue cap falls back
    /// to the concurrency, not to 512).
    pub fn max_batch_size_written(&self) -> Option<u32> {
        self.max_batch_size_set.then_some(self.max_batch_size)
    }
    /// `max_num_tokens` (upstream default 2048).
    pub fn max_num_tokens(&self) -> u32 {
        self.max_num_tokens
    }
    /// `max_seq_len`, when set and non-zero.
    pub fn max_seq_len(&self) -> Option<u32> {
        self.max_seq_len
    }
    /// `stream_interval` (upstream default 10).
    pub fn stream_interval(&self) -> u32 {
        self.stream_interval
    }
    /// `cache_transceiver_config.backend`.
    pub fn cache_transceiver_backend(&self) -> Option<&str> {
        self.cache_transceiver_backend.as_deref()
    }
    /// `moe_config.backend`.
    pub fn moe_backend(&self) -> Option<&str> {
        self.moe_backend.as_deref()
    }
    /// `moe_config.load_balancer.num_slots` (`None` when the balancer is a file: its slots are
    /// in the file, which upstream does not read either).
    pub fn eplb_slots(&self) -> Option<u32> {
        self.eplb_slots
    }
    /// `moe_config.load_balancer` when it is a string: the path of an offline-EPLB YAML the
    /// engine loads, as written.
    pub fn load_balancer_file(&self) -> Option<&str> {
        self.load_balancer_file.as_deref()
    }
    /// `speculative_config`.
    pub fn speculative(&self) -> Option<&Speculative> {
        self.speculative.as_ref()
    }
    /// `kv_cache_config`'s block size, block reuse and event buffer.
    pub fn kv_cache(&self) -> KvCacheOptions {
        self.kv_cache
    }
}

/// `moe_config.load_balancer`: inline (`num_slots`, `layer_updates_per_iter`) or, as upstream
/// accepts it, a string naming an offline-EPLB YAML (`ServerConfig.__init__` in
/// `test_perf_sanity.py` skips the inline fields then).
fn read_load_balancer(
    sink: &mut Sink,
    moe: MapRef<'_>,
    path: &str,
) -> (Option<u32>, Option<String>) {
    let Some(node) = moe.get("load_balancer") else {
        return (None, None);
    };
    if let Value::Scalar { text, .. } = &node.value {
        if matches!(node.scalar(), Some(Scalar::Str(_))) && !text.is_empty() {
            return (None, Some(text.clone()));
        }
    }
    let slots = reader::section(sink, moe, "load_balancer", path).and_then(|lb| {
        reader::int(
            sink,
            lb,
            "num_slots",
            Need::Optional,
            0,
            i64::from(u32::MAX),
            "number of expert slots for the load balancer",
        )
    });
    (slots.map(|v| v as u32), None)
}

fn read_speculative(sink: &mut Sink, spec: MapRef<'_>) -> Speculative {
    let decoding_type = reader::string(
        sink,
        spec,
        "decoding_type",
        Need::Optional,
        "MTP, Eagle3, ...",
    )
    .unwrap_or_default();
    let hint = "the number of draft tokens per step";
    let mut read = |key: &'static str| {
        reader::int(sink, spec, key, Need::Optional, 0, 64, hint).map(|v| (v as u32, key))
    };
    let (draft_len, draft_len_key) = read("max_draft_len")
        .or_else(|| read("num_nextn_predict_layers"))
        .unwrap_or((0, "max_draft_len"));
    Speculative {
        decoding_type,
        draft_len,
        draft_len_key,
    }
}
