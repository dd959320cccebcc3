//! A fault-injecting HTTP proxy: forwards to a real server (osmem-server, a sim) and, on demand,
//! delays, refuses, garbles or swallows requests — the flapping network peer of the fault tests,
//! without mocking the server behind it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

/// What the proxy does with the requests it gets from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward, answer what the server answered.
    Pass,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Answer this status (429, 503, ...) without forwarding.
    Status(u16),
    /// Answer 200 with a body that is not JSON, without forwarding.
    Malformed,
    /// Forward — the server does the work — then answer 200 with a body that is not JSON: an
    /// answer lost on the way back.
    LoseAnswer,
    /// Never answer (a server that is stopped with SIGSTOP, or a network that drops packets).
    Hang,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    fault: Arc<Mutex<Fault>>,
    seen: Arc<AtomicUsize>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A proxy on `127.0.0.1:0` in front of `upstream`, stopped when dropped.
pub struct FaultProxy {
    /// Its address.
    pub addr: SocketAddr,
    shared: Shared,
    cancel: CancellationToken,
}

impl FaultProxy {
    /// Start one in front of `upstream` (`http://host:port`), passing everything through.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault: Arc::new(Mutex::new(Fault::Pass)),
            seen: Arc::new(AtomicUsize::new(0)),
            client: Client::builder(TokioExecutor::new()).build(connector),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        FaultProxy {
            addr,
            shared,
            cancel,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change what it does with the next requests.
    pub fn set(&self, fault: Fault) {
        if let Ok(mut f) = self.shared.fault.lock() {
            *f = fault;
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.seen.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const GARBAGE: &str = "{\"took\": 3, \"errors\": fal<html>502 Bad Gateway";

async fn handle(State(s): State<Shared>, req: Request) -> Response {
    s.seen.fetch_add(1, Ordering::SeqCst);
    let fault = s.fault.lock().map_or(Fault::Pass, |f| *f);
    match fault {
        Fault::Status(code) => {
            return reply(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                Bytes::from(format!("{{\"error\":\"injected {code}\"}}")),
            );
        }
        Fault::Malformed => return reply(StatusCode::OK, Bytes::from_static(GARBAGE.as_bytes())),
        Fault::Hang => {
            // Held until the client gives up (or the proxy stops).
            std::future::pending::<()>().await;
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Pass | Fault::LoseAnswer => {}
    }
    let forwarded = forward(&s, req).await;
    match (fault, forwarded) {
        (Fault::LoseAnswer, Ok(_)) => reply(StatusCode::OK, Bytes::from_static(GARBAGE.as_bytes())),
        (_, Ok(resp)) => resp,
        (_, Err(e)) => reply(StatusCode::BAD_GATEWAY, Bytes::from(e)),
    }
}

async fn forward(s: &Shared, req: Request) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut up = hyper::Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", s.upstream));
    for (k, v) in &parts.headers {
        if k != "host" {
            up = up.header(k, v);
        }
    }
    let up = up.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = s.client.request(up).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let mut out = reply(status, bytes);
    if let Some(ct) = content_type {
        out.headers_mut().insert("content-type", ct);
    }
    Ok(out)
}

fn reply(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}
