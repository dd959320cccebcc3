//! `disagg bench` against a `disagg sim` process: the result block, the JSON record, and the
//! validity gate's exit codes.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::process::{Command, Stdio};

use disagg_test_support::ChildGuard;

use crate::support::spawn_disagg;

fn sim() -> (ChildGuard, String) {
    let (p, _, url) = spawn_disagg(&[
        "sim",
        "--port",
        "0",
        "--zero-cost",
        "--stream-interval",
        "2",
    ]);
    (p, url)
}

fn bench(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_valid_run_prints_the_block_and_writes_the_record() {
    let (_sim, url) = sim();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().display().to_string();
    let (code, stdout) = bench(&[
        "--url",
        &url,
        "--model",
        "sim",
        "--concurrency",
        "2,4",
        "--multi-round",
        "3",
        "--isl",
        "16",
        "--osl",
        "6",
        "--ignore-eos",
        "--out",
        &out_dir,
        "--save-timelines",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("con2\n") && stdout.contains("con4\n"));
    assert!(
        stdout.contains("Total generated tokens:                  72"),
        "{stdout}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("con4.json")).unwrap())
            .unwrap();
    assert_eq!(record["record_version"], 1);
    assert_eq!(record["valid"], true);
    assert_eq!(record["metrics"]["completed"], 12);
    assert_eq!(record["metrics"]["total_output_tokens"], 72);
    assert_eq!(record["metrics"]["output_token_source"], "usage");
    let timelines = record["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 12);
    // stream_interval 2: the first token alone, then 2 + 2 + 1
    assert_eq!(timelines[0]["chunks"].as_array().unwrap().len(), 4);
}

#[test]
fn failed_requests_make_the_run_invalid() {
    let (_sim, url) = sim();
    let args = [
        "--url",
        url.as_str(),
        "--model",
        "wrong",
        "--concurrency",
        "2",
        "--isl",
        "8",
        "--osl",
        "2",
    ];
    let (code, stdout) = bench(&args);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("INVALID: 2 of 2 requests failed; no output tokens"),
        "{stdout}"
    );
    assert!(stdout.contains("!FAILED REQUESTS!"));
    let mut lenient = args.to_vec();
    lenient.push("--allow-invalid");
    assert_eq!(bench(&lenient).0, 0);
}

#[test]
fn ctrl_c_keeps_the_partial_results_marked_interrupted() {
    let (_slow, _, url) = spawn_disagg(&[
        "sim",
        "--port",
        "0",
        "--zero-cost",
        "--decode-step-base-ms",
        "5",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args([
            "bench",
            "--url",
            &url,
            "--model",
            "sim",
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--isl",
            "8",
            "--osl",
            "5000",
        ])
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bench = ChildGuard::new(child);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let sent = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = bench.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "bench did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("con2.json")).unwrap())
            .unwrap();
    assert_eq!(record["interrupted"], true);
    assert_eq!(record["valid"], false);
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().starts_with("con2,true,false,"),
        "{csv}"
    );
}

#[test]
fn a_jsonl_dataset_of_text_and_ids() {
    let (_sim, url) = sim();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(&data, "{\"prompt\": \"one two three\", \"output_len\": 4}\n{\"prompt\": [5, 6], \"output_len\": 2}\n").unwrap();
    let out_dir = dir.path().join("out");
    let (code, stdout) = bench(&[
        "--url",
        &url,
        "--model",
        "sim",
        "--concurrency",
        "2",
        "--num-prompts",
        "4",
        "--dataset",
        "jsonl",
        "--dataset-path",
        data.to_str().unwrap(),
        "--ignore-eos",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    // Used in order and repeated: 4 + 2 + 4 + 2 output tokens; 3 + 2 + 3 + 2 prompt tokens
    // (text counted by the server's usage, ids by their number).
    assert!(
        stdout.contains("Total generated tokens:                  12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Total input tokens:                      10"),
        "{stdout}"
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"x\"}\n{\"output_len\": 2}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args([
            "bench",
            "--url",
            &url,
            "--model",
            "sim",
            "--dataset",
            "jsonl",
            "--dataset-path",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.jsonl:2: no non-empty `prompt`"),
        "{stderr}"
    );
}

#[test]
fn a_tokenizer_makes_text_prompts_of_exact_length() {
    let (_sim, url) = sim();
    let tok = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny-tokenizer");
    let (code, stdout) = bench(&[
        "--url",
        &url,
        "--model",
        "sim",
        "--concurrency",
        "2",
        "--num-prompts",
        "6",
        "--isl",
        "20",
        "--osl",
        "3",
        "--ignore-eos",
        "--tokenizer",
        tok,
    ]);
    assert_eq!(code, 0, "{stdout}");
    // The word-level tokenizer and the simulator count alike: exactly 6 × 20 input tokens.
    assert!(
        stdout.contains("Total input tokens:                      120"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args([
            "bench",
            "--url",
            &url,
            "--model",
            "sim",
            "--tokenizer",
            "/nonexistent/tok",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot load the tokenizer /nonexistent/tok")
    );
}

#[test]
fn a_run_ends_at_its_deadline_and_keeps_what_finished() {
    let (_slow, _, url) = spawn_disagg(&[
        "sim",
        "--port",
        "0",
        "--zero-cost",
        "--decode-step-base-ms",
        "5",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args([
            "bench",
            "--url",
            &url,
            "--model",
            "sim",
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
        ])
        .args([
            "--isl",
            "8",
            "--osl",
            "5000",
            "--max-duration",
            "0.5",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid, not interrupted by the user"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("con2.json")).unwrap())
            .unwrap();
    assert_eq!(record["interrupted"], true);
    assert!(
        record["invalid_reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("stopped at --max-duration")
    );
    assert!(record["environment"]["cpus"].as_u64().unwrap() >= 1);
    let (code, _) = bench(&["--url", &url, "--model", "sim", "--isl", "0"]);
    assert_eq!(code, 2);
}
