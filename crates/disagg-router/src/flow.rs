//! The routes and the context → generation flow.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use disagg_protocol::auth;
use disagg_protocol::body::{BodyError, MSGPACK_HEADER, decode, is_msgpack};
use disagg_protocol::{ChatMessage, ErrorResponse, sse_data};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::State;
use crate::metrics::ErrorKind;
use crate::pool::{Lease, Pool};

pub(crate) fn routes(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(health))
        .route("/cluster_info", get(cluster_info))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/perf_metrics", get(perf_metrics))
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        }
    }
}

/// An error answered by the router itself, counted once, in one place.
fn fail(st: &State, status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Response {
    st.metrics.error(kind);
    let message = message.into();
    tracing::warn!(status = status.as_u16(), ?kind, %message, "request failed");
    let kind_label = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (
        status,
        axum::Json(ErrorResponse::new(message, kind_label, status.as_u16())),
    )
        .into_response()
}

/// The SSE event that ends a broken stream: valid JSON, then `[DONE]`.
fn stream_error(message: &str, code: u16) -> Bytes {
    let body = json!({"error": {"message": message, "type": "server_error", "code": code}});
    let mut out = sse_data(&body.to_string());
    out.push_str(&sse_data(disagg_protocol::DONE));
    Bytes::from(out)
}

async fn completions(
    AxState(st): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => handle(st, Endpoint::Completions, &headers, body).await,
        Err(e) => unreadable(&st, &e),
    }
}

async fn chat(
    AxState(st): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => handle(st, Endpoint::Chat, &headers, body).await,
        Err(e) => unreadable(&st, &e),
    }
}

/// A body that could not be read (over axum's 2 MB limit, cut off): answered OpenAI-shaped like
/// every other error, not as axum's plain-text rejection.
fn unreadable(st: &State, e: &BytesRejection) -> Response {
    fail(
        st,
        e.status(),
        ErrorKind::BadRequest,
        format!("the request body could not be read: {}", e.body_text()),
    )
}

/// What the outcome of one leg is.
enum Leg {
    /// A 2xx from a worker.
    Ok(Lease, hyper::Response<hyper::body::Incoming>),
    /// A worker's 4xx, passed through as is.
    Rejected(StatusCode, Bytes),
}

enum LegError {
    NoWorker,
    Upstream(String),
    Timeout,
}

/// A leg's request as it goes out: its JSON and, when it carries a hand-off the workers
/// authenticate, upstream's signature header.
#[derive(Clone)]
struct Outgoing {
    body: Bytes,
    auth: Option<HeaderValue>,
}

impl Outgoing {
    /// `req` serialized, signed as upstream's coordinator signs it (`disagg_auth.py`) when the
    /// router has an `internal_request_auth_key` and `req.disaggregated_params` carries
    /// `ctx_info_endpoint` or `encoded_opaque_state`.
    fn of(st: &State, req: &Value) -> Outgoing {
        let auth = st.settings.auth_key.as_ref().and_then(|key| {
            let signature = auth::sign(key.expose_secret(), &req["disaggregated_params"])?;
            HeaderValue::from_str(&signature).ok()
        });
        Outgoing {
            body: Bytes::from(req.to_string()),
            auth,
        }
    }
}

/// One try of a leg on one worker.
enum Attempt {
    /// A 2xx.
    Ok(hyper::Response<hyper::body::Incoming>),
    /// A 4xx, with its body.
    Rejected(StatusCode, Bytes),
    /// A connection failure or a 5xx: worth another worker.
    Failed(String),
    /// The request's deadline passed.
    Timeout,
}

/// Send `body` to the leased worker once; a failure is counted against the worker.
async fn attempt(
    st: &State,
    pool: &str,
    lease: &Lease,
    path: &str,
    out: Outgoing,
    deadline: Instant,
) -> Attempt {
    let mut req = hyper::Request::post(format!("{}{path}", lease.worker.base))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = out.auth {
        req = req.header(auth::INTERNAL_AUTH_HEADER, signature);
    }
    let req = match req.body(Full::new(out.body)) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    match tokio::time::timeout_at(deadline, st.client.request(req)).await {
        Err(_) => Attempt::Timeout,
        Ok(Err(e)) => {
            lease.worker.failures.fetch_add(1, Ordering::Relaxed);
            if e.is_connect() {
                // Out of the rotation until its health check passes again.
                lease.worker.set_healthy(false);
            }
            Attempt::Failed(format!("{pool} {}: {e}", lease.worker.addr))
        }
        Ok(Ok(resp)) if resp.status().is_server_error() => {
            lease.worker.failures.fetch_add(1, Ordering::Relaxed);
            let status = resp.status();
            let text = read_body(resp, deadline).await.unwrap_or_default();
            Attempt::Failed(format!(
                "{pool} {} answered {status}: {}",
                lease.worker.addr,
                String::from_utf8_lossy(&text[..text.len().min(300)])
            ))
        }
        Ok(Ok(resp)) if resp.status().is_client_error() => {
            let status = resp.status();
            let text = read_body(resp, deadline).await.unwrap_or_default();
            Attempt::Rejected(status, text)
        }
        Ok(Ok(resp)) => Attempt::Ok(resp),
    }
}

/// How a leg's worker is picked.
#[derive(Default)]
struct Pick {
    /// The prompt's tokens (load balancing by tokens).
    tokens: u64,
    /// The prompt's block hashes at the pool's block size (kv_cache_aware).
    hashes: Option<Arc<[u64]>>,
    /// A worker picked already (conditional disaggregation reserved it): tried first.
    reserved: Option<Lease>,
    /// Workers not to pick.
    tried: Vec<usize>,
}

/// The prompt's block hashes at `pool`'s block size, when it routes by KV cache: of the token
/// ids the request carries (completions' `prompt`, chat's `prompt_token_ids`; after a hand-off
/// the context's ids), else of `text_ids`, its text as the router tokenized it ([`text_ids`]).
fn hashes_for(pool: &Pool, req: &Value, text_ids: Option<&[u32]>) -> Option<Arc<[u64]>> {
    let block = pool.tokens_per_block()?;
    let sent: Option<Vec<u32>> = req["prompt"]
        .as_array()
        .or_else(|| req["prompt_token_ids"].as_array())
        .and_then(|ids| {
            ids.iter()
                .map(|v| v.as_u64().map(|n| n as u32))
                .collect::<Option<_>>()
        });
    let ids = sent.as_deref().or(text_ids)?;
    Some(Arc::from(disagg_protocol::kv_cache::block_hashes(
        ids, block,
    )))
}

/// A text prompt's token ids for a kv_cache_aware pool, as upstream's `KvCacheAwareRouter`
/// tokenizes (`tokenizer(prompt)` for completions, the chat template with the generation prompt
/// for chat): with the router's [`crate::PromptTokenizer`]. `None` when no pool routes by KV cache, the
/// request carries ids already, or the text cannot be tokenized here — then the request goes by
/// load alone, is counted (`disagg_router_untokenized_requests_total`), and the first such
/// request is logged as a warning.
fn text_ids(st: &State, ep: Endpoint, req: &Value) -> Option<Arc<[u32]>> {
    if st.context.tokens_per_block().is_none() && st.generation.tokens_per_block().is_none() {
        return None;
    }
    if req["prompt"].is_array() || req["prompt_token_ids"].is_array() {
        return None;
    }
    let ids = match (st.settings.tokenizer.as_ref(), ep, &req["prompt"]) {
        (None, _, _) => Err("the router has no tokenizer (give it one: `disagg router \
                             --tokenizer sim|PATH`, `router.tokenizer`)"
            .to_string()),
        (Some(t), Endpoint::Completions, Value::String(text)) => Ok(t.completion(text)),
        (Some(t), Endpoint::Chat, _) => {
            serde_json::from_value::<Vec<ChatMessage>>(req["messages"].clone())
                .map_err(|e| format!("its messages are not chat messages ({e})"))
                .and_then(|m| t.chat(&m))
        }
        (Some(_), _, _) => Err("its prompt is neither text nor token ids".to_string()),
    };
    match ids {
        Ok(ids) => Some(Arc::from(ids)),
        Err(why) => {
            st.metrics.untokenized.fetch_add(1, Ordering::Relaxed);
            if !st.warned_untokenized.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a {} request with a text prompt is routed by load alone: {why}; \
                     disagg_router_untokenized_requests_total counts such requests",
                    ep.name(),
                );
            }
            None
        }
    }
}

/// Take a worker of `pool` for a leg, counting what a kv_cache_aware pick matched.
fn take(st: &State, pool: &Pool, pick: &mut Pick) -> Option<Lease> {
    let lease = match pick.reserved.take() {
        Some(l) => l,
        None => {
            let lease = pool.lease_for(&pick.tried, pick.tokens, pick.hashes.as_ref())?;
            note_kv_pick(st, pool, &lease, pick.tokens);
            lease
        }
    };
    Some(lease)
}

fn note_kv_pick(st: &State, pool: &Pool, lease: &Lease, tokens: u64) {
    if pool.tokens_per_block().is_some() {
        let i = usize::from(pool.role != "context");
        st.metrics.kv_prompt_tokens[i].fetch_add(tokens, Ordering::Relaxed);
        st.metrics.kv_matched_tokens[i].fetch_add(lease.matched_tokens, Ordering::Relaxed);
    }
}

/// Send a leg to a worker of `pool`, retrying on another worker after a connection failure or a
/// 5xx, never after a 4xx.
async fn send_leg(
    st: &State,
    pool: &Pool,
    path: &str,
    out: Outgoing,
    deadline: Instant,
    mut pick: Pick,
) -> Result<Leg, LegError> {
    let mut last = None;
    for n in 0..=st.settings.max_retries {
        let Some(lease) = take(st, pool, &mut pick) else {
            break;
        };
        let tried = &mut pick.tried;
        if n > 0 {
            st.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        tried.push(lease.index);
        match attempt(st, pool.role, &lease, path, out.clone(), deadline).await {
            Attempt::Ok(resp) => return Ok(Leg::Ok(lease, resp)),
            Attempt::Rejected(status, text) => return Ok(Leg::Rejected(status, text)),
            Attempt::Failed(e) => last = Some(e),
            Attempt::Timeout => return Err(LegError::Timeout),
        }
    }
    Err(match last {
        None => LegError::NoWorker,
        Some(e) => LegError::Upstream(e),
    })
}

/// How an SGLang prefill leg ended (its body drained).
enum Prefill {
    Done,
    Rejected(StatusCode, Bytes),
    Failed(String),
    Timeout,
}

/// SGLang: send the request to a prefill and a decode server at once, tied by a bootstrap room,
/// and answer with the decode server's response. A prefill that fails before the decode
/// answered is retried with a new room on another prefill server, and the decode request of
/// the failed try is dropped (its connection closed, so the engine frees it) — no orphan decode
/// requests left waiting for KV that will never come.
async fn concurrent_legs(
    st: Arc<State>,
    ep: Endpoint,
    req: Value,
    (tokens, text): (u64, Option<Arc<[u32]>>),
    stream: bool,
    deadline: Instant,
    started: Instant,
) -> Response {
    let mut tried = Vec::new();
    let mut last = None;
    let ctx_hashes = hashes_for(&st.context, &req, text.as_deref());
    let gen_hashes = hashes_for(&st.generation, &req, text.as_deref());
    for n in 0..=st.settings.max_retries {
        let Some(ctx_lease) = st.context.lease_for(&tried, tokens, ctx_hashes.as_ref()) else {
            break;
        };
        note_kv_pick(&st, &st.context, &ctx_lease, tokens);
        if n > 0 {
            st.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        tried.push(ctx_lease.index);
        let host = ctx_lease
            .worker
            .addr
            .rsplit_once(':')
            .map_or(ctx_lease.worker.addr.as_str(), |(h, _)| h)
            .to_string();
        let mut body = req.clone();
        crate::HandOff::bootstrap(
            &mut body,
            &host,
            st.settings.bootstrap_port(ctx_lease.index),
            room(),
        );
        let body = Outgoing::of(&st, &body);
        let exclude = same_server(&st, &ctx_lease.worker.addr);
        // The prefill leg runs on its own: once the decode server answers, it is only drained.
        let mut ctx_task = tokio::spawn({
            let st = st.clone();
            let body = body.clone();
            async move {
                let sent = Instant::now();
                let outcome = attempt(&st, "context", &ctx_lease, ep.path(), body, deadline).await;
                let outcome = match outcome {
                    Attempt::Ok(resp) => match read_body(resp, deadline).await {
                        Some(_) => Prefill::Done,
                        None => Prefill::Failed(format!(
                            "context {}: the response did not complete",
                            ctx_lease.worker.addr
                        )),
                    },
                    Attempt::Rejected(status, body) => Prefill::Rejected(status, body),
                    Attempt::Failed(e) => Prefill::Failed(e),
                    Attempt::Timeout => Prefill::Timeout,
                };
                st.metrics.context_time.observe(sent.elapsed());
                outcome
            }
        });
        let sent = Instant::now();
        let gen_leg = send_leg(
            &st,
            &st.generation,
            ep.path(),
            body,
            deadline,
            Pick {
                tokens,
                hashes: gen_hashes.clone(),
                reserved: None,
                tried: exclude,
            },
        );
        tokio::pin!(gen_leg);
        let leg = tokio::select! {
            ctx = &mut ctx_task => {
                match ctx.unwrap_or_else(|e| Prefill::Failed(format!("the context leg panicked: {e}"))) {
                    Prefill::Done => gen_leg.await,
                    Prefill::Rejected(status, body) => {
                        st.metrics.error(ErrorKind::WorkerRejected);
                        return passthrough(status, body);
                    }
                    Prefill::Failed(e) => {
                        last = Some(e);
                        continue;
                    }
                    Prefill::Timeout => return leg_error(&st, "context", LegError::Timeout),
                }
            }
            leg = &mut gen_leg => leg,
        };
        return match leg {
            Ok(Leg::Ok(lease, resp)) => {
                answer(st.clone(), lease, resp, stream, deadline, started, sent).await
            }
            Ok(Leg::Rejected(status, body)) => {
                ctx_task.abort();
                st.metrics.error(ErrorKind::WorkerRejected);
                passthrough(status, body)
            }
            Err(e) => {
                ctx_task.abort();
                leg_error(&st, "generation", e)
            }
        };
    }
    leg_error(
        &st,
        "context",
        match last {
            None => LegError::NoWorker,
            Some(e) => LegError::Upstream(e),
        },
    )
}

/// A fresh SGLang bootstrap room: a random 63-bit integer, as sglang-router makes them.
fn room() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.finish() >> 1
}

/// The generation pool's index of the server at `addr` (a server in both pools does not take
/// both legs of one request), unless it is the only generation server.
fn same_server(st: &State, addr: &str) -> Vec<usize> {
    st.generation
        .workers
        .iter()
        .position(|w| w.addr == addr && st.generation.workers.len() > 1)
        .into_iter()
        .collect()
}

async fn read_body(
    resp: hyper::Response<hyper::body::Incoming>,
    deadline: Instant,
) -> Option<Bytes> {
    tokio::time::timeout_at(deadline, resp.into_body().collect())
        .await
        .ok()?
        .ok()
        .map(|c| c.to_bytes())
}

fn leg_error(st: &State, role: &str, e: LegError) -> Response {
    match e {
        LegError::NoWorker => fail(
            st,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoWorker,
            format!("no healthy {role} server"),
        ),
        LegError::Upstream(msg) => fail(
            st,
            StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            format!("the {role} leg failed after every retry: {msg}"),
        ),
        LegError::Timeout => fail(
            st,
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Timeout,
            format!(
                "the request did not finish within {:?} ({role} leg)",
                st.settings.request_timeout
            ),
        ),
    }
}

fn passthrough(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Rough prompt size for token-balanced routing.
fn prompt_tokens(req: &Value) -> u64 {
    match &req["prompt"] {
        Value::Array(ids) => ids.len() as u64,
        Value::String(s) => s.split_whitespace().count() as u64,
        _ => 0,
    }
}

async fn handle(st: Arc<State>, ep: Endpoint, headers: &HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let deadline = started + st.settings.request_timeout;
    // JSON, or MessagePack as upstream's newest coordinator sends it (`X-TRTLLM-Msgpack: 1`).
    let msgpack = is_msgpack(headers.get(MSGPACK_HEADER).map(|v| v.as_bytes()));
    let mut req = match decode::<Value>(&body, msgpack) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return fail(
                &st,
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "the request body must be a JSON object",
            );
        }
        Err(e) => {
            let message = match e {
                BodyError::Json(e) => format!("invalid request body: {e}"),
                e @ BodyError::Msgpack(_) => e.to_string(),
            };
            return fail(&st, StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message);
        }
    };
    let stream = req["stream"].as_bool().unwrap_or(false);
    let counter = match ep {
        Endpoint::Completions => &st.metrics.completions,
        Endpoint::Chat => &st.metrics.chat,
    };
    counter[usize::from(!stream)].fetch_add(1, Ordering::Relaxed);
    if ep == Endpoint::Completions {
        // Upstream accepts one string or one list of token ids; `["x"]` means "x".
        let prompt = req["prompt"].take();
        req["prompt"] = match prompt {
            Value::String(_) => prompt,
            Value::Array(items) if items.iter().all(Value::is_u64) && !items.is_empty() => {
                Value::Array(items)
            }
            Value::Array(mut items) if items.len() == 1 && items[0].is_string() => items.remove(0),
            _ => {
                return fail(
                    &st,
                    StatusCode::BAD_REQUEST,
                    ErrorKind::BadRequest,
                    "the disaggregated server supports a single string prompt or one list of token ids",
                );
            }
        };
    } else if !req["messages"].is_array() {
        return fail(
            &st,
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            "messages must be a list",
        );
    }
    let text = text_ids(&st, ep, &req);
    let tokens = text
        .as_ref()
        .map_or_else(|| prompt_tokens(&req), |ids| ids.len() as u64);

    let whole = |req: &Value| Pick {
        tokens,
        hashes: hashes_for(&st.generation, req, text.as_deref()),
        ..Pick::default()
    };
    if st.settings.gen_only {
        // Upstream's gen-only benchmark mode: no context leg, a synthetic hand-off.
        req["disaggregated_params"] = json!({"request_type": "generation_only", "first_gen_tokens": [7],
            "ctx_request_id": 1, "encoded_opaque_state": null, "draft_tokens": null});
        req["ignore_eos"] = json!(true);
        let pick = whole(&req);
        return generation(st, ep, req, stream, deadline, started, pick).await;
    }

    let handoff = st.settings.handoff;
    if handoff.is_aggregated() {
        let pick = whole(&req);
        return generation(st, ep, req, stream, deadline, started, pick).await;
    }
    if handoff.concurrent() {
        return concurrent_legs(st, ep, req, (tokens, text), stream, deadline, started).await;
    }

    // Conditional disaggregation (upstream's `_check_conditional_disagg`): pick the generation
    // server first; one that holds part of the prompt and would have at most
    // `max_local_prefill_length` tokens left to prefill takes the request whole.
    let mut reserved = None;
    if let Some(max_local) = st.settings.max_local_prefill_length {
        let mut pick = whole(&req);
        if let Some(lease) = take(&st, &st.generation, &mut pick) {
            let matched = lease.matched_tokens;
            if matched > 0 && tokens.saturating_sub(matched) <= u64::from(max_local) {
                st.metrics.local_prefill.fetch_add(1, Ordering::Relaxed);
                pick.reserved = Some(lease);
                return generation(st, ep, req, stream, deadline, started, pick).await;
            }
            reserved = Some(lease);
        }
    }

    // Context leg (not on the reserved generation server, as upstream excludes it).
    let ctx_tried: Vec<usize> = reserved
        .as_ref()
        .and_then(|l| {
            st.context
                .workers
                .iter()
                .position(|w| w.addr == l.worker.addr && st.context.workers.len() > 1)
        })
        .into_iter()
        .collect();
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let mut ctx_req = req.clone();
    handoff.context_leg(&mut ctx_req, id);
    let ctx_body = Outgoing::of(&st, &ctx_req);
    let ctx_started = Instant::now();
    let ctx_pick = Pick {
        tokens,
        hashes: hashes_for(&st.context, &req, text.as_deref()),
        reserved: None,
        tried: ctx_tried,
    };
    let (ctx_lease, resp) =
        match send_leg(&st, &st.context, ep.path(), ctx_body, deadline, ctx_pick).await {
            Ok(Leg::Ok(lease, resp)) => (lease, resp),
            Ok(Leg::Rejected(status, body)) => {
                st.metrics.error(ErrorKind::WorkerRejected);
                return passthrough(status, body);
            }
            Err(e) => return leg_error(&st, "context", e),
        };
    let ctx_addr = ctx_lease.worker.addr.clone();
    let Some(ctx_bytes) = read_body(resp, deadline).await else {
        return fail(
            &st,
            StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            format!("context {ctx_addr}: the response body did not arrive"),
        );
    };
    drop(ctx_lease);
    st.metrics.context_time.observe(ctx_started.elapsed());
    let ctx: Value = match serde_json::from_slice(&ctx_bytes) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                &st,
                StatusCode::BAD_GATEWAY,
                ErrorKind::InvalidContext,
                format!("context {ctx_addr} answered invalid JSON: {e}"),
            );
        }
    };
    let choices = ctx["choices"].as_array().map_or(0, Vec::len);
    if choices != 1 {
        return fail(
            &st,
            StatusCode::BAD_GATEWAY,
            ErrorKind::InvalidContext,
            format!("context server {ctx_addr} returned {choices} choices, expecting 1"),
        );
    }
    if let Some(missing) = handoff.check_context(&ctx) {
        return fail(
            &st,
            StatusCode::BAD_GATEWAY,
            ErrorKind::InvalidContext,
            format!("context server {ctx_addr} returned {missing}"),
        );
    }
    if handoff.finished_at_context(&ctx) {
        st.metrics
            .finished_at_context
            .fetch_add(1, Ordering::Relaxed);
        st.metrics.request_time.observe(started.elapsed());
        return finished_at_context(
            ep,
            ctx,
            stream,
            req["stream_options"]["include_usage"] == json!(true),
        );
    }

    // Generation leg: the client's body with the context's hand-off (its prompt now the
    // context's token ids, which a kv_cache_aware pool hashes).
    handoff.generation_leg(&mut req, &ctx, ep == Endpoint::Chat);
    let pick = Pick {
        tokens,
        hashes: hashes_for(&st.generation, &req, text.as_deref()),
        reserved,
        tried: same_server(&st, &ctx_addr),
    };
    generation(st, ep, req, stream, deadline, started, pick).await
}

async fn generation(
    st: Arc<State>,
    ep: Endpoint,
    req: Value,
    stream: bool,
    deadline: Instant,
    started: Instant,
    pick: Pick,
) -> Response {
    let body = Outgoing::of(&st, &req);
    let sent = Instant::now();
    match send_leg(&st, &st.generation, ep.path(), body, deadline, pick).await {
        Ok(Leg::Ok(lease, resp)) => answer(st, lease, resp, stream, deadline, started, sent).await,
        Ok(Leg::Rejected(status, body)) => {
            st.metrics.error(ErrorKind::WorkerRejected);
            passthrough(status, body)
        }
        Err(e) => leg_error(&st, "generation", e),
    }
}

/// The client's answer from the generation server's: the whole body, or its stream relayed.
async fn answer(
    st: Arc<State>,
    lease: Lease,
    resp: hyper::Response<hyper::body::Incoming>,
    stream: bool,
    deadline: Instant,
    started: Instant,
    sent: Instant,
) -> Response {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    if !stream {
        let addr = lease.worker.addr.clone();
        let Some(bytes) = read_body(resp, deadline).await else {
            return fail(
                &st,
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                format!("generation {addr}: the response did not complete"),
            );
        };
        st.metrics.generation_ttft.observe(sent.elapsed());
        st.metrics.request_time.observe(started.elapsed());
        drop(lease);
        return (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response();
    }
    relay(
        st,
        lease,
        resp,
        status,
        content_type,
        deadline,
        started,
        sent,
    )
}

/// Stream the generation server's bytes to the client unchanged; end a broken stream with an
/// error event and `[DONE]`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn relay(
    st: Arc<State>,
    lease: Lease,
    resp: hyper::Response<hyper::body::Incoming>,
    status: StatusCode,
    content_type: HeaderValue,
    deadline: Instant,
    started: Instant,
    sent: Instant,
) -> Response {
    struct Relay {
        st: Arc<State>,
        body: hyper::body::Incoming,
        lease: Lease,
        first: bool,
        done: bool,
        /// The last bytes relayed: whether the stream ended at an event boundary, with `[DONE]`.
        tail: Vec<u8>,
    }
    impl Relay {
        fn keep_tail(&mut self, data: &[u8]) {
            self.tail
                .extend_from_slice(&data[data.len().saturating_sub(16)..]);
            let cut = self.tail.len().saturating_sub(16);
            self.tail.drain(..cut);
        }
        /// The error event that ends a broken stream, after a blank line when the stream was
        /// cut inside an event (else the error would be glued to the half event's line).
        fn broken(&self, msg: &str, code: u16) -> Bytes {
            let event = stream_error(msg, code);
            if self.tail.is_empty() || self.tail.ends_with(b"\n\n") {
                event
            } else {
                let mut out = b"\n\n".to_vec();
                out.extend_from_slice(&event);
                Bytes::from(out)
            }
        }
        fn ended_with_done(&self) -> bool {
            self.tail
                .trim_ascii_end()
                .ends_with(disagg_protocol::DONE.as_bytes())
        }
    }
    let state = Relay {
        st,
        body: resp.into_body(),
        lease,
        first: true,
        done: false,
        tail: Vec::with_capacity(32),
    };
    let stream = futures_util::stream::unfold(state, move |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            match tokio::time::timeout_at(deadline, r.body.frame()).await {
                Err(_) => {
                    r.done = true;
                    r.st.metrics.error(ErrorKind::Timeout);
                    let msg = format!(
                        "the request did not finish within {:?}; the stream was cut",
                        r.st.settings.request_timeout
                    );
                    let event = r.broken(&msg, 504);
                    return Some((Ok::<_, Infallible>(event), r));
                }
                Ok(None) if r.ended_with_done() => {
                    r.st.metrics.request_time.observe(started.elapsed());
                    if r.tail.ends_with(b"\n\n") {
                        return None;
                    }
                    // `data: [DONE]` without its blank line: end the event, or the client
                    // never sees it.
                    r.done = true;
                    return Some((Ok(Bytes::from_static(b"\n\n")), r));
                }
                Ok(None) => {
                    // A worker that closed the stream cleanly but early: the client still gets an
                    // error and [DONE], as when the worker dies.
                    r.done = true;
                    r.st.metrics.error(ErrorKind::StreamAborted);
                    let msg = format!(
                        "the generation server {} ended the stream before [DONE]",
                        r.lease.worker.addr
                    );
                    tracing::warn!(%msg);
                    let event = r.broken(&msg, 502);
                    return Some((Ok(event), r));
                }
                Ok(Some(Err(e))) => {
                    r.done = true;
                    r.st.metrics.error(ErrorKind::StreamAborted);
                    r.lease.worker.failures.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        "the generation server {} failed mid-stream: {e}",
                        r.lease.worker.addr
                    );
                    tracing::warn!(%msg);
                    let event = r.broken(&msg, 502);
                    return Some((Ok(event), r));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        r.keep_tail(&data);
                        if r.first {
                            r.first = false;
                            r.st.metrics.generation_ttft.observe(sent.elapsed());
                        }
                        return Some((Ok(data), r));
                    }
                }
            }
        }
    });
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out
}

/// Answer from the context leg alone (the model ended at its first token).
fn finished_at_context(
    ep: Endpoint,
    mut ctx: Value,
    stream: bool,
    include_usage: bool,
) -> Response {
    if let Some(choice) = ctx["choices"].get_mut(0).and_then(Value::as_object_mut) {
        choice.remove("disaggregated_params");
    }
    if let Some(obj) = ctx.as_object_mut() {
        obj.remove("prompt_token_ids");
    }
    if !stream {
        return axum::Json(ctx).into_response();
    }
    // The client asked for a stream: give it one, with the token (upstream sends only [DONE]).
    let choice = &ctx["choices"][0];
    let (object, delta) = match ep {
        Endpoint::Completions => (
            "text_completion",
            json!({"index": 0, "text": choice["text"], "logprobs": null, "finish_reason": choice["finish_reason"]}),
        ),
        Endpoint::Chat => (
            "chat.completion.chunk",
            json!({"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
                   "finish_reason": choice["finish_reason"]}),
        ),
    };
    let head = json!({"id": ctx["id"], "object": object, "created": ctx["created"], "model": ctx["model"]});
    let mut chunk = head.clone();
    chunk["choices"] = json!([delta]);
    let mut out = sse_data(&chunk.to_string());
    if include_usage && !ctx["usage"].is_null() {
        let mut usage = head;
        usage["choices"] = json!([]);
        usage["usage"] = ctx["usage"].clone();
        out.push_str(&sse_data(&usage.to_string()));
    }
    out.push_str(&sse_data(disagg_protocol::DONE));
    ([(header::CONTENT_TYPE, "text/event-stream")], out).into_response()
}

async fn health(AxState(st): AxState<Arc<State>>) -> Response {
    let down: Vec<String> = st
        .pools()
        .iter()
        .flat_map(|p| {
            p.workers
                .iter()
                .filter(|w| !w.is_healthy())
                .map(move |w| format!("{} {}", p.role, w.addr))
        })
        .collect();
    let pools_ok =
        (st.context.is_empty() || st.context.any_healthy()) && st.generation.any_healthy();
    if st.ready.load(Ordering::Acquire) && pools_ok {
        return (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "unhealthy": down})),
        )
            .into_response();
    }
    let status = if st.ready.load(Ordering::Acquire) {
        "degraded"
    } else {
        "starting"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": status, "unhealthy": down})),
    )
        .into_response()
}

async fn cluster_info(AxState(st): AxState<Arc<State>>) -> axum::Json<Value> {
    let pool = |p: &Pool| -> Value {
        p.workers
            .iter()
            .map(|w| json!({"url": w.addr, "healthy": w.is_healthy(), "in_flight": w.in_flight(),
                "requests": w.requests.load(Ordering::Relaxed), "failures": w.failures.load(Ordering::Relaxed)}))
            .collect()
    };
    axum::Json(json!({
        "is_ready": st.ready.load(Ordering::Acquire),
        "context_servers": pool(&st.context),
        "generation_servers": pool(&st.generation),
    }))
}

async fn get_json(st: &State, url: String) -> Option<Value> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .ok()?;
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let resp = tokio::time::timeout_at(deadline, st.client.request(req))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&read_body(resp, deadline).await?).ok()
}

async fn models(AxState(st): AxState<Arc<State>>) -> Response {
    for w in st.generation.workers.iter().filter(|w| w.is_healthy()) {
        if let Some(v) = get_json(&st, format!("{}/v1/models", w.base)).await {
            return axum::Json(v).into_response();
        }
    }
    fail(
        &st,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::NoWorker,
        "no healthy generation server to list the models",
    )
}

async fn metrics(AxState(st): AxState<Arc<State>>) -> Response {
    let text = st.metrics.render(&st.pools());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Every worker's `/perf_metrics`, joined by `ctx_request_id` (as upstream does).
async fn perf_metrics(AxState(st): AxState<Arc<State>>) -> axum::Json<Value> {
    let mut ctx_records = Vec::new();
    for w in &st.context.workers {
        if let Some(Value::Array(items)) = get_json(&st, format!("{}/perf_metrics", w.base)).await {
            ctx_records.extend(items.into_iter().map(|i| (w.addr.clone(), i)));
        }
    }
    let mut joined = Vec::new();
    for w in &st.generation.workers {
        if let Some(Value::Array(items)) = get_json(&st, format!("{}/perf_metrics", w.base)).await {
            for g in items {
                let id = &g["ctx_request_id"];
                if let Some((ctx_server, c)) = ctx_records
                    .iter()
                    .find(|(_, c)| &c["ctx_request_id"] == id && !id.is_null())
                {
                    joined.push(json!({"ctx_server": ctx_server, "gen_server": w.addr,
                        "ctx_perf_metrics": c, "gen_perf_metrics": g}));
                }
            }
        }
    }
    axum::Json(Value::Array(joined))
}
