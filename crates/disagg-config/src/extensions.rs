//! Our own optional top-level sections: `engine`, `router`, `results` (and `workload`, in
//! [`crate::workload`]). Unlike the upstream
//! sections they reject unknown keys, so a typo never silently falls back to a default.

use crate::diag::Sink;
use crate::reader::{self, MapRef, Need};

/// Which engine the worker roles start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The built-in simulated engine.
    Sim,
    /// `trtllm-serve`.
    Trtllm,
    /// `vllm serve`.
    Vllm,
    /// `python -m sglang.launch_server`.
    Sglang,
    /// A command template.
    Command,
}

impl EngineKind {
    /// All spellings, in the order shown in messages.
    pub const NAMES: &'static [&'static str] = &["sim", "trtllm", "vllm", "sglang", "command"];

    /// Parse a spelling.
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "sim" => Some(EngineKind::Sim),
            "trtllm" => Some(EngineKind::Trtllm),
            "vllm" => Some(EngineKind::Vllm),
            "sglang" => Some(EngineKind::Sglang),
            "command" => Some(EngineKind::Command),
            _ => None,
        }
    }

    /// Its spelling (as written in configs and `run.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sim => "sim",
            EngineKind::Trtllm => "trtllm",
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Command => "command",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    /// An unknown spelling is an error naming the known ones (never a silent `sim`).
    fn from_str(s: &str) -> Result<EngineKind, String> {
        EngineKind::parse(s)
            .ok_or_else(|| format!("engine `{s}`: use one of {}", EngineKind::NAMES.join(", ")))
    }
}

/// Placeholders an `engine.command` template may use; each is replaced by its shell-quoted value.
pub const COMMAND_PLACEHOLDERS: &[&str] = &[
    "host",
    "port",
    "model",
    "options_file",
    "role",
    "worker",
    "tp",
    "pp",
    "run_dir",
];

/// The `{name}` placeholders of a template that are not [`COMMAND_PLACEHOLDERS`] (`{{` and `}}`
/// are literal braces).
pub fn unknown_placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            rest = after;
            continue;
        }
        match tail.find('}') {
            Some(end) => {
                let name = &tail[1..end];
                if !COMMAND_PLACEHOLDERS.contains(&name) {
                    out.push(name.to_string());
                }
                rest = &tail[end + 1..];
            }
            None => {
                out.push(tail.to_string());
                break;
            }
        }
    }
    out
}

/// Cost-model parameters for the simulated engine; unset ones take the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimParams {
    /// Named parameters in source order (validated names, non-negative numbers).
    pub values: Vec<(String, f64)>,
}

/// Parameter names the simulated engine understands.
pub const SIM_PARAMS: &[&str] = &[
    "prefill_tokens_per_s",
    "decode_step_base_ms",
    "decode_step_per_seq_ms",
    "kv_capacity_tokens",
    "kv_transfer_gb_per_s",
    "kv_bytes_per_token",
    "eos_probability",
    "seed",
];

/// `engine:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    /// Which engine.
    pub kind: EngineKind,
    /// Template for `command` engines.
    pub command: Option<String>,
    /// Words appended to the engine's command line (`vllm serve`, `trtllm-serve`, ...).
    pub args: Vec<String>,
    /// Simulated-engine parameters.
    pub sim: SimParams,
    /// First of the ports the plan hands to servers (KV transfer, multi-node rendezvous; two
    /// each) [default: the engine's own default port: vLLM NIXL 5600, SGLang bootstrap 8998].
    pub ports_from: Option<u16>,
}

/// `router:`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router {
    /// `disagg` (the built-in router, default) or `trtllm` (`trtllm-serve disaggregated`).
    pub implementation: Option<&'static str>,
    /// `round_robin`, `load_balancing` or `kv_cache_aware`.
    pub policy: Option<&'static str>,
    /// Retries before the first byte reached the client.
    pub max_retries: Option<u32>,
    /// Per-request deadline, seconds.
    pub request_timeout_s: Option<f64>,
    /// How long to wait for every worker's health, seconds.
    pub server_start_timeout_s: Option<f64>,
    /// The hand-off between a request's two legs: `trtllm`, `vllm` or `sglang` [default: the
    /// engine's own; only the sim and `command` engines speak another].
    pub protocol: Option<&'static str>,
    /// Upstream's `conditional_disagg_config.max_local_prefill_length`: with `policy:
    /// kv_cache_aware`, a request with part of its prompt cached on a generation server and at
    /// most this many tokens uncached skips the context leg.
    pub max_local_prefill_length: Option<u32>,
    /// How the built-in router tokenizes text prompts for `kv_cache_aware`: `sim`, or the
    /// absolute path of a Hugging Face tokenizer (a directory with `tokenizer.json`, or the
    /// file) [default: `sim` with the sim engine, none otherwise].
    pub tokenizer: Option<String>,
}

/// `results:`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// SQLite store path.
    pub db: Option<String>,
    /// Relative threshold for post-merge runs.
    pub post_merge_threshold: Option<f64>,
    /// Relative threshold for pre-merge runs.
    pub pre_merge_threshold: Option<f64>,
}

/// Our sections, all optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extensions {
    /// `engine:`.
    pub engine: Option<Engine>,
    /// `router:`.
    pub router: Option<Router>,
    /// `results:`.
    pub results: Option<Results>,
    /// `workload:`: a generated or traced dataset instead of random prompts.
    pub workload: Option<crate::Workload>,
}

impl Extensions {
    pub(crate) fn read(sink: &mut Sink, top: MapRef<'_>) -> Extensions {
        Extensions {
            engine: reader::section(sink, top, "engine", "engine").map(|e| read_engine(sink, e)),
            router: reader::section(sink, top, "router", "router").map(|r| read_router(sink, r)),
            results: reader::section(sink, top, "results", "results")
                .map(|r| read_results(sink, r)),
            workload: crate::workload::read(sink, top),
        }
    }
}

fn read_engine(sink: &mut Sink, e: MapRef<'_>) -> Engine {
    reader::check_keys(
        sink,
        e,
        &["type", "command", "args", "sim", "ports_from"],
        true,
    );
    let kind = reader::choice(
        sink,
        e,
        "type",
        EngineKind::NAMES,
        "the engine the worker roles start",
    )
    .and_then(EngineKind::parse)
    .unwrap_or(EngineKind::Sim);
    let command = reader::string(
        sink,
        e,
        "command",
        Need::Optional,
        "a command template with {host}, {port}, {model}, {options_file}",
    );
    if let Some(t) = &command {
        let unknown = unknown_placeholders(t);
        if !unknown.is_empty() {
            sink.error(
                e.get("command").map(|n| n.pos),
                "engine.command",
                Some(t.clone()),
                format!(
                    "unknown placeholder(s) {}",
                    unknown
                        .iter()
                        .map(|u| format!("`{{{u}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "use {}; write {{{{ and }}}} for literal braces",
                    COMMAND_PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if kind == EngineKind::Command && command.is_none() {
        sink.error(
            Some(e.pos()),
            "engine.command",
            None,
            "engine type `command` needs a command template",
            "add engine.command, e.g. \"my-server --host {host} --port {port}\"",
        );
    }
    let mut sim = SimParams::default();
    if let Some(s) = reader::section(sink, e, "sim", "engine.sim") {
        reader::check_keys(sink, s, SIM_PARAMS, true);
        for name in SIM_PARAMS {
            if let Some(v) = reader::float(
                sink,
                s,
                name,
                Need::Optional,
                0.0,
                "a non-negative number; see the cost model in crates/disagg-sim",
            ) {
                sim.values.push(((*name).to_string(), v));
            }
        }
    }
    let args = read_args(sink, e);
    let ports_from = reader::int(
        sink,
        e,
        "ports_from",
        Need::Optional,
        1024,
        65000,
        "a port from 1024 to 65000; each server takes two from it, in plan order",
    )
    .and_then(|p| u16::try_from(p).ok());
    Engine {
        kind,
        command,
        args,
        sim,
        ports_from,
    }
}

/// `engine.args`: a list of words appended to the engine's own command line.
fn read_args(sink: &mut Sink, e: MapRef<'_>) -> Vec<String> {
    let Some(node) = e.get("args") else {
        return Vec::new();
    };
    let hint = "a list of words, e.g. [\"--dtype\", \"float32\", \"--enforce-eager\"]";
    let crate::yaml::Value::Seq(items) = &node.value else {
        sink.error(
            Some(node.pos),
            "engine.args",
            Some(node.display()),
            "must be a list",
            hint,
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            crate::yaml::Value::Scalar { text, .. } => out.push(text.clone()),
            _ => sink.error(
                Some(item.pos),
                "engine.args",
                Some(item.display()),
                "list items must be words",
                hint,
            ),
        }
    }
    out
}

fn read_router(sink: &mut Sink, r: MapRef<'_>) -> Router {
    reader::check_keys(
        sink,
        r,
        &[
            "implementation",
            "policy",
            "max_retries",
            "request_timeout",
            "server_start_timeout",
            "protocol",
            "max_local_prefill_length",
            "tokenizer",
        ],
        true,
    );
    let seconds = "seconds";
    let router = Router {
        implementation: reader::choice(
            sink,
            r,
            "implementation",
            &["disagg", "trtllm"],
            "the coordinator DISAGG_SERVER runs: the built-in router or trtllm-serve disaggregated",
        ),
        policy: reader::choice(
            sink,
            r,
            "policy",
            &["round_robin", "load_balancing", "kv_cache_aware"],
            "how requests are spread over the workers of a pool",
        ),
        max_retries: reader::int(
            sink,
            r,
            "max_retries",
            Need::Optional,
            0,
            100,
            "retries to another worker before any byte reached the client",
        )
        .map(|v| v as u32),
        request_timeout_s: reader::float(
            sink,
            r,
            "request_timeout",
            Need::Optional,
            0.001,
            seconds,
        ),
        server_start_timeout_s: reader::float(
            sink,
            r,
            "server_start_timeout",
            Need::Optional,
            0.001,
            seconds,
        ),
        protocol: reader::choice(
            sink,
            r,
            "protocol",
            &["trtllm", "vllm", "sglang"],
            "the workers' hand-off [default: the engine's own; the sim speaks any]",
        ),
        max_local_prefill_length: reader::int(
            sink,
            r,
            "max_local_prefill_length",
            Need::Optional,
            0,
            i64::from(u32::MAX),
            "uncached prompt tokens a generation server may prefill itself",
        )
        .map(|v| v as u32),
        tokenizer: reader::string(
            sink,
            r,
            "tokenizer",
            Need::Optional,
            "`sim`, or the absolute path of a Hugging Face tokenizer.json (or its directory)",
        ),
    };
    if let Some(t) = router
        .tokenizer
        .as_deref()
        .filter(|t| *t != "sim" && !t.starts_with('/'))
    {
        sink.error(
            r.get("tokenizer").map(|n| n.pos),
            &format!("{}.tokenizer", r.path),
            Some(t.to_string()),
            "a tokenizer path must be absolute (every role reads it from its own directory)",
            "write `sim`, or the absolute path of tokenizer.json or of its directory",
        );
    }
    if let (Some(n), false) = (
        router.max_local_prefill_length,
        router.policy == Some("kv_cache_aware"),
    ) {
        sink.error(
            r.get("max_local_prefill_length").map(|n| n.pos),
            &format!("{}.max_local_prefill_length", r.path),
            Some(n.to_string()),
            "conditional disaggregation needs the kv_cache_aware policy (upstream asserts it)",
            "add `policy: kv_cache_aware`, or remove max_local_prefill_length",
        );
    }
    router
}

fn read_results(sink: &mut Sink, r: MapRef<'_>) -> Results {
    reader::check_keys(
        sink,
        r,
        &["db", "post_merge_threshold", "pre_merge_threshold"],
        true,
    );
    let thr = "a relative threshold such as 0.05 for 5 %";
    Results {
        db: reader::string(sink, r, "db", Need::Optional, "a path to the SQLite store"),
        post_merge_threshold: reader::float(
            sink,
            r,
            "post_merge_threshold",
            Need::Optional,
            0.0,
            thr,
        ),
        pre_merge_threshold: reader::float(
            sink,
            r,
            "pre_merge_threshold",
            Need::Optional,
            0.0,
            thr,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_placeholders_are_found_and_literal_braces_kept() {
        assert!(unknown_placeholders("srv --host {host} --port {port} {{x}}").is_empty());
        assert_eq!(
            unknown_placeholders("srv --model {modle} --x {port"),
            vec!["modle".to_string(), "{port".to_string()]
        );
    }

    #[test]
    fn a_config_with_a_misspelt_placeholder_is_invalid() {
        let text = "metadata: {model_name: m}\nbenchmark: {mode: e2e, concurrency_list: '1', input_length: 8, output_length: 4}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nengine:\n  type: command\n  command: \"srv --model {modle}\"\n";
        let err = crate::TestConfig::parse(std::path::Path::new("x.yaml"), text)
            .err()
            .map(|e| e.to_string() + &e.diagnostics().map(|d| d.to_string()).unwrap_or_default())
            .unwrap_or_default();
        assert!(err.contains("unknown placeholder(s) `{modle}`"), "{err}");
        assert!(
            err.contains("{model}"),
            "the hint lists the real ones: {err}"
        );
    }

    #[test]
    fn kv_cache_aware_runs_warns_without_events_and_conditional_disagg_needs_it() {
        let base = "metadata: {model_name: m}\nbenchmark: {mode: e2e, concurrency_list: '1', input_length: 8, output_length: 4}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n";
        let parse = |tail: &str| {
            crate::TestConfig::parse(std::path::Path::new("x.yaml"), &format!("{base}{tail}"))
        };
        let c = parse("worker_config:\n  ctx: {kv_cache_config: {event_buffer_max_size: 1024}}\n  gen: {max_batch_size: 8}\nrouter: {policy: kv_cache_aware, max_local_prefill_length: 64}\n").unwrap();
        let router = c.extensions().router.clone().unwrap();
        assert_eq!(router.policy, Some("kv_cache_aware"));
        assert_eq!(router.max_local_prefill_length, Some(64));
        let warned: Vec<&str> = c.warnings().warnings().map(|d| d.path.as_str()).collect();
        assert_eq!(
            warned,
            ["worker_config.gen.kv_cache_config.event_buffer_max_size"]
        );
        let t = parse("router: {policy: kv_cache_aware, tokenizer: /models/m}\n").unwrap();
        assert_eq!(
            t.extensions().router.clone().unwrap().tokenizer.as_deref(),
            Some("/models/m")
        );
        let err = parse("router: {tokenizer: models/m}\n").unwrap_err();
        let text = err.diagnostics().unwrap().to_string();
        assert!(
            text.contains("router.tokenizer") && text.contains("must be absolute"),
            "{text}"
        );
        let err =
            parse("router: {policy: round_robin, max_local_prefill_length: 64}\n").unwrap_err();
        let text = err.diagnostics().unwrap().to_string();
        assert!(text.contains("needs the kv_cache_aware policy"), "{text}");
    }
}
