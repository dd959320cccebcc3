//! Prefix caching over HTTP: a repeated prefix costs no prefill, `/metrics` counts the hits, and
//! `POST /kv_cache_events` publishes the blocks as upstream's workers do.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use disagg_protocol::kv_cache::{block_hashes, full_block_hashes};
use disagg_sim::prefix_cache::CacheSettings;
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, TestSim, metric};
use serde_json::{Value, json};

/// 10 000 prompt tokens/s, 5 ms a step: a 2048-token prefill takes 210 ms, 64 tokens 11 ms.
fn cfg(kv_cache: CacheSettings) -> SimConfig {
    SimConfig {
        role: Role::Both,
        cost: CostModel {
            prefill_tokens_per_s: 10_000.0,
            decode_step_base_ms: 5.0,
            ..CostModel::zero()
        },
        kv_cache,
        ..SimConfig::default()
    }
}

/// 2048 tokens: `shared` tokens common to the group, then this prompt's own.
fn prompt(own: u32, shared: usize) -> Vec<u32> {
    (0..2048u32)
        .map(|i| {
            if (i as usize) < shared {
                10 + i
            } else {
                100_000 * own + i
            }
        })
        .collect()
}

/// Send one request; the server's own TTFT (from `/perf_metrics`), seconds.
async fn ttft(http: &Http, s: &TestSim, prompt: &[u32]) -> f64 {
    let r = http
        .post(
            &format!("{}/v1/completions", s.url()),
            &json!({"model": "sim", "prompt": prompt, "max_tokens": 2, "ignore_eos": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let perf = http.get(&format!("{}/perf_metrics", s.url())).await.json();
    let rec = &perf[0];
    rec["first_token_time"].as_f64().unwrap() - rec["arrival_time"].as_f64().unwrap()
}

async fn counter(http: &Http, s: &TestSim, name: &str) -> f64 {
    let m = http.get(&format!("{}/metrics", s.url())).await;
    metric(&m.body, name).unwrap()
}

#[tokio::test]
async fn a_repeated_prefix_is_a_hit_and_costs_no_prefill() {
    let s = TestSim::start(
        cfg(CacheSettings {
            event_buffer_max_size: 64,
            ..CacheSettings::default()
        }),
        Limits::default(),
    )
    .await;
    let http = Http::new();
    let first = prompt(1, 1984);
    let cold = ttft(&http, &s, &first).await;
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefill_tokens_total").await,
        2048.0
    );
    // The same 1984-token prefix (62 blocks of 32) with another suffix: 64 tokens to prefill.
    let warm = ttft(&http, &s, &prompt(2, 1984)).await;
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefill_tokens_total").await,
        2048.0 + 64.0
    );
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefix_cache_hits_total").await,
        1984.0
    );
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefix_cache_queries_total").await,
        4096.0
    );
    assert_eq!(
        counter(&http, &s, "disagg_sim_kv_cache_reused_blocks_total").await,
        62.0
    );
    assert_eq!(
        counter(&http, &s, "disagg_sim_kv_cache_missed_blocks_total").await,
        63.0 + 1.0
    );
    assert!(counter(&http, &s, "disagg_sim_kv_cache_cached_tokens").await > 0.0);
    // The model says 210 ms cold and 11.4 ms warm; allow for a busy machine.
    assert!(cold >= 0.2, "cold TTFT {cold}");
    assert!(warm < cold / 4.0, "warm TTFT {warm} vs cold {cold}");

    // The events name the blocks by the hashes a router computes for the same prompt.
    let events = http
        .post(&format!("{}/kv_cache_events", s.url()), &json!({}))
        .await
        .json();
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["data"]["type"], "created");
    assert_eq!(events[0]["event_id"], 0);
    let stored: Vec<u64> = events
        .iter()
        .filter(|e| e["data"]["type"] == "stored")
        .flat_map(|e| e["data"]["blocks"].as_array().unwrap().clone())
        .map(|b| b["block_hash"].as_u64().unwrap())
        .collect();
    let mut expected = full_block_hashes(&first, 32);
    expected.push(full_block_hashes(&prompt(2, 1984), 32)[62]);
    assert_eq!(stored, expected);
    assert_eq!(block_hashes(&first, 32)[..63], expected[..63]);
    let second = &events
        .iter()
        .filter(|e| e["data"]["type"] == "stored")
        .nth(1)
        .unwrap()["data"];
    assert_eq!(
        second["parent_hash"], expected[61],
        "the new block hangs off the shared ones"
    );
    assert_eq!(events[1]["window_size"], 131_072);
    let again = http
        .post(&format!("{}/kv_cache_events", s.url()), &json!({}))
        .await
        .json();
    assert_eq!(
        again,
        Value::Array(Vec::new()),
        "events are drained on read"
    );
    let info = http.get(&format!("{}/server_info", s.url())).await.json();
    assert_eq!(info["kv_cache_hash_algo"], "v1_block_key");
}

#[tokio::test]
async fn enable_block_reuse_false_turns_it_off_and_no_buffer_means_no_events() {
    let s = TestSim::start(
        cfg(CacheSettings {
            enable_block_reuse: false,
            ..CacheSettings::default()
        }),
        Limits::default(),
    )
    .await;
    let http = Http::new();
    ttft(&http, &s, &prompt(1, 1984)).await;
    ttft(&http, &s, &prompt(2, 1984)).await;
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefill_tokens_total").await,
        4096.0
    );
    assert_eq!(
        counter(&http, &s, "disagg_sim_prefix_cache_hits_total").await,
        0.0
    );
    let events = http
        .post(&format!("{}/kv_cache_events", s.url()), &json!({}))
        .await
        .json();
    assert_eq!(events, Value::Array(Vec::new()));
}

/// `usage.prompt_tokens_details.cached_tokens`, as OpenAI and vLLM report it: 0 the first time;
/// for a repeat, the prompt's whole blocks that were cached (2000 tokens = 62 blocks of 32 and a
/// partial one: 1984), in a plain response, in a stream's usage chunk and for chat.
#[tokio::test]
async fn a_repeated_prompt_reports_its_cached_block_aligned_prefix_in_usage() {
    let s = TestSim::start(cfg(CacheSettings::default()), Limits::default()).await;
    let http = Http::new();
    let url = format!("{}/v1/completions", s.url());
    let long: Vec<u32> = (0..2000u32).map(|i| 7 + i).collect();
    let ask = |stream: bool| {
        json!({"model": "sim", "prompt": long, "max_tokens": 2, "ignore_eos": true,
               "stream": stream, "stream_options": {"include_usage": stream}})
    };
    let cached = |usage: &Value| usage["prompt_tokens_details"]["cached_tokens"].as_u64();
    let first = http.post(&url, &ask(false)).await.json();
    assert_eq!(cached(&first["usage"]), Some(0), "{first}");
    let again = http.post(&url, &ask(false)).await.json();
    assert_eq!(again["usage"]["prompt_tokens"], 2000);
    assert_eq!(cached(&again["usage"]), Some(1984), "{again}");
    let streamed = http.post(&url, &ask(true)).await.events();
    let usage: Value = streamed
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .find(|c| !c["usage"].is_null())
        .unwrap();
    assert_eq!(cached(&usage["usage"]), Some(1984), "{usage}");

    // Chat: the templated prompt, cached from the second time on.
    let chat = format!("{}/v1/chat/completions", s.url());
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let body = json!({"model": "sim", "max_tokens": 2,
                      "messages": [{"role": "user", "content": words.join(" ")}]});
    let cold = http.post(&chat, &body).await.json();
    assert_eq!(cached(&cold["usage"]), Some(0), "{cold}");
    let warm = http.post(&chat, &body).await.json();
    let prompt = warm["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(cached(&warm["usage"]), Some(prompt / 32 * 32), "{warm}");
}
