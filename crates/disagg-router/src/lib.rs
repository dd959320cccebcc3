//! The disaggregated coordinator: a TensorRT-LLM-compatible router that sends each request to a
//! context (prefill) worker, then hands the result to a generation (decode) worker and relays
//! its stream to the client byte for byte.
//!
//! Flow per request (`trtllm-serve disaggregated`, `context_first`):
//! 1. context leg: the client's body with `stream: false`, `stream_options: null` and
//!    `disaggregated_params: {request_type: context_only, disagg_request_id, schedule_style}`;
//! 2. the context response must have exactly one choice carrying `disaggregated_params` with a
//!    `ctx_request_id`; if its `finish_reason` is neither `length` nor `not_finished` the request
//!    is answered from it — as a proper SSE stream with the token when the client streams
//!    (upstream loses that token);
//! 3. generation leg: the client's body with `prompt` (completions) or `prompt_token_ids` (chat)
//!    replaced by the context's `prompt_token_ids`, and the context's `disaggregated_params`
//!    relabelled `generation_only` (plus `ctx_usage`), signed with the run's
//!    `internal_request_auth_key` when there is one; its bytes are relayed unchanged.
//!
//! Reliability: a leg is retried on another worker (at most `max_retries` times) only on a
//! connection failure or a 5xx, never on a 4xx and never once a byte reached the client; a
//! worker that fails leaves the rotation until its health check passes again; a stream whose
//! worker dies ends with an SSE error event (valid JSON) and `[DONE]`; every request has a
//! deadline; a client that goes away cancels the worker request at once (the upstream
//! connection is dropped).
//!
//! Speed: `TCP_NODELAY` on every socket, pooled keep-alive connections to workers, the
//! generation stream relayed as bytes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use disagg_router::{Router, RouterSettings};
//! let settings = RouterSettings {
//!     context: vec!["127.0.0.1:8001".into()],
//!     generation: vec!["127.0.0.1:8002".into()],
//!     ..RouterSettings::default()
//! };
//! let router = Router::bind("127.0.0.1:0", settings).await?;
//! println!("listening on {}", router.local_addr());
//! router.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```

mod flow;
pub mod handoff;
pub mod metrics;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use disagg_config::AuthKey;
use disagg_protocol::serve::{HEADER_READ_TIMEOUT, serve};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

pub use crate::handoff::HandOff;
use crate::metrics::Metrics;
use crate::pool::Pool;
pub use crate::pool::{KvAwareArgs, Policy};
pub use disagg_protocol::prompt::PromptTokenizer;

/// What the router needs to know.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Context workers, `host:port` (empty for generation-only benchmarks).
    pub context: Vec<String>,
    /// Generation workers, `host:port`.
    pub generation: Vec<String>,
    /// Context pool policy.
    pub context_policy: Policy,
    /// Generation pool policy.
    pub generation_policy: Policy,
    /// Retries per leg.
    pub max_retries: u32,
    /// Deadline of one request, end to end.
    pub request_timeout: Duration,
    /// How long to wait for every worker's first healthy answer.
    pub server_start_timeout: Duration,
    /// Pause between health checks of a worker.
    pub health_check_interval: Duration,
    /// Upstream's gen-only benchmark mode: skip the context leg, send a synthetic hand-off.
    pub gen_only: bool,
    /// The workers' hand-off protocol.
    pub handoff: HandOff,
    /// SGLang: each context server's KV bootstrap port, in `context` order (one port: the same
    /// for all; none: SGLang's default, [`handoff::SGLANG_DEFAULT_BOOTSTRAP_PORT`]).
    pub bootstrap_ports: Vec<u16>,
    /// `internal_request_auth_key`: requests whose `disaggregated_params` carry
    /// `ctx_info_endpoint` or `encoded_opaque_state` (the generation leg) are signed with it,
    /// `x-trtllm-disagg-auth: sha256=<HMAC>`, as upstream's coordinator signs them
    /// ([`disagg_protocol::auth`]); `None`: unsigned (workers with a key refuse them). Its
    /// `Debug` never shows the key.
    pub auth_key: Option<AuthKey>,
    /// Upstream's conditional disaggregation (`conditional_disagg_config.max_local_prefill_length`,
    /// with a kv_cache_aware generation pool): the generation server is picked first, and a
    /// request it already holds part of, with at most this many prompt tokens uncached, is sent
    /// to it whole, without a context leg.
    pub max_local_prefill_length: Option<u32>,
    /// How a kv_cache_aware pool gets the token ids of a text prompt (upstream's router loads
    /// the model's tokenizer); `None`: text prompts are routed by load alone, and counted.
    pub tokenizer: Option<disagg_protocol::prompt::PromptTokenizer>,
}

impl RouterSettings {
    /// What in these settings cannot be served, if anything.
    pub fn check(&self) -> Result<(), String> {
        let ctx = self.context.len();
        if self.generation.is_empty() {
            return Err("no generation servers: list at least one".into());
        }
        if self.handoff.is_aggregated() {
            if ctx > 0 || self.gen_only {
                return Err(format!(
                    "aggregated serving takes whole requests on the generation servers; \
                     it has no context servers (got {ctx}) and no gen-only mode"
                ));
            }
        } else if ctx == 0 && !self.gen_only {
            return Err(
                "no context servers: list them, run in gen-only benchmark mode, or serve \
                 aggregated servers (hand-off `aggregated`)"
                    .into(),
            );
        }
        let ports = self.bootstrap_ports.len();
        if !self.bootstrap_ports.is_empty() && self.handoff != HandOff::Sglang {
            return Err(format!(
                "bootstrap ports are SGLang's; the hand-off is {}",
                self.handoff.name()
            ));
        }
        if self.max_local_prefill_length.is_some()
            && !matches!(self.generation_policy, Policy::KvCacheAware(_))
        {
            return Err(
                "conditional disaggregation (max_local_prefill_length) needs a kv_cache_aware \
                 generation policy"
                    .into(),
            );
        }
        if ports > 1 && ports != ctx {
            return Err(format!(
                "{ports} bootstrap ports for {ctx} context servers: give one per context server, \
                 or one for all"
            ));
        }
        Ok(())
    }

    /// The SGLang bootstrap port of context server `index`.
    pub(crate) fn bootstrap_port(&self, index: usize) -> u16 {
        match self.bootstrap_ports.as_slice() {
            [] => handoff::SGLANG_DEFAULT_BOOTSTRAP_PORT,
            [one] => *one,
            many => many[index],
        }
    }
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            context: Vec::new(),
            generation: Vec::new(),
            context_policy: Policy::RoundRobin,
            generation_policy: Policy::RoundRobin,
            max_retries: 1,
            request_timeout: Duration::from_secs(180),
            server_start_timeout: Duration::from_secs(180),
            health_check_interval: Duration::from_secs(1),
            gen_only: false,
            handoff: HandOff::Trtllm,
            bootstrap_ports: Vec::new(),
            auth_key: None,
            max_local_prefill_length: None,
            tokenizer: None,
        }
    }
}

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Some workers never became healthy.
    #[error("workers not ready after {waited:?}: {workers}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// `pool host:port` of each.
        workers: String,
    },
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) struct State {
    pub settings: RouterSettings,
    pub context: Pool,
    pub generation: Pool,
    pub client: HttpClient,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub next_id: AtomicU64,
    /// Whether the first text prompt routed without tokens was logged.
    pub warned_untokenized: AtomicBool,
}

impl State {
    fn new(settings: RouterSettings) -> State {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            // Below the servers' own idle limit (ours: `disagg_protocol::serve`'s 30 s; uvicorn's
            // 5 s in front of TensorRT-LLM and vLLM is met by the retry of a failed connect), so
            // a pooled connection is dropped here before a worker closes it under a request.
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(4096)
            .build(connector);
        // Request ids above 2^40 (the range upstream leaves to the coordinator), unique per run.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64)
            << 16;
        State {
            context: Pool::new("context", &settings.context, settings.context_policy),
            generation: Pool::new(
                "generation",
                &settings.generation,
                settings.generation_policy,
            ),
            settings,
            client,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            next_id: AtomicU64::new(start.max(1 << 40)),
            warned_untokenized: AtomicBool::new(false),
        }
    }

    fn pools(&self) -> [&Pool; 2] {
        [&self.context, &self.generation]
    }

    fn all_ever_healthy(&self) -> bool {
        self.pools()
            .iter()
            .all(|p| p.workers.iter().all(|w| w.was_ever_healthy()))
    }
}

/// The router's HTTP app on a fresh state (health checks are not started; see [`Router::run`]).
pub fn app(settings: RouterSettings) -> axum::Router {
    flow::routes(Arc::new(State::new(settings)))
}

/// A bound router.
pub struct Router {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
    header_read_timeout: Duration,
}

impl Router {
    /// Bind `addr` (port 0 picks a free one). Settings that cannot be served
    /// ([`RouterSettings::check`]) are an `InvalidInput` error.
    pub async fn bind(addr: &str, settings: RouterSettings) -> std::io::Result<Router> {
        settings
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Router {
            listener,
            addr,
            state: Arc::new(State::new(settings)),
            header_read_timeout: HEADER_READ_TIMEOUT,
        })
    }

    /// Close a client connection that has not sent a whole request header (or, idle, its next
    /// one) within `timeout` instead of [`HEADER_READ_TIMEOUT`] ([`disagg_protocol::serve`]).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Router {
        self.header_read_timeout = timeout;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `cancel` fires. Fails if the workers are not all healthy within the start
    /// timeout (`/health` answers 503 meanwhile).
    pub async fn run(self, cancel: CancellationToken) -> Result<(), RouterError> {
        let state = self.state.clone();
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(health_loop(state.clone(), cancel.clone()));
        for pool in [0, 1] {
            if matches!(state.pools()[pool].policy(), Policy::KvCacheAware(_)) {
                tasks.spawn(event_loop(state.clone(), pool, cancel.clone()));
            }
        }
        let server = serve(
            self.listener,
            flow::routes(state.clone()),
            self.header_read_timeout,
            cancel.clone(),
        );
        let start_timeout = state.settings.server_start_timeout;
        let watchdog = {
            let state = state.clone();
            let cancel = cancel.clone();
            async move {
                let deadline = tokio::time::Instant::now() + start_timeout;
                loop {
                    if state.ready.load(Ordering::Acquire) {
                        // Serve until cancelled.
                        cancel.cancelled().await;
                        return Ok(());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let workers = state
                            .pools()
                            .iter()
                            .flat_map(|p| {
                                p.workers
                                    .iter()
                                    .filter(|w| !w.was_ever_healthy())
                                    .map(move |w| format!("{} {}", p.role, w.addr))
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(RouterError::NotReady {
                            waited: start_timeout,
                            workers,
                        });
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        };
        let result = tokio::select! {
            r = server => r.map_err(RouterError::from),
            r = watchdog => r,
        };
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        result
    }
}

/// Poll every worker's `/health`; a worker enters the rotation when it answers 200 and leaves it
/// when it does not.
async fn health_loop(state: Arc<State>, cancel: CancellationToken) {
    loop {
        let checks = state
            .pools()
            .into_iter()
            .flat_map(|p| p.workers.iter())
            .map(|w| {
                let state = state.clone();
                async move {
                    let ok = probe(&state.client, &format!("{}/health", w.base)).await;
                    if ok != w.is_healthy() {
                        tracing::info!(worker = %w.addr, healthy = ok, "worker health changed");
                    }
                    w.set_healthy(ok);
                }
            });
        futures_util::future::join_all(checks).await;
        if !state.ready.load(Ordering::Acquire) && state.all_ever_healthy() {
            tracing::info!("every worker is healthy; the router is ready");
            state.ready.store(true, Ordering::Release);
        }
        let pause = if state.ready.load(Ordering::Acquire) {
            state.settings.health_check_interval
        } else {
            // Before the first full house, look often: readiness gates the whole test.
            state
                .settings
                .health_check_interval
                .min(Duration::from_millis(200))
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Read the KV cache events of every worker of pool `pool` that finished a request since its
/// last read (upstream polls in `finish_request`; here off the request's path, one read per
/// worker at a time, however many requests finished meanwhile).
async fn event_loop(state: Arc<State>, pool: usize, cancel: CancellationToken) {
    let notify = state.pools()[pool].poll.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notify.notified() => {}
        }
        let due: Vec<_> = state.pools()[pool]
            .workers
            .iter()
            .filter(|w| w.take_events_due())
            .cloned()
            .collect();
        let reads = due.iter().map(|w| {
            let state = state.clone();
            async move {
                let url = format!("{}/kv_cache_events", w.base);
                match read_events(&state.client, &url).await {
                    Ok(events) => {
                        let updates = disagg_protocol::kv_cache::block_updates(&events);
                        state
                            .metrics
                            .kv_events
                            .fetch_add(updates.len() as u64, Ordering::Relaxed);
                        w.apply_events(&updates);
                    }
                    Err(e) => {
                        state
                            .metrics
                            .kv_event_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(worker = %w.addr, "cannot read KV cache events: {e}");
                    }
                }
            }
        });
        futures_util::future::join_all(reads).await;
    }
}

async fn read_events(client: &HttpClient, url: &str) -> Result<serde_json::Value, String> {
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

async fn probe(client: &HttpClient, url: &str) -> bool {
    let Ok(req) = hyper::Request::get(url).body(Full::new(Bytes::new())) else {
        return false;
    };
    let call = async {
        let resp = client.request(req).await.ok()?;
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), call).await,
        Ok(Some(true))
    )
}
