//! The load generator: sends the requests of one run (a concurrency or a rate), on absolute
//! time, and records each one's [`Timeline`]. Closed loop: `concurrency` workers each send
//! their next request as soon as their previous one ends. Open loop: the n-th request is due at
//! `start + offset(n)` whatever happens to the others, and its latency counts from then.
//!
//! Each task keeps its own timelines and they are merged at the end: no channel message per
//! token on the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use disagg_protocol::{SseDecoder, SseEvent};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::dataset::{PromptInput, Request};
use crate::timeline::{Chunk, DecodedPerIter, Timeline};

/// Which OpenAI endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions` with token-id prompts.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

impl Endpoint {
    /// Its name in records and on the command line: `completions` or `chat`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        }
    }
}

/// How requests are released.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// At most this many in flight; the next starts when one ends.
    Concurrency(usize),
    /// Due at these offsets (seconds), e.g. from [`crate::arrival::schedule`].
    Rate {
        /// Requests per second (for the record).
        rate: f64,
        /// Gamma shape.
        burstiness: f64,
    },
    /// A trace's own arrival times, `speedup` times faster: an open loop on the trace's
    /// offsets.
    Trace {
        /// 1 = as recorded.
        speedup: f64,
    },
}

/// One run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `http://host:port`.
    pub base_url: String,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Model name.
    pub model: String,
    /// Stream the responses.
    pub stream: bool,
    /// Ask for exactly the requested output length.
    pub ignore_eos: bool,
    /// Load shape.
    pub load: Load,
    /// Offsets for an open loop (ignored in a closed loop).
    pub offsets: Vec<f64>,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Keep each response's text (to count its tokens with a tokenizer afterwards).
    pub keep_text: bool,
    /// Multi-turn sessions: the pause between a turn's answer and the session's next turn.
    pub think_time: Duration,
    /// Send token-id prompts as text, one word `w<id>` per id (for routers that take only text;
    /// the sim counts one token per word, equal words equal tokens).
    pub words: bool,
}

fn client(max: usize) -> Client<HttpConnector, Full<Bytes>> {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max)
        .build(c)
}

fn body(spec: &RunSpec, r: &Request) -> Bytes {
    let mut v = match spec.endpoint {
        Endpoint::Completions => {
            let prompt = match &r.prompt {
                PromptInput::Ids(ids) if spec.words => json!(as_words(ids)),
                PromptInput::Ids(ids) => json!(ids),
                PromptInput::Text(t) => json!(t),
            };
            json!({"model": spec.model, "prompt": prompt, "max_tokens": r.output_tokens})
        }
        Endpoint::Chat => {
            // Chat carries text; ids are rendered as words (the server's tokenizer decides).
            let text = match &r.prompt {
                PromptInput::Ids(ids) => as_words(ids),
                PromptInput::Text(t) => t.clone(),
            };
            json!({"model": spec.model, "messages": [{"role": "user", "content": text}],
                   "max_completion_tokens": r.output_tokens})
        }
    };
    v["stream"] = json!(spec.stream);
    if spec.stream {
        v["stream_options"] = json!({"include_usage": true});
    }
    if spec.ignore_eos {
        v["ignore_eos"] = json!(true);
    }
    Bytes::from(v.to_string())
}

/// Token ids as text, one word per id.
fn as_words(ids: &[u32]) -> String {
    ids.iter()
        .map(|t| format!("w{t}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A content chunk's token count: `token_ids` when the server sends them, else 1.
fn chunk_tokens(v: &Value) -> u32 {
    v["choices"][0]["token_ids"]
        .as_array()
        .map_or(1, |ids| ids.len().max(1) as u32)
}

async fn one(
    http: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    spec: &RunSpec,
    req: &Request,
    start: Instant,
    intended: Duration,
) -> Timeline {
    let mut t = Timeline {
        intended,
        sent: start.elapsed(),
        chunks: Vec::new(),
        end: Duration::ZERO,
        prompt_tokens: req.prompt_tokens.unwrap_or(0),
        requested_output_tokens: req.output_tokens,
        usage_output_tokens: None,
        usage_prompt_tokens: None,
        output_text: spec.keep_text.then(String::new),
        tokenizer_output_tokens: None,
        decoded_per_iter: DecodedPerIter::NotSent,
        error: None,
    };
    let call = async {
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(body(spec, req)))
            .map_err(|e| e.to_string())?;
        let resp = http
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ));
        }
        let mut decoder = SseDecoder::new();
        let mut events: Vec<SseEvent> = Vec::new();
        let mut whole = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let at = start.elapsed();
            if !spec.stream {
                whole.extend_from_slice(data);
                continue;
            }
            decoder.feed(data, &mut events);
            for e in events.drain(..) {
                if e.is_done() {
                    continue;
                }
                let v: Value = serde_json::from_str(&e.data)
                    .map_err(|err| format!("malformed SSE data ({err}): {}", e.data))?;
                if let Some(err) = v.get("error") {
                    return Err(format!("error event: {err}"));
                }
                if v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
                    t.chunks.push(Chunk {
                        at,
                        tokens: chunk_tokens(&v),
                    });
                    if let Some(d) = DecodedPerIter::from_choice(&v["choices"][0]) {
                        t.decoded_per_iter = d;
                    }
                    if let Some(text) = &mut t.output_text {
                        let c = &v["choices"][0];
                        let piece = c["text"].as_str().or(c["delta"]["content"].as_str());
                        text.push_str(piece.unwrap_or(""));
                    }
                }
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    t.usage_output_tokens = u["completion_tokens"].as_u64().map(|n| n as u32);
                    t.usage_prompt_tokens = u["prompt_tokens"].as_u64().map(|n| n as u32);
                }
            }
        }
        if !spec.stream {
            let v: Value =
                serde_json::from_slice(&whole).map_err(|e| format!("malformed response: {e}"))?;
            t.usage_output_tokens = v["usage"]["completion_tokens"].as_u64().map(|n| n as u32);
            t.usage_prompt_tokens = v["usage"]["prompt_tokens"].as_u64().map(|n| n as u32);
            if let Some(text) = &mut t.output_text {
                let c = &v["choices"][0];
                text.push_str(
                    c["text"]
                        .as_str()
                        .or(c["message"]["content"].as_str())
                        .unwrap_or(""),
                );
            }
            if let Some(d) = DecodedPerIter::from_choice(&v["choices"][0]) {
                t.decoded_per_iter = d;
            }
            // A non-streamed answer is one chunk, at its arrival.
            t.chunks.push(Chunk {
                at: start.elapsed(),
                tokens: t.usage_output_tokens.unwrap_or(1),
            });
        }
        Ok(())
    };
    match tokio::time::timeout(spec.timeout, call).await {
        Ok(Ok(())) if t.chunks.is_empty() => {
            t.error = Some("never received a content chunk".into())
        }
        Ok(Ok(())) => {}
        Ok(Err(e)) => t.error = Some(e),
        Err(_) => t.error = Some(format!("no answer within {:?}", spec.timeout)),
    }
    t.end = start.elapsed();
    t
}

/// The units a client slot takes: each request alone, or a session's consecutive turns.
fn units_of(requests: &[Request]) -> Vec<std::ops::Range<usize>> {
    let mut units: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match (units.last_mut(), r.session) {
            (Some(last), Some(s)) if last.end == i && requests[last.start].session == Some(s) => {
                last.end = i + 1;
            }
            _ => units.push(i..i + 1),
        }
    }
    units
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Timelines of the requests that ended, in request order.
    pub timelines: Vec<Timeline>,
    /// True when `stop` fired before every request ended: the timelines are partial.
    pub interrupted: bool,
}

/// Run `requests` and return their timelines, in request order. When `stop` fires, no new
/// request starts, the ones in flight are dropped (the connection closes, so the server can
/// free their slots) and the finished ones are returned.
pub async fn run(
    spec: &RunSpec,
    requests: &[Request],
    stop: &tokio_util::sync::CancellationToken,
    done: &Arc<AtomicUsize>,
) -> RunOutcome {
    let path = match spec.endpoint {
        Endpoint::Completions => "/v1/completions",
        Endpoint::Chat => "/v1/chat/completions",
    };
    let url = format!("{}{path}", spec.base_url.trim_end_matches('/'));
    let spec = Arc::new(spec.clone());
    let requests: Arc<Vec<Request>> = Arc::new(requests.to_vec());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // A client slot takes a unit at a time: one request, or a whole multi-turn session (its
    // requests are consecutive and carry the same session).
    let units: Arc<Vec<std::ops::Range<usize>>> = Arc::new(units_of(&requests));
    match spec.load {
        Load::Concurrency(c) => {
            let http = client(c);
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..c.max(1) {
                let (http, url, spec, requests, units, next, stop, done) = (
                    http.clone(),
                    url.clone(),
                    spec.clone(),
                    requests.clone(),
                    units.clone(),
                    next.clone(),
                    stop.clone(),
                    done.clone(),
                );
                tasks.spawn(async move {
                    let mut mine = Vec::new();
                    'units: while !stop.is_cancelled() {
                        let u = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(u) else { break };
                        let mut intended = start.elapsed();
                        for i in unit.clone() {
                            // A later turn is due a think time after the previous answer ended;
                            // its latency counts from then.
                            let due = start + intended;
                            if due > Instant::now() {
                                tokio::select! {
                                    _ = stop.cancelled() => break 'units,
                                    _ = tokio::time::sleep_until(due) => {}
                                }
                            }
                            tokio::select! {
                                _ = stop.cancelled() => break 'units,
                                t = one(&http, &url, &spec, &requests[i], start, intended) => {
                                    done.fetch_add(1, Ordering::Relaxed);
                                    intended = t.end + spec.think_time;
                                    let failed = t.error.is_some();
                                    mine.push((i, t));
                                    if failed {
                                        // The conversation cannot go on without its answer.
                                        continue 'units;
                                    }
                                }
                            }
                        }
                    }
                    mine
                });
            }
        }
        Load::Rate { .. } | Load::Trace { .. } => {
            // A dispatcher thread releases the requests on time with the OS's high-resolution
            // sleep (tokio's timer wheel rounds up to 1 ms, which would be added to every
            // latency); the runtime starts each request as its index arrives.
            let http = client(256);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
            let offsets: Vec<f64> = spec.offsets.iter().take(requests.len()).copied().collect();
            let (dispatch_stop, std_start) = (stop.clone(), start.into_std());
            let dispatcher = tokio::task::spawn_blocking(move || {
                for (i, offset) in offsets.iter().enumerate() {
                    let due = std_start + Duration::from_secs_f64(*offset);
                    loop {
                        if dispatch_stop.is_cancelled() {
                            return;
                        }
                        let now = std::time::Instant::now();
                        if now >= due {
                            break;
                        }
                        std::thread::sleep((due - now).min(Duration::from_millis(10)));
                    }
                    if tx.send(i).is_err() {
                        return;
                    }
                }
            });
            while let Some(i) = rx.recv().await {
                let due = Duration::from_secs_f64(spec.offsets[i]);
                let (http, url, spec, requests, stop, done) = (
                    http.clone(),
                    url.clone(),
                    spec.clone(),
                    requests.clone(),
                    stop.clone(),
                    done.clone(),
                );
                tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => Vec::new(),
                        t = one(&http, &url, &spec, &requests[i], start, due) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            vec![(i, t)]
                        }
                    }
                });
            }
            let _ = dispatcher.await;
        }
    }
    let mut all = Vec::with_capacity(requests.len());
    while let Some(done) = tasks.join_next().await {
        if let Ok(batch) = done {
            all.extend(batch);
        }
    }
    all.sort_by_key(|(i, _)| *i);
    let interrupted = stop.is_cancelled() && all.len() < requests.len();
    RunOutcome {
        timelines: all.into_iter().map(|(_, t)| t).collect(),
        interrupted,
    }
}
