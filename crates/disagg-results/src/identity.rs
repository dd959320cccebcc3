//! A stored record's identity as upstream builds it (`perf_regression_utils.py`,
//! `perf_sanity_matching.py`): the match keys that say which history a record belongs to, and
//! the job fields that say which build produced it.

use std::collections::BTreeMap;

use disagg_config::{EngineKind, TestConfig};
use serde_json::Value;

use crate::record::RunRecord;

/// The upstream match keys and identity of one record of a run of `config` on `engine`.
pub fn identity(
    config: &TestConfig,
    engine: EngineKind,
    gpu_type: Option<&str>,
    record: &RunRecord,
) -> BTreeMap<String, Value> {
    let mut id = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        id.insert(k.to_string(), v);
    };
    put("s_gpu_type", gpu_type.unwrap_or("unknown").into());
    put("s_runtime", "multi_node_disagg_server".into());
    put("s_engine", engine.as_str().into());
    put("s_benchmark_mode", config.benchmark().mode.as_str().into());
    put("l_num_ctx_servers", config.ctx_servers().into());
    put(
        "l_num_gen_servers",
        config.hardware().num_gen_servers.into(),
    );
    let model = config
        .metadata()
        .model_name
        .clone()
        .unwrap_or_default()
        .to_lowercase();
    for (p, w) in [("ctx", config.ctx()), ("gen", config.gen_())] {
        put(&format!("s_{p}_model_name"), model.clone().into());
        put(&format!("l_{p}_tp"), w.tp().into());
        put(&format!("l_{p}_pp"), w.pp().into());
        put(&format!("l_{p}_cp"), w.cp().into());
        put(&format!("l_{p}_ep"), w.moe_ep().into());
        put(
            &format!("l_{p}_gpus_per_node"),
            config.hardware().gpus_per_node.into(),
        );
        put(&format!("l_{p}_max_batch_size"), w.max_batch_size().into());
        put(&format!("l_{p}_max_num_tokens"), w.max_num_tokens().into());
        put(
            &format!("b_{p}_enable_attention_dp"),
            w.attention_dp().into(),
        );
        put(
            &format!("s_{p}_moe_backend"),
            w.moe_backend().unwrap_or_default().into(),
        );
        put(
            &format!("s_{p}_cache_transceiver_backend"),
            w.cache_transceiver_backend().unwrap_or_default().into(),
        );
        put(
            &format!("s_{p}_spec_decoding_type"),
            w.speculative()
                .map(|s| s.decoding_type.clone())
                .unwrap_or_default()
                .into(),
        );
        put(
            &format!("l_{p}_num_nextn_predict_layers"),
            w.speculative().map_or(0, |s| s.draft_len).into(),
        );
    }
    put(
        "l_concurrency",
        record.concurrency().map_or(Value::Null, Value::from),
    );
    put("l_iterations", config.benchmark().multi_round.into());
    put("l_isl", record.isl.into());
    put("l_osl", record.osl.into());
    put("d_random_range_ratio", record.range_ratio.into());
    put("s_backend", "openai".into());
    put("b_use_chat_template", (record.endpoint == "chat").into());
    put("b_streaming", record.streaming.into());
    id
}

/// Build and job information from the CI environment (the first variable set wins).
pub fn job_fields(env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, Value> {
    let mut j = BTreeMap::new();
    for (field, vars) in [
        (
            "s_commit",
            &["DISAGG_COMMIT", "gitlabCommit", "GIT_COMMIT", "GITHUB_SHA"][..],
        ),
        (
            "s_branch",
            &[
                "DISAGG_BRANCH",
                "BRANCH_NAME",
                "GIT_BRANCH",
                "GITHUB_REF_NAME",
            ][..],
        ),
        ("s_build_url", &["BUILD_URL"][..]),
        ("s_build_id", &["BUILD_ID"][..]),
        ("s_job_name", &["JOB_NAME"][..]),
        ("s_job_url", &["JOB_URL"][..]),
        ("s_host_node_name", &["HOST_NODE_NAME"][..]),
        ("s_stage_name", &["stageName"][..]),
        ("s_slurm_job_id", &["SLURM_JOB_ID"][..]),
        // Set by `disagg sweep` on every run it starts: which sweep, which point (the content
        // hash of the point's config and overrides).
        ("s_sweep_id", &["DISAGG_SWEEP_ID"][..]),
        ("s_sweep_point", &["DISAGG_SWEEP_POINT"][..]),
    ] {
        if let Some(v) = vars.iter().find_map(|k| env(k).filter(|v| !v.is_empty())) {
            j.insert(field.to_string(), v.into());
        }
    }
    j
}

/// Post-merge unless told otherwise: `DISAGG_PRE_MERGE=1`; in Jenkins, as upstream, a job URL
/// containing `PostMerge`.
pub fn post_merge(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if env("DISAGG_PRE_MERGE").is_some_and(|v| v == "1" || v == "true") {
        return false;
    }
    match env("JOB_URL").or_else(|| env("BUILD_URL")) {
        Some(url) => url.contains("PostMerge"),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn job_fields_take_the_first_variable_set() {
        let e = env(&[
            ("GIT_COMMIT", "abc"),
            ("gitlabCommit", ""),
            ("BUILD_ID", "7"),
        ]);
        let j = job_fields(&e);
        assert_eq!(j["s_commit"], "abc", "empty values are skipped");
        assert_eq!(j["s_build_id"], "7");
        assert!(!j.contains_key("s_branch"));
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
    }
}
