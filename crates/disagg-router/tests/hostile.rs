//! Hostile clients (docs/RELIABILITY.md): request bodies of every wrong shape — arbitrary JSON,
//! a valid request with one field replaced by anything, raw bytes and invalid UTF-8, deep
//! nesting, 10 MB — sent to a simulator and to the router in front of a pair; and 1 000
//! connections that send half a header and stop. Every answer is a 2xx or a 4xx with an
//! OpenAI-shaped error, never a 5xx, a panic or a hang, other clients are served throughout,
//! and the stalled connections are closed once the header-read timeout is up.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use disagg_router::{Router, RouterSettings};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, TestSim};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A simulator serving both legs, and a router in front of a context/generation pair: shared by
/// every case, on a runtime of their own.
struct Servers {
    rt: tokio::runtime::Runtime,
    sim: String,
    router: String,
    sims: Vec<TestSim>,
}

fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (sims, router) = rt.block_on(async {
            // Zero cost and a short max_seq_len: no body can ask for much work.
            let cfg = |role| SimConfig {
                role,
                cost: CostModel::zero(),
                max_seq_len: 4096,
                ..SimConfig::default()
            };
            let both = TestSim::start(cfg(Role::Both), Limits::default()).await;
            let ctx = TestSim::start(cfg(Role::Context), Limits::default()).await;
            let gen_ = TestSim::start(cfg(Role::Generation), Limits::default()).await;
            let settings = RouterSettings {
                context: vec![ctx.addr.to_string()],
                generation: vec![gen_.addr.to_string()],
                health_check_interval: Duration::from_millis(100),
                ..RouterSettings::default()
            };
            let r = Router::bind("127.0.0.1:0", settings)
                .await
                .expect("router binds");
            let url = format!("http://{}", r.local_addr());
            // Never cancelled: the router lives as long as the test binary.
            tokio::spawn(r.run(CancellationToken::new()));
            let http = Http::new();
            let t0 = Instant::now();
            while http.get(&format!("{url}/health")).await.status != 200 {
                assert!(t0.elapsed() < Duration::from_secs(10), "router not healthy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (vec![both, ctx, gen_], url)
        });
        Servers {
            sim: sims[0].url(),
            router,
            sims,
            rt,
        }
    })
}

const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "min_tokens",
    "stream",
    "stream_options",
    "ignore_eos",
    "n",
    "temperature",
    "disaggregated_params",
    "kv_transfer_params",
    "role",
    "content",
    "include_usage",
    "request_type",
    "ctx_request_id",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(4096), Just(1 << 40)].prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(FIELDS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn valid(chat: bool) -> Value {
    let mut b = json!({"model": "sim", "max_tokens": 4, "stream": true});
    if chat {
        b["messages"] = json!([{"role": "user", "content": "hello there"}]);
    } else {
        b["prompt"] = json!("hello there");
    }
    b
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (any::<bool>(), prop::sample::select(FIELDS), json_value()).prop_map(|(chat, f, v)| {
            let mut b = valid(chat);
            b[f] = v;
            b.to_string().into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

/// POST `body` to both endpoints of `base`: never a 5xx; a 4xx is OpenAI-shaped.
async fn check(http: &Http, base: &str, body: &[u8]) -> Result<(), String> {
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let url = format!("{base}{path}");
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            http.post_bytes(&url, Bytes::copy_from_slice(body)),
        )
        .await
        .map_err(|_| format!("{url}: no answer in 20 s"))?;
        let r = match r {
            Ok(r) => r,
            // Over the 2 MB limit the server may answer 413 and close before the client has
            // written the whole body: refused, as it should be.
            Err(e) if body.len() > 2 << 20 && e.contains("BrokenPipe") => continue,
            Err(e) => return Err(format!("{url}: {e}")),
        };
        if r.status >= 500 {
            return Err(format!(
                "{url}: {} for {}: {}",
                r.status,
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&r.body)
            ));
        }
        if r.status >= 400 {
            let v: Value = serde_json::from_slice(&r.body)
                .map_err(|e| format!("{url}: {} not JSON ({e}): {:?}", r.status, r.body))?;
            if !v["error"]["message"].is_string() {
                return Err(format!("{url}: {} without an error message: {v}", r.status));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn no_body_gets_a_5xx_from_the_sim_or_the_router(b in body()) {
        let s = servers();
        let http = Http::new();
        for base in [&s.sim, &s.router] {
            let r = s.rt.block_on(check(&http, base, &b));
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}

/// Bodies built to cost: deep nesting, 10 MB, a huge prompt of ids, msgpack garbage.
#[test]
fn bodies_built_to_cost_are_refused_and_both_keep_serving() {
    let s = servers();
    let http = Http::new();
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut huge = valid(false);
    huge["prompt"] = json!("word ".repeat(2 << 20));
    let mut ids = valid(false);
    ids["prompt"] = json!(vec![7u32; 1 << 20]);
    let mut nested_field = valid(true);
    nested_field["messages"] =
        serde_json::from_str(&format!("{}{}", "[".repeat(120), "]".repeat(120)))
            .expect("120 levels parse");
    let bodies: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        huge.to_string().into_bytes(),
        ids.to_string().into_bytes(),
        nested_field.to_string().into_bytes(),
        vec![0xc1; 1 << 20],
    ];
    s.rt.block_on(async {
        for b in &bodies {
            for base in [&s.sim, &s.router] {
                if let Err(e) = check(&http, base, b).await {
                    panic!("{}", &e[..e.len().min(400)]);
                }
            }
        }
        for base in [&s.sim, &s.router] {
            let ok = http
                .post(&format!("{base}/v1/completions"), &valid(false))
                .await;
            assert_eq!(ok.status, 200, "{base} still serves");
        }
    });
}

/// 1 000 connections that each send half a request header and then nothing, 500 to a sim and
/// 500 to a router (each closing stalled headers after [`STALL`]): both go on answering other
/// clients at once, each closes every stalled connection once its header time is up, and both
/// still serve afterwards.
#[test]
fn a_thousand_half_headers_are_closed_after_the_header_timeout_and_others_are_served() {
    use std::io::{Read as _, Write as _};
    /// The servers' header-read timeout here (in production
    /// [`disagg_protocol::serve::HEADER_READ_TIMEOUT`], 30 s).
    const STALL: Duration = Duration::from_secs(2);
    // Each stalled connection is two descriptors in this process (client and server side).
    raise_open_file_limit(4096);
    let s = servers();
    let http = Http::new();
    let (sim, router, _sim) = s.rt.block_on(async {
        let sim = disagg_sim::Sim::bind(
            "127.0.0.1:0",
            SimConfig {
                cost: CostModel::zero(),
                ..SimConfig::default()
            },
            Limits::default(),
        )
        .await
        .expect("sim binds")
        .with_header_read_timeout(STALL);
        let sim_url = format!("http://{}", sim.local_addr());
        let sim_stop = CancellationToken::new();
        tokio::spawn(sim.run(sim_stop.clone()));
        let settings = RouterSettings {
            context: vec![s.sims[1].addr.to_string()],
            generation: vec![s.sims[2].addr.to_string()],
            health_check_interval: Duration::from_millis(100),
            ..RouterSettings::default()
        };
        let r = Router::bind("127.0.0.1:0", settings)
            .await
            .expect("router binds")
            .with_header_read_timeout(STALL);
        let router_url = format!("http://{}", r.local_addr());
        tokio::spawn(r.run(sim_stop.clone()));
        let t0 = Instant::now();
        while http.get(&format!("{router_url}/health")).await.status != 200 {
            assert!(t0.elapsed() < Duration::from_secs(10), "router not healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Both stop when the test ends.
        (sim_url, router_url, sim_stop.drop_guard())
    });
    let mut slow = Vec::new();
    for base in [&sim, &router] {
        let addr = base.trim_start_matches("http://");
        for _ in 0..500 {
            let mut c = std::net::TcpStream::connect(addr).expect("connect");
            c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
                .expect("half a header");
            slow.push(c);
        }
    }
    let stalled = Instant::now();
    s.rt.block_on(async {
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            for base in [&sim, &router] {
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    http.post(&format!("{base}/v1/completions"), &valid(false)),
                )
                .await
                .expect("answered within 10 s");
                assert_eq!(r.status, 200);
                slowest = slowest.max(t.elapsed());
            }
        }
        eprintln!("20 requests served beside 1 000 half headers, the slowest in {slowest:?}");
    });
    // Every stalled connection is closed by the server: the read ends (EOF or reset, perhaps
    // after a 408), it does not time out.
    let deadline = stalled + STALL + Duration::from_secs(5);
    let mut last_closed = Duration::ZERO;
    for (i, mut c) in slow.into_iter().enumerate() {
        let mut sink = Vec::new();
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match c.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "stalled connection {i} still open {:?} after its half header: {e}",
                stalled.elapsed()
            ),
        }
        last_closed = last_closed.max(stalled.elapsed());
    }
    assert!(
        last_closed >= STALL - Duration::from_millis(100),
        "closed before the header timeout ({last_closed:?})"
    );
    eprintln!(
        "1 000 half headers all closed {last_closed:?} after they stalled (timeout {STALL:?})"
    );
    s.rt.block_on(async {
        for base in [&sim, &router] {
            let r = http.get(&format!("{base}/health")).await;
            assert_eq!(
                r.status, 200,
                "{base} healthy after the stalled connections"
            );
            let r = http
                .post(&format!("{base}/v1/completions"), &valid(false))
                .await;
            assert_eq!(r.status, 200, "{base} serves after the stalled connections");
        }
    });
}

/// Raise this process's soft limit on open files to `want` (at most the hard limit): the default
/// soft limit is 1 024 on many systems.
fn raise_open_file_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).expect("setrlimit");
    }
}

/// What the fake generation server streams next: these bytes, one chunk each, then a clean end
/// or a reset connection.
#[derive(Clone, Default)]
struct Script {
    chunks: Vec<Bytes>,
    reset: bool,
}

/// A generation server that streams whatever the script says (the router cannot tell it from a
/// worker until the bytes arrive), and answers `/health`.
async fn scripted_worker(script: std::sync::Arc<std::sync::Mutex<Script>>) -> String {
    use axum::routing::{get, post};
    let serve = move || {
        let script = script.clone();
        async move {
            let s = script.lock().map(|s| s.clone()).unwrap_or_default();
            let mut items: Vec<Result<Bytes, std::io::Error>> =
                s.chunks.into_iter().map(Ok).collect();
            if s.reset {
                items.push(Err(std::io::Error::other("worker died")));
            }
            let mut r = axum::response::Response::new(axum::body::Body::from_stream(
                futures_util::stream::iter(items),
            ));
            r.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
    };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/completions", post(serve.clone()))
        .route("/v1/chat/completions", post(serve));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr.to_string()
}

fn chunk(text: &str) -> String {
    disagg_protocol::sse_data(&json!({"choices": [{"index": 0, "text": text}]}).to_string())
}

/// A generation server's SSE relayed through the router however it arrives: split at every
/// byte it is passed on unchanged; cut at any byte (a clean close or a reset), garbage, or a
/// 10 MB event, the client's stream still ends with a valid JSON error event (when cut) and
/// `[DONE]`, and the router goes on serving.
#[test]
fn worker_streams_split_cut_garbled_or_huge_end_well_at_the_client() {
    let s = servers();
    let script = std::sync::Arc::new(std::sync::Mutex::new(Script::default()));
    let set = |chunks: Vec<Bytes>, reset: bool| {
        *script.lock().expect("script") = Script { chunks, reset };
    };
    let http = Http::new();
    s.rt.block_on(async {
        let worker = scripted_worker(script.clone()).await;
        let ctx = TestSim::start(
            SimConfig {
                role: Role::Context,
                cost: CostModel::zero(),
                ..SimConfig::default()
            },
            Limits::default(),
        )
        .await;
        let r = Router::bind(
            "127.0.0.1:0",
            RouterSettings {
                context: vec![ctx.addr.to_string()],
                generation: vec![worker],
                health_check_interval: Duration::from_millis(100),
                ..RouterSettings::default()
            },
        )
        .await
        .expect("router binds");
        let url = format!("http://{}/v1/completions", r.local_addr());
        let cancel = CancellationToken::new();
        tokio::spawn(r.run(cancel.clone()));
        let health = url.replace("/v1/completions", "/health");
        let t0 = Instant::now();
        while http.get(&health).await.status != 200 {
            assert!(t0.elapsed() < Duration::from_secs(10), "router not healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let whole = format!(
            "{}{}{}",
            chunk("a"),
            chunk("b c"),
            disagg_protocol::sse_data("[DONE]")
        );
        let ask = || async { http.post(&url, &valid(false)).await };

        // Split at every byte: relayed unchanged.
        set(whole.bytes().map(|b| Bytes::from(vec![b])).collect(), false);
        let got = ask().await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, whole.as_bytes(), "relayed byte for byte");

        // Cut at every byte, by a clean close and by a reset.
        for reset in [false, true] {
            for cut in 0..whole.len() {
                let sent = &whole.as_bytes()[..cut];
                set(vec![Bytes::copy_from_slice(sent)], reset);
                let got = ask().await;
                let events = got.events();
                let what = format!(
                    "cut at {cut} (reset {reset}): {:?}",
                    String::from_utf8_lossy(&got.body)
                );
                if reset && got.status == 502 {
                    // The worker's reset came before its headers left it (always at cut 0,
                    // sometimes later: the first chunk may wait for the headers): nothing
                    // reached the client, so the router retried and answered a JSON 502.
                    assert!(got.json()["error"]["message"].is_string(), "{what}");
                    continue;
                }
                assert!(events.last().is_some_and(|e| e.is_done()), "{what}");
                if !reset && (sent.ends_with(b"[DONE]") || sent.ends_with(b"[DONE]\n")) {
                    // Only the blank line after [DONE] is missing: the router ends the event.
                    assert_eq!(events.len(), 3, "{what}");
                    continue;
                }
                let err = &events[events.len() - 2];
                let v: Value =
                    serde_json::from_str(&err.data).unwrap_or_else(|e| panic!("{e}: {what}"));
                assert!(v["error"]["message"].is_string(), "{what}");
            }
        }

        // Garbage that is not SSE at all, then a clean close.
        set(
            vec![Bytes::from_static(b"\x00\xff<html>502</html>\r\r\n")],
            false,
        );
        let got = ask().await;
        assert!(got.events().last().is_some_and(|e| e.is_done()));

        // One 10 MB event.
        let big = chunk(&"x".repeat(10 << 20));
        set(
            vec![
                Bytes::from(big.clone()),
                Bytes::from(disagg_protocol::sse_data("[DONE]")),
            ],
            false,
        );
        let got = ask().await;
        let events = got.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data.len() + 2, big.len() - "data: ".len());

        // And a good stream afterwards.
        set(vec![Bytes::from(whole.clone())], false);
        assert_eq!(ask().await.body, whole.as_bytes());
        cancel.cancel();
        drop(ctx);
    });
}
