//! `disagg router` as a process in front of `disagg sim` processes: a generation worker killed
//! with SIGKILL mid-stream, and workers that never come up.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use disagg_test_support::ChildGuard;

use crate::support::spawn_disagg;

fn spawn(args: &[&str]) -> (ChildGuard, String) {
    let (p, _, url) = spawn_disagg(args);
    (p, url.trim_start_matches("http://").to_string())
}

fn sim(role: &str, extra: &[&str]) -> (ChildGuard, String) {
    let mut args = vec!["sim", "--port", "0", "--role", role, "--zero-cost"];
    args.extend(extra);
    spawn(&args)
}

fn write_config(dir: &Path, ctx: &[&str], gen_: &[&str]) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "hostname: 127.0.0.1\nport: 0\nbackend: pytorch\ncontext_servers:\n  num_instances: {}\n  urls: [{}]\ngeneration_servers:\n  num_instances: {}\n  urls: [{}]\n",
        ctx.len(),
        list(ctx),
        gen_.len(),
        list(gen_)
    );
    let path = dir.join("server_config.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait_healthy(addr: &str) {
    for _ in 0..200 {
        if get(addr, "/health").starts_with("HTTP/1.1 200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("router {addr} never healthy");
}

#[test]
fn a_generation_worker_killed_mid_stream_ends_the_stream_with_an_error_and_done() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, ctx_addr) = sim("context", &[]);
    let (mut victim, victim_addr) = sim("generation", &["--decode-step-base-ms", "20"]);
    let (_survivor, survivor_addr) = sim("generation", &[]);
    let config = write_config(dir.path(), &[&ctx_addr], &[&victim_addr, &survivor_addr]);
    let (_router, router_addr) =
        spawn(&["router", "-c", &config, "--health-check-interval", "0.2"]);
    wait_healthy(&router_addr);

    let mut s = TcpStream::connect(&router_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"model":"sim","prompt":[1,2,3],"max_tokens":2000,"stream":true}"#;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"text\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended before the first token");
        seen.extend_from_slice(&buf[..n]);
    }
    // The first request goes to the first generation worker: kill it with SIGKILL.
    let killed = Instant::now();
    victim.kill().unwrap();
    victim.wait().unwrap();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "the stream did not end promptly"
    );
    assert!(text.contains("failed mid-stream"), "{text}");
    assert!(text.contains("\"type\":\"server_error\""), "{text}");
    assert!(
        text.trim_end().ends_with("data: [DONE]") || text.contains("data: [DONE]\n\n\r\n0\r\n"),
        "{text}"
    );
    // Bytes had reached the client: no retry on the other worker.
    let metrics = get(&survivor_addr, "/metrics");
    assert!(
        metrics.contains("disagg_sim_requests_total{role=\"generation\"} 0"),
        "{metrics}"
    );
}

#[test]
fn workers_that_never_come_up_fail_the_router_at_the_start_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = spare.local_addr().unwrap().to_string();
    drop(spare);
    let config = write_config(dir.path(), &[&dead], &[&dead]);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args(["router", "-c", &config, "-t", "1", "--port", "0"])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workers not ready after 1s"), "{stderr}");
    assert!(stderr.contains(&format!("context {dead}")), "{stderr}");
}

#[test]
fn a_bad_server_config_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server_config.yaml");
    std::fs::write(
        &path,
        "context_servers: {num_instances: 2, urls: [\"a:1\"]}\ngeneration_servers: {urls: []}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args(["router", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("num_instances is 2 but 1 urls are listed"),
        "{stderr}"
    );
    assert!(stderr.contains("server_config.yaml:1:"), "{stderr}");
    assert!(
        stderr.contains("generation_servers.urls: no workers listed"),
        "{stderr}"
    );
}
