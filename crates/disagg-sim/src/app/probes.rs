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
