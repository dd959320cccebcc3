//! The numbers that matter for `disagg sim`:
//! 1. capacity — with every cost at zero, how many concurrent streams and how many streamed
//!    tokens per second one simulator process pinned to one core sustains;
//! 2. fidelity — with the default cost model, how close the TTFT and TPOT measured by a client at
//!    concurrency 1 come to what the model predicts (`base + P/rate` and `base + per_seq`).
//!
//! Run: `cargo bench -p disagg --bench sim_load` (env: `STREAMS`, `TOKENS`, `INTERVAL`,
//! `FIDELITY_REQUESTS`). The simulator runs as a separate `disagg sim` process under
//! `taskset -c 0`; this client runs on the other core. Every request is bounded in count and time.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on any setup error"
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use support::{Http, Proc, client, cpu_seconds, env};

struct SimProc {
    proc_: Proc,
    addr: String,
}

impl SimProc {
    /// CPU seconds the simulator has used (taskset execs it, so the child is the simulator).
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.proc_)
    }
}

#[expect(
    clippy::zombie_processes,
    reason = "SimProc's Drop kills and waits for the child"
)]
fn start_sim(args: &[&str]) -> SimProc {
    let dir = std::env::temp_dir().join(format!("disagg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join(format!("addr-{}", args.len()));
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new("taskset")
        .args([
            "-c",
            "0",
            env!("CARGO_BIN_EXE_disagg"),
            "sim",
            "--port",
            "0",
            "--threads",
            "1",
            "--report-addr",
        ])
        .arg(&addr_file)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("taskset and disagg sim");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            return SimProc {
                proc_: Proc::new(child),
                addr,
            };
        }
        assert!(Instant::now() < deadline, "sim did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One streamed request: (time to first chunk, time to last byte, completion tokens from usage).
async fn stream(http: &Http, url: &str, body: String) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let mut resp = http.request(req).await.expect("request");
    assert_eq!(resp.status(), 200);
    let mut first = None;
    let mut tail = Vec::new();
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame.expect("body");
        if let Some(data) = frame.data_ref() {
            first.get_or_insert_with(|| start.elapsed());
            // Keep only the end of the stream: the usage chunk is there.
            tail.extend_from_slice(data);
            if tail.len() > 4096 {
                tail.drain(..tail.len() - 1024);
            }
        }
    }
    let end = start.elapsed();
    let text = String::from_utf8_lossy(&tail);
    let tokens = text
        .rfind("\"completion_tokens\":")
        .and_then(|i| {
            text[i + 20..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .expect("usage chunk");
    (first.unwrap_or(end), end, tokens)
}

async fn metric(http: &Http, base: &str, name: &str) -> f64 {
    let req = hyper::Request::get(format!("{base}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = http
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn capacity(streams: u64, tokens: u64, interval: u64) {
    let sim = start_sim(&[
        "--zero-cost",
        "--max-batch-size",
        "100000",
        "--max-num-tokens",
        "1000000",
        "--stream-interval",
        &interval.to_string(),
    ]);
    let base = format!("http://{}", sim.addr);
    let url = format!("{base}/v1/completions");
    let http = client(10_000);
    let body = format!(
        "{{\"model\":\"sim\",\"prompt\":[1,2,3,4,5,6,7,8],\"max_tokens\":{tokens},\"ignore_eos\":true,\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}"
    );
    // Warm the connection pool and the simulator.
    stream(&http, &url, body.clone()).await;
    let cpu_before = sim.cpu_seconds();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        set.spawn(async move { stream(&http, &url, body).await });
    }
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (http, base, peak) = (http.clone(), base.clone(), peak.clone());
        tokio::spawn(async move {
            for _ in 0..2400 {
                let running = metric(&http, &base, "disagg_sim_requests_running").await;
                peak.fetch_max(running as u64, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut total = 0u64;
    let mut done = 0u64;
    let deadline = Duration::from_secs(120);
    while let Ok(Some(r)) = tokio::time::timeout(deadline, set.join_next()).await {
        total += r.unwrap().2;
        done += 1;
    }
    let wall = start.elapsed();
    let sim_cpu = (sim.cpu_seconds() - cpu_before) / wall.as_secs_f64();
    watcher.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "capacity: streams={streams} completed={done} tokens/stream={tokens} stream_interval={interval} \
         wall={:.2}s streamed_tokens/s={:.0} chunks/s={:.0} peak_running={} sim_cpu={:.0}%",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        total as f64 / interval as f64 / wall.as_secs_f64(),
        peak,
        100.0 * sim_cpu,
    );
}

async fn fidelity(requests: u64) {
    let (isl, osl) = (1024u64, 64u64);
    let sim = start_sim(&[]);
    let url = format!("http://{}/v1/completions", sim.addr);
    let http = client(10_000);
    let prompt: Vec<String> = (0..isl).map(|i| (i % 30_000).to_string()).collect();
    let body = |seed: u64| {
        format!(
            "{{\"model\":\"sim\",\"prompt\":[{seed},{}],\"max_tokens\":{osl},\"ignore_eos\":true,\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}",
            prompt[1..].join(",")
        )
    };
    stream(&http, &url, body(0)).await;
    let (mut ttft, mut tpot) = (0.0, 0.0);
    for i in 0..requests {
        let (first, end, n) = stream(&http, &url, body(i + 1)).await;
        assert_eq!(n, osl);
        ttft += first.as_secs_f64();
        tpot += (end - first).as_secs_f64() / (n - 1) as f64;
    }
    let (ttft, tpot) = (
        1000.0 * ttft / requests as f64,
        1000.0 * tpot / requests as f64,
    );
    // Default model: base 8 ms, 0.05 ms per decoding sequence, 20 000 prefill tokens/s, TP 1.
    let (p_ttft, p_tpot) = (8.0 + 1000.0 * isl as f64 / 20_000.0, 8.0 + 0.05);
    println!(
        "fidelity: c=1 isl={isl} osl={osl} requests={requests} mean_ttft={ttft:.3}ms (model {p_ttft:.3}ms, {:+.2}%) \
         mean_tpot={tpot:.3}ms (model {p_tpot:.3}ms, {:+.2}%)",
        100.0 * (ttft - p_ttft) / p_ttft,
        100.0 * (tpot - p_tpot) / p_tpot
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let streams = env("STREAMS", 2000);
        let tokens = env("TOKENS", 200);
        capacity(streams, tokens, env("INTERVAL", 1)).await;
        capacity(streams, tokens, 10).await;
        fidelity(env("FIDELITY_REQUESTS", 20)).await;
    });
}
