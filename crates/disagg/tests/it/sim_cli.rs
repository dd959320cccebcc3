//! `disagg sim` as a user runs it: settings from a test config, port 0, the reported address,
//! a real request, and a clean stop on SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use disagg_test_support::spawn_listening;

use crate::support::repo_root;

#[test]
fn sim_reads_the_worker_section_binds_port_zero_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let (mut child, line, _) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_disagg"))
            .args([
                "sim",
                "--port",
                "0",
                "--config",
                "examples/local-sim.yaml",
                "--worker",
                "gen",
                "--zero-cost",
            ])
            .arg("--report-addr")
            .arg(&addr_file)
            .current_dir(repo_root()),
    );
    assert!(
        line.starts_with("disagg sim: listening on http://127.0.0.1:"),
        "{line}"
    );
    // worker_config.gen of the example: max_batch_size 64, max_num_tokens 256, stream_interval 1.
    assert!(
        line.contains("max_batch_size 64, max_num_tokens 256, stream_interval 1"),
        "{line}"
    );
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    assert!(
        line.contains(&addr),
        "printed and reported addresses agree: {line} vs {addr}"
    );
    assert_ne!(addr.rsplit(':').next(), Some("0"));

    let mut s = TcpStream::connect(&addr).unwrap();
    let body = r#"{"model":"sim-llama-8b","prompt":"a b c","max_tokens":3,"stream":true}"#;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("data: [DONE]"), "{resp}");

    let start = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sim did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--tokenizer`, text prompts count as the tokenizer counts them (so a client that made
/// its prompts with the same tokenizer gets the prefill it asked for).
#[test]
fn sim_counts_text_prompts_with_the_given_tokenizer() {
    // Words split at punctuation: "w1,w2,w3 w4" is 6 tokens but 2 whitespace words.
    let tok_dir = repo_root().join("crates/disagg/tests/data/punct-tokenizer");
    let prompt = "w1,w2,w3 w4";
    let expected = disagg_bench::dataset::Tokenizer::load(&tok_dir)
        .unwrap()
        .encode(prompt)
        .len();
    let words = prompt.split_whitespace().count();
    assert_ne!(
        expected, words,
        "the test needs a tokenizer that is not one token per word"
    );
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let (mut child, _, _) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_disagg"))
            .args(["sim", "--port", "0", "--zero-cost", "--tokenizer"])
            .arg(&tok_dir)
            .arg("--report-addr")
            .arg(&addr_file),
    );
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = format!(r#"{{"model":"sim","prompt":"{prompt}","max_tokens":2}}"#);
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.contains(&format!("\"prompt_tokens\":{expected}")),
        "{resp}"
    );
    let _ = child.kill();
}
