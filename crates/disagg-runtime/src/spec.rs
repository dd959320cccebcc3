//! `run.json`: how a run was asked for, written once by the launcher (`disagg run`, `disagg
//! submit`) and read by every role, so all roles of one run agree on every setting.

use serde::{Deserialize, Serialize};

use crate::rundir::{RunDir, RunDirError, write_atomic};

/// The version of [`RunSpec`]'s shape.
pub const SPEC_VERSION: u32 = 1;

/// Changes to the config's benchmark, from the launcher's flags.
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
}

/// Every bound a role waits under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How long an engine, the router or the benchmark's wait may take to become ready, s.
    pub ready_s: f64,
    /// A role whose heartbeat is older than this is presumed dead, s.
    pub stale_s: f64,
    /// Per-request deadline of the router and the benchmark client, s.
    pub request_s: f64,
    /// The whole run, s (the launcher ends everything after it).
    pub run_s: f64,
}

/// The run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// The test config, relative to the run directory (it keeps its file name: the name is
    /// the test's identity).
    pub config_file: String,
    /// Engine profile of the worker roles: `sim`, `trtllm`, `vllm`, `sglang`, `command`.
    pub engine: String,
    /// Address the roles bind and advertise; `None` means all interfaces, advertised by host
    /// name (Slurm).
    pub host: Option<String>,
    /// Benchmark overrides.
    pub overrides: Overrides,
    /// Bounds.
    pub timeouts: Timeouts,
    /// Worker roles in launch order (`GEN_0`, `CTX_0`), then `DISAGG_SERVER`, `BENCHMARK`.
    pub roles: Vec<String>,
    /// When the launcher created the run, ms since the epoch.
    pub created_unix_ms: u64,
    /// The model as the engines load it (the cluster's models root and model map applied);
    /// `None`: `metadata.model_name` as written.
    #[serde(default)]
    pub model_path: Option<String>,
    /// The benchmark's dataset file (`benchmark.dataset_file` under the models root); `None`:
    /// random prompts.
    #[serde(default)]
    pub dataset_path: Option<String>,
    /// GPU type for the results' identity (the cluster profile's `gpu_type`; `sim` for the
    /// simulated engine).
    #[serde(default)]
    pub gpu_type: Option<String>,
}

impl RunSpec {
    /// `run.json` in the run directory.
    pub fn path(run: &RunDir) -> std::path::PathBuf {
        run.root().join("run.json")
    }

    /// Write it (atomically).
    pub fn write(&self, run: &RunDir) -> Result<(), RunDirError> {
        let path = RunSpec::path(run);
        let text = serde_json::to_string_pretty(self).map_err(|e| RunDirError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }

    /// Read it.
    pub fn read(run: &RunDir) -> Result<RunSpec, RunDirError> {
        let path = RunSpec::path(run);
        let text = std::fs::read_to_string(&path).map_err(|source| RunDirError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| RunDirError::Corrupt {
            path,
            why: e.to_string(),
        })
    }

    /// The worker roles (`CTX_i`, `GEN_i`).
    pub fn workers(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with("CTX_") || r.starts_with("GEN_"))
    }
}
