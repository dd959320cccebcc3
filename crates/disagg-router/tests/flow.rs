//! The router in front of real simulators on 127.0.0.1, in-process.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::time::Duration;

use disagg_protocol::CompletionResponse;
use disagg_router::{Policy, Router, RouterSettings};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, TestSim, metric};
use serde_json::{Value, json};
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

async fn router(
    ctx: &[&TestSim],
    gen_: &[&TestSim],
    tweak: impl FnOnce(&mut RouterSettings),
) -> TestRouter {
    let mut settings = RouterSettings {
        context: ctx.iter().map(|s| s.addr.to_string()).collect(),
        generation: gen_.iter().map(|s| s.addr.to_string()).collect(),
        health_check_interval: Duration::from_millis(100),
        ..RouterSettings::default()
    };
    tweak(&mut settings);
    let r = Router::bind("127.0.0.1:0", settings).await.unwrap();
    let url = format!("http://{}", r.local_addr());
    let cancel = CancellationToken::new();
    tokio::spawn(r.run(cancel.clone()));
    let router = TestRouter { url, cancel };
    wait_healthy(&router.url).await;
    router
}

async fn wait_healthy(url: &str) {
    let http = Http::new();
    for _ in 0..100 {
        if http.get(&format!("{url}/health")).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("router at {url} never became healthy");
}

fn zero(role: Role) -> SimConfig {
    SimConfig {
        role,
        cost: CostModel::zero(),
        ..SimConfig::default()
    }
}

fn slow(role: Role, step_ms: f64) -> SimConfig {
    SimConfig {
        role,
        cost: CostModel {
            decode_step_base_ms: step_ms,
            ..CostModel::zero()
        },
        ..SimConfig::default()
    }
}

async fn sim(cfg: SimConfig) -> TestSim {
    TestSim::start(cfg, Limits::default()).await
}

async fn requests_of(s: &TestSim) -> f64 {
    let m = Http::new().get(&format!("{}/metrics", s.url())).await;
    metric(&m.body, "disagg_sim_requests_total").unwrap()
}

fn text_of(events: &[disagg_protocol::SseEvent]) -> String {
    events
        .iter()
        .filter(|e| !e.is_done())
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["text"]
                .as_str()
                .or(v["choices"][0]["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn completions_and_chat_streaming_or_not_match_an_aggregated_server() {
    let (c, g, agg) = (
        sim(zero(Role::Context)).await,
        sim(zero(Role::Generation)).await,
        sim(zero(Role::Both)).await,
    );
    let r = router(&[&c], &[&g], |_| {}).await;
    let http = Http::new();
    let body =
        json!({"model":"sim","prompt":"to be or not to be","max_tokens":8,"ignore_eos":true});
    let direct: CompletionResponse = serde_json::from_slice(
        &http
            .post(&format!("{}/v1/completions", agg.url()), &body)
            .await
            .body,
    )
    .unwrap();
    let via: CompletionResponse = serde_json::from_slice(
        &http
            .post(&format!("{}/v1/completions", r.url), &body)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(via.choices[0].text, direct.choices[0].text);
    assert_eq!(via.usage.unwrap().completion_tokens, 8);

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let s = http
        .post(&format!("{}/v1/completions", r.url), &streaming)
        .await;
    assert_eq!(s.content_type, "text/event-stream");
    let events = s.events();
    assert!(events.last().unwrap().is_done());
    assert_eq!(text_of(&events), direct.choices[0].text);

    let chat = json!({"model":"sim","messages":[{"role":"user","content":"hello"}],"max_tokens":5});
    let a = http
        .post(&format!("{}/v1/chat/completions", agg.url()), &chat)
        .await
        .json();
    let b = http
        .post(&format!("{}/v1/chat/completions", r.url), &chat)
        .await
        .json();
    assert_eq!(
        b["choices"][0]["message"]["content"],
        a["choices"][0]["message"]["content"]
    );
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let events = http
        .post(&format!("{}/v1/chat/completions", r.url), &chat_stream)
        .await
        .events();
    assert_eq!(
        text_of(&events),
        a["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // The generation worker took the hand-off: no prefill there.
    let m = http.get(&format!("{}/metrics", g.url())).await;
    assert_eq!(
        metric(&m.body, "disagg_sim_prefill_tokens_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let cs = [
        sim(zero(Role::Context)).await,
        sim(zero(Role::Context)).await,
    ];
    let gs = [
        sim(zero(Role::Generation)).await,
        sim(zero(Role::Generation)).await,
    ];
    let r = router(&[&cs[0], &cs[1]], &[&gs[0], &gs[1]], |_| {}).await;
    let http = Http::new();
    for i in 0..8 {
        let v = http
            .post(
                &format!("{}/v1/completions", r.url),
                &json!({"model":"sim","prompt":[i, 2],"max_tokens":2}),
            )
            .await;
        assert_eq!(v.status, 200);
    }
    for s in cs.iter().chain(&gs) {
        assert_eq!(requests_of(s).await, 4.0);
    }
}

#[tokio::test]
async fn load_balancing_avoids_the_busy_worker() {
    let c = sim(zero(Role::Context)).await;
    let gs = [
        sim(slow(Role::Generation, 5.0)).await,
        sim(slow(Role::Generation, 5.0)).await,
    ];
    let r = router(&[&c], &[&gs[0], &gs[1]], |s| {
        s.generation_policy = Policy::LoadBalancing { use_tokens: false }
    })
    .await;
    let http = Http::new();
    // A long stream occupies one worker...
    let long = http
        .post_streaming(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"sim","prompt":[1],"max_tokens":400,"stream":true}),
        )
        .await;
    let busy = if requests_of(&gs[0]).await == 1.0 {
        0
    } else {
        1
    };
    // ...so the short ones all go to the other.
    for i in 0..4 {
        let v = http
            .post(
                &format!("{}/v1/completions", r.url),
                &json!({"model":"sim","prompt":[i + 2],"max_tokens":1}),
            )
            .await;
        assert_eq!(v.status, 200);
    }
    assert_eq!(requests_of(&gs[busy]).await, 1.0);
    assert_eq!(requests_of(&gs[1 - busy]).await, 4.0);
    drop(long);
}

#[tokio::test]
async fn a_request_finished_at_the_context_server_keeps_its_token() {
    // The context server's model ends at the first token almost always.
    let c = sim(SimConfig {
        eos_probability: 0.999,
        ..zero(Role::Context)
    })
    .await;
    let g = sim(zero(Role::Generation)).await;
    let r = router(&[&c], &[&g], |_| {}).await;
    let http = Http::new();
    let v = http
        .post(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"sim","prompt":"x y","max_tokens":5}),
        )
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0].get("disaggregated_params").is_none());
    let token = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(token.split_whitespace().count(), 1);
    let s = http
        .post(&format!("{}/v1/completions", r.url),
              &json!({"model":"sim","prompt":"x y","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}))
        .await;
    let events = s.events();
    assert!(events.last().unwrap().is_done());
    assert_eq!(
        text_of(&events),
        token,
        "the streamed answer carries the token"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 1);
    assert_eq!(requests_of(&g).await, 0.0, "no generation leg");
    let m = http.get(&format!("{}/metrics", r.url)).await;
    assert_eq!(
        metric(&m.body, "disagg_router_finished_at_context_total"),
        Some(2.0)
    );
}

#[tokio::test]
async fn health_is_503_until_every_worker_answers() {
    let c = sim(zero(Role::Context)).await;
    // A port nobody listens on yet.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    let settings = RouterSettings {
        context: vec![c.addr.to_string()],
        generation: vec![format!("127.0.0.1:{port}")],
        health_check_interval: Duration::from_millis(50),
        ..RouterSettings::default()
    };
    let rt = Router::bind("127.0.0.1:0", settings).await.unwrap();
    let url = format!("http://{}", rt.local_addr());
    let cancel = CancellationToken::new();
    tokio::spawn(rt.run(cancel.clone()));
    let http = Http::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h = http.get(&format!("{url}/health")).await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["status"], "starting");
    // The generation worker comes up on that port: the router becomes ready.
    let sim = disagg_sim::Sim::bind(
        &format!("127.0.0.1:{port}"),
        zero(Role::Generation),
        Limits::default(),
    )
    .await
    .unwrap();
    let sim_cancel = CancellationToken::new();
    tokio::spawn(sim.run(sim_cancel.clone()));
    wait_healthy(&url).await;
    let info = http.get(&format!("{url}/cluster_info")).await.json();
    assert_eq!(info["is_ready"], true);
    cancel.cancel();
    sim_cancel.cancel();
}

#[tokio::test]
async fn a_dead_worker_is_retried_around_and_leaves_the_rotation() {
    let c = sim(zero(Role::Context)).await;
    let g0 = sim(zero(Role::Generation)).await;
    let g1 = sim(zero(Role::Generation)).await;
    let r = router(&[&c], &[&g0, &g1], |s| {
        s.health_check_interval = Duration::from_secs(30)
    })
    .await;
    g0.stop().await;
    let http = Http::new();
    for i in 0..4 {
        let v = http
            .post(
                &format!("{}/v1/completions", r.url),
                &json!({"model":"sim","prompt":[i],"max_tokens":2}),
            )
            .await;
        assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
    }
    assert_eq!(requests_of(&g1).await, 4.0);
    let m = http.get(&format!("{}/metrics", r.url)).await;
    assert_eq!(
        metric(&m.body, "disagg_router_retries_total"),
        Some(1.0),
        "one retry, then out of the rotation"
    );
    let info = http.get(&format!("{}/cluster_info", r.url)).await.json();
    assert_eq!(info["generation_servers"][0]["healthy"], false);
}

#[tokio::test]
async fn a_4xx_is_passed_through_and_never_retried() {
    let cs = [
        sim(zero(Role::Context)).await,
        sim(zero(Role::Context)).await,
    ];
    let g = sim(zero(Role::Generation)).await;
    let r = router(&[&cs[0], &cs[1]], &[&g], |s| s.max_retries = 3).await;
    let http = Http::new();
    let v = http
        .post(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"nope","prompt":"a"}),
        )
        .await;
    assert_eq!(v.status, 404);
    assert!(
        v.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert_eq!(requests_of(&cs[0]).await + requests_of(&cs[1]).await, 0.0);
    let m = http.get(&format!("{}/metrics", r.url)).await;
    assert_eq!(metric(&m.body, "disagg_router_retries_total"), Some(0.0));
    let info = http.get(&format!("{}/cluster_info", r.url)).await.json();
    let sent: u64 = info["context_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 1, "one context leg, no retry");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_worker_request() {
    let c = sim(zero(Role::Context)).await;
    let g = sim(slow(Role::Generation, 10.0)).await;
    let r = router(&[&c], &[&g], |_| {}).await;
    let http = Http::new();
    let mut resp = http
        .post_streaming(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"sim","prompt":[1,2],"max_tokens":5000,"stream":true}),
        )
        .await;
    assert!(
        http_body_util::BodyExt::frame(resp.body_mut())
            .await
            .is_some()
    );
    drop(resp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let m = http.get(&format!("{}/metrics", g.url())).await;
        if metric(&m.body, "disagg_sim_requests_cancelled_total") == Some(1.0) {
            assert_eq!(metric(&m.body, "disagg_sim_requests_running"), Some(0.0));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker kept generating for a client that left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_request_deadline_ends_streams_and_answers() {
    let c = sim(zero(Role::Context)).await;
    let g = sim(slow(Role::Generation, 20.0)).await;
    let r = router(&[&c], &[&g], |s| {
        s.request_timeout = Duration::from_millis(300)
    })
    .await;
    let http = Http::new();
    let started = std::time::Instant::now();
    let s = http
        .post(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"sim","prompt":[1],"max_tokens":1000,"stream":true}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let events = s.events();
    assert!(events.last().unwrap().is_done());
    let err: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(err["error"]["code"], 504, "{err}");
    let v = http
        .post(
            &format!("{}/v1/completions", r.url),
            &json!({"model":"sim","prompt":[1],"max_tokens":1000}),
        )
        .await;
    assert_eq!(v.status, 504);
    assert_eq!(v.json()["error"]["type"], "server_error");
}

#[tokio::test]
async fn bad_requests_get_openai_error_bodies() {
    let (c, g) = (
        sim(zero(Role::Context)).await,
        sim(zero(Role::Generation)).await,
    );
    let r = router(&[&c], &[&g], |_| {}).await;
    let http = Http::new();
    for (body, needle) in [
        ("{\"model\":", "invalid request body"),
        ("[1]", "JSON object"),
        (
            "{\"model\":\"sim\",\"prompt\":[\"a\",\"b\"]}",
            "single string prompt",
        ),
    ] {
        let v = http
            .post_raw(&format!("{}/v1/completions", r.url), body)
            .await;
        assert_eq!(v.status, 400, "{body}");
        let e = v.json();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        http.get(&format!("{}/v1/models", r.url)).await.json()["data"][0]["id"],
        "sim"
    );
}

/// Upstream's internal request auth (`disagg_auth.py`): a sim with `internal_request_auth_key`
/// serves generation legs the router signs with the same key, and refuses with 401 those it
/// does not sign, or signs with another key.
#[tokio::test]
async fn generation_legs_are_signed_with_the_runs_auth_key() {
    let key = |k: &str| disagg_config::AuthKey::new(k);
    let keyed = |role| SimConfig {
        auth_key: key("0123abcd"),
        ..zero(role)
    };
    let (c, g) = (
        sim(keyed(Role::Context)).await,
        sim(keyed(Role::Generation)).await,
    );
    let http = Http::new();
    let body = json!({"model":"sim","prompt":"one two three","max_tokens":4,"ignore_eos":true});
    let cases = [
        (key("0123abcd"), 200, None),
        (None, 401, Some("no x-trtllm-disagg-auth header")),
        (
            key("another"),
            401,
            Some("x-trtllm-disagg-auth header does not match"),
        ),
    ];
    for (router_key, status, says) in cases {
        let r = router(&[&c], &[&g], |s| s.auth_key = router_key.clone()).await;
        for stream in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(stream);
            let reply = http.post(&format!("{}/v1/completions", r.url), &body).await;
            let text = String::from_utf8_lossy(&reply.body).to_string();
            assert_eq!(reply.status, status, "router key {router_key:?}: {text}");
            if let Some(says) = says {
                let e = reply.json();
                assert_eq!(e["error"]["code"], 401, "{e}");
                assert_eq!(e["error"]["type"], "authentication_error", "{e}");
                let message = e["error"]["message"].as_str().unwrap();
                assert!(message.contains(says), "{message}");
                assert!(
                    !message.contains("0123abcd"),
                    "the key is never echoed: {message}"
                );
            } else if stream {
                assert_eq!(text_of(&reply.events()).split_whitespace().count(), 4);
            }
        }
    }
    // A sim without a key takes the signed and the unsigned alike (upstream only warns).
    let (c, g) = (
        sim(zero(Role::Context)).await,
        sim(zero(Role::Generation)).await,
    );
    for router_key in [key("0123abcd"), None] {
        let r = router(&[&c], &[&g], |s| s.auth_key = router_key).await;
        let reply = http.post(&format!("{}/v1/completions", r.url), &body).await;
        assert_eq!(reply.status, 200);
    }
    // The settings' Debug never shows the key.
    let settings = RouterSettings {
        auth_key: key("0123abcd"),
        ..RouterSettings::default()
    };
    assert!(!format!("{settings:?}").contains("0123abcd"));
}
