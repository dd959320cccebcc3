//! The gen-only benchmark's metric: the generation workers' per-iteration device step time,
//! read from their iteration logs (`print_iter_log: true`) exactly as upstream reads them
//! (`parse_gen_worker_device_step_time` in `tests/integration/defs/perf/test_perf_sanity.py`).
//!
//! A line counts when it carries `iter = N, ... prev_device_step_time = X ms` with `N ≥ 5` (the
//! first iterations wait for KV transfers or warm up) and is not the successor of an iteration
//! that scheduled no request (`num_scheduled_requests = 0` on the same rank's line for `N − 1`:
//! the device runs one step behind, so that idle period is what `N` reports). Per worker, the rows
//! are bucketed by `'num_generation_tokens': K` and the most frequent `K` is described (ties go
//! to the larger `K`; a worker whose `K` never parses is described whole): mean, median, sample
//! standard deviation (`ddof = 1`), P75 and P99 with linear interpolation. Each statistic is then
//! averaged over the workers. Pure: the caller reads the logs.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::stats::percentile;

static STEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"iter\s*=\s*(\d+),.*?prev_device_step_time\s*=\s*([\d.]+)\s*ms")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});
static SCHEDULED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"iter\s*=\s*(\d+),.*?num_scheduled_requests\s*=\s*(\d+)")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});
static GEN_TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'num_generation_tokens':\s*(\d+)")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});
static RANK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"global_rank\s*=\s*(\d+)").unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// Upstream's bound on the rows kept per worker (a runaway log cannot grow the scan forever).
const MAX_ROWS: usize = 500_000;

/// One usable iteration of one worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterRow {
    /// `num_generation_tokens`, when it parses.
    pub generation_tokens: Option<u64>,
    /// `prev_device_step_time`, ms.
    pub device_step_ms: f64,
}

/// The distribution of the per-iteration device step time, ms, averaged over the workers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepTimeStats {
    /// Mean (upstream's `d_mean_gen_worker_per_iter_device_step_time`, regression-gated).
    pub mean: f64,
    /// Median (gated too).
    pub median: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 99th percentile.
    pub p99: f64,
}

fn capture<T: std::str::FromStr>(c: &regex::Captures<'_>, i: usize) -> Option<T> {
    c.get(i)?.as_str().parse().ok()
}

/// A rank's previous iteration line: its iteration and scheduled requests, when they parse.
type Predecessor = (Option<u64>, Option<u64>);

/// The usable rows of one worker's log text (the part written during the measured run).
pub fn scan(log: &str) -> Vec<IterRow> {
    let mut rows = Vec::new();
    // Per emitting rank: (iteration, scheduled requests) of its previous line.
    let mut previous: Vec<(Option<u64>, Predecessor)> = Vec::new();
    for line in log.lines() {
        if !line.contains("prev_device_step_time") {
            continue;
        }
        let rank: Option<u64> = RANK.captures(line).and_then(|c| capture(&c, 1));
        let slot = match previous.iter().position(|(r, _)| *r == rank) {
            Some(i) => i,
            None => {
                previous.push((rank, (None, None)));
                previous.len() - 1
            }
        };
        let (pred_iter, pred_scheduled) = previous[slot].1;
        previous[slot].1 = match SCHEDULED.captures(line) {
            Some(c) => (capture(&c, 1), capture(&c, 2)),
            None => (None, None),
        };
        let Some(c) = STEP.captures(line) else {
            continue;
        };
        let (Some(iter), Some(ms)) = (capture::<u64>(&c, 1), capture::<f64>(&c, 2)) else {
            continue;
        };
        if iter < 5 {
            continue;
        }
        if pred_scheduled == Some(0) && pred_iter.is_some_and(|p| p + 1 == iter) {
            continue;
        }
        if rows.len() >= MAX_ROWS {
            continue;
        }
        rows.push(IterRow {
            generation_tokens: GEN_TOKENS.captures(line).and_then(|c| capture(&c, 1)),
            device_step_ms: ms,
        });
    }
    rows
}

/// Sample standard deviation (`ddof = 1`); 0 for fewer than two values.
fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

fn describe(rows: &[IterRow]) -> Option<StepTimeStats> {
    let mut buckets: Vec<(u64, Vec<f64>)> = Vec::new();
    for row in rows {
        if let Some(k) = row.generation_tokens {
            match buckets.iter_mut().find(|(b, _)| *b == k) {
                Some((_, v)) => v.push(row.device_step_ms),
                None => buckets.push((k, vec![row.device_step_ms])),
            }
        }
    }
    let mut values = match buckets.into_iter().max_by_key(|(k, v)| (v.len(), *k)) {
        Some((_, v)) => v,
        None => rows.iter().map(|r| r.device_step_ms).collect(),
    };
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = sample_std(&values);
    values.sort_by(f64::total_cmp);
    Some(StepTimeStats {
        mean,
        median: percentile(&values, 50.0),
        std,
        p75: percentile(&values, 75.0),
        p99: percentile(&values, 99.0),
    })
}

/// The statistics over every worker's rows (one entry per log); `None` when no worker logged a
/// usable iteration (upstream then fails the gen-only test).
pub fn stats(workers: &[Vec<IterRow>]) -> Option<StepTimeStats> {
    let per_worker: Vec<StepTimeStats> = workers.iter().filter_map(|r| describe(r)).collect();
    if per_worker.is_empty() {
        return None;
    }
    let n = per_worker.len() as f64;
    let avg = |f: fn(&StepTimeStats) -> f64| per_worker.iter().map(f).sum::<f64>() / n;
    Some(StepTimeStats {
        mean: avg(|s| s.mean),
        median: avg(|s| s.median),
        std: avg(|s| s.std),
        p75: avg(|s| s.p75),
        p99: avg(|s| s.p99),
    })
}

/// The lines upstream appends to the benchmark's output (the mean with 2 decimals, the rest
/// with 4), which its regexes read back.
pub fn summary_lines(s: &StepTimeStats) -> String {
    format!(
        "Average Per Iter Device Step Time (ms): {:.2}\n\
         Median Per Iter Device Step Time (ms): {:.4}\n\
         Stdev Per Iter Device Step Time (ms): {:.4}\n\
         P75 Per Iter Device Step Time (ms): {:.4}\n\
         P99 Per Iter Device Step Time (ms): {:.4}\n",
        s.mean, s.median, s.std, s.p75, s.p99
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(iter: u64, prev: &str, scheduled: u64, ngen: &str) -> String {
        format!(
            "[TRT-LLM] [I] [_torch][RANK 0] iter = {iter}, global_rank = 0, rank = 0, \
             host_step_time = 6.79ms, prev_device_step_time = {prev}, num_scheduled_requests = \
             {scheduled}, states = {{'num_ctx_requests': 0, 'num_ctx_tokens': 0, \
             'num_generation_tokens': {ngen}}}"
        )
    }

    #[test]
    fn rows_follow_upstreams_filters() {
        let log = [
            line(3, "7.00ms", 4, "4"),   // warm-up: dropped
            line(4, "7.00ms", 0, "0"),   // warm-up, and an empty iteration
            line(5, "900.00ms", 4, "4"), // after the empty one: idle time, dropped
            line(6, "N/A", 4, "4"),      // not a number: dropped
            line(7, "7.50ms", 4, "4"),
            line(8, "8.00ms", 4, "tensor(4)"), // kept, bucket unknown
            "a line without the step time".to_string(),
        ]
        .join("\n");
        let rows = scan(&log);
        assert_eq!(
            rows,
            [
                IterRow {
                    generation_tokens: Some(4),
                    device_step_ms: 7.5
                },
                IterRow {
                    generation_tokens: None,
                    device_step_ms: 8.0
                },
            ]
        );
    }

    #[test]
    fn the_mode_bucket_is_described_and_workers_are_averaged() {
        let row = |k: Option<u64>, ms: f64| IterRow {
            generation_tokens: k,
            device_step_ms: ms,
        };
        // Worker 1: bucket 4 has three rows [6, 7, 11], bucket 2 one: mean 8, median 7,
        // sample std sqrt((4 + 1 + 9) / 2) = sqrt(7), p75 = 7 + 0.5 × 4 = 9,
        // p99 = 7 + 0.98 × 4 = 10.92.
        let w1 = vec![
            row(Some(4), 6.0),
            row(Some(4), 7.0),
            row(Some(2), 100.0),
            row(Some(4), 11.0),
        ];
        // Worker 2: ties (one row each in 3 and 5) go to the larger bucket: [10]; std 0.
        let w2 = vec![row(Some(3), 1.0), row(Some(5), 10.0)];
        // Worker 3: nothing parses: the whole sample [2, 4].
        let w3 = vec![row(None, 2.0), row(None, 4.0)];
        let s = stats(&[w1, w2, w3, Vec::new()]).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.mean, (8.0 + 10.0 + 3.0) / 3.0));
        assert!(close(s.median, (7.0 + 10.0 + 3.0) / 3.0));
        assert!(close(s.std, (7f64.sqrt() + 0.0 + 2f64.sqrt()) / 3.0));
        assert!(close(s.p75, (9.0 + 10.0 + 3.5) / 3.0));
        assert!(close(s.p99, (10.92 + 10.0 + 3.98) / 3.0));
        assert_eq!(stats(&[Vec::new()]), None);
    }

    #[test]
    fn the_summary_reads_as_upstream_writes_it() {
        let s = StepTimeStats {
            mean: 7.123,
            median: 7.0,
            std: 0.12345,
            p75: 7.5,
            p99: 9.87654,
        };
        assert_eq!(
            summary_lines(&s),
            "Average Per Iter Device Step Time (ms): 7.12\n\
             Median Per Iter Device Step Time (ms): 7.0000\n\
             Stdev Per Iter Device Step Time (ms): 0.1235\n\
             P75 Per Iter Device Step Time (ms): 7.5000\n\
             P99 Per Iter Device Step Time (ms): 9.8765\n"
        );
    }
}
