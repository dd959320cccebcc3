//! Run-level metrics with TensorRT-LLM's `benchmark_serving` definitions (itself vLLM's):
//!
//! | metric | formula |
//! |---|---|
//! | TTFT | first content chunk − start, per successful request |
//! | TPOT | `(E2EL − TTFT) / (output − 1)` for outputs > 1 token (first token excluded) |
//! | ITL | gaps between consecutive content chunks, pooled over all requests (per chunk) |
//! | E2EL | last content chunk − start |
//! | request throughput | successful / duration |
//! | output token throughput | Σ output tokens / duration |
//! | total token throughput | (Σ dataset prompt tokens + Σ output tokens) / duration (text prompts of unknown length count the server's `usage.prompt_tokens`) |
//! | user throughput | mean over successful requests of output / E2EL (TTFT included) |
//! | goodput | requests meeting every SLO / duration (TPOT counts as 0 for one-token outputs) |
//! | avg decoded tokens per iter | per successful request, the last `choices[0].avg_decoded_tokens_per_iter` its chunks carried (0 when none did; a last `null` leaves it out); mean, median, std, min, max, percentiles; reported when the mean is above 0 (upstream `benchmark_serving.py` @ 0228a71; its mean is the perf tests' `d_al`) |
//!
//! Statistics: mean, median, population std, numpy-linear percentiles, in milliseconds; an
//! empty sample gives 0. Failed requests are counted and excluded from every latency and token
//! total. Duration runs from the start of the run to the end of the last request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::{Summary, summarize};
use crate::timeline::{Timeline, TokenSource};

/// Service-level objectives for goodput, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// TTFT bound.
    pub ttft_ms: Option<f64>,
    /// TPOT bound.
    pub tpot_ms: Option<f64>,
    /// E2EL bound.
    pub e2el_ms: Option<f64>,
}

/// Statistics of the per-request tokens per decoding iteration (speculative decoding's
/// acceptance, upstream's "Avg Decoded Tokens per Iter"), in tokens, with the minimum and the
/// maximum upstream prints besides the usual ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerIterStats {
    /// Mean, median, std and percentiles.
    pub summary: Summary,
    /// Smallest request value.
    pub min: f64,
    /// Largest request value.
    pub max: f64,
}

impl PerIterStats {
    /// Upstream's statistics of `values`; `None` when their mean is not above 0 (upstream then
    /// prints no section, so its `d_al` regex finds nothing).
    pub fn of(values: &[f64], percentiles: &[f64]) -> Option<PerIterStats> {
        let summary = summarize(values, percentiles);
        (summary.mean > 0.0).then(|| PerIterStats {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            summary,
        })
    }
}

/// The metrics of one run (one concurrency or rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Requests measured (warm-up excluded).
    pub total_requests: usize,
    /// Successful ones.
    pub completed: usize,
    /// Failed ones.
    pub failed: usize,
    /// Seconds from the start of the run to the end of the last request.
    pub duration_s: f64,
    /// Σ dataset prompt tokens of successful requests.
    pub total_input_tokens: u64,
    /// Σ output tokens of successful requests.
    pub total_output_tokens: u64,
    /// Where the output counts came from: the least exact source any request needed.
    pub output_token_source: TokenSource,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Good requests per second (with SLOs).
    pub request_goodput: Option<f64>,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input + output tokens per second.
    pub total_token_throughput: f64,
    /// Mean of output / E2EL per request, tokens per second.
    pub user_throughput: f64,
    /// TTFT, ms.
    pub ttft_ms: Summary,
    /// TPOT, ms.
    pub tpot_ms: Summary,
    /// ITL per chunk, ms.
    pub itl_ms: Summary,
    /// ITL per token, ms (each chunk's gap shared by its tokens).
    pub itl_per_token_ms: Summary,
    /// E2EL, ms.
    pub e2el_ms: Summary,
    /// How late the client sent each request after it was due (its own scheduling lag), ms.
    pub send_lag_ms: Summary,
    /// Tokens per decoding iteration, when the server reported speculative decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_decoded_tokens_per_iter: Option<PerIterStats>,
    /// Failure reasons with their counts, most frequent first.
    pub errors: Vec<(String, usize)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Compute the run's metrics from its timelines.
pub fn compute(timelines: &[Timeline], percentiles: &[f64], slo: Option<Slo>) -> RunMetrics {
    let ok: Vec<&Timeline> = timelines.iter().filter(|t| t.succeeded()).collect();
    let duration = timelines
        .iter()
        .map(|t| t.end)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    let mut ttft = Vec::new();
    let mut tpot = Vec::new();
    let mut itl = Vec::new();
    let mut itl_tok = Vec::new();
    let mut e2el = Vec::new();
    let mut user = Vec::new();
    let mut per_iter = Vec::new();
    let (mut input, mut output) = (0u64, 0u64);
    let mut source = TokenSource::Usage;
    let mut good = 0usize;
    for t in &ok {
        let (n, from) = t.output_tokens();
        source = match (source, from) {
            (TokenSource::Chunks, _) | (_, TokenSource::Chunks) => TokenSource::Chunks,
            (TokenSource::Tokenizer, _) | (_, TokenSource::Tokenizer) => TokenSource::Tokenizer,
            _ => TokenSource::Usage,
        };
        // The dataset's length (as upstream); the server's count for text prompts of unknown length.
        let prompt = if t.prompt_tokens > 0 {
            t.prompt_tokens
        } else {
            t.usage_prompt_tokens.unwrap_or(0)
        };
        input += u64::from(prompt);
        output += u64::from(n);
        let first = t.ttft().unwrap_or_default();
        let last = t.e2el().unwrap_or_default();
        ttft.push(ms(first));
        e2el.push(ms(last));
        // In f64, as upstream: no rounding to whole nanoseconds.
        let per_token = (n > 1).then(|| (ms(last) - ms(first)) / f64::from(n - 1));
        if let Some(p) = per_token {
            tpot.push(p);
        }
        itl.extend(t.chunk_gaps().map(ms));
        for w in t.chunks.windows(2) {
            let k = w[1].tokens.max(1);
            let gap = ms(w[1].at.saturating_sub(w[0].at)) / f64::from(k);
            itl_tok.extend(std::iter::repeat_n(gap, k as usize));
        }
        if last > Duration::ZERO {
            user.push(f64::from(n) / last.as_secs_f64());
        }
        per_iter.extend(t.decoded_per_iter.sample());
        if let Some(s) = slo {
            let within = |bound: Option<f64>, v: f64| bound.is_none_or(|b| v <= b);
            if within(s.ttft_ms, ms(first))
                && within(s.tpot_ms, per_token.unwrap_or(0.0))
                && within(s.e2el_ms, ms(last))
            {
                good += 1;
            }
        }
    }
    let lag: Vec<f64> = timelines
        .iter()
        .map(|t| ms(t.sent.saturating_sub(t.intended)))
        .collect();
    let mut errors: Vec<(String, usize)> = Vec::new();
    for t in timelines.iter().filter(|t| !t.succeeded()) {
        let reason = t
            .error
            .clone()
            .unwrap_or_else(|| "never received a content chunk".to_string());
        match errors.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += 1,
            None => errors.push((reason, 1)),
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let user_throughput = if user.is_empty() {
        0.0
    } else {
        user.iter().sum::<f64>() / user.len() as f64
    };
    RunMetrics {
        total_requests: timelines.len(),
        completed: ok.len(),
        failed: timelines.len() - ok.len(),
        duration_s: duration,
        total_input_tokens: input,
        total_output_tokens: output,
        output_token_source: source,
        request_throughput: ok.len() as f64 / duration,
        request_goodput: slo.map(|_| good as f64 / duration),
        output_throughput: output as f64 / duration,
        total_token_throughput: (input + output) as f64 / duration,
        user_throughput,
        ttft_ms: summarize(&ttft, percentiles),
        tpot_ms: summarize(&tpot, percentiles),
        itl_ms: summarize(&itl, percentiles),
        itl_per_token_ms: summarize(&itl_tok, percentiles),
        e2el_ms: summarize(&e2el, percentiles),
        send_lag_ms: summarize(&lag, percentiles),
        avg_decoded_tokens_per_iter: PerIterStats::of(&per_iter, percentiles),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Chunk;

    fn t(ms_: u64) -> Duration {
        Duration::from_millis(ms_)
    }

    fn timeline(start: u64, chunks: &[(u64, u32)], usage: Option<u32>) -> Timeline {
        Timeline {
            intended: t(start),
            sent: t(start),
            chunks: chunks
                .iter()
                .map(|&(at, tokens)| Chunk { at: t(at), tokens })
                .collect(),
            end: t(chunks.last().map_or(start, |c| c.0) + 1),
            prompt_tokens: 100,
            requested_output_tokens: 8,
            usage_output_tokens: usage,
            usage_prompt_tokens: Some(100),
            output_text: None,
            tokenizer_output_tokens: None,
            decoded_per_iter: crate::timeline::DecodedPerIter::NotSent,
            error: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn single_token_chunks() {
        // TTFT 10, then tokens at 20, 30, 40: TPOT 10, ITL [10,10,10], E2EL 40.
        let r = compute(
            &[timeline(0, &[(10, 1), (20, 1), (30, 1), (40, 1)], Some(4))],
            &[99.0],
            None,
        );
        assert!(close(r.ttft_ms.mean, 10.0));
        assert!(close(r.tpot_ms.mean, 10.0));
        assert_eq!(r.itl_ms.count, 3);
        assert!(close(r.itl_ms.mean, 10.0));
        assert!(close(r.e2el_ms.mean, 40.0));
        // duration = end of the last request = 41 ms
        assert!(close(r.duration_s, 0.041));
        assert!(close(r.output_throughput, 4.0 / 0.041));
        assert!(close(r.total_token_throughput, 104.0 / 0.041));
        assert!(close(r.user_throughput, 4.0 / 0.040));
        assert_eq!(r.output_token_source, TokenSource::Usage);
    }

    #[test]
    fn multi_token_chunks_stretch_itl_but_not_tpot() {
        // 1 token at 10, then chunks of 4 tokens at 50 and 90: output 9 (usage).
        let r = compute(
            &[timeline(0, &[(10, 1), (50, 4), (90, 4)], Some(9))],
            &[50.0],
            None,
        );
        assert!(close(r.tpot_ms.mean, (90.0 - 10.0) / 8.0));
        assert!(close(r.itl_ms.mean, 40.0), "one gap per chunk");
        assert_eq!(r.itl_per_token_ms.count, 8);
        assert!(close(r.itl_per_token_ms.mean, 10.0), "per-token variant");
    }

    #[test]
    fn one_token_outputs_have_no_tpot_and_count_as_zero_for_goodput() {
        let one = timeline(0, &[(30, 1)], Some(1));
        let slow = timeline(0, &[(10, 1), (200, 1)], Some(2));
        let slo = Slo {
            ttft_ms: Some(50.0),
            tpot_ms: Some(100.0),
            e2el_ms: None,
        };
        let r = compute(&[one, slow], &[99.0], Some(slo));
        assert_eq!(r.tpot_ms.count, 1);
        assert!(close(r.tpot_ms.mean, 190.0));
        // `one` is good (TPOT counts as 0); `slow` misses the TPOT SLO.
        assert!(close(r.request_goodput.unwrap(), 1.0 / r.duration_s));
    }

    #[test]
    fn failures_are_counted_and_excluded() {
        let good = timeline(0, &[(10, 1), (20, 1)], Some(2));
        let mut failed = timeline(0, &[(5, 1)], Some(1));
        failed.error = Some("HTTP 500".into());
        let mut silent = timeline(0, &[], None);
        silent.end = t(300);
        let r = compute(&[good, failed, silent], &[99.0], None);
        assert_eq!((r.total_requests, r.completed, r.failed), (3, 1, 2));
        assert_eq!(r.total_output_tokens, 2);
        assert_eq!(r.ttft_ms.count, 1);
        assert!(
            close(r.duration_s, 0.3),
            "the failed request's end still bounds the run"
        );
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn without_usage_the_chunk_tokens_count() {
        let r = compute(&[timeline(0, &[(10, 1), (20, 3)], None)], &[99.0], None);
        assert_eq!(r.total_output_tokens, 4);
        assert_eq!(r.output_token_source, TokenSource::Chunks);
        assert!(close(r.tpot_ms.mean, 10.0 / 3.0));
    }

    #[test]
    fn a_tokenizer_count_beats_chunk_counting() {
        let mut t = timeline(0, &[(10, 1), (20, 1)], None);
        t.tokenizer_output_tokens = Some(5);
        let r = compute(&[t], &[99.0], None);
        assert_eq!(
            (r.total_output_tokens, r.output_token_source),
            (5, TokenSource::Tokenizer)
        );
    }

    #[test]
    fn latency_counts_from_the_intended_start() {
        // Due at 0, sent late at 30 (the client was behind): TTFT is 40, not 10.
        let mut late = timeline(0, &[(40, 1), (50, 1)], Some(2));
        late.sent = t(30);
        let r = compute(&[late], &[99.0], None);
        assert!(close(r.ttft_ms.mean, 40.0));
        assert!(
            close(r.send_lag_ms.mean, 30.0),
            "the client's own lag is reported"
        );
    }

    #[test]
    fn decoded_tokens_per_iter_follow_upstreams_list_rules() {
        use crate::timeline::DecodedPerIter;
        // Five successful requests: 3.0, 2.0, never sent (0.0), 2.5, and a last `null` (left
        // out); one failed request with 4.0 (left out, as every failure).
        let mut ts: Vec<Timeline> = [3.0, 2.0]
            .into_iter()
            .map(|v| {
                let mut t = timeline(0, &[(10, 1), (20, 3)], Some(4));
                t.decoded_per_iter = DecodedPerIter::Value(v);
                t
            })
            .collect();
        ts.push(timeline(0, &[(10, 1), (20, 3)], Some(4)));
        let mut t = timeline(0, &[(10, 1), (20, 3)], Some(4));
        t.decoded_per_iter = DecodedPerIter::Value(2.5);
        ts.push(t);
        let mut null = timeline(0, &[(10, 1)], Some(1));
        null.decoded_per_iter = DecodedPerIter::Null;
        ts.push(null);
        let mut failed = timeline(0, &[(10, 1)], Some(1));
        failed.decoded_per_iter = DecodedPerIter::Value(4.0);
        failed.error = Some("HTTP 500".into());
        ts.push(failed);
        let r = compute(&ts, &[50.0, 99.0], None);
        let s = r.avg_decoded_tokens_per_iter.unwrap();
        // [3, 2, 0, 2.5]: mean 1.875, sorted [0, 2, 2.5, 3], median 2.25,
        // std sqrt(((1.125)^2 + (0.125)^2 + (1.875)^2 + (0.625)^2) / 4) = sqrt(5.1875 / 4),
        // p99 = 2.5 + 0.97 × 0.5 = 2.985.
        assert_eq!(s.summary.count, 4);
        assert!(close(s.summary.mean, 1.875));
        assert!(close(s.summary.median, 2.25));
        assert!(close(s.summary.std, (5.1875f64 / 4.0).sqrt()));
        assert!(close(s.summary.percentile(99.0).unwrap(), 2.985));
        assert_eq!((s.min, s.max), (0.0, 3.0));
        // Nothing sent anywhere: a mean of 0, so no statistics (upstream prints no section).
        let plain = compute(&[timeline(0, &[(10, 1), (20, 1)], Some(2))], &[99.0], None);
        assert_eq!(plain.avg_decoded_tokens_per_iter, None);
    }
}
