//! `run.json`: how a run was asked for, written once by the launcher (`disagg run`, `disagg
//! submit`) and read by every role, so all roles of one run agree on every setting.

use disagg_config::{EngineKind, Overrides};
use disagg_plan::Role;
use serde::{Deserialize, Serialize};

use crate::rundir::{RunDir, RunDirError, write_atomic};

/// The version of [`RunSpec`]'s shape.
pub const SPEC_VERSION: u32 = 1;

/// Upstream's one bound of a disaggregated test when `slurm.timeout` is absent
/// (`DEFAULT_TIMEOUT` of `test_perf_sanity.py`), s.
pub const UPSTREAM_TIMEOUT_S: u64 = 10_800;

/// Upstream's default bound on the wait for the coordinator's `/health`
/// (`DISAGG_SERVER_READY_TIMEOUT`), s.
pub const UPSTREAM_READY_S: u64 = 3_600;

/// The simulated engine's readiness default, s: it serves within milliseconds, so one that is
/// not ready in ten minutes never will be, and a local run should say so long before upstream's
/// hour.
pub const SIM_READY_S: u64 = 600;

/// The variables that override the readiness default, highest precedence first, as upstream's
/// `server_ready_timeout(default, "DISAGG")` reads them.
pub const READY_TIMEOUT_ENV: [&str; 2] = [
    "TRTLLM_TEST_DISAGG_SERVER_READY_TIMEOUT",
    "TRTLLM_TEST_SERVER_READY_TIMEOUT",
];

/// The readiness bound before the `min` with the test's timeout: the first of
/// [`READY_TIMEOUT_ENV`] that holds a positive whole number of seconds, else `default`. As
/// upstream, an empty variable is skipped and an invalid or non-positive one is ignored (with a
/// warning, returned) in favour of the next.
pub fn server_ready_timeout(
    default: u64,
    env: &dyn Fn(&str) -> Option<String>,
) -> (u64, Vec<String>) {
    let mut warnings = Vec::new();
    for var in READY_TIMEOUT_ENV {
        let Some(raw) = env(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        match raw.trim().parse::<i64>() {
            Ok(s) if s > 0 => return (s as u64, warnings),
            _ => warnings.push(format!(
                "ignoring {var}={raw:?}: not a positive whole number of seconds"
            )),
        }
    }
    (default, warnings)
}

/// Every bound a role waits under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How long an engine, the router or the benchmark's wait may take to become ready, s.
    pub ready_s: f64,
    /// A role whose heartbeat is older than this is presumed dead, s.
    pub stale_s: f64,
    /// Per-request deadline of the router and the benchmark client, s; upstream's coordinator
    /// gets it as `-r`.
    pub request_s: f64,
    /// The whole run, s (the launcher ends everything after it); upstream's coordinator gets it
    /// as `-t`, the bound on its wait for the workers, which upstream sets to the same number.
    pub run_s: f64,
}

impl Timeouts {
    /// The bounds of a run as upstream's `test_perf_sanity.py` derives them from its one
    /// `timeout` (the `--timeout` flag, else `slurm.timeout`, else [`UPSTREAM_TIMEOUT_S`]):
    /// the whole run, each request and the coordinator's `-t`/`-r` get `timeout`; readiness gets
    /// `min(timeout, R)` where `R` is [`server_ready_timeout`] of [`UPSTREAM_READY_S`] — of
    /// [`SIM_READY_S`] for the simulated engine — unless `--ready-timeout` says otherwise.
    /// Returns the warnings about ignored variables too.
    pub fn upstream(
        engine: EngineKind,
        slurm_timeout_s: Option<u64>,
        ready_flag: Option<f64>,
        timeout_flag: Option<f64>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Timeouts, Vec<String>) {
        let timeout = timeout_flag.unwrap_or(slurm_timeout_s.unwrap_or(UPSTREAM_TIMEOUT_S) as f64);
        let default = match engine {
            EngineKind::Sim => SIM_READY_S,
            EngineKind::Trtllm | EngineKind::Vllm | EngineKind::Sglang | EngineKind::Command => {
                UPSTREAM_READY_S
            }
        };
        let (ready, warnings) = server_ready_timeout(default, env);
        let timeouts = Timeouts {
            ready_s: ready_flag.unwrap_or(timeout.min(ready as f64)),
            stale_s: 15.0,
            request_s: timeout,
            run_s: timeout,
        };
        (timeouts, warnings)
    }
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
    /// random prompts or the `workload`.
    #[serde(default)]
    pub dataset_path: Option<String>,
    /// The config's `workload` (a trace's path made absolute); `None`: `dataset_path` or random
    /// prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<disagg_config::Workload>,
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

impl RunSpec {
    /// The prompts of the run, as `prepare` resolved them: the `workload`, else
    /// `benchmark.dataset_file` (a file gone by the time it is read fails the run), else random.
    pub fn dataset(&self) -> disagg_config::Dataset {
        match (&self.workload, &self.dataset_path) {
            (Some(w), _) => w.dataset.clone(),
            (None, Some(p)) => disagg_config::Dataset::TrtllmCustom(p.into()),
            (None, None) => disagg_config::Dataset::Random,
        }
    }
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
    /// How a request's two legs are tied: `trtllm`, `vllm`, `sglang` or `aggregated`.
    #[serde(default)]
    pub handoff: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_ready_bound_follows_upstreams_variables_in_order() {
        let (disagg, generic) = (READY_TIMEOUT_ENV[0], READY_TIMEOUT_ENV[1]);
        assert_eq!(server_ready_timeout(3600, &env(&[])), (3600, vec![]));
        assert_eq!(server_ready_timeout(3600, &env(&[(generic, "900")])).0, 900);
        assert_eq!(
            server_ready_timeout(3600, &env(&[(disagg, "1200"), (generic, "900")])).0,
            1200,
            "the DISAGG variable before the generic one"
        );
        // Empty: skipped silently; invalid or non-positive: ignored with a warning, the next one
        // (or the default) used, as upstream's int() / `> 0` test does.
        assert_eq!(
            server_ready_timeout(3600, &env(&[(disagg, ""), (generic, "900")])),
            (900, vec![])
        );
        for bad in ["abc", "0", "-5", "1.5"] {
            let (s, warnings) =
                server_ready_timeout(3600, &env(&[(disagg, bad), (generic, "900")]));
            assert_eq!(s, 900, "{bad}");
            assert_eq!(warnings.len(), 1, "{bad}");
            assert!(warnings[0].contains(disagg), "{warnings:?}");
        }
        let (s, warnings) = server_ready_timeout(3600, &env(&[(generic, "soon")]));
        assert_eq!((s, warnings.len()), (3600, 1));
    }

    #[test]
    fn timeouts_derive_from_upstreams_one_timeout() {
        let none = env(&[]);
        let (t, _) = Timeouts::upstream(EngineKind::Trtllm, None, None, None, &none);
        assert_eq!(
            (t.ready_s, t.request_s, t.run_s),
            (3600.0, 10800.0, 10800.0)
        );
        // slurm.timeout below the readiness bound caps it: min(timeout, 3600).
        let (t, _) = Timeouts::upstream(EngineKind::Vllm, Some(1800), None, None, &none);
        assert_eq!((t.ready_s, t.request_s, t.run_s), (1800.0, 1800.0, 1800.0));
        let (t, _) = Timeouts::upstream(
            EngineKind::Trtllm,
            Some(7200),
            None,
            None,
            &env(&[(READY_TIMEOUT_ENV[1], "5000")]),
        );
        assert_eq!((t.ready_s, t.run_s), (5000.0, 7200.0));
        let (t, _) = Timeouts::upstream(
            EngineKind::Trtllm,
            Some(7200),
            None,
            None,
            &env(&[(READY_TIMEOUT_ENV[0], "99999")]),
        );
        assert_eq!(t.ready_s, 7200.0, "never past the test's timeout");
        // The flags win: --timeout is upstream's timeout, --ready-timeout the readiness bound.
        let (t, _) = Timeouts::upstream(
            EngineKind::Trtllm,
            Some(7200),
            Some(30.0),
            Some(900.0),
            &env(&[(READY_TIMEOUT_ENV[0], "100")]),
        );
        assert_eq!((t.ready_s, t.request_s, t.run_s), (30.0, 900.0, 900.0));
        // The sim: upstream's timeout, but ten minutes to become ready.
        let (t, _) = Timeouts::upstream(EngineKind::Sim, None, None, None, &none);
        assert_eq!((t.ready_s, t.request_s, t.run_s), (600.0, 10800.0, 10800.0));
        let (t, _) = Timeouts::upstream(
            EngineKind::Sim,
            None,
            None,
            None,
            &env(&[(READY_TIMEOUT_ENV[1], "1200")]),
        );
        assert_eq!(t.ready_s, 1200.0);
    }
}
