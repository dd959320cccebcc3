//! Reading and validating everything `disagg` is configured by: the upstream TensorRT-LLM
//! disaggregated test configs (every era, as they are), our own optional sections, cluster
//! profiles and upstream test ids.
//!
//! Main types: [`TestConfig`] (a validated test config), [`WorkerOptions`] (the engine options
//! of `worker_config.ctx|gen`, passed through in order, with typed access), [`Profiling`] and
//! [`Accuracy`] (the `profiling` and `accuracy` sections), [`ClusterFile`] /
//! [`Cluster`], [`TestId`], [`SweepSpec`] (a sweep's axes, expanded into derived configs), and
//! [`Diagnostics`] — every problem in a file at once, each with
//! file, line:column, YAML path, value and a hint.
//!
//! ```
//! use disagg_config::TestConfig;
//! let yaml = "
//! hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}
//! benchmark: {concurrency_list: '1 8', input_length: 128, output_length: 64}
//! worker_config:
//!   ctx: {tensor_parallel_size: 4}
//!   gen: {tensor_parallel_size: 8, enable_attention_dp: true}
//! ";
//! let config = TestConfig::parse("example.yaml".as_ref(), yaml).unwrap();
//! assert_eq!(config.gen_().gpus(), 8);
//! assert_eq!(config.benchmark().concurrency, [1, 8]);
//! ```

mod auth_key;
mod cluster;
mod coordinator;
mod diag;
mod envvars;
mod evaluation;
pub mod extensions;
mod name;
mod overrides;
mod reader;
pub mod sweep;
mod test_config;
mod test_id;
mod worker;
pub mod workload;
pub mod yaml;

use std::path::PathBuf;

pub use auth_key::{AUTH_KEY_FIELD, AuthKey};
pub use cluster::{
    Cluster, ClusterFile, Container, ContainerRuntime, cluster_files, clusters_path, load_cluster,
};
pub use coordinator::{CoordinatorConfig, KvAwareArgs, RouterPolicy, ServerPool};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use envvars::{is_env_name, parse_env_assignments};
pub use evaluation::{Accuracy, AccuracyTask, DatasetThreshold, KwargValue, Profiling};
pub use extensions::{Engine, EngineKind, Extensions, Results, Router, SIM_PARAMS, SimParams};
pub use name::{NameFields, Parallel, decode as decode_name, rename};
pub use overrides::Overrides;
pub use reader::is_placeholder;
pub use sweep::{Constraints, DerivedPoint, Sla, SweepSpec, is_sweep_spec};
pub use test_config::{Benchmark, Environment, Hardware, Metadata, Mode, Slurm, TestConfig};
pub use test_id::{TestId, config_path, parse_test_list};
pub use worker::{HARNESS_KEYS, KvCacheOptions, Speculative, WorkerOptions};
pub use workload::{Dataset, Workload};

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read and has problems; all of them are listed.
    #[error("{}{} in {}", .0.error_count(), if .0.error_count() == 1 { " problem" } else { " problems" }, .0.0.first().map(|d| d.file.display().to_string()).unwrap_or_default())]
    Invalid(Diagnostics),
    /// `--cluster NAME` is not in the cluster file.
    #[error("no cluster `{name}` in {} or its clusters.d/; known: {known}", file.display())]
    UnknownCluster {
        /// Requested name.
        name: String,
        /// The cluster file.
        file: PathBuf,
        /// Names it has.
        known: String,
    },
    /// `--cluster NAME` but no cluster file at all.
    #[error("cluster `{name}` requested but there is no cluster file at {} (nor a clusters.d/ beside it)", path.display())]
    NoClusterFile {
        /// Requested name.
        name: String,
        /// The main cluster file's path.
        path: PathBuf,
    },
    /// A cluster defined in two files.
    #[error("cluster `{name}` is defined twice: in {} and in {}; keep one", first.display(), second.display())]
    DuplicateCluster {
        /// The name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// A test id that is not a disaggregated upstream id.
    #[error("test id `{id}`: {why}")]
    TestId {
        /// The id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// No file for a test id.
    #[error("no config named `{name}.yaml` under {}", dir.display())]
    ConfigNotFound {
        /// Config name.
        name: String,
        /// Where we looked.
        dir: PathBuf,
    },
    /// A command-line override breaks the rule of the config key it replaces.
    #[error("{flag} {value} ({key}): {rule}")]
    Override {
        /// The flag (`--isl`).
        flag: String,
        /// The config key it replaces (`benchmark.input_length`).
        key: String,
        /// The value given.
        value: String,
        /// What it must be.
        rule: String,
    },
    /// Several files for a test id.
    #[error("several configs named `{name}`: {candidates}")]
    AmbiguousConfig {
        /// Config name.
        name: String,
        /// The files.
        candidates: String,
    },
}

impl ConfigError {
    /// What to do about it, when there is more to say than the message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ConfigError::NoClusterFile { .. } => Some(
                "write a cluster profile file there, pass --clusters FILE, or run scripts/local-slurm.sh up for a local one",
            ),
            _ => None,
        }
    }

    /// The per-problem diagnostics, when the file had problems.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            _ => None,
        }
    }
}
