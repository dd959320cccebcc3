//! Generation: a request's checks, its sequence in the engine's batch, and the whole
//! (non-streamed) answer. Streamed answers are rendered by `stream`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use disagg_protocol::{
    ChatChoice, ChatResponse, CompletionChoice, CompletionResponse, ResponseMessage, Sampling,
    Usage,
};

use super::error::{ApiError, refused};
use super::leg::{self, HandOff, Leg};
use super::metrics::record;
use super::request::Kind;
use super::stream::stream_response;
use super::{AppState, SimConfig, now_unix};
use crate::engine::{EngineError, Sequence};
use crate::scheduler::{PromptBlocks, SeqSpec};
use crate::text;
use disagg_protocol::kv_cache;

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

pub(super) async fn generate(
    st: &Arc<AppState>,
    kind: Kind,
    model: &str,
    prompt: Vec<u32>,
    s: &Sampling,
    max_completion_tokens: Option<i64>,
) -> Result<Response, ApiError> {
    let cfg = &st.cfg;
    let fail = |e: ApiError| refused(st, e);
    let (max_tokens, min_tokens) =
        check(cfg, model, &prompt, s, max_completion_tokens).map_err(fail)?;
    let leg = leg::leg_of(st, s, &prompt).map_err(fail)?;
    let hash = text::prompt_hash(cfg.seed, &prompt);
    let n_total = output_len(
        cfg,
        hash,
        max_tokens,
        min_tokens,
        s.ignore_eos.unwrap_or(false),
    );
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    st.counters
        .prompt_tokens
        .fetch_add(prompt.len() as u64, Ordering::Relaxed);

    let arrival = st.started.elapsed().as_secs_f64();
    if let Leg::Generation { .. } = leg {
        leg::receive_kv(cfg, s, prompt.len() as u32).await?;
    }
    let transferred = st.started.elapsed().as_secs_f64();
    let blocks = prompt_blocks(cfg, &prompt);
    let seq = submit(st, &leg, id, prompt.len() as u32, n_total, blocks).await?;
    let g = Generated {
        id,
        hash,
        first_token: leg
            .first_token()
            .unwrap_or_else(|| text::output_token(hash, 0)),
        prompt_len: prompt.len() as u32,
        max_tokens,
        arrival,
        transferred,
        ctx_request_id: leg.ctx_request_id(),
        leg: leg.name(),
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
    let (count, first_time, cached) = collect(st, seq).await?;
    let last_time = st.started.elapsed().as_secs_f64();
    record(st, &g, count, first_time, last_time);
    let tokens: Vec<u32> = (0..count).map(|p| g.token(p)).collect();
    let mut reply = Reply {
        text: render_text(&g, 0, tokens.len() as u32),
        created: now_unix(),
        usage: Usage::new(u64::from(g.prompt_len), tokens.len() as u64)
            .with_cached(u64::from(cached)),
        finish: finish_reason(&g, tokens.len() as u32),
        tokens,
        handoff: HandOff::default(),
    };
    if let Leg::Context { disagg_request_id } = leg {
        // The context leg answers `length` so the coordinator goes on to a generation server,
        // or `stop` when the simulated model ended at the first token.
        reply.finish = if n_total == 1 && max_tokens > 1 {
            "stop"
        } else {
            "length"
        };
        reply.handoff = leg::hand_off(st, s, &g, prompt, disagg_request_id);
    }
    let body = body(kind, model, id, reply).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The request against the server: its model, and a prompt and output that fit.
/// Returns `max_tokens` and `min_tokens`.
fn check(
    cfg: &SimConfig,
    model: &str,
    prompt: &[u32],
    s: &Sampling,
    max_completion_tokens: Option<i64>,
) -> Result<(u32, u32), ApiError> {
    if model != cfg.model {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{model}` does not exist; this server serves `{}`",
                cfg.model
            ),
        });
    }
    if prompt.is_empty() {
        return Err(ApiError::bad("the prompt is empty"));
    }
    let max_tokens = max_completion_tokens
        .or(s.max_tokens)
        .unwrap_or(i64::from(cfg.default_max_tokens));
    if max_tokens <= 0 {
        return Err(ApiError::bad(format!(
            "max_tokens must be at least 1, got {max_tokens}"
        )));
    }
    let min_tokens = s.min_tokens.unwrap_or(0);
    if min_tokens < 0 || min_tokens > max_tokens {
        return Err(ApiError::bad(format!(
            "min_tokens must be between 0 and max_tokens ({max_tokens}), got {min_tokens}"
        )));
    }
    let total = prompt.len() as i64 + max_tokens;
    if total > i64::from(cfg.max_seq_len) {
        return Err(ApiError::bad(format!(
            "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceeds max_seq_len ({})",
            prompt.len(),
            cfg.max_seq_len
        )));
    }
    Ok((max_tokens as u32, min_tokens as u32))
}

/// The prompt's full blocks, for the engine to reuse and publish (none without block reuse).
fn prompt_blocks(cfg: &SimConfig, prompt: &[u32]) -> Option<Arc<PromptBlocks>> {
    cfg.kv_cache.enable_block_reuse.then(|| {
        Arc::new(PromptBlocks {
            hashes: kv_cache::full_block_hashes(prompt, cfg.kv_cache.tokens_per_block),
            tokens: prompt.to_vec(),
        })
    })
}

/// Put the request in the engine's batch: a context leg makes one token, a generation leg
/// starts from handed-off KV (no prefill).
async fn submit(
    st: &AppState,
    leg: &Leg,
    id: u64,
    prompt_tokens: u32,
    n_total: u32,
    prefix: Option<Arc<PromptBlocks>>,
) -> Result<Sequence, ApiError> {
    let (output_tokens, handoff) = match leg {
        Leg::Context { .. } => (1, false),
        Leg::Generation { .. } => (n_total, true),
        Leg::Aggregated => (n_total, false),
    };
    st.engine
        .submit(SeqSpec {
            id,
            prompt_tokens,
            output_tokens,
            handoff,
            prefix,
        })
        .await
        .map_err(|e| match e {
            EngineError::Admit(a) => refused(st, ApiError::bad(a.to_string())),
            EngineError::Stopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the server is shutting down".into(),
            },
        })
}

/// A non-streamed answer, whatever its endpoint.
struct Reply {
    text: String,
    tokens: Vec<u32>,
    created: u64,
    usage: Usage,
    finish: &'static str,
    handoff: HandOff,
}

fn body(kind: Kind, model: &str, id: u64, r: Reply) -> serde_json::Result<Vec<u8>> {
    match kind {
        Kind::Completion => serde_json::to_vec(&CompletionResponse {
            id: format!("cmpl-{id}"),
            object: "text_completion".into(),
            created: r.created,
            model: model.to_string(),
            choices: vec![CompletionChoice {
                index: 0,
                text: r.text,
                token_ids: Some(r.tokens),
                logprobs: None,
                finish_reason: Some(r.finish.into()),
                disaggregated_params: r.handoff.disaggregated_params,
            }],
            usage: Some(r.usage),
            prompt_token_ids: r.handoff.prompt_token_ids,
            kv_transfer_params: r.handoff.kv_transfer_params,
        }),
        Kind::Chat => serde_json::to_vec(&ChatResponse {
            id: format!("chatcmpl-{id}"),
            object: "chat.completion".into(),
            created: r.created,
            model: model.to_string(),
            choices: vec![ChatChoice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: r.text,
                },
                finish_reason: Some(r.finish.into()),
                disaggregated_params: r.handoff.disaggregated_params,
            }],
            usage: Some(r.usage),
            prompt_token_ids: r.handoff.prompt_token_ids,
            kv_transfer_params: r.handoff.kv_transfer_params,
        }),
    }
}

/// What a request generates, enough to render any slice of its output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Generated {
    pub(super) id: u64,
    pub(super) hash: u64,
    pub(super) first_token: u32,
    pub(super) prompt_len: u32,
    pub(super) max_tokens: u32,
    pub(super) arrival: f64,
    pub(super) transferred: f64,
    pub(super) ctx_request_id: Option<u64>,
    /// `aggregated`, `context` or `generation`, for `/perf_metrics`.
    pub(super) leg: &'static str,
}

impl Generated {
    pub(super) fn token(&self, position: u32) -> u32 {
        if position == 0 {
            self.first_token
        } else {
            text::output_token(self.hash, position)
        }
    }
}

pub(super) fn finish_reason(g: &Generated, emitted: u32) -> &'static str {
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

/// A whole sequence: its tokens, the time of its first and its prompt tokens found cached.
async fn collect(st: &AppState, mut seq: Sequence) -> Result<(u32, f64, u32), ApiError> {
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
    Ok((count, first.unwrap_or_default(), seq.cached_tokens()))
}
