//! `disagg run`: the whole test on this machine. Every role runs as a child process (`disagg
//! role ...`, exactly what the Slurm steps run) in its own process group, supervised: when the
//! benchmark ends or anything fails they are all ended (SIGTERM, a grace period, SIGKILL), and
//! the results are collected.
//!
//! One process per role: a TensorRT-LLM server of several GPUs needs one MPI rank per GPU, which
//! only Slurm (or mpirun) starts, so such a run is refused with the command that works
//! (`check_ranks`). Each worker gets `CUDA_VISIBLE_DEVICES` of its own ([`local_gpus`]).

use std::io::IsTerminal as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use disagg_config::EngineKind;
use disagg_plan::{Plan, Role};

use crate::conclude::{Failure, StoreTo, conclude};
use crate::error::{Hint, InvalidInput};
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
    let gpus =
        match check_ranks(&p, &request.config).and_then(|()| assign_gpus(&p, &request.config)) {
            Ok(g) => g,
            Err(e) => {
                let _ = p.run.write_status(&Status::Failed(format!("{e}")));
                return Err(e);
            }
        };
    eprintln!(
        "{} {}: {} roles ({} GPUs on {} node(s) as planned), engine {}{}, prompts: {}, run \
         directory {}",
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
        p.spec
            .dataset()
            .describe()
            .unwrap_or_else(|| "random".to_string()),
        p.run.root().display()
    );
    let mut children: Vec<Child> = Vec::new();
    for &role in &p.spec.roles {
        let name = role.to_string();
        let devices = gpus
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, d)| d.as_str());
        let started = role_command(&p, role, devices)
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

/// A TensorRT-LLM server of several GPUs runs every rank under `trtllm-llmapi-launch`, which
/// takes its rank and world size from Slurm (`SLURM_PROCID`, `SLURM_NTASKS`) or Open MPI
/// (`OMPI_COMM_WORLD_*`): rank 0 serves and leads, the others join it over MPI. One local
/// process per server would be a world of one, so such a run is refused, naming what works.
fn check_ranks(p: &Prepared, config_arg: &str) -> anyhow::Result<()> {
    if p.spec.engine != EngineKind::Trtllm {
        return Ok(());
    }
    let multi: Vec<String> = p
        .plan
        .servers
        .iter()
        .filter(|s| s.gpus > 1)
        .map(|s| format!("{} ({} GPUs)", s.run_role(), s.gpus))
        .collect();
    if multi.is_empty() {
        return Ok(());
    }
    Err(anyhow::Error::new(Hint(format!(
        "run it as a Slurm job, one rank per GPU as upstream does: `disagg submit {config_arg} --cluster <profile>` \
         (on this machine: `scripts/local-slurm.sh up`, then `--cluster local`); or try the config here with `--engine sim`"
    )))
    .context(InvalidInput(format!(
        "{}: engine trtllm with {}: a TensorRT-LLM server of several GPUs needs one MPI rank per GPU \
         (trtllm-llmapi-launch under srun or mpirun), and `disagg run` starts one process per server",
        p.config.path().display(),
        multi.join(", ")
    ))))
}

/// The machine's GPUs as the launcher may hand them out: its own `CUDA_VISIBLE_DEVICES`, else
/// every GPU the NVIDIA driver lists; `None` when there is neither (no GPU, or a CPU build).
fn machine_gpus(env: &dyn Fn(&str) -> Option<String>) -> Option<(Vec<String>, String)> {
    if let Some(list) = env("CUDA_VISIBLE_DEVICES").filter(|v| !v.trim().is_empty()) {
        let ids = list.split(',').map(|d| d.trim().to_string()).collect();
        return Some((ids, format!("CUDA_VISIBLE_DEVICES={list}")));
    }
    let count = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?.count();
    (count > 0).then(|| {
        (
            (0..count).map(|i| i.to_string()).collect(),
            format!("{count} in /proc/driver/nvidia/gpus"),
        )
    })
}

/// Each worker's `CUDA_VISIBLE_DEVICES` for this run; the sim gets the plan's GPU numbers (it
/// uses no GPU), an external engine this machine's GPUs.
fn assign_gpus(p: &Prepared, config_arg: &str) -> anyhow::Result<Vec<(Role, String)>> {
    let machine = if p.spec.engine == EngineKind::Sim {
        None
    } else {
        let env = |k: &str| std::env::var(k).ok();
        let found = machine_gpus(&env);
        if found.is_none() {
            eprintln!(
                "note: no NVIDIA GPU seen (no CUDA_VISIBLE_DEVICES, no /proc/driver/nvidia/gpus); workers get the plan's GPU numbers"
            );
        }
        found
    };
    local_gpus(&p.plan, machine.as_ref().map(|(ids, _)| ids.as_slice())).map_err(|need| {
        let (ids, source) = machine.unwrap_or_default();
        anyhow::Error::new(Hint(format!(
            "give this run more GPUs through CUDA_VISIBLE_DEVICES, or run it as a Slurm job: `disagg submit {config_arg} --cluster <profile>`"
        )))
        .context(InvalidInput(format!(
            "{}: its servers need {need} GPUs on one machine, this one has {} ({source})",
            p.config.path().display(),
            ids.len()
        )))
    })
}

/// Every worker's GPUs on one machine, as a `CUDA_VISIBLE_DEVICES` value. The plan's nodes are
/// laid side by side: node `n`'s GPU `g` is GPU `g` plus the GPUs the plan uses on the nodes
/// before `n` (as many as the highest index used there + 1). So a one-node plan keeps its own
/// numbers and no two servers ever share a GPU (the plan never gives one twice on a node).
/// `machine`: the GPUs to hand out, in order (`None`: the numbers as they are); too few is
/// `Err(GPUs needed)`.
pub fn local_gpus(plan: &Plan, machine: Option<&[String]>) -> Result<Vec<(Role, String)>, u32> {
    let nodes = plan.total_nodes as usize;
    let mut width = vec![0_u32; nodes];
    for s in &plan.servers {
        let used = s.gpu_indices.iter().max().map_or(0, |g| g + 1);
        for &n in &s.node_indices {
            if let Some(w) = width.get_mut(n as usize) {
                *w = (*w).max(used);
            }
        }
    }
    let offset: Vec<u32> = width
        .iter()
        .scan(0, |acc, w| {
            let at = *acc;
            *acc += w;
            Some(at)
        })
        .collect();
    let need: u32 = width.iter().sum();
    if machine.is_some_and(|m| (m.len() as u32) < need) {
        return Err(need);
    }
    Ok(plan
        .servers
        .iter()
        .map(|s| {
            let slots = s.node_indices.iter().flat_map(|&n| {
                let base = offset.get(n as usize).copied().unwrap_or(0);
                s.gpu_indices.iter().map(move |g| base + g)
            });
            let ids: Vec<String> = slots
                .map(|slot| match machine {
                    Some(m) => m[slot as usize].clone(),
                    None => slot.to_string(),
                })
                .collect();
            (s.run_role(), ids.join(","))
        })
        .collect())
}

/// The command of a role: `disagg role ROLE`, with the config's environment for its kind,
/// `DISAGG_SERVING_TYPE` and, for a worker, its GPUs.
fn role_command(p: &Prepared, role: Role, gpus: Option<&str>) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot locate the disagg binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("role")
        .arg(role.to_string())
        .arg("--run-dir")
        .arg(p.run.root())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .env("DISAGG_SERVING_TYPE", role.to_string());
    for (k, v) in crate::environment::role_env(&p.config, p.cluster.as_ref()).of(role) {
        cmd.env(k, v);
    }
    if let Some(devices) = gpus {
        cmd.env("CUDA_VISIBLE_DEVICES", devices);
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

#[cfg(test)]
mod tests {
    use super::*;
    use disagg_plan::{Placement, PlanInput, ServerGroup, plan};

    fn planned(ctx: (u32, u32), gen_: (u32, u32), placement: Placement) -> Plan {
        plan(&PlanInput {
            gpus_per_node: 4,
            ctx: ServerGroup {
                count: ctx.0,
                gpus: ctx.1,
            },
            gen_: ServerGroup {
                count: gen_.0,
                gpus: gen_.1,
            },
            placement,
            ranks: Default::default(),
            ports_from: None,
        })
        .unwrap()
    }

    fn devices(list: &[(Role, String)]) -> Vec<(String, &str)> {
        list.iter()
            .map(|(r, d)| (r.to_string(), d.as_str()))
            .collect()
    }

    #[test]
    fn servers_on_different_nodes_get_different_gpus() {
        // Upstream placement: each server on nodes of its own; every one starts at GPU 0.
        let p = planned((2, 1), (1, 8), Placement::Upstream);
        let got = local_gpus(&p, None).unwrap();
        assert_eq!(
            devices(&got),
            [
                ("CTX_0".into(), "8"),
                ("CTX_1".into(), "9"),
                ("GEN_0".into(), "0,1,2,3,4,5,6,7"),
            ]
        );
        let all: Vec<&str> = got.iter().flat_map(|(_, d)| d.split(',')).collect();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(all.len(), unique.len(), "no GPU twice: {all:?}");
    }

    #[test]
    fn a_one_node_plan_keeps_its_own_numbers() {
        let p = planned((2, 1), (1, 2), Placement::Packed);
        assert_eq!(p.total_nodes, 1);
        let got = local_gpus(&p, None).unwrap();
        for s in &p.servers {
            let mine = &got.iter().find(|(r, _)| *r == s.run_role()).unwrap().1;
            assert_eq!(*mine, s.cuda_visible_devices());
        }
    }

    #[test]
    fn the_machines_gpus_are_handed_out_in_order_or_refused_when_too_few() {
        let p = planned((1, 1), (1, 2), Placement::Upstream);
        let machine: Vec<String> = ["GPU-a", "GPU-b", "GPU-c", "3"]
            .map(str::to_string)
            .to_vec();
        assert_eq!(
            devices(&local_gpus(&p, Some(&machine)).unwrap()),
            [("CTX_0".into(), "GPU-c"), ("GEN_0".into(), "GPU-a,GPU-b")]
        );
        assert_eq!(local_gpus(&p, Some(&machine[..2])), Err(3));
    }

    #[test]
    fn the_machines_gpus_come_from_its_own_cuda_visible_devices_first() {
        let env = |k: &str| (k == "CUDA_VISIBLE_DEVICES").then(|| "2, 5,7".to_string());
        let (ids, source) = machine_gpus(&env).unwrap();
        assert_eq!(ids, ["2", "5", "7"]);
        assert_eq!(source, "CUDA_VISIBLE_DEVICES=2, 5,7");
    }
}
