//! The result block TensorRT-LLM's `benchmark_serving` prints, with its exact labels and
//! layout (`{:<40} {:<10}` rows, 50-wide centred headers), so the upstream parsers read ours.

use std::fmt::Write as _;

use crate::metrics::RunMetrics;
use crate::stats::Summary;

fn header(out: &mut String, title: &str, fill: char) {
    // Python's "{:{c}^50}": extra padding goes to the right.
    let width: usize = 50;
    let pad = width.saturating_sub(title.chars().count());
    let left = pad / 2;
    let fill_s = |n: usize| fill.to_string().repeat(n);
    let _ = writeln!(out, "{}{title}{}", fill_s(left), fill_s(pad - left));
}

fn int_row(out: &mut String, label: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<40} {v:<10}");
}

fn float_row(out: &mut String, label: &str, v: f64) {
    let _ = writeln!(out, "{label:<40} {:<10}", format!("{v:.2}"));
}

/// `99` → "99", `99.9` → "99.9" (the upstream `p_word`).
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

fn section(out: &mut String, title: &str, short: &str, s: &Summary) {
    header(out, title, '-');
    float_row(out, &format!("Mean {short} (ms):"), s.mean);
    float_row(out, &format!("Median {short} (ms):"), s.median);
    float_row(out, &format!("Std Dev {short} (ms):"), s.std);
    for (p, v) in &s.percentiles {
        float_row(out, &format!("P{} {short} (ms):", p_word(*p)), *v);
    }
}

/// Render the block.
pub fn console_block(m: &RunMetrics) -> String {
    let mut out = String::new();
    header(&mut out, " Serving Benchmark Result ", '=');
    int_row(&mut out, "Total requests:", m.total_requests);
    int_row(&mut out, "Successful requests:", m.completed);
    int_row(&mut out, "Failed requests:", m.failed);
    float_row(&mut out, "Benchmark duration (s):", m.duration_s);
    int_row(&mut out, "Total input tokens:", m.total_input_tokens);
    int_row(&mut out, "Total generated tokens:", m.total_output_tokens);
    float_row(
        &mut out,
        "Request throughput (req/s):",
        m.request_throughput,
    );
    if let Some(g) = m.request_goodput {
        float_row(&mut out, "Request goodput (req/s):", g);
    }
    float_row(
        &mut out,
        "Output token throughput (tok/s):",
        m.output_throughput,
    );
    float_row(
        &mut out,
        "Total Token throughput (tok/s):",
        m.total_token_throughput,
    );
    float_row(&mut out, "User throughput (tok/s):", m.user_throughput);
    if let Some(a) = &m.avg_decoded_tokens_per_iter {
        // Upstream prints this section first, without a unit, with min and max after the std
        // (`process_one_metric(..., unit_suffix="")`); its mean row is the perf tests' `d_al`.
        let name = "Avg Decoded Tokens per Iter";
        header(&mut out, name, '-');
        float_row(&mut out, &format!("Mean {name}:"), a.summary.mean);
        float_row(&mut out, &format!("Median {name}:"), a.summary.median);
        float_row(&mut out, &format!("Std Dev {name}:"), a.summary.std);
        float_row(&mut out, &format!("Min {name}:"), a.min);
        float_row(&mut out, &format!("Max {name}:"), a.max);
        for (p, v) in &a.summary.percentiles {
            float_row(&mut out, &format!("P{} {name}:", p_word(*p)), *v);
        }
    }
    section(&mut out, "Time to First Token", "TTFT", &m.ttft_ms);
    section(
        &mut out,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &m.tpot_ms,
    );
    section(&mut out, "Inter-token Latency", "ITL", &m.itl_ms);
    section(&mut out, "End-to-end Latency", "E2EL", &m.e2el_ms);
    header(&mut out, "", '=');
    if m.failed > 0 {
        let _ = writeln!(out, "!FAILED REQUESTS!");
        for (reason, n) in m.errors.iter().take(10) {
            let _ = writeln!(out, "  {n} x {reason}");
        }
    }
    out
}

/// The header of the per-run CSV summary.
pub fn csv_header(percentiles: &[f64]) -> String {
    let mut cols: Vec<String> = [
        "run",
        "interrupted",
        "valid",
        "total_requests",
        "completed",
        "failed",
        "duration_s",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "user_throughput",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    for m in ["ttft", "tpot", "itl", "e2el"] {
        cols.push(format!("mean_{m}_ms"));
        cols.push(format!("median_{m}_ms"));
        cols.push(format!("std_{m}_ms"));
        for p in percentiles {
            cols.push(format!("p{}_{m}_ms", p_word(*p)));
        }
    }
    cols.join(",")
}

/// One run's CSV row, matching [`csv_header`].
pub fn csv_row(run: &str, interrupted: bool, valid: bool, m: &RunMetrics) -> String {
    let mut cells = vec![
        run.replace(',', ";"),
        interrupted.to_string(),
        valid.to_string(),
        m.total_requests.to_string(),
        m.completed.to_string(),
        m.failed.to_string(),
        format!("{:.6}", m.duration_s),
        m.total_input_tokens.to_string(),
        m.total_output_tokens.to_string(),
        format!("{:.6}", m.request_throughput),
        format!("{:.6}", m.output_throughput),
        format!("{:.6}", m.total_token_throughput),
        format!("{:.6}", m.user_throughput),
    ];
    for s in [&m.ttft_ms, &m.tpot_ms, &m.itl_ms, &m.e2el_ms] {
        cells.push(format!("{:.6}", s.mean));
        cells.push(format!("{:.6}", s.median));
        cells.push(format!("{:.6}", s.std));
        for (_, v) in &s.percentiles {
            cells.push(format!("{v:.6}"));
        }
    }
    cells.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_centred_like_python() {
        let mut s = String::new();
        header(&mut s, " Serving Benchmark Result ", '=');
        header(&mut s, "Time to First Token", '-');
        header(&mut s, "Time per Output Token (excl. 1st token)", '-');
        assert_eq!(
            s,
            "============ Serving Benchmark Result ============\n\
             ---------------Time to First Token----------------\n\
             -----Time per Output Token (excl. 1st token)------\n"
        );
    }

    #[test]
    fn percentile_words() {
        assert_eq!(
            (p_word(99.0), p_word(99.9), p_word(50.0)),
            ("99".into(), "99.9".into(), "50".into())
        );
    }

    #[test]
    fn the_decoded_tokens_section_reads_as_upstream_prints_it() {
        use crate::metrics::compute;
        use crate::timeline::{DecodedPerIter, Timeline};
        let t = |v: f64| Timeline::sample(DecodedPerIter::Value(v));
        let block = console_block(&compute(&[t(2.0), t(3.0)], &[99.0], None));
        let section = "-----------Avg Decoded Tokens per Iter------------\n\
             Mean Avg Decoded Tokens per Iter:        2.50      \n\
             Median Avg Decoded Tokens per Iter:      2.50      \n\
             Std Dev Avg Decoded Tokens per Iter:     0.50      \n\
             Min Avg Decoded Tokens per Iter:         2.00      \n\
             Max Avg Decoded Tokens per Iter:         3.00      \n\
             P99 Avg Decoded Tokens per Iter:         2.99      \n\
             ---------------Time to First Token----------------\n";
        assert!(block.contains(section), "{block}");
        // The upstream perf test's `al` regex finds the mean.
        let al = block
            .lines()
            .find_map(|l| l.strip_prefix("Mean Avg Decoded Tokens per Iter:"))
            .map(|v| v.trim().parse::<f64>().unwrap());
        assert_eq!(al, Some(2.5));
    }
}
