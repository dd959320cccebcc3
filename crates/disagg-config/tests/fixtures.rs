//! Every upstream config in `fixtures/trtllm-configs` reads to the values `expected.json`
//! records for it (benchmark shape, hardware, worker options, name fields).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::path::{Path, PathBuf};

use disagg_config::{Mode, TestConfig, WorkerOptions, decode_name};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trtllm-configs")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check_worker(file: &str, kind: &str, w: &WorkerOptions, e: &Value) {
    let ctx = format!("{file} {kind}");
    assert_eq!(u64::from(w.tp()), e["tp"].as_u64().unwrap(), "{ctx} tp");
    assert_eq!(u64::from(w.pp()), e["pp"].as_u64().unwrap(), "{ctx} pp");
    assert_eq!(u64::from(w.cp()), e["cp"].as_u64().unwrap_or(1), "{ctx} cp");
    assert_eq!(u64::from(w.moe_ep()), e["ep"].as_u64().unwrap(), "{ctx} ep");
    assert_eq!(
        w.attention_dp(),
        e["enable_attention_dp"].as_bool().unwrap(),
        "{ctx} adp"
    );
    assert_eq!(
        u64::from(w.max_batch_size()),
        e["max_batch_size"].as_u64().unwrap(),
        "{ctx} bs"
    );
    assert_eq!(
        u64::from(w.max_num_tokens()),
        e["max_num_tokens"].as_u64().unwrap(),
        "{ctx} tokens"
    );
    assert_eq!(
        w.moe_backend(),
        e["moe_backend"].as_str(),
        "{ctx} moe backend"
    );
    assert_eq!(
        w.cache_transceiver_backend(),
        e["cache_transceiver_backend"].as_str(),
        "{ctx} ccb"
    );
    assert_eq!(
        u64::from(w.eplb_slots().unwrap_or(0)),
        e["eplb_num_slots"].as_u64().unwrap(),
        "{ctx} eplb"
    );
    match (w.speculative(), e["speculative"].as_object()) {
        (None, None) => {}
        (Some(s), Some(es)) => {
            assert_eq!(
                s.decoding_type,
                es["decoding_type"].as_str().unwrap(),
                "{ctx} spec type"
            );
            assert_eq!(
                u64::from(s.draft_len),
                es["draft_len"].as_u64().unwrap(),
                "{ctx} draft"
            );
            assert_eq!(
                s.draft_len_key,
                es["draft_len_key"].as_str().unwrap(),
                "{ctx} draft key"
            );
        }
        (a, b) => panic!("{ctx}: speculative {a:?} vs expected {b:?}"),
    }
}

#[test]
fn every_fixture_reads_to_its_expected_values() {
    let expected = expected();
    assert!(expected.len() >= 48, "the fixture set shrank");
    for (file, e) in &expected {
        let config = TestConfig::load(&fixtures().join(file))
            .unwrap_or_else(|err| panic!("{file}: {err}\n{:?}", err.diagnostics()));
        let b = config.benchmark();
        let eb = &e["benchmark"];
        let concurrency: Vec<u64> = b.concurrency.iter().map(|&c| u64::from(c)).collect();
        let want: Vec<u64> = eb["concurrency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(concurrency, want, "{file} concurrency");
        assert_eq!(u64::from(b.isl), eb["isl"].as_u64().unwrap(), "{file} isl");
        assert_eq!(u64::from(b.osl), eb["osl"].as_u64().unwrap(), "{file} osl");
        assert_eq!(
            u64::from(b.multi_round),
            eb["multi_round"].as_u64().unwrap(),
            "{file} rounds"
        );
        assert_eq!(
            b.streaming,
            eb["streaming"].as_bool().unwrap(),
            "{file} streaming"
        );
        assert_eq!(
            b.range_ratio,
            eb["random_range_ratio"].as_f64().unwrap(),
            "{file} ratio"
        );
        assert_eq!(
            b.dataset_file.as_deref(),
            eb["dataset_file"].as_str(),
            "{file} dataset"
        );
        assert_eq!(
            b.use_nv_sa_benchmark,
            eb["use_nv_sa_benchmark"].as_bool().unwrap(),
            "{file} sa"
        );
        assert_eq!(
            Some(b.mode),
            Mode::parse(eb["mode"].as_str().unwrap()),
            "{file} mode"
        );

        let hw = config.hardware();
        let ehw = &e["hardware_raw"];
        assert_eq!(
            u64::from(hw.gpus_per_node),
            ehw["gpus_per_node"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(hw.num_ctx_servers),
            ehw["num_ctx_servers"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(hw.num_gen_servers),
            ehw["num_gen_servers"].as_u64().unwrap()
        );
        assert_eq!(
            config.metadata().model_name.as_deref(),
            e["metadata"]["model_name"].as_str()
        );

        check_worker(file, "ctx", config.ctx(), &e["ctx_worker"]);
        check_worker(file, "gen", config.gen_(), &e["gen_worker"]);

        let fields = serde_json::to_value(decode_name(config.name())).unwrap();
        for (key, want) in e["name_fields"].as_object().unwrap() {
            let got = match key.as_str() {
                "gen" => fields["gen_"].clone(),
                "gen_par" => fields["gen_par"]
                    .as_object()
                    .map(|p| Value::String(format!("{}{}", p["kind"].as_str().unwrap(), p["size"])))
                    .unwrap_or(Value::Null),
                k => fields[k].clone(),
            };
            assert_eq!(&got, want, "{file}: name field {key}");
        }
    }
}

#[test]
fn fixture_names_agree_with_their_content() {
    for file in expected().keys() {
        let config = TestConfig::load(&fixtures().join(file)).unwrap();
        let disagreements: Vec<String> = config
            .warnings()
            .warnings()
            .filter(|w| w.message.contains("the file name says"))
            .map(|w| w.to_string())
            .collect();
        assert!(disagreements.is_empty(), "{file}: {disagreements:?}");
    }
}

#[test]
fn a_name_that_disagrees_with_the_content_is_a_warning_naming_both() {
    let text = std::fs::read_to_string(
        fixtures().join("perf/deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX.yaml"),
    )
    .unwrap();
    let config = TestConfig::parse(
        Path::new("x_8k1k_ctx2_gen1_tep8_bs64_eplb0_mtp0_ccb-NIXL.yaml"),
        &text,
    )
    .unwrap();
    let messages: Vec<String> = config
        .warnings()
        .warnings()
        .map(|w| w.message.clone())
        .collect();
    for want in [
        "the file name says input length 8192, the config says 1024",
        "the file name says ctx servers 2, the config says 1",
        "the file name says gen parallelism tep8, the config says tp 8 pp 1 attention_dp true",
        "the file name says gen batch size 64, the config says 768",
        "the file name says cache-transceiver backend NIXL, the config says UCX",
    ] {
        assert!(
            messages.iter().any(|m| m == want),
            "missing {want:?} in {messages:#?}"
        );
    }
}
