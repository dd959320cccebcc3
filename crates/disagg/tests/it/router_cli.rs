//! `disagg router` as a process in front of `disagg sim` processes: a generation worker killed
//! with SIGKILL mid-stream, workers that never come up, and SGLang's hand-off answering as
//! SGLang's own router (sglang-router's `smg`) does in front of the same pair. That one needs
//! `DISAGG_SGLANG_ROUTER_BIN` (`scripts/real-engines.sh setup`, then source its env.sh); without
//! it the test says SKIPPED, and `DISAGG_REQUIRE_SGLANG_ROUTER=1` (set by CI) makes that a failure.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disagg_test_support::{ChildGuard, free_port, metric};

use crate::support::{ask, get, log_file, log_tail, spawn_disagg};

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

/// Whether `GET path` of `addr` answers 200.
fn answers_200(addr: &str, path: &str) -> bool {
    get(addr, path).is_some_and(|r| r.split(' ').nth(1) == Some("200"))
}

fn wait_healthy(addr: &str) {
    for _ in 0..200 {
        if answers_200(addr, "/health") {
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
    let metrics = get(&survivor_addr, "/metrics").unwrap();
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

/// sglang-router's `smg` (`$DISAGG_SGLANG_ROUTER_BIN`), if it is set up.
fn sglang_router() -> Option<PathBuf> {
    let bin = std::env::var_os("DISAGG_SGLANG_ROUTER_BIN")
        .map(PathBuf::from)
        .filter(|b| b.exists());
    if bin.is_none() {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_SGLANG_ROUTER").is_none(),
            "DISAGG_REQUIRE_SGLANG_ROUTER is set but DISAGG_SGLANG_ROUTER_BIN names no smg: \
             run scripts/real-engines.sh setup and source its env.sh"
        );
        eprintln!("SKIPPED: no sglang-router (scripts/real-engines.sh setup; source its env.sh)");
    }
    bin
}

/// Start `smg launch --pd-disaggregation` in front of one prefill and one decode server, its
/// output in `log`; its address once it is ready.
fn smg_launch(
    smg: &Path,
    prefill: &str,
    bootstrap: &str,
    decode: &str,
    log: &Path,
) -> (ChildGuard, String) {
    // smg takes no port 0: it is given free ones, its metrics port too (else it binds 29000).
    let addr = format!("127.0.0.1:{}", free_port());
    let (host, port) = addr.split_once(':').unwrap();
    let mut child = ChildGuard::new(
        Command::new(smg)
            .args(["launch", "--pd-disaggregation"])
            .args(["--prefill", &format!("http://{prefill}"), bootstrap])
            .args(["--decode", &format!("http://{decode}")])
            .args(["--policy", "round_robin", "--host", host, "--port", port])
            .args(["--prometheus-host", host])
            .args(["--prometheus-port", &free_port().to_string()])
            .stdin(Stdio::null())
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()
            .unwrap(),
    );
    // smg's /health says only that it is up: it registers its workers afterwards, in the
    // background, and /readiness is 200 once it has a healthy prefill and decode server.
    let t0 = Instant::now();
    while !answers_200(&addr, "/readiness") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "smg ended ({status}) before it was ready:\n{}",
                log_tail(log)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "smg not ready after 60 s:\n{}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

/// A counter of a sim (it has one label set: the sim's role).
fn sim_counter(addr: &str, name: &str) -> f64 {
    let metrics = get(addr, "/metrics").unwrap();
    metric(metrics.as_bytes(), name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// One SGLang prefill/decode pair of sims behind `disagg router --handoff sglang` and behind
/// `smg launch --pd-disaggregation` at once: both answer a completion, a streamed one and a chat
/// completion in full and alike, and only the prefill sim ever prefills.
#[test]
fn disagg_router_and_sglang_router_answer_the_same_in_front_of_an_sglang_sim_pair() {
    const MAX_TOKENS: u64 = 8;
    let Some(smg) = sglang_router() else { return };
    let dir = tempfile::tempdir().unwrap();
    // smg loads a tokenizer from the model name: a local directory, empty, makes that a warning
    // instead of a download from a model hub.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let model = model.display().to_string();
    let sglang = ["--protocol", "sglang", "--model", &model];
    let (_ctx, ctx_addr) = sim("context", &sglang);
    let (_gen, gen_addr) = sim("generation", &sglang);
    // The sim serves SGLang's bootstrap on its HTTP port, so that is the bootstrap port.
    let bootstrap = ctx_addr.rsplit_once(':').unwrap().1;

    let config = write_config(dir.path(), &[&ctx_addr], &[&gen_addr]);
    let (_ours, ours_addr) = spawn(&[
        "router",
        "-c",
        &config,
        "--handoff",
        "sglang",
        "--bootstrap-port",
        bootstrap,
        "--health-check-interval",
        "0.2",
    ]);
    wait_healthy(&ours_addr);
    let log = dir.path().join("smg.log");
    let (_theirs, theirs_addr) = smg_launch(&smg, &ctx_addr, bootstrap, &gen_addr, &log);

    let prefilled = "disagg_sim_prefill_tokens_total";
    let before = sim_counter(&ctx_addr, prefilled);
    let ours = ask(&format!("http://{ours_addr}"), &model, MAX_TOKENS);
    let middle = sim_counter(&ctx_addr, prefilled);
    let theirs = ask(&format!("http://{theirs_addr}"), &model, MAX_TOKENS);
    let after = sim_counter(&ctx_addr, prefilled);
    for (name, answers) in [("disagg router", &ours), ("smg", &theirs)] {
        for a in answers {
            assert_eq!(a.tokens, MAX_TOKENS, "{name}: {answers:?}");
            assert!(!a.text.is_empty(), "{name}: {answers:?}");
        }
    }
    // The sim's tokens follow from its seed and the prompt alone: the same text whichever router
    // split the request.
    for (what, (a, b)) in ["completion", "streamed completion", "chat"]
        .iter()
        .zip(ours.iter().zip(&theirs))
    {
        assert_eq!(a.text, b.text, "{what}: disagg router vs smg");
    }
    // Through both, the prefill server prefilled every prompt and the decode server none.
    assert!(middle > before, "disagg router: {before} -> {middle}");
    assert!(
        after > middle,
        "smg: {middle} -> {after}:\n{}",
        log_tail(&log)
    );
    assert_eq!(
        sim_counter(&gen_addr, prefilled),
        0.0,
        "the decode sim prefilled"
    );
}
