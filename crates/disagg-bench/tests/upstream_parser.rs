//! Our result block, read by the upstream pipeline's own parsing rules (TensorRT-LLM
//! `test_perf_sanity.py`): every one of the 16 metrics is found, with the value we computed,
//! and the failure checks fire exactly when requests failed.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::time::Duration;

use disagg_bench::metrics::compute;
use disagg_bench::report::console_block;
use disagg_bench::timeline::{Chunk, Timeline};
use regex::Regex;

/// The upstream metric → label regex table (value group `(-?[\d\.]+)`, first match wins).
const QUERIES: [(&str, &str); 16] = [
    ("seq_throughput", r"Request throughput \(req\/s\):"),
    ("token_throughput", r"Output token throughput \(tok\/s\):"),
    (
        "total_token_throughput",
        r"Total Token throughput \(tok\/s\):",
    ),
    ("user_throughput", r"User throughput \(tok\/s\):"),
    ("mean_ttft", r"Mean TTFT \(ms\):"),
    ("median_ttft", r"Median TTFT \(ms\):"),
    ("p99_ttft", r"P99 TTFT \(ms\):"),
    ("mean_itl", r"Mean ITL \(ms\):"),
    ("median_itl", r"Median ITL \(ms\):"),
    ("p99_itl", r"P99 ITL \(ms\):"),
    ("mean_tpot", r"Mean TPOT \(ms\):"),
    ("median_tpot", r"Median TPOT \(ms\):"),
    ("p99_tpot", r"P99 TPOT \(ms\):"),
    ("mean_e2el", r"Mean E2EL \(ms\):"),
    ("median_e2el", r"Median E2EL \(ms\):"),
    ("p99_e2el", r"P99 E2EL \(ms\):"),
];

fn parse(output: &str) -> Vec<(&'static str, f64)> {
    QUERIES
        .iter()
        .filter_map(|(name, label)| {
            let re = Regex::new(&format!(r"{label}\s+(-?[\d\.]+)")).unwrap();
            re.captures(output)
                .map(|c| (*name, c[1].parse::<f64>().unwrap()))
        })
        .collect()
}

fn upstream_failure_check(output: &str) -> bool {
    let failed = Regex::new(r"Failed requests:\s+(\d+)").unwrap();
    let n: u64 = failed.captures(output).map_or(0, |c| c[1].parse().unwrap());
    n > 0 || output.contains("!FAILED REQUESTS!") || output.contains("!CHECK LOG FOR ERRORS!")
}

fn timeline(i: u64, fail: bool) -> Timeline {
    let ms = Duration::from_millis;
    let base = i * 7;
    Timeline {
        intended: ms(base),
        sent: ms(base),
        chunks: (1..=5)
            .map(|k| Chunk {
                at: ms(base + 10 * k + i),
                tokens: 1,
            })
            .collect(),
        end: ms(base + 60 + i),
        prompt_tokens: 128,
        requested_output_tokens: 5,
        usage_output_tokens: Some(5),
        usage_prompt_tokens: Some(128),
        output_text: None,
        tokenizer_output_tokens: None,
        decoded_per_iter: Default::default(),
        error: fail.then(|| "HTTP 500".to_string()),
    }
}

#[test]
fn all_sixteen_metrics_parse_with_our_values() {
    let runs: Vec<Timeline> = (0..20).map(|i| timeline(i, false)).collect();
    let m = compute(&runs, &[99.0], None);
    let out = console_block(&m);
    let parsed = parse(&out);
    assert_eq!(parsed.len(), 16, "{out}");
    let get = |n: &str| parsed.iter().find(|(k, _)| *k == n).unwrap().1;
    let near = |a: f64, b: f64| (a - b).abs() <= 0.005 + 1e-9;
    assert!(near(get("seq_throughput"), m.request_throughput));
    assert!(near(get("token_throughput"), m.output_throughput));
    assert!(near(
        get("total_token_throughput"),
        m.total_token_throughput
    ));
    assert!(near(get("user_throughput"), m.user_throughput));
    assert!(near(get("mean_ttft"), m.ttft_ms.mean));
    assert!(near(get("p99_tpot"), m.tpot_ms.percentiles[0].1));
    assert!(near(get("median_e2el"), m.e2el_ms.median));
    assert!(near(get("mean_itl"), m.itl_ms.mean));
    assert!(!upstream_failure_check(&out));
}

#[test]
fn failed_requests_trip_the_upstream_check() {
    let mut runs: Vec<Timeline> = (0..5).map(|i| timeline(i, false)).collect();
    runs.push(timeline(9, true));
    let out = console_block(&compute(&runs, &[99.0], None));
    assert!(upstream_failure_check(&out), "{out}");
    assert!(out.contains("Failed requests:                         1"));
    assert_eq!(parse(&out).len(), 16);
}
