//! Hostile SSE (docs/RELIABILITY.md): event streams split at every byte, cut short, mixed with
//! garbage, or carrying one 10 MB event. The decoder never panics, gives the same events however
//! the bytes arrive, and a stream cut short gives a prefix of its events.

use disagg_protocol::{DONE, SseDecoder, SseEvent, sse_data};
use proptest::prelude::*;

fn decode(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    out
}

fn stream(payloads: &[String]) -> Vec<u8> {
    let mut s: String = payloads.iter().map(|p| sse_data(p)).collect();
    s.push_str(&sse_data(DONE));
    s.into_bytes()
}

/// Payloads as a worker sends them, and worse: JSON, text with newlines, unicode.
fn payload() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\{\"choices\":\\[\\{\"text\":\"[a-z ]{0,20}\"\\}\\]\\}",
        "\\PC{0,40}",
        "[a-z\n]{0,30}",
    ]
    // A carriage return inside a payload would end the line: the encoder does not escape it,
    // and no server puts one in a data line.
    .prop_map(|p| p.replace('\r', ""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Split at every byte and at random cut points: the same events.
    #[test]
    fn any_split_gives_the_same_events(
        payloads in prop::collection::vec(payload(), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let bytes = stream(&payloads);
        let whole = decode(&[&bytes]);
        prop_assert_eq!(whole.len(), payloads.len() + 1);
        prop_assert!(whole.last().is_some_and(SseEvent::is_done));
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&decode(&bytewise), &whole);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for a in at {
            pieces.push(&bytes[from..a]);
            from = a;
        }
        pieces.push(&bytes[from..]);
        prop_assert_eq!(&decode(&pieces), &whole);
    }

    /// A stream cut anywhere gives a prefix of its events (never a half event).
    #[test]
    fn a_truncated_stream_gives_a_prefix(
        payloads in prop::collection::vec(payload(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = stream(&payloads);
        let whole = decode(&[&bytes]);
        let cut = decode(&[&bytes[..cut.index(bytes.len())]]);
        prop_assert!(cut.len() < whole.len());
        prop_assert_eq!(&whole[..cut.len()], &cut[..]);
    }

    /// Arbitrary bytes (invalid UTF-8, NULs, lone CRs) never panic.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let events = decode(&[&bytes]);
        let total: usize = events.iter().map(|e| e.data.len()).sum();
        // A replacement character is 3 bytes for each invalid byte, no more.
        prop_assert!(total <= 3 * bytes.len());
    }
}

#[test]
fn a_10_mb_event_arrives_whole() {
    let big = "x".repeat(10 << 20);
    let bytes = stream(std::slice::from_ref(&big));
    let pieces: Vec<&[u8]> = bytes.chunks(64 * 1024).collect();
    let events = decode(&pieces);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].data.len(), big.len());
    assert!(events[1].is_done());
}
