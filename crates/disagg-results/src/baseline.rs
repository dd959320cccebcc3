//! The regression rule of the upstream perf tests (`calculate_baseline_metrics` in
//! `perf_regression_utils.py`), in plain functions over a history: per metric, the mean of each
//! day's values → a trailing rolling mean over 3 days → the 95th percentile of those (linear
//! interpolation) for metrics where more is better or the 5th for the others; a value regresses
//! when it is worse than the baseline by more than the threshold (5 % post-merge, 10 %
//! pre-merge by default). Days are UTC days (upstream uses the CI machine's local day).

use std::collections::BTreeMap;

use disagg_bench::stats::percentile;

/// Days in the history window.
pub const HISTORY_DAYS: u64 = 90;
/// Rolling-mean window, in days with data.
pub const ROLLING_WINDOW: usize = 3;
/// Default threshold after merge.
pub const POST_MERGE_THRESHOLD: f64 = 0.05;
/// Default threshold before merge.
pub const PRE_MERGE_THRESHOLD: f64 = 0.10;

const DAY_MS: u64 = 86_400_000;

/// The start of the history window of a run at `at_ms`: [`HISTORY_DAYS`] before it, from the
/// start of that UTC day, as upstream's query computes it
/// (`int(now - 86400 × days) // 86400 × 86400 × 1000`).
pub fn window_start(at_ms: u64) -> u64 {
    let day_s = 86_400;
    let s = (at_ms / 1000).saturating_sub(HISTORY_DAYS * day_s);
    s / day_s * day_s * 1000
}

/// The mean of the values of each UTC day, in day order: `(day number, mean)`.
pub fn daily_means(points: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut days: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    for &(at_ms, v) in points.iter().filter(|(_, v)| v.is_finite()) {
        let e = days.entry(at_ms / DAY_MS).or_insert((0.0, 0));
        e.0 += v;
        e.1 += 1;
    }
    days.into_iter()
        .map(|(d, (sum, n))| (d, sum / n as f64))
        .collect()
}

/// Trailing rolling mean over `window` entries (fewer at the start, as pandas with
/// `min_periods=1`).
pub fn rolling_means(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    (0..values.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let w = &values[from..=i];
            w.iter().sum::<f64>() / w.len() as f64
        })
        .collect()
}

/// The baseline of a history of `(time ms, value)`: P95 (maximize) or P5 (minimize) of the
/// rolling means of the daily means; `None` without history.
pub fn baseline(points: &[(u64, f64)], maximize: bool) -> Option<f64> {
    let daily: Vec<f64> = daily_means(points).into_iter().map(|(_, m)| m).collect();
    if daily.is_empty() {
        return None;
    }
    let mut rolled = rolling_means(&daily, ROLLING_WINDOW);
    rolled.sort_by(f64::total_cmp);
    Some(percentile(&rolled, if maximize { 95.0 } else { 5.0 }))
}

/// The relative difference of `value` from `baseline` (+ means higher).
pub fn diff(value: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        0.0
    } else {
        (value - baseline) / baseline
    }
}

/// Whether `value` regressed against `baseline` by more than `threshold`.
pub fn regressed(value: f64, baseline: f64, threshold: f64, maximize: bool) -> bool {
    if maximize {
        value < baseline * (1.0 - threshold)
    } else {
        value > baseline * (1.0 + threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn daily_means_group_by_utc_day() {
        let pts = [
            (0, 10.0),
            (5 * H, 20.0),
            (DAY_MS + H, 40.0),
            (3 * DAY_MS, f64::NAN),
        ];
        assert_eq!(daily_means(&pts), vec![(0, 15.0), (1, 40.0)]);
    }

    #[test]
    fn rolling_means_trail_over_three_entries() {
        assert_eq!(
            rolling_means(&[3.0, 6.0, 9.0, 12.0], 3),
            vec![3.0, 4.5, 6.0, 9.0]
        );
        assert!(rolling_means(&[], 3).is_empty());
    }

    #[test]
    fn baselines_take_p95_for_throughput_and_p5_for_latency() {
        // Days 0..=4 with daily means 100, 110, 120, 130, 140 → rolling 100, 105, 110, 120, 130.
        let pts: Vec<(u64, f64)> = (0..5)
            .flat_map(|d| {
                let m = 100.0 + 10.0 * d as f64;
                [(d * DAY_MS + H, m - 1.0), (d * DAY_MS + 2 * H, m + 1.0)]
            })
            .collect();
        // numpy.percentile([100,105,110,120,130], 95) = 128.0; 5 → 101.0
        let hi = baseline(&pts, true).unwrap();
        let lo = baseline(&pts, false).unwrap();
        assert!((hi - 128.0).abs() < 1e-9, "{hi}");
        assert!((lo - 101.0).abs() < 1e-9, "{lo}");
        assert_eq!(baseline(&[], true), None);
    }

    #[test]
    fn the_window_starts_at_the_day_90_days_before() {
        // 2026-11-28T17:21:47Z → 2026-08-30T00:00:00Z
        assert_eq!(window_start(1_795_886_507_000), 1_788_048_000_000);
        assert_eq!(window_start(0), 0);
    }

    #[test]
    fn regressions_respect_direction_and_threshold() {
        assert!(!regressed(96.0, 100.0, 0.05, true));
        assert!(regressed(94.9, 100.0, 0.05, true));
        assert!(
            !regressed(200.0, 100.0, 0.05, true),
            "faster is never a regression"
        );
        assert!(!regressed(104.0, 100.0, 0.05, false));
        assert!(regressed(105.1, 100.0, 0.05, false));
        assert!(!regressed(10.0, 100.0, 0.05, false));
        assert!((diff(90.0, 100.0) + 0.1).abs() < 1e-12);
    }
}
