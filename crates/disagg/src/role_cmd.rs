//! `disagg role ROLE --run-dir DIR`: one role of a run — what every Slurm step and every child
//! of `disagg run` executes.
//!
//! Every role publishes its state in the run directory (`starting → ready → exited|failed`, with
//! a heartbeat each second) and watches the others: a failed role, a stale heartbeat or the
//! benchmark's status file ends it within a fraction of a second. Exit codes: 0 ended normally,
//! 1 this role failed, 3 ended because another role failed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use disagg_config::{EngineKind, Mode, RouterPolicy, TestConfig};
use disagg_runtime::now_ms;
use disagg_runtime::rundir::{
    Progress, RoleState, RunDir, State, Status, first_failure, write_atomic,
};
use disagg_runtime::spec::RunSpec;
use tokio_util::sync::CancellationToken;

use crate::cli::{BenchArgs, RoleArgs, SimArgs, SimProtocol, SimRole};
use crate::engine::{EngineParams, command_line};

/// Exit code of a role that ended because another one failed.
pub const PEER_FAILED: u8 = 3;

/// Why a role stopped waiting or serving.
#[derive(Debug)]
enum Ending {
    /// The benchmark wrote its status: the run is over.
    RunOver,
    /// Another role failed (or went silent).
    Peer(String, String),
    /// SIGTERM or SIGINT.
    Signal,
}

/// One role's view of the run.
struct Role {
    name: String,
    run: RunDir,
    spec: RunSpec,
    config: TestConfig,
    /// Address to bind.
    bind_host: String,
    /// Address others reach us at.
    host: String,
    state: Mutex<RoleState>,
    progress: Option<Arc<Mutex<Progress>>>,
    /// Rank 0 of a multi-rank Slurm step publishes; the other ranks only follow the run.
    rank: u32,
}

impl Role {
    fn publish(&self, f: impl FnOnce(RoleState) -> RoleState) -> anyhow::Result<()> {
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

    fn heartbeat(&self) {
        let progress = self
            .progress
            .as_ref()
            .and_then(|p| p.lock().ok().map(|p| p.clone()));
        let _ = self.publish(|mut s| {
            s.heartbeat_ms = now_ms();
            if progress.is_some() {
                s.progress = progress;
            }
            s
        });
    }

    /// Whether the run is over or broken, from the run directory.
    fn check(&self) -> Option<Ending> {
        if self.name != "BENCHMARK" && self.run.status().is_some() {
            return Some(Ending::RunOver);
        }
        let roles = self.run.roles().ok()?;
        let others: Vec<RoleState> = roles.into_iter().filter(|r| r.role != self.name).collect();
        let stale_ms = (self.spec.timeouts.stale_s * 1000.0) as u64;
        first_failure(&others, now_ms(), stale_ms).map(|(r, why)| Ending::Peer(r, why))
    }

    /// Heartbeat every second and look for the end every 200 ms, until something ends the role.
    async fn watch(&self, signal: &CancellationToken) -> Ending {
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
                self.heartbeat();
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
    async fn wait_for<F, Fut>(
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
                    "{what} not ready after {:.0} s (the ready timeout; raise it with --ready-timeout or slurm.timeout)",
                    limit.as_secs_f64()
                );
            }
            if last_beat.elapsed() >= Duration::from_secs(1) {
                self.heartbeat();
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

    /// End the role as `ending` says: publish the final state, return the exit code.
    fn finish(&self, ending: &Ending) -> ExitCode {
        let (failure, code) = match ending {
            Ending::RunOver => (None, 0),
            Ending::Peer(role, why) => {
                eprintln!("{}: ending because {role} failed: {why}", self.name);
                (None, PEER_FAILED)
            }
            Ending::Signal if self.run.status().is_some() => (None, 0),
            Ending::Signal => (
                Some("terminated by a signal before the run ended".to_string()),
                1,
            ),
        };
        let _ = self.publish(|s| s.ended(failure.as_deref(), now_ms()));
        ExitCode::from(code)
    }

    /// The role failed: say why in its state (and in the status file when it is the benchmark).
    fn fail(&self, err: &anyhow::Error) -> ExitCode {
        let why = format!("{err:#}");
        eprintln!("{}: failed: {why}", self.name);
        let _ = self.publish(|s| s.ended(Some(&why), now_ms()));
        if self.name == "BENCHMARK" {
            let _ = self
                .run
                .write_status_once(&Status::Failed(format!("BENCHMARK: {why}")));
        }
        ExitCode::from(1)
    }

    fn workers(&self) -> Vec<String> {
        self.spec.workers().map(str::to_string).collect()
    }

    fn model(&self) -> String {
        self.config
            .metadata()
            .model_name
            .clone()
            .unwrap_or_else(|| "sim".to_string())
    }

    fn gen_only(&self) -> bool {
        self.config.benchmark().mode != Mode::E2e
    }
}

/// The role's name: the argument, else `DISAGG_SERVING_TYPE` (the upstream variable).
fn role_name(args: &RoleArgs) -> anyhow::Result<String> {
    let name = args
        .role
        .clone()
        .or_else(|| std::env::var("DISAGG_SERVING_TYPE").ok())
        .ok_or_else(|| {
            crate::InvalidInput(
                "no role: give ROLE (CTX_i, GEN_i, DISAGG_SERVER, BENCHMARK) or set DISAGG_SERVING_TYPE"
                    .to_string(),
            )
        })?;
    let indexed = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
    };
    if !(indexed("CTX_") || indexed("GEN_") || name == "DISAGG_SERVER" || name == "BENCHMARK") {
        return Err(crate::InvalidInput(format!(
            "role `{name}`: use CTX_<i>, GEN_<i>, DISAGG_SERVER or BENCHMARK"
        ))
        .into());
    }
    Ok(name)
}

/// Load the run's config and apply the launcher's overrides.
pub fn load_run_config(run: &RunDir, spec: &RunSpec) -> anyhow::Result<TestConfig> {
    let path = run.root().join(&spec.config_file);
    let mut config = crate::job::load_config(&path.display().to_string(), Path::new("."))?;
    let b = config.benchmark_mut();
    let o = &spec.overrides;
    if let Some(c) = &o.concurrency {
        b.concurrency.clone_from(c);
    }
    if let Some(v) = o.isl {
        b.isl = v;
    }
    if let Some(v) = o.osl {
        b.osl = v;
    }
    if let Some(v) = o.multi_round {
        b.multi_round = v;
    }
    Ok(config)
}

fn advertised_host(spec: &RunSpec, flag: Option<&str>) -> (String, String) {
    if let Some(h) = flag.or(spec.host.as_deref()) {
        return (h.to_string(), h.to_string());
    }
    // Under Slurm: listen everywhere, be found by node name.
    let name = std::env::var("SLURMD_NODENAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string());
    ("0.0.0.0".to_string(), name)
}

pub fn run(args: &RoleArgs) -> anyhow::Result<ExitCode> {
    let name = role_name(args)?;
    if let Some(parent) = args.parent_pid {
        // Started by `disagg run`: never outlive it.
        if !disagg_runtime::supervise::die_with_parent(nix::sys::signal::Signal::SIGTERM, parent) {
            bail!("the launcher (pid {parent}) is already gone");
        }
    }
    let run = RunDir::open(&args.run_dir);
    let spec = RunSpec::read(&run).with_context(|| {
        format!(
            "{} is not a run directory made by `disagg run` or `disagg submit`",
            args.run_dir.display()
        )
    })?;
    let pid = std::process::id();
    // Under srun every task of a step runs this; only rank 0 speaks for the server.
    let rank = std::env::var("SLURM_PROCID")
        .ok()
        .and_then(|r| r.parse::<u32>().ok())
        .unwrap_or(0);
    // Publish before anything can fail, so a failure is always visible.
    let state = RoleState::new(&name, pid, now_ms());
    if rank == 0 {
        run.publish(&state)?;
    }
    let config = match load_run_config(&run, &spec) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("{e:#}");
            if rank == 0 {
                run.publish(&state.ended(Some(&why), now_ms()))?;
            }
            return Err(e);
        }
    };
    let (bind_host, host) = advertised_host(&spec, args.host.as_deref());
    let role = Arc::new(Role {
        progress: (name == "BENCHMARK").then(|| Arc::new(Mutex::new(Progress::default()))),
        name,
        run,
        spec,
        config,
        bind_host,
        host,
        state: Mutex::new(state),
        rank,
    });
    eprintln!(
        "{}: pid {pid}, rank {rank}, node {}, run {}, engine {}",
        role.name,
        std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| role.host.clone()),
        role.run.root().display(),
        role.spec.engine
    );
    let result = if role.name == "BENCHMARK" {
        Ok(benchmark(&role))
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async {
            let signal = crate::listening::cancel_on_signal();
            if role.name == "DISAGG_SERVER" {
                server(&role, &signal).await
            } else {
                worker(&role, &signal).await
            }
        })
    };
    Ok(match result {
        Ok(code) => code,
        Err(e) => role.fail(&e),
    })
}

/// CTX_i / GEN_i: start the engine, publish where it serves, serve until the run ends.
async fn worker(role: &Role, signal: &CancellationToken) -> anyhow::Result<ExitCode> {
    let is_ctx = role.name.starts_with("CTX_");
    let kind = EngineKind::parse(&role.spec.engine).ok_or_else(|| {
        crate::InvalidInput(format!(
            "engine `{}` in run.json: use one of {}",
            role.spec.engine,
            EngineKind::NAMES.join(", ")
        ))
    })?;
    if kind == EngineKind::Sim {
        if role.rank > 0 {
            // The simulated engine is one process per server: other ranks only follow the run.
            let ending = role.watch(signal).await;
            return Ok(role.finish(&ending));
        }
        return sim_worker(role, is_ctx, signal).await;
    }
    external_worker(role, kind, is_ctx, signal).await
}

async fn sim_worker(
    role: &Role,
    is_ctx: bool,
    signal: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let args = SimArgs {
        host: role.bind_host.clone(),
        port: 0,
        report_addr: None,
        role: if is_ctx {
            SimRole::Context
        } else {
            SimRole::Generation
        },
        protocol: SimProtocol::Trtllm,
        model: Some(role.model()),
        config: Some(role.run.root().join(&role.spec.config_file)),
        worker: if is_ctx { "ctx" } else { "gen" }.to_string(),
        zero_cost: false,
        prefill_tokens_per_s: None,
        decode_step_base_ms: None,
        decode_step_per_seq_ms: None,
        kv_transfer_gb_per_s: None,
        kv_bytes_per_token: None,
        kv_capacity_tokens: None,
        tensor_parallel_size: None,
        max_batch_size: None,
        max_num_tokens: None,
        max_seq_len: None,
        stream_interval: None,
        seed: None,
        eos_probability: None,
        handoff_key: std::env::var("DISAGG_SIM_HANDOFF_KEY").ok(),
        accept_synthetic_handoff: role.gen_only(),
        threads: 1,
        tokenizer: None,
    };
    let (mut cfg, mut limits) = crate::sim_cmd::settings(&args)?;
    let mut cost = cfg.cost;
    crate::sim_cmd::apply_sim_params(&role.spec.overrides.sim, &mut cost, &mut limits, &mut cfg);
    cfg.cost = cost;
    let bind = format!("{}:0", role.bind_host);
    let sim = disagg_sim::Sim::bind(&bind, cfg, limits)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let port = sim.local_addr().port();
    role.publish(|s| s.ready(&role.host, port, now_ms()))?;
    eprintln!("{}: sim engine serving at {}:{port}", role.name, role.host);
    let stop = CancellationToken::new();
    let serve = sim.run(stop.clone());
    tokio::pin!(serve);
    let ending = tokio::select! {
        r = &mut serve => {
            r.context("the sim engine stopped")?;
            bail!("the sim engine stopped serving");
        }
        e = role.watch(signal) => e,
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), serve).await;
    Ok(role.finish(&ending))
}

/// A free port: bind port 0 and let it go (the engine binds it right after).
fn free_port(host: &str) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((host, 0))
        .with_context(|| format!("cannot find a free port on {host}"))?;
    Ok(l.local_addr()?.port())
}

async fn external_worker(
    role: &Role,
    kind: EngineKind,
    is_ctx: bool,
    signal: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let w = if is_ctx {
        role.config.ctx()
    } else {
        role.config.gen_()
    };
    // The worker section, minus the harness's keys, is the engine's options file.
    let options: serde_json::Map<String, serde_json::Value> = w
        .engine_options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    let engines = role.run.root().join("engines");
    std::fs::create_dir_all(&engines)
        .with_context(|| format!("cannot create {}", engines.display()))?;
    let options_file = engines.join(format!("{}.yaml", role.name));
    write_atomic(
        &options_file,
        &serde_json::to_string_pretty(&serde_json::Value::Object(options))?,
    )?;
    let port = free_port(&role.bind_host)?;
    let model = std::env::var("DISAGG_MODEL_PATH")
        .ok()
        .or_else(|| role.spec.model_path.clone())
        .unwrap_or_else(|| role.model());
    let run_dir = role.run.root().display().to_string();
    let options_path = options_file.display().to_string();
    let params = EngineParams {
        role: &role.name,
        model: &model,
        host: &role.bind_host,
        port,
        options_file: &options_path,
        tp: w.tp(),
        pp: w.pp(),
        gpus: w.gpus(),
        run_dir: &run_dir,
    };
    let template = role
        .config
        .extensions()
        .engine
        .as_ref()
        .and_then(|e| e.command.clone());
    let argv = command_line(kind, template.as_deref(), &params)
        .map_err(|e| crate::InvalidInput(format!("{}: {e}", role.config.path().display())))?;
    let what = format!("the {kind:?} engine").to_lowercase();
    serve_child(role, &argv, port, &what, signal).await
}

/// Run `argv` (an engine, or upstream's coordinator) as a child that serves on `port`: wait for
/// its `/health`, publish the role as ready, serve until the run ends or the child dies, then
/// stop it (SIGTERM, 10 s, SIGKILL). Its output goes to the role's own log.
async fn serve_child(
    role: &Role,
    argv: &[String],
    port: u16,
    what: &str,
    signal: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start `{}`", argv[0]))?;
    eprintln!(
        "{}: engine pid {}: {}",
        role.name,
        child.id().unwrap_or_default(),
        argv.join(" ")
    );
    let addr = format!(
        "{}:{port}",
        if role.bind_host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &role.bind_host
        }
    );
    // Ranks other than 0 are the engine's MPI workers: they never serve /health.
    let started = if role.rank > 0 {
        Ok(Ok(()))
    } else {
        let child = &mut child;
        let addr = addr.clone();
        role.wait_for(what, 0.0, signal, move || {
            let exited = child.try_wait();
            let addr = addr.clone();
            async move {
                if let Some(status) = exited? {
                    bail!(
                        "it exited before it was ready ({})",
                        disagg_runtime::supervise::describe(status)
                    );
                }
                Ok(crate::probe::health(&addr, Duration::from_secs(2))
                    .await
                    .unwrap_or(false))
            }
        })
        .await
    };
    let ending = match started {
        Ok(Ok(())) => {
            role.publish(|s| s.ready(&role.host, port, now_ms()))?;
            eprintln!("{}: engine ready at {}:{port}", role.name, role.host);
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    bail!("{what} exited ({})", disagg_runtime::supervise::describe(status));
                }
                e = role.watch(signal) => e,
            }
        }
        Ok(Err(e)) => e,
        Err(e) => {
            stop_engine(&mut child).await;
            return Err(e.context(format!("{what} did not come up")));
        }
    };
    stop_engine(&mut child).await;
    Ok(role.finish(&ending))
}

/// SIGTERM, ten seconds, SIGKILL.
async fn stop_engine(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// DISAGG_SERVER: wait for every worker, write server_config.yaml, serve the router.
async fn server(role: &Role, signal: &CancellationToken) -> anyhow::Result<ExitCode> {
    let workers = role.workers();
    let waited = role
        .wait_for("the workers", 10.0, signal, || {
            let roles = role.run.roles();
            let workers = &workers;
            async move {
                let roles = roles?;
                Ok(workers.iter().all(|w| {
                    roles
                        .iter()
                        .any(|r| &r.role == w && r.state == State::Ready)
                }))
            }
        })
        .await;
    let waited = waited.map_err(|e| {
        let missing: Vec<String> = role
            .run
            .roles()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| workers.contains(&r.role) && r.state != State::Ready)
            .map(|r| format!("{} ({})", r.role, format!("{:?}", r.state).to_lowercase()))
            .collect();
        e.context(format!(
            "waiting for workers; not ready: {}",
            missing.join(", ")
        ))
    })?;
    if let Err(ending) = waited {
        return Ok(role.finish(&ending));
    }
    let roles = role.run.roles()?;
    let url = |prefix: &str| -> Vec<String> {
        workers
            .iter()
            .filter(|w| w.starts_with(prefix))
            .filter_map(|w| roles.iter().find(|r| &r.role == w)?.address())
            .collect()
    };
    let (ctx, gen_) = (url("CTX_"), url("GEN_"));
    let ext = role.config.extensions().router.clone().unwrap_or_default();
    if ext.implementation == Some("trtllm") {
        // Upstream's coordinator: `trtllm-serve disaggregated -c server_config.yaml -t T -r R`
        // on a port picked here (it has no way to report a port it picked itself).
        let port = free_port(&role.bind_host)?;
        role.run
            .write_server_config(&role.host, port, &ctx, &gen_)?;
        let secs = |v: f64| format!("{}", v.ceil() as u64);
        let argv: Vec<String> = vec![
            "trtllm-serve".into(),
            "disaggregated".into(),
            "-c".into(),
            role.run.server_config_file().display().to_string(),
            "-t".into(),
            secs(
                ext.server_start_timeout_s
                    .unwrap_or(role.spec.timeouts.ready_s),
            ),
            "-r".into(),
            secs(
                ext.request_timeout_s
                    .unwrap_or(role.spec.timeouts.request_s),
            ),
        ];
        return serve_child(role, &argv, port, "trtllm-serve disaggregated", signal).await;
    }
    role.run.write_server_config(&role.host, 0, &ctx, &gen_)?;
    let policy = match ext.policy {
        Some("load_balancing") => RouterPolicy::LoadBalancing { use_tokens: false },
        _ => RouterPolicy::RoundRobin,
    };
    let settings = disagg_router::RouterSettings {
        context: ctx,
        generation: gen_,
        context_policy: crate::router_cmd::policy(policy, "router"),
        generation_policy: crate::router_cmd::policy(policy, "router"),
        max_retries: ext.max_retries.unwrap_or(1),
        request_timeout: Duration::from_secs_f64(
            ext.request_timeout_s
                .unwrap_or(role.spec.timeouts.request_s),
        ),
        server_start_timeout: Duration::from_secs_f64(
            ext.server_start_timeout_s
                .unwrap_or(role.spec.timeouts.ready_s),
        ),
        health_check_interval: Duration::from_secs(1),
        gen_only: role.gen_only(),
    };
    let bind = format!("{}:0", role.bind_host);
    let router = disagg_router::Router::bind(&bind, settings)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let port = router.local_addr().port();
    role.publish(|s| s.ready(&role.host, port, now_ms()))?;
    eprintln!("DISAGG_SERVER: router serving at {}:{port}", role.host);
    let stop = CancellationToken::new();
    let serve = router.run(stop.clone());
    tokio::pin!(serve);
    let ending = tokio::select! {
        r = &mut serve => {
            r.context("the router stopped")?;
            bail!("the router stopped serving");
        }
        e = role.watch(signal) => e,
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), serve).await;
    Ok(role.finish(&ending))
}

/// BENCHMARK: wait for the router, run every concurrency, write the results and the status.
fn benchmark(role: &Arc<Role>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return role.fail(&anyhow!(e).context("cannot start the async runtime")),
    };
    let signal = {
        let _g = rt.enter();
        crate::listening::cancel_on_signal()
    };
    // Wait for the router to be published and healthy.
    let url = rt.block_on(async {
        let waited = role
            .wait_for("DISAGG_SERVER", 20.0, &signal, || {
                let roles = role.run.roles();
                async move {
                    Ok(roles?
                        .iter()
                        .any(|r| r.role == "DISAGG_SERVER" && r.state == State::Ready))
                }
            })
            .await?;
        if let Err(e) = waited {
            return Ok(Err(e));
        }
        let addr = role
            .run
            .roles()?
            .into_iter()
            .find(|r| r.role == "DISAGG_SERVER")
            .and_then(|r| r.address())
            .ok_or_else(|| anyhow!("DISAGG_SERVER is ready but has no address"))?;
        let probe = addr.clone();
        let healthy = role
            .wait_for("the router's /health", 20.0, &signal, move || {
                let probe = probe.clone();
                async move {
                    Ok(crate::probe::health(&probe, Duration::from_secs(2))
                        .await
                        .unwrap_or(false))
                }
            })
            .await?;
        Ok::<_, anyhow::Error>(healthy.map(|()| format!("http://{addr}")))
    });
    let url = match url {
        Ok(Ok(url)) => url,
        Ok(Err(ending)) => {
            if let Ending::Peer(r, why) = &ending {
                let _ = role
                    .run
                    .write_status_once(&Status::Failed(format!("{r} failed: {why}")));
            }
            return role.finish(&ending);
        }
        Err(e) => return role.fail(&e),
    };
    let _ = role.publish(|s| s.running(now_ms()));
    // The watcher ends the benchmark at once when another role fails or a signal arrives.
    let stop = CancellationToken::new();
    let why_stopped: Arc<Mutex<Option<Ending>>> = Arc::new(Mutex::new(None));
    {
        let role = Arc::clone(role);
        let stop = stop.clone();
        let why = Arc::clone(&why_stopped);
        let signal = signal.clone();
        rt.spawn(async move {
            let e = role.watch(&signal).await;
            if let Ok(mut w) = why.lock() {
                *w = Some(e);
            }
            stop.cancel();
        });
    }
    let args = bench_args(role, url);
    eprintln!(
        "BENCHMARK: {} against {}, concurrencies {:?}",
        role.config.name(),
        args.url,
        args.concurrency
    );
    let outcome = crate::bench_cmd::execute(
        &args,
        &rt,
        &crate::bench_cmd::Hooks {
            stop: stop.clone(),
            progress: role.progress.clone(),
        },
    );
    role.heartbeat();
    let stopped = why_stopped.lock().ok().and_then(|mut w| w.take());
    match (outcome, stopped) {
        (Err(e), _) => role.fail(&e),
        (Ok(o), Some(ending)) if o.interrupted => {
            let why = match &ending {
                Ending::Peer(r, why) => format!("{r} failed: {why}"),
                Ending::Signal => "BENCHMARK terminated by a signal".to_string(),
                Ending::RunOver => "the run was ended while the benchmark ran".to_string(),
            };
            let _ = role.run.write_status_once(&Status::Failed(why));
            role.finish(&ending)
        }
        (Ok(_), _) => {
            if let Err(e) = role.run.write_status_once(&Status::Done) {
                return role.fail(&e.into());
            }
            role.finish(&Ending::RunOver)
        }
    }
}

/// The benchmark settings of the run: the config's, with the launcher's overrides, upstream's
/// client flags (`--ignore-eos`, percentiles of TTFT/TPOT/ITL/E2EL).
fn bench_args(role: &Role, url: String) -> BenchArgs {
    let b = role.config.benchmark();
    // The config's dataset when it is there; random prompts of the config's lengths otherwise.
    let dataset = role.spec.dataset_path.as_ref().and_then(|p| {
        let path = std::path::PathBuf::from(p);
        if path.exists() {
            Some(path)
        } else {
            eprintln!(
                "BENCHMARK: dataset {p} not found; using random prompts of the config's lengths"
            );
            None
        }
    });
    BenchArgs {
        url,
        model: role.model(),
        endpoint: "completions".to_string(),
        concurrency: b.concurrency.iter().map(|&c| c as usize).collect(),
        request_rate: None,
        burstiness: 1.0,
        num_prompts: role.spec.overrides.num_prompts,
        multi_round: b.multi_round.max(1) as usize,
        isl: b.isl,
        osl: b.osl,
        range_ratio: b.range_ratio,
        dataset: if dataset.is_some() {
            "trtllm-custom"
        } else {
            "random"
        }
        .to_string(),
        dataset_path: dataset,
        ignore_eos: true,
        no_stream: !b.streaming,
        warmup: 0,
        seed: 0,
        goodput: None,
        percentiles: vec![50.0, 90.0, 99.0],
        timeout: role.spec.timeouts.request_s,
        max_duration: role.spec.timeouts.run_s,
        out: Some(role.run.results_dir()),
        tokenizer: None,
        allow_invalid: true,
        save_timelines: false,
    }
}

/// The role names of a run, workers first as the batch script launches them.
pub fn roles_of(plan: &disagg_plan::Plan) -> Vec<String> {
    let mut roles: Vec<String> = plan
        .servers
        .iter()
        .filter(|s| s.role == disagg_plan::Role::Gen)
        .chain(
            plan.servers
                .iter()
                .filter(|s| s.role == disagg_plan::Role::Ctx),
        )
        .map(disagg_plan::ServerPlan::role_name)
        .collect();
    roles.push("DISAGG_SERVER".to_string());
    roles.push("BENCHMARK".to_string());
    roles
}
