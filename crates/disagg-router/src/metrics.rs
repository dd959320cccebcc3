//! Counters and histograms, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::Pool;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 16],
    over: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        match BUCKETS.iter().position(|b| s <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.over.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Why a request failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client's request was invalid.
    BadRequest,
    /// A worker answered 4xx (passed through).
    WorkerRejected,
    /// No healthy worker in a pool.
    NoWorker,
    /// Workers failed after every retry.
    Upstream,
    /// The context response broke the protocol.
    InvalidContext,
    /// The request deadline passed.
    Timeout,
    /// A stream ended early (worker died mid-stream).
    StreamAborted,
}

impl ErrorKind {
    const ALL: [ErrorKind; 7] = [
        ErrorKind::BadRequest,
        ErrorKind::WorkerRejected,
        ErrorKind::NoWorker,
        ErrorKind::Upstream,
        ErrorKind::InvalidContext,
        ErrorKind::Timeout,
        ErrorKind::StreamAborted,
    ];

    fn label(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::WorkerRejected => "worker_rejected",
            ErrorKind::NoWorker => "no_healthy_worker",
            ErrorKind::Upstream => "upstream",
            ErrorKind::InvalidContext => "invalid_context_response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::StreamAborted => "stream_aborted",
        }
    }
}

/// Everything the router counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Completions requests, streaming / not.
    pub completions: [AtomicU64; 2],
    /// Chat requests, streaming / not.
    pub chat: [AtomicU64; 2],
    errors: [AtomicU64; 7],
    /// Retries to another worker.
    pub retries: AtomicU64,
    /// Requests answered from the context leg alone.
    pub finished_at_context: AtomicU64,
    /// Requests conditional disaggregation sent whole to a generation server.
    pub local_prefill: AtomicU64,
    /// Prompt tokens routed by a kv_cache_aware pool, per pool (context, generation).
    pub kv_prompt_tokens: [AtomicU64; 2],
    /// Of those, tokens of leading blocks the chosen worker was known to hold.
    pub kv_matched_tokens: [AtomicU64; 2],
    /// Block updates read from workers' KV cache events.
    pub kv_events: AtomicU64,
    /// Failed reads of workers' KV cache events.
    pub kv_event_errors: AtomicU64,
    /// Text-prompt requests a kv_cache_aware pool routed by load alone: no tokenizer could
    /// take their text.
    pub untokenized: AtomicU64,
    /// Context leg duration.
    pub context_time: Histogram,
    /// From sending the generation leg to its first byte.
    pub generation_ttft: Histogram,
    /// Whole request, to the last byte.
    pub request_time: Histogram,
}

impl Metrics {
    /// Count an error.
    pub fn error(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors of one kind so far.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Prometheus text.
    pub fn render(&self, pools: &[&Pool]) -> String {
        let mut out = String::new();
        out.push_str("# HELP disagg_router_requests_total Client requests.\n# TYPE disagg_router_requests_total counter\n");
        for (endpoint, counts) in [("completions", &self.completions), ("chat", &self.chat)] {
            for (i, stream) in ["true", "false"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "disagg_router_requests_total{{endpoint=\"{endpoint}\",stream=\"{stream}\"}} {}",
                    counts[i].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP disagg_router_errors_total Failed requests by kind.\n# TYPE disagg_router_errors_total counter\n");
        for (k, c) in ErrorKind::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "disagg_router_errors_total{{kind=\"{}\"}} {}",
                k.label(),
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP disagg_router_retries_total Legs retried on another worker.\n# TYPE disagg_router_retries_total counter\ndisagg_router_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP disagg_router_finished_at_context_total Requests the context leg completed.\n# TYPE disagg_router_finished_at_context_total counter\ndisagg_router_finished_at_context_total {}",
            self.finished_at_context.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP disagg_router_local_prefill_total Requests conditional disaggregation sent whole to a generation server.\n# TYPE disagg_router_local_prefill_total counter\ndisagg_router_local_prefill_total {}",
            self.local_prefill.load(Ordering::Relaxed)
        );
        for (name, help, values) in [
            (
                "disagg_router_kv_prompt_tokens_total",
                "Prompt tokens a kv_cache_aware pool routed.",
                &self.kv_prompt_tokens,
            ),
            (
                "disagg_router_kv_matched_tokens_total",
                "Prompt tokens in blocks the chosen worker was known to hold.",
                &self.kv_matched_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (pool, v) in ["context", "generation"].iter().zip(values) {
                let _ = writeln!(
                    out,
                    "{name}{{pool=\"{pool}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP disagg_router_kv_events_total Block updates read from KV cache events.\n# TYPE disagg_router_kv_events_total counter\ndisagg_router_kv_events_total {}\n# HELP disagg_router_kv_event_errors_total Failed reads of KV cache events.\n# TYPE disagg_router_kv_event_errors_total counter\ndisagg_router_kv_event_errors_total {}",
            self.kv_events.load(Ordering::Relaxed),
            self.kv_event_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP disagg_router_untokenized_requests_total Text-prompt requests routed by load alone: no tokenizer took their text.\n# TYPE disagg_router_untokenized_requests_total counter\ndisagg_router_untokenized_requests_total {}",
            self.untokenized.load(Ordering::Relaxed)
        );
        let per_worker = |out: &mut String,
                          name: &str,
                          kind: &str,
                          help: &str,
                          value: &dyn Fn(&crate::pool::Worker) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for pool in pools {
                for w in &pool.workers {
                    let _ = writeln!(
                        out,
                        "{name}{{pool=\"{}\",worker=\"{}\"}} {}",
                        pool.role,
                        w.addr,
                        value(w)
                    );
                }
            }
        };
        per_worker(
            &mut out,
            "disagg_router_worker_in_flight",
            "gauge",
            "Requests in flight per worker.",
            &|w| w.in_flight(),
        );
        per_worker(
            &mut out,
            "disagg_router_worker_healthy",
            "gauge",
            "Whether a worker is in the rotation.",
            &|w| u64::from(w.is_healthy()),
        );
        per_worker(
            &mut out,
            "disagg_router_worker_requests_total",
            "counter",
            "Legs sent per worker.",
            &|w| w.requests.load(Ordering::Relaxed),
        );
        self.context_time.render(
            &mut out,
            "disagg_router_context_seconds",
            "Context leg duration.",
        );
        self.generation_ttft.render(
            &mut out,
            "disagg_router_generation_ttft_seconds",
            "From sending the generation leg to its first byte.",
        );
        self.request_time.render(
            &mut out,
            "disagg_router_request_seconds",
            "Whole request, to the last byte.",
        );
        out
    }
}
