//! What a server measures: per-request timings for `/perf_metrics` (the shape of TensorRT-LLM's)
//! and Prometheus counters and gauges for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::generation::Generated;

/// Per-request timings for `/perf_metrics`, seconds since the server started (plus the
/// coordinator's clock offset once it posted one).
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct PerfRecord {
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

impl PerfRecord {
    /// The same timings `offset` seconds later (the coordinator's clock).
    fn shifted(mut self, offset: f64) -> PerfRecord {
        for t in [
            &mut self.arrival_time,
            &mut self.kv_transfer_end_time,
            &mut self.first_token_time,
            &mut self.last_token_time,
        ] {
            *t += offset;
        }
        self
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) client_errors: AtomicU64,
    pub(super) prompt_tokens: AtomicU64,
}

const PERF_KEEP: usize = 10_000;

pub(super) fn record(st: &AppState, g: &Generated, n: u32, first: f64, last: f64) {
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

pub(super) async fn perf_metrics(State(st): State<Arc<AppState>>) -> axum::Json<Vec<PerfRecord>> {
    // On the coordinator's clock once it told us the offset (`POST /steady_clock_offset`).
    let offset = st.clock_offset.lock().map_or(0.0, |o| *o);
    let records = st
        .perf
        .lock()
        .map(|mut q| q.drain(..).map(|r| r.shifted(offset)).collect())
        .unwrap_or_default();
    axum::Json(records)
}

pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    let c = &st.counters;
    let cap = s.kv_capacity.load(Ordering::Relaxed).max(1);
    let used = s.kv_used.load(Ordering::Relaxed);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let queried = load(&s.cache_query_tokens);
    let rows: [(&str, &str, &str, f64); 20] = [
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
        (
            "disagg_sim_kv_cache_cached_tokens",
            "gauge",
            "KV-cache tokens of reusable blocks no running sequence uses (evictable).",
            load(&s.kv_cached_free),
        ),
        (
            "disagg_sim_prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            queried,
        ),
        (
            "disagg_sim_prefix_cache_hits_total",
            "counter",
            "Prompt tokens whose KV came from the prefix cache.",
            load(&s.cache_hit_tokens),
        ),
        (
            "disagg_sim_prefix_cache_hit_ratio",
            "gauge",
            "Share of prompt tokens found in the prefix cache since start.",
            if queried > 0.0 {
                load(&s.cache_hit_tokens) / queried
            } else {
                0.0
            },
        ),
        (
            "disagg_sim_kv_cache_reused_blocks_total",
            "counter",
            "Prompt blocks reused from the cache (upstream's num_reused_blocks).",
            load(&s.reused_blocks),
        ),
        (
            "disagg_sim_kv_cache_missed_blocks_total",
            "counter",
            "Prompt blocks not in the cache (upstream's num_missed_blocks).",
            load(&s.missed_blocks),
        ),
        (
            "disagg_sim_kv_cache_evicted_blocks_total",
            "counter",
            "Cached blocks evicted to make room.",
            load(&s.evicted_blocks),
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
