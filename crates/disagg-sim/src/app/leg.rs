//! The leg of a disaggregated request a server takes: which one a request asks for (from the
//! protocol's own fields), how a generation leg proves its hand-off and waits for the KV cache,
//! and what a context leg hands on.

use disagg_protocol::{DisaggregatedParams, REQUEST_CONTEXT_ONLY, Sampling};
use serde_json::{Value, json};

use super::bootstrap::{mark_room_done, wait_for_prefill};
use super::error::ApiError;
use super::generation::Generated;
use super::{AppState, Protocol, Role, SimConfig};
use crate::handoff;

/// Which part of the work this request is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Leg {
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

impl Leg {
    /// `aggregated`, `context` or `generation`, for `/perf_metrics`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Leg::Aggregated => "aggregated",
            Leg::Context { .. } => "context",
            Leg::Generation { .. } => "generation",
        }
    }

    /// The context's first token, when a generation leg was handed it.
    pub(super) fn first_token(&self) -> Option<u32> {
        match self {
            Leg::Generation { first_token, .. } => *first_token,
            _ => None,
        }
    }

    /// The context leg's request id, when a generation leg knows it.
    pub(super) fn ctx_request_id(&self) -> Option<u64> {
        match self {
            Leg::Generation { ctx_request_id, .. } => *ctx_request_id,
            _ => None,
        }
    }
}

pub(super) fn leg_of(st: &AppState, s: &Sampling, prompt: &[u32]) -> Result<Leg, ApiError> {
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

/// A generation leg's wait for the context's KV cache: the SGLang bootstrap, then the transfer.
pub(super) async fn receive_kv(
    cfg: &SimConfig,
    s: &Sampling,
    prompt_len: u32,
) -> Result<(), ApiError> {
    if cfg.protocol == Protocol::Sglang {
        wait_for_prefill(cfg, s).await?;
    }
    // The KV cache crosses the wire before decoding starts. (A zero sleep would still wait
    // for the next timer tick, ~1 ms, so skip it.)
    let transfer = cfg.cost.transfer_time(prompt_len);
    if !transfer.is_zero() {
        tokio::time::sleep(transfer).await;
    }
    Ok(())
}

/// What a context leg's answer carries for the generation leg, in its protocol's fields.
#[derive(Debug, Default)]
pub(super) struct HandOff {
    pub(super) disaggregated_params: Option<DisaggregatedParams>,
    pub(super) kv_transfer_params: Option<Value>,
    pub(super) prompt_token_ids: Option<Vec<u32>>,
}

/// Issue a context leg's hand-off once its prefill is done (SGLang: release the decode server
/// waiting on the room).
pub(super) fn hand_off(
    st: &AppState,
    s: &Sampling,
    g: &Generated,
    prompt: Vec<u32>,
    disagg_request_id: Option<u64>,
) -> HandOff {
    let cfg = &st.cfg;
    let state = handoff::issue(
        cfg.handoff_key.as_bytes(),
        &cfg.issuer,
        g.id,
        g.first_token,
        &prompt,
    );
    let mut out = HandOff::default();
    match cfg.protocol {
        Protocol::Trtllm => {
            let mut extra = serde_json::Map::new();
            extra.insert("ctx_dp_rank".into(), json!(0));
            out.disaggregated_params = Some(DisaggregatedParams {
                request_type: Some(REQUEST_CONTEXT_ONLY.into()),
                first_gen_tokens: Some(vec![g.first_token]),
                ctx_request_id: Some(g.id),
                encoded_opaque_state: Some(state),
                draft_tokens: None,
                disagg_request_id,
                schedule_style: None,
                ctx_usage: None,
                extra,
            });
            out.prompt_token_ids = Some(prompt);
        }
        Protocol::Vllm => {
            out.kv_transfer_params = Some(json!({
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
    out
}
