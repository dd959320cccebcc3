//! The simulated engine: an inference server that behaves like a TensorRT-LLM (or vLLM, or
//! SGLang) context or generation worker — same HTTP API, same disaggregation hand-off — timed by
//! a documented cost model instead of a GPU. A whole disaggregated test runs on a laptop or in
//! CI with it, and capacity questions can be asked before a job is submitted.
//!
//! - [`scheduler`]: the pure continuous-batching step and the cost model (its table is there);
//! - [`prefix_cache`]: the reusable KV blocks (upstream's block reuse), LRU eviction and the KV
//!   cache events a worker publishes;
//! - [`engine`]: the async shell that sleeps for each step and delivers tokens;
//! - [`app`](mod@app): the HTTP routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`,
//!   `/health`, `/server_info`, `/metrics`, `/perf_metrics`, ...) and the three hand-offs;
//! - [`handoff`]: the unforgeable TensorRT-LLM `encoded_opaque_state`;
//! - [`text`]: deterministic token ids and text;
//! - [`options`]: [`SimOptions`], every knob of `disagg sim` as a typed struct, resolved over a
//!   test config's worker section and `engine.sim` into a [`SimConfig`] and
//!   [`Limits`] ([`SimError`] when a value is out of range).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use disagg_sim::{SimConfig, Sim, scheduler::{CostModel, Limits}};
//! let sim = Sim::bind("127.0.0.1:0", SimConfig::default(), Limits::default()).await?;
//! println!("listening on {}", sim.local_addr());
//! sim.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

pub mod app;
mod client;
pub mod engine;
pub mod handoff;
pub mod options;
pub mod prefix_cache;
pub mod scheduler;
pub mod text;

use std::net::SocketAddr;
use std::time::Duration;

use disagg_protocol::serve::{HEADER_READ_TIMEOUT, serve};
use tokio_util::sync::CancellationToken;

pub use app::{Protocol, Role, SimConfig, TextTokenizer, app};
pub use options::{SimOptions, WorkerSide};

use crate::engine::Engine;
use crate::scheduler::{Limits, Scheduler};

/// Why a simulator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An option or cost-model parameter is out of range; the message names it, the value and
    /// the range.
    #[error("{0}")]
    InvalidOption(String),
}

/// A bound simulator, ready to serve.
pub struct Sim {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    cfg: SimConfig,
    limits: Limits,
    bootstrap: Option<tokio::net::TcpListener>,
    header_read_timeout: Duration,
}

impl Sim {
    /// Bind `addr` (port 0 picks a free port; [`Sim::local_addr`] tells which).
    pub async fn bind(addr: &str, cfg: SimConfig, limits: Limits) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Sim {
            listener,
            addr,
            cfg,
            limits,
            bootstrap: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
        })
    }

    /// Close a connection that has not sent a whole request header (or, idle, its next one)
    /// within `timeout` instead of [`HEADER_READ_TIMEOUT`] ([`disagg_protocol::serve`]).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Sim {
        self.header_read_timeout = timeout;
        self
    }

    /// Also serve on `addr`, as SGLang's prefill server serves its KV bootstrap on a port of its
    /// own (`--disaggregation-bootstrap-port`); the sim answers every route there.
    pub async fn bind_bootstrap(&mut self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        self.bootstrap = Some(listener);
        Ok(bound)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `cancel` fires, then stop accepting, end the engine and return.
    pub async fn run(self, cancel: CancellationToken) -> std::io::Result<()> {
        let mut cfg = self.cfg;
        if cfg.issuer == SimConfig::default().issuer {
            cfg.issuer = self.addr.to_string();
        }
        let engine_cancel = cancel.child_token();
        let (engine, task) = Engine::start_with(
            Scheduler::new(cfg.cost, self.limits)
                .with_speculation(cfg.speculation)
                .with_cache(cfg.kv_cache),
            cfg.max_seq_len,
            cfg.print_iter_log,
            engine_cancel.clone(),
        );
        let router = app(cfg, engine);
        let bootstrap = self.bootstrap.map(|l| {
            tokio::spawn(serve(
                l,
                router.clone(),
                self.header_read_timeout,
                cancel.clone(),
            ))
        });
        let served = serve(self.listener, router, self.header_read_timeout, cancel).await;
        if let Some(b) = bootstrap {
            let _ = b.await;
        }
        engine_cancel.cancel();
        let _ = task.await;
        served
    }
}
