//! Hostile datasets (docs/RELIABILITY.md): JSONL, `trtllm_custom` and Mooncake trace files of
//! mangled lines — wrong types, missing keys, huge numbers, deep nesting, invalid UTF-8, NULs,
//! half lines. Every file is read to requests or to an error naming the line (and, for a trace,
//! the field); nothing panics.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use disagg_bench::dataset::{DatasetError, load_jsonl, load_trtllm_custom};
use disagg_bench::trace::{MAX_INPUT_LENGTH, load_mooncake, trace_requests};
use proptest::prelude::*;

/// One line: a good one, one with a field of the wrong kind, or bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("4294967296".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("[1, -2, 3.5]".to_string()),
        Just(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
        Just("{}".to_string()),
        "\"\\PC{0,20}\"",
        "[0-9]{1,6}",
    ];
    prop_oneof![
        (value.clone(), value.clone()).prop_map(|(p, o)| format!(
            "{{\"prompt\": {p}, \"output_len\": {o}}}"
        )
        .into_bytes()),
        (value.clone(), value).prop_map(|(c, m)| format!(
            "{{\"input\": {{\"messages\": [{{\"content\": \"sys\"}}, {{\"content\": {c}}}], \"max_tokens\": {m}}}}}"
        )
        .into_bytes()),
        Just(b"{\"prompt\": \"cut in the mid".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"prompt\": \"ok\", \"output_len\": 4}".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mangled_datasets_are_read_or_refused(lines in prop::collection::vec(line(), 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        std::fs::write(&path, &bytes).unwrap();
        for result in [load_jsonl(&path, 8), load_trtllm_custom(&path, 1)] {
            match result {
                Ok(reqs) => prop_assert!(reqs.iter().all(|r| r.output_tokens >= 1)),
                Err(e) => prop_assert!(e.to_string().contains("data.jsonl"), "{e}"),
            }
        }
    }
}

/// A value for one field of a Mooncake trace line: a good one, or one of every wrong kind.
fn trace_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => "[0-9]{1,4}".prop_map(Some),
        1 => Just(None),
        1 => prop::sample::select(WRONG.to_vec()).prop_map(|v| Some(v.to_string())),
        1 => "\\PC{0,12}".prop_map(|s| Some(serde_json::Value::String(s).to_string())),
    ]
}

/// Values no field of a trace line takes (some are fine for `hash_ids` or `timestamp`, which
/// the properties allow for).
const WRONG: &[&str] = &[
    "null",
    "-1",
    "0",
    "-0.5",
    "1.5",
    "1e300",
    "1e400",
    "16777217",
    "4294967296",
    "18446744073709551616",
    "\"7\"",
    "true",
    "[]",
    "[1, -2, 3.5]",
    "[18446744073709551616]",
    "[\"a\"]",
    "{}",
];

/// One line of a trace: its four fields, each good, wrong or missing; or a line that is not one.
fn trace_line() -> impl Strategy<Value = Vec<u8>> {
    let fields =
        (trace_value(), trace_value(), trace_value(), trace_value()).prop_map(|(t, i, o, h)| {
            let parts: Vec<String> = [
                ("timestamp", t),
                ("input_length", i),
                ("output_length", o),
                ("hash_ids", h.map(|h| format!("[{h}]"))),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("\"{k}\": {v}")))
            .collect();
            format!("{{{}}}", parts.join(", ")).into_bytes()
        });
    prop_oneof![
        6 => fields,
        1 => Just(b"{\"timestamp\": 1, \"input_length\": 5, \"output_len".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        // Invalid UTF-8 inside an otherwise good line.
        1 => Just(b"{\"timestamp\": 1, \"input_length\": 5, \"output_length\": 2, \"x\": \"\xc3\x28\"}".to_vec()),
        1 => Just(format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes()),
        1 => Just(b"{\"timestamp\": 3, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [1, 2]}".to_vec()),
    ]
}

/// Write `lines` to `trace.jsonl` in `dir`.
fn trace_file(dir: &std::path::Path, lines: &[Vec<u8>]) -> std::path::PathBuf {
    let path = dir.join("trace.jsonl");
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// What a refused line's error must name: its field, or why it is not a line at all.
const NAMED: &[&str] = &[
    "timestamp",
    "input_length",
    "output_length",
    "hash_ids",
    "not JSON",
    "not UTF-8",
    "not an object",
];

proptest! {
    // A quarter of `one_wrong_field_is_named_with_its_line`'s draws are good lines, skipped:
    // room for that at any PROPTEST_CASES.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_global_rejects: 1_000_000,
        ..ProptestConfig::default()
    })]

    /// Mangled Mooncake traces: read and replayed, or refused with the file, a line that exists
    /// and what is wrong with it; never a panic.
    #[test]
    fn mangled_traces_are_read_or_refused_naming_the_line(
        lines in prop::collection::vec(trace_line(), 0..12)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = trace_file(dir.path(), &lines);
        match load_mooncake(&path) {
            Ok(entries) => {
                prop_assert!(entries.iter().all(|e| e.input_length <= MAX_INPUT_LENGTH));
                let (requests, offsets) = trace_requests(&entries, 16, 1.0, 1000, 7);
                for (r, e) in requests.iter().zip(&entries) {
                    prop_assert_eq!(r.prompt_tokens, Some(e.input_length));
                }
                prop_assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
            }
            Err(DatasetError::TraceLine { line, why, .. }) => {
                // Random bytes may hold newlines: the file's lines, not the generator's.
                let file_lines = std::fs::read(&path).unwrap().split(|b| *b == b'\n').count();
                prop_assert!((1..=file_lines).contains(&line), "line {line}: {why}");
                prop_assert!(NAMED.iter().any(|n| why.contains(n)), "{why}");
            }
            Err(DatasetError::Empty(p)) => prop_assert!(p.ends_with("trace.jsonl")),
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
    }

    /// Good lines with one field of one line replaced by a wrong value (or removed): the error
    /// names that line and that field.
    #[test]
    fn one_wrong_field_is_named_with_its_line(
        good in 1usize..8,
        at in any::<prop::sample::Index>(),
        field in 0usize..4,
        wrong in prop::sample::select(WRONG.to_vec()),
        remove in any::<bool>(),
    ) {
        let names = ["timestamp", "input_length", "output_length", "hash_ids"];
        let at = at.index(good);
        let valid_here = |v: &str| match field {
            // Any non-negative time is a timestamp: whether it is in order is another question.
            0 => v.parse::<f64>().is_ok_and(|t| t.is_finite() && t >= 0.0),
            2 => v == "16777217",
            // A missing, null or empty list of hash ids is a prompt of the request's own.
            3 => matches!(v, "null" | "[]"),
            _ => false,
        };
        // Removing the hash ids leaves a good line.
        prop_assume!(!(valid_here(wrong) || remove && field == 3));
        let lines: Vec<Vec<u8>> = (0..good)
            .map(|i| {
                let mut values = [
                    format!("{}", 10 * i + 1000),
                    "600".to_string(),
                    "20".to_string(),
                    "[1, 2]".to_string(),
                ];
                if i == at {
                    values[field] = wrong.to_string();
                }
                let parts: Vec<String> = names
                    .iter()
                    .zip(&values)
                    .enumerate()
                    .filter(|(f, _)| !(i == at && remove && *f == field))
                    .map(|(_, (k, v))| format!("\"{k}\": {v}"))
                    .collect();
                format!("{{{}}}", parts.join(", ")).into_bytes()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = trace_file(dir.path(), &lines);
        let e = load_mooncake(&path).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("trace.jsonl:{}: ", at + 1)), "{e}");
        if wrong == "1e400" && !remove {
            // Past f64: the JSON reader refuses the line before any field is looked at.
            prop_assert!(e.contains("not JSON"), "{e}");
        } else {
            prop_assert!(e.contains(names[field]), "{e}");
        }
    }
}

/// The longest prompt a trace may ask for is read; one token more is refused by name.
#[test]
fn the_longest_trace_prompt_is_read_and_one_more_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = |n: u32| {
        format!("{{\"timestamp\": 0, \"input_length\": {n}, \"output_length\": 1}}").into_bytes()
    };
    let path = trace_file(dir.path(), &[line(MAX_INPUT_LENGTH)]);
    assert_eq!(
        load_mooncake(&path).unwrap()[0].input_length,
        MAX_INPUT_LENGTH
    );
    let path = trace_file(dir.path(), &[line(MAX_INPUT_LENGTH + 1)]);
    let e = load_mooncake(&path).unwrap_err().to_string();
    assert!(e.contains("trace.jsonl:1: input_length must be a positive integer of at most 16777216 tokens, got 16777217"), "{e}");
}
