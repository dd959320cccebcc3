//! The options file a worker's engine reads (`--config`): its `worker_config.ctx|gen` section
//! minus the harness's keys ([`disagg_config::HARNESS_KEYS`]), with the two paths upstream
//! rewrites rewritten as it does (`ServerConfig.generate_extra_llm_api_config` in
//! `tests/integration/defs/perf/test_perf_sanity.py`):
//!
//! | key | resolved under | when |
//! |---|---|---|
//! | `speculative_config.speculative_model` (and its engine alias `speculative_model_dir`) | the models root (upstream's `llm_models_root()`; the cluster's `models_root`, `CLUSTER_LLM_DATA`) | any non-empty value; an absolute one stays (Python's `os.path.join`) |
//! | `moe_config.load_balancer`, when a string | the TensorRT-LLM source tree (upstream's `get_llm_root()`, `$LLM_ROOT`; the cluster's `llm_root`) | a non-empty relative path; an absolute one and an inline mapping stay |
//!
//! Pure: the caller writes the file.

use disagg_config::WorkerOptions;
use serde_json::{Map, Value};

/// Where relative paths in the options resolve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roots<'a> {
    /// The models root (speculative models).
    pub models: Option<&'a str>,
    /// The TensorRT-LLM source tree (offline-EPLB files).
    pub llm: Option<&'a str>,
}

/// `os.path.join(root, path)` for one component: an absolute `path` replaces the root.
fn join(root: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else if root.ends_with('/') {
        format!("{root}{path}")
    } else {
        format!("{root}/{path}")
    }
}

/// The options of `w` as the engine gets them; `aggregated` servers transfer no KV, so they get
/// no `cache_transceiver_config`. An error says which relative path has no root to resolve under.
pub fn options_file(
    w: &WorkerOptions,
    aggregated: bool,
    roots: Roots<'_>,
) -> Result<Map<String, Value>, String> {
    let mut options: Map<String, Value> = w
        .engine_options()
        .into_iter()
        .filter(|(k, _)| !(aggregated && *k == "cache_transceiver_config"))
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    if let Some(Value::Object(spec)) = options.get_mut("speculative_config") {
        for key in ["speculative_model", "speculative_model_dir"] {
            let Some(Value::String(model)) = spec.get_mut(key) else {
                continue;
            };
            if model.is_empty() {
                continue;
            }
            match roots.models {
                Some(root) => *model = join(root, model),
                None if model.starts_with('/') => {}
                None => {
                    return Err(format!(
                        "speculative_config.{key} `{model}` is relative to the models root, and \
                         this run has none; give the cluster profile a models_root (or set \
                         CLUSTER_LLM_DATA), or write an absolute path"
                    ));
                }
            }
        }
    }
    if let Some(Value::Object(moe)) = options.get_mut("moe_config") {
        if let Some(Value::String(file)) = moe.get_mut("load_balancer") {
            if !file.is_empty() && !file.starts_with('/') {
                match roots.llm {
                    Some(root) => *file = join(root, file),
                    None => {
                        return Err(format!(
                            "moe_config.load_balancer `{file}` is relative to the TensorRT-LLM \
                             source tree (upstream's LLM_ROOT), and this run has none; give the \
                             cluster profile an llm_root (or set LLM_ROOT), or write an absolute \
                             path"
                        ));
                    }
                }
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use disagg_config::TestConfig;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/trtllm-configs")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> TestConfig {
        TestConfig::parse(Path::new("t.yaml"), text).unwrap()
    }

    const MTP: &str = "disaggregated/gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL.yaml";

    #[test]
    fn a_fixture_reaches_the_engine_whole_but_for_the_harness_keys() {
        let config = parse(&fixture(MTP));
        let roots = Roots {
            models: Some("/lustre/models"),
            llm: Some("/src/trtllm"),
        };
        let gen_ = options_file(config.gen_(), false, roots).unwrap();
        let raw = config.gen_().raw().unwrap().to_json();
        assert_eq!(Value::Object(gen_.clone()), raw, "nothing to resolve here");
        assert_eq!(gen_["moe_config"]["load_balancer"]["num_slots"], 288);
        let agg = options_file(config.gen_(), true, roots).unwrap();
        assert!(!agg.contains_key("cache_transceiver_config"));
    }

    #[test]
    fn a_speculative_model_resolves_under_the_models_root_as_upstream() {
        // The fixture's gen section with an Eagle3 draft model added, as upstream configs write it.
        let text = fixture(MTP).replace(
            "      decoding_type: MTP\n",
            "      decoding_type: Eagle3\n      speculative_model: EAGLE3-DeepSeek-R1\n",
        );
        assert_ne!(text, fixture(MTP), "the fixture has an MTP section");
        let config = parse(&text);
        let roots = Roots {
            models: Some("/lustre/models/"),
            llm: None,
        };
        let gen_ = options_file(config.gen_(), false, roots).unwrap();
        assert_eq!(
            gen_["speculative_config"]["speculative_model"],
            "/lustre/models/EAGLE3-DeepSeek-R1"
        );
        let err = options_file(config.gen_(), false, Roots::default()).unwrap_err();
        assert!(
            err.starts_with("speculative_config.speculative_model `EAGLE3-DeepSeek-R1` is relative to the models root"),
            "{err}"
        );
        // Absolute: as written, root or not (os.path.join); the engine's alias key likewise.
        let abs = parse(&text.replace(
            "speculative_model: EAGLE3-DeepSeek-R1",
            "speculative_model_dir: /models/eagle3",
        ));
        let gen_ = options_file(abs.gen_(), false, Roots::default()).unwrap();
        assert_eq!(
            gen_["speculative_config"]["speculative_model_dir"],
            "/models/eagle3"
        );
        let alias = parse(&text.replace(
            "speculative_model: EAGLE3-DeepSeek-R1",
            "speculative_model_dir: eagle3",
        ));
        let gen_ = options_file(alias.gen_(), false, roots).unwrap();
        assert_eq!(
            gen_["speculative_config"]["speculative_model_dir"],
            "/lustre/models/eagle3"
        );
    }

    #[test]
    fn a_load_balancer_file_is_accepted_and_resolves_under_the_source_tree() {
        let inline =
            "      load_balancer:\n        num_slots: 288\n        layer_updates_per_iter: 1\n";
        let text = fixture(MTP);
        assert!(text.contains(inline), "the fixture has an inline balancer");
        let file = parse(&text.replace(
            inline,
            "      load_balancer: tests/scripts/perf-sanity/eplb/r1_288.yaml\n",
        ));
        assert_eq!(
            file.gen_().load_balancer_file(),
            Some("tests/scripts/perf-sanity/eplb/r1_288.yaml")
        );
        assert_eq!(file.gen_().eplb_slots(), None);
        let roots = Roots {
            models: None,
            llm: Some("/src/TensorRT-LLM"),
        };
        let gen_ = options_file(file.gen_(), false, roots).unwrap();
        assert_eq!(
            gen_["moe_config"]["load_balancer"],
            "/src/TensorRT-LLM/tests/scripts/perf-sanity/eplb/r1_288.yaml"
        );
        let err = options_file(file.gen_(), false, Roots::default()).unwrap_err();
        assert!(err.contains("(upstream's LLM_ROOT)"), "{err}");
        let abs = parse(&text.replace(inline, "      load_balancer: /eplb/r1.yaml\n"));
        let gen_ = options_file(abs.gen_(), false, Roots::default()).unwrap();
        assert_eq!(gen_["moe_config"]["load_balancer"], "/eplb/r1.yaml");
    }

    #[test]
    fn the_harness_keys_are_upstreams_exactly() {
        // Every key upstream strips, plus the auth key it keeps, in one worker section.
        let keys = [
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
        assert_eq!(disagg_config::HARNESS_KEYS, keys);
        let mut extra: String = keys.iter().map(|k| format!("    {k}: x\n")).collect();
        extra.push_str("    internal_request_auth_key: k\n");
        let text = fixture(MTP).replace("  gen:\n", &format!("  gen:\n{extra}"));
        let config = parse(&text);
        let gen_ = options_file(config.gen_(), false, Roots::default()).unwrap();
        for k in keys {
            assert!(!gen_.contains_key(k), "{k} reached the engine");
        }
        assert_eq!(gen_["internal_request_auth_key"], "k");
    }
}
