//! `disagg run` with the config's `workload:` section (shared prefixes, multi-turn sessions, a
//! Mooncake trace) and
//! its dataset rules: the record and `run.json` say which prompts ran, and a dataset that
//! cannot be found is an input error, never random prompts in its place.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

/// `disagg run CONFIG --out DIR/run ARGS`, with the results store kept out.
fn run(config: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_disagg"))
        .env_remove("DISAGG_DB")
        .arg("run")
        .arg(config)
        .args(["--no-store", "--out"])
        .arg(dir.join("run"))
        .args(args)
        .output()
        .unwrap()
}

/// The example config with `extra` appended, written as `DIR/NAME.yaml`.
fn config_with(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(EXAMPLE).unwrap() + extra;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn both(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two prefixes of 256 tokens shared by 24 prompts: after each prefix's first prompt the
/// context server serves it from its cache, and the record's telemetry shows the hits.
#[test]
fn a_shared_prefix_workload_runs_and_its_record_shows_cache_hits() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "shared-prefix-sim",
        "workload:\n  shared_prefix: {groups: 2, prefix_len: 256, suffix_len: 16}\n",
    );
    let out = run(
        &config,
        dir.path(),
        &["--concurrency", "2", "--num-prompts", "24", "--osl", "16"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let described = "shared-prefix groups=2 prefix=256 suffix=16";
    assert!(
        both(&out).contains(&format!("prompts: {described}")),
        "the benchmark says what it sends: {}",
        both(&out)
    );
    let run_dir = dir.path().join("run");
    let spec = json(run_dir.join("run.json"));
    assert_eq!(
        spec["workload"]["dataset"]["shared_prefix"],
        serde_json::json!({"groups": 2, "prefix_len": 256, "suffix_len": 16}),
        "{spec}"
    );
    let record = json(run_dir.join("results/con2.json"));
    assert_eq!(record["dataset"], described);
    assert_eq!(record["valid"], true, "{record}");
    let targets = record["telemetry"]["targets"].as_array().unwrap();
    let ctx = targets.iter().find(|t| t["name"] == "CTX_0").unwrap();
    let rate = ctx["cache_hit_rate"].as_f64().unwrap();
    assert!(rate > 0.5, "CTX_0's prefix-cache hit rate {rate}: {ctx}");
}

/// Multi-turn sessions of 3 turns, each later turn the whole previous prompt, its answer and
/// new tokens, 0.3 s of think time between turns: 20 prompts and the warm-up request make 7
/// whole sessions (21 requests; the warm-up is the first turn of the first), and from the second
/// turn on the context server finds the session's earlier prompt in its cache.
#[test]
fn a_multi_turn_workload_runs_whole_sessions_and_later_turns_hit_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "multi-turn-sim",
        "workload:\n  multi_turn: {turns: 3, turn_len: 32, think_time: 0.3}\n",
    );
    let out = run(
        &config,
        dir.path(),
        &[
            "--concurrency",
            "2",
            "--num-prompts",
            "20",
            "--isl",
            "256",
            "--osl",
            "8",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let described = "multi-turn turns=3 turn=32 think=0.3s";
    assert!(
        both(&out).contains(&format!("prompts: {described}")),
        "{}",
        both(&out)
    );
    let run_dir = dir.path().join("run");
    let spec = json(run_dir.join("run.json"));
    assert_eq!(
        spec["workload"]["dataset"]["multi_turn"]["turns"], 3,
        "{spec}"
    );
    let record = json(run_dir.join("results/con2.json"));
    assert_eq!(record["dataset"], described);
    assert_eq!(record["valid"], true, "{record}");
    assert_eq!(record["metrics"]["total_requests"], 20, "{record}");
    // 7 sessions of turns of 256, 256+8+32 and 296+8+32 tokens, less the warm-up's 256.
    assert_eq!(
        record["metrics"]["total_input_tokens"],
        7 * (256 + 296 + 336) - 256,
        "{record}"
    );
    let targets = record["telemetry"]["targets"].as_array().unwrap();
    let ctx = targets.iter().find(|t| t["name"] == "CTX_0").unwrap();
    let rate = ctx["cache_hit_rate"].as_f64().unwrap();
    assert!(rate > 0.3, "CTX_0's prefix-cache hit rate {rate}: {ctx}");
}

/// A trace of six requests next to the config, named relative to it, replayed ten times
/// faster: one run labelled `trace10x` of every request, and run.json holds the absolute path.
#[test]
fn a_mooncake_trace_next_to_the_config_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "{{\"timestamp\": {}, \"input_length\": 40, \"output_length\": 4, \"hash_ids\": [1, 2, {}]}}",
                i * 100,
                10 + i
            )
        })
        .collect();
    std::fs::write(dir.path().join("trace.jsonl"), lines.join("\n") + "\n").unwrap();
    let config = config_with(
        dir.path(),
        "trace-sim",
        "workload:\n  mooncake: {path: trace.jsonl, speedup: 10, block_size: 16}\n",
    );
    let out = run(&config, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let run_dir = dir.path().join("run");
    let spec = json(run_dir.join("run.json"));
    let trace = dir.path().join("trace.jsonl");
    assert_eq!(
        spec["workload"]["dataset"]["mooncake"]["path"],
        trace.display().to_string()
    );
    assert_eq!(spec["workload"]["trace_speedup"], 10.0);
    let record = json(run_dir.join("results/trace10x.json"));
    assert_eq!(record["metrics"]["total_requests"], 6, "{record}");
    assert_eq!(
        record["dataset"],
        format!("mooncake {} block=16", trace.display())
    );
    let summary = json(run_dir.join("results/summary.json"));
    assert_eq!(summary["outcome"], "passed", "{summary}");
    assert_eq!(summary["runs"][0]["label"], "trace10x");
}

/// A dataset the run cannot find stops it before anything starts, naming the key and the way
/// out; `--random-prompts` is that way out, and the run then sends random prompts.
#[test]
fn a_dataset_that_cannot_be_found_is_an_input_error_not_random_prompts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra, key) in [
        (
            "relative-dataset",
            "",
            "benchmark.dataset_file `datasets/x.json` is relative to the models root",
        ),
        (
            "missing-dataset",
            "",
            "benchmark.dataset_file `/nonexistent/x.json` does not exist",
        ),
        (
            "missing-trace",
            "workload:\n  mooncake: {path: gone.jsonl}\n",
            "workload.mooncake.path",
        ),
    ] {
        let file = match name {
            "relative-dataset" => "datasets/x.json",
            _ => "/nonexistent/x.json",
        };
        let base = std::fs::read_to_string(EXAMPLE).unwrap();
        let text = if extra.is_empty() {
            base.replace(
                "  streaming: true\n",
                &format!("  streaming: true\n  dataset_file: {file}\n"),
            )
        } else {
            base + extra
        };
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, text).unwrap();
        let out = run(&config, &dir.path().join(name), &[]);
        let all = both(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {all}");
        assert!(all.contains(key), "{name}: {all}");
        assert!(all.contains("--random-prompts"), "{name}: {all}");
        assert!(
            !dir.path().join(name).join("run").exists(),
            "{name}: nothing is created"
        );
        if name == "missing-trace" {
            let out = run(
                &config,
                &dir.path().join(name),
                &[
                    "--random-prompts",
                    "--concurrency",
                    "1",
                    "--num-prompts",
                    "2",
                ],
            );
            assert_eq!(out.status.code(), Some(0), "{}", both(&out));
            let record = json(dir.path().join(name).join("run/results/con1.json"));
            assert!(record["dataset"].is_null(), "random prompts: {record}");
        }
    }
}
