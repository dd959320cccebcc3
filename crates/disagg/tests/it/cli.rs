//! What a person reads from `disagg validate` and `disagg plan`, pinned with snapshots.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::process::Command;

use crate::support::repo_root;

const SEED: &str = "fixtures/trtllm-configs/perf/deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX.yaml";
const DATA: &str = "crates/disagg/tests/data";

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn disagg(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("DISAGG_CLUSTERS")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("CLUSTER_PARTITION")
        .env_remove("CLUSTER_ACCOUNT")
        .env_remove("DOCKER_IMAGE")
        .env_remove("MPI_TYPE")
        .env_remove("CLUSTER_LLM_DATA")
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn validate_reports_every_problem_with_position_path_value_and_hint() {
    let out = disagg(&[
        "validate",
        &format!("{DATA}/many-problems.yaml"),
        &format!("{DATA}/malformed.yaml"),
        &format!("{DATA}/uneven-server.yaml"),
        &format!("{DATA}/missing-keys.yaml"),
        SEED,
    ]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("validate_stdout", out.stdout);
    insta::assert_snapshot!("validate_stderr", out.stderr);
}

#[test]
fn validate_accepts_every_fixture() {
    let out = disagg(&["validate", "fixtures/trtllm-configs"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .ends_with("48 file(s): 48 valid, 0 invalid, 6 with warnings\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_checks_a_sweep_spec_and_every_point_it_derives() {
    // The examples directory holds test configs and a sweep spec; each is checked as what it is.
    let out = disagg(&["validate", "examples"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("valid  examples/sweep-sim.yaml (sweep spec: 8 points, all valid)"),
        "{}",
        out.stdout
    );
    // A spec whose axis makes some points impossible: those points are named, the spec invalid.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("examples/local-sim.yaml"),
        dir.path().join("local-sim.yaml"),
    )
    .unwrap();
    let spec = dir.path().join("bad-sweep.yaml");
    std::fs::write(
        &spec,
        "base: local-sim.yaml\naxes:\n  worker_config.gen.tensor_parallel_size: [1, 6]\n",
    )
    .unwrap();
    let out = disagg(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("(sweep spec: 2 points, 1 invalid)"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("point "), "{}", out.stderr);
    assert!(
        out.stderr.contains("tensor_parallel_size") || out.stderr.contains("6 GPUs"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_deny_warnings_fails_on_legacy_spellings() {
    let out = disagg(&[
        "validate",
        "--deny-warnings",
        "fixtures/trtllm-configs/perf/deepseek-r1-fp4_000.yaml",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("legacy location (era A)"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_prints_a_table() {
    let out = disagg(&["plan", SEED]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("plan_table_seed", out.stdout);
    let out = disagg(&["plan", &format!("{DATA}/small-servers.yaml"), "--packing"]);
    insta::assert_snapshot!("plan_table_packed", out.stdout);
}

#[test]
fn plan_sbatch_for_a_pyxis_cluster() {
    let out = disagg(&[
        "--clusters",
        &format!("{DATA}/clusters.yaml"),
        "plan",
        SEED,
        "--cluster",
        "gb200",
        "--sbatch",
        "--run-dir",
        "/lustre/runs/seed",
        "--disagg-bin",
        "/lustre/bin/disagg",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("sbatch_seed_gb200", out.stdout);
}

/// The environment contract on a GB200 and a B200 profile with TensorRT-LLM workers: UCX per GPU
/// type, the IMEX channel on GB200, per-rank caches, `numactl` for `slurm.numa_bind`,
/// `--segment` where the profile declares it, `slurm.extra_args`, the profiles' variables.
#[test]
fn plan_sbatch_with_trtllm_on_gb200_and_b200_profiles() {
    for (cluster, config) in [
        ("gb200", SEED),
        (
            "b200",
            "fixtures/trtllm-configs/disaggregated/b200_deepseek-r1-fp4_8k1k_con1536_ctx1_dep4_gen1_dep8_eplb0_mtp1_ccb-NIXL.yaml",
        ),
    ] {
        let out = disagg(&[
            "--clusters",
            &format!("{DATA}/clusters.yaml"),
            "plan",
            config,
            "--cluster",
            cluster,
            "--engine",
            "trtllm",
            "--sbatch",
            "--run-dir",
            "/lustre/runs/seed",
            "--disagg-bin",
            "/lustre/bin/disagg",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        insta::assert_snapshot!(format!("sbatch_trtllm_{cluster}"), out.stdout);
    }
}

#[test]
fn plan_sbatch_per_engine_one_task_per_node_for_vllm_and_sglang() {
    for engine in ["vllm", "sglang"] {
        let out = disagg(&[
            "--clusters",
            &format!("{DATA}/clusters.yaml"),
            "plan",
            SEED,
            "--cluster",
            "gb200",
            "--sbatch",
            "--run-dir",
            "/lustre/runs/seed",
            "--disagg-bin",
            "/lustre/bin/disagg",
            "--engine",
            engine,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        insta::assert_snapshot!(format!("sbatch_seed_gb200_{engine}"), out.stdout);
    }
    let out = disagg(&["plan", SEED, "--engine", "vllm", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ports: Vec<(u64, u64)> = plan["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kv_port"].as_u64().unwrap(),
                s["dist_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports[0], (5600, 5601), "{ports:?}");
    let out = disagg(&["plan", SEED, "--engine", "vlm"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--engine vlm: use one of"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_sbatch_packed_on_a_plain_cluster() {
    let out = disagg(&[
        "--clusters",
        &format!("{DATA}/clusters.yaml"),
        "plan",
        &format!("{DATA}/small-servers.yaml"),
        "--cluster",
        "plain",
        "--packing",
        "--sbatch",
        "--run-dir",
        "/shared/runs/small",
        "--disagg-bin",
        "/shared/bin/disagg",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("sbatch_small_packed", out.stdout);
}

#[test]
fn ci_environment_overrides_the_cluster_profile() {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args([
            "--clusters",
            &format!("{DATA}/clusters.yaml"),
            "plan",
            SEED,
            "-c",
            "gb200",
            "--sbatch",
            "--run-dir",
            "/r",
        ])
        .current_dir(repo_root())
        .env("CLUSTER_PARTITION", "other_partition")
        .env("CLUSTER_ACCOUNT", "other_account")
        .env("DOCKER_IMAGE", "registry/image:tag")
        .env("MPI_TYPE", "pmi2")
        .output()
        .unwrap();
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("#SBATCH --partition=other_partition\n"),
        "{script}"
    );
    assert!(script.contains("#SBATCH --account=other_account\n"));
    assert!(script.contains("--container-image=registry/image:tag"));
    assert!(script.contains("--mpi=pmi2"));
}

#[test]
fn plan_errors_name_the_problem() {
    let unknown = disagg(&[
        "--clusters",
        &format!("{DATA}/clusters.yaml"),
        "plan",
        SEED,
        "-c",
        "nope",
    ]);
    assert_eq!(unknown.code, 2);
    let missing = disagg(&["plan", SEED, "-c", "gb200"]);
    assert_eq!(missing.code, 2);
    let bad_id = disagg(&["plan", "test_e2e[aggr_upload-x]"]);
    assert_eq!(bad_id.code, 2);
    let not_found = disagg(&[
        "plan",
        "test_e2e[disagg_upload-nope]",
        "--config-dir",
        "fixtures",
    ]);
    assert_eq!(not_found.code, 2);
    let invalid = disagg(&["plan", &format!("{DATA}/uneven-server.yaml")]);
    assert_eq!(invalid.code, 2);
    insta::assert_snapshot!(
        "plan_errors",
        [
            unknown.stderr,
            missing.stderr,
            bad_id.stderr,
            not_found.stderr,
            invalid.stderr
        ]
        .join("---\n")
    );
}

#[test]
fn help_texts() {
    insta::assert_snapshot!("help", disagg(&["--help"]).stdout);
    insta::assert_snapshot!("help_plan", disagg(&["plan", "--help"]).stdout);
    insta::assert_snapshot!("help_validate", disagg(&["validate", "--help"]).stdout);
}
