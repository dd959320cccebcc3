//! Streaming: the server-sent events of a streamed answer, one event per token batch as the
//! engine delivers them.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use disagg_protocol::Usage;
use serde_json::json;

use super::generation::{Generated, finish_reason};
use super::metrics::record;
use super::request::Kind;
use super::{AppState, now_unix};
use crate::engine::Sequence;
use crate::text;

/// The streaming body. Chunks are written from a pre-rendered prefix and suffix (the hot path
/// of a load test); a test parses them back into the protocol types.
pub(super) fn stream_response(
    st: Arc<AppState>,
    kind: Kind,
    model: String,
    seq: Sequence,
    g: Generated,
    include_usage: bool,
) -> Response {
    let frames = Frames::new(&kind, &model, g.id);
    let interval = st.cfg.stream_interval.max(1);
    let state = Chunks {
        st,
        seq,
        g,
        interval,
        include_usage,
        emitted: 0,
        available: 0,
        iterations: 0,
        done: false,
        first_time: None,
        frames,
    };
    let stream = futures_util::stream::unfold(state, Chunks::next_frame);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The fixed pieces of one stream's events, rendered once.
struct Frames {
    /// Opens a token event, up to its text.
    prefix: String,
    /// Opens the first chat event, which also names the role.
    role_prefix: Option<String>,
    /// Between an event's text and its finish reason.
    mid: &'static str,
    /// Opens the usage event.
    usage_head: String,
}

impl Frames {
    fn new(kind: &Kind, model: &str, id: u64) -> Frames {
        let created = now_unix();
        let (prefix, role_prefix, mid) = match kind {
            Kind::Completion => (
                format!(
                    "data: {{\"id\":\"cmpl-{}\",\"object\":\"text_completion\",\"created\":{created},\"model\":{},\"choices\":[{{\"index\":0,\"text\":\"",
                    id,
                    json!(model)
                ),
                None,
                "\",\"logprobs\":null,\"finish_reason\":",
            ),
            Kind::Chat => {
                let head = format!(
                    "data: {{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{",
                    id,
                    json!(model)
                );
                (
                    format!("{head}\"content\":\""),
                    Some(format!("{head}\"role\":\"assistant\",\"content\":\"")),
                    "\"},\"finish_reason\":",
                )
            }
        };
        let usage_head = match kind {
            Kind::Completion => format!(
                "data: {{\"id\":\"cmpl-{}\",\"object\":\"text_completion\",\"created\":{created},\"model\":{},\"choices\":[],\"usage\":",
                id,
                json!(model)
            ),
            Kind::Chat => format!(
                "data: {{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"choices\":[],\"usage\":",
                id,
                json!(model)
            ),
        };
        Frames {
            prefix,
            role_prefix,
            mid,
            usage_head,
        }
    }
}

/// Where one stream is.
struct Chunks {
    st: Arc<AppState>,
    seq: Sequence,
    g: Generated,
    interval: u32,
    include_usage: bool,
    emitted: u32,
    available: u32,
    /// Deliveries so far: each is one engine step of this sequence.
    iterations: u32,
    done: bool,
    first_time: Option<f64>,
    // The pre-rendered frame pieces live in the state: nothing is copied per chunk.
    frames: Frames,
}

impl Chunks {
    /// The next body frame: the events of every delivery ready by now; the last one ends the
    /// stream.
    async fn next_frame(mut self) -> Option<(Result<Bytes, Infallible>, Chunks)> {
        if self.done {
            return None;
        }
        let mut out = String::new();
        loop {
            // When the client is behind, take every delivery already queued and write their
            // events in one frame (fewer syscalls); each token still gets its own event.
            let next = if out.is_empty() {
                self.seq.next().await
            } else {
                match self.seq.try_next() {
                    Some(d) => Some(d),
                    None => return Some((Ok(Bytes::from(out)), self)),
                }
            };
            let Some(d) = next else {
                // Engine stopped: end the stream with an error event the client can parse.
                out.push_str("data: {\"error\":{\"message\":\"the engine stopped\",\"type\":\"server_error\",\"code\":503}}\n\n");
                self.done = true;
                return Some((Ok(Bytes::from(out)), self));
            };
            self.available += d.tokens;
            self.iterations += 1;
            self.write_tokens(&mut out, d.finished);
            if d.finished {
                self.write_end(&mut out);
                return Some((Ok(Bytes::from(out)), self));
            }
        }
    }

    /// Token events for what has arrived and is due.
    fn write_tokens(&mut self, out: &mut String, finished: bool) {
        // First token at once; then every `interval` tokens; the rest at the end.
        while self.available > self.emitted {
            let pending = self.available - self.emitted;
            let take = if self.emitted == 0 {
                1
            } else if finished {
                pending
            } else if pending >= self.interval {
                self.interval
            } else {
                break;
            };
            let last = finished && self.emitted + take == self.available;
            let head = match (&self.frames.role_prefix, self.emitted) {
                (Some(r), 0) => r.as_str(),
                _ => self.frames.prefix.as_str(),
            };
            out.push_str(head);
            for p in self.emitted..self.emitted + take {
                text::push_text(out, self.g.token(p));
            }
            out.push_str(self.frames.mid);
            if last {
                out.push('"');
                out.push_str(finish_reason(&self.g, self.available));
                out.push('"');
            } else {
                out.push_str("null");
            }
            if self.st.cfg.speculation.is_on() {
                // TensorRT-LLM's per-choice field (`LlmRequest::getAvgDecodedTokensPerIter`:
                // generated tokens / decoding iterations so far), read by its benchmark client.
                let per_iter = f64::from(self.available) / f64::from(self.iterations.max(1));
                let _ = write!(out, ",\"avg_decoded_tokens_per_iter\":{per_iter}");
            }
            out.push_str("}]}\n\n");
            self.emitted += take;
            if self.first_time.is_none() {
                self.first_time = Some(self.st.started.elapsed().as_secs_f64());
            }
        }
    }

    /// The usage event (when asked for) and `[DONE]`; the request's timings are recorded.
    fn write_end(&mut self, out: &mut String) {
        if self.include_usage {
            let u = Usage::new(u64::from(self.g.prompt_len), u64::from(self.available))
                .with_cached(u64::from(self.seq.cached_tokens()));
            out.push_str(&self.frames.usage_head);
            out.push_str(&serde_json::to_string(&u).unwrap_or_default());
            out.push_str("}\n\n");
        }
        out.push_str("data: [DONE]\n\n");
        self.done = true;
        let last = self.st.started.elapsed().as_secs_f64();
        record(
            &self.st,
            &self.g,
            self.available,
            self.first_time.unwrap_or(last),
            last,
        );
    }
}
