//! One role's life in a run: publish its state, beat its heartbeat, watch the others, wait for
//! what it needs, and finish — the same code for every role, under Slurm and locally.
//!
//! A role publishes `starting → ready → exited|failed` with a heartbeat each second and looks at
//! the run directory every 200 ms: a failed role, a stale heartbeat or the benchmark's status file
//! ends it within a fraction of a second. Under `srun` every task of a step runs the role; only
//! rank 0 publishes, the other ranks follow the run.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use disagg_config::{Mode, TestConfig};
use disagg_plan::Role;
use tokio_util::sync::CancellationToken;

use crate::exit::ExitStatus;
use crate::now_ms;
use crate::rundir::{Progress, RoleState, RunDir, Status, first_failure};
use crate::spec::RunSpec;

/// Why a role stopped waiting or serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The benchmark wrote its status: the run is over.
    RunOver,
    /// Another role failed (or went silent), and why.
    Peer(Role, String),
    /// SIGTERM or SIGINT.
    Signal,
    /// This role cannot go on: its state no longer reaches the run directory (a full or
    /// vanished filesystem), and why. Silent heartbeats would only show up as "presumed dead"
    /// 15 s later, naming no cause.
    Broken(String),
}

/// Where a role binds and where the others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Address to bind.
    pub bind: String,
    /// Address others reach it at.
    pub advertised: String,
}

impl Address {
    /// `--host`, else `run.json`'s host (local runs: 127.0.0.1), else all interfaces, found by
    /// the node's name (Slurm: `SLURMD_NODENAME`, else the host name).
    pub fn of(spec: &RunSpec, flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Address {
        if let Some(h) = flag.or(spec.host.as_deref()) {
            return Address {
                bind: h.to_string(),
                advertised: h.to_string(),
            };
        }
        let name = env("SLURMD_NODENAME")
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".to_string());
        Address {
            bind: "0.0.0.0".to_string(),
            advertised: name,
        }
    }

    /// Where a local probe reaches a server bound here.
    pub fn probe_host(&self) -> &str {
        if self.bind == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &self.bind
        }
    }
}

/// The rank of this task within its Slurm step (`SLURM_PROCID`; 0 outside Slurm).
pub fn rank(env: &dyn Fn(&str) -> Option<String>) -> u32 {
    env("SLURM_PROCID")
        .and_then(|r| r.parse::<u32>().ok())
        .unwrap_or(0)
}

/// One role's view of the run.
#[derive(Debug)]
pub struct RoleRun {
    /// Which role.
    pub role: Role,
    /// The run directory.
    pub run: RunDir,
    /// `run.json`.
    pub spec: RunSpec,
    /// The config, overrides applied.
    pub config: TestConfig,
    /// Where it binds and is reached.
    pub address: Address,
    /// Rank 0 of a multi-rank Slurm step publishes; the other ranks only follow the run.
    pub rank: u32,
    state: Mutex<RoleState>,
    /// The benchmark's progress, published with its heartbeat.
    pub progress: Option<Arc<Mutex<Progress>>>,
}

impl RoleRun {
    /// Join the run in `dir` as `role`: read `run.json`, publish `starting` (before anything
    /// else can fail, so a failure is always visible), load the config with the run's overrides.
    pub fn join(role: Role, dir: &Path, host: Option<&str>, rank: u32) -> anyhow::Result<RoleRun> {
        let run = RunDir::open(dir);
        let spec = RunSpec::read(&run).with_context(|| {
            format!(
                "{} is not a run directory made by `disagg run` or `disagg submit`",
                dir.display()
            )
        })?;
        let state = RoleState::new(role, std::process::id(), now_ms());
        if rank == 0 {
            run.publish(&state)?;
        }
        let config = match crate::prepare::load_run_config(&run, &spec) {
            Ok(c) => c,
            Err(e) => {
                if rank == 0 {
                    run.publish(&state.ended(Some(&format!("{e:#}")), now_ms()))?;
                }
                return Err(e);
            }
        };
        let env = |k: &str| std::env::var(k).ok();
        let address = Address::of(&spec, host, &env);
        Ok(RoleRun {
            progress: (role == Role::Benchmark).then(|| Arc::new(Mutex::new(Progress::default()))),
            role,
            run,
            spec,
            config,
            address,
            rank,
            state: Mutex::new(state),
        })
    }

    /// Publish the state `f` makes of the current one (rank 0 only).
    pub fn publish(&self, f: impl FnOnce(RoleState) -> RoleState) -> anyhow::Result<()> {
        if self.rank > 0 {
            return Ok(());
        }
        let mut guard = self
            .state
            .lock()
            .map_err(|_| anyhow!("role state lock poisoned"))?;
        let next = f(guard.clone());
        self.run.publish(&next)?;
        *guard = next;
        Ok(())
    }

    /// Serving at `port` of the advertised host.
    pub fn ready(&self, port: u16) -> anyhow::Result<()> {
        self.publish(|s| s.ready(&self.address.advertised, port, now_ms()))
    }

    /// Say it is alive (with the benchmark's progress); an error when the state file cannot be
    /// written.
    pub fn heartbeat(&self) -> anyhow::Result<()> {
        let progress = self
            .progress
            .as_ref()
            .and_then(|p| p.lock().ok().map(|p| p.clone()));
        self.publish(|mut s| {
            s.heartbeat_ms = now_ms();
            if progress.is_some() {
                s.progress = progress;
            }
            s
        })
        .context("cannot write the heartbeat to the run directory")
    }

    /// Whether the run is over or broken, from the run directory.
    pub fn check(&self) -> Option<Ending> {
        if self.role != Role::Benchmark && self.run.status().is_some() {
            return Some(Ending::RunOver);
        }
        let roles = match self.run.roles() {
            Ok(roles) => roles,
            // Deleted under a running role (a cleaned-up workspace): nothing will ever end the
            // run there, and ranks above 0 never write to notice. Found on orphaned Slurm tasks
            // still following a deleted run half an hour later.
            Err(_) if !self.run.root().exists() => {
                return Some(Ending::Broken(format!(
                    "the run directory {} is gone",
                    self.run.root().display()
                )));
            }
            Err(_) => return None,
        };
        let others: Vec<RoleState> = roles.into_iter().filter(|r| r.role != self.role).collect();
        let stale_ms = (self.spec.timeouts.stale_s * 1000.0) as u64;
        first_failure(&others, now_ms(), stale_ms).map(|(r, why)| Ending::Peer(r, why))
    }

    /// Heartbeat every second and look for the end every 200 ms, until something ends the role.
    pub async fn watch(&self, signal: &CancellationToken) -> Ending {
        // The benchmark's heartbeat carries its progress, so it beats more often.
        let beat = if self.progress.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        let mut last_beat = Instant::now();
        loop {
            tokio::select! {
                _ = signal.cancelled() => return Ending::Signal,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if last_beat.elapsed() >= beat {
                if let Err(e) = self.heartbeat() {
                    return Ending::Broken(format!("{e:#}"));
                }
                last_beat = Instant::now();
            }
            if let Some(e) = self.check() {
                return e;
            }
        }
    }

    /// Wait until `ready()` says yes, watching the run; bounded by the ready timeout.
    ///
    /// `extra_s` lengthens the bound for roles that wait on others, so that a worker's own
    /// timeout (the root cause) is reported before its dependents give up.
    pub async fn wait_for<F, Fut>(
        &self,
        what: &str,
        extra_s: f64,
        signal: &CancellationToken,
        mut ready: F,
    ) -> anyhow::Result<Result<(), Ending>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let limit = Duration::from_secs_f64(self.spec.timeouts.ready_s + extra_s);
        let start = Instant::now();
        let mut last_beat = Instant::now();
        loop {
            if ready().await? {
                return Ok(Ok(()));
            }
            if let Some(e) = self.check() {
                return Ok(Err(e));
            }
            if start.elapsed() > limit {
                bail!(
                    "{what} not ready after {:.0} s (the ready timeout; raise it with --ready-timeout, TRTLLM_TEST_DISAGG_SERVER_READY_TIMEOUT or slurm.timeout)",
                    limit.as_secs_f64()
                );
            }
            if last_beat.elapsed() >= Duration::from_secs(1) {
                if let Err(e) = self.heartbeat() {
                    return Ok(Err(Ending::Broken(format!("{e:#}"))));
                }
                last_beat = Instant::now();
            }
            // Peers usually come up within milliseconds: look often at first, then every 50 ms.
            let pause = if start.elapsed() < Duration::from_millis(500) {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(50)
            };
            tokio::select! {
                _ = signal.cancelled() => return Ok(Err(Ending::Signal)),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// End the role as `ending` says: publish the final state, return the exit status.
    pub fn finish(&self, ending: &Ending) -> ExitStatus {
        let (failure, status) = match ending {
            Ending::RunOver => (None, ExitStatus::Success),
            Ending::Peer(role, why) => {
                say(&format!(
                    "{}: ending because {role} failed: {why}",
                    self.role
                ));
                (None, ExitStatus::PeerFailed)
            }
            Ending::Signal if self.run.status().is_some() => (None, ExitStatus::Success),
            Ending::Signal => (
                Some("terminated by a signal before the run ended".to_string()),
                ExitStatus::Failure,
            ),
            Ending::Broken(why) => {
                say(&format!("{}: failed: {why}", self.role));
                (Some(why.clone()), ExitStatus::Failure)
            }
        };
        let _ = self.publish(|s| s.ended(failure.as_deref(), now_ms()));
        status
    }

    /// The role failed: say why in its state (and in the status file when it is the benchmark).
    pub fn fail(&self, err: &anyhow::Error) -> ExitStatus {
        let why = format!("{err:#}");
        say(&format!("{}: failed: {why}", self.role));
        let _ = self.publish(|s| s.ended(Some(&why), now_ms()));
        if self.role == Role::Benchmark {
            let _ = self
                .run
                .write_status_once(&Status::Failed(format!("BENCHMARK: {why}")));
        }
        ExitStatus::Failure
    }

    /// The model name requests carry: `metadata.model_name`, else `sim`.
    pub fn model(&self) -> String {
        self.config
            .metadata()
            .model_name
            .clone()
            .unwrap_or_else(|| "sim".to_string())
    }

    /// Upstream's gen-only benchmark modes (no context leg).
    pub fn gen_only(&self) -> bool {
        self.config.benchmark().mode != Mode::E2e
    }
}

/// A line to the role's log (its stderr), best effort: `eprintln!` panics when the log's disk is
/// full, and a role that is reporting a failure must not turn it into a panic.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::State;
    use crate::spec::{SPEC_VERSION, Timeouts};

    /// A run directory with the example config and a `run.json` of `ready_s`.
    fn run_dir(ready_s: f64) -> (tempfile::TempDir, RunSpec) {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");
        std::fs::copy(example, dir.path().join("local-sim.yaml")).unwrap();
        let spec = RunSpec {
            spec_version: SPEC_VERSION,
            config_file: "local-sim.yaml".into(),
            engine: disagg_config::EngineKind::Sim,
            host: Some("127.0.0.1".into()),
            overrides: disagg_config::Overrides::default(),
            timeouts: Timeouts {
                ready_s,
                stale_s: 15.0,
                request_s: 60.0,
                run_s: 60.0,
            },
            roles: vec![
                Role::Gen(0),
                Role::Ctx(0),
                Role::DisaggServer,
                Role::Benchmark,
            ],
            created_unix_ms: 0,
            model_path: None,
            models_root: None,
            llm_root: None,
            dataset_path: None,
            workload: None,
            gpu_type: None,
            router: None,
            servers: Vec::new(),
        };
        spec.write(&run).unwrap();
        (dir, spec)
    }

    fn state_of(run: &RunDir, role: Role) -> Option<RoleState> {
        run.roles().unwrap().into_iter().find(|r| r.role == role)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn joining_publishes_starting_and_only_rank_zero_publishes() {
        let (dir, _) = run_dir(5.0);
        let r = RoleRun::join(Role::Gen(0), dir.path(), None, 0).unwrap();
        assert_eq!(
            state_of(&r.run, Role::Gen(0)).unwrap().state,
            State::Starting
        );
        assert_eq!(r.address.bind, "127.0.0.1", "run.json's host");
        let other = RoleRun::join(Role::Ctx(0), dir.path(), None, 1).unwrap();
        other.ready(9).unwrap();
        assert!(
            state_of(&r.run, Role::Ctx(0)).is_none(),
            "rank 1 never publishes"
        );
        r.ready(8001).unwrap();
        let s = state_of(&r.run, Role::Gen(0)).unwrap();
        assert_eq!(s.address().as_deref(), Some("127.0.0.1:8001"));
    }

    #[test]
    fn a_missing_run_json_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = RoleRun::join(Role::Benchmark, dir.path(), None, 0).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a run directory"),
            "{err:#}"
        );
    }

    #[test]
    fn a_failed_peer_or_the_verdict_ends_the_others() {
        let (dir, _) = run_dir(5.0);
        let gen_ = RoleRun::join(Role::Gen(0), dir.path(), None, 0).unwrap();
        let bench = RoleRun::join(Role::Benchmark, dir.path(), None, 0).unwrap();
        assert_eq!(gen_.check(), None);
        let ctx = RoleRun::join(Role::Ctx(0), dir.path(), None, 0).unwrap();
        assert_eq!(ctx.fail(&anyhow!("engine exited")), ExitStatus::Failure);
        assert_eq!(
            gen_.check(),
            Some(Ending::Peer(Role::Ctx(0), "engine exited".into()))
        );
        assert_eq!(gen_.finish(&gen_.check().unwrap()), ExitStatus::PeerFailed);
        assert_eq!(
            state_of(&gen_.run, Role::Gen(0)).unwrap().state,
            State::Exited
        );
        bench.run.write_status(&Status::Done).unwrap();
        let srv = RoleRun::join(Role::DisaggServer, dir.path(), None, 0).unwrap();
        assert_eq!(
            srv.check(),
            Some(Ending::RunOver),
            "the verdict ends the others"
        );
        assert_ne!(
            bench.check(),
            Some(Ending::RunOver),
            "but not the benchmark"
        );
        assert_eq!(
            srv.finish(&Ending::Signal),
            ExitStatus::Success,
            "signal after the end"
        );
    }

    #[test]
    fn a_failing_benchmark_writes_the_verdict() {
        let (dir, _) = run_dir(5.0);
        let bench = RoleRun::join(Role::Benchmark, dir.path(), None, 0).unwrap();
        bench.fail(&anyhow!("no router"));
        assert_eq!(
            bench.run.status(),
            Some(Status::Failed("BENCHMARK: no router".into()))
        );
        let srv = RoleRun::join(Role::DisaggServer, dir.path(), None, 0).unwrap();
        let status = srv.finish(&Ending::Signal);
        assert_eq!(status, ExitStatus::Success, "the run had ended");
    }

    #[test]
    fn waiting_ends_when_ready_when_a_peer_fails_or_at_the_timeout() {
        let (dir, _) = run_dir(0.3);
        let srv = RoleRun::join(Role::DisaggServer, dir.path(), None, 0).unwrap();
        let signal = CancellationToken::new();
        let mut calls = 0;
        let ready = block_on(srv.wait_for("x", 0.0, &signal, || {
            calls += 1;
            let n = calls;
            async move { Ok(n >= 3) }
        }));
        assert_eq!(ready.unwrap(), Ok(()));
        let t0 = Instant::now();
        let late = block_on(srv.wait_for("the workers", 0.0, &signal, || async { Ok(false) }));
        let msg = late.unwrap_err().to_string();
        assert!(msg.starts_with("the workers not ready after 0 s"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let gen_ = RoleRun::join(Role::Gen(0), dir.path(), None, 0).unwrap();
        gen_.fail(&anyhow!("out of memory"));
        let peer = block_on(srv.wait_for("x", 10.0, &signal, || async { Ok(false) }));
        assert_eq!(
            peer.unwrap(),
            Err(Ending::Peer(Role::Gen(0), "out of memory".into()))
        );
        signal.cancel();
        let (dir2, _) = run_dir(5.0);
        let other = RoleRun::join(Role::DisaggServer, dir2.path(), None, 0).unwrap();
        let sig = block_on(other.wait_for("x", 0.0, &signal, || async { Ok(false) }));
        assert_eq!(sig.unwrap(), Err(Ending::Signal));
        assert_eq!(block_on(other.watch(&signal)), Ending::Signal);
    }

    /// A heartbeat that cannot be written (a full disk; here the rendezvous directory replaced
    /// by a file) ends the role with the cause, instead of a "presumed dead" 15 s later.
    #[test]
    fn a_heartbeat_that_cannot_be_written_ends_the_role_with_the_cause() {
        let (dir, _) = run_dir(5.0);
        let gen_ = RoleRun::join(Role::Gen(0), dir.path(), None, 0).unwrap();
        std::fs::remove_dir_all(dir.path().join("rendezvous")).unwrap();
        std::fs::write(dir.path().join("rendezvous"), "not a directory").unwrap();
        let signal = CancellationToken::new();
        let t0 = Instant::now();
        let ending = block_on(gen_.watch(&signal));
        assert!(t0.elapsed() < Duration::from_secs(3));
        let Ending::Broken(why) = &ending else {
            panic!("{ending:?}")
        };
        assert!(
            why.contains("cannot write the heartbeat") && why.contains("rendezvous/GEN_0.json"),
            "{why}"
        );
        assert_eq!(gen_.finish(&ending), ExitStatus::Failure);
    }

    /// A rank that never writes (rank 1 of a Slurm step) still ends when the run directory is
    /// deleted under it.
    #[test]
    fn a_deleted_run_directory_ends_every_rank() {
        let (dir, _) = run_dir(5.0);
        let follower = RoleRun::join(Role::Gen(0), dir.path(), None, 1).unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        let t0 = Instant::now();
        let ending = block_on(follower.watch(&CancellationToken::new()));
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(
            matches!(&ending, Ending::Broken(why) if why.contains("is gone")),
            "{ending:?}"
        );
    }

    #[test]
    fn addresses_follow_the_flag_then_run_json_then_the_node_name() {
        let (_dir, mut spec) = run_dir(1.0);
        let env = |k: &str| (k == "SLURMD_NODENAME").then(|| "n3".to_string());
        assert_eq!(
            Address::of(&spec, Some("10.0.0.2"), &env).advertised,
            "10.0.0.2"
        );
        assert_eq!(Address::of(&spec, None, &env).bind, "127.0.0.1");
        spec.host = None;
        let a = Address::of(&spec, None, &env);
        assert_eq!((a.bind.as_str(), a.advertised.as_str()), ("0.0.0.0", "n3"));
        assert_eq!(a.probe_host(), "127.0.0.1");
        assert_eq!(rank(&|k| (k == "SLURM_PROCID").then(|| "3".into())), 3);
        assert_eq!(rank(&|_| None), 0);
    }
}
