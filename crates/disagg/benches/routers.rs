//! The numbers that matter for `disagg router`: how much latency a router adds to a streamed
//! request (router path minus direct path, median and p99 over 2,000 sequential 16-token
//! streaming completions), and how many requests per second it carries at concurrency 64 —
//! side by side with `vllm-router` and `sglang-router`, each in front of two `disagg sim`
//! workers (zero-cost model) speaking that router's protocol.
//!
//! Run through `bench/routers.sh`, which installs the peers in a venv and sets `VLLM_ROUTER`
//! and `SMG` to their binaries (a peer whose variable is unset is skipped). Env: `REQUESTS`
//! (2000), `WARMUP` (50), `TOKENS` (16), `CONCURRENCY` (64), `THROUGHPUT_REQUESTS` (4000).
//!
//! Client: hyper 1 over keep-alive connections with `TCP_NODELAY` and the kernel's ordinary
//! delayed ACKs (no `TCP_QUICKACK`), the "normal client" of the reference measurements.
//! Latency runs from sending the request to the end of the response body.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on any setup error"
)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use support::{Http, Proc, client, cpu_seconds, env};

struct Work {
    dir: std::path::PathBuf,
    procs: Vec<Proc>,
}

impl Drop for Work {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Work {
    fn new() -> Work {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("disagg-routers-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("model")).unwrap();
        Work {
            dir,
            procs: Vec::new(),
        }
    }

    fn model(&self) -> String {
        self.dir.join("model").display().to_string()
    }

    fn spawn(&mut self, program: &str, args: &[String]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("log-{}", self.procs.len())))
                    .map_or(Stdio::null(), Stdio::from),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id();
        self.procs.push(Proc::new(child));
        pid
    }

    /// CPU seconds the last-started process (the router) has used so far.
    fn router_cpu(&self) -> f64 {
        self.procs.last().map_or(0.0, |p| cpu_seconds(p))
    }

    /// Start a `disagg sim` and return its address.
    fn sim(&mut self, name: &str, role: &str, protocol: &str) -> String {
        let file = self.dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&file);
        let args: Vec<String> = [
            "sim",
            "--port",
            "0",
            "--zero-cost",
            "--role",
            role,
            "--protocol",
            protocol,
            "--model",
            &self.model(),
            "--report-addr",
            &file.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let _ = self.spawn(env!("CARGO_BIN_EXE_disagg"), &args);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(a) = std::fs::read_to_string(&file) {
                return a;
            }
            assert!(Instant::now() < deadline, "sim {name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn healthy(http: &Http, base: &str) -> bool {
    let Ok(req) = hyper::Request::get(format!("{base}/health")).body(Full::new(Bytes::new()))
    else {
        return false;
    };
    match tokio::time::timeout(Duration::from_secs(1), http.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status() == 200;
            let _ = resp.into_body().collect().await;
            ok
        }
        _ => false,
    }
}

async fn wait_healthy(http: &Http, base: &str) {
    for _ in 0..600 {
        if healthy(http, base).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became healthy (logs in the work directory)");
}

async fn post(http: &Http, url: &str, body: Bytes) -> Bytes {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = http.request(req).await.expect("request");
    assert_eq!(resp.status(), 200, "{url}");
    resp.into_body().collect().await.expect("body").to_bytes()
}

/// One streamed completion; returns its latency to the last byte.
async fn one(http: &Http, url: &str, body: &Bytes) -> Duration {
    let start = Instant::now();
    let bytes = post(http, url, body.clone()).await;
    let elapsed = start.elapsed();
    assert!(
        bytes.ends_with(b"data: [DONE]\n\n"),
        "{url}: {}",
        String::from_utf8_lossy(&bytes)
    );
    elapsed
}

/// The same two legs a router sends, sent by the client itself: the floor any router adds to.
async fn legs(
    http: &Http,
    protocol: &str,
    ctx: &str,
    gen_: &str,
    body: &serde_json::Value,
    room: u64,
) -> Duration {
    use serde_json::json;
    let start = Instant::now();
    let (ctx_url, gen_url) = (
        format!("http://{ctx}/v1/completions"),
        format!("http://{gen_}/v1/completions"),
    );
    let done = match protocol {
        "trtllm" => {
            let mut c = body.clone();
            c["stream"] = json!(false);
            c["disaggregated_params"] =
                json!({"request_type": "context_only", "disagg_request_id": room});
            let r: serde_json::Value =
                serde_json::from_slice(&post(http, &ctx_url, Bytes::from(c.to_string())).await)
                    .unwrap();
            let mut g = body.clone();
            g["prompt"] = r["prompt_token_ids"].clone();
            let mut p = r["choices"][0]["disaggregated_params"].clone();
            p["request_type"] = json!("generation_only");
            g["disaggregated_params"] = p;
            post(http, &gen_url, Bytes::from(g.to_string())).await
        }
        "vllm" => {
            let mut c = body.clone();
            c["stream"] = json!(false);
            c["max_tokens"] = json!(1);
            c["kv_transfer_params"] = json!({"do_remote_decode": true, "do_remote_prefill": false});
            let r: serde_json::Value =
                serde_json::from_slice(&post(http, &ctx_url, Bytes::from(c.to_string())).await)
                    .unwrap();
            let mut g = body.clone();
            g["kv_transfer_params"] = r["kv_transfer_params"].clone();
            post(http, &gen_url, Bytes::from(g.to_string())).await
        }
        _ => {
            let mut b = body.clone();
            let port: u16 = ctx.rsplit(':').next().unwrap().parse().unwrap();
            b["bootstrap_host"] = json!("127.0.0.1");
            b["bootstrap_port"] = json!(port);
            b["bootstrap_room"] = json!(room);
            let bytes = Bytes::from(b.to_string());
            let (_, d) = tokio::join!(
                post(http, &ctx_url, bytes.clone()),
                post(http, &gen_url, bytes)
            );
            d
        }
    };
    let elapsed = start.elapsed();
    assert!(
        done.ends_with(b"data: [DONE]\n\n"),
        "{}",
        String::from_utf8_lossy(&done)
    );
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // numpy's default (linear) interpolation.
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let w = rank - lo as f64;
    sorted[lo].mul_f64(1.0 - w) + sorted[hi].mul_f64(w)
}

fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

async fn throughput(url: &str, body: &Bytes, concurrency: u64, total: u64) -> f64 {
    let http = client(concurrency as usize * 2);
    let left = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(total));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, body, left) = (http.clone(), url.to_string(), body.clone(), left.clone());
        set.spawn(async move {
            while left
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |v| v.checked_sub(1),
                )
                .is_ok()
            {
                one(&http, &url, &body).await;
            }
        });
    }
    while tokio::time::timeout(Duration::from_secs(120), set.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    total as f64 / start.elapsed().as_secs_f64()
}

struct Row {
    name: &'static str,
    direct: (Duration, Duration),
    legs: (Duration, Duration),
    routed: (Duration, Duration),
    rps: f64,
    cpu_us: f64,
}

async fn measure(
    name: &'static str,
    protocol: &str,
    start_router: impl FnOnce(&mut Work, &str, &str) -> String,
) -> Row {
    let mut work = Work::new();
    let direct = work.sim(&format!("{name}-direct"), "both", protocol);
    let ctx = work.sim(&format!("{name}-ctx"), "context", protocol);
    let gen_ = work.sim(&format!("{name}-gen"), "generation", protocol);
    let router = start_router(&mut work, &ctx, &gen_);
    let http = client(16);
    wait_healthy(&http, &format!("http://{router}")).await;
    let (n, warmup, tokens) = (env("REQUESTS", 2000), env("WARMUP", 50), env("TOKENS", 16));
    let json_body = serde_json::json!({"model": work.model(), "prompt": "Hello world, how are you",
        "max_tokens": tokens, "ignore_eos": true, "stream": true});
    let body = Bytes::from(json_body.to_string());
    let (direct_url, routed_url) = (
        format!("http://{direct}/v1/completions"),
        format!("http://{router}/v1/completions"),
    );
    // Interleaved, so the three paths see the same machine.
    let (mut d, mut l, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + n {
        let a = one(&http, &direct_url, &body).await;
        let b = legs(&http, protocol, &ctx, &gen_, &json_body, 1_000_000 + i).await;
        let c = one(&http, &routed_url, &body).await;
        if i >= warmup {
            d.push(a);
            l.push(b);
            r.push(c);
        }
    }
    let total = env("THROUGHPUT_REQUESTS", 4000);
    let cpu_before = work.router_cpu();
    let rps = throughput(&routed_url, &body, env("CONCURRENCY", 64), total).await;
    let cpu_us = (work.router_cpu() - cpu_before) * 1e6 / total as f64;
    drop(work);
    Row {
        name,
        direct: p50_p99(d),
        legs: p50_p99(l),
        routed: p50_p99(r),
        rps,
        cpu_us,
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let mut rows = Vec::new();
    rt.block_on(async {
        rows.push(
            measure("disagg router", "trtllm", |w, ctx, gen_| {
                let cfg = w.dir.join("server_config.yaml");
                std::fs::write(
                    &cfg,
                    format!("hostname: 127.0.0.1\nport: 0\ncontext_servers: {{num_instances: 1, urls: [\"{ctx}\"]}}\ngeneration_servers: {{num_instances: 1, urls: [\"{gen_}\"]}}\n"),
                )
                .unwrap();
                let addr = w.dir.join("router.addr");
                let mut args: Vec<String> = ["router", "-c", &cfg.display().to_string(), "--report-addr", &addr.display().to_string()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if let Ok(t) = std::env::var("ROUTER_THREADS") {
                    args.extend(["--threads".to_string(), t]);
                }
                let _ = w.spawn(env!("CARGO_BIN_EXE_disagg"), &args);
                for _ in 0..200 {
                    if let Ok(a) = std::fs::read_to_string(&addr) {
                        return a;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                panic!("disagg router did not start");
            })
            .await,
        );
        if let Ok(bin) = std::env::var("VLLM_ROUTER") {
            rows.push(
                measure("vllm-router", "vllm", |w, ctx, gen_| {
                    let (p, m) = (port(), port());
                    let args: Vec<String> = vec![
                        "--host".into(), "127.0.0.1".into(), "--port".into(), p.to_string(),
                        "--vllm-pd-disaggregation".into(), "--prefill".into(), format!("http://{ctx}"),
                        "--decode".into(), format!("http://{gen_}"), "--policy".into(), "round_robin".into(),
                        "--prometheus-host".into(), "127.0.0.1".into(), "--prometheus-port".into(), m.to_string(),
                        "--worker-startup-check-interval".into(), "1".into(), "--log-level".into(), "warning".into(),
                    ];
                    let _ = w.spawn(&bin, &args);
                    format!("127.0.0.1:{p}")
                })
                .await,
            );
        }
        if let Ok(bin) = std::env::var("SMG") {
            rows.push(
                measure("sglang-router", "sglang", |w, ctx, gen_| {
                    let (p, m) = (port(), port());
                    let bootstrap = ctx.rsplit(':').next().unwrap().to_string();
                    let args: Vec<String> = vec![
                        "launch".into(), "--host".into(), "127.0.0.1".into(), "--port".into(), p.to_string(),
                        "--pd-disaggregation".into(), "--prefill".into(), format!("http://{ctx}"), bootstrap,
                        "--decode".into(), format!("http://{gen_}"), "--policy".into(), "round_robin".into(),
                        "--prometheus-host".into(), "127.0.0.1".into(), "--prometheus-port".into(), m.to_string(),
                        "--worker-startup-check-interval".into(), "1".into(), "--log-level".into(), "warn".into(),
                    ];
                    let _ = w.spawn(&bin, &args);
                    format!("127.0.0.1:{p}")
                })
                .await,
            );
        }
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "latency in µs, p50/p99; {} sequential {}-token streams per path, interleaved",
        env("REQUESTS", 2000),
        env("TOKENS", 16)
    );
    println!(
        "{:<14} {:>11} {:>11} {:>11} {:>17} {:>18} {:>11} {:>15}",
        "router",
        "direct",
        "two legs",
        "routed",
        "added vs direct",
        "added vs two legs",
        "req/s c64",
        "router CPU/req"
    );
    for r in &rows {
        let pair = |x: (Duration, Duration)| format!("{:.0}/{:.0}", us(x.0), us(x.1));
        let diff = |a: (Duration, Duration), b: (Duration, Duration)| {
            format!("{:+.0}/{:+.0}", us(a.0) - us(b.0), us(a.1) - us(b.1))
        };
        println!(
            "{:<14} {:>11} {:>11} {:>11} {:>17} {:>18} {:>11.0} {:>12.0} µs",
            r.name,
            pair(r.direct),
            pair(r.legs),
            pair(r.routed),
            diff(r.routed, r.direct),
            diff(r.routed, r.legs),
            r.rps,
            r.cpu_us
        );
    }
}
