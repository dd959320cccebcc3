//! The probes routers and load generators ask a worker: models, health, server and model info,
//! load.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use disagg_protocol::{ModelCard, ModelList};
use serde_json::{Value, json};

use super::{AppState, Role};

pub(super) async fn models(State(st): State<Arc<AppState>>) -> axum::Json<ModelList> {
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

pub(super) async fn health() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn server_info(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "model_path": st.cfg.model,
        "served_model_name": st.cfg.model,
        "tokenizer_path": st.cfg.model,
        "role": st.cfg.role.as_str(),
        "disaggregation_mode": match st.cfg.role { Role::Context => "prefill", Role::Generation => "decode", Role::Both => "null" },
        "max_seq_len": st.cfg.max_seq_len,
        "stream_interval": st.cfg.stream_interval,
        "disaggregated_params": {"ctx_info_endpoint": [st.cfg.issuer]},
        "kv_cache_hash_algo": disagg_protocol::kv_cache::HASH_ALGO_V1,
        "tokens_per_block": st.cfg.kv_cache.tokens_per_block,
        "engine": "disagg-sim",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub(super) async fn model_info(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(
        json!({"model_path": st.cfg.model, "tokenizer_path": st.cfg.model, "is_generation": true}),
    )
}

pub(super) async fn load(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    let s = st.engine.stats();
    let load = s.running.load(Ordering::Relaxed) + s.waiting.load(Ordering::Relaxed);
    axum::Json(json!({"load": load}))
}

/// `GET /steady_clock_offset`, as upstream's workers serve it (`openai_server.py`): when the
/// request was received and answered on the clock of `/perf_metrics` (seconds since the server
/// started, a steady clock), so a coordinator can estimate the offset the NTP way.
pub(super) async fn steady_clock_offset(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    let receive_ts = st.started.elapsed().as_secs_f64();
    let transmit_ts = st.started.elapsed().as_secs_f64();
    axum::Json(json!({"receive_ts": receive_ts, "transmit_ts": transmit_ts}))
}

/// `POST /steady_clock_offset {"offset": seconds}`: the coordinator tells the worker its clock
/// offset (upstream applies it to the timestamps of `/perf_metrics`); kept for those.
pub(super) async fn set_steady_clock_offset(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<StatusCode, super::error::ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| super::error::ApiError::bad(format!("invalid request body: {e}")))?;
    let offset = v["offset"].as_f64().ok_or_else(|| {
        super::error::ApiError::bad("steady_clock_offset needs {\"offset\": seconds}")
    })?;
    if let Ok(mut o) = st.clock_offset.lock() {
        *o = offset;
    }
    Ok(StatusCode::OK)
}

/// `POST /kv_cache_events`, as upstream's workers serve it (`openai_server.py`): every KV cache
/// event kept since the last call, oldest first (none unless `event_buffer_max_size` > 0).
pub(super) async fn kv_cache_events(
    State(st): State<Arc<AppState>>,
) -> axum::Json<Vec<disagg_protocol::kv_cache::KvCacheEvent>> {
    axum::Json(st.engine.drain_events())
}
