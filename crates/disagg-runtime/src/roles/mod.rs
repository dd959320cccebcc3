//! `disagg role ROLE --run-dir DIR`: what every Slurm step and every child of `disagg run`
//! executes. [`run`] joins the run as the role and runs its body: a worker (`worker`) starts
//! its engine, `DISAGG_SERVER` (`server`) waits for the workers and serves the router,
//! `BENCHMARK` (`benchmark`) waits for the router, runs the load and writes the verdict.
//!
//! Exit status: 0 ended normally, 1 this role failed, 3 ended because another role failed.

mod benchmark;
mod server;
mod worker;

pub use benchmark::planned_runs;
#[cfg(test)]
pub(crate) use server::{coordinator_argv, coordinator_timeouts};
pub use server::{handoff_of, router_policy};

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use disagg_plan::Role;

use crate::error::InvalidInput;
use crate::exit::ExitStatus;
use crate::lifecycle::{RoleRun, rank};

/// The role to run: the argument, else `DISAGG_SERVING_TYPE` (the upstream variable).
pub fn role_of(arg: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Role> {
    let name = arg
        .map(str::to_string)
        .or_else(|| env("DISAGG_SERVING_TYPE"))
        .ok_or_else(|| {
            InvalidInput(format!(
                "no role: give ROLE ({}) or set DISAGG_SERVING_TYPE",
                disagg_plan::role::ROLE_SPELLINGS
            ))
        })?;
    Ok(name
        .parse::<Role>()
        .map_err(|e| InvalidInput(e.to_string()))?)
}

/// Run `role` of the run in `run_dir`, binding `host` when given; `parent_pid`: end when that
/// process (the local launcher) ends.
pub fn run(
    role: Role,
    run_dir: &Path,
    host: Option<&str>,
    parent_pid: Option<u32>,
) -> anyhow::Result<ExitStatus> {
    if let Some(parent) = parent_pid {
        // Started by `disagg run`: never outlive it.
        if !crate::supervise::die_with_parent(nix::sys::signal::Signal::SIGTERM, parent) {
            bail!("the launcher (pid {parent}) is already gone");
        }
    }
    let env = |k: &str| std::env::var(k).ok();
    // Under srun every task of a step runs this; only rank 0 speaks for the server.
    let me = Arc::new(RoleRun::join(role, run_dir, host, rank(&env))?);
    // A worker names the GPUs it was given, so a run's logs show who had which.
    let gpus = match (role, env("CUDA_VISIBLE_DEVICES")) {
        (Role::Ctx(_) | Role::Gen(_), Some(d)) => format!(", CUDA_VISIBLE_DEVICES={d}"),
        _ => String::new(),
    };
    eprintln!(
        "{}: pid {}, rank {}, node {}, run {}, engine {}{gpus}",
        me.role,
        std::process::id(),
        me.rank,
        env("SLURMD_NODENAME").unwrap_or_else(|| me.address.advertised.clone()),
        me.run.root().display(),
        me.spec.engine
    );
    let result = match role {
        Role::Benchmark => Ok(benchmark::run(&me)),
        Role::DisaggServer => serve(&me, server::run),
        Role::Ctx(_) | Role::Gen(_) => serve(&me, worker::run),
    };
    Ok(match result {
        Ok(status) => status,
        Err(e) => me.fail(&e),
    })
}

/// Run an async role body on a current-thread runtime that stops on SIGTERM/SIGINT.
fn serve<F>(me: &RoleRun, body: F) -> anyhow::Result<ExitStatus>
where
    F: AsyncFnOnce(&RoleRun, &tokio_util::sync::CancellationToken) -> anyhow::Result<ExitStatus>,
{
    let rt = crate::serving::runtime(1)?;
    rt.block_on(async {
        let signal = crate::serving::cancel_on_signal();
        body(me, &signal).await
    })
}

/// A free port: bind port 0 and let it go (the engine binds it right after).
fn free_port(host: &str) -> anyhow::Result<u16> {
    use anyhow::Context as _;
    let l = std::net::TcpListener::bind((host, 0))
        .with_context(|| format!("cannot find a free port on {host}"))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_comes_from_the_argument_else_the_upstream_variable() {
        let env = |k: &str| (k == "DISAGG_SERVING_TYPE").then(|| "GEN_2".to_string());
        assert_eq!(role_of(Some("CTX_0"), &env).unwrap(), Role::Ctx(0));
        assert_eq!(role_of(None, &env).unwrap(), Role::Gen(2));
        let none = role_of(None, &|_| None).unwrap_err();
        assert!(none.downcast_ref::<InvalidInput>().is_some());
        assert!(none.to_string().contains("DISAGG_SERVING_TYPE"), "{none}");
        let bad = role_of(Some("WORKER"), &env).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "role `WORKER`: use CTX_<i>, GEN_<i>, DISAGG_SERVER or BENCHMARK"
        );
    }
}
