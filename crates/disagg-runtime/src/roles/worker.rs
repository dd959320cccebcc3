//! CTX_i / GEN_i: start the engine, publish where it serves, serve until the run ends.

use std::time::Duration;

use anyhow::{Context as _, bail};
use disagg_config::EngineKind;
use disagg_plan::ServerKind;
use disagg_sim::{SimOptions, WorkerSide};
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineParams, command_line};
use crate::error::InvalidInput;
use crate::exit::ExitStatus;
use crate::lifecycle::RoleRun;
use crate::rundir::write_private;
use crate::supervise;

/// The worker's body.
pub(super) async fn run(me: &RoleRun, signal: &CancellationToken) -> anyhow::Result<ExitStatus> {
    let kind = me.role.server_kind().unwrap_or(ServerKind::Gen);
    let nodes = me.spec.server(me.role).map_or(1, |s| s.nodes);
    // How many engine processes a server runs, and per what: `None` for one per rank.
    let processes = match me.spec.engine {
        // One server process in all.
        EngineKind::Sim | EngineKind::Command => Some((1, "server")),
        // One per node (the plan gives their steps one task per node): ranks past the
        // server's nodes have nothing to run.
        EngineKind::Vllm | EngineKind::Sglang => Some((nodes, "node")),
        // Every rank runs the MPI launcher.
        EngineKind::Trtllm => None,
    };
    if let Some((_, per)) = processes.filter(|(n, _)| me.rank >= *n) {
        eprintln!(
            "{}: rank {} has no engine process to run ({} runs one per {per}); following the run",
            me.role, me.rank, me.spec.engine
        );
        let ending = me.watch(signal).await;
        return Ok(me.finish(&ending));
    }
    if me.spec.engine == EngineKind::Sim {
        return sim(me, kind, signal).await;
    }
    external(me, kind, signal).await
}

/// The built-in engine, in this process.
async fn sim(
    me: &RoleRun,
    kind: ServerKind,
    signal: &CancellationToken,
) -> anyhow::Result<ExitStatus> {
    let (role, side) = match kind {
        ServerKind::Ctx => (disagg_sim::Role::Context, WorkerSide::Ctx),
        // An aggregated server takes whole requests.
        ServerKind::Gen if me.config.aggregated() => (disagg_sim::Role::Both, WorkerSide::Gen),
        ServerKind::Gen => (disagg_sim::Role::Generation, WorkerSide::Gen),
    };
    // The sim speaks the run's hand-off (router.protocol): TensorRT-LLM's by default.
    let handoff = super::handoff_of(me.spec.engine, &me.config).map_err(InvalidInput)?;
    let protocol = match handoff {
        disagg_router::HandOff::Vllm => disagg_sim::Protocol::Vllm,
        disagg_router::HandOff::Sglang => disagg_sim::Protocol::Sglang,
        disagg_router::HandOff::Trtllm | disagg_router::HandOff::Aggregated => {
            disagg_sim::Protocol::Trtllm
        }
    };
    let options = SimOptions {
        model: Some(me.model()),
        role,
        protocol,
        handoff_key: std::env::var("DISAGG_SIM_HANDOFF_KEY").ok(),
        accept_synthetic_handoff: me.gen_only(),
        // The run's key, as upstream writes it into every worker's options: generation legs
        // must carry the coordinator's signature.
        auth_key: Some(me.run.auth_key()?),
        params: me.spec.overrides.sim.clone(),
        ..SimOptions::default()
    };
    let (mut cfg, limits) = options
        .resolve(Some((&me.config, side)))
        .map_err(|e| InvalidInput(format!("{}: {e}", me.config.path().display())))?;
    // The gen-only benchmark reads its metric from the generation workers' iteration logs.
    if me.gen_only() && side == WorkerSide::Gen {
        cfg.print_iter_log = true;
    }
    let bind = format!("{}:0", me.address.bind);
    let mut sim = disagg_sim::Sim::bind(&bind, cfg, limits)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    // An SGLang-speaking context server serves its bootstrap on the plan's KV port, as SGLang's
    // prefill server does on --disaggregation-bootstrap-port.
    let kv_port = me.spec.server(me.role).and_then(|s| s.kv_port);
    if let (disagg_router::HandOff::Sglang, ServerKind::Ctx, Some(port)) = (handoff, kind, kv_port)
    {
        let at = format!("{}:{port}", me.address.bind);
        sim.bind_bootstrap(&at).await.with_context(|| {
            format!(
                "cannot serve the bootstrap on {at}, the KV port the plan gives {}; \
                 set engine.ports_from to a free range",
                me.role
            )
        })?;
    }
    let port = sim.local_addr().port();
    me.ready(port)?;
    eprintln!(
        "{}: sim engine serving at {}:{port}",
        me.role, me.address.advertised
    );
    let stop = CancellationToken::new();
    let serve = sim.run(stop.clone());
    tokio::pin!(serve);
    let ending = tokio::select! {
        r = &mut serve => {
            r.context("the sim engine stopped")?;
            bail!("the sim engine stopped serving");
        }
        e = me.watch(signal) => e,
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), serve).await;
    Ok(me.finish(&ending))
}

/// An engine of its own (`trtllm-serve`, `vllm serve`, SGLang, a command template) as a child.
async fn external(
    me: &RoleRun,
    kind: ServerKind,
    signal: &CancellationToken,
) -> anyhow::Result<ExitStatus> {
    let w = match kind {
        ServerKind::Ctx => me.config.ctx(),
        ServerKind::Gen => me.config.gen_(),
    };
    // The worker section, minus the harness's keys and with upstream's paths resolved, is the
    // engine's options file (checked when the run was prepared).
    let roots = crate::options::Roots {
        models: me.spec.models_root.as_deref(),
        llm: me.spec.llm_root.as_deref(),
    };
    let mut options = crate::options::options_file(w, me.config.aggregated(), roots)
        .map_err(|e| InvalidInput(format!("{}: {e}", me.config.path().display())))?;
    if me.spec.engine == EngineKind::Trtllm {
        // Upstream's harness puts the test's key into every worker's options
        // (`internal_request_auth_key`); the coordinator signs with the same key.
        options.insert(
            disagg_config::AUTH_KEY_FIELD.to_string(),
            me.run.auth_key()?.expose_secret().into(),
        );
    }
    let engines = me.run.root().join("engines");
    std::fs::create_dir_all(&engines)
        .with_context(|| format!("cannot create {}", engines.display()))?;
    let options_file = engines.join(format!("{}.yaml", me.role));
    // Owner-only: it may hold the key.
    write_private(
        &options_file,
        &serde_json::to_string_pretty(&serde_json::Value::Object(options))?,
    )?;
    // TensorRT-LLM binds port 0 and reports what it bound; the others get a free port picked
    // here (their command lines have no way to report one).
    let (port, report) = if me.spec.engine == EngineKind::Trtllm {
        let file = engines.join(format!("{}.addr", me.role));
        // Rank 0's engine reports; another rank removing the file could erase its report.
        if me.rank == 0 {
            let _ = std::fs::remove_file(&file);
        }
        (
            Port::Reported(file.clone()),
            Some(file.display().to_string()),
        )
    } else {
        (Port::Fixed(super::free_port(&me.address.bind)?), None)
    };
    let model = std::env::var("DISAGG_MODEL_PATH")
        .ok()
        .or_else(|| me.spec.model_path.clone())
        .unwrap_or_else(|| me.model());
    let run_dir = me.run.root().display().to_string();
    let options_path = options_file.display().to_string();
    let engine = me.config.extensions().engine.clone();
    let extra_args = engine.as_ref().map(|e| e.args.clone()).unwrap_or_default();
    let mut env = Vec::new();
    let server = me.spec.server(me.role).cloned();
    let kv_port = server.as_ref().and_then(|s| s.kv_port);
    let option_flags = if matches!(me.spec.engine, EngineKind::Vllm | EngineKind::Sglang) {
        let mapped = crate::engine::map_options(me.spec.engine, w);
        if !mapped.unmapped.is_empty() {
            eprintln!(
                "{}: warning: worker_config keys with no {} flag, not passed: {} (engine.args passes flags as they are)",
                me.role,
                me.spec.engine,
                mapped.unmapped.join(", ")
            );
        }
        mapped.flags
    } else {
        Vec::new()
    };
    if let Some(port) = kv_port {
        // The plan's port: taken already means another run (or a leftover engine) holds it.
        if me.rank == 0 {
            port_is_free(&me.address.bind, port, me)?;
        }
    }
    if me.spec.engine == EngineKind::Vllm && !me.config.aggregated() {
        // NIXL's side channel: where the decode server fetches this server's KV; each server
        // of a node needs a port of its own, so the plan hands them out.
        let port = kv_port.context("run.json gives this server no KV port")?;
        env.push(("VLLM_NIXL_SIDE_CHANNEL_PORT".to_string(), port.to_string()));
        env.push((
            "VLLM_NIXL_SIDE_CHANNEL_HOST".to_string(),
            side_channel_host(&me.address.advertised),
        ));
    }
    let head = std::env::var("DISAGG_HEAD_NODE").ok();
    let multi_node = match (server.as_ref(), me.spec.engine) {
        (Some(s), EngineKind::Vllm | EngineKind::Sglang) if s.nodes > 1 => {
            Some(crate::engine::MultiNode {
                nodes: s.nodes,
                rank: me.rank,
                head: head.as_deref().context(
                    "a multi-node server needs DISAGG_HEAD_NODE (its first node; the batch script sets it)",
                )?,
                port: s.dist_port.context("run.json gives this server no rendezvous port")?,
            })
        }
        _ => None,
    };
    // SGLang's transfer backend from upstream's `cache_transceiver_config.backend` (DEFAULT is
    // NIXL upstream too).
    let backend = w.cache_transceiver_backend().map(str::to_ascii_lowercase);
    let transfer_backend = match backend.as_deref() {
        Some("mooncake") => "mooncake",
        None | Some("nixl" | "default") => "nixl",
        Some(other) => {
            if me.spec.engine == EngineKind::Sglang {
                eprintln!(
                    "{}: warning: cache_transceiver_config.backend {other} has no SGLang transfer backend; using nixl",
                    me.role
                );
            }
            "nixl"
        }
    };
    let params = EngineParams {
        role: me.role,
        model: &model,
        host: &me.address.bind,
        port: match port {
            Port::Fixed(p) => p,
            Port::Reported(_) => 0,
        },
        report_addr: report.as_deref(),
        options_file: &options_path,
        tp: w.tp(),
        pp: w.pp(),
        gpus: w.gpus(),
        run_dir: &run_dir,
        served_name: &me.model(),
        option_flags: &option_flags,
        extra_args: &extra_args,
        vllm_program: &std::env::var("DISAGG_VLLM_BIN").unwrap_or_else(|_| "vllm".to_string()),
        aggregated: me.config.aggregated(),
        kv_port,
        transfer_backend,
        multi_node,
    };
    let template = engine.as_ref().and_then(|e| e.command.clone());
    let mut argv = command_line(me.spec.engine, template.as_deref(), &params)
        .map_err(|e| InvalidInput(format!("{}: {e}", me.config.path().display())))?;
    let profiling = me.config.profiling();
    if profiling.nsys_on && crate::preflight::profiles(me.spec.engine) {
        crate::preflight::check_here(&me.config, &[crate::preflight::Tool::Nsys])?;
        let dir = me.run.root().join("profiles");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let output = crate::engine::nsys_output(&dir.display().to_string(), me.role, me.rank);
        let range = match kind {
            ServerKind::Ctx => &profiling.ctx_profile_range,
            ServerKind::Gen => &profiling.gen_profile_range,
        };
        let (wrapped, profile_env) = crate::engine::nsys_wrap(
            argv,
            crate::engine::Nsys {
                output: &output,
                range,
            },
        );
        argv = wrapped;
        env.extend(profile_env);
    }
    let what = format!("the {} engine", me.spec.engine);
    serve_child(me, &argv, &env, port, &what, signal).await
}

/// The plan's port must be free where this server runs: a clear error naming it, the role and
/// the knob, rather than an engine that fails to bind minutes into loading.
fn port_is_free(host: &str, port: u16, me: &RoleRun) -> anyhow::Result<()> {
    match std::net::TcpListener::bind((host, port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(InvalidInput(format!(
            "{}: port {port} on {host}, the KV port the plan gives this server, is taken ({e}); \
             another run or a leftover engine holds it — stop it, or set engine.ports_from in {} \
             to another range",
            me.role,
            me.config.path().display()
        ))
        .into()),
    }
}

/// The address NIXL's side channel binds and hands on: the advertised host as an IP address
/// (it is used for a ZeroMQ bind, which takes no host names).
fn side_channel_host(advertised: &str) -> String {
    use std::net::ToSocketAddrs as _;
    (advertised, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map_or_else(|| advertised.to_string(), |a| a.ip().to_string())
}

/// Where a child serves.
pub(super) enum Port {
    /// On this port.
    Fixed(u16),
    /// On the port it writes (`host:port`) to this file once it has bound one.
    Reported(std::path::PathBuf),
}

impl Port {
    /// The port, once known.
    fn get(&self) -> Option<u16> {
        match self {
            Port::Fixed(p) => Some(*p),
            Port::Reported(file) => std::fs::read_to_string(file)
                .ok()?
                .trim()
                .rsplit_once(':')?
                .1
                .parse()
                .ok(),
        }
    }
}

/// Run `argv` (an engine, or upstream's coordinator) as a child that serves on `port`: wait for
/// its `/health`, publish the role as ready, serve until the run ends or the child dies, then
/// stop it (SIGTERM, 10 s, SIGKILL). Its output goes to the role's own log.
pub(super) async fn serve_child(
    me: &RoleRun,
    argv: &[String],
    env: &[(String, String)],
    port: Port,
    what: &str,
    signal: &CancellationToken,
) -> anyhow::Result<ExitStatus> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v)));
    let child = supervise::spawn_attached(what, cmd)
        .with_context(|| format!("cannot start `{}`", argv[0]))?;
    eprintln!(
        "{}: engine pid {}: {}",
        me.role,
        child.pid(),
        argv.join(" ")
    );
    let mut children = [child];
    let result = serve_started(me, &mut children[0], &port, what, signal).await;
    supervise::stop_all(&mut children, Duration::from_secs(10));
    result.map(|ending| me.finish(&ending))
}

async fn serve_started(
    me: &RoleRun,
    child: &mut supervise::Child,
    port: &Port,
    what: &str,
    signal: &CancellationToken,
) -> anyhow::Result<crate::lifecycle::Ending> {
    // Ranks other than 0 are the engine's MPI workers: they never serve /health.
    if me.rank == 0 {
        let started = me
            .wait_for(what, 0.0, signal, || {
                let exited = child.poll();
                // Probed where the other roles will look (the advertised address), not only on
                // loopback: a server bound to 127.0.0.1 on a cluster node answers nobody else.
                let pid = child.pid();
                let addrs = port.get().map(|p| {
                    (
                        p,
                        format!("{}:{p}", me.address.advertised),
                        format!("{}:{p}", me.address.probe_host()),
                    )
                });
                async move {
                    if let Some(status) = exited {
                        bail!(
                            "it exited before it was ready ({})",
                            supervise::describe(status)
                        );
                    }
                    match addrs {
                        // Healthy, and the server is the child's: a port picked free here can be
                        // taken by another process before the engine binds it.
                        Some((port, public, local)) => {
                            Ok(reachable(&public, &local).await?
                                && supervise::listens_on(pid, port))
                        }
                        None => Ok(false),
                    }
                }
            })
            .await
            .map_err(|e| e.context(format!("{what} did not come up")))?;
        if let Err(ending) = started {
            return Ok(ending);
        }
    }
    let port = port.get().unwrap_or(0);
    me.ready(port)?;
    eprintln!(
        "{}: engine ready at {}:{port}",
        me.role, me.address.advertised
    );
    let watch = me.watch(signal);
    tokio::pin!(watch);
    loop {
        tokio::select! {
            e = &mut watch => return Ok(e),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(status) = child.poll() {
                    bail!("{what} exited ({})", supervise::describe(status));
                }
            }
        }
    }
}

/// Whether the server answers `/health` at `public`; an error when it answers only at `local`
/// (bound to the loopback interface: the other nodes could never reach it).
async fn reachable(public: &str, local: &str) -> anyhow::Result<bool> {
    let wait = Duration::from_secs(2);
    match crate::probe::health(public, wait).await {
        Ok(ok) => Ok(ok),
        Err(e) if public != local && crate::probe::health(local, wait).await.unwrap_or(false) => {
            bail!(
                "it answers at {local} but not at {public}, the address the other roles use ({e}): \
                 it is bound to the loopback interface only; bind all interfaces or the node's address"
            )
        }
        Err(_) => Ok(false),
    }
}
