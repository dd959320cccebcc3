//! `disagg plan --json` on every upstream fixture equals what upstream CI computes
//! (`fixtures/trtllm-configs/expected.json`, key `ci`).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::process::Command;

use serde_json::Value;

use crate::support::repo_root;

fn plan_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .arg("plan")
        .args(args)
        .arg("--json")
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "disagg plan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn server<'a>(plan: &'a Value, role: &str) -> Vec<&'a Value> {
    plan["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["role"] == role)
        .collect()
}

#[test]
fn every_fixture_plans_to_the_upstream_ci_numbers() {
    let text =
        std::fs::read_to_string(repo_root().join("fixtures/trtllm-configs/expected.json")).unwrap();
    let expected: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    for (file, e) in &expected {
        let ci = &e["ci"];
        let path = format!("fixtures/trtllm-configs/{file}");
        let plan = plan_json(&[&path]);
        for key in [
            "total_nodes",
            "total_gpus",
            "gpus_per_node",
            "num_ctx_servers",
            "num_gen_servers",
        ] {
            assert_eq!(plan[key], ci[key], "{file}: {key}");
        }
        assert_eq!(
            plan["gpus_per_ctx_server"], ci["gpus_per_ctx_server"],
            "{file}"
        );
        assert_eq!(
            plan["gpus_per_gen_server"], ci["gpus_per_gen_server"],
            "{file}"
        );
        for (role, srun) in [("ctx", &ci["srun_ctx"]), ("gen", &ci["srun_gen"])] {
            let servers = server(&plan, role);
            assert_eq!(
                servers.len() as u64,
                srun["count"].as_u64().unwrap(),
                "{file}: {role} count"
            );
            for s in servers {
                assert_eq!(s["nodes"], srun["N"], "{file}: {role} -N");
                assert_eq!(s["ntasks"], srun["ntasks"], "{file}: {role} --ntasks");
                assert_eq!(
                    s["ntasks_per_node"], srun["ntasks_per_node"],
                    "{file}: {role} per node"
                );
            }
        }
        for (key, want) in [
            ("disagg_server", &ci["srun_disagg_server"]),
            ("benchmark", &ci["srun_benchmark"]),
        ] {
            assert_eq!(plan[key]["nodes"], want["N"], "{file}: {key}");
            assert_eq!(plan[key]["ntasks"], want["ntasks"], "{file}: {key}");
            assert_eq!(plan[key]["overlap"], want["overlap"], "{file}: {key}");
        }
        let used: u64 = plan["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["gpus"].as_u64().unwrap())
            .sum();
        assert_eq!(
            plan["idle_gpus"].as_u64().unwrap(),
            plan["total_gpus"].as_u64().unwrap() - used,
            "{file}"
        );
    }
}

#[test]
fn the_seed_example_needs_three_nodes_and_twelve_gpus() {
    let plan = plan_json(&[
        "fixtures/trtllm-configs/perf/deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX.yaml",
    ]);
    assert_eq!(
        (plan["total_nodes"].as_u64(), plan["total_gpus"].as_u64()),
        (Some(3), Some(12))
    );
    let gen_ = server(&plan, "gen");
    assert_eq!(
        (
            &gen_[0]["nodes"],
            &gen_[0]["ntasks"],
            &gen_[0]["ntasks_per_node"]
        ),
        (&Value::from(2), &Value::from(8), &Value::from(4))
    );
    let ctx = server(&plan, "ctx");
    assert_eq!(
        (
            &ctx[0]["nodes"],
            &ctx[0]["ntasks"],
            &ctx[0]["ntasks_per_node"]
        ),
        (&Value::from(1), &Value::from(4), &Value::from(4))
    );
}

#[test]
fn a_test_id_resolves_to_its_config() {
    let plan = plan_json(&[
        "perf/test_perf_sanity.py::test_e2e[disagg_upload-deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX]",
        "--config-dir",
        "fixtures/trtllm-configs",
    ]);
    assert_eq!(
        plan["config"],
        "deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX"
    );
    assert_eq!(plan["total_nodes"], 3);
}

#[test]
fn packing_shares_nodes_between_small_servers() {
    let file = "crates/disagg/tests/data/small-servers.yaml";
    let upstream = plan_json(&[file]);
    assert_eq!(
        (
            upstream["total_nodes"].as_u64(),
            upstream["idle_gpus"].as_u64()
        ),
        (Some(3), Some(8))
    );
    let packed = plan_json(&[file, "--packing"]);
    assert_eq!(packed["placement"], "packed");
    assert_eq!(
        (packed["total_nodes"].as_u64(), packed["idle_gpus"].as_u64()),
        (Some(1), Some(0))
    );
    let gpus: Vec<String> = packed["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["gpu_indices"].to_string())
        .collect();
    assert_eq!(gpus, ["[2]", "[3]", "[0,1]"]);
}
