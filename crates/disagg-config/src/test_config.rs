//! The upstream TensorRT-LLM disaggregated test config, validated.

use std::path::{Path, PathBuf};

use crate::auth_key::AuthKey;
use crate::diag::{Diagnostics, Sink};
use crate::envvars::parse_env_assignments;
use crate::evaluation::{Accuracy, Profiling, read_accuracy, read_profiling};
use crate::extensions::Extensions;
use crate::reader::{self, MapRef, Need, is_placeholder, join};
use crate::worker::WorkerOptions;
use crate::yaml::{Node, Scalar, Value};
use crate::{ConfigError, name};

/// What the benchmark exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Context and generation servers, the full flow.
    E2e,
    /// Generation servers measured alone; context servers are still launched.
    GenOnly,
    /// Generation servers alone, no context servers at all.
    GenOnlyNoContext,
}

impl Mode {
    /// The spelling used in configs and test ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::E2e => "e2e",
            Mode::GenOnly => "gen_only",
            Mode::GenOnlyNoContext => "gen_only_no_context",
        }
    }

    /// Parse a config/test-id spelling.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "e2e" => Some(Mode::E2e),
            "gen_only" => Some(Mode::GenOnly),
            "gen_only_no_context" => Some(Mode::GenOnlyNoContext),
            _ => None,
        }
    }
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Model key (`deepseek_r1_0528_fp4_v2`), a path or a hub id.
    pub model_name: Option<String>,
    /// `fp4`, `fp8`, ...
    pub precision: Option<String>,
    /// `1k1k`, `8k1k`, ...
    pub benchmark_type: Option<String>,
    /// GPU types the config is meant for.
    pub supported_gpus: Vec<String>,
}

/// `slurm` (only what the CI path reads; the rest is informational).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slurm {
    /// Partition, unless a placeholder.
    pub partition: Option<String>,
    /// Account, unless a placeholder.
    pub account: Option<String>,
    /// `HH:MM:SS` time limit.
    pub job_time: Option<String>,
    /// Extra sbatch arguments, split on whitespace as upstream's submit script does.
    pub extra_args: Option<String>,
    /// Run workers under `numactl -m 0,1` (host memory from the CPU's NUMA nodes only).
    pub numa_bind: bool,
    /// Ask for `--segment=<nodes>` (all nodes in one NVLink domain); `None`: not written
    /// (upstream's default is to ask).
    pub set_segment: Option<bool>,
    /// Bound for every wait, in seconds.
    pub timeout_s: Option<u64>,
}

/// `benchmark` (with the era-A `sequence` and `environment.dataset_file` spellings folded in).
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    /// Mode from the config.
    pub mode: Mode,
    /// Concurrency values, in order.
    pub concurrency: Vec<u32>,
    /// Prompts per concurrency = concurrency × multi_round.
    pub multi_round: u32,
    /// Input length in tokens.
    pub isl: u32,
    /// Output length in tokens.
    pub osl: u32,
    /// `--random-range-ratio`.
    pub range_ratio: f64,
    /// Streaming requests.
    pub streaming: bool,
    /// Dataset relative to the models root; `None` for none or a placeholder.
    pub dataset_file: Option<String>,
    /// Use the external SA benchmark script upstream.
    pub use_nv_sa_benchmark: bool,
}

/// `hardware`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// GPUs on one node.
    pub gpus_per_node: u32,
    /// Context servers as written (the plan applies the mode).
    pub num_ctx_servers: u32,
    /// Generation servers.
    pub num_gen_servers: u32,
}

/// `environment`, with the env strings split into pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// For every worker.
    pub worker: Vec<(String, String)>,
    /// Extra for context workers (era E).
    pub ctx_worker: Vec<(String, String)>,
    /// Extra for generation workers (era E).
    pub gen_worker: Vec<(String, String)>,
    /// For the coordinator.
    pub server: Vec<(String, String)>,
    /// For the benchmark role.
    pub benchmark: Vec<(String, String)>,
    /// `client_env_var`: for the benchmark client (era E; upstream records it as
    /// `s_client_env_vars`).
    pub client: Vec<(String, String)>,
    /// Readiness deadline for the coordinator's `/health`, seconds.
    pub server_health_timeout_s: Option<u64>,
}

/// A validated test config. Build it with [`TestConfig::load`] or [`TestConfig::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfig {
    pub(crate) path: PathBuf,
    name: String,
    metadata: Metadata,
    slurm: Slurm,
    pub(crate) benchmark: Benchmark,
    hardware: Hardware,
    environment: Environment,
    profiling: Profiling,
    accuracy: Option<Accuracy>,
    ctx: WorkerOptions,
    gen_: WorkerOptions,
    pub(crate) extensions: Extensions,
    /// The top-level `internal_request_auth_key`, when the config sets its own.
    auth_key: Option<AuthKey>,
    warnings: Diagnostics,
    /// Served aggregated (`--aggregated`): no context servers, the generation servers take
    /// whole requests.
    pub(crate) aggregated: bool,
    /// Random prompts in place of the config's dataset (`--random-prompts`).
    pub(crate) random_prompts: bool,
}

pub(crate) const TOP_KEYS: &[&str] = &[
    "metadata",
    "slurm",
    "benchmark",
    "sequence",
    "hardware",
    "environment",
    "profiling",
    "accuracy",
    "worker_config",
    "internal_request_auth_key",
    "engine",
    "router",
    "results",
    "workload",
];
const METADATA_KEYS: &[&str] = &[
    "model_name",
    "precision",
    "model_dir_name",
    "supported_gpus",
    "script_file",
    "benchmark_type",
    "config_index",
    "accuracy",
];
const SLURM_KEYS: &[&str] = &[
    "script_file",
    "partition",
    "account",
    "job_time",
    "job_name",
    "extra_args",
    "numa_bind",
    "timeout",
    "set_segment",
];
const BENCHMARK_KEYS: &[&str] = &[
    "mode",
    "use_nv_sa_benchmark",
    "multi_round",
    "benchmark_ratio",
    "streaming",
    "concurrency_list",
    "input_length",
    "output_length",
    "dataset_file",
    "only_run_accuracy",
];
const HARDWARE_KEYS: &[&str] = &[
    "gpus_per_node",
    "num_ctx_servers",
    "num_gen_servers",
    "gpu_type",
];
const ENVIRONMENT_KEYS: &[&str] = &[
    "container_mount",
    "container_image",
    "model_path",
    "trtllm_repo",
    "build_wheel",
    "trtllm_wheel_path",
    "work_dir",
    "container_workdir",
    "llm_models_root",
    "worker_env_var",
    "ctx_worker_env_var",
    "gen_worker_env_var",
    "server_env_var",
    "benchmark_env_var",
    "client_env_var",
    "open_search_db_base_url",
    "server_health_timeout",
    "dataset_file",
];
const WORKER_CONFIG_KEYS: &[&str] = &["ctx", "gen", "eplb_num_slots"];

/// Largest value accepted for counts and lengths.
pub(crate) const MAX_COUNT: i64 = 1 << 20;

impl TestConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<TestConfig, ConfigError> {
        let text = reader::read_file(path)?;
        TestConfig::parse(path, &text)
    }

    /// Validate config text; `path` names it in messages and gives the config's name.
    pub fn parse(path: &Path, text: &str) -> Result<TestConfig, ConfigError> {
        let (mut sink, root) = reader::load_yaml(Sink::new(path), text)?;
        if root.as_map().is_none() {
            sink.error(
                Some(root.pos),
                "",
                Some(root.display()),
                format!("a test config must be a mapping, found {}", root.kind()),
                "start from a bundled example such as examples/local-sim.yaml",
            );
            return Err(ConfigError::Invalid(sink.finish()));
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let config = read_config(&mut sink, &root, path, name);
        let diagnostics = sink.finish();
        if diagnostics.has_errors() {
            return Err(ConfigError::Invalid(diagnostics));
        }
        let mut config = config.ok_or(ConfigError::Invalid(Diagnostics::default()))?;
        config.warnings = diagnostics;
        let mut name_sink = Sink::new(path);
        name::check(&mut name_sink, &config);
        config.kv_events_check(&mut name_sink);
        config.warnings.0.extend(name_sink.finish().0);
        Ok(config)
    }

    /// A `kv_cache_aware` router learns blocks only from KV cache events, which a worker keeps
    /// only with `kv_cache_config.event_buffer_max_size` > 0 (upstream's default 0): say so,
    /// or the run silently routes by load alone.
    fn kv_events_check(&self, sink: &mut Sink) {
        let policy = self.extensions.router.as_ref().and_then(|r| r.policy);
        if policy != Some("kv_cache_aware") {
            return;
        }
        for (side, w) in [("ctx", &self.ctx), ("gen", &self.gen_)] {
            if w.kv_cache().event_buffer_max_size == 0 {
                sink.warning(
                    w.pos(),
                    &format!("worker_config.{side}.kv_cache_config.event_buffer_max_size"),
                    Some("0".into()),
                    "router.policy is kv_cache_aware but these workers publish no KV cache events, so the router routes them by load alone",
                    "set kv_cache_config.event_buffer_max_size (e.g. 1024), as upstream's kv_cache_aware configs do",
                );
            }
        }
    }

    /// Whether `--random-prompts` dropped the config's dataset (`benchmark.dataset_file`,
    /// `workload`).
    pub fn random_prompts(&self) -> bool {
        self.random_prompts
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The config's name: its file name without `.yaml`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `metadata`.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// `slurm`.
    pub fn slurm(&self) -> &Slurm {
        &self.slurm
    }
    /// `benchmark`.
    pub fn benchmark(&self) -> &Benchmark {
        &self.benchmark
    }
    /// `hardware`.
    pub fn hardware(&self) -> &Hardware {
        &self.hardware
    }
    /// `environment`.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }
    /// `profiling`.
    pub fn profiling(&self) -> &Profiling {
        &self.profiling
    }
    /// `accuracy`, when `enable_accuracy_test` is true.
    pub fn accuracy(&self) -> Option<&Accuracy> {
        self.accuracy.as_ref()
    }
    /// `worker_config.ctx`.
    pub fn ctx(&self) -> &WorkerOptions {
        &self.ctx
    }
    /// `worker_config.gen`.
    pub fn gen_(&self) -> &WorkerOptions {
        &self.gen_
    }
    /// Our own sections.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    /// The config's own `internal_request_auth_key` (top level), which wins over the key a run
    /// generates, as upstream's harness lets it.
    pub fn auth_key(&self) -> Option<&AuthKey> {
        self.auth_key.as_ref()
    }
    /// Warnings found while reading (legacy spellings, name disagreements, ...).
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }
    /// Whether the servers run aggregated (each request whole on one server, no hand-off).
    pub fn aggregated(&self) -> bool {
        self.aggregated
    }

    /// Context servers actually launched: none for `gen_only_no_context` or aggregated serving.
    pub fn ctx_servers(&self) -> u32 {
        if self.aggregated {
            return 0;
        }
        match self.benchmark.mode {
            Mode::GenOnlyNoContext => 0,
            Mode::E2e | Mode::GenOnly => self.hardware.num_ctx_servers,
        }
    }
}

fn read_config(sink: &mut Sink, root: &Node, path: &Path, name: String) -> Option<TestConfig> {
    let top = MapRef {
        node: root,
        path: "",
    };
    reader::check_keys(sink, top, TOP_KEYS, false);

    let metadata = read_metadata(sink, top);
    let slurm = read_slurm(sink, top);
    let benchmark = read_benchmark(sink, top);
    let hardware = read_hardware(sink, top);
    let environment = read_environment(sink, top);
    let profiling = read_profiling(sink, top);
    let accuracy = read_accuracy(sink, top);
    let (ctx, gen_) = read_workers(sink, top);
    let extensions = Extensions::read(sink, top);
    let auth_key = crate::auth_key::read(sink, top);
    if let (Some(_), Some(file)) = (
        &extensions.workload,
        benchmark.as_ref().and_then(|b| b.dataset_file.as_ref()),
    ) {
        sink.error(
            root.get("workload").map(|n| n.pos),
            "workload",
            None,
            format!("the benchmark cannot send both workload prompts and benchmark.dataset_file `{file}`"),
            "remove one of the two",
        );
    }

    if let (Some(hw), Some(b)) = (hardware, &benchmark) {
        if hw.num_ctx_servers == 0 && b.mode != Mode::GenOnlyNoContext {
            let pos = root
                .get("hardware")
                .and_then(|h| h.get("num_ctx_servers"))
                .map(|n| n.pos);
            sink.error(
                pos,
                "hardware.num_ctx_servers",
                Some("0".to_string()),
                format!("mode {} needs at least one context server", b.mode.as_str()),
                "set num_ctx_servers to 1 or more, or benchmark.mode: gen_only_no_context",
            );
        }
    }
    if let Some(hw) = hardware {
        check_fit(sink, &hw, "ctx", &ctx, benchmark.as_ref().map(|b| b.mode));
        check_fit(sink, &hw, "gen", &gen_, None);
    }
    Some(TestConfig {
        path: path.to_path_buf(),
        name,
        metadata,
        slurm,
        benchmark: benchmark?,
        hardware: hardware?,
        environment,
        profiling,
        accuracy,
        ctx,
        gen_,
        extensions,
        auth_key,
        warnings: Diagnostics::default(),
        aggregated: false,
        random_prompts: false,
    })
}

/// A server that spans nodes must fill each of them: upstream would start `nodes × gpus_per_node`
/// ranks for it, not `tp × pp × cp`.
fn check_fit(sink: &mut Sink, hw: &Hardware, kind: &str, w: &WorkerOptions, mode: Option<Mode>) {
    if kind == "ctx" && (mode == Some(Mode::GenOnlyNoContext) || hw.num_ctx_servers == 0) {
        return;
    }
    let gpus = w.gpus();
    let gpn = hw.gpus_per_node;
    if gpus > gpn && gpus % gpn != 0 {
        let nodes = gpus.div_ceil(gpn);
        sink.error(
            w.size_pos(),
            &format!("worker_config.{kind}"),
            Some(format!(
                "tp {} × pp {} × cp {} = {gpus} GPUs",
                w.tp(),
                w.pp(),
                w.cp()
            )),
            format!(
                "a {kind} server of {gpus} GPUs does not fill {gpn}-GPU nodes evenly \
                 (upstream would start {} ranks on {nodes} nodes, not {gpus})",
                nodes * gpn
            ),
            format!(
                "make tp × pp × cp a multiple of hardware.gpus_per_node ({gpn}), \
                 or at most {gpn}"
            ),
        );
    }
}

fn read_metadata(sink: &mut Sink, top: MapRef<'_>) -> Metadata {
    let Some(m) = reader::section(sink, top, "metadata", "metadata") else {
        sink.warning(
            None,
            "metadata",
            None,
            "no `metadata` section: the model is unknown",
            "add `metadata: {model_name: <key or path>}`; runs on a real engine need it",
        );
        return Metadata::default();
    };
    reader::check_keys(sink, m, METADATA_KEYS, false);
    let model_name = reader::string(
        sink,
        m,
        "model_name",
        Need::Optional,
        "a model key from the cluster's model map, a path, or a hub id",
    );
    if model_name.is_none() {
        sink.warning(
            Some(m.pos()),
            "metadata.model_name",
            None,
            "no model name: only the simulated engine can run this config",
            "set metadata.model_name",
        );
    }
    let supported_gpus = match m.get("supported_gpus") {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => items
            .iter()
            .filter_map(|n| match &n.value {
                Value::Scalar { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Metadata {
        model_name,
        precision: reader::string(sink, m, "precision", Need::Optional, "fp4, fp8, bf16"),
        benchmark_type: reader::string(sink, m, "benchmark_type", Need::Optional, "1k1k, 8k1k"),
        supported_gpus,
    }
}

fn unless_placeholder(v: Option<String>) -> Option<String> {
    v.filter(|s| !is_placeholder(s) && !s.is_empty())
}

fn read_slurm(sink: &mut Sink, top: MapRef<'_>) -> Slurm {
    let Some(s) = reader::section(sink, top, "slurm", "slurm") else {
        return Slurm::default();
    };
    reader::check_keys(sink, s, SLURM_KEYS, false);
    let hint = "a Slurm name; in CI it comes from the cluster profile";
    Slurm {
        partition: unless_placeholder(reader::string(sink, s, "partition", Need::Optional, hint)),
        account: unless_placeholder(reader::string(sink, s, "account", Need::Optional, hint)),
        job_time: unless_placeholder(reader::string(
            sink,
            s,
            "job_time",
            Need::Optional,
            "a Slurm time limit such as 02:00:00",
        )),
        extra_args: unless_placeholder(reader::string(
            sink,
            s,
            "extra_args",
            Need::Optional,
            "extra sbatch arguments such as --gres=gpu:4",
        )),
        numa_bind: reader::bool(sink, s, "numa_bind", Need::Optional, "true or false")
            .unwrap_or(false),
        set_segment: reader::bool(sink, s, "set_segment", Need::Optional, "true or false"),
        timeout_s: reader::int(
            sink,
            s,
            "timeout",
            Need::Optional,
            1,
            i64::MAX,
            "seconds every wait may take",
        )
        .map(|v| v as u64),
    }
}

fn read_benchmark(sink: &mut Sink, top: MapRef<'_>) -> Option<Benchmark> {
    let Some(b) = reader::section(sink, top, "benchmark", "benchmark") else {
        sink.error(
            Some(top.pos()),
            "benchmark",
            None,
            "required section `benchmark` is missing",
            "add `benchmark:` with concurrency_list, input_length and output_length",
        );
        return None;
    };
    reader::check_keys(sink, b, BENCHMARK_KEYS, false);
    let mode = match reader::string(sink, b, "mode", Need::Optional, "") {
        None => Mode::E2e,
        Some(text) => match Mode::parse(&text) {
            Some(mode) => mode,
            None => {
                sink.error(
                    b.get("mode").map(|n| n.pos),
                    "benchmark.mode",
                    Some(text),
                    "unknown mode",
                    "use e2e, gen_only or gen_only_no_context",
                );
                Mode::E2e
            }
        },
    };
    let concurrency = read_concurrency(sink, b);

    // Era-A configs keep the lengths under a top-level `sequence:` section.
    let sequence = reader::section(sink, top, "sequence", "sequence");
    let length = |sink: &mut Sink, key: &str, default: u32| -> u32 {
        let hint = "tokens per request, e.g. 1024";
        if b.get(key).is_some() {
            return reader::int(sink, b, key, Need::Optional, 1, MAX_COUNT * 16, hint)
                .map_or(default, |v| v as u32);
        }
        if let Some(seq) = sequence.filter(|s| s.get(key).is_some()) {
            sink.warning(
                seq.get(key).map(|n| n.pos),
                &format!("sequence.{key}"),
                None,
                "legacy location (era A) of the sequence length",
                format!("move it to benchmark.{key}"),
            );
            return reader::int(sink, seq, key, Need::Optional, 1, MAX_COUNT * 16, hint)
                .map_or(default, |v| v as u32);
        }
        default
    };
    let isl = length(sink, "input_length", 1024);
    let osl = length(sink, "output_length", 1024);

    let dataset_hint = "a dataset path relative to the models root, or leave it out";
    let dataset_file = if b.get("dataset_file").is_some() {
        reader::string(sink, b, "dataset_file", Need::Optional, dataset_hint)
    } else {
        let env = top
            .get("environment")
            .filter(|e| e.get("dataset_file").is_some());
        if let Some(env) = env {
            let env = MapRef {
                node: env,
                path: "environment",
            };
            sink.warning(
                env.get("dataset_file").map(|n| n.pos),
                "environment.dataset_file",
                None,
                "legacy location (era A) of the dataset file; upstream CI ignores it",
                "move it to benchmark.dataset_file if the benchmark should use it",
            );
        }
        None
    };
    Some(Benchmark {
        mode,
        concurrency: concurrency.unwrap_or_else(|| vec![1]),
        multi_round: reader::int(
            sink,
            b,
            "multi_round",
            Need::Optional,
            1,
            MAX_COUNT,
            "prompts per concurrency = concurrency × multi_round",
        )
        .map_or(1, |v| v as u32),
        isl,
        osl,
        range_ratio: reader::float(
            sink,
            b,
            "benchmark_ratio",
            Need::Optional,
            0.0,
            "the random range ratio, 0.0 to 1.0",
        )
        .unwrap_or(0.0),
        streaming: reader::bool(sink, b, "streaming", Need::Optional, "true or false")
            .unwrap_or(true),
        dataset_file: unless_placeholder(dataset_file),
        use_nv_sa_benchmark: reader::bool(
            sink,
            b,
            "use_nv_sa_benchmark",
            Need::Optional,
            "true or false",
        )
        .unwrap_or(false),
    })
}

/// `concurrency_list` as a string (`"1 2 4"`, commas allowed), a list, or one integer.
fn read_concurrency(sink: &mut Sink, b: MapRef<'_>) -> Option<Vec<u32>> {
    read_concurrency_at(sink, b, "concurrency_list")
}

/// A concurrency list under `key` of `b`, written as upstream's `concurrency_list` may be.
pub(crate) fn read_concurrency_at(sink: &mut Sink, b: MapRef<'_>, key: &str) -> Option<Vec<u32>> {
    let node = b.get(key)?;
    let path = join(b.path, key);
    let hint = "write positive integers separated by spaces, e.g. \"1 8 64\", or a YAML list";
    let bad = |sink: &mut Sink, what: String| {
        sink.error(Some(node.pos), &path, Some(node.display()), what, hint);
        None
    };
    let values: Vec<u32> = match (&node.value, node.scalar()) {
        (_, Some(Scalar::Int(v))) if (1..=MAX_COUNT).contains(&v) => vec![v as u32],
        (_, Some(Scalar::Str(s))) => {
            let mut out = Vec::new();
            for word in s.split(|c: char| c.is_whitespace() || c == ',') {
                if word.is_empty() {
                    continue;
                }
                match word.parse::<u32>() {
                    Ok(v) if v >= 1 && i64::from(v) <= MAX_COUNT => out.push(v),
                    _ => return bad(sink, format!("`{word}` is not a positive integer")),
                }
            }
            out
        }
        (Value::Seq(items), _) => {
            let mut out = Vec::new();
            for item in items {
                match item.scalar() {
                    Some(Scalar::Int(v)) if (1..=MAX_COUNT).contains(&v) => out.push(v as u32),
                    _ => {
                        return bad(
                            sink,
                            format!("list item `{}` is not a positive integer", item.display()),
                        );
                    }
                }
            }
            out
        }
        _ => {
            return bad(
                sink,
                format!("cannot read concurrency from {}", node.kind()),
            );
        }
    };
    if values.is_empty() {
        return bad(sink, "the concurrency list is empty".to_string());
    }
    Some(values)
}

fn read_hardware(sink: &mut Sink, top: MapRef<'_>) -> Option<Hardware> {
    let Some(h) = reader::section(sink, top, "hardware", "hardware") else {
        sink.error(
            Some(top.pos()),
            "hardware",
            None,
            "required section `hardware` is missing",
            "add `hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}`",
        );
        return None;
    };
    reader::check_keys(sink, h, HARDWARE_KEYS, false);
    let gpus_per_node = reader::int(
        sink,
        h,
        "gpus_per_node",
        Need::Required(
            "set hardware.gpus_per_node to the GPUs on one node (4 on GB200, 8 on B200)",
        ),
        1,
        64,
        "the GPUs on one node (4 on GB200, 8 on B200)",
    );
    let count_hint = "how many servers of this kind to launch";
    let num_ctx_servers = reader::int(
        sink,
        h,
        "num_ctx_servers",
        Need::Required(
            "set hardware.num_ctx_servers (0 only with benchmark.mode: gen_only_no_context)",
        ),
        0,
        1024,
        count_hint,
    );
    let num_gen_servers = reader::int(
        sink,
        h,
        "num_gen_servers",
        Need::Required("set hardware.num_gen_servers to at least 1"),
        1,
        1024,
        count_hint,
    );
    Some(Hardware {
        gpus_per_node: gpus_per_node? as u32,
        num_ctx_servers: num_ctx_servers? as u32,
        num_gen_servers: num_gen_servers? as u32,
    })
}

fn read_environment(sink: &mut Sink, top: MapRef<'_>) -> Environment {
    let Some(e) = reader::section(sink, top, "environment", "environment") else {
        return Environment::default();
    };
    reader::check_keys(sink, e, ENVIRONMENT_KEYS, false);
    let mut pairs = |key: &str| -> Vec<(String, String)> {
        let hint = "space-separated NAME=VALUE assignments, e.g. \"TLLM_LOG_LEVEL=INFO A=1\"";
        let Some(text) = reader::string(sink, e, key, Need::Optional, hint) else {
            return Vec::new();
        };
        match parse_env_assignments(&text) {
            Ok(p) => p,
            Err(err) => {
                sink.error(
                    e.get(key).map(|n| n.pos),
                    &join(e.path, key),
                    Some(text),
                    format!("cannot read the environment assignments: {err}"),
                    hint,
                );
                Vec::new()
            }
        }
    };
    Environment {
        worker: pairs("worker_env_var"),
        ctx_worker: pairs("ctx_worker_env_var"),
        gen_worker: pairs("gen_worker_env_var"),
        server: pairs("server_env_var"),
        benchmark: pairs("benchmark_env_var"),
        client: pairs("client_env_var"),
        server_health_timeout_s: reader::int(
            sink,
            e,
            "server_health_timeout",
            Need::Optional,
            1,
            i64::MAX,
            "seconds to wait for the coordinator's /health",
        )
        .map(|v| v as u64),
    }
}

fn read_workers(sink: &mut Sink, top: MapRef<'_>) -> (WorkerOptions, WorkerOptions) {
    let wc = reader::section(sink, top, "worker_config", "worker_config");
    if let Some(wc) = wc {
        reader::check_keys(sink, wc, WORKER_CONFIG_KEYS, false);
        if let Some(n) = wc.get("eplb_num_slots") {
            sink.warning(
                Some(n.pos),
                "worker_config.eplb_num_slots",
                Some(n.display()),
                "legacy key (era A); the engine reads moe_config.load_balancer.num_slots",
                "move it to worker_config.gen.moe_config.load_balancer.num_slots",
            );
        }
    }
    let mut read = |kind: &str| {
        let path = format!("worker_config.{kind}");
        let node = wc.and_then(|wc| reader::section(sink, wc, kind, &path).map(|m| m.node));
        if node.is_none() {
            sink.warning(
                wc.map(|m| m.pos()),
                &path,
                None,
                "no engine options: every default applies (tp 1, pp 1, cp 1)",
                format!("add {path} with at least tensor_parallel_size"),
            );
        }
        WorkerOptions::read(sink, node, &path)
    };
    let ctx = read("ctx");
    let gen_ = read("gen");
    (ctx, gen_)
}
