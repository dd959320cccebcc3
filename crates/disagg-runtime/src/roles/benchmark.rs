//! BENCHMARK: wait for the router, run every concurrency, write the results and the verdict.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use disagg_bench::drive::{Hooks, execute};
use disagg_bench::plan::BenchPlan;
use disagg_bench::runner::Load;
use disagg_config::{EngineKind, Mode, Workload};
use disagg_plan::Role;
use tokio_util::sync::CancellationToken;

use crate::exit::ExitStatus;
use crate::lifecycle::{Ending, RoleRun};
use crate::now_ms;
use crate::rundir::{State, Status};

/// The benchmark's body (it runs its own multi-thread runtime: the load needs every core).
pub(super) fn run(me: &Arc<RoleRun>) -> ExitStatus {
    // The accuracy step's tool, found before the benchmark waits for anything (on Slurm this is
    // the first check of it; a local run checked it before it started any role).
    let tools = crate::preflight::needed(&me.config, me.spec.engine, false, true);
    if let Err(e) = crate::preflight::check_here(&me.config, &tools) {
        return me.fail(&e.into());
    }
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
    let router = url.trim_start_matches("http://").to_string();
    let plan = bench_plan(me, url);
    // Gen-only: where the generation workers' logs are now, so that the step times read after
    // the run are the run's own.
    let gen_logs = me.gen_only().then(|| gen_logs(me));
    eprintln!(
        "BENCHMARK: {} against {}, concurrencies {:?}, prompts: {}",
        me.config.name(),
        plan.url,
        me.config.benchmark().concurrency,
        plan.dataset.describe().as_deref().unwrap_or("random")
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
            let after = gen_logs
                .map(|logs| step_times(me, &logs))
                .unwrap_or(Ok(()))
                .and_then(|()| match me.config.accuracy() {
                    Some(a) => accuracy(me, a, &router, &stop),
                    None => Ok(()),
                });
            if let Err(e) = after {
                if stop.is_cancelled() {
                    let ending = why_stopped
                        .lock()
                        .ok()
                        .and_then(|mut w| w.take())
                        .unwrap_or(Ending::Signal);
                    return me.finish(&ending);
                }
                let _ = me
                    .run
                    .write_status_once(&Status::Failed(format!("BENCHMARK: {e:#}")));
                return me.fail(&e);
            }
            if let Err(e) = me.run.write_status_once(&Status::Done) {
                return me.fail(&e.into());
            }
            me.finish(&Ending::RunOver)
        }
    }
}

/// Each generation worker's log and its length now.
fn gen_logs(me: &RoleRun) -> Vec<(std::path::PathBuf, u64)> {
    me.spec
        .roles
        .iter()
        .filter(|r| matches!(r, Role::Gen(_)))
        .map(|role| {
            // On Slurm a step's output is `slurm-<ROLE>.log`; a local run's `<ROLE>.log`.
            let slurm = me.run.log_file(&format!("slurm-{role}"));
            let path = if slurm.exists() {
                slurm
            } else {
                me.run.log_file(&role.to_string())
            };
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, len)
        })
        .collect()
}

/// The gen-only metric: the generation workers' per-iteration device step time over the run,
/// printed as upstream appends it and written into the run's record. None found is a failure,
/// as upstream's `check_test_failure` makes it.
fn step_times(me: &RoleRun, logs: &[(std::path::PathBuf, u64)]) -> anyhow::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut workers = Vec::new();
    for (path, from) in logs {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            let _ = f.seek(std::io::SeekFrom::Start(*from));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        workers.push(disagg_bench::steptime::scan(&text));
    }
    let Some(stats) = disagg_bench::steptime::stats(&workers) else {
        anyhow::bail!(
            "gen-only: no generation worker logged a usable iteration (`iter = N, ... \
             prev_device_step_time = X ms` with N ≥ 5) in {}; set worker_config.gen.print_iter_log: \
             true",
            logs.iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    print!("{}", disagg_bench::steptime::summary_lines(&stats));
    for (path, mut record) in disagg_bench::record::load_records(&me.run.results_dir())? {
        record.gen_step_time_ms = Some(stats);
        disagg_bench::record::write_atomic(&path, &serde_json::to_string_pretty(&record)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The accuracy step: every task's lm_eval against the router, then the record and the gate.
fn accuracy(
    me: &RoleRun,
    a: &disagg_config::Accuracy,
    router: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use crate::accuracy::{self as acc, AccuracyRecord, TaskRun};
    let results = me.run.results_dir();
    let model = std::env::var("DISAGG_MODEL_PATH")
        .ok()
        .or_else(|| me.spec.model_path.clone())
        .unwrap_or_else(|| me.model());
    let mut runs = Vec::new();
    for task in &a.tasks {
        let out = acc::output_dir(&results, task);
        let include = match (acc::include_path(task), acc::custom_config(task)) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(file)) => Some(custom_config_dir(me, file)?),
            (None, None) => None,
        };
        let argv = acc::command(task, &model, router, &out, include.as_deref());
        let log = me.run.log_file(&format!("accuracy_eval_{}", task.tasks));
        eprintln!(
            "BENCHMARK: accuracy: {} (log {})",
            argv.join(" "),
            log.display()
        );
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(a.env.iter().map(|(k, v)| (k, v)));
        let mut child = crate::supervise::spawn(&argv[0], cmd, &log)
            .with_context(|| format!("cannot start `{}`", argv[0]))?;
        let status = loop {
            if let Some(status) = child.poll() {
                break status;
            }
            if stop.is_cancelled() {
                crate::supervise::stop_all(
                    std::slice::from_mut(&mut child),
                    Duration::from_secs(10),
                );
                anyhow::bail!("the run ended while lm_eval ran");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut run = TaskRun {
            tasks: task.tasks.clone(),
            command: argv,
            exit_code: status.code(),
            results_file: None,
            scores: Vec::new(),
            error: None,
        };
        if !status.success() {
            run.error = Some(format!(
                "lm_eval {} (its log: {})",
                crate::supervise::describe(status),
                log.display()
            ));
        } else if let Some(file) = acc::find_results(&out) {
            run.results_file = Some(file.display().to_string());
            match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| acc::parse_results(&t))
            {
                Ok(scores) => run.scores = scores,
                Err(e) => run.error = Some(format!("{}: {e}", file.display())),
            }
        } else {
            run.error = Some(format!(
                "lm_eval wrote no results_*.json under {}",
                out.display()
            ));
        }
        runs.push(run);
    }
    let scores: Vec<acc::Score> = runs.iter().flat_map(|r| r.scores.clone()).collect();
    let record = AccuracyRecord {
        record_version: acc::ACCURACY_RECORD_VERSION,
        verdicts: acc::gate(&scores, &a.thresholds),
        runs,
    };
    let path = results.join("accuracy.json");
    disagg_bench::record::write_atomic(&path, &serde_json::to_string_pretty(&record)?)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    for s in &scores {
        eprintln!(
            "BENCHMARK: accuracy: {} {},{} = {:.4}",
            s.task, s.metric, s.filter, s.value
        );
    }
    let failures = record.failures();
    if !failures.is_empty() {
        anyhow::bail!("accuracy: {}", failures.join("; "));
    }
    Ok(())
}

/// Upstream's `custom_config`: the task YAML (relative to the TensorRT-LLM source tree) with
/// `LLM_MODELS_ROOT` replaced by the models root, written with its sibling `utils.py` to
/// `results/lm_eval_configs/`, which becomes `--include_path`.
fn custom_config_dir(me: &RoleRun, file: &str) -> anyhow::Result<String> {
    let source = match (file.starts_with('/'), me.spec.llm_root.as_deref()) {
        (true, _) => std::path::PathBuf::from(file),
        (false, Some(root)) => std::path::Path::new(root).join(file),
        (false, None) => anyhow::bail!(
            "accuracy custom_config `{file}` is relative to the TensorRT-LLM source tree, and this \
             run has none: give the cluster profile an llm_root (or set LLM_ROOT)"
        ),
    };
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let text = match me.spec.models_root.as_deref() {
        Some(root) => text.replace("LLM_MODELS_ROOT", root),
        None => text,
    };
    let dir = me.run.results_dir().join("lm_eval_configs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = source.file_name().unwrap_or_default();
    std::fs::write(dir.join(name), text)
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    if let Some(utils) = source
        .parent()
        .map(|p| p.join("utils.py"))
        .filter(|p| p.exists())
    {
        std::fs::copy(&utils, dir.join("utils.py"))
            .with_context(|| format!("cannot copy {}", utils.display()))?;
    }
    Ok(dir.display().to_string())
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
    let shape = Shape::of(&me.config);
    BenchPlan {
        loads: loads(&me.config, me.spec.workload.as_ref()),
        dataset: me.spec.dataset(),
        num_prompts: me.spec.overrides.num_prompts,
        multi_round: shape.multi_round as usize,
        isl: b.isl,
        osl: b.osl,
        range_ratio: b.range_ratio,
        ignore_eos: true,
        stream: b.streaming,
        warmup: shape.warmup,
        percentiles: vec![50.0, 90.0, 99.0],
        timeout: me.spec.timeouts.request_s,
        max_duration: me.spec.timeouts.run_s,
        out: Some(me.run.results_dir()),
        // The engines that report TensorRT-LLM's per-choice field: the simulator (from its
        // speculation) and TensorRT-LLM itself.
        require_decoded_per_iter: shape.speculative
            && matches!(me.spec.engine, EngineKind::Sim | EngineKind::Trtllm),
        telemetry: telemetry_targets(me),
        telemetry_dir: Some(me.run.root().join("telemetry")),
        ..BenchPlan::new(url, me.model())
    }
}

/// Every worker's and the router's Prometheus endpoint: `/prometheus/metrics` on TensorRT-LLM
/// (its `/metrics` is JSON iteration stats), `/metrics` elsewhere.
fn telemetry_targets(me: &RoleRun) -> Vec<disagg_bench::telemetry::Target> {
    let path = |role: Role| match (me.spec.engine, role) {
        (disagg_config::EngineKind::Trtllm, _) => "/prometheus/metrics",
        _ => "/metrics",
    };
    let trtllm_router = me
        .config
        .extensions()
        .router
        .as_ref()
        .and_then(|r| r.implementation)
        == Some("trtllm");
    me.run
        .roles()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.role != Role::Benchmark)
        .filter_map(|r| {
            let addr = r.address()?;
            let path = match r.role {
                Role::DisaggServer if trtllm_router => "/prometheus/metrics",
                Role::DisaggServer => "/metrics",
                role => path(role),
            };
            Some(disagg_bench::telemetry::Target {
                name: r.role.to_string(),
                url: format!("http://{addr}{path}"),
            })
        })
        .collect()
}

/// The runs: a trace's one replay, else the config's concurrencies (the first alone in the
/// gen-only modes).
fn loads(config: &disagg_config::TestConfig, workload: Option<&Workload>) -> Vec<Load> {
    match workload.and_then(|w| w.trace_speedup) {
        Some(speedup) => vec![Load::Trace { speedup }],
        None => Shape::of(config)
            .concurrency
            .iter()
            .map(|&c| Load::Concurrency(c as usize))
            .collect(),
    }
}

/// The labels of the runs the benchmark makes (`con8`, `trace1x`), as its records name them.
pub fn planned_runs(
    config: &disagg_config::TestConfig,
    workload: Option<&Workload>,
) -> Vec<String> {
    let plan = BenchPlan {
        loads: loads(config, workload),
        ..BenchPlan::new("", "")
    };
    plan.runs()
        .into_iter()
        .map(|l| plan.label_and_prompts(l).0)
        .collect()
}

/// What upstream's harness makes of the config's `benchmark` section for its clients
/// (`_parse_disagg_config_file` in `tests/integration/defs/perf/test_perf_sanity.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    /// The concurrencies run: all, or the first alone in the gen-only modes.
    concurrency: Vec<u32>,
    /// Prompts per concurrency = concurrency × this: `multi_round`, or 1 in the gen-only modes.
    multi_round: u32,
    /// Requests sent before each run and not measured: upstream's initial test prompt, sent in
    /// `e2e` only (`WARMUP_BENCHMARK_MODES`).
    warmup: usize,
    /// The context or the generation servers decode speculatively.
    speculative: bool,
}

impl Shape {
    fn of(config: &disagg_config::TestConfig) -> Shape {
        let b = config.benchmark();
        let gen_only = b.mode != Mode::E2e;
        let speculative = [config.ctx(), config.gen_()]
            .iter()
            .any(|w| w.speculative().is_some_and(|s| !s.decoding_type.is_empty()));
        Shape {
            concurrency: if gen_only {
                b.concurrency.iter().take(1).copied().collect()
            } else {
                b.concurrency.clone()
            },
            multi_round: if gen_only { 1 } else { b.multi_round.max(1) },
            warmup: usize::from(!gen_only),
            speculative,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use disagg_config::TestConfig;

    use super::*;

    fn config(mode: &str, extra_gen: &str) -> TestConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap()
        .replace("  mode: e2e\n", &format!("  mode: {mode}\n"))
        .replace(
            "    stream_interval: 1\n",
            &format!("    stream_interval: 1\n{extra_gen}"),
        );
        TestConfig::parse(Path::new("x.yaml"), &text).unwrap()
    }

    #[test]
    fn gen_only_runs_the_first_concurrency_once_without_a_warm_up() {
        // The example: concurrencies 1 4 16, multi_round 4.
        let e2e = Shape::of(&config("e2e", ""));
        assert_eq!(
            e2e,
            Shape {
                concurrency: vec![1, 4, 16],
                multi_round: 4,
                warmup: 1,
                speculative: false,
            }
        );
        for mode in ["gen_only", "gen_only_no_context"] {
            let g = Shape::of(&config(mode, ""));
            assert_eq!(
                g,
                Shape {
                    concurrency: vec![1],
                    multi_round: 1,
                    warmup: 0,
                    speculative: false,
                },
                "{mode}"
            );
        }
    }

    #[test]
    fn a_decoding_type_on_either_side_makes_the_run_speculative() {
        let mtp = "    speculative_config: {decoding_type: MTP, num_nextn_predict_layers: 1}\n";
        assert!(Shape::of(&config("e2e", mtp)).speculative);
        let none = "    speculative_config: {num_nextn_predict_layers: 1}\n";
        assert!(!Shape::of(&config("e2e", none)).speculative);
    }
}
