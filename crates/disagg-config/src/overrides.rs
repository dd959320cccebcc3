//! Changes to a config's run given on the command line (`disagg run --concurrency 1,4 --isl 64
//! --sim decode_step_base_ms=16`): validated once, with the rule the file's own value obeys,
//! and applied by [`TestConfig::with_overrides`]. They are stored in the run's `run.json`, so
//! every role of a run applies the same ones.

use serde::{Deserialize, Serialize};

use crate::test_config::MAX_COUNT;
use crate::{ConfigError, SIM_PARAMS, TestConfig};

/// Changes to the config's benchmark and the sim's cost model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// `benchmark.concurrency_list`.
    pub concurrency: Option<Vec<u32>>,
    /// `benchmark.input_length`.
    pub isl: Option<u32>,
    /// `benchmark.output_length`.
    pub osl: Option<u32>,
    /// Prompts per concurrency instead of concurrency × multi_round.
    pub num_prompts: Option<usize>,
    /// `benchmark.multi_round`.
    pub multi_round: Option<u32>,
    /// Sim cost-model parameters over the config's `engine.sim`.
    #[serde(default)]
    pub sim: Vec<(String, f64)>,
    /// Serve aggregated: no context servers; the generation servers take whole requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aggregated: bool,
    /// Random prompts of the config's lengths: `benchmark.dataset_file` and `workload` are
    /// dropped (`--random-prompts`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub random_prompts: bool,
}

impl Overrides {
    /// Check every value against the rule of the config key it replaces; the first problem is
    /// the error, naming the flag, the key, the value and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |flag: &str, key: &str, value: String, rule: String| ConfigError::Override {
            flag: flag.to_string(),
            key: key.to_string(),
            value,
            rule,
        };
        let counts = [
            ("--isl", "benchmark.input_length", self.isl, MAX_COUNT * 16),
            ("--osl", "benchmark.output_length", self.osl, MAX_COUNT * 16),
            (
                "--multi-round",
                "benchmark.multi_round",
                self.multi_round,
                MAX_COUNT,
            ),
        ];
        for (flag, key, v, max) in counts {
            if let Some(v) = v.filter(|&v| v < 1 || i64::from(v) > max) {
                let rule = format!("must be at least 1 and at most {max}");
                return Err(bad(flag, key, v.to_string(), rule));
            }
        }
        if let Some(list) = &self.concurrency {
            if list.is_empty() {
                let rule = "give at least one value".to_string();
                return Err(bad(
                    "--concurrency",
                    "benchmark.concurrency_list",
                    String::new(),
                    rule,
                ));
            }
            if let Some(c) = list.iter().find(|&&c| c < 1 || i64::from(c) > MAX_COUNT) {
                let rule = format!("`{c}` is not a positive integer (at most {MAX_COUNT})");
                let value = list
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                return Err(bad(
                    "--concurrency",
                    "benchmark.concurrency_list",
                    value,
                    rule,
                ));
            }
        }
        if self.num_prompts == Some(0) {
            let rule = "must be at least 1".to_string();
            return Err(bad(
                "--num-prompts",
                "prompts per concurrency",
                "0".into(),
                rule,
            ));
        }
        for (name, v) in &self.sim {
            if !SIM_PARAMS.contains(&name.as_str()) {
                let rule = format!("not a sim parameter; use one of {}", SIM_PARAMS.join(", "));
                return Err(bad("--sim", "engine.sim", name.clone(), rule));
            }
            if !(v.is_finite() && *v >= 0.0) {
                let rule = "must be a non-negative number".to_string();
                return Err(bad(
                    "--sim",
                    &format!("engine.sim.{name}"),
                    v.to_string(),
                    rule,
                ));
            }
        }
        Ok(())
    }

    /// Parse `--sim NAME=VALUE` items into [`Overrides::sim`] pairs (checked by
    /// [`Overrides::validate`]).
    pub fn parse_sim(items: &[String]) -> Result<Vec<(String, f64)>, ConfigError> {
        items
            .iter()
            .map(|item| {
                let bad = |rule: &str| ConfigError::Override {
                    flag: "--sim".to_string(),
                    key: "engine.sim".to_string(),
                    value: item.clone(),
                    rule: rule.to_string(),
                };
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| bad("write NAME=VALUE, e.g. decode_step_base_ms=16"))?;
                let v: f64 = v
                    .parse()
                    .map_err(|_| bad("the value is not a non-negative number"))?;
                Ok((k.to_string(), v))
            })
            .collect()
    }
}

impl TestConfig {
    /// This config with `overrides` applied to its benchmark; the overrides are validated
    /// first. A run whose concurrency list ends up empty is an error here, not a run that
    /// measures nothing.
    pub fn with_overrides(mut self, overrides: &Overrides) -> Result<TestConfig, ConfigError> {
        overrides.validate()?;
        let b = &mut self.benchmark;
        if let Some(c) = &overrides.concurrency {
            b.concurrency.clone_from(c);
        }
        if let Some(v) = overrides.isl {
            b.isl = v;
        }
        if let Some(v) = overrides.osl {
            b.osl = v;
        }
        if let Some(v) = overrides.multi_round {
            b.multi_round = v;
        }
        if overrides.aggregated {
            if b.mode != crate::Mode::E2e {
                return Err(ConfigError::Override {
                    flag: "--aggregated".to_string(),
                    key: "benchmark.mode".to_string(),
                    value: b.mode.as_str().to_string(),
                    rule: "aggregated servers take whole requests: it needs benchmark.mode e2e"
                        .to_string(),
                });
            }
            self.aggregated = true;
        }
        if overrides.random_prompts {
            b.dataset_file = None;
            self.extensions.workload = None;
            self.random_prompts = true;
        }
        if b.concurrency.is_empty() {
            return Err(ConfigError::Override {
                flag: "--concurrency".to_string(),
                key: "benchmark.concurrency_list".to_string(),
                value: String::new(),
                rule: format!(
                    "is empty in {}; set it or pass --concurrency",
                    self.path.display()
                ),
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> TestConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap();
        TestConfig::parse(std::path::Path::new("local-sim.yaml"), &text).unwrap()
    }

    #[test]
    fn overrides_replace_the_benchmark_values() {
        let o = Overrides {
            concurrency: Some(vec![1, 3]),
            isl: Some(64),
            osl: Some(8),
            multi_round: Some(2),
            ..Overrides::default()
        };
        let c = example().with_overrides(&o).unwrap();
        let b = c.benchmark();
        assert_eq!(
            (b.concurrency.clone(), b.isl, b.osl, b.multi_round),
            (vec![1, 3], 64, 8, 2)
        );
        let none = example().with_overrides(&Overrides::default()).unwrap();
        assert_eq!(none.benchmark(), example().benchmark());
    }

    #[test]
    fn bad_overrides_name_the_flag_key_value_and_rule() {
        let cases: [(Overrides, &str); 5] = [
            (
                Overrides {
                    isl: Some(0),
                    ..Overrides::default()
                },
                "--isl 0 (benchmark.input_length): must be at least 1",
            ),
            (
                Overrides {
                    multi_round: Some(0),
                    ..Overrides::default()
                },
                "--multi-round 0 (benchmark.multi_round): must be at least 1",
            ),
            (
                Overrides {
                    concurrency: Some(vec![4, 0]),
                    ..Overrides::default()
                },
                "--concurrency 4,0 (benchmark.concurrency_list): `0` is not a positive integer",
            ),
            (
                Overrides {
                    num_prompts: Some(0),
                    ..Overrides::default()
                },
                "--num-prompts 0 (prompts per concurrency): must be at least 1",
            ),
            (
                Overrides {
                    sim: vec![("decode_ms".into(), 1.0)],
                    ..Overrides::default()
                },
                "--sim decode_ms (engine.sim): not a sim parameter; use one of prefill_tokens_per_s",
            ),
        ];
        for (o, want) in cases {
            let err = example().with_overrides(&o).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}\n  wanted: {want}");
        }
        let neg = Overrides {
            sim: vec![("seed".into(), -1.0)],
            ..Overrides::default()
        };
        assert!(
            neg.validate()
                .unwrap_err()
                .to_string()
                .contains("engine.sim.seed")
        );
    }

    #[test]
    fn sim_items_parse_as_name_value_pairs() {
        let ok = Overrides::parse_sim(&["decode_step_base_ms=16".into()]).unwrap();
        assert_eq!(ok, vec![("decode_step_base_ms".to_string(), 16.0)]);
        let err = Overrides::parse_sim(&["decode_step_base_ms".into()]).unwrap_err();
        assert!(err.to_string().contains("write NAME=VALUE"), "{err}");
        assert!(Overrides::parse_sim(&["seed=x".into()]).is_err());
    }
}
