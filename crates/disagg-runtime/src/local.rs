//! `disagg run`: the whole test on this machine. Every role runs as a child process (`disagg
//! role ...`, exactly what the Slurm steps run) in its own process group, supervised: when the
//! benchmark ends or anything fails they are all ended (SIGTERM, a grace period, SIGKILL), and
//! the results are collected.

use std::io::IsTerminal as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use disagg_plan::Role;

use crate::conclude::{Failure, StoreTo, conclude};
use crate::events::{Events, at};
use crate::exit::ExitStatus;
use crate::now_ms;
use crate::prepare::{Prepared, RunRequest};
use crate::rundir::{RunDir, Status};
use crate::supervise::{self, Child};

/// Run `request` on this machine (every role binds 127.0.0.1); `grace`: between SIGTERM and
/// SIGKILL at the end.
pub fn run(request: &RunRequest, grace: Duration, store: &StoreTo) -> anyhow::Result<ExitStatus> {
    let t0 = Instant::now();
    let started_ms = now_ms();
    let p = request.prepare(Some("127.0.0.1".to_string()))?;
    eprintln!(
        "{} {}: {} roles ({} GPUs on {} node(s) as planned), engine {}{}, run directory {}",
        at(t0),
        p.config.name(),
        p.spec.roles.len(),
        p.plan.total_gpus,
        p.plan.total_nodes,
        p.spec.engine,
        if p.config.aggregated() {
            ", aggregated"
        } else {
            ""
        },
        p.run.root().display()
    );
    let mut children: Vec<Child> = Vec::new();
    for &role in &p.spec.roles {
        let name = role.to_string();
        let started = role_command(&p, role)
            .and_then(|cmd| Ok(supervise::spawn(&name, cmd, &p.run.log_file(&name))?));
        match started {
            Ok(c) => children.push(c),
            Err(e) => {
                supervise::stop_all(&mut children, grace);
                return Err(e.context(format!("cannot start role {role}")));
            }
        }
    }
    let runtime = crate::serving::runtime(1)?;
    let signal = {
        let _g = runtime.enter();
        crate::serving::cancel_on_signal()
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
    let killed = supervise::stop_all(&mut children, grace);
    if !killed.is_empty() {
        eprintln!(
            "{} killed after the {:.0} s grace period: {}",
            at(t0),
            grace.as_secs_f64(),
            killed.join(", ")
        );
    }
    let heading = p.config.name().to_string();
    let done = conclude(&p, &heading, "start", started_ms, t0, failure, store)?;
    Ok(done.status)
}

/// The command of a role: `disagg role ROLE`, with the config's environment for its kind and
/// `DISAGG_SERVING_TYPE`.
fn role_command(p: &Prepared, role: Role) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot locate the disagg binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("role")
        .arg(role.to_string())
        .arg("--run-dir")
        .arg(p.run.root())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .env("DISAGG_SERVING_TYPE", role.to_string());
    for (k, v) in crate::job::role_env(&p.config, p.cluster.as_ref()).of(role) {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// The failure message of a role that ended: who, how, the reason it gave.
fn role_failure(run: &RunDir, child: &Child, status: std::process::ExitStatus, t: f64) -> String {
    let reason = run
        .roles()
        .ok()
        .and_then(|rs| rs.into_iter().find(|r| r.role.to_string() == child.name()))
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

/// The last lines of a child's log, indented, for a failure message.
fn log_tail(child: &Child) -> String {
    let Some(log) = child.log() else {
        return String::new();
    };
    crate::job::indented_tail(log)
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
    let mut events = Events::new(t0, std::io::stderr().is_terminal());
    let failed = |why: String| Failure {
        why,
        status: ExitStatus::Failure,
    };
    // A role that ended because another failed: wait briefly for the root cause to show.
    let mut secondhand: Option<(Instant, String)> = None;
    loop {
        tokio::select! {
            _ = signal.cancelled() => {
                let why = "interrupted by a signal; every role was stopped".to_string();
                let _ = p.run.write_status(&Status::Failed(why.clone()));
                return Some(Failure { why, status: ExitStatus::Interrupted });
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let roles = p.run.roles().unwrap_or_default();
        events.show(&roles);
        // Look at every exit at once: an abnormal one (a signal, an error) is the root cause even
        // when the benchmark or a worker ended normally in the same instant.
        let t = t0.elapsed().as_secs_f64();
        let run_over = matches!(p.run.status(), Some(Status::Done));
        let mut benchmark_done = false;
        let mut ended_early = None;
        for c in children.iter_mut() {
            let Some(status) = c.poll() else { continue };
            let code = status.code().map(ExitStatus::from_code);
            match code {
                Some(ExitStatus::Success) if c.name() == Role::Benchmark.to_string() => {
                    benchmark_done = true;
                }
                Some(ExitStatus::Success) if run_over => {}
                Some(ExitStatus::Success) => {
                    ended_early.get_or_insert_with(|| {
                        format!("{}\n{}", role_failure(&p.run, c, status, t), log_tail(c))
                    });
                }
                Some(ExitStatus::PeerFailed) => {
                    secondhand.get_or_insert_with(|| {
                        (Instant::now(), role_failure(&p.run, c, status, t))
                    });
                }
                _ => {
                    events.end_line();
                    let why = format!("{}\n{}", role_failure(&p.run, c, status, t), log_tail(c));
                    return Some(failed(why));
                }
            }
        }
        if benchmark_done {
            events.end_line();
            eprintln!("{} BENCHMARK finished", at(t0));
            return None;
        }
        if let Some(why) = ended_early {
            return Some(failed(why));
        }
        // A role that failed in its state but has not exited yet, or went silent.
        let stale_ms = (p.spec.timeouts.stale_s * 1000.0) as u64;
        if let Some((role, why)) = crate::rundir::first_failure(&roles, now_ms(), stale_ms) {
            let name = role.to_string();
            if children.iter().any(|c| c.name() == name) {
                // Give it a moment to exit, so the message carries its exit status.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // One message whichever the supervisor saw first, the state or the exit: who, how
            // it ended, the reason it gave, its log.
            let t = t0.elapsed().as_secs_f64();
            let child = children.iter_mut().find(|c| c.name() == name);
            let why = match child {
                Some(c) => match c.poll() {
                    Some(status) => {
                        format!("{}\n{}", role_failure(&p.run, c, status, t), log_tail(c))
                    }
                    None => format!("{role} failed (no exit yet): {why}\n{}", log_tail(c)),
                },
                None => format!("{role} failed: {why}"),
            };
            return Some(failed(why));
        }
        if let Some((since, why)) = &secondhand {
            if since.elapsed() > Duration::from_secs(2) {
                return Some(failed(why.clone()));
            }
        }
        if t0.elapsed() > deadline {
            let why = format!(
                "the run took longer than its {:.0} s limit (--timeout or slurm.timeout)",
                deadline.as_secs_f64()
            );
            let _ = p.run.write_status(&Status::Failed(why.clone()));
            return Some(failed(why));
        }
    }
}
