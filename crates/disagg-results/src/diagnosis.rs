//! Why a run that failed went wrong, as its telemetry tells: for an INVALID record or one whose
//! gated metric regressed, the lines of [`disagg_bench::telemetry::diagnose`] (a KV cache that
//! filled up, a queue that built up, a cache that hardly hit, gaps in the reads). One function,
//! [`Diagnosis::of`], used by the HTML report and by `disagg check`.

use crate::RunRecord;
use crate::check::Row;

/// The diagnosis of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// `con8`.
    pub run: String,
    /// `invalid` or `regressed` (an invalid run is said invalid first).
    pub what: &'static str,
    /// What the telemetry shows; empty when nothing stands out.
    pub lines: Vec<String>,
}

impl Diagnosis {
    /// The diagnosis of `record` when it is invalid or `regressed`, and carries telemetry.
    pub fn of(record: &RunRecord, regressed: bool) -> Option<Diagnosis> {
        let telemetry = record.telemetry.as_ref()?;
        let what = match (record.valid, regressed) {
            (false, _) => "invalid",
            (true, true) => "regressed",
            (true, false) => return None,
        };
        Some(Diagnosis {
            run: record.load.clone(),
            what,
            lines: disagg_bench::telemetry::diagnose(telemetry),
        })
    }

    /// Each record's diagnosis, with the regressions of a check's `rows`, in record order.
    pub fn of_all(records: &[RunRecord], rows: &[Row]) -> Vec<Diagnosis> {
        records
            .iter()
            .filter_map(|r| {
                let regressed = rows
                    .iter()
                    .any(|row| row.run == r.load && row.verdict == "regression");
                Diagnosis::of(r, regressed)
            })
            .collect()
    }

    /// The sentence that opens it (`This run is invalid. Diagnosis:`, or that nothing stands
    /// out).
    pub fn heading(&self) -> String {
        if self.lines.is_empty() {
            format!(
                "This run is {}; its telemetry shows no full KV cache, queue or gap.",
                self.what
            )
        } else {
            format!("This run is {}. Diagnosis:", self.what)
        }
    }

    /// As a terminal shows it: `con8: <heading>` and one indented line each.
    pub fn text(&self) -> String {
        let mut out = format!("{}: {}\n", self.run, self.heading());
        for l in &self.lines {
            out.push_str("  - ");
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use disagg_bench::telemetry::{Stat, TargetSummary, TelemetrySummary};

    use super::*;

    fn record(load: &str, valid: bool, kv_max: f64) -> RunRecord {
        let mut r = RunRecord {
            record_version: 1,
            tool: "disagg test".into(),
            url: "http://127.0.0.1:1".into(),
            model: "m".into(),
            endpoint: "completions".into(),
            load: load.into(),
            num_prompts: 8,
            isl: 64,
            osl: 8,
            range_ratio: 0.0,
            streaming: true,
            ignore_eos: true,
            seed: 0,
            environment: disagg_bench::record::Environment::here(),
            metric_definitions: "test".into(),
            interrupted: false,
            valid,
            invalid_reasons: Vec::new(),
            metrics: disagg_bench::metrics::compute(&[], &[50.0], None),
            timelines: None,
            gen_step_time_ms: None,
            dataset: None,
            telemetry: None,
        };
        let stat = Stat {
            mean: kv_max / 2.0,
            max: kv_max,
            max_at_s: 4.0,
        };
        r.telemetry = Some(TelemetrySummary {
            interval_s: 1.0,
            targets: vec![TargetSummary {
                name: "GEN_0".into(),
                scrapes: 5,
                kv_usage: Some(stat),
                queue: None,
                running: None,
                cache_hit_rate: None,
                kv_usage_series: Vec::new(),
                queue_series: Vec::new(),
            }],
            ..TelemetrySummary::default()
        });
        r
    }

    #[test]
    fn an_invalid_or_regressed_run_is_diagnosed_and_a_passing_one_is_not() {
        let full = Diagnosis::of(&record("con8", false, 1.0), false).unwrap();
        assert_eq!(full.what, "invalid");
        assert_eq!(
            full.text(),
            "con8: This run is invalid. Diagnosis:\n  - GEN_0: KV usage reached 100 % at 4 s\n"
        );
        let calm = Diagnosis::of(&record("con1", true, 0.3), true).unwrap();
        assert_eq!(
            calm.text(),
            "con1: This run is regressed; its telemetry shows no full KV cache, queue or gap.\n"
        );
        assert_eq!(Diagnosis::of(&record("con1", true, 1.0), false), None);
        let mut bare = record("con2", false, 1.0);
        bare.telemetry = None;
        assert_eq!(
            Diagnosis::of(&bare, true),
            None,
            "no telemetry, nothing to say"
        );
    }
}
