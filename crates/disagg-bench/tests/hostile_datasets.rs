//! Hostile datasets (docs/RELIABILITY.md): JSONL and `trtllm_custom` files of mangled lines —
//! wrong types, huge numbers, deep nesting, invalid UTF-8, NULs, half lines. Every file is read to
//! requests or to an error naming the line; nothing panics.

use disagg_bench::dataset::{load_jsonl, load_trtllm_custom};
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
