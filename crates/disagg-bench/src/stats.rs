//! Summary statistics as numpy computes them: mean, median, population standard deviation
//! (`ddof=0`) and percentiles with the default linear interpolation. An empty sample gives 0,
//! as in the upstream clients.

use serde::{Deserialize, Serialize};

/// Mean, median, std and the requested percentiles of one metric, in the sample's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Arithmetic mean.
    pub mean: f64,
    /// 50th percentile.
    pub median: f64,
    /// Population standard deviation.
    pub std: f64,
    /// `(p, value)` for each requested percentile.
    pub percentiles: Vec<(f64, f64)>,
    /// Number of values.
    pub count: usize,
}

impl Summary {
    /// The `p`-th percentile, if it was requested.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(q, _)| (*q - p).abs() < 1e-9)
            .map(|(_, v)| *v)
    }
}

/// `np.percentile(values, p)` with linear interpolation; `sorted` must be ascending.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Summarise `values` (any order).
pub fn summarize(values: &[f64], percentiles: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary {
            mean: 0.0,
            median: 0.0,
            std: 0.0,
            percentiles: percentiles.iter().map(|p| (*p, 0.0)).collect(),
            count: 0,
        };
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Summary {
        mean,
        median: percentile(&sorted, 50.0),
        std: var.sqrt(),
        percentiles: percentiles
            .iter()
            .map(|p| (*p, percentile(&sorted, *p)))
            .collect(),
        count: sorted.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy() {
        // np.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
        let s = summarize(&[4.0, 1.0, 3.0, 2.0], &[90.0, 99.0]);
        assert_eq!(s.median, 2.5);
        assert!((s.percentiles[0].1 - 3.7).abs() < 1e-12);
        assert!((s.percentiles[1].1 - 3.97).abs() < 1e-12);
        assert_eq!(s.mean, 2.5);
        // np.std([1,2,3,4]) = 1.118033988749895
        assert!((s.std - 1.118_033_988_749_895).abs() < 1e-12);
    }

    #[test]
    fn single_and_empty_samples() {
        let s = summarize(&[7.0], &[99.0]);
        assert_eq!(
            (s.mean, s.median, s.std, s.percentiles[0].1),
            (7.0, 7.0, 0.0, 7.0)
        );
        let e = summarize(&[], &[99.0]);
        assert_eq!((e.mean, e.count, e.percentiles[0].1), (0.0, 0, 0.0));
    }
}
