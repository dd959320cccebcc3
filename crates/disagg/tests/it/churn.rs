//! Worker churn (docs/RELIABILITY.md): under open-loop load through `disagg router`, one of two
//! generation workers is killed with SIGKILL and started again on its port, three times. Only
//! the streams in flight on the killed worker fail (counted against the router's in-flight
//! gauge of that worker the moment before the kill), requests sent meanwhile go to the other
//! worker, the killed one leaves the rotation within a health interval and takes requests again
//! once it is back, and every request is accounted for. The 5-minute version is
//! `bench/churn.sh`.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disagg_test_support::{ChildGuard, metric};

use crate::support::{get, spawn_disagg};

/// A generation sim on `port` (0: any) with 20 ms steps, so a 32-token stream lasts ~0.7 s.
fn gen_sim(port: u16) -> (ChildGuard, String) {
    let port = port.to_string();
    let (p, _, url) = spawn_disagg(&[
        "sim",
        "--port",
        &port,
        "--role",
        "generation",
        "--zero-cost",
        "--decode-step-base-ms",
        "20",
    ]);
    (p, url.trim_start_matches("http://").to_string())
}

/// The router's `/metrics` value of `name` for `worker`.
fn worker_metric(router: &str, name: &str, worker: &str) -> f64 {
    let body = get(router, "/metrics").unwrap_or_default();
    body.lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("worker=\"{worker}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn write_config(dir: &Path, ctx: &str, gens: &[&str]) -> String {
    let path = dir.join("server_config.yaml");
    std::fs::write(
        &path,
        format!(
            "hostname: 127.0.0.1\nport: 0\ncontext_servers:\n  num_instances: 1\n  urls: [\"{ctx}\"]\ngeneration_servers:\n  num_instances: 2\n  urls: [\"{}\", \"{}\"]\n",
            gens[0], gens[1]
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_generation_worker_killed_and_restarted_under_load_costs_only_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, ctx) = {
        let (p, _, url) = spawn_disagg(&["sim", "--port", "0", "--role", "context", "--zero-cost"]);
        (p, url.trim_start_matches("http://").to_string())
    };
    let (_g0, g0) = gen_sim(0);
    let (mut victim, g1) = gen_sim(0);
    let port: u16 = g1.rsplit(':').next().unwrap().parse().unwrap();
    let config = write_config(dir.path(), &ctx, &[&g0, &g1]);
    let (_router, _, url) =
        spawn_disagg(&["router", "-c", &config, "--health-check-interval", "0.5"]);
    let router = url.trim_start_matches("http://").to_string();
    let t0 = Instant::now();
    while get(&router, "/health").is_none_or(|r| !r.contains(" 200 ")) {
        assert!(t0.elapsed() < Duration::from_secs(10), "router not healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 20 requests/s for 12 s, each ~0.7 s long: ~7 in flight at a time, half on the victim.
    let prompts = 240;
    let mut bench = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_disagg"))
            .args([
                "bench",
                "--url",
                &url,
                "--model",
                "sim",
                "--request-rate",
                "20",
            ])
            .args([
                "--burstiness",
                "1000",
                "--num-prompts",
                &prompts.to_string(),
            ])
            .args([
                "--isl",
                "16",
                "--osl",
                "32",
                "--ignore-eos",
                "--allow-invalid",
            ])
            .args(["--timeout", "30", "--max-duration", "60", "--out"])
            .arg(dir.path().join("bench"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut in_flight_at_kills = 0.0;
    let mut left_within = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        in_flight_at_kills += worker_metric(&router, "disagg_router_worker_in_flight", &g1);
        let _ = victim.kill();
        let _ = victim.wait();
        let killed = Instant::now();
        // Out of the rotation within a health interval (0.5 s), give or take a busy machine.
        while worker_metric(&router, "disagg_router_worker_healthy", &g1) != 0.0 {
            assert!(
                killed.elapsed() < Duration::from_secs(3),
                "the killed worker stayed in the rotation"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        left_within.push(killed.elapsed());
        std::thread::sleep(Duration::from_millis(700));
        victim = gen_sim(port).0;
    }
    // Back in the rotation and taking requests again.
    let back = Instant::now();
    let before = worker_metric(&router, "disagg_router_worker_requests_total", &g1);
    while worker_metric(&router, "disagg_router_worker_requests_total", &g1) <= before {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the restarted worker never took a request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    while bench.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the benchmark hung");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(
        std::fs::read_dir(dir.path().join("bench"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .unwrap(),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &record["metrics"];
    let completed = m["completed"].as_u64().unwrap();
    let failed = m["failed"].as_u64().unwrap();
    eprintln!(
        "churn: {completed} completed, {failed} failed; {in_flight_at_kills} in flight on the victim at its kills; out of rotation after {left_within:?}"
    );
    assert_eq!(
        completed + failed,
        prompts,
        "every request is accounted for"
    );
    // Only its streams: what was in flight on it, and at most a couple per kill that started
    // between the gauge reading and the kill.
    assert!(
        failed as f64 <= in_flight_at_kills + 6.0,
        "{failed} failed, {in_flight_at_kills} were in flight on the killed worker"
    );
    let retries = metric(
        get(&router, "/metrics").unwrap_or_default().as_bytes(),
        "disagg_router_retries_total",
    );
    eprintln!("router retries: {retries:?}");
}
