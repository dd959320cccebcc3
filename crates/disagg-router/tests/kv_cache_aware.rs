//! `kv_cache_aware` routing and conditional disaggregation in front of simulators that publish
//! KV cache events, on 127.0.0.1.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::time::Duration;

use disagg_router::{KvAwareArgs, Policy, PromptTokenizer, Router, RouterSettings};
use disagg_sim::prefix_cache::CacheSettings;
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, TestSim, metric};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct TestRouter {
    url: String,
    cancel: CancellationToken,
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn router(settings: RouterSettings) -> TestRouter {
    let r = Router::bind("127.0.0.1:0", settings).await.unwrap();
    let url = format!("http://{}", r.local_addr());
    let cancel = CancellationToken::new();
    tokio::spawn(r.run(cancel.clone()));
    let http = Http::new();
    for _ in 0..200 {
        if http.get(&format!("{url}/health")).await.status == 200 {
            return TestRouter { url, cancel };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("router at {url} never became healthy");
}

async fn sim(role: Role) -> TestSim {
    let cfg = SimConfig {
        role,
        cost: CostModel::zero(),
        kv_cache: CacheSettings {
            event_buffer_max_size: 4096,
            ..CacheSettings::default()
        },
        ..SimConfig::default()
    };
    TestSim::start(cfg, Limits::default()).await
}

async fn value(http: &Http, url: &str, name: &str) -> f64 {
    let m = http.get(&format!("{url}/metrics")).await;
    metric(&m.body, name).unwrap_or(0.0)
}

/// Group `g`'s prompt number `k`: 256 shared tokens (8 blocks of 32), then 32 of its own.
fn prompt(g: u32, k: u32) -> Vec<u32> {
    (0..288)
        .map(|i| {
            if i < 256 {
                g * 1000 + i
            } else {
                900_000 + k * 1000 + i
            }
        })
        .collect()
}

const KV: Policy = Policy::KvCacheAware(KvAwareArgs {
    max_batch_size: 64,
    tokens_per_block: 32,
    backfill_block_hashes_on_finish: false,
});

/// Prompt tokens the context servers found cached, over what a perfect router would get
/// (every repeat of a prefix a hit), for 8 groups × 4 prompts in a shuffled order.
async fn hit_share(policy: Policy) -> f64 {
    let ctx = [
        sim(Role::Context).await,
        sim(Role::Context).await,
        sim(Role::Context).await,
        sim(Role::Context).await,
    ];
    let gen_ = sim(Role::Generation).await;
    let r = router(RouterSettings {
        context: ctx.iter().map(|s| s.addr.to_string()).collect(),
        generation: vec![gen_.addr.to_string()],
        context_policy: policy,
        health_check_interval: Duration::from_millis(100),
        ..RouterSettings::default()
    })
    .await;
    let http = Http::new();
    let mut order: Vec<(u32, u32)> = (0..8).flat_map(|g| (0..4).map(move |k| (g, k))).collect();
    // A fixed shuffle (a stride coprime with 32), so no policy is helped by the order.
    order = (0..32).map(|i| order[(i * 13 + 5) % 32]).collect();
    for (n, (g, k)) in order.into_iter().enumerate() {
        let resp = http
            .post(
                &format!("{}/v1/completions", r.url),
                &json!({"model": "sim", "prompt": prompt(g, k), "max_tokens": 2, "ignore_eos": true}),
            )
            .await;
        assert_eq!(resp.status, 200);
        if matches!(policy, Policy::KvCacheAware(_)) {
            // The router reads the events after a leg finished; wait for it, as a client
            // arriving a moment later would find.
            for _ in 0..100 {
                if value(&http, &r.url, "disagg_router_kv_events_total").await > 0.0
                    && value(&http, &r.url, "disagg_router_kv_prompt_tokens_total").await
                        >= 288.0 * (n + 1) as f64
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut hits = 0.0;
    for s in &ctx {
        hits += value(&http, &s.url(), "disagg_sim_prefix_cache_hits_total").await;
    }
    let ideal = 8.0 * 3.0 * 256.0;
    hits / ideal
}

#[tokio::test]
async fn kv_cache_aware_sends_repeats_to_the_worker_holding_the_prefix() {
    let kv = hit_share(KV).await;
    let rr = hit_share(Policy::RoundRobin).await;
    assert!(
        kv >= 0.95,
        "kv_cache_aware reached {kv:.2} of the ideal hits"
    );
    assert!(rr < 0.6, "round robin reached {rr:.2} of the ideal hits");
}

#[tokio::test]
async fn conditional_disaggregation_skips_the_context_leg_for_a_cached_prefix() {
    let (c, g) = (sim(Role::Context).await, sim(Role::Generation).await);
    let r = router(RouterSettings {
        context: vec![c.addr.to_string()],
        generation: vec![g.addr.to_string()],
        generation_policy: KV,
        max_local_prefill_length: Some(64),
        health_check_interval: Duration::from_millis(100),
        ..RouterSettings::default()
    })
    .await;
    let http = Http::new();
    let send = |p: Vec<u32>| {
        let http = &http;
        let url = format!("{}/v1/completions", r.url);
        async move {
            let resp = http
                .post(
                    &url,
                    &json!({"model": "sim", "prompt": p, "max_tokens": 4, "ignore_eos": true}),
                )
                .await;
            assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
            resp.json()
        }
    };
    let first = send(prompt(1, 0)).await;
    assert_eq!(first["usage"]["completion_tokens"], 4);
    // The generation server stored the handed-off blocks; wait until the router read them.
    for _ in 0..200 {
        if value(&http, &r.url, "disagg_router_kv_events_total").await >= 8.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let requests = |s: &TestSim| {
        let url = s.url();
        let http = &http;
        async move { value(http, &url, "disagg_sim_requests_total").await }
    };
    assert_eq!((requests(&c).await, requests(&g).await), (1.0, 1.0));
    // 256 of 288 tokens cached there: 32 ≤ 64 left, so the generation server prefills it.
    let second = send(prompt(1, 1)).await;
    assert_eq!(second["usage"]["completion_tokens"], 4);
    assert_eq!((requests(&c).await, requests(&g).await), (1.0, 2.0));
    assert_eq!(
        value(&http, &r.url, "disagg_router_local_prefill_total").await,
        1.0
    );
    assert_eq!(
        value(&http, &g.url(), "disagg_sim_prefix_cache_hits_total").await,
        256.0,
        "the local prefill reused the handed-off blocks"
    );
    // Nothing cached for another group: the context leg runs.
    send(prompt(2, 0)).await;
    assert_eq!((requests(&c).await, requests(&g).await), (2.0, 3.0));
}

/// Group `g`'s text prompt number `k`: 256 shared words, then 32 of its own.
fn text_prompt(g: u32, k: u32) -> String {
    let shared = (0..256).map(|i| format!("g{g}w{i}"));
    let own = (0..32).map(|i| format!("k{k}g{g}o{i}"));
    shared.chain(own).collect::<Vec<_>>().join(" ")
}

/// [`hit_share`] for text prompts (completions' `prompt`, or one chat message), routed with
/// `tokenizer`; also the router's count of requests it could not tokenize.
async fn text_hit_share(tokenizer: Option<PromptTokenizer>, chat: bool) -> (f64, f64) {
    let ctx = [
        sim(Role::Context).await,
        sim(Role::Context).await,
        sim(Role::Context).await,
    ];
    let gen_ = sim(Role::Generation).await;
    let r = router(RouterSettings {
        context: ctx.iter().map(|s| s.addr.to_string()).collect(),
        generation: vec![gen_.addr.to_string()],
        context_policy: KV,
        health_check_interval: Duration::from_millis(100),
        tokenizer,
        ..RouterSettings::default()
    })
    .await;
    let http = Http::new();
    // Four groups in turn over three workers: by load alone (ties in turn) a group meets its
    // worker again only every third round.
    let order: Vec<(u32, u32)> = (0..16).map(|i| (i % 4, i / 4)).collect();
    for (g, k) in order {
        let (path, body) = if chat {
            let messages = json!([{"role": "user", "content": text_prompt(g, k)}]);
            (
                "chat/completions",
                json!({"model": "sim", "messages": messages, "max_tokens": 2}),
            )
        } else {
            (
                "completions",
                json!({"model": "sim", "prompt": text_prompt(g, k), "max_tokens": 2}),
            )
        };
        let resp = http.post(&format!("{}/v1/{path}", r.url), &body).await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        // Time for the router to read the worker's new blocks, as a later client would find.
        let events = value(&http, &r.url, "disagg_router_kv_events_total").await;
        for _ in 0..100 {
            if value(&http, &r.url, "disagg_router_kv_events_total").await > events {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut hits = 0.0;
    for s in &ctx {
        hits += value(&http, &s.url(), "disagg_sim_prefix_cache_hits_total").await;
    }
    let untokenized = value(&http, &r.url, "disagg_router_untokenized_requests_total").await;
    (hits / (4.0 * 3.0 * 256.0), untokenized)
}

/// Text prompts sharing a prefix go to the worker holding it once the router tokenizes them as
/// the sim does (completions and chat alike); without a tokenizer they go by load, counted.
#[tokio::test]
async fn text_prompts_with_a_shared_prefix_go_to_the_worker_holding_it() {
    for chat in [false, true] {
        let (share, untokenized) = text_hit_share(Some(PromptTokenizer::Words), chat).await;
        assert!(share >= 0.95, "chat {chat}: {share:.2} of the ideal hits");
        assert_eq!(untokenized, 0.0);
    }
    let (share, untokenized) = text_hit_share(None, false).await;
    assert_eq!(untokenized, 16.0, "every text request is counted");
    assert!(share < 0.5, "by load alone: {share:.2} of the ideal hits");
}
