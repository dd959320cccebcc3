//! Our own optional `workload:` section: the prompts a run's benchmark sends when they are
//! neither random nor upstream's `benchmark.dataset_file`. It carries the parameters of
//! `disagg bench --dataset shared-prefix|multi-turn|mooncake`, in one type, [`Dataset`], that
//! both the benchmark (`disagg_bench::plan`) and the config use.
//!
//! ```yaml
//! workload:
//!   shared_prefix: {groups: 4, prefix_len: 512, suffix_len: 32}
//! ```

use std::path::PathBuf;

use crate::diag::Sink;
use crate::reader::{self, MapRef, Need};

/// Where a benchmark's prompts come from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// Random token ids of the plan's lengths (random text of exact length with a tokenizer).
    #[default]
    Random,
    /// A JSONL file, `{"prompt": ..., "output_len": N}` per line, used in order and repeated
    /// if short.
    Jsonl(PathBuf),
    /// The `trtllm_custom` file of TensorRT-LLM (`benchmark.dataset_file`), shuffled by the seed.
    TrtllmCustom(PathBuf),
    /// Groups of prompts sharing a prefix (`--dataset shared-prefix`, `workload.shared_prefix`).
    SharedPrefix {
        /// Distinct prefixes (`--prefix-groups`, `groups`); request i uses prefix i mod N.
        groups: u32,
        /// Tokens of each prefix (`--prefix-len`, `prefix_len`).
        prefix_len: u32,
        /// Tokens of each prompt's own suffix (`--suffix-len`, `suffix_len`).
        suffix_len: u32,
    },
    /// Multi-turn chat sessions (`--dataset multi-turn`, `workload.multi_turn`): prompts /
    /// turns sessions, the first prompt of each the input length.
    MultiTurn {
        /// Turns per session (`--turns`, `turns`).
        turns: u32,
        /// New user tokens per later turn (`--turn-len`, `turn_len`).
        turn_len: u32,
        /// Pause between a turn's answer and the next turn, seconds (`--think-time`,
        /// `think_time`).
        think_time: f64,
    },
    /// A Mooncake trace replayed on its timestamps (`--dataset mooncake`, `workload.mooncake`).
    Mooncake {
        /// The JSONL file.
        path: PathBuf,
        /// Tokens per `hash_ids` block (`--trace-block-size`, `block_size`).
        block_size: u32,
    },
}

/// `disagg bench`'s defaults for the generated datasets, which the config's keys share.
pub mod defaults {
    /// `--prefix-groups`.
    pub const GROUPS: u32 = 16;
    /// `--prefix-len`.
    pub const PREFIX_LEN: u32 = 2048;
    /// `--suffix-len`.
    pub const SUFFIX_LEN: u32 = 128;
    /// `--turns`.
    pub const TURNS: u32 = 4;
    /// `--turn-len`.
    pub const TURN_LEN: u32 = 128;
    /// `--think-time`.
    pub const THINK_TIME: f64 = 0.0;
    /// `--trace-block-size`: Mooncake's published traces use 512-token blocks.
    pub const BLOCK_SIZE: u32 = 512;
}

impl Dataset {
    /// How a record names it: `None` for random prompts.
    pub fn describe(&self) -> Option<String> {
        match self {
            Dataset::Random => None,
            Dataset::Jsonl(p) => Some(format!("jsonl {}", p.display())),
            Dataset::TrtllmCustom(p) => Some(format!("trtllm-custom {}", p.display())),
            Dataset::SharedPrefix {
                groups,
                prefix_len,
                suffix_len,
            } => Some(format!(
                "shared-prefix groups={groups} prefix={prefix_len} suffix={suffix_len}"
            )),
            Dataset::MultiTurn {
                turns,
                turn_len,
                think_time,
            } => Some(format!(
                "multi-turn turns={turns} turn={turn_len} think={think_time}s"
            )),
            Dataset::Mooncake { path, block_size } => {
                Some(format!("mooncake {} block={block_size}", path.display()))
            }
        }
    }
}

/// `workload:`: one generated or traced dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    /// The prompts. A Mooncake path is as written until [`Workload::resolved`].
    pub dataset: Dataset,
    /// A Mooncake trace's replay speed (`speedup`, 1 = as recorded); `None` for the others,
    /// which run at the config's concurrencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_speedup: Option<f64>,
}

impl Workload {
    /// The workload with a relative trace path taken from `dir` (the config file's folder).
    pub fn resolved(&self, dir: &std::path::Path) -> Workload {
        let mut out = self.clone();
        if let Dataset::Mooncake { path, .. } = &mut out.dataset {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        out
    }
}

/// The kinds, as the section's keys spell them.
const KINDS: &[&str] = &["shared_prefix", "multi_turn", "mooncake"];

pub(crate) fn read(sink: &mut Sink, top: MapRef<'_>) -> Option<Workload> {
    let w = reader::section(sink, top, "workload", "workload")?;
    reader::check_keys(sink, w, KINDS, true);
    let given: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| w.get(k).is_some())
        .collect();
    if given.len() != 1 {
        sink.error(
            Some(w.pos()),
            "workload",
            (!given.is_empty()).then(|| given.join(", ")),
            "choose exactly one dataset",
            format!(
                "keep one of {}, e.g. `workload: {{shared_prefix: {{groups: 4}}}}`",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let count = |sink: &mut Sink, m: MapRef<'_>, key: &str, default: u32, min: i64, hint: &str| {
        reader::int(sink, m, key, Need::Optional, min, i64::from(u32::MAX), hint)
            .map_or(default, |v| v as u32)
    };
    match given[0] {
        "shared_prefix" => {
            let m = reader::section(sink, w, "shared_prefix", "workload.shared_prefix")?;
            reader::check_keys(sink, m, &["groups", "prefix_len", "suffix_len"], true);
            let groups = count(
                sink,
                m,
                "groups",
                defaults::GROUPS,
                1,
                "distinct prefixes; request i uses prefix i mod groups",
            );
            let prefix_len = count(
                sink,
                m,
                "prefix_len",
                defaults::PREFIX_LEN,
                0,
                "tokens of each shared prefix",
            );
            let suffix_len = count(
                sink,
                m,
                "suffix_len",
                defaults::SUFFIX_LEN,
                0,
                "tokens each prompt adds after its prefix",
            );
            if prefix_len + suffix_len == 0 {
                sink.error(
                    Some(m.pos()),
                    "workload.shared_prefix",
                    Some("prefix_len: 0, suffix_len: 0".into()),
                    "a prompt needs at least one token",
                    "set prefix_len or suffix_len to 1 or more",
                );
                return None;
            }
            Some(Workload {
                dataset: Dataset::SharedPrefix {
                    groups,
                    prefix_len,
                    suffix_len,
                },
                trace_speedup: None,
            })
        }
        "multi_turn" => {
            let m = reader::section(sink, w, "multi_turn", "workload.multi_turn")?;
            reader::check_keys(sink, m, &["turns", "turn_len", "think_time"], true);
            let turns = count(
                sink,
                m,
                "turns",
                defaults::TURNS,
                1,
                "turns per session; sessions = prompts / turns",
            );
            let turn_len = count(
                sink,
                m,
                "turn_len",
                defaults::TURN_LEN,
                0,
                "new user tokens per later turn",
            );
            let think_time = reader::float(
                sink,
                m,
                "think_time",
                Need::Optional,
                0.0,
                "seconds between an answer and the session's next turn",
            )
            .unwrap_or(defaults::THINK_TIME);
            Some(Workload {
                dataset: Dataset::MultiTurn {
                    turns,
                    turn_len,
                    think_time,
                },
                trace_speedup: None,
            })
        }
        _ => {
            let m = reader::section(sink, w, "mooncake", "workload.mooncake")?;
            reader::check_keys(sink, m, &["path", "speedup", "block_size"], true);
            let path = reader::string(
                sink,
                m,
                "path",
                Need::Required("the Mooncake JSONL trace, absolute or relative to this file"),
                "the Mooncake JSONL trace, absolute or relative to this file",
            );
            let speedup_hint = "replay this many times faster than recorded (1 = as recorded)";
            let speedup = reader::float(sink, m, "speedup", Need::Optional, 0.0, speedup_hint);
            if speedup == Some(0.0) {
                sink.error(
                    m.get("speedup").map(|n| n.pos),
                    "workload.mooncake.speedup",
                    Some("0".into()),
                    "must be positive",
                    speedup_hint,
                );
                return None;
            }
            let block_size = count(
                sink,
                m,
                "block_size",
                defaults::BLOCK_SIZE,
                1,
                "tokens per hash_ids block of the trace",
            );
            Some(Workload {
                dataset: Dataset::Mooncake {
                    path: PathBuf::from(path?),
                    block_size,
                },
                trace_speedup: Some(speedup.unwrap_or(1.0)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "metadata: {model_name: m}\nbenchmark: {mode: e2e, concurrency_list: '1', input_length: 8, output_length: 4}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n";

    fn parse(tail: &str) -> Result<crate::TestConfig, String> {
        crate::TestConfig::parse(std::path::Path::new("dir/x.yaml"), &format!("{BASE}{tail}"))
            .map_err(|e| e.diagnostics().map(|d| d.to_string()).unwrap_or_default())
    }

    #[test]
    fn each_dataset_reads_with_bench_defaults_for_missing_keys() {
        let w = |tail| parse(tail).unwrap().extensions().workload.clone().unwrap();
        assert_eq!(
            w("workload: {shared_prefix: {groups: 4, prefix_len: 256}}\n").dataset,
            Dataset::SharedPrefix {
                groups: 4,
                prefix_len: 256,
                suffix_len: defaults::SUFFIX_LEN
            }
        );
        assert_eq!(
            w("workload: {multi_turn: {turns: 3, think_time: 0.5}}\n").dataset,
            Dataset::MultiTurn {
                turns: 3,
                turn_len: defaults::TURN_LEN,
                think_time: 0.5
            }
        );
        let trace = w("workload: {mooncake: {path: t.jsonl, speedup: 4}}\n");
        assert_eq!(trace.trace_speedup, Some(4.0));
        assert_eq!(
            trace.resolved(std::path::Path::new("/cfg")).dataset,
            Dataset::Mooncake {
                path: "/cfg/t.jsonl".into(),
                block_size: 512
            }
        );
        assert!(parse("").unwrap().extensions().workload.is_none());
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (tail, key, what) in [
            (
                "workload: {shared_prefix: {groups: 0}}\n",
                "workload.shared_prefix.groups",
                "must be",
            ),
            (
                "workload: {shared_prefix: {prefix_len: 0, suffix_len: 0}}\n",
                "workload.shared_prefix",
                "at least one token",
            ),
            (
                "workload: {multi_turn: {think_time: -1}}\n",
                "workload.multi_turn.think_time",
                "at least 0",
            ),
            (
                "workload: {mooncake: {speedup: 2}}\n",
                "workload.mooncake.path",
                "",
            ),
            (
                "workload: {mooncake: {path: t.jsonl, speedup: 0}}\n",
                "workload.mooncake.speedup",
                "must be positive",
            ),
            (
                "workload: {shared_prefix: {group: 2}}\n",
                "workload.shared_prefix.group",
                "did you mean `groups`",
            ),
            (
                "workload: {shared_prefix: {}, multi_turn: {}}\n",
                "workload",
                "exactly one",
            ),
            ("workload: {random: {}}\n", "workload.random", "unknown key"),
            (
                "workload: {multi_turn: {}}\nbenchmark: {mode: e2e, concurrency_list: '1', input_length: 8, output_length: 4, dataset_file: /d.json}\n",
                "workload",
                "both workload prompts and benchmark.dataset_file",
            ),
        ] {
            let err = parse(tail).unwrap_err();
            assert!(err.contains(key), "{tail}: {err}");
            assert!(err.contains(what), "{tail}: {err}");
        }
    }
}
