//! BENCHMARK: wait for the router, run every concurrency, write the results and the verdict.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use disagg_bench::drive::{Hooks, execute};
use disagg_bench::plan::{BenchPlan, Dataset};
use disagg_bench::runner::Load;
use disagg_plan::Role;
use tokio_util::sync::CancellationToken;

use crate::exit::ExitStatus;
use crate::lifecycle::{Ending, RoleRun};
use crate::now_ms;
use crate::rundir::{State, Status};

/// The benchmark's body (it runs its own multi-thread runtime: the load needs every core).
pub(super) fn run(me: &Arc<RoleRun>) -> ExitStatus {
    let rt = match crate::serving::runtime(0) {
        Ok(rt) => rt,
        Err(e) => return me.fail(&e),
    };
    let signal = {
        let _g = rt.enter();
        crate::serving::cancel_on_signal()
    };
    let url = match rt.block_on(router_url(me, &signal)) {
        Ok(Ok(url)) => url,
        Ok(Err(ending)) => {
            if let Ending::Peer(r, why) = &ending {
                let _ = me
                    .run
                    .write_status_once(&Status::Failed(format!("{r} failed: {why}")));
            }
            return me.finish(&ending);
        }
        Err(e) => return me.fail(&e),
    };
    let _ = me.publish(|s| s.running(now_ms()));
    // The watcher ends the benchmark at once when another role fails or a signal arrives.
    let stop = CancellationToken::new();
    let why_stopped: Arc<Mutex<Option<Ending>>> = Arc::new(Mutex::new(None));
    {
        let me = Arc::clone(me);
        let stop = stop.clone();
        let why = Arc::clone(&why_stopped);
        let signal = signal.clone();
        rt.spawn(async move {
            let e = me.watch(&signal).await;
            if let Ok(mut w) = why.lock() {
                *w = Some(e);
            }
            stop.cancel();
        });
    }
    let plan = bench_plan(me, url);
    eprintln!(
        "BENCHMARK: {} against {}, concurrencies {:?}",
        me.config.name(),
        plan.url,
        me.config.benchmark().concurrency
    );
    let hooks = Hooks {
        stop: stop.clone(),
        progress: me.progress.clone(),
    };
    let outcome = execute(&plan, &rt, &hooks);
    // A failed beat here shows again in the verdict below, which names the file.
    let _ = me.heartbeat();
    let stopped = why_stopped.lock().ok().and_then(|mut w| w.take());
    match (outcome, stopped) {
        (Err(e), _) => me.fail(&e.into()),
        (Ok(o), Some(ending)) if o.interrupted => {
            let why = match &ending {
                Ending::Peer(r, why) => format!("{r} failed: {why}"),
                Ending::Signal => "BENCHMARK terminated by a signal".to_string(),
                Ending::RunOver => "the run was ended while the benchmark ran".to_string(),
                Ending::Broken(why) => format!("BENCHMARK: {why}"),
            };
            let _ = me.run.write_status_once(&Status::Failed(why));
            me.finish(&ending)
        }
        (Ok(_), _) => {
            if let Err(e) = me.run.write_status_once(&Status::Done) {
                return me.fail(&e.into());
            }
            me.finish(&Ending::RunOver)
        }
    }
}

/// Wait for the router to be published and healthy: its URL.
async fn router_url(
    me: &RoleRun,
    signal: &CancellationToken,
) -> anyhow::Result<Result<String, Ending>> {
    let published = me
        .wait_for("DISAGG_SERVER", 20.0, signal, || {
            let roles = me.run.roles();
            async move {
                Ok(roles?
                    .iter()
                    .any(|r| r.role == Role::DisaggServer && r.state == State::Ready))
            }
        })
        .await?;
    if let Err(e) = published {
        return Ok(Err(e));
    }
    let addr = me
        .run
        .roles()?
        .into_iter()
        .find(|r| r.role == Role::DisaggServer)
        .and_then(|r| r.address())
        .ok_or_else(|| anyhow!("DISAGG_SERVER is ready but has no address"))?;
    let probe = addr.clone();
    let healthy = me
        .wait_for("the router's /health", 20.0, signal, move || {
            let probe = probe.clone();
            async move {
                Ok(crate::probe::health(&probe, Duration::from_secs(2))
                    .await
                    .unwrap_or(false))
            }
        })
        .await?;
    Ok(healthy.map(|()| format!("http://{addr}")))
}

/// The benchmark of the run: the config's, with the launcher's overrides, and upstream's
/// client settings (`--ignore-eos`, percentiles 50/90/99 of TTFT/TPOT/ITL/E2EL).
pub fn bench_plan(me: &RoleRun, url: String) -> BenchPlan {
    let b = me.config.benchmark();
    // The config's dataset when it is there; random prompts of the config's lengths otherwise.
    let dataset = match me.spec.dataset_path.as_deref() {
        Some(p) if std::path::Path::new(p).exists() => Dataset::TrtllmCustom(p.into()),
        Some(p) => {
            eprintln!(
                "BENCHMARK: dataset {p} not found; using random prompts of the config's lengths"
            );
            Dataset::Random
        }
        None => Dataset::Random,
    };
    BenchPlan {
        loads: b
            .concurrency
            .iter()
            .map(|&c| Load::Concurrency(c as usize))
            .collect(),
        num_prompts: me.spec.overrides.num_prompts,
        multi_round: b.multi_round.max(1) as usize,
        isl: b.isl,
        osl: b.osl,
        range_ratio: b.range_ratio,
        dataset,
        ignore_eos: true,
        stream: b.streaming,
        percentiles: vec![50.0, 90.0, 99.0],
        timeout: me.spec.timeouts.request_s,
        max_duration: me.spec.timeouts.run_s,
        out: Some(me.run.results_dir()),
        ..BenchPlan::new(url, me.model())
    }
}
