//! `run.json`: how a run was asked for, written once by the launcher (`disagg run`, `disagg
//! submit`) and read by every role, so all roles of one run agree on every setting.

use disagg_config::{EngineKind, Overrides};
use disagg_plan::Role;
use serde::{Deserialize, Serialize};

use crate::rundir::{RunDir, RunDirError, write_atomic};

/// The version of [`RunSpec`]'s shape.
pub const SPEC_VERSION: u32 = 1;

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
    /// Engine of the worker roles: `sim`, `trtllm`, `vllm`, `sglang`, `command` (an unknown
    /// name makes the file unreadable, never a silent `sim`).
    pub engine: EngineKind,
    /// Address the roles bind and advertise; `None` means all interfaces, advertised by host
    /// name (Slurm).
    pub host: Option<String>,
    /// Benchmark overrides.
    pub overrides: Overrides,
    /// Bounds.
    pub timeouts: Timeouts,
    /// Worker roles in launch order (`GEN_0`, `CTX_0`), then `DISAGG_SERVER`, `BENCHMARK`.
    pub roles: Vec<Role>,
    /// When the launcher created the run, ms since the epoch.
    pub created_unix_ms: u64,
    /// The model as the engines load it (the cluster's models root and model map applied);
    /// `None`: `metadata.model_name` as written.
    #[serde(default)]
    pub model_path: Option<String>,
    /// The cluster's models root: speculative models in the worker options resolve under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_root: Option<String>,
    /// The TensorRT-LLM source tree (the cluster's `llm_root`, `$LLM_ROOT`): offline-EPLB files
    /// in the worker options resolve under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_root: Option<String>,
    /// The benchmark's dataset file (`benchmark.dataset_file` under the models root); `None`:
    /// random prompts.
    #[serde(default)]
    pub dataset_path: Option<String>,
    /// GPU type for the results' identity (the cluster profile's `gpu_type`; `sim` for the
    /// simulated engine).
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// The coordinator that runs and its routing policy, as records store them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterRun>,
    /// What each worker role takes from the plan: its nodes and ports.
    #[serde(default)]
    pub servers: Vec<ServerRun>,
}

/// A server's share of the plan, as its worker role reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRun {
    /// `CTX_0`, `GEN_1`.
    pub role: Role,
    /// Nodes it spans (several: the engine's multi-node mode, one process per node).
    pub nodes: u32,
    /// KV-transfer port (vLLM's NIXL side channel, SGLang's bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_port: Option<u16>,
    /// Multi-node rendezvous port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist_port: Option<u16>,
}

impl ServerRun {
    /// The parts of `plan`'s servers the roles need.
    pub fn of(plan: &disagg_plan::Plan) -> Vec<ServerRun> {
        plan.servers
            .iter()
            .map(|s| ServerRun {
                role: s.run_role(),
                nodes: s.nodes,
                kv_port: s.kv_port,
                dist_port: s.dist_port,
            })
            .collect()
    }
}

/// Which coordinator a run uses, and how it routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRun {
    /// `disagg` (the built-in router) or `trtllm` (`trtllm-serve disaggregated`).
    pub implementation: String,
    /// `round_robin`, `load_balancing`.
    pub policy: String,
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

    /// `role`'s server, when it is a worker of this run.
    pub fn server(&self, role: Role) -> Option<&ServerRun> {
        self.servers.iter().find(|s| s.role == role)
    }

    /// The worker roles (`CTX_i`, `GEN_i`).
    pub fn workers(&self) -> impl Iterator<Item = Role> + '_ {
        self.roles.iter().copied().filter(|r| r.is_worker())
    }
}
