//! `disagg run FILE`: the whole test on this machine. Plans it, lays out the run directory,
//! starts every role as a child process (`disagg role ...`, exactly what the Slurm steps run),
//! supervises them, ends them all when the benchmark ends or anything fails (SIGTERM, a grace
//! period, SIGKILL, by process group), and collects the results.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use disagg_config::{EngineKind, TestConfig};
use disagg_plan::{Placement, Plan};
use disagg_results::junit;
use disagg_results::summary::{Outcome, RunFacts, Summary};
use disagg_runtime::now_ms;
use disagg_runtime::rundir::{RoleState, RunDir, State, Status, write_atomic};
use disagg_runtime::spec::{Overrides, RunSpec, SPEC_VERSION, Timeouts};
use disagg_runtime::supervise::{self, Child};

use crate::cli::{Global, OverrideArgs, RunArgs};
use crate::{InvalidInput, job};

/// A run directory laid out and ready for its roles.
pub struct Prepared {
    /// The run directory.
    pub run: RunDir,
    /// Its `run.json`.
    pub spec: RunSpec,
    /// The config, overrides applied.
    pub config: TestConfig,
    /// The plan.
    pub plan: Plan,
    /// The cluster profile, when one was named.
    pub cluster: Option<disagg_config::Cluster>,
}

/// A run directory's name: `<config>-<UTC time>`.
fn default_run_dir(name: &str) -> String {
    let stamp = junit::iso8601(now_ms()).replace([':', '-'], "");
    format!("{name}-{stamp}")
}

/// Check the flags, load and plan the config, and lay out the run directory.
pub fn prepare(global: &Global, args: &RunArgs, host: Option<String>) -> anyhow::Result<Prepared> {
    let config = job::load_config(&args.config, &args.config_dir)?;
    let cluster = match &args.cluster {
        Some(name) => Some(job::load_cluster(global.clusters.as_deref(), name)?),
        None => None,
    };
    let dir = match (
        &args.out,
        cluster.as_ref().and_then(|c| c.run_root.as_ref()),
    ) {
        (Some(d), _) => d.clone(),
        (None, Some(root)) => PathBuf::from(root).join(default_run_dir(config.name())),
        (None, None) => PathBuf::from("runs").join(default_run_dir(config.name())),
    };
    prepare_in(
        config,
        &args.overrides,
        cluster,
        args.cluster.as_deref(),
        &dir,
        host,
    )
}

/// [`prepare`] for a loaded config and cluster, into `dir`.
pub fn prepare_in(
    mut config: TestConfig,
    args: &OverrideArgs,
    cluster: Option<disagg_config::Cluster>,
    cluster_name: Option<&str>,
    dir: &std::path::Path,
    host: Option<String>,
) -> anyhow::Result<Prepared> {
    let engine = match &args.engine {
        Some(e) => EngineKind::parse(e).ok_or_else(|| {
            InvalidInput(format!(
                "--engine {e}: use one of {}",
                EngineKind::NAMES.join(", ")
            ))
        })?,
        None => config
            .extensions()
            .engine
            .as_ref()
            .map_or(EngineKind::Sim, |e| e.kind),
    };
    let overrides = Overrides {
        concurrency: (!args.concurrency.is_empty()).then(|| args.concurrency.clone()),
        isl: args.isl,
        osl: args.osl,
        num_prompts: args.num_prompts,
        multi_round: args.multi_round,
        sim: sim_overrides(&args.sim)?,
    };
    for (flag, v) in [
        ("--isl", overrides.isl),
        ("--osl", overrides.osl),
        ("--multi-round", overrides.multi_round),
    ] {
        if v == Some(0) {
            return Err(InvalidInput(format!("{flag} must be at least 1")).into());
        }
    }
    if overrides.concurrency.iter().flatten().any(|&c| c == 0) || args.num_prompts == Some(0) {
        return Err(
            InvalidInput("--concurrency and --num-prompts must be at least 1".into()).into(),
        );
    }
    if let Some(c) = &overrides.concurrency {
        config.benchmark_mut().concurrency.clone_from(c);
    }
    if config.benchmark().concurrency.is_empty() {
        return Err(InvalidInput(format!(
            "{}: benchmark.concurrency_list is empty; set it or pass --concurrency",
            config.path().display()
        ))
        .into());
    }
    let input = job::plan_input(&config, cluster.as_ref(), Placement::Upstream)?;
    let plan = job::make_plan(&config, &input)?;
    if dir.join("run.json").exists() {
        return Err(InvalidInput(format!(
            "{} already holds a run; give another --out (runs are never overwritten)",
            dir.display()
        ))
        .into());
    }
    RunDir::create(dir)?;
    // Roles get absolute paths: they may run elsewhere (Slurm) or change directory.
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let run = RunDir::open(&dir);
    let file_name = config.path().file_name().map_or_else(
        || "config.yaml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = std::fs::read_to_string(config.path())
        .with_context(|| format!("cannot read {}", config.path().display()))?;
    write_atomic(&dir.join(&file_name), &text)?;
    let timeout_s = config.slurm().timeout_s.map(|t| t as f64);
    let spec = RunSpec {
        spec_version: SPEC_VERSION,
        config_file: file_name,
        engine: EngineKind::NAMES
            .iter()
            .find(|n| EngineKind::parse(n) == Some(engine))
            .map_or("sim", |n| n)
            .to_string(),
        host,
        overrides,
        timeouts: Timeouts {
            ready_s: args.ready_timeout.or(timeout_s).unwrap_or(600.0),
            stale_s: 15.0,
            request_s: timeout_s.unwrap_or(600.0),
            run_s: args.timeout.or(timeout_s).unwrap_or(3600.0),
        },
        roles: crate::role_cmd::roles_of(&plan),
        created_unix_ms: now_ms(),
        model_path: cluster.as_ref().and_then(|c| {
            let name = config.metadata().model_name.as_deref()?;
            Some(c.model_path(name))
        }),
        dataset_path: dataset_path(&config, cluster.as_ref()),
        gpu_type: if engine == EngineKind::Sim {
            Some("sim".to_string())
        } else {
            cluster.as_ref().and_then(|c| c.gpu_type.clone())
        },
    };
    spec.write(&run)?;
    let doc = crate::plan_cmd::PlanDoc {
        config: config.name(),
        file: config.path().display().to_string(),
        mode: config.benchmark().mode.as_str(),
        cluster: cluster_name,
        plan: &plan,
    };
    write_atomic(
        &dir.join("plan.json"),
        &(serde_json::to_string_pretty(&doc)? + "\n"),
    )?;
    Ok(Prepared {
        run,
        spec,
        config,
        plan,
        cluster,
    })
}

/// `--sim NAME=VALUE` pairs, checked against the sim's parameters.
fn sim_overrides(items: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                InvalidInput(format!(
                    "--sim `{item}`: write NAME=VALUE, e.g. decode_step_base_ms=16"
                ))
            })?;
            if !disagg_config::SIM_PARAMS.contains(&k) {
                return Err(InvalidInput(format!(
                    "--sim `{k}`: not a sim parameter; use one of {}",
                    disagg_config::SIM_PARAMS.join(", ")
                ))
                .into());
            }
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    InvalidInput(format!(
                        "--sim `{item}`: `{v}` is not a non-negative number"
                    ))
                })?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// `benchmark.dataset_file` under the cluster's models root (`CLUSTER_LLM_DATA`), as upstream
/// resolves it; an absolute path stays as is; without a models root only an absolute path works.
fn dataset_path(config: &TestConfig, cluster: Option<&disagg_config::Cluster>) -> Option<String> {
    let file = config.benchmark().dataset_file.as_deref()?;
    if file.starts_with('/') {
        return Some(file.to_string());
    }
    let root = cluster.and_then(|c| c.models_root.as_deref())?;
    Some(format!("{}/{file}", root.trim_end_matches('/')))
}

/// A role's environment: the config's env strings for its kind, and `DISAGG_SERVING_TYPE`.
fn role_command(p: &Prepared, role: &str) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot locate the disagg binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("role")
        .arg(role)
        .arg("--run-dir")
        .arg(p.run.root())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .env("DISAGG_SERVING_TYPE", role);
    let env = job::role_env(&p.config);
    let extra: Vec<&(String, String)> = if role.starts_with("CTX_") {
        env.worker.iter().chain(&env.ctx).collect()
    } else if role.starts_with("GEN_") {
        env.worker.iter().chain(&env.gen_).collect()
    } else if role == "DISAGG_SERVER" {
        env.server.iter().collect()
    } else {
        env.benchmark.iter().collect()
    };
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// Seconds since `t0`, for the event lines.
pub fn at(t0: Instant) -> String {
    format!("[{:>6.2}s]", t0.elapsed().as_secs_f64())
}

/// What ended the run early.
struct Failure {
    why: String,
    /// The exit code of `disagg run` for it.
    code: u8,
}

/// The failure message of a role that ended: who, how, the reason it gave, its last log lines.
fn role_failure(run: &RunDir, child: &Child, status: std::process::ExitStatus, t: f64) -> String {
    let reason = run
        .roles()
        .ok()
        .and_then(|rs| rs.into_iter().find(|r| r.role == child.name()))
        .and_then(|r| r.reason);
    let mut why = format!(
        "{} (pid {}) {} after {t:.1} s",
        child.name(),
        child.pid(),
        supervise::describe(status)
    );
    if let Some(r) = reason {
        why.push_str(&format!(": {r}"));
    }
    why
}

fn log_tail(child: &Child) -> String {
    let lines = supervise::tail(child.log(), 12);
    if lines.is_empty() {
        return format!("  ({} is empty)\n", child.log().display());
    }
    let mut s = format!("  last lines of {}:\n", child.log().display());
    for l in lines {
        s.push_str("    ");
        s.push_str(&l);
        s.push('\n');
    }
    s
}

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let started_ms = now_ms();
    let p = prepare(global, args, Some("127.0.0.1".to_string()))?;
    let root = p.run.root().to_path_buf();
    eprintln!(
        "{} {}: {} roles ({} GPUs on {} nodes as planned), engine {}, run directory {}",
        at(t0),
        p.config.name(),
        p.spec.roles.len(),
        p.plan.total_gpus,
        p.plan.total_nodes,
        p.spec.engine,
        root.display()
    );
    let mut children: Vec<Child> = Vec::new();
    for role in &p.spec.roles {
        let cmd = role_command(&p, role)?;
        let log = p.run.log_file(role);
        match supervise::spawn(role, cmd, &log) {
            Ok(c) => children.push(c),
            Err(e) => {
                supervise::stop_all(&mut children, Duration::from_secs_f64(args.grace));
                return Err(anyhow::Error::new(e).context(format!("cannot start role {role}")));
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal = {
        let _g = runtime.enter();
        crate::listening::cancel_on_signal()
    };
    let failure = runtime.block_on(supervise_roles(&p, &mut children, &signal, t0));
    // The run is over: make sure the status says so (a role may have died while the benchmark
    // wrote `Done`: the failure wins), then end every role.
    match (&failure, p.run.status()) {
        (Some(f), None | Some(Status::Done)) => {
            let why = f.why.lines().next().unwrap_or_default().to_string();
            let _ = p.run.write_status(&Status::Failed(why));
        }
        (None, None) => {
            let _ = p.run.write_status(&Status::Done);
        }
        _ => {}
    }
    let killed = supervise::stop_all(&mut children, Duration::from_secs_f64(args.grace));
    if !killed.is_empty() {
        eprintln!(
            "{} killed after the {:.0} s grace period: {}",
            at(t0),
            args.grace,
            killed.join(", ")
        );
    }
    let (_, code) = conclude(
        &p,
        p.config.name(),
        "start",
        started_ms,
        t0,
        failure.map(|f| (f.why, f.code)),
        (!args.no_store).then_some(args.db.as_deref()),
    )?;
    Ok(ExitCode::from(code))
}

/// The end of a run, local or Slurm: collect the results (`summary.json`, `results.xml`),
/// print the table, store and check (`store`: in this database or the default one; the check
/// only for a passed test), and apply the exit-code rule — the test's failure (`failure`: the
/// message, whose first line is the verdict, and its exit code) first, then the check's.
pub fn conclude(
    p: &Prepared,
    heading: &str,
    since: &str,
    started_ms: u64,
    t0: Instant,
    failure: Option<(String, u8)>,
    store: Option<Option<&std::path::Path>>,
) -> anyhow::Result<(Summary, u8)> {
    let first_request_s = p
        .run
        .roles()
        .ok()
        .and_then(|rs| rs.into_iter().find(|r| r.role == "BENCHMARK"))
        .and_then(|r| r.progress?.first_request_ms)
        .map(|ms| ms.saturating_sub(started_ms) as f64 / 1000.0);
    let summary = collect(
        p,
        failure
            .as_ref()
            .map(|(why, _)| why.lines().next().unwrap_or_default()),
        started_ms,
        t0.elapsed().as_secs_f64(),
        first_request_s,
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{heading}")?;
    write!(out, "{}", summary.table())?;
    writeln!(out, "results: {}", p.run.results_dir().display())?;
    if let Some(t) = first_request_s {
        writeln!(out, "first request sent {t:.2} s after {since}")?;
    }
    drop(out);
    // Store every record (also of a failed run: nothing is lost); check only a passed test.
    let passed = failure.is_none() && summary.outcome == Outcome::Passed;
    let regressed = store
        .is_some_and(|db| crate::results_cmd::after_run(&p.run, &p.spec, db, &p.config, passed));
    let code = match (failure, summary.outcome) {
        (Some((why, code)), _) => {
            eprintln!("error: the run failed: {why}");
            code
        }
        (None, Outcome::Passed) if regressed => {
            eprintln!(
                "error: the test passed but regressed against its baseline (see the check above)"
            );
            1
        }
        (None, Outcome::Passed) => {
            eprintln!("{} passed", at(t0));
            0
        }
        (None, _) => {
            eprintln!(
                "error: {}",
                summary.reason.as_deref().unwrap_or("the run is invalid")
            );
            1
        }
    };
    Ok((summary, code))
}

/// Watch the children and the run directory until the benchmark ends (`None`) or something
/// fails (`Some`, with the message).
async fn supervise_roles(
    p: &Prepared,
    children: &mut [Child],
    signal: &tokio_util::sync::CancellationToken,
    t0: Instant,
) -> Option<Failure> {
    let deadline = Duration::from_secs_f64(p.spec.timeouts.run_s);
    let terminal = std::io::stderr().is_terminal();
    let mut seen: Vec<(String, State)> = Vec::new();
    let mut last_label = String::new();
    // A role that ended because another failed: wait briefly for the root cause to show.
    let mut secondhand: Option<(Instant, String)> = None;
    loop {
        tokio::select! {
            _ = signal.cancelled() => {
                let why = "interrupted by a signal; every role was stopped".to_string();
                let _ = p.run.write_status(&Status::Failed(why.clone()));
                return Some(Failure { why, code: 130 });
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let roles = p.run.roles().unwrap_or_default();
        show_progress(&roles, &mut seen, &mut last_label, terminal, t0);
        // Look at every exit at once: an abnormal one (a signal, an error) is the root cause even
        // when the benchmark or a worker ended normally in the same instant.
        let t = t0.elapsed().as_secs_f64();
        let run_over = matches!(p.run.status(), Some(Status::Done));
        let mut benchmark_done = false;
        let mut ended_early = None;
        for c in children.iter_mut() {
            let Some(status) = c.poll() else { continue };
            match status.code() {
                Some(0) if c.name() == "BENCHMARK" => benchmark_done = true,
                Some(0) if run_over => {}
                Some(0) => {
                    ended_early.get_or_insert_with(|| {
                        format!("{}\n{}", role_failure(&p.run, c, status, t), log_tail(c))
                    });
                }
                Some(code) if code == i32::from(crate::role_cmd::PEER_FAILED) => {
                    secondhand.get_or_insert_with(|| {
                        (Instant::now(), role_failure(&p.run, c, status, t))
                    });
                }
                _ => {
                    if terminal {
                        eprintln!();
                    }
                    return Some(Failure {
                        why: format!("{}\n{}", role_failure(&p.run, c, status, t), log_tail(c)),
                        code: 1,
                    });
                }
            }
        }
        if benchmark_done {
            if terminal {
                eprintln!();
            }
            eprintln!("{} BENCHMARK finished", at(t0));
            return None;
        }
        if let Some(why) = ended_early {
            return Some(Failure { why, code: 1 });
        }
        // A role that failed in its state but has not exited yet, or went silent.
        let stale_ms = (p.spec.timeouts.stale_s * 1000.0) as u64;
        if let Some((role, why)) = disagg_runtime::rundir::first_failure(&roles, now_ms(), stale_ms)
        {
            if children.iter().any(|c| c.name() == role) {
                // Give it a moment to exit, so the message carries its exit status.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let child = children.iter_mut().find(|c| c.name() == role);
            let exit = child
                .and_then(|c| c.poll().map(|s| (supervise::describe(s), log_tail(c))))
                .unwrap_or_else(|| ("no exit yet".to_string(), String::new()));
            return Some(Failure {
                why: format!("{role} failed ({}): {why}\n{}", exit.0, exit.1),
                code: 1,
            });
        }
        if let Some((since, why)) = &secondhand {
            if since.elapsed() > Duration::from_secs(2) {
                return Some(Failure {
                    why: why.clone(),
                    code: 1,
                });
            }
        }
        if t0.elapsed() > deadline {
            let why = format!(
                "the run took longer than its {:.0} s limit (--timeout or slurm.timeout)",
                deadline.as_secs_f64()
            );
            let _ = p.run.write_status(&Status::Failed(why.clone()));
            return Some(Failure { why, code: 1 });
        }
    }
}

/// Event lines for every state change; the benchmark's progress on a terminal.
pub fn show_progress(
    roles: &[RoleState],
    seen: &mut Vec<(String, State)>,
    last_label: &mut String,
    terminal: bool,
    t0: Instant,
) {
    for r in roles {
        let known = seen.iter_mut().find(|(n, _)| n == &r.role);
        let changed = match known {
            Some((_, s)) if *s == r.state => false,
            Some((_, s)) => {
                *s = r.state;
                true
            }
            None => {
                seen.push((r.role.clone(), r.state));
                true
            }
        };
        if changed && r.state != State::Starting {
            let what = match (r.state, r.address()) {
                (State::Ready, Some(a)) => format!("ready at {a}"),
                (State::Ready, None) => "running".to_string(),
                (State::Exited, _) => "exited".to_string(),
                (State::Failed, _) => format!("FAILED: {}", r.reason.as_deref().unwrap_or("")),
                (State::Starting, _) => "starting".to_string(),
            };
            if terminal {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{} {:<13} {what}", at(t0), r.role);
        }
        if let Some(pr) = &r.progress {
            if !pr.label.is_empty() && &pr.label != last_label {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!(
                    "{} BENCHMARK     {} ({}/{}): {} requests",
                    at(t0),
                    pr.label,
                    pr.runs_done + 1,
                    pr.runs_total,
                    pr.total
                );
                last_label.clone_from(&pr.label);
            }
            if terminal {
                eprint!(
                    "\r\x1b[2K{} BENCHMARK     {}: {}/{} requests",
                    at(t0),
                    pr.label,
                    pr.done,
                    pr.total
                );
            }
        }
    }
}

/// Read the records, write `summary.json` and `results.xml`.
pub fn collect(
    p: &Prepared,
    failure: Option<&str>,
    started_ms: u64,
    duration_s: f64,
    first_request_s: Option<f64>,
) -> anyhow::Result<Summary> {
    let dir = p.run.results_dir();
    let records: Vec<_> = disagg_results::load_records(&dir)?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let planned: Vec<String> = p
        .config
        .benchmark()
        .concurrency
        .iter()
        .map(|c| format!("con{c}"))
        .collect();
    let root = p.run.root().display().to_string();
    let summary = Summary::build(
        &RunFacts {
            config: p.config.name(),
            run_dir: &root,
            planned: &planned,
            failure,
            started_unix_ms: started_ms,
            duration_s,
            first_request_s,
        },
        &records,
    );
    write_atomic(
        &dir.join("summary.json"),
        &(serde_json::to_string_pretty(&summary)? + "\n"),
    )?;
    write_atomic(&dir.join("results.xml"), &junit::render(&summary))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_resolve_under_the_models_root_as_upstream() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap_or_default()
        .replace(
            "  streaming: true\n",
            "  streaming: true\n  dataset_file: datasets/sharegpt.json\n",
        );
        let config = TestConfig::parse(std::path::Path::new("x.yaml"), &text)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dataset_path(&config, None),
            None,
            "no models root, no dataset"
        );
        let mut cluster = disagg_config::ClusterFile::parse(
            std::path::Path::new("c.yaml"),
            "clusters:\n  c:\n    models_root: /lustre/models/\n",
        )
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("{e}"))
        .clusters["c"]
            .clone();
        assert_eq!(
            dataset_path(&config, Some(&cluster)).as_deref(),
            Some("/lustre/models/datasets/sharegpt.json")
        );
        cluster = cluster.with_env(&|k| (k == "CLUSTER_LLM_DATA").then(|| "/data".to_string()));
        assert_eq!(
            dataset_path(&config, Some(&cluster)).as_deref(),
            Some("/data/datasets/sharegpt.json")
        );
    }
}
