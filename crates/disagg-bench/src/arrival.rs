//! When each request is due: a pure function of a seed.
//!
//! - Open loop: inter-arrival gaps drawn from a gamma distribution with shape `burstiness` and
//!   scale `1 / (rate × burstiness)` (burstiness 1 = Poisson), as vLLM and TensorRT-LLM do; the
//!   n-th request is due at the sum of the first n gaps.

/// SplitMix64: small, fast, and reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, scale) by Marsaglia–Tsang (boosted for shape < 1).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            let u = self.unit().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }
}

/// Offsets (seconds from the start) at which `n` requests are due at `rate` req/s.
pub fn schedule(n: usize, rate: f64, burstiness: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed ^ 0x5eed_a77e);
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += if burstiness.is_infinite() {
                    1.0 / rate
                } else {
                    rng.gamma(burstiness, 1.0 / (rate * burstiness))
                };
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_has_the_right_mean_and_poisson_the_right_rate() {
        let mut rng = Rng::new(1);
        for shape in [0.5, 1.0, 4.0] {
            let n = 50_000;
            let mean: f64 = (0..n).map(|_| rng.gamma(shape, 2.0)).sum::<f64>() / n as f64;
            assert!(
                (mean - 2.0 * shape).abs() < 0.05 * 2.0 * shape,
                "shape {shape}: mean {mean}"
            );
        }
        let s = schedule(10_001, 100.0, 1.0, 7);
        assert_eq!(s[0], 0.0);
        let rate = 10_000.0 / s[10_000];
        assert!((rate - 100.0).abs() < 5.0, "rate {rate}");
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
        let fixed = schedule(5, 10.0, f64::INFINITY, 0);
        assert!((fixed[4] - 0.4).abs() < 1e-12);
    }
}
