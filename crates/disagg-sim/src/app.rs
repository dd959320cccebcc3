//! The HTTP face of the simulator: the OpenAI endpoints, the worker probes routers use, and the
//! three disaggregation handshakes.

mod bootstrap;
mod config;
mod error;
mod generation;
mod leg;
mod metrics;
mod probes;
mod request;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use tokio::time::Instant;

use crate::engine::Engine;

pub use config::{Protocol, Role, SimConfig, TextTokenizer, TokenizeFn};

struct AppState {
    cfg: SimConfig,
    engine: Engine,
    next_id: AtomicU64,
    counters: metrics::Counters,
    started: Instant,
    perf: Mutex<VecDeque<metrics::PerfRecord>>,
    rooms: Mutex<HashMap<String, Arc<bootstrap::Room>>>,
    /// The coordinator's clock minus ours, seconds (`POST /steady_clock_offset`).
    clock_offset: Mutex<f64>,
}

/// The app: every route, on a shared state. Serve it with [`crate::Sim`] or drive it in-process.
pub fn app(cfg: SimConfig, engine: Engine) -> Router {
    let state = Arc::new(AppState {
        cfg,
        engine,
        next_id: AtomicU64::new(1),
        counters: metrics::Counters::default(),
        started: Instant::now(),
        perf: Mutex::new(VecDeque::new()),
        rooms: Mutex::new(HashMap::new()),
        clock_offset: Mutex::new(0.0),
    });
    Router::new()
        .route("/v1/completions", post(request::completions))
        .route("/v1/chat/completions", post(request::chat))
        .route("/v1/models", get(probes::models))
        .route("/health", get(probes::health))
        .route("/server_info", get(probes::server_info))
        .route("/get_server_info", get(probes::server_info))
        .route("/model_info", get(probes::model_info))
        .route("/get_model_info", get(probes::model_info))
        .route("/get_load", get(probes::load))
        .route("/metrics", get(metrics::metrics))
        .route("/kv_cache_events", post(probes::kv_cache_events))
        .route("/perf_metrics", get(metrics::perf_metrics))
        .route(
            "/steady_clock_offset",
            get(probes::steady_clock_offset).post(probes::set_steady_clock_offset),
        )
        .route("/disagg_sim/bootstrap/{room}", get(bootstrap::bootstrap))
        .with_state(state)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
