//! Requests shaped as upstream's coordinators send them, in the three eras of
//! `trtllm-serve disaggregated` (see docs/upstream.md), replayed against the simulated workers
//! directly (we play the coordinator) and against our router (we play the client): every one is
//! served, none is refused for a field upstream's workers know, JSON and MessagePack alike.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::time::Duration;

use disagg_router::{Router, RouterSettings};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, Reply, TestSim};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn sim(role: Role) -> TestSim {
    let cfg = SimConfig {
        role,
        cost: CostModel::zero(),
        ..SimConfig::default()
    };
    TestSim::start(cfg, Limits::default()).await
}

/// The context leg's `disaggregated_params` of each era.
fn context_params(era: char, id: u64) -> Value {
    match era {
        // Era A/B: the request type only; the worker's request id is the hand-off's key.
        'b' => json!({"request_type": "context_only"}),
        // Era C/D: the coordinator's id and the schedule style by name.
        'd' => json!({"request_type": "context_only", "disagg_request_id": id,
            "schedule_style": "context_first"}),
        // Era E: the integer enum, a conversation, no unset fields.
        _ => json!({"request_type": "context_only", "disagg_request_id": id,
            "schedule_style": 0, "conversation_id": format!("conv-{id}"),
            "return_prompt_token_ids_b64": false}),
    }
}

/// A client request with the extra fields upstream's request models carry in each era.
fn request(era: char, stream: bool) -> Value {
    let mut r = json!({"model": "sim", "prompt": [11, 12, 13, 14, 15, 16], "max_tokens": 5,
        "ignore_eos": true, "stream": stream});
    if era == 'e' {
        r["priority"] = json!(0.5);
        r["conversation_params"] = json!({"conversation_id": "conv-client"});
        r["stream_options"] = if stream {
            json!({"include_usage": true})
        } else {
            Value::Null
        };
    }
    r
}

/// Our router in front of one context and one generation server, healthy: its URL and the token
/// that stops it.
async fn router(
    ctx: &TestSim,
    gen_: &TestSim,
    handoff: disagg_router::HandOff,
) -> (String, CancellationToken) {
    router_with(RouterSettings {
        context: vec![ctx.addr.to_string()],
        generation: vec![gen_.addr.to_string()],
        health_check_interval: Duration::from_millis(100),
        handoff,
        ..RouterSettings::default()
    })
    .await
}

async fn post(http: &Http, url: &str, body: &Value, msgpack: bool) -> Reply {
    if msgpack {
        http.post_msgpack(url, body).await
    } else {
        http.post(url, body).await
    }
}

/// The generation request upstream builds from the context response: the context's hand-off
/// with `generation_only`, its usage as `ctx_usage` (era E), its prompt token ids.
fn generation_request(era: char, client: &Value, ctx: &Value, id: u64) -> Value {
    let mut params = ctx["choices"][0]["disaggregated_params"].clone();
    params["request_type"] = json!("generation_only");
    if era != 'b' {
        params["disagg_request_id"] = json!(id);
    }
    if era == 'e' {
        params["schedule_style"] = json!(0);
        params["ctx_usage"] = ctx["usage"].clone();
        params["conversation_id"] = json!(format!("conv-{id}"));
    }
    let mut r = client.clone();
    r["disaggregated_params"] = params;
    if !ctx["prompt_token_ids"].is_null() {
        r["prompt"] = ctx["prompt_token_ids"].clone();
    }
    r
}

#[tokio::test]
async fn the_simulated_workers_serve_every_era_in_json_and_msgpack() {
    let (ctx, gen_) = (sim(Role::Context).await, sim(Role::Generation).await);
    let http = Http::new();
    let mut id = 100;
    for era in ['b', 'd', 'e'] {
        for msgpack in [false, true] {
            for stream in [false, true] {
                id += 1;
                let client = request(era, stream);
                let mut ctx_req = client.clone();
                ctx_req["stream"] = json!(false);
                ctx_req["disaggregated_params"] = context_params(era, id);
                let url = format!("{}/v1/completions", ctx.url());
                let c = post(&http, &url, &ctx_req, msgpack).await;
                let what = format!("era {era}, msgpack {msgpack}, stream {stream}");
                assert_eq!(c.status, 200, "{what}: context leg: {:?}", c.body);
                let c = c.json();
                let handoff = &c["choices"][0]["disaggregated_params"];
                assert!(handoff["encoded_opaque_state"].is_string(), "{what}: {c}");
                let g_req = generation_request(era, &client, &c, id);
                let url = format!("{}/v1/completions", gen_.url());
                let g = post(&http, &url, &g_req, msgpack).await;
                assert_eq!(g.status, 200, "{what}: generation leg: {:?}", g.body);
                if stream {
                    let events = g.events();
                    assert!(
                        events.last().is_some_and(|e| e.is_done()),
                        "{what}: {events:?}"
                    );
                    assert!(
                        events.iter().all(|e| !e.data.contains("\"error\"")),
                        "{what}"
                    );
                    let chunks: Vec<Value> = events
                        .iter()
                        .filter(|e| !e.is_done())
                        .map(|e| serde_json::from_str(&e.data).unwrap())
                        .collect();
                    let texts = chunks
                        .iter()
                        .filter(|c| {
                            c["choices"][0]["text"]
                                .as_str()
                                .is_some_and(|t| !t.is_empty())
                        })
                        .count();
                    assert!(texts >= 1, "{what}: {chunks:?}");
                } else {
                    let tokens = g.json()["usage"]["completion_tokens"].as_u64();
                    assert_eq!(tokens, Some(5), "{what}");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_bad_schedule_style_or_body_is_a_400_never_a_500() {
    let ctx = sim(Role::Context).await;
    let http = Http::new();
    let url = format!("{}/v1/completions", ctx.url());
    let mut r = request('e', false);
    r["disaggregated_params"] = json!({"request_type": "context_only", "schedule_style": 7});
    let reply = http.post(&url, &r).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("use 0 (context_first) or 1"),
        "{:?}",
        reply.body
    );
    let garbage = http.post_raw(&url, "\u{1}\u{2}").await;
    assert_eq!(garbage.status, 400);
}

#[tokio::test]
async fn the_router_serves_era_e_clients_in_json_and_msgpack() {
    let (ctx, gen_) = (sim(Role::Context).await, sim(Role::Generation).await);
    let (url, cancel) = router(&ctx, &gen_, disagg_router::HandOff::Trtllm).await;
    let http = Http::new();
    for msgpack in [false, true] {
        for stream in [false, true] {
            let r = post(
                &http,
                &format!("{url}/v1/completions"),
                &request('e', stream),
                msgpack,
            )
            .await;
            assert_eq!(
                r.status, 200,
                "msgpack {msgpack}, stream {stream}: {:?}",
                r.body
            );
        }
        let chat = json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3, "ignore_eos": true, "priority": 0.2,
            "conversation_params": {"conversation_id": "c"}});
        let r = post(&http, &format!("{url}/v1/chat/completions"), &chat, msgpack).await;
        assert_eq!(r.status, 200, "chat, msgpack {msgpack}: {:?}", r.body);
    }
    let bad = http
        .post_msgpack(&format!("{url}/v1/completions"), &json!([1, 2]))
        .await;
    assert_eq!(bad.status, 400);
    cancel.cancel();
}

#[tokio::test]
async fn workers_serve_the_steady_clock_offset_as_upstream() {
    let ctx = sim(Role::Context).await;
    let http = Http::new();
    let url = format!("{}/steady_clock_offset", ctx.url());
    let t = http.get(&url).await.json();
    let (rx, tx) = (
        t["receive_ts"].as_f64().unwrap(),
        t["transmit_ts"].as_f64().unwrap(),
    );
    assert!(rx >= 0.0 && tx >= rx, "{t}");
    assert_eq!(
        http.post(&url, &json!({"offset": 1000.0})).await.status,
        200
    );
    assert_eq!(http.post(&url, &json!({"offset": "x"})).await.status, 400);
    // The offset moves the timings of /perf_metrics onto the coordinator's clock.
    let body = json!({"model": "sim", "prompt": [1, 2, 3], "max_tokens": 2,
        "disaggregated_params": {"request_type": "context_only", "disagg_request_id": 9}});
    assert_eq!(
        http.post(&format!("{}/v1/completions", ctx.url()), &body)
            .await
            .status,
        200
    );
    let perf = http
        .get(&format!("{}/perf_metrics", ctx.url()))
        .await
        .json();
    assert!(
        perf[0]["arrival_time"].as_f64().unwrap() >= 1000.0,
        "{perf}"
    );
}

#[tokio::test]
async fn the_router_speaks_vllms_nixl_hand_off() {
    let vllm = |role| SimConfig {
        role,
        protocol: disagg_sim::Protocol::Vllm,
        cost: CostModel::zero(),
        ..SimConfig::default()
    };
    let prefill = TestSim::start(vllm(Role::Context), Limits::default()).await;
    let decode = TestSim::start(vllm(Role::Generation), Limits::default()).await;
    let (url, cancel) = router(&prefill, &decode, disagg_router::HandOff::Vllm).await;
    let http = Http::new();
    for stream in [false, true] {
        let body = json!({"model": "sim", "prompt": [1, 2, 3, 4], "max_tokens": 6,
            "ignore_eos": true, "stream": stream, "stream_options": {"include_usage": true}});
        let r = http.post(&format!("{url}/v1/completions"), &body).await;
        assert_eq!(r.status, 200, "stream {stream}: {:?}", r.body);
        if !stream {
            assert_eq!(r.json()["usage"]["completion_tokens"], 6, "{:?}", r.body);
        }
    }
    let chat = json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "ignore_eos": true});
    let r = http
        .post(&format!("{url}/v1/chat/completions"), &chat)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The decode server took the decode legs through the hand-off (the sim verifies the
    // prefill's digest), the prefill server the one-token prefill legs.
    let metrics = http
        .get(&format!("{}/perf_metrics", decode.url()))
        .await
        .json();
    assert!(
        metrics
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["leg"] == "generation"),
        "{metrics}"
    );
    cancel.cancel();
}

/// Our router with these settings, healthy: its URL and the token that stops it.
async fn router_with(settings: RouterSettings) -> (String, CancellationToken) {
    let router = Router::bind("127.0.0.1:0", settings).await.unwrap();
    let url = format!("http://{}", router.local_addr());
    let cancel = CancellationToken::new();
    tokio::spawn(router.run(cancel.clone()));
    let http = Http::new();
    for _ in 0..100 {
        if http.get(&format!("{url}/health")).await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, cancel)
}

fn sglang(role: Role) -> SimConfig {
    SimConfig {
        role,
        protocol: disagg_sim::Protocol::Sglang,
        cost: CostModel::zero(),
        ..SimConfig::default()
    }
}

async fn legs(http: &Http, sim: &TestSim) -> Vec<Value> {
    http.get(&format!("{}/perf_metrics", sim.url()))
        .await
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_router_speaks_sglangs_bootstrap_hand_off() {
    let prefill = TestSim::start(sglang(Role::Context), Limits::default()).await;
    let decode = TestSim::start(sglang(Role::Generation), Limits::default()).await;
    // The sim serves its bootstrap on its HTTP port.
    let (url, cancel) = router_with(RouterSettings {
        context: vec![prefill.addr.to_string()],
        generation: vec![decode.addr.to_string()],
        health_check_interval: Duration::from_millis(100),
        handoff: disagg_router::HandOff::Sglang,
        bootstrap_ports: vec![prefill.addr.port()],
        ..RouterSettings::default()
    })
    .await;
    let http = Http::new();
    for stream in [false, true] {
        let body = json!({"model": "sim", "prompt": "one two three four", "max_tokens": 6,
            "ignore_eos": true, "stream": stream, "stream_options": {"include_usage": true}});
        let r = http.post(&format!("{url}/v1/completions"), &body).await;
        assert_eq!(r.status, 200, "stream {stream}: {:?}", r.body);
        if stream {
            let usage = r
                .events()
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                .find(|v| !v["usage"].is_null())
                .unwrap();
            assert_eq!(usage["usage"]["completion_tokens"], 6);
        } else {
            assert_eq!(r.json()["usage"]["completion_tokens"], 6, "{:?}", r.body);
        }
    }
    let chat = json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "ignore_eos": true});
    let r = http
        .post(&format!("{url}/v1/chat/completions"), &chat)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Every request went to both servers: the prefill took the context legs, the decode server
    // waited on each request's room and took the generation legs.
    let (p, d) = (legs(&http, &prefill).await, legs(&http, &decode).await);
    assert_eq!((p.len(), d.len()), (3, 3), "{p:?} {d:?}");
    assert!(p.iter().all(|m| m["leg"] == "context"), "{p:?}");
    assert!(d.iter().all(|m| m["leg"] == "generation"), "{d:?}");
    cancel.cancel();
}

#[tokio::test]
async fn an_sglang_prefill_that_fails_is_retried_with_a_new_room_elsewhere() {
    let dead = TestSim::start(sglang(Role::Context), Limits::default()).await;
    let alive = TestSim::start(sglang(Role::Context), Limits::default()).await;
    let decode = TestSim::start(sglang(Role::Generation), Limits::default()).await;
    let (url, cancel) = router_with(RouterSettings {
        context: vec![dead.addr.to_string(), alive.addr.to_string()],
        generation: vec![decode.addr.to_string()],
        // Health checks rarely: the router learns of the dead server from a request.
        health_check_interval: Duration::from_secs(60),
        handoff: disagg_router::HandOff::Sglang,
        bootstrap_ports: vec![dead.addr.port(), alive.addr.port()],
        ..RouterSettings::default()
    })
    .await;
    dead.stop().await;
    let http = Http::new();
    for _ in 0..4 {
        let body = json!({"model": "sim", "prompt": "a b c", "max_tokens": 2, "ignore_eos": true});
        let r = http.post(&format!("{url}/v1/completions"), &body).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let metrics = http.get(&format!("{url}/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("disagg_router_retries_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    // Only the rooms of the tries that reached a live prefill were decoded.
    assert_eq!(legs(&http, &decode).await.len(), 4);
    cancel.cancel();
}

#[tokio::test]
async fn aggregated_servers_take_whole_requests() {
    let both = TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel::zero(),
            ..SimConfig::default()
        },
        Limits::default(),
    )
    .await;
    let (url, cancel) = router_with(RouterSettings {
        generation: vec![both.addr.to_string()],
        health_check_interval: Duration::from_millis(100),
        handoff: disagg_router::HandOff::Aggregated,
        ..RouterSettings::default()
    })
    .await;
    let http = Http::new();
    let body = json!({"model": "sim", "prompt": "a b c", "max_tokens": 5, "ignore_eos": true});
    let r = http.post(&format!("{url}/v1/completions"), &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 5);
    cancel.cancel();
    // Context servers make no sense for aggregated serving; bootstrap ports only for SGLang.
    let with_ctx = RouterSettings {
        context: vec!["127.0.0.1:1".into()],
        generation: vec!["127.0.0.1:2".into()],
        handoff: disagg_router::HandOff::Aggregated,
        ..RouterSettings::default()
    };
    assert!(with_ctx.check().unwrap_err().contains("no context servers"));
    let ports = RouterSettings {
        context: vec!["127.0.0.1:1".into(), "127.0.0.1:3".into()],
        generation: vec!["127.0.0.1:2".into()],
        handoff: disagg_router::HandOff::Sglang,
        bootstrap_ports: vec![1, 2, 3],
        ..RouterSettings::default()
    };
    assert!(
        ports
            .check()
            .unwrap_err()
            .contains("3 bootstrap ports for 2 context servers")
    );
}
