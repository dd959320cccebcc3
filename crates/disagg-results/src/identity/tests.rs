//! Each field against upstream's derivation (`ServerConfig.to_db_data`,
//! `ClientConfig.to_db_data`, `upload_test_results_to_database` in `test_perf_sanity.py`), on a
//! real upstream config and on a hand-made one for the paths that config does not take.

use super::*;
use crate::record::Environment;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/trtllm-configs/disaggregated/",
    "gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL.yaml"
);

fn record(load: &str, num_prompts: usize, isl: u32, osl: u32) -> RunRecord {
    RunRecord {
        record_version: 1,
        tool: "disagg test".into(),
        url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        endpoint: "completions".into(),
        load: load.into(),
        num_prompts,
        isl,
        osl,
        range_ratio: 0.0,
        streaming: true,
        ignore_eos: true,
        seed: 0,
        environment: Environment::here(),
        metric_definitions: "test".into(),
        interrupted: false,
        valid: true,
        invalid_reasons: Vec::new(),
        metrics: disagg_bench::metrics::compute(&[], &[50.0], None),
        timelines: None,
        gen_step_time_ms: None,
        dataset: None,
        telemetry: None,
    }
}

fn fixture() -> BTreeMap<String, Value> {
    let config = TestConfig::load(std::path::Path::new(FIXTURE)).expect("fixture loads");
    // multi_round 5 at concurrency 2048: 10240 prompts.
    identity(
        &config,
        EngineKind::Trtllm,
        Some("GB200"),
        &record("con2048", 10240, 1024, 1024),
    )
}

fn check(id: &BTreeMap<String, Value>, expected: &[(&str, Value)]) {
    for (k, v) in expected {
        assert_eq!(id.get(*k), Some(v), "{k}");
    }
}

#[test]
fn names_are_upstreams() {
    let id = fixture();
    let stem = "e2e-gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL";
    check(
        &id,
        &[
            // con{C}_iter{I}_isl{ISL}_osl{OSL}: the config names no client.
            ("s_client_name", "con2048_iter5_isl1024_osl1024".into()),
            (
                "s_test_case_name",
                format!("{stem}-con2048_iter5_isl1024_osl1024").into(),
            ),
            ("s_ctx_server_name", stem.into()),
            ("s_gen_server_name", stem.into()),
            (
                "s_test_list",
                "disagg_upload-e2e-gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL".into(),
            ),
        ],
    );
}

#[test]
fn top_level_fields() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gpu_type", "gb200".into()),
            ("s_runtime", "multi_node_disagg_server".into()),
            ("s_benchmark_mode", "e2e".into()),
            ("s_server_env_var", "TRTLLM_SERVER_DISABLE_GC=1".into()),
            ("l_num_ctx_servers", 2.into()),
            ("l_num_gen_servers", 1.into()),
        ],
    );
    assert!(!id.contains_key("s_engine"), "TensorRT-LLM is upstream's");
    assert!(!id.contains_key("s_serving"));
}

#[test]
fn parallelism_and_batching() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_model_name", "deepseek_r1_0528_fp4_v2".into()),
            ("l_gen_tp", 16.into()),
            ("l_gen_ep", 16.into()),
            ("l_gen_pp", 1.into()),
            ("l_gen_cp", 1.into()),
            // gpus = tp × cp × pp; gpus_per_node from hardware.
            ("l_gen_gpus", 16.into()),
            ("l_gen_gpus_per_node", 4.into()),
            ("l_gen_max_batch_size", 768.into()),
            ("l_gen_max_num_tokens", 3072.into()),
            ("l_gen_max_seq_len", 0.into()),
            ("b_gen_enable_attention_dp", true.into()),
            ("b_gen_enable_lm_head_tp_in_adp", true.into()),
            ("b_gen_disable_overlap_scheduler", true.into()),
            ("l_gen_num_postprocess_workers", 4.into()),
            ("l_gen_stream_interval", 20.into()),
            ("l_ctx_tp", 4.into()),
            ("l_ctx_max_batch_size", 16.into()),
            ("l_ctx_max_num_tokens", 16384.into()),
        ],
    );
}

#[test]
fn serving_backend_defaults_to_pytorch() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_serving_backend", "pytorch".into()),
            ("s_ctx_serving_backend", "pytorch".into()),
            ("s_gen_attn_backend", "TRTLLM".into()),
            ("b_gen_trust_remote_code", false.into()),
        ],
    );
}

#[test]
fn kv_cache_fields() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_kv_cache_dtype", "fp8".into()),
            ("b_gen_enable_block_reuse", false.into()),
            ("d_gen_free_gpu_memory_fraction", 0.8.into()),
            ("d_ctx_free_gpu_memory_fraction", 0.6.into()),
        ],
    );
}

#[test]
fn moe_and_load_balancer_fields() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_moe_backend", "CUTEDSL".into()),
            ("b_gen_use_low_precision_moe_combine", true.into()),
            ("l_gen_moe_max_num_tokens", 0.into()),
            ("l_gen_load_balancer_num_slots", 288.into()),
            ("l_gen_load_balancer_layer_updates_per_iter", 1.into()),
            // The context servers have no load balancer.
            ("l_ctx_load_balancer_num_slots", 0.into()),
            ("b_gen_attention_dp_balance", false.into()),
            ("l_gen_batching_wait_iters", 0.into()),
            ("l_gen_timeout_iters", 60.into()),
        ],
    );
}

#[test]
fn cuda_graph_fields() {
    let id = fixture();
    check(
        &id,
        &[
            ("b_gen_enable_cuda_graph", true.into()),
            ("b_gen_enable_padding", true.into()),
            ("l_gen_cuda_graph_max_batch_size", 768.into()),
            ("s_gen_cuda_graph_batch_sizes", "".into()),
            // `cuda_graph_config: null` is no CUDA graph, padding on.
            ("b_ctx_enable_cuda_graph", false.into()),
            ("b_ctx_enable_padding", true.into()),
            ("l_ctx_cuda_graph_max_batch_size", 0.into()),
        ],
    );
}

#[test]
fn cache_transceiver_fields() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_cache_transceiver_backend", "NIXL".into()),
            ("l_gen_cache_transceiver_max_tokens_in_buffer", 16384.into()),
        ],
    );
}

#[test]
fn speculative_fields_and_forced_acceptance() {
    let id = fixture();
    check(
        &id,
        &[
            ("s_gen_spec_decoding_type", "MTP".into()),
            // The context servers share the gen section's speculative_config by a YAML alias.
            ("s_ctx_spec_decoding_type", "MTP".into()),
            ("l_gen_max_draft_len", 3.into()),
            ("l_gen_num_nextn_predict_layers", 3.into()),
            ("s_gen_eagle3_layers_to_capture", "".into()),
            ("s_gen_speculative_model_dir", "".into()),
            ("b_gen_eagle3_one_model", false.into()),
            // worker_env_var sets TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=3 for both kinds.
            ("l_gen_force_num_accepted_tokens", 3.into()),
            ("l_ctx_force_num_accepted_tokens", 3.into()),
            // Speculative decoding on either kind is upstream's b_eos.
            ("b_eos", true.into()),
        ],
    );
    let env = id["s_gen_server_env_var"].as_str().unwrap_or_default();
    assert!(
        env.starts_with("TLLM_LOG_LEVEL=INFO ")
            && env.ends_with(" TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=3"),
        "{env}"
    );
}

#[test]
fn client_fields_come_from_benchmark() {
    let id = fixture();
    check(
        &id,
        &[
            ("l_concurrency", 2048.into()),
            ("l_iterations", 5.into()),
            ("l_isl", 1024.into()),
            ("l_osl", 1024.into()),
            ("d_random_range_ratio", 0.0.into()),
            (
                "s_dataset_file",
                "datasets/perf-ci/deepseek_r1-1k1k-20480-ratio-1_for_serve.json".into(),
            ),
            ("s_backend", "openai".into()),
            ("b_use_chat_template", false.into()),
            ("b_streaming", true.into()),
            ("b_trust_remote_code", true.into()),
            ("b_use_nv_sa_benchmark", false.into()),
            ("b_warmup", false.into()),
            ("s_benchmark_client", "".into()),
            ("s_client_env_vars", "".into()),
        ],
    );
}

/// The paths the fixture does not take: a gen-only config without context servers, Eagle3 with the older draft-length key, a named serving backend, a
/// fractional forced acceptance and a client environment.
const EDGE: &str = "
metadata: {model_name: Some-Model}
benchmark:
  mode: gen_only_no_context
  concurrency_list: '8 16'
  multi_round: 4
  input_length: 100
  output_length: 10
hardware: {gpus_per_node: 8, num_ctx_servers: 1, num_gen_servers: 2}
environment:
  worker_env_var: A=1
  gen_worker_env_var: TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=2.7
  client_env_var: C=3 D=4
worker_config:
  ctx: {tensor_parallel_size: 2}
  gen:
    tensor_parallel_size: 2
    pipeline_parallel_size: 2
    backend: _autodeploy
    attention_dp_config: {enable_balance: true, batching_wait_iters: 5, timeout_iters: 30}
    moe_config: {load_balancer: {num_slots: 256}}
    cuda_graph_config: {batch_sizes: [1, 2, 4]}
    speculative_config:
      decoding_type: Eagle3
      num_nextn_predict_layers: 2
      eagle3_layers_to_capture: [1, 17, 33]
      speculative_model: eagle/model
      eagle3_one_model: true
";

fn edge(engine: EngineKind) -> BTreeMap<String, Value> {
    let config = TestConfig::parse(std::path::Path::new("edge.yaml"), EDGE).expect("parses");
    identity(&config, engine, None, &record("con8", 32, 100, 10))
}

#[test]
fn gen_only_without_context_servers_has_no_ctx_fields() {
    let id = edge(EngineKind::Trtllm);
    check(
        &id,
        &[
            ("s_benchmark_mode", "gen_only".into()),
            ("l_num_ctx_servers", 0.into()),
            ("l_num_gen_servers", 2.into()),
            // gen_only runs one iteration.
            ("l_iterations", 1.into()),
            ("s_client_name", "con8_iter1_isl100_osl10".into()),
            (
                "s_test_case_name",
                "gen_only-edge-con8_iter1_isl100_osl10".into(),
            ),
            ("s_gpu_type", "unsupported".into()),
        ],
    );
    assert!(!id.keys().any(|k| k[2..].starts_with("ctx_")), "{id:?}");
}

#[test]
fn the_paths_the_fixture_does_not_take() {
    let id = edge(EngineKind::Trtllm);
    check(
        &id,
        &[
            ("s_gen_serving_backend", "_autodeploy".into()),
            ("l_gen_gpus", 4.into()),
            ("l_gen_gpus_per_node", 8.into()),
            ("s_gen_model_name", "some-model".into()),
            // An absent kv_cache_config is upstream's fp8 at 0.8.
            ("s_gen_kv_cache_dtype", "fp8".into()),
            ("d_gen_free_gpu_memory_fraction", 0.8.into()),
            ("l_gen_load_balancer_num_slots", 256.into()),
            ("l_gen_load_balancer_layer_updates_per_iter", 0.into()),
            ("b_gen_attention_dp_balance", true.into()),
            ("l_gen_batching_wait_iters", 5.into()),
            ("l_gen_timeout_iters", 30.into()),
            ("b_gen_enable_cuda_graph", true.into()),
            ("s_gen_cuda_graph_batch_sizes", "1,2,4".into()),
            ("s_gen_spec_decoding_type", "Eagle3".into()),
            ("l_gen_max_draft_len", 2.into()),
            ("l_gen_num_nextn_predict_layers", 2.into()),
            ("s_gen_eagle3_layers_to_capture", "1,17,33".into()),
            ("s_gen_speculative_model_dir", "eagle/model".into()),
            ("b_gen_eagle3_one_model", true.into()),
            // int(float("2.7")) == 2
            ("l_gen_force_num_accepted_tokens", 2.into()),
            (
                "s_gen_server_env_var",
                "A=1 TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=2.7".into(),
            ),
            ("s_client_env_vars", "C=3 D=4".into()),
            ("b_eos", true.into()),
        ],
    );
}

#[test]
fn other_engines_and_aggregated_serving_are_their_own_cases() {
    assert_eq!(edge(EngineKind::Vllm)["s_engine"], "vllm");
    assert_eq!(edge(EngineKind::Sim)["s_engine"], "sim");
    let config = TestConfig::load(std::path::Path::new(FIXTURE))
        .and_then(|c| {
            c.with_overrides(&disagg_config::Overrides {
                aggregated: true,
                ..Default::default()
            })
        })
        .expect("aggregated");
    let id = identity(
        &config,
        EngineKind::Trtllm,
        Some("GB200"),
        &record("con2048", 10240, 1024, 1024),
    );
    assert_eq!(id["s_serving"], "aggregated");
    assert_eq!(id["l_num_ctx_servers"], 0);
}

/// A run with other prompts than the config's is another case: the `workload` as the file
/// writes it, or `random` in place of the config's dataset; the config's own prompts add
/// nothing (upstream's documents match).
#[test]
fn prompts_other_than_the_configs_fork_the_case() {
    assert!(!fixture().contains_key("s_workload"));
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    // A workload replaces the fixture's dataset file (both at once are refused).
    let no_file: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("dataset_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let with = |tail: &str, o: disagg_config::Overrides| {
        let text = if tail.is_empty() { &text } else { &no_file };
        let c = TestConfig::parse(std::path::Path::new("w.yaml"), &format!("{text}{tail}"))
            .and_then(|c| c.with_overrides(&o))
            .expect("config");
        identity(
            &c,
            EngineKind::Trtllm,
            Some("GB200"),
            &record("con2048", 10240, 1024, 1024),
        )
    };
    let traced = with(
        "workload:\n  mooncake: {path: traces/t.jsonl}\n",
        disagg_config::Overrides::default(),
    );
    assert_eq!(traced["s_workload"], "mooncake traces/t.jsonl block=512");
    let random = with(
        "",
        disagg_config::Overrides {
            random_prompts: true,
            ..Default::default()
        },
    );
    assert_eq!(random["s_workload"], "random");
    assert_eq!(random["s_dataset_file"], "");
}

#[test]
fn every_field_has_upstreams_type_prefix_and_no_null() {
    for id in [fixture(), edge(EngineKind::Sim)] {
        for (k, v) in &id {
            let ok = match &k[..2] {
                "s_" => v.is_string(),
                "l_" => v.is_i64() || v.is_u64(),
                "d_" => v.is_f64(),
                "b_" => v.is_boolean(),
                _ => false,
            };
            assert!(ok, "{k} = {v}");
        }
    }
}

#[test]
fn matching_follows_upstreams_rule() {
    let m = |pairs: &[(&str, Value)]| -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    };
    let keys = ["s_test_case_name", "s_branch", "b_flag", "l_n"];
    let a = m(&[("s_test_case_name", "x".into()), ("l_n", 1.into())]);
    // Absent, null and "" are all empty; a missing boolean is false; 1 == 1.0.
    let b = m(&[
        ("s_test_case_name", "x".into()),
        ("s_branch", "".into()),
        ("b_flag", false.into()),
        ("l_n", 1.0.into()),
    ]);
    assert!(matches(&a, &b, keys));
    let c = m(&[("s_test_case_name", "y".into())]);
    assert!(!matches(&a, &c, keys));
    let d = m(&[
        ("s_test_case_name", "x".into()),
        ("b_flag", true.into()),
        ("l_n", 1.into()),
    ]);
    assert!(!matches(&a, &d, keys));
    // Only the match keys count: tunables do not fork a case.
    let mut e = fixture();
    e.insert("l_gen_max_batch_size".into(), 64.into());
    e.insert("s_gen_kv_cache_dtype".into(), "auto".into());
    assert!(matches(&fixture(), &e, MATCH_KEYS.iter().copied()));
    assert_eq!(
        match_key(&match_values(&fixture(), &BTreeMap::new())),
        match_key(&match_values(&e, &BTreeMap::new()))
    );
}

#[test]
fn match_values_take_the_branch_from_the_job() {
    let job = BTreeMap::from([("s_branch".to_string(), Value::from("main"))]);
    let v = match_values(&fixture(), &job);
    let keys: Vec<&str> = v.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["s_branch", "s_gpu_type", "s_runtime", "s_test_case_name"]
    );
    // An empty branch is the same case as no branch.
    let empty = BTreeMap::from([("s_branch".to_string(), Value::from(""))]);
    assert_eq!(
        match_key(&match_values(&fixture(), &empty)),
        match_key(&match_values(&fixture(), &BTreeMap::new()))
    );
    assert_ne!(
        match_key(&match_values(&fixture(), &job)),
        match_key(&match_values(&fixture(), &empty))
    );
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_string())
    }
}

#[test]
fn job_fields_follow_upstreams_jenkins_globals() {
    let globals = r#"{
        "build_branch": "github-pr-12345",
        "github_pr_api_url": "https://api.github.com/repos/NVIDIA/TensorRT-LLM/pulls/12345",
        "action_info": {
            "parents": [{"url": "x", "build_number": 1},
                        {"url": "https://ci/job/LLM/job/main/job/L0_MergeRequest_PR/77/", "build_number": 77}],
            "trigger_info": "by <a href=\"u\" target=\"_blank\">Barry-Delaney</a><br/>Git Commit: abc"
        }
    }"#;
    let vars = [
        ("globalVars", globals),
        ("gitlabCommit", "abc123"),
        ("BUILD_ID", "9"),
        ("stageName", "GB200-PyTorch-Perf-1"),
    ];
    let e = env(&vars);
    let j = job_fields(&e);
    let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
    assert_eq!(s("s_branch"), "github-pr-12345");
    assert_eq!(
        s("s_job_url"),
        "https://ci/job/LLM/job/main/job/L0_MergeRequest_PR/77/"
    );
    assert_eq!(s("s_job_id"), "77");
    assert_eq!(s("s_commit"), "abc123");
    assert_eq!(j["b_is_pr_job"], true);
    assert_eq!(s("s_trigger_mr_id"), "12345");
    assert_eq!(
        s("s_trigger_mr_link"),
        "https://github.com/NVIDIA/TensorRT-LLM/pull/12345"
    );
    assert_eq!(s("s_trigger_mr_user"), "Barry-Delaney");
    assert_eq!(s("s_trigger_mr_commit"), "abc123");
    assert_eq!(
        s("s_artifact_url"),
        "https://urm.nvidia.com/artifactory/sw-tensorrt-generic/llm-artifacts/LLM/main/L0_MergeRequest_PR/77"
    );
    assert_eq!(s("s_stage_name"), "GB200-PyTorch-Perf-1");
    assert!(!post_merge(&e));
    // Every upstream job field is written, empty when unknown.
    let none = job_fields(&env(&[]));
    for k in [
        "s_host_node_name",
        "s_build_id",
        "s_build_url",
        "s_job_name",
        "s_job_id",
        "s_job_url",
        "s_branch",
        "s_commit",
        "s_trigger_mr_user",
        "s_trigger_mr_link",
        "s_trigger_mr_id",
        "s_trigger_mr_commit",
        "s_artifact_url",
    ] {
        assert_eq!(none[k], "", "{k}");
    }
    assert_eq!(none["b_is_pr_job"], false);
}

#[test]
fn job_fields_take_our_overrides_first() {
    let e = env(&[
        ("GIT_COMMIT", "abc"),
        ("gitlabCommit", ""),
        ("BUILD_ID", "7"),
        ("DISAGG_BRANCH", "release/1.3"),
        ("globalVars", r#"{"build_branch": "main"}"#),
    ]);
    let j = job_fields(&e);
    assert_eq!(j["s_commit"], "abc", "empty values are skipped");
    assert_eq!(j["s_build_id"], "7");
    assert_eq!(j["s_branch"], "release/1.3");
}

#[test]
fn post_merge_follows_the_job_url_as_upstream() {
    assert!(post_merge(&env(&[])));
    assert!(post_merge(&env(&[(
        "JOB_URL",
        "https://ci/job/PostMerge/1"
    )])));
    assert!(!post_merge(&env(&[("JOB_URL", "https://ci/job/PR-1/1")])));
    assert!(!post_merge(&env(&[("DISAGG_PRE_MERGE", "1")])));
    let globals = r#"{"action_info": {"parents": [{"url": "https://ci/job/L0_PostMerge/3"}]}}"#;
    assert!(post_merge(&env(&[
        ("globalVars", globals),
        ("JOB_URL", "https://ci/job/PR-1/1")
    ])));
}

#[test]
fn a_pre_merge_run_is_checked_against_the_baseline_branch() {
    assert_eq!(baseline_branch("github-pr-12", &env(&[])), "main");
    assert_eq!(
        baseline_branch(
            "github-pr-12",
            &env(&[("DISAGG_BASELINE_BRANCH", "release/1.3")])
        ),
        "release/1.3"
    );
    assert_eq!(
        baseline_branch("", &env(&[])),
        "",
        "a local run keeps its own history"
    );
}
