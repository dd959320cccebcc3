//! A stored record's identity as upstream builds it (`test_perf_sanity.py`,
//! `perf_regression_utils.py`, `test_common/perf_sanity_matching.py`): every field upstream's
//! document carries about the server, the client and the job, derived from the test config the
//! way upstream derives it, and the match keys that say which history a record belongs to.
//!
//! - [`identity`]: the config and workload fields of one record (`s_ctx_kv_cache_dtype`,
//!   `l_gen_load_balancer_num_slots`, `b_eos`, `s_client_name`, `s_test_case_name`, ...).
//! - [`job_fields`] and [`post_merge`]: the build that produced it, from the CI environment.
//! - [`MATCH_KEYS`], [`match_values`], [`matches()`], [`match_key`]: the case a record belongs to,
//!   compared with upstream's rule.

use std::collections::BTreeMap;

use disagg_config::yaml::{Node, Scalar};
use disagg_config::{EngineKind, Mode, TestConfig, WorkerOptions};
use serde_json::Value;

use crate::record::RunRecord;

/// The fields that identify a perf test case, as upstream matches history since it keyed case
/// identity on the test case name (`get_test_case_match_keys`). Tunables (batch size, KV cache
/// dtype, forced acceptance, ...) are reported, not matched: they fork a case only through its
/// name.
pub const MATCH_KEYS: &[&str] = &["s_test_case_name", "s_gpu_type", "s_runtime", "s_branch"];

/// Our own match keys on top of upstream's: the engine when it is not TensorRT-LLM, the
/// serving when it is aggregated, and the prompts when they are not the config's own
/// (`workload`, `--random-prompts`). Each is written only in those cases, so a TensorRT-LLM
/// disaggregated record leaves them empty and matches upstream's documents (which never have
/// them) by upstream's rule that two empty values are equal.
pub const OWN_MATCH_KEYS: &[&str] = &["s_engine", "s_serving", "s_workload"];

/// Upstream's runtime for a disaggregated run.
pub const RUNTIME: &str = "multi_node_disagg_server";

/// The benchmark mode as upstream records it: the test id's mode (`e2e` or `gen_only`; a
/// `gen_only_no_context` config runs as a `gen_only` test).
pub fn benchmark_mode(mode: Mode) -> &'static str {
    match mode {
        Mode::E2e => "e2e",
        Mode::GenOnly | Mode::GenOnlyNoContext => "gen_only",
    }
}

/// The GPU type as upstream records it: `nvidia-smi`'s product name mapped to lower case
/// (`GB200` → `gb200`); a name outside upstream's map is recorded lower-cased as given, and no
/// GPU type at all is upstream's `unsupported`.
pub fn gpu_type(given: Option<&str>) -> String {
    match given.map(str::trim).filter(|g| !g.is_empty()) {
        Some(g) => g.to_lowercase(),
        None => "unsupported".to_string(),
    }
}

/// The client's name when the config gives none, as upstream derives it
/// (`con{concurrency}_iter{iterations}_isl{isl}_osl{osl}`).
pub fn client_name(concurrency: u64, iterations: u64, isl: u64, osl: u64) -> String {
    format!("con{concurrency}_iter{iterations}_isl{isl}_osl{osl}")
}

/// The identity of one record of a run of `config` on `engine`: every field upstream's
/// disaggregated document has about the test (top level, `ctx_`/`gen_` server fields, client
/// fields, `s_test_case_name`, `s_test_list`), plus [`OWN_MATCH_KEYS`] when they apply.
///
/// The workload fields come from what the benchmark ran (the record), which is the config's
/// unless an override changed it: iterations are `num_prompts / concurrency` (rounded up), as
/// upstream sends `concurrency × iterations` prompts.
pub fn identity(
    config: &TestConfig,
    engine: EngineKind,
    gpu: Option<&str>,
    record: &RunRecord,
) -> BTreeMap<String, Value> {
    let mode = benchmark_mode(config.benchmark().mode);
    let stem = format!("{mode}-{}", config.name());
    let env = config.environment();
    let mut id = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        id.insert(k.to_string(), v);
    };
    put("s_gpu_type", gpu_type(gpu).into());
    put("s_runtime", RUNTIME.into());
    put("s_benchmark_mode", mode.into());
    put("s_server_env_var", env_string(&[&env.server]).into());
    let num_ctx = config.ctx_servers();
    let num_gen = config.hardware().num_gen_servers;
    put("l_num_ctx_servers", num_ctx.into());
    put("l_num_gen_servers", num_gen.into());
    let model = config.metadata().model_name.clone().unwrap_or_default();
    let gpus_per_node = config.hardware().gpus_per_node;
    let servers = [
        (
            "ctx",
            num_ctx,
            config.ctx(),
            env_string(&[&env.worker, &env.ctx_worker]),
            force_accepted(&[&env.worker, &env.ctx_worker]),
        ),
        (
            "gen",
            num_gen,
            config.gen_(),
            env_string(&[&env.worker, &env.gen_worker]),
            force_accepted(&[&env.worker, &env.gen_worker]),
        ),
    ];
    for (prefix, count, opts, env_vars, forced) in &servers {
        if *count == 0 {
            continue;
        }
        let server = Server {
            name: &stem,
            model: &model,
            gpus_per_node,
            env_vars,
            force_num_accepted_tokens: *forced,
        };
        for (k, v) in server_fields(opts, &server) {
            put(&prefixed(&k, prefix), v);
        }
    }
    let spec_decoding = [config.ctx(), config.gen_()]
        .iter()
        .any(|w| !spec_decoding_type(w).is_empty());
    let client = client_fields(config, record, spec_decoding);
    let name = client["s_client_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for (k, v) in client {
        put(&k, v);
    }
    put("s_test_case_name", format!("{stem}-{name}").into());
    put(
        "s_test_list",
        format!("disagg_upload-{mode}-{}", config.name()).into(),
    );
    if engine != EngineKind::Trtllm {
        put("s_engine", engine.as_str().into());
    }
    if config.aggregated() {
        put("s_serving", "aggregated".into());
    }
    // Prompts other than the config's own make another case: the `workload` section as written
    // (a trace's path relative as in the file, so a case does not fork by machine), or random
    // prompts in place of the config's dataset.
    if let Some(w) = config.extensions().workload.as_ref() {
        put(
            "s_workload",
            w.dataset.describe().unwrap_or_default().into(),
        );
    } else if config.random_prompts() {
        put("s_workload", "random".into());
    }
    id
}

/// Upstream's `add_prefix`: the type prefix, then the server kind (`l_tp` → `l_ctx_tp`).
fn prefixed(key: &str, prefix: &str) -> String {
    let (ty, rest) = key.split_at(2);
    format!("{ty}{prefix}_{rest}")
}

/// What a server's fields need besides its options.
struct Server<'a> {
    name: &'a str,
    model: &'a str,
    gpus_per_node: u32,
    env_vars: &'a str,
    force_num_accepted_tokens: i64,
}

/// A worker section read the way upstream's `ServerConfig` reads it: `.get(key, default)`; an
/// explicit `null` counts as absent.
#[derive(Clone, Copy)]
struct Opts<'a>(Option<&'a Node>);

impl<'a> Opts<'a> {
    fn node(self, key: &str) -> Option<&'a Node> {
        self.0?
            .get(key)
            .filter(|n| !matches!(n.scalar(), Some(Scalar::Null)))
    }

    fn section(self, key: &str) -> Opts<'a> {
        Opts(self.node(key).filter(|n| n.as_map().is_some()))
    }

    /// Python truthiness of a section: a non-empty mapping.
    fn present(self) -> bool {
        self.0.and_then(Node::as_map).is_some_and(|m| !m.is_empty())
    }

    fn int(self, key: &str, default: i64) -> i64 {
        match self.node(key).and_then(Node::scalar) {
            Some(Scalar::Int(i)) => i,
            Some(Scalar::Float(f)) => f as i64,
            Some(Scalar::Bool(b)) => i64::from(b),
            _ => default,
        }
    }

    fn float(self, key: &str, default: f64) -> f64 {
        match self.node(key).and_then(Node::scalar) {
            Some(Scalar::Int(i)) => i as f64,
            Some(Scalar::Float(f)) => f,
            _ => default,
        }
    }

    fn bool(self, key: &str, default: bool) -> bool {
        match self.node(key).and_then(Node::scalar) {
            Some(Scalar::Bool(b)) => b,
            _ => default,
        }
    }

    fn string(self, key: &str, default: &str) -> String {
        match self.node(key).map(Node::to_json) {
            Some(Value::String(s)) => s,
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => default.to_string(),
        }
    }

    /// A list (or a single value) joined with commas, as upstream's `",".join(map(str, ...))`.
    fn joined(self, key: &str) -> String {
        let items = match self.node(key).map(Node::to_json) {
            Some(Value::Array(items)) => items,
            Some(v @ Value::Number(_)) => vec![v],
            _ => Vec::new(),
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn spec_decoding_type(w: &WorkerOptions) -> String {
    Opts(w.raw())
        .section("speculative_config")
        .string("decoding_type", "")
}

/// Upstream's `ServerConfig.to_db_data`, field by field, with its defaults.
fn server_fields(w: &WorkerOptions, s: &Server<'_>) -> Vec<(String, Value)> {
    let o = Opts(w.raw());
    let tp = o.int("tensor_parallel_size", 1);
    let ep = o.int("moe_expert_parallel_size", 1);
    let pp = o.int("pipeline_parallel_size", 1);
    let cp = o.int("context_parallel_size", 1);
    let gpus = tp * cp * pp;
    let gpus_per_node = match i64::from(s.gpus_per_node) {
        0 => gpus,
        n => n,
    };
    let adp = o.section("attention_dp_config");
    let moe = o.section("moe_config");
    // `load_balancer` is an inline mapping or the path of an offline EPLB file; upstream reads
    // the slots only from the mapping.
    let lb = moe.section("load_balancer");
    let graphs = o.section("cuda_graph_config");
    let kv = o.section("kv_cache_config");
    let transceiver = o.section("cache_transceiver_config");
    let spec = o.section("speculative_config");
    let draft_len = spec.int("max_draft_len", spec.int("num_nextn_predict_layers", 0));
    let v = |x: i64| Value::from(x);
    vec![
        ("s_server_name".into(), s.name.into()),
        ("s_model_name".into(), s.model.to_lowercase().into()),
        ("l_gpus".into(), v(gpus)),
        ("l_tp".into(), v(tp)),
        ("l_ep".into(), v(ep)),
        ("l_pp".into(), v(pp)),
        ("l_cp".into(), v(cp)),
        ("l_gpus_per_node".into(), v(gpus_per_node)),
        ("l_max_num_tokens".into(), v(o.int("max_num_tokens", 2048))),
        ("l_max_batch_size".into(), v(o.int("max_batch_size", 512))),
        ("l_max_seq_len".into(), v(o.int("max_seq_len", 0))),
        (
            "b_disable_overlap_scheduler".into(),
            o.bool("disable_overlap_scheduler", false).into(),
        ),
        (
            "l_num_postprocess_workers".into(),
            v(o.int("num_postprocess_workers", 0)),
        ),
        ("l_stream_interval".into(), v(o.int("stream_interval", 10))),
        (
            "s_attn_backend".into(),
            o.string("attn_backend", "TRTLLM").into(),
        ),
        (
            "b_enable_chunked_prefill".into(),
            o.bool("enable_chunked_prefill", false).into(),
        ),
        (
            "b_enable_attention_dp".into(),
            o.bool("enable_attention_dp", false).into(),
        ),
        (
            "b_trust_remote_code".into(),
            o.bool("trust_remote_code", false).into(),
        ),
        (
            "b_enable_lm_head_tp_in_adp".into(),
            o.bool("enable_lm_head_tp_in_adp", false).into(),
        ),
        (
            "s_serving_backend".into(),
            o.string("backend", "pytorch").into(),
        ),
        (
            "b_attention_dp_balance".into(),
            adp.bool("enable_balance", false).into(),
        ),
        (
            "l_batching_wait_iters".into(),
            v(adp.int("batching_wait_iters", 0)),
        ),
        ("l_timeout_iters".into(), v(adp.int("timeout_iters", 60))),
        ("s_moe_backend".into(), moe.string("backend", "").into()),
        (
            "l_moe_max_num_tokens".into(),
            v(moe.int("max_num_tokens", 0)),
        ),
        (
            "b_use_low_precision_moe_combine".into(),
            moe.bool("use_low_precision_moe_combine", false).into(),
        ),
        (
            "l_load_balancer_num_slots".into(),
            v(lb.int("num_slots", 0)),
        ),
        (
            "l_load_balancer_layer_updates_per_iter".into(),
            v(lb.int("layer_updates_per_iter", 0)),
        ),
        ("b_enable_cuda_graph".into(), graphs.present().into()),
        (
            "b_enable_padding".into(),
            (!graphs.present() || graphs.bool("enable_padding", true)).into(),
        ),
        (
            "l_cuda_graph_max_batch_size".into(),
            v(if graphs.present() {
                graphs.int("max_batch_size", 0)
            } else {
                0
            }),
        ),
        (
            "s_cuda_graph_batch_sizes".into(),
            if graphs.present() {
                graphs.joined("batch_sizes")
            } else {
                String::new()
            }
            .into(),
        ),
        ("s_kv_cache_dtype".into(), kv.string("dtype", "fp8").into()),
        (
            "b_enable_block_reuse".into(),
            kv.bool("enable_block_reuse", false).into(),
        ),
        (
            "d_free_gpu_memory_fraction".into(),
            kv.float("free_gpu_memory_fraction", 0.8).into(),
        ),
        (
            "s_cache_transceiver_backend".into(),
            transceiver.string("backend", "").into(),
        ),
        (
            "l_cache_transceiver_max_tokens_in_buffer".into(),
            v(transceiver.int("max_tokens_in_buffer", 0)),
        ),
        (
            "s_spec_decoding_type".into(),
            spec.string("decoding_type", "").into(),
        ),
        // Upstream keeps both names while MTP moves from num_nextn_predict_layers to
        // max_draft_len.
        ("l_num_nextn_predict_layers".into(), v(draft_len)),
        (
            "s_eagle3_layers_to_capture".into(),
            spec.joined("eagle3_layers_to_capture").into(),
        ),
        ("l_max_draft_len".into(), v(draft_len)),
        (
            "l_force_num_accepted_tokens".into(),
            v(s.force_num_accepted_tokens),
        ),
        (
            "s_speculative_model_dir".into(),
            spec.string("speculative_model", "").into(),
        ),
        (
            "b_eagle3_one_model".into(),
            spec.bool("eagle3_one_model", false).into(),
        ),
        ("s_server_log_link".into(), "".into()),
        ("s_server_env_var".into(), s.env_vars.into()),
    ]
}

/// Upstream's `ClientConfig.to_db_data` for the disaggregated client it builds from
/// `benchmark:`.
fn client_fields(
    config: &TestConfig,
    record: &RunRecord,
    spec_decoding: bool,
) -> BTreeMap<String, Value> {
    let b = config.benchmark();
    let gen_only = !matches!(b.mode, Mode::E2e);
    let concurrency = record.concurrency().map_or(0, u64::from);
    let iterations = if gen_only {
        1
    } else {
        (record.num_prompts as u64)
            .div_ceil(concurrency.max(1))
            .max(1)
    };
    let isl = record.isl as u64;
    let osl = record.osl as u64;
    let mut c = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    put(
        "s_client_name",
        client_name(concurrency, iterations, isl, osl).into(),
    );
    put("l_concurrency", concurrency.into());
    put("l_iterations", iterations.into());
    put("l_isl", isl.into());
    put("l_osl", osl.into());
    put("d_random_range_ratio", record.range_ratio.into());
    put(
        "s_dataset_file",
        b.dataset_file.clone().unwrap_or_default().into(),
    );
    put("s_backend", "openai".into());
    put("b_use_chat_template", (record.endpoint == "chat").into());
    put("b_streaming", record.streaming.into());
    put("b_trust_remote_code", true.into());
    put("b_use_nv_sa_benchmark", b.use_nv_sa_benchmark.into());
    // Upstream records the warm-up it actually ran; `disagg run` sends no unmeasured request.
    put("b_warmup", false.into());
    put("s_benchmark_client", "".into());
    // `b_eos` is upstream's spec-decoding flag, kept for baseline continuity.
    put("b_eos", spec_decoding.into());
    put("s_client_log_link", "".into());
    put(
        "s_client_env_vars",
        env_string(&[&config.environment().client]).into(),
    );
    c
}

/// An environment string as upstream stores it: `KEY=value` pairs joined by spaces.
fn env_string(parts: &[&Vec<(String, String)>]) -> String {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS` from a role's environment, truncated to an
/// integer as upstream does (`int(float(val))`); 0 when unset or not a number.
fn force_accepted(parts: &[&Vec<(String, String)>]) -> i64 {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .rfind(|(k, _)| k == "TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS")
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map_or(0, |v| v.trunc() as i64)
}

/// The values of the match keys ([`MATCH_KEYS`], then [`OWN_MATCH_KEYS`]) of a record, from its
/// identity and job fields; absent keys are absent.
pub fn match_values(
    identity: &BTreeMap<String, Value>,
    job: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    MATCH_KEYS
        .iter()
        .chain(OWN_MATCH_KEYS)
        .filter_map(|k| {
            let v = identity.get(*k).or_else(|| job.get(*k))?;
            Some(((*k).to_string(), v.clone()))
        })
        .collect()
}

/// The case of a record: a stable hash of its non-empty match values (empty and absent are the
/// same by upstream's rule, so they hash the same).
pub fn match_key(values: &BTreeMap<String, Value>) -> String {
    let kept: BTreeMap<&String, &Value> = values.iter().filter(|(_, v)| !is_empty(v)).collect();
    crate::store::content_hash(&serde_json::to_string(&kept).unwrap_or_default())
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("")
}

/// Whether a history document matches a new one on `keys`, by upstream's rule
/// (`benchmark_data_matches`): a missing boolean is `false`; two empty values (absent, null,
/// `""`) are equal; anything else must be equal (numbers by value, `1 == 1.0`).
pub fn matches<'a>(
    history: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
    keys: impl IntoIterator<Item = &'a str>,
) -> bool {
    keys.into_iter().all(|field| {
        let get = |m: &BTreeMap<String, Value>| {
            let v = m.get(field).cloned().unwrap_or(Value::Null);
            if field.starts_with("b_") && v.is_null() {
                Value::Bool(false)
            } else {
                v
            }
        };
        let (h, n) = (get(history), get(new));
        if is_empty(&h) && is_empty(&n) {
            return true;
        }
        match (h.as_f64(), n.as_f64()) {
            (Some(a), Some(b)) if h.is_number() && n.is_number() => a == b,
            _ => h == n,
        }
    })
}

/// Build and job information as upstream's `get_job_info` reads it from Jenkins, every field
/// written (empty when unknown, as upstream does), with our own `DISAGG_*` overrides first and
/// the usual CI variables as fallbacks:
///
/// - `globalVars` (JSON): the last of `action_info.parents` gives `s_job_url` and `s_job_id`;
///   `build_branch` gives `s_branch`; `github_pr_api_url` and `action_info.trigger_info` give
///   the PR fields of a pre-merge job.
/// - `gitlabCommit` gives `s_commit`; `BUILD_ID`, `BUILD_URL`, `JOB_NAME`, `HOST_NODE_NAME` as
///   named; `stageName` gives `s_stage_name` (upstream's extra field).
pub fn job_fields(env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, Value> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let first = |vars: &[&str]| vars.iter().find_map(|k| set(k)).unwrap_or_default();
    let globals: Value = set("globalVars")
        .and_then(|g| serde_json::from_str(&g).ok())
        .unwrap_or(Value::Null);
    let parent = globals["action_info"]["parents"]
        .as_array()
        .and_then(|p| p.last())
        .cloned()
        .unwrap_or(Value::Null);
    let job_url = parent["url"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| first(&["JOB_URL"]));
    let job_id = match &parent["build_number"] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let branch = set("DISAGG_BRANCH")
        .or_else(|| globals["build_branch"].as_str().map(str::to_string))
        .unwrap_or_else(|| first(&["BRANCH_NAME", "GIT_BRANCH", "GITHUB_REF_NAME"]));
    let commit = first(&["DISAGG_COMMIT", "gitlabCommit", "GIT_COMMIT", "GITHUB_SHA"]);
    let post = post_merge(env);
    let mut j = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        j.insert(k.to_string(), v);
    };
    put("s_host_node_name", first(&["HOST_NODE_NAME"]).into());
    put("s_build_id", first(&["BUILD_ID"]).into());
    put("s_build_url", first(&["BUILD_URL"]).into());
    put("s_job_name", first(&["JOB_NAME"]).into());
    put("s_job_id", job_id.clone().into());
    put("s_job_url", job_url.into());
    put("s_branch", branch.into());
    put("s_commit", commit.clone().into());
    put("b_is_pr_job", (!post).into());
    let (mut mr_user, mut mr_link, mut mr_id, mut mr_commit) =
        (String::new(), String::new(), String::new(), String::new());
    const URM: &str =
        "https://urm.nvidia.com/artifactory/sw-tensorrt-generic/llm-artifacts/LLM/main";
    let artifact_lane = if post {
        "L0_PostMerge"
    } else {
        if let Some(api) = globals["github_pr_api_url"].as_str()
            && let Some(id) = api.split("/pulls/").nth(1).map(|t| {
                t.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            && !id.is_empty()
        {
            mr_link = api
                .replace("api.github.com/repos/", "github.com/")
                .replace("/pulls/", "/pull/");
            mr_id = id;
        }
        if let Some(info) = globals["action_info"]["trigger_info"].as_str() {
            mr_user = trigger_user(info).unwrap_or_default();
        }
        mr_commit = commit;
        "L0_MergeRequest_PR"
    };
    put("s_trigger_mr_user", mr_user.into());
    put("s_trigger_mr_link", mr_link.into());
    put("s_trigger_mr_id", mr_id.into());
    put("s_trigger_mr_commit", mr_commit.into());
    put(
        "s_artifact_url",
        if job_id.is_empty() {
            String::new()
        } else {
            format!("{URM}/{artifact_lane}/{job_id}")
        }
        .into(),
    );
    put("s_stage_name", first(&["stageName"]).into());
    // Ours, not upstream's: the Slurm job that ran the test.
    if let Some(id) = set("SLURM_JOB_ID") {
        put("s_slurm_job_id", id.into());
    }
    // Ours: set by `disagg sweep` on every run it starts — which sweep, which point (the
    // content hash of the point's config and overrides).
    for (field, var) in [
        ("s_sweep_id", "DISAGG_SWEEP_ID"),
        ("s_sweep_point", "DISAGG_SWEEP_POINT"),
    ] {
        if let Some(v) = set(var) {
            put(field, v.into());
        }
    }
    j
}

/// The user in Jenkins' trigger text, as upstream's
/// `target="_blank">([^<]+)</a><br/>Git Commit:` finds it.
fn trigger_user(info: &str) -> Option<String> {
    const OPEN: &str = "target=\"_blank\">";
    info.match_indices("</a><br/>Git Commit:")
        .find_map(|(at, _)| {
            let before = &info[..at];
            let start = before.rfind(OPEN)? + OPEN.len();
            let user = &before[start..];
            (!user.is_empty() && !user.contains('<')).then(|| user.to_string())
        })
}

/// Post-merge unless told otherwise: `DISAGG_PRE_MERGE=1`; in Jenkins, as upstream, a job URL
/// (the last parent of `globalVars`, else `JOB_URL`, else `BUILD_URL`) containing `PostMerge`.
/// Outside CI (no job URL at all) a run is post-merge: a local history is its own main line.
pub fn post_merge(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if env("DISAGG_PRE_MERGE").is_some_and(|v| v == "1" || v == "true") {
        return false;
    }
    let from_globals = env("globalVars")
        .and_then(|g| serde_json::from_str::<Value>(&g).ok())
        .and_then(|g| {
            g["action_info"]["parents"]
                .as_array()
                .and_then(|p| p.last())
                .and_then(|p| p["url"].as_str().map(str::to_string))
        });
    match from_globals
        .or_else(|| env("JOB_URL"))
        .or_else(|| env("BUILD_URL"))
    {
        Some(url) => url.contains("PostMerge"),
        None => true,
    }
}

/// The branch whose post-merge history a pre-merge record is checked against: upstream keys
/// history on `s_branch` and substitutes the baseline branch for a pre-merge run's own
/// (`github-pr-<N>` has no post-merge history). `DISAGG_BASELINE_BRANCH`, else `main`; a run
/// with no branch at all (outside CI) keeps its own empty branch.
pub fn baseline_branch(own: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if own.is_empty() {
        return String::new();
    }
    env("DISAGG_BASELINE_BRANCH")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "main".to_string())
}

#[cfg(test)]
mod tests;
