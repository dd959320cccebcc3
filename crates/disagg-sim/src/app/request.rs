//! Request parsing: the two OpenAI endpoints read their body and turn the prompt into token ids,
//! then hand over to `generation`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use disagg_protocol::auth::{self, Signed};
use disagg_protocol::body::{MSGPACK_HEADER, decode, is_msgpack};
use disagg_protocol::{ChatRequest, CompletionRequest, Prompt, Sampling};

use super::AppState;
use super::error::{ApiError, refused};
use super::generation::generate;

/// Which endpoint a request came in on, and so which response shape it gets.
pub(super) enum Kind {
    Completion,
    Chat,
}

/// The body as JSON, or as MessagePack when the coordinator marked it so (upstream's
/// `X-TRTLLM-Msgpack: 1`). Fields upstream's workers do not know are kept and ignored.
fn parse<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let msgpack = is_msgpack(headers.get(MSGPACK_HEADER).map(|v| v.as_bytes()));
    decode(body, msgpack).map_err(|e| refused(st, ApiError::bad(e.to_string())))
}

/// Upstream's internal request authentication (`disagg_auth.py`): with a key configured, a
/// request carrying `ctx_info_endpoint` or `encoded_opaque_state` must be signed with it.
/// Refused with 401 (upstream answers its generic error; see docs/upstream.md), the body naming
/// the header and the key.
fn authenticate(st: &AppState, headers: &HeaderMap, sampling: &Sampling) -> Result<(), ApiError> {
    let (Some(key), Some(params)) = (&st.cfg.auth_key, &sampling.disaggregated_params) else {
        return Ok(());
    };
    let (endpoint, state) = params.signed_fields();
    let header = headers
        .get(auth::INTERNAL_AUTH_HEADER)
        .map(|v| v.as_bytes());
    auth::check(key.expose_secret(), Signed::new(&endpoint, &state), header).map_err(|e| {
        refused(
            st,
            ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: e.to_string(),
            },
        )
    })
}

/// The body, or an OpenAI-shaped refusal when it could not be read (over axum's 2 MB limit,
/// cut off) instead of axum's plain-text rejection.
fn readable(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        refused(
            st,
            ApiError {
                status: e.status(),
                message: format!("the request body could not be read: {}", e.body_text()),
            },
        )
    })
}

pub(super) async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = readable(&st, body)?;
    let req: CompletionRequest = parse(&st, &headers, &body)?;
    authenticate(&st, &headers, &req.sampling)?;
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

pub(super) async fn chat(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = readable(&st, body)?;
    let req: ChatRequest = parse(&st, &headers, &body)?;
    authenticate(&st, &headers, &req.sampling)?;
    if req.messages.is_empty() && req.prompt_token_ids.is_none() {
        return Err(refused(&st, ApiError::bad("messages must not be empty")));
    }
    let prompt = match req.prompt_token_ids {
        Some(ids) => ids,
        // The simulator's chat template: a role marker before each message, one at the end.
        None => disagg_protocol::prompt::marker_chat_ids(&req.messages, &|t| st.cfg.tokenize(t)),
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
