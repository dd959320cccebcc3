//! The HTTP face of the simulator: the OpenAI endpoints, the worker probes routers use, and the
//! three disaggregation handshakes.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use disagg_protocol::{
    ChatChoice, ChatRequest, ChatResponse, CompletionChoice, CompletionRequest, CompletionResponse,
    DisaggregatedParams, ErrorResponse, ModelCard, ModelList, Prompt, REQUEST_CONTEXT_ONLY,
    ResponseMessage, Sampling, Usage,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::{Engine, EngineError, Sequence};
use crate::handoff;
use crate::scheduler::{CostModel, SeqSpec};
use crate::text;

/// Which legs a server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Prefill legs (and aggregated requests).
    Context,
    /// Decode legs (and aggregated requests).
    Generation,
    /// Everything.
    Both,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Context => "context",
            Role::Generation => "generation",
            Role::Both => "both",
        }
    }
}

/// Which disaggregation handshake the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TensorRT-LLM `disaggregated_params`.
    Trtllm,
    /// vLLM `kv_transfer_params` (NIXL connector, as vllm-router drives it).
    Vllm,
    /// SGLang `bootstrap_host/port/room` (as sglang-router drives it).
    Sglang,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Model name served; requests for another are refused.
    pub model: String,
    /// Legs taken.
    pub role: Role,
    /// Handshake.
    pub protocol: Protocol,
    /// Tokens per streamed chunk after the first.
    pub stream_interval: u32,
    /// Longest prompt + output.
    pub max_seq_len: u32,
    /// Output length when a request gives none.
    pub default_max_tokens: u32,
    /// Seed of the generated tokens.
    pub seed: u64,
    /// Chance that a token is the end of the output (0 = outputs always run to `max_tokens`).
    pub eos_probability: f64,
    /// Key of the hand-off digest, shared by the servers of one test.
    pub handoff_key: String,
    /// This server's name in the hand-offs it issues (its address once bound).
    pub issuer: String,
    /// Accept `generation_only` requests without an opaque state, as upstream's gen-only
    /// benchmark mode sends (`TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1`).
    pub accept_synthetic_handoff: bool,
    /// How long a decode leg waits for its prefill (SGLang).
    pub bootstrap_timeout: Duration,
    /// Cost model (for transfer times).
    pub cost: CostModel,
    /// How text prompts become token ids: a real tokenizer (so that prompt lengths, and with
    /// them prefill times, match what clients with that tokenizer meant), else one token per
    /// whitespace-separated word.
    pub tokenizer: Option<TextTokenizer>,
}

/// Text → token ids.
pub type TokenizeFn = dyn Fn(&str) -> Vec<u32> + Send + Sync;

/// A text → token ids function (the binary plugs in a Hugging Face tokenizer).
#[derive(Clone)]
pub struct TextTokenizer(pub Arc<TokenizeFn>);

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextTokenizer")
    }
}

impl SimConfig {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        match &self.tokenizer {
            Some(t) => (t.0)(text),
            None => text::tokenize(text),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "sim".to_string(),
            role: Role::Both,
            protocol: Protocol::Trtllm,
            stream_interval: 1,
            max_seq_len: 131_072,
            default_max_tokens: 16,
            seed: 0,
            eos_probability: 0.0,
            handoff_key: handoff::DEFAULT_KEY.to_string(),
            issuer: "sim".to_string(),
            accept_synthetic_handoff: false,
            bootstrap_timeout: Duration::from_secs(60),
            cost: CostModel::default(),
            tokenizer: None,
        }
    }
}

/// Per-request timings for `/perf_metrics`, seconds since the server started.
#[derive(Debug, Clone, serde::Serialize)]
struct PerfRecord {
    request_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctx_request_id: Option<u64>,
    leg: &'static str,
    prompt_tokens: u32,
    output_tokens: u32,
    arrival_time: f64,
    kv_transfer_end_time: f64,
    first_token_time: f64,
    last_token_time: f64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    client_errors: AtomicU64,
    prompt_tokens: AtomicU64,
}

struct AppState {
    cfg: SimConfig,
    engine: Engine,
    next_id: AtomicU64,
    counters: Counters,
    started: Instant,
    perf: Mutex<VecDeque<PerfRecord>>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

#[derive(Default)]
struct Room {
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

const PERF_KEEP: usize = 10_000;
const ROOMS_KEEP: usize = 100_000;

/// The app: every route, on a shared state. Serve it with [`crate::Sim`] or drive it in-process.
pub fn app(cfg: SimConfig, engine: Engine) -> Router {
    let state = Arc::new(AppState {
        cfg,
        engine,
        next_id: AtomicU64::new(1),
        counters: Counters::default(),
        started: Instant::now(),
        perf: Mutex::new(VecDeque::new()),
        rooms: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/server_info", get(server_info))
        .route("/get_server_info", get(server_info))
        .route("/model_info", get(model_info))
        .route("/get_model_info", get(model_info))
        .route("/get_load", get(load))
        .route("/metrics", get(metrics))
        .route("/perf_metrics", get(perf_metrics))
        .route("/disagg_sim/bootstrap/{room}", get(bootstrap))
        .with_state(state)
}

/// An error answered with an OpenAI-shaped body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        tracing::debug!(status = self.status.as_u16(), message = %self.message, "request refused");
        let body = ErrorResponse::new(self.message, kind, self.status.as_u16());
        (self.status, axum::Json(body)).into_response()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Count a refused request (for `/metrics`) and pass the error on.
fn refused(st: &AppState, e: ApiError) -> ApiError {
    st.counters.client_errors.fetch_add(1, Ordering::Relaxed);
    e
}

fn parse<T: serde::de::DeserializeOwned>(st: &AppState, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| refused(st, ApiError::bad(format!("invalid request body: {e}"))))
}

/// Which part of the work this request is.
#[derive(Debug, Clone, PartialEq)]
enum Leg {
    Aggregated,
    /// Prefill only; answer with the hand-off.
    Context {
        disagg_request_id: Option<u64>,
    },
    /// Decode only, after the hand-off; `first_token` is the context's token when known.
    Generation {
        first_token: Option<u32>,
        ctx_request_id: Option<u64>,
    },
}

enum Kind {
    Completion,
    Chat,
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&st, &body)?;
    let prompt = match req.prompt {
        Prompt::Text(t) => st.cfg.tokenize(&t),
        Prompt::Tokens(t) => t,
        Prompt::TextBatch(mut v) if v.len() == 1 => st.cfg.tokenize(&v.remove(0)),
        Prompt::TokenBatch(mut v) if v.len() == 1 => v.remove(0),
        _ => {
            return Err(refused(
                &st,
                ApiError::bad(
                    "only a single prompt (a string or a list of token ids) is supported",
                ),
            ));
        }
    };
    generate(
        &st,
        Kind::Completion,
        &req.model,
        prompt,
        &req.sampling,
        None,
    )
    .await
}

async fn chat(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&st, &body)?;
    if req.messages.is_empty() && req.prompt_token_ids.is_none() {
        return Err(refused(&st, ApiError::bad("messages must not be empty")));
    }
    let prompt = match req.prompt_token_ids {
        Some(ids) => ids,
        None => {
            // The simulator's chat template: a role marker before each message, one at the end.
            let mut ids = Vec::new();
            for m in &req.messages {
                ids.extend(st.cfg.tokenize(&format!("<|{}|>", m.role)));
                if let Some(c) = &m.content {
                    ids.extend(st.cfg.tokenize(&c.text()));
                }
            }
            ids.extend(st.cfg.tokenize("<|assistant|>"));
            ids
        }
    };
    generate(
        &st,
        Kind::Chat,
        &req.model,
        prompt,
        &req.sampling,
        req.max_completion_tokens,
    )
    .await
}

fn leg_of(st: &AppState, s: &Sampling, prompt: &[u32]) -> Result<Leg, ApiError> {
    let cfg = &st.cfg;
    let leg = match cfg.protocol {
        Protocol::Trtllm => match &s.disaggregated_params {
            Some(p) if p.is_context_only() => Leg::Context {
                disagg_request_id: p.disagg_request_id,
            },
            Some(p) if p.is_generation_only() => trtllm_generation(cfg, p, prompt)?,
            Some(p) => {
                return Err(ApiError::bad(format!(
                    "disaggregated_params.request_type must be context_only or generation_only, got {:?}",
                    p.request_type
                )));
            }
            None => Leg::Aggregated,
        },
        Protocol::Vllm => match &s.kv_transfer_params {
            Some(kv) if kv.get("do_remote_decode") == Some(&Value::Bool(true)) => Leg::Context {
                disagg_request_id: None,
            },
            Some(kv) if kv.get("do_remote_prefill") == Some(&Value::Bool(true)) => {
                let state = kv
                    .get("disagg_sim_state")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad(
                            "kv_transfer_params has do_remote_prefill but no disagg_sim_state: \
                         send the prefill response's kv_transfer_params unchanged",
                        )
                    })?;
                let h = handoff::verify(cfg.handoff_key.as_bytes(), state, prompt)
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                Leg::Generation {
                    first_token: None,
                    ctx_request_id: Some(h.ctx_request_id),
                }
            }
            _ => Leg::Aggregated,
        },
        Protocol::Sglang => match (&s.bootstrap_room, cfg.role) {
            (None, _) => Leg::Aggregated,
            (Some(_), Role::Context) => Leg::Context {
                disagg_request_id: None,
            },
            (Some(_), _) => Leg::Generation {
                first_token: None,
                ctx_request_id: None,
            },
        },
    };
    match (&leg, cfg.role) {
        (Leg::Context { .. }, Role::Generation) => Err(ApiError::bad(
            "this is a generation server; send context (prefill) legs to a context server",
        )),
        (Leg::Generation { .. }, Role::Context) => Err(ApiError::bad(
            "this is a context server; send generation (decode) legs to a generation server",
        )),
        _ => Ok(leg),
    }
}

fn trtllm_generation(
    cfg: &SimConfig,
    p: &DisaggregatedParams,
    prompt: &[u32],
) -> Result<Leg, ApiError> {
    let first = p.first_gen_tokens.as_ref().and_then(|t| t.first().copied());
    match (&p.encoded_opaque_state, p.ctx_request_id, first) {
        (Some(state), _, Some(first)) => {
            let h = handoff::verify(cfg.handoff_key.as_bytes(), state, prompt)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            if h.first_token != first || Some(h.ctx_request_id) != p.ctx_request_id {
                return Err(ApiError::bad(
                    "disaggregated_params.first_gen_tokens / ctx_request_id do not match the hand-off \
                     the context server issued; forward the context response's disaggregated_params unchanged",
                ));
            }
            Ok(Leg::Generation {
                first_token: Some(first),
                ctx_request_id: Some(h.ctx_request_id),
            })
        }
        (None, Some(id), Some(first)) if cfg.accept_synthetic_handoff => Ok(Leg::Generation {
            first_token: Some(first),
            ctx_request_id: Some(id),
        }),
        _ => Err(ApiError::bad(
            "generation_only request without a context hand-off: disaggregated_params needs \
             ctx_request_id, first_gen_tokens and encoded_opaque_state from a context server's response",
        )),
    }
}

/// How many tokens a request produces: `max_tokens`, or fewer when the simulated model "ends"
/// (each token past `min_tokens` ends the output with `eos_probability`, drawn from the prompt).
fn output_len(cfg: &SimConfig, hash: u64, max: u32, min: u32, ignore_eos: bool) -> u32 {
    if ignore_eos || cfg.eos_probability <= 0.0 {
        return max;
    }
    (min.max(1)..max)
        .find(|&k| text::unit(hash, u64::from(k)) < cfg.eos_probability)
        .unwrap_or(max)
}

async fn generate(
    st: &Arc<AppState>,
    kind: Kind,
    model: &str,
    prompt: Vec<u32>,
    s: &Sampling,
    max_completion_tokens: Option<i64>,
) -> Result<Response, ApiError> {
    let cfg = &st.cfg;
    let fail = |e: ApiError| refused(st, e);
    if model != cfg.model {
        return Err(fail(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{model}` does not exist; this server serves `{}`",
                cfg.model
            ),
        }));
    }
    if prompt.is_empty() {
        return Err(fail(ApiError::bad("the prompt is empty")));
    }
    let max_tokens = max_completion_tokens
        .or(s.max_tokens)
        .unwrap_or(i64::from(cfg.default_max_tokens));
    if max_tokens <= 0 {
        return Err(fail(ApiError::bad(format!(
            "max_tokens must be at least 1, got {max_tokens}"
        ))));
    }
    let min_tokens = s.min_tokens.unwrap_or(0);
    if min_tokens < 0 || min_tokens > max_tokens {
        return Err(fail(ApiError::bad(format!(
            "min_tokens must be between 0 and max_tokens ({max_tokens}), got {min_tokens}"
        ))));
    }
    let total = prompt.len() as i64 + max_tokens;
    if total > i64::from(cfg.max_seq_len) {
        return Err(fail(ApiError::bad(format!(
            "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceeds max_seq_len ({})",
            prompt.len(),
            cfg.max_seq_len
        ))));
    }
    let leg = leg_of(st, s, &prompt).map_err(fail)?;
    let max_tokens = max_tokens as u32;
    let hash = text::prompt_hash(cfg.seed, &prompt);
    let n_total = output_len(
        cfg,
        hash,
        max_tokens,
        min_tokens as u32,
        s.ignore_eos.unwrap_or(false),
    );
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    st.counters
        .prompt_tokens
        .fetch_add(prompt.len() as u64, Ordering::Relaxed);

    let arrival = st.started.elapsed().as_secs_f64();
    if let Leg::Generation { .. } = leg {
        if cfg.protocol == Protocol::Sglang {
            wait_for_prefill(cfg, s).await?;
        }
        // The KV cache crosses the wire before decoding starts. (A zero sleep would still wait
        // for the next timer tick, ~1 ms, so skip it.)
        let transfer = cfg.cost.transfer_time(prompt.len() as u32);
        if !transfer.is_zero() {
            tokio::time::sleep(transfer).await;
        }
    }
    let transferred = st.started.elapsed().as_secs_f64();
    let (output_tokens, handoff) = match leg {
        Leg::Context { .. } => (1, false),
        Leg::Generation { .. } => (n_total, true),
        Leg::Aggregated => (n_total, false),
    };
    let seq = st
        .engine
        .submit(SeqSpec {
            id,
            prompt_tokens: prompt.len() as u32,
            output_tokens,
            handoff,
        })
        .await
        .map_err(|e| match e {
            EngineError::Admit(a) => fail(ApiError::bad(a.to_string())),
            EngineError::Stopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the server is shutting down".into(),
            },
        })?;
    let first_token = match leg {
        Leg::Generation {
            first_token: Some(t),
            ..
        } => t,
        _ => text::output_token(hash, 0),
    };
    let g = Generated {
        id,
        hash,
        first_token,
        prompt_len: prompt.len() as u32,
        max_tokens,
        arrival,
        transferred,
        ctx_request_id: match leg {
            Leg::Generation { ctx_request_id, .. } => ctx_request_id,
            _ => None,
        },
        leg: match leg {
            Leg::Aggregated => "aggregated",
            Leg::Context { .. } => "context",
            Leg::Generation { .. } => "generation",
        },
    };
    let stream = s.stream.unwrap_or(false) && !matches!(leg, Leg::Context { .. });
    let include_usage = s
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if stream {
        return Ok(stream_response(
            st.clone(),
            kind,
            model.to_string(),
            seq,
            g,
            include_usage,
        ));
    }
    let (count, first_time) = collect(st, seq).await?;
    let last_time = st.started.elapsed().as_secs_f64();
    record(st, &g, count, first_time, last_time);
    let tokens: Vec<u32> = (0..count).map(|p| g.token(p)).collect();
    let text_out = render_text(&g, 0, tokens.len() as u32);
    let created = now_unix();
    let usage = Usage::new(u64::from(g.prompt_len), tokens.len() as u64);
    let mut finish = finish_reason(&g, tokens.len() as u32);
    let mut disagg = None;
    let mut kv_transfer = None;
    let mut prompt_ids = None;
    if let Leg::Context { disagg_request_id } = leg {
        // The context leg answers `length` so the coordinator goes on to a generation server,
        // or `stop` when the simulated model ended at the first token.
        finish = if n_total == 1 && max_tokens > 1 {
            "stop"
        } else {
            "length"
        };
        let state = handoff::issue(
            cfg.handoff_key.as_bytes(),
            &cfg.issuer,
            id,
            first_token,
            &prompt,
        );
        match cfg.protocol {
            Protocol::Trtllm => {
                let mut extra = serde_json::Map::new();
                extra.insert("ctx_dp_rank".into(), json!(0));
                disagg = Some(DisaggregatedParams {
                    request_type: Some(REQUEST_CONTEXT_ONLY.into()),
                    first_gen_tokens: Some(vec![first_token]),
                    ctx_request_id: Some(id),
                    encoded_opaque_state: Some(state),
                    draft_tokens: None,
                    disagg_request_id,
                    schedule_style: None,
                    ctx_usage: None,
                    extra,
                });
                prompt_ids = Some(prompt.clone());
            }
            Protocol::Vllm => {
                kv_transfer = Some(json!({
                    "do_remote_prefill": true,
                    "do_remote_decode": false,
                    "remote_block_ids": (0..g.prompt_len.div_ceil(16)).collect::<Vec<u32>>(),
                    "remote_engine_id": cfg.issuer,
                    "remote_host": cfg.issuer.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h),
                    "remote_port": cfg.issuer.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()),
                    "tp_size": cfg.cost.tensor_parallel,
                    "disagg_sim_state": state,
                }));
            }
            Protocol::Sglang => {
                if let Some(room) = &s.bootstrap_room {
                    mark_room_done(st, &room.to_string());
                }
            }
        }
    }
    let body = match kind {
        Kind::Completion => serde_json::to_vec(&CompletionResponse {
            id: format!("cmpl-{id}"),
            object: "text_completion".into(),
            created,
            model: model.to_string(),
            choices: vec![CompletionChoice {
                index: 0,
                text: text_out,
                token_ids: Some(tokens),
                logprobs: None,
                finish_reason: Some(finish.into()),
                disaggregated_params: disagg,
            }],
            usage: Some(usage),
            prompt_token_ids: prompt_ids,
            kv_transfer_params: kv_transfer,
        }),
        Kind::Chat => serde_json::to_vec(&ChatResponse {
            id: format!("chatcmpl-{id}"),
            object: "chat.completion".into(),
            created,
            model: model.to_string(),
            choices: vec![ChatChoice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: text_out,
                },
                finish_reason: Some(finish.into()),
                disaggregated_params: disagg,
            }],
            usage: Some(usage),
            prompt_token_ids: prompt_ids,
            kv_transfer_params: kv_transfer,
        }),
    }
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// What a request generates, enough to render any slice of its output.
#[derive(Debug, Clone, Copy)]
struct Generated {
    id: u64,
    hash: u64,
    first_token: u32,
    prompt_len: u32,
    max_tokens: u32,
    arrival: f64,
    transferred: f64,
    ctx_request_id: Option<u64>,
    /// `aggregated`, `context` or `generation`, for `/perf_metrics`.
    leg: &'static str,
}

impl Generated {
    fn token(&self, position: u32) -> u32 {
        if position == 0 {
            self.first_token
        } else {
            text::output_token(self.hash, position)
        }
    }
}

fn finish_reason(g: &Generated, emitted: u32) -> &'static str {
    if emitted < g.max_tokens {
        "stop"
    } else {
        "length"
    }
}

fn render_text(g: &Generated, from: u32, to: u32) -> String {
    let mut s = String::with_capacity(((to - from) * 8) as usize);
    for p in from..to {
        text::push_text(&mut s, g.token(p));
    }
    s
}

/// Wait for every token; returns the count and when the first arrived.
async fn collect(st: &AppState, mut seq: Sequence) -> Result<(u32, f64), ApiError> {
    let mut count = 0u32;
    let mut first = None;
    loop {
        match seq.next().await {
            Some(d) => {
                count += d.tokens;
                first.get_or_insert_with(|| st.started.elapsed().as_secs_f64());
                if d.finished {
                    break;
                }
            }
            None => {
                return Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the engine stopped before the request finished".into(),
                });
            }
        }
    }
    Ok((count, first.unwrap_or_default()))
}

fn record(st: &AppState, g: &Generated, n: u32, first: f64, last: f64) {
    let rec = PerfRecord {
        request_id: g.id,
        ctx_request_id: g.ctx_request_id.or((g.leg == "context").then_some(g.id)),
        leg: g.leg,
        prompt_tokens: g.prompt_len,
        output_tokens: n,
        arrival_time: g.arrival,
        kv_transfer_end_time: g.transferred,
        first_token_time: first,
        last_token_time: last,
    };
    if let Ok(mut q) = st.perf.lock() {
        if q.len() >= PERF_KEEP {
            q.pop_front();
        }
        q.push_back(rec);
    }
}

/// The streaming body. Chunks are written from a pre-rendered prefix and suffix (the hot path
/// of a load test); a test parses them back into the protocol types.
fn stream_response(
    st: Arc<AppState>,
    kind: Kind,
    model: String,
    seq: Sequence,
    g: Generated,
    include_usage: bool,
) -> Response {
    let created = now_unix();
    let (prefix, role_prefix, mid) = match kind {
        Kind::Completion => (
            format!(
                "data: {{\"id\":\"cmpl-{}\",\"object\":\"text_completion\",\"created\":{created},\"model\":{},\"choices\":[{{\"index\":0,\"text\":\"",
                g.id,
                json!(model)
            ),
            None,
            "\",\"logprobs\":null,\"finish_reason\":",
        ),
        Kind::Chat => {
            let head = format!(
                "data: {{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{",
                g.id,
                json!(model)
            );
            (
                format!("{head}\"content\":\""),
                Some(format!("{head}\"role\":\"assistant\",\"content\":\"")),
                "\"},\"finish_reason\":",
            )
        }
    };
    let usage_head = match kind {
        Kind::Completion => format!(
            "data: {{\"id\":\"cmpl-{}\",\"object\":\"text_completion\",\"created\":{created},\"model\":{},\"choices\":[],\"usage\":",
            g.id,
            json!(model)
        ),
        Kind::Chat => format!(
            "data: {{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"choices\":[],\"usage\":",
            g.id,
            json!(model)
        ),
    };
    let interval = st.cfg.stream_interval.max(1);
    struct S {
        st: Arc<AppState>,
        seq: Sequence,
        emitted: u32,
        available: u32,
        done: bool,
        first_time: Option<f64>,
        // The pre-rendered frame pieces live in the state: nothing is copied per chunk.
        prefix: String,
        role_prefix: Option<String>,
        usage_head: String,
    }
    let state = S {
        st,
        seq,
        emitted: 0,
        available: 0,
        done: false,
        first_time: None,
        prefix,
        role_prefix,
        usage_head,
    };
    let stream = futures_util::stream::unfold(state, move |mut s| {
        async move {
            if s.done {
                return None;
            }
            let mut out = String::new();
            loop {
                // When the client is behind, take every delivery already queued and write their
                // events in one frame (fewer syscalls); each token still gets its own event.
                let next = if out.is_empty() {
                    s.seq.next().await
                } else {
                    match s.seq.try_next() {
                        Some(d) => Some(d),
                        None => return Some((Ok(Bytes::from(out)), s)),
                    }
                };
                let Some(d) = next else {
                    // Engine stopped: end the stream with an error event the client can parse.
                    out.push_str("data: {\"error\":{\"message\":\"the engine stopped\",\"type\":\"server_error\",\"code\":503}}\n\n");
                    s.done = true;
                    return Some((Ok::<_, Infallible>(Bytes::from(out)), s));
                };
                s.available += d.tokens;
                let finished = d.finished;
                // First token at once; then every `interval` tokens; the rest at the end.
                while s.available > s.emitted {
                    let pending = s.available - s.emitted;
                    let take = if s.emitted == 0 {
                        1
                    } else if finished {
                        pending
                    } else if pending >= interval {
                        interval
                    } else {
                        break;
                    };
                    let last = finished && s.emitted + take == s.available;
                    let head = match (&s.role_prefix, s.emitted) {
                        (Some(r), 0) => r.as_str(),
                        _ => s.prefix.as_str(),
                    };
                    out.push_str(head);
                    for p in s.emitted..s.emitted + take {
                        text::push_text(&mut out, g.token(p));
                    }
                    out.push_str(mid);
                    if last {
                        out.push('"');
                        out.push_str(finish_reason(&g, s.available));
                        out.push('"');
                    } else {
                        out.push_str("null");
                    }
                    out.push_str("}]}\n\n");
                    s.emitted += take;
                    if s.first_time.is_none() {
                        s.first_time = Some(s.st.started.elapsed().as_secs_f64());
                    }
                }
                if finished {
                    if include_usage {
                        let u = Usage::new(u64::from(g.prompt_len), u64::from(s.available));
                        out.push_str(&s.usage_head);
                        out.push_str(&serde_json::to_string(&u).unwrap_or_default());
                        out.push_str("}\n\n");
                    }
                    out.push_str("data: [DONE]\n\n");
                    s.done = true;
                    let last = s.st.started.elapsed().as_secs_f64();
                    record(&s.st, &g, s.available, s.first_time.unwrap_or(last), last);
                }
                if s.done {
                    return Some((Ok(Bytes::from(out)), s));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn mark_room_done(st: &AppState, room: &str) {
    let Ok(mut rooms) = st.rooms.lock() else {
        return;
    };
    if rooms.len() >= ROOMS_KEEP {
        rooms.retain(|_, r| !r.done.load(Ordering::Relaxed));
    }
    let r = rooms.entry(room.to_string()).or_default().clone();
    r.done.store(true, Ordering::Release);
    r.notify.notify_waiters();
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

/// SGLang hand-off: a decode server long-polls its prefill server until the room's prefill is
/// done.
async fn bootstrap(
    State(st): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(q): Query<WaitQuery>,
) -> StatusCode {
    let r = {
        let Ok(mut rooms) = st.rooms.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        rooms.entry(room.clone()).or_default().clone()
    };
    let deadline = Duration::from_millis(q.timeout_ms.unwrap_or(60_000));
    let wait = async {
        loop {
            let notified = r.notify.notified();
            if r.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    };
    match tokio::time::timeout(deadline, wait).await {
        Ok(()) => {
            if let Ok(mut rooms) = st.rooms.lock() {
                rooms.remove(&room);
            }
            StatusCode::OK
        }
        Err(_) => StatusCode::REQUEST_TIMEOUT,
    }
}

async fn wait_for_prefill(cfg: &SimConfig, s: &Sampling) -> Result<(), ApiError> {
    let (Some(host), Some(port), Some(room)) =
        (&s.bootstrap_host, &s.bootstrap_port, &s.bootstrap_room)
    else {
        return Err(ApiError::bad(
            "a decode request needs bootstrap_host, bootstrap_port and bootstrap_room",
        ));
    };
    let host = host.as_str().unwrap_or("127.0.0.1").to_string();
    let port = port.as_u64().ok_or_else(|| {
        ApiError::bad(
            "bootstrap_port is null: start the router with the prefill server's bootstrap port",
        )
    })?;
    let path = format!(
        "/disagg_sim/bootstrap/{room}?timeout_ms={}",
        cfg.bootstrap_timeout.as_millis()
    );
    let status = crate::client::get_status(
        &host,
        port as u16,
        &path,
        cfg.bootstrap_timeout + Duration::from_secs(5),
    )
    .await
    .map_err(|e| ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: format!("cannot reach the prefill server's bootstrap at {host}:{port}: {e}"),
    })?;
    if status != 200 {
        return Err(ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "the prefill of bootstrap_room {room} did not complete (bootstrap answered {status})"
            ),
        });
    }
    Ok(())
}

async fn models(State(st): State<Arc<AppState>>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: st.cfg.model.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "disagg-sim".into(),
        }],
    })
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn server_info(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "model_path": st.cfg.model,
        "served_model_name": st.cfg.model,
        "tokenizer_path": st.cfg.model,
        "role": st.cfg.role.as_str(),
        "disaggregation_mode": match st.cfg.role { Role::Context => "prefill", Role::Generation => "decode", Role::Both => "null" },
        "max_seq_len": st.cfg.max_seq_len,
        "stream_interval": st.cfg.stream_interval,
        "disaggregated_params": {"ctx_info_endpoint": [st.cfg.issuer]},
        "engine": "disagg-sim",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn model_info(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(
        json!({"model_path": st.cfg.model, "tokenizer_path": st.cfg.model, "is_generation": true}),
    )
}

async fn load(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    let s = st.engine.stats();
    let load = s.running.load(Ordering::Relaxed) + s.waiting.load(Ordering::Relaxed);
    axum::Json(json!({"load": load}))
}

async fn perf_metrics(State(st): State<Arc<AppState>>) -> axum::Json<Vec<PerfRecord>> {
    let records = st
        .perf
        .lock()
        .map(|mut q| q.drain(..).collect())
        .unwrap_or_default();
    axum::Json(records)
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    let c = &st.counters;
    let cap = s.kv_capacity.load(Ordering::Relaxed).max(1);
    let used = s.kv_used.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, f64); 13] = [
        (
            "disagg_sim_requests_running",
            "gauge",
            "Sequences admitted to the running batch.",
            s.running.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_requests_waiting",
            "gauge",
            "Sequences queued for a slot or KV space.",
            s.waiting.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_kv_cache_used_tokens",
            "gauge",
            "KV-cache tokens reserved.",
            used as f64,
        ),
        (
            "disagg_sim_kv_cache_capacity_tokens",
            "gauge",
            "KV-cache capacity in tokens.",
            cap as f64,
        ),
        (
            "disagg_sim_kv_cache_usage_ratio",
            "gauge",
            "Reserved share of the KV cache.",
            used as f64 / cap as f64,
        ),
        (
            "disagg_sim_requests_total",
            "counter",
            "Requests accepted.",
            c.requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_request_errors_total",
            "counter",
            "Requests refused with a 4xx.",
            c.client_errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_requests_finished_total",
            "counter",
            "Sequences that produced all their tokens.",
            s.finished.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_requests_cancelled_total",
            "counter",
            "Sequences dropped because the client went away.",
            s.cancelled.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_prompt_tokens_total",
            "counter",
            "Prompt tokens received.",
            c.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_prefill_tokens_total",
            "counter",
            "Prompt tokens prefilled (hand-offs are not).",
            s.prefill_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_generation_tokens_total",
            "counter",
            "Tokens generated.",
            s.generated_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "disagg_sim_steps_total",
            "counter",
            "Engine iterations.",
            s.steps.load(Ordering::Relaxed) as f64,
        ),
    ];
    let role = st.cfg.role.as_str();
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{role=\"{role}\"}} {v}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
