//! Server-Sent Events: the framing of every streamed completion.
//!
//! Encoding writes `data: <payload>\n\n`. Decoding follows the WHATWG event-stream rules that
//! matter for LLM servers: lines end in `\n`, `\r\n` or `\r`; `data:` lines of one event are
//! joined with `\n`; one optional space after the colon is dropped; comments (`:`) and other
//! fields are ignored; an empty line ends an event. Input may arrive split anywhere.

/// The payload that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

/// Frame one event carrying `payload`.
pub fn sse_data(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + 8);
    for line in payload.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
}

impl SseEvent {
    /// Whether this is the `[DONE]` sentinel.
    pub fn is_done(&self) -> bool {
        self.data == DONE
    }
}

/// An incremental decoder: feed bytes as they arrive, take complete events out.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
    skip_lf: bool,
}

impl SseDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; complete events are appended to `out`. Invalid UTF-8 is replaced.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.skip_lf = b == b'\r';
                    let line = std::mem::take(&mut self.buf);
                    self.line(&line, out);
                }
                _ => self.buf.push(b),
            }
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            d.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_however_the_bytes_are_split() {
        let mut stream = sse_data("{\"a\":1}");
        stream.push_str(&sse_data("two\nlines"));
        stream.push_str(&sse_data(DONE));
        for piece in 1..=stream.len() {
            let events = decode_in_pieces(stream.as_bytes(), piece);
            let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["{\"a\":1}", "two\nlines", DONE], "piece {piece}");
            assert!(events[2].is_done());
        }
    }

    #[test]
    fn handles_crlf_comments_fields_and_missing_space() {
        let input = b": keep-alive\r\nevent: error\r\ndata:{\"x\":2}\r\n\r\ndata: y\rid: 3\r\r";
        let events = decode_in_pieces(input, 3);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        assert_eq!(events[0].data, "{\"x\":2}");
        assert_eq!(events[1].data, "y");
    }

    #[test]
    fn an_unterminated_event_is_not_emitted() {
        let events = decode_in_pieces(b"data: partial\n", 4);
        assert!(events.is_empty());
    }
}
