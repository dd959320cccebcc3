//! What the crates' tests share: simulators started in-process on `127.0.0.1:0` (stopped when
//! their handle drops), a small HTTP client that returns JSON or decoded SSE events, and child
//! processes that never outlive a test ([`ChildGuard`], [`spawn_listening`]), a free port for
//! the servers that cannot bind port 0 and say which they got ([`free_port`]), an
//! OpenSearch-API test server ([`osmem_server`], [`Osmem`]), and a proxy that injects faults in
//! front of a real server ([`FaultProxy`]).
//!
//! ```no_run
//! use std::process::Command;
//! use disagg_test_support::spawn_listening;
//!
//! // Killed and reaped when `sim` drops, also when the test panics.
//! let (sim, _line, url) = spawn_listening(Command::new("disagg").args(["sim", "--port", "0"]));
//! println!("{url} is served by pid {}", sim.id());
//! ```
//!
//! Dev-only: nothing here ships in the binary.

#![expect(
    clippy::expect_used,
    reason = "a harness that cannot set up must fail the test loudly"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use disagg_protocol::{SseDecoder, SseEvent};
use disagg_sim::scheduler::Limits;
use disagg_sim::{Sim, SimConfig};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod fault_proxy;
mod osmem;
mod process;

pub use fault_proxy::{Fault, FaultProxy};
pub use osmem::{Osmem, osmem_server};
pub use process::{ChildGuard, spawn_listening};

/// A simulator serving on loopback until dropped.
pub struct TestSim {
    /// Its address.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestSim {
    /// Start one with these settings.
    pub async fn start(cfg: SimConfig, limits: Limits) -> TestSim {
        let sim = Sim::bind("127.0.0.1:0", cfg, limits)
            .await
            .expect("bind 127.0.0.1:0");
        let addr = sim.local_addr();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sim.run(cancel.clone()));
        TestSim {
            addr,
            cancel,
            task: Some(task),
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop it and wait until it has.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `content-type`.
    pub content_type: String,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body decoded as SSE events.
    pub fn events(&self) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.feed(&self.body, &mut out);
        out
    }
}

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A new client.
    pub fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `POST url` with a JSON body; reads the whole response.
    pub async fn post(&self, url: &str, body: &Value) -> Reply {
        self.send("POST", url, Bytes::from(body.to_string()), false)
            .await
    }

    /// `POST url` with the body as MessagePack, marked `X-TRTLLM-Msgpack: 1` as upstream's
    /// newest coordinator sends it.
    pub async fn post_msgpack(&self, url: &str, body: &Value) -> Reply {
        let bytes = Bytes::from(disagg_protocol::body::encode_msgpack(body));
        self.send("POST", url, bytes, true).await
    }

    /// `POST url` with a raw body.
    pub async fn post_raw(&self, url: &str, body: &str) -> Reply {
        self.send("POST", url, Bytes::from(body.to_string()), false)
            .await
    }

    /// `POST url` with a body of any bytes (invalid UTF-8 included), sent as JSON; an error
    /// when the exchange fails (a server that answers a too-large body early and closes the
    /// connection while the client still writes it).
    pub async fn post_bytes(&self, url: &str, body: Bytes) -> Result<Reply, String> {
        let req = hyper::Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| "no response within 30 s".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .map_err(|_| "no body within 30 s".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, Bytes::new(), false).await
    }

    async fn send(&self, method: &str, url: &str, body: Bytes, msgpack: bool) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json");
        if msgpack {
            req = req.header(disagg_protocol::body::MSGPACK_HEADER, "1");
        }
        let req = req.body(Full::new(body)).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("response within 30 s")
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .expect("body within 30 s")
            .expect("body")
            .to_bytes();
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// `POST url` and return the response with its body unread (to test disconnects).
    pub async fn post_streaming(
        &self,
        url: &str,
        body: &Value,
    ) -> hyper::Response<hyper::body::Incoming> {
        let req = hyper::Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.client.request(req).await.expect("HTTP request")
    }
}

/// Read a Prometheus gauge/counter value from a `/metrics` body.
pub fn metric(body: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(body).lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(|c| c == '{' || c == ' ')?;
        rest.rsplit(' ').next()?.parse().ok()
    })
}

/// A port free on 127.0.0.1 now, for a server that cannot bind port 0 and report the port it got
/// (vLLM, vllm-router, sglang-router's smg). Another process may take it before the server binds
/// it; that server then fails to start, loudly, rather than serve elsewhere.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
