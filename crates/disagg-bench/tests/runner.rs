//! The load generator against simulators on 127.0.0.1.

use std::time::Duration;

use disagg_bench::arrival::schedule;
use disagg_bench::dataset::random_requests;
use disagg_bench::metrics::compute;
use disagg_bench::runner::{Endpoint, Load, RunSpec, run};
use disagg_bench::timeline::Timeline;
use disagg_bench::timeline::TokenSource;
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::TestSim;

async fn sim(stream_interval: u32) -> TestSim {
    TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel::zero(),
            stream_interval,
            ..SimConfig::default()
        },
        Limits::default(),
    )
    .await
}

async fn go(spec: &RunSpec, reqs: &[disagg_bench::dataset::Request]) -> Vec<Timeline> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let out = run(
        spec,
        reqs,
        &tokio_util::sync::CancellationToken::new(),
        &done,
    )
    .await;
    assert!(!out.interrupted);
    assert_eq!(
        done.load(std::sync::atomic::Ordering::Relaxed),
        out.timelines.len()
    );
    out.timelines
}

fn spec(url: String, load: Load) -> RunSpec {
    RunSpec {
        base_url: url,
        endpoint: Endpoint::Completions,
        model: "sim".into(),
        stream: true,
        ignore_eos: true,
        load,
        offsets: Vec::new(),
        timeout: Duration::from_secs(30),
        keep_text: false,
        think_time: Duration::ZERO,
        words: false,
    }
}

#[tokio::test]
async fn closed_loop_streaming_counts_every_token() {
    let s = sim(1).await;
    let reqs = random_requests(16, 32, 8, 0.0, 32_000, 1);
    let t = go(&spec(s.url(), Load::Concurrency(4)), &reqs).await;
    let m = compute(&t, &[99.0], None);
    assert_eq!((m.completed, m.failed), (16, 0));
    assert_eq!(m.total_output_tokens, 16 * 8);
    assert_eq!(m.total_input_tokens, 16 * 32);
    assert_eq!(m.output_token_source, TokenSource::Usage);
    assert!(
        t.iter().all(|x| x.chunks.len() == 8),
        "one chunk per token at stream_interval 1"
    );
    assert_eq!(m.itl_ms.count, 16 * 7);
    assert_eq!(m.tpot_ms.count, 16);
}

#[tokio::test]
async fn the_generated_text_is_kept_for_a_tokenizer() {
    let s = sim(3).await;
    let reqs = random_requests(2, 8, 7, 0.0, 32_000, 8);
    let mut keep = spec(s.url(), Load::Concurrency(2));
    keep.keep_text = true;
    let t = go(&keep, &reqs).await;
    for x in &t {
        // the simulator writes one word per token
        assert_eq!(
            x.output_text.as_deref().unwrap().split_whitespace().count(),
            7
        );
    }
}

#[tokio::test]
async fn multi_token_chunks_keep_token_counts_exact() {
    let s = sim(4).await;
    let reqs = random_requests(4, 16, 9, 0.0, 32_000, 2);
    let t = go(&spec(s.url(), Load::Concurrency(2)), &reqs).await;
    let m = compute(&t, &[99.0], None);
    assert_eq!(m.total_output_tokens, 36);
    // first token alone, then 4 + 4: three chunks, two gaps per request
    assert!(t.iter().all(|x| x.chunks.len() == 3), "{:?}", t[0].chunks);
    assert_eq!(m.itl_ms.count, 8);
}

#[tokio::test]
async fn non_streaming_chat_and_rate_mode() {
    let s = sim(1).await;
    let reqs = random_requests(6, 8, 4, 0.0, 32_000, 3);
    let mut chat = spec(s.url(), Load::Concurrency(3));
    chat.endpoint = Endpoint::Chat;
    chat.stream = false;
    let m = compute(&go(&chat, &reqs).await, &[99.0], None);
    assert_eq!((m.completed, m.total_output_tokens), (6, 24));

    let mut rate = spec(
        s.url(),
        Load::Rate {
            rate: 200.0,
            burstiness: 1.0,
        },
    );
    rate.offsets = schedule(reqs.len(), 200.0, 1.0, 9);
    let t = go(&rate, &reqs).await;
    assert!(
        t.iter()
            .zip(&rate.offsets)
            .all(|(x, o)| (x.intended.as_secs_f64() - o).abs() < 1e-9)
    );
    assert!(t.iter().all(|x| x.sent >= x.intended));
    assert_eq!(compute(&t, &[99.0], None).completed, 6);
}

#[tokio::test]
async fn server_errors_are_recorded_per_request() {
    let s = sim(1).await;
    let reqs = random_requests(3, 8, 4, 0.0, 32_000, 4);
    let mut bad = spec(s.url(), Load::Concurrency(1));
    bad.model = "nope".into();
    let m = compute(&go(&bad, &reqs).await, &[99.0], None);
    assert_eq!((m.completed, m.failed), (0, 3));
    assert!(m.errors[0].0.starts_with("HTTP 404"), "{:?}", m.errors);

    let dead = spec("http://127.0.0.1:9".into(), Load::Concurrency(2));
    let m = compute(&go(&dead, &reqs).await, &[99.0], None);
    assert_eq!(m.failed, 3);
    assert!(
        m.errors[0].0.starts_with("request failed"),
        "{:?}",
        m.errors
    );
}

#[tokio::test]
async fn an_interrupted_run_keeps_what_finished_and_lets_go_of_the_rest() {
    let slow = TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel {
                decode_step_base_ms: 5.0,
                ..CostModel::zero()
            },
            ..SimConfig::default()
        },
        Limits::default(),
    )
    .await;
    // Two short requests finish; the long ones are cut.
    let mut reqs = random_requests(2, 8, 2, 0.0, 32_000, 5);
    reqs.extend(random_requests(4, 8, 2000, 0.0, 32_000, 6));
    let stop = tokio_util::sync::CancellationToken::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let spec = spec(slow.url(), Load::Concurrency(2));
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let started = std::time::Instant::now();
    let out = run(&spec, &reqs, &stop, &done).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(out.interrupted);
    assert_eq!(out.timelines.len(), 2, "the two short requests");
    assert!(out.timelines.iter().all(Timeline::succeeded));
    let http = disagg_test_support::Http::new();
    for _ in 0..100 {
        let m = http.get(&format!("{}/metrics", slow.url())).await;
        if disagg_test_support::metric(&m.body, "disagg_sim_requests_running") == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server kept generating for requests the client dropped");
}
