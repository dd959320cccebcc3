//! Stored runs as a person or a spreadsheet reads them (`disagg results list`, `export csv`).

use std::fmt::Write as _;

use crate::junit::iso8601;
use crate::record::METRICS;
use crate::store::StoredRun;

/// One line per stored run, newest first as given, under a header.
pub fn table(runs: &[StoredRun]) -> String {
    let mut s = format!(
        "{:>5}  {:<20} {:<7} {:<6} {:>12} {:>10}  {:<5} config / run directory\n",
        "id", "when (UTC)", "run", "valid", "out tok/s", "TTFT p50", "base"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "{:>5}  {:<20} {:<7} {:<6} {:>12.1} {:>10.2}  {:<5} {} {}",
            r.id,
            iso8601(r.created_unix_ms),
            r.label,
            r.valid,
            r.metrics
                .get("token_throughput")
                .copied()
                .unwrap_or(f64::NAN),
            r.metrics.get("median_ttft").copied().unwrap_or(f64::NAN),
            if r.baseline { "yes" } else { "" },
            r.config_name,
            r.run_dir
        );
    }
    s
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The runs as CSV: identity columns, then every upstream metric.
pub fn csv(runs: &[StoredRun]) -> String {
    let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
    let mut s = format!(
        "id,created_utc,config,label,valid,post_merge,baseline,case_key,run_dir,{}\n",
        names.join(",")
    );
    for r in runs {
        let metrics: Vec<String> = names
            .iter()
            .map(|n| r.metrics.get(*n).map_or(String::new(), |v| v.to_string()))
            .collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            r.id,
            iso8601(r.created_unix_ms),
            csv_escape(&r.config_name),
            r.label,
            r.valid,
            r.post_merge,
            r.baseline,
            r.case_key,
            csv_escape(&r.run_dir),
            metrics.join(",")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_escape("a,b"), "\"a,b\"");
        assert_eq!(csv_escape("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_escape("plain"), "plain");
        assert!(csv(&[]).starts_with("id,created_utc,config,"));
        assert_eq!(table(&[]).lines().count(), 1);
    }
}
