//! The simulator over real HTTP on 127.0.0.1: endpoints, streaming, the three hand-offs,
//! disconnects and error bodies.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::time::Duration;

use disagg_protocol::{ChatChunk, CompletionResponse};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Protocol, Role, SimConfig};
use disagg_test_support::{Http, TestSim, metric};
use serde_json::{Value, json};

fn cfg(role: Role) -> SimConfig {
    SimConfig {
        role,
        cost: CostModel::zero(),
        ..SimConfig::default()
    }
}

async fn sim(role: Role) -> TestSim {
    TestSim::start(cfg(role), Limits::default()).await
}

fn completion_chunks(events: &[disagg_protocol::SseEvent]) -> Vec<CompletionResponse> {
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "stream ends in [DONE]"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[tokio::test]
async fn streaming_completion_has_exact_usage_and_interval_chunks() {
    let s = TestSim::start(
        SimConfig {
            stream_interval: 4,
            ..cfg(Role::Both)
        },
        Limits::default(),
    )
    .await;
    let http = Http::new();
    let r = http
        .post(
            &format!("{}/v1/completions", s.url()),
            &json!({"model":"sim","prompt":[5,6,7,8],"max_tokens":10,"ignore_eos":true,"stream":true,
                    "stream_options":{"include_usage":true}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/event-stream");
    let chunks = completion_chunks(&r.events());
    // First token alone, then 4 + 4, then the last 1; then the usage chunk.
    let words: Vec<usize> = chunks
        .iter()
        .filter(|c| !c.choices.is_empty())
        .map(|c| c.choices[0].text.split_whitespace().count())
        .collect();
    assert_eq!(words, [1, 4, 4, 1]);
    let finish: Vec<Option<&str>> = chunks
        .iter()
        .filter(|c| !c.choices.is_empty())
        .map(|c| c.choices[0].finish_reason.as_deref())
        .collect();
    assert_eq!(finish, [None, None, None, Some("length")]);
    let usage = chunks.last().unwrap().usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (4, 10, 14)
    );
}

#[tokio::test]
async fn non_streaming_completion_and_chat() {
    let s = sim(Role::Both).await;
    let http = Http::new();
    let r = http
        .post(
            &format!("{}/v1/completions", s.url()),
            &json!({"model":"sim","prompt":"a b c d e","max_tokens":3}),
        )
        .await;
    assert_eq!(r.status, 200);
    let body: CompletionResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.choices.len(), 1);
    assert_eq!(body.choices[0].text.split_whitespace().count(), 3);
    assert_eq!(body.choices[0].token_ids.as_ref().unwrap().len(), 3);
    assert_eq!(body.usage.unwrap().prompt_tokens, 5);

    let r = http
        .post(
            &format!("{}/v1/chat/completions", s.url()),
            &json!({"model":"sim","messages":[{"role":"user","content":"hello there"}],"max_completion_tokens":2}),
        )
        .await;
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // <|user|> hello there <|assistant|>
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    let r = http
        .post(
            &format!("{}/v1/chat/completions", s.url()),
            &json!({"model":"sim","messages":[{"role":"user","content":"x"}],"max_tokens":3,"stream":true}),
        )
        .await;
    let events = r.events();
    assert!(events.last().unwrap().is_done());
    let chunks: Vec<ChatChunk> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c.choices[0].delta.content.clone())
        .collect();
    assert_eq!(text.split_whitespace().count(), 3);
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason.as_deref(),
        Some("length")
    );
}

#[tokio::test]
async fn models_health_and_probes() {
    let s = sim(Role::Generation).await;
    let http = Http::new();
    assert_eq!(http.get(&format!("{}/health", s.url())).await.status, 200);
    assert_eq!(
        http.get(&format!("{}/v1/models", s.url())).await.json()["data"][0]["id"],
        "sim"
    );
    let info = http.get(&format!("{}/server_info", s.url())).await.json();
    assert_eq!(info["role"], "generation");
    assert_eq!(
        http.get(&format!("{}/get_model_info", s.url()))
            .await
            .json()["model_path"],
        "sim"
    );
    let m = http.get(&format!("{}/metrics", s.url())).await;
    assert_eq!(metric(&m.body, "disagg_sim_requests_running"), Some(0.0));
}

/// context_only → generation_only, as a TensorRT-LLM coordinator does it.
async fn handoff(
    ctx: &TestSim,
    gen_url: &str,
    prompt: Value,
    mutate: impl Fn(&mut Value),
) -> (Value, disagg_test_support::Reply) {
    let http = Http::new();
    let c = http
        .post(
            &format!("{}/v1/completions", ctx.url()),
            &json!({"model":"sim","prompt":prompt,"max_tokens":6,"stream":false,
                    "disaggregated_params":{"request_type":"context_only","disagg_request_id":77}}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    let c = c.json();
    let mut params = c["choices"][0]["disaggregated_params"].clone();
    params["request_type"] = json!("generation_only");
    let mut body = json!({"model":"sim","prompt":c["prompt_token_ids"],"max_tokens":6,"stream":true,
                          "disaggregated_params":params});
    mutate(&mut body);
    let g = http.post(&format!("{gen_url}/v1/completions"), &body).await;
    (c, g)
}

#[tokio::test]
async fn trtllm_handoff_round_trip_matches_an_aggregated_run() {
    let ctx = sim(Role::Context).await;
    let gen_ = sim(Role::Generation).await;
    let (c, g) = handoff(&ctx, &gen_.url(), json!("the quick brown fox"), |_| {}).await;
    let choice = &c["choices"][0];
    assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    assert_eq!(choice["finish_reason"], "length");
    let p = &choice["disaggregated_params"];
    assert_eq!(p["request_type"], "context_only");
    assert!(p["ctx_request_id"].is_u64());
    assert_eq!(p["disagg_request_id"], 77);
    assert_eq!(p["first_gen_tokens"].as_array().unwrap().len(), 1);
    assert!(p["encoded_opaque_state"].is_string());
    assert_eq!(c["prompt_token_ids"].as_array().unwrap().len(), 4);
    assert_eq!(c["usage"]["completion_tokens"], 1);

    assert_eq!(g.status, 200);
    let text: String = completion_chunks(&g.events())
        .iter()
        .map(|c| c.choices[0].text.clone())
        .collect();
    // The first generated word is the context's token; the whole output equals what one
    // aggregated server produces for the same prompt.
    assert!(text.starts_with(choice["text"].as_str().unwrap()));
    let agg = sim(Role::Both).await;
    let a = Http::new()
        .post(
            &format!("{}/v1/completions", agg.url()),
            &json!({"model":"sim","prompt":"the quick brown fox","max_tokens":6}),
        )
        .await
        .json();
    assert_eq!(text, a["choices"][0]["text"].as_str().unwrap());
    // The generation server never prefilled.
    let m = Http::new().get(&format!("{}/metrics", gen_.url())).await;
    assert_eq!(
        metric(&m.body, "disagg_sim_prefill_tokens_total"),
        Some(0.0)
    ); // Both legs show up in /perf_metrics, joined by the context's request id; reading drains.
    let ctx_perf = Http::new()
        .get(&format!("{}/perf_metrics", ctx.url()))
        .await
        .json();
    let gen_perf = Http::new()
        .get(&format!("{}/perf_metrics", gen_.url()))
        .await
        .json();
    assert_eq!(ctx_perf[0]["leg"], "context");
    assert_eq!(gen_perf[0]["leg"], "generation");
    assert_eq!(gen_perf[0]["ctx_request_id"], ctx_perf[0]["ctx_request_id"]);
    assert_eq!(gen_perf[0]["output_tokens"], 6);
    assert!(gen_perf[0]["last_token_time"].as_f64() >= gen_perf[0]["first_token_time"].as_f64());
    let again = Http::new()
        .get(&format!("{}/perf_metrics", gen_.url()))
        .await
        .json();
    assert_eq!(again, json!([]));
}

#[tokio::test]
async fn forged_or_missing_handoffs_are_refused() {
    let ctx = sim(Role::Context).await;
    let gen_ = sim(Role::Generation).await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "another prompt",
            Box::new(|b: &mut Value| b["prompt"] = json!([1, 2, 3, 4])),
        ),
        (
            "another first token",
            Box::new(|b: &mut Value| b["disaggregated_params"]["first_gen_tokens"] = json!([1])),
        ),
        (
            "another request id",
            Box::new(|b: &mut Value| b["disaggregated_params"]["ctx_request_id"] = json!(999_999)),
        ),
        (
            "no opaque state",
            Box::new(|b: &mut Value| {
                b["disaggregated_params"]["encoded_opaque_state"] = Value::Null
            }),
        ),
        (
            "garbage state",
            Box::new(|b: &mut Value| {
                b["disaggregated_params"]["encoded_opaque_state"] = json!("AAAA")
            }),
        ),
    ];
    for (name, mutate) in cases {
        let (_, g) = handoff(&ctx, &gen_.url(), json!("one two three four"), mutate).await;
        assert_eq!(g.status, 400, "{name}");
        let e = g.json();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{name}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("hand"),
            "{name}: {e}"
        );
    }
    // A generation server refuses a context leg, and the other way round.
    let http = Http::new();
    let r = http
        .post(&format!("{}/v1/completions", gen_.url()),
              &json!({"model":"sim","prompt":"x","disaggregated_params":{"request_type":"context_only"}}))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn synthetic_handoffs_only_in_gen_only_benchmark_mode() {
    let strict = sim(Role::Generation).await;
    let lenient = TestSim::start(
        SimConfig {
            accept_synthetic_handoff: true,
            ..cfg(Role::Generation)
        },
        Limits::default(),
    )
    .await;
    let body = json!({"model":"sim","prompt":[1,2,3],"max_tokens":4,"ignore_eos":true,
        "disaggregated_params":{"request_type":"generation_only","first_gen_tokens":[7],"ctx_request_id":1,"encoded_opaque_state":null}});
    let http = Http::new();
    assert_eq!(
        http.post(&format!("{}/v1/completions", strict.url()), &body)
            .await
            .status,
        400
    );
    let ok = http
        .post(&format!("{}/v1/completions", lenient.url()), &body)
        .await
        .json();
    assert_eq!(ok["choices"][0]["token_ids"][0], 7);
    assert_eq!(ok["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn vllm_kv_transfer_params_round_trip() {
    let mk = |role| SimConfig {
        protocol: Protocol::Vllm,
        ..cfg(role)
    };
    let p = TestSim::start(mk(Role::Context), Limits::default()).await;
    let d = TestSim::start(mk(Role::Generation), Limits::default()).await;
    let http = Http::new();
    let pre = http
        .post(
            &format!("{}/v1/completions", p.url()),
            &json!({"model":"sim","prompt":"hello world","max_tokens":1,"stream":false,
                      "kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false}}),
        )
        .await
        .json();
    let kv = pre["kv_transfer_params"].clone();
    assert_eq!(kv["do_remote_prefill"], true);
    let body = json!({"model":"sim","prompt":"hello world","max_tokens":5,"stream":true,"kv_transfer_params":kv});
    let r = http
        .post(&format!("{}/v1/completions", d.url()), &body)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.events().last().unwrap().is_done());
    let mut forged = body.clone();
    forged["prompt"] = json!("hello there");
    assert_eq!(
        http.post(&format!("{}/v1/completions", d.url()), &forged)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn sglang_decode_waits_for_its_prefill_room() {
    let mk = |role| SimConfig {
        protocol: Protocol::Sglang,
        bootstrap_timeout: Duration::from_secs(5),
        cost: CostModel {
            decode_step_base_ms: 50.0,
            ..CostModel::zero()
        },
        ..cfg(role)
    };
    let p = TestSim::start(mk(Role::Context), Limits::default()).await;
    let d = TestSim::start(mk(Role::Generation), Limits::default()).await;
    let body = json!({"model":"sim","prompt":"a b c","max_tokens":3,"stream":true,
               "bootstrap_host":"127.0.0.1","bootstrap_port":p.addr.port(),"bootstrap_room":12345});
    let http = Http::new();
    let (p_url, d_url) = (
        format!("{}/v1/completions", p.url()),
        format!("{}/v1/completions", d.url()),
    );
    // Both legs at once, as sglang-router sends them.
    let (pre, dec) = tokio::join!(http.post(&p_url, &body), http.post(&d_url, &body));
    assert_eq!(pre.status, 200);
    assert_eq!(dec.status, 200, "{}", String::from_utf8_lossy(&dec.body));
    let chunks = completion_chunks(&dec.events());
    let words: usize = chunks
        .iter()
        .map(|c| c.choices[0].text.split_whitespace().count())
        .sum();
    assert_eq!(words, 3);
    // A room no prefill server ever ran times out with a clear error.
    let mut lonely = body.clone();
    lonely["bootstrap_room"] = json!(999);
    let d2 = TestSim::start(
        SimConfig {
            bootstrap_timeout: Duration::from_millis(200),
            ..mk(Role::Generation)
        },
        Limits::default(),
    )
    .await;
    let r = http
        .post(&format!("{}/v1/completions", d2.url()), &lonely)
        .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_slot_and_kv_at_once() {
    let slow = SimConfig {
        cost: CostModel {
            decode_step_base_ms: 20.0,
            ..CostModel::zero()
        },
        ..cfg(Role::Both)
    };
    let s = TestSim::start(slow, Limits::default()).await;
    let http = Http::new();
    let mut resp = http
        .post_streaming(
            &format!("{}/v1/completions", s.url()),
            &json!({"model":"sim","prompt":[1,2,3],"max_tokens":10000,"stream":true}),
        )
        .await;
    let first = http_body_util::BodyExt::frame(resp.body_mut()).await;
    assert!(first.is_some());
    let m = http.get(&format!("{}/metrics", s.url())).await;
    assert_eq!(metric(&m.body, "disagg_sim_requests_running"), Some(1.0));
    assert!(metric(&m.body, "disagg_sim_kv_cache_used_tokens").unwrap() > 10_000.0);
    drop(resp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let m = http.get(&format!("{}/metrics", s.url())).await;
        if metric(&m.body, "disagg_sim_requests_running") == Some(0.0) {
            assert_eq!(
                metric(&m.body, "disagg_sim_kv_cache_used_tokens"),
                Some(0.0)
            );
            assert_eq!(
                metric(&m.body, "disagg_sim_requests_cancelled_total"),
                Some(1.0)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot not freed after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_requests_get_openai_error_bodies() {
    let s = TestSim::start(
        SimConfig {
            max_seq_len: 100,
            ..cfg(Role::Both)
        },
        Limits::default(),
    )
    .await;
    let http = Http::new();
    let url = format!("{}/v1/completions", s.url());
    let cases = [
        ("{\"model\":\"sim\"", 400, "invalid request body"),
        ("{\"model\":\"sim\"}", 400, "missing field `prompt`"),
        (
            "{\"model\":\"sim\",\"prompt\":\"a\",\"max_tokens\":0}",
            400,
            "max_tokens must be at least 1",
        ),
        (
            "{\"model\":\"sim\",\"prompt\":\"a\",\"max_tokens\":100}",
            400,
            "exceeds max_seq_len (100)",
        ),
        (
            "{\"model\":\"nope\",\"prompt\":\"a\"}",
            404,
            "does not exist",
        ),
        (
            "{\"model\":\"sim\",\"prompt\":\"\"}",
            400,
            "prompt is empty",
        ),
        (
            "{\"model\":\"sim\",\"prompt\":[[1],[2]]}",
            400,
            "single prompt",
        ),
    ];
    for (body, status, needle) in cases {
        let r = http.post_raw(&url, body).await;
        assert_eq!(r.status, status, "{body}");
        let e = r.json();
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(e["error"]["type"].is_string());
        assert_eq!(e["error"]["code"], status);
    }
    let m = http.get(&format!("{}/metrics", s.url())).await;
    assert_eq!(
        metric(&m.body, "disagg_sim_request_errors_total"),
        Some(cases.len() as f64)
    );
}

#[tokio::test]
async fn outputs_end_early_only_without_ignore_eos() {
    let s = TestSim::start(
        SimConfig {
            eos_probability: 0.5,
            ..cfg(Role::Both)
        },
        Limits::default(),
    )
    .await;
    let http = Http::new();
    let url = format!("{}/v1/completions", s.url());
    let mut short = 0;
    for i in 0..20 {
        let v = http
            .post(
                &url,
                &json!({"model":"sim","prompt":[i, 1, 2],"max_tokens":50}),
            )
            .await
            .json();
        let n = v["usage"]["completion_tokens"].as_u64().unwrap();
        if n < 50 {
            short += 1;
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
        }
        let v = http
            .post(
                &url,
                &json!({"model":"sim","prompt":[i, 1, 2],"max_tokens":50,"ignore_eos":true}),
            )
            .await
            .json();
        assert_eq!(v["usage"]["completion_tokens"], 50);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    assert!(short > 10, "with p=0.5 most outputs end early ({short}/20)");
}
