//! A test as a Slurm job (`disagg submit`, `status`, `cancel`): render the batch script,
//! `sbatch` it, follow it to its end (state, the job's log, each role's state), collect the
//! results, end with the test's verdict. Only the job id recorded in the run directory is ever
//! cancelled.

use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use disagg_config::{Cluster, ContainerRuntime, EngineKind, Mode, TestConfig};
use disagg_launch::sbatch::{ContainerSpec, JobSpec};
use disagg_launch::slurm::{JobState, Slurm};
use disagg_plan::Plan;
use serde::{Deserialize, Serialize};

use crate::conclude::{Concluded, Failure, StoreTo, conclude};
use crate::environment::{gen_only_queue_size, role_env, ucx_for};
use crate::events::{Events, at};
use crate::exit::ExitStatus;
use crate::now_ms;
use crate::prepare::Prepared;
use crate::rundir::{RunDir, State, Status, write_atomic};

/// `RUN/job.json`: which Slurm job runs this run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Slurm job id.
    pub job_id: u64,
    /// Its name (checked before any cancel).
    pub job_name: String,
    /// When `sbatch` was called, ms since the epoch.
    pub submitted_unix_ms: u64,
    /// `SLURM_CONF` used, if the cluster profile names one.
    pub slurm_conf: Option<String>,
}

impl JobRecord {
    fn path(run: &Path) -> PathBuf {
        run.join("job.json")
    }

    /// The record of the run in `run`.
    pub fn read(run: &Path) -> anyhow::Result<JobRecord> {
        let p = JobRecord::path(run);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{}: no job record; is {} a run made by `disagg submit`?",
                p.display(),
                run.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a job record", p.display()))
    }

    fn slurm(&self) -> Slurm {
        Slurm::new(self.slurm_conf.clone())
    }
}

/// A Slurm job name: the config name (only characters sbatch takes unquoted) and a short hash
/// of the run directory, so two runs of one config never share a name.
pub fn job_name(config: &TestConfig, run_dir: &Path) -> String {
    let cleaned: String = config
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = run_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("disagg-{cleaned}-{hash:08x}")
}

/// Everything the batch script of `config` needs, for workers running `engine`.
pub fn job_spec<'p>(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    engine: EngineKind,
    plan: &'p Plan,
    run_dir: &Path,
    disagg_bin: &Path,
) -> JobSpec<'p> {
    let slurm = config.slurm();
    let mut notes = Vec::new();
    // Upstream asks for a segment unless the config says `set_segment: false`; only clusters
    // with a block topology take the flag (older Slurm refuses it).
    let wants_segment = slurm.set_segment.unwrap_or(true);
    let segment = wants_segment && cluster.is_some_and(|c| c.segment);
    if slurm.set_segment == Some(true) && !segment {
        notes.push(match cluster {
            Some(c) => format!(
                "slurm.set_segment: no --segment, cluster `{}` does not declare `segment: true`",
                c.name
            ),
            None => "slurm.set_segment: no --segment without a cluster profile that declares `segment: true`".to_string(),
        });
    }
    let numa_bind = slurm.numa_bind && engine != EngineKind::Sim;
    if slurm.numa_bind && !numa_bind {
        notes.push(
            "slurm.numa_bind: not applied, the sim engine allocates no GPU or pinned memory"
                .to_string(),
        );
    }
    if config.benchmark().mode == Mode::GenOnly {
        let queue = gen_only_queue_size(config);
        let concurrency = config.benchmark().concurrency.first().copied().unwrap_or(1);
        if queue < concurrency {
            let g = config.gen_();
            notes.push(format!(
                "TLLM_BENCHMARK_REQ_QUEUES_SIZE capped to {queue} (max_batch_size {}, tp {}, attention DP {}), not the concurrency {concurrency}, as upstream",
                g.max_batch_size(),
                g.tp(),
                g.attention_dp()
            ));
        }
    }
    let container = cluster.and_then(|c| match (c.container.runtime, &c.container.image) {
        (ContainerRuntime::Pyxis, Some(image)) => Some(ContainerSpec {
            image: image.clone(),
            mounts: c.container.mounts.clone(),
            workdir: c.container.workdir.clone(),
        }),
        _ => None,
    });
    let stagger = if container.is_some() { 5 } else { 0 };
    JobSpec {
        test_name: config.name().to_string(),
        job_name: job_name(config, run_dir),
        run_dir: run_dir.display().to_string(),
        disagg_bin: disagg_bin.display().to_string(),
        plan,
        partition: cluster
            .and_then(|c| c.partition.clone())
            .or_else(|| slurm.partition.clone()),
        account: cluster
            .and_then(|c| c.account.clone())
            .or_else(|| slurm.account.clone()),
        time_limit: cluster
            .and_then(|c| c.time_limit.clone())
            .or_else(|| slurm.job_time.clone()),
        gres_gpus: cluster.is_some_and(|c| c.gres_gpus),
        sbatch_args: cluster.map(|c| c.sbatch_args.clone()).unwrap_or_default(),
        extra_args: slurm
            .extra_args
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        segment,
        ucx: ucx_for(cluster.and_then(|c| c.gpu_type.as_deref())),
        numa_bind,
        notes,
        container,
        mpi: cluster.and_then(|c| c.mpi.clone()),
        install: cluster.map(|c| c.install.clone()).unwrap_or_default(),
        env: role_env(config, cluster),
        step_stagger_s: stagger,
        teardown_grace_s: 30,
        settle_s: 5,
        generator: format!("disagg {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The batch script of `config` with `engine` workers, for a run in `run_dir` with this binary
/// (or `bin`).
pub fn render_script(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    engine: EngineKind,
    plan: &Plan,
    run_dir: &Path,
    bin: Option<&Path>,
) -> anyhow::Result<String> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe().context("cannot locate the disagg binary")?,
    };
    let spec = job_spec(config, cluster, engine, plan, run_dir, &bin);
    disagg_launch::sbatch::render(&spec).with_context(|| {
        format!(
            "cannot render the job script of {}",
            config.path().display()
        )
    })
}

/// Render the job script of a prepared run into `RUN/job.sbatch`.
pub fn write_script(p: &Prepared, bin: Option<&Path>) -> anyhow::Result<PathBuf> {
    let script = render_script(
        &p.config,
        p.cluster.as_ref(),
        p.spec.engine,
        &p.plan,
        p.run.root(),
        bin,
    )?;
    let path = p.run.root().join("job.sbatch");
    write_atomic(&path, &script)?;
    Ok(path)
}

/// Streams the new lines of the job's log to stderr.
struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogFollower {
    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            eprint!("  job| {line}");
        }
    }
}

/// Submit a prepared run and follow it to its end (`None` with `no_wait`: the job id is printed
/// and the run goes on without us).
pub fn submit_and_follow(
    p: &Prepared,
    bin: Option<&Path>,
    no_wait: bool,
    store: &StoreTo,
) -> anyhow::Result<Option<Concluded>> {
    let script = write_script(p, bin)?;
    let slurm = Slurm::new(p.cluster.as_ref().and_then(|c| c.slurm_conf.clone()));
    let t0 = Instant::now();
    let submitted = now_ms();
    let job_id = slurm.sbatch(&script, p.run.root()).map_err(|e| {
        let why = e.to_string();
        let _ = p.run.write_status(&Status::Failed(why));
        anyhow::Error::new(e).context(format!(
            "{} needs {} node(s) of {} GPUs (run directory {})",
            p.config.name(),
            p.plan.total_nodes,
            p.plan.gpus_per_node,
            p.run.root().display()
        ))
    })?;
    let record = JobRecord {
        job_id,
        job_name: job_name(&p.config, p.run.root()),
        submitted_unix_ms: submitted,
        slurm_conf: slurm.conf().map(str::to_string),
    };
    write_atomic(
        &JobRecord::path(p.run.root()),
        &serde_json::to_string_pretty(&record)?,
    )?;
    eprintln!(
        "{} submitted job {job_id} ({}) for {}: {} nodes, engine {}, prompts: {}, run directory {}",
        at(t0),
        record.job_name,
        p.config.name(),
        p.plan.total_nodes,
        p.spec.engine,
        p.spec
            .dataset()
            .describe()
            .unwrap_or_else(|| "random".to_string()),
        p.run.root().display()
    );
    if no_wait {
        println!("{job_id}");
        return Ok(None);
    }
    let Followed {
        ended,
        failure,
        interrupted,
        requeued,
    } = follow(p, &slurm, job_id, t0)?;
    let verdict = match (&ended, p.run.status()) {
        // COMPLETING: the script ended and Slurm waits for nodes that do not answer (`follow`).
        (Some((state, 0)), Some(Status::Done)) if state == "COMPLETED" || state == "COMPLETING" => {
            None
        }
        (ended, status) => {
            let job = match ended {
                Some((state, code)) => format!("job {job_id} ended {state} with exit code {code}"),
                None => format!("job {job_id} is gone and Slurm keeps no record of it"),
            };
            let why = match status {
                Some(Status::Failed(why)) => why,
                Some(Status::Done) => "the benchmark finished but the job failed".to_string(),
                None => "no verdict was written (the job never started its roles?)".to_string(),
            };
            Some(format!("{job}: {why}"))
        }
    };
    let failure = failure.or(verdict).map(|why| {
        let tail = failing_role_tail(&p.run, &p.spec.roles, &why);
        Failure {
            why: if tail.is_empty() {
                why
            } else {
                format!("{why}\n{}", tail.trim_end())
            },
            status: if interrupted {
                ExitStatus::Interrupted
            } else {
                ExitStatus::Failure
            },
        }
    });
    let infrastructure = infrastructure_failure(job_id, ended.as_ref(), requeued);
    let heading = format!("{} (job {job_id})", p.config.name());
    let mut done = conclude(p, &heading, "sbatch", submitted, t0, failure, store)?;
    done.infrastructure = infrastructure;
    Ok(Some(done))
}

/// Slurm states that say the cluster failed the job, not the test in it.
const INFRASTRUCTURE_STATES: &[&str] = &["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"];

/// Why job `job_id` failed because of the cluster, if it did: a node failed, the node never
/// booted, the job was preempted or requeued. Never a test's own failure (a role that died, a
/// benchmark that was invalid, a time limit the test ran past).
fn infrastructure_failure(
    job_id: u64,
    ended: Option<&(String, i32)>,
    requeued: bool,
) -> Option<String> {
    if requeued {
        return Some(format!("job {job_id} was requeued"));
    }
    let (state, _) = ended?;
    INFRASTRUCTURE_STATES
        .contains(&state.as_str())
        .then(|| format!("job {job_id} ended {state}"))
}

/// How following a job ended.
struct Followed {
    /// Slurm's end of it: `(state, exit code)`; `None` when Slurm forgot it.
    ended: Option<(String, i32)>,
    /// A failure we decided (cancelled as hopeless or past its limit).
    failure: Option<String>,
    /// We were interrupted (and cancelled the job).
    interrupted: bool,
    /// Slurm requeued the job after it started (and we cancelled it).
    requeued: bool,
}

/// Follow job `job_id` until Slurm says it ended.
fn follow(p: &Prepared, slurm: &Slurm, job_id: u64, t0: Instant) -> anyhow::Result<Followed> {
    let runtime = crate::serving::runtime(1)?;
    let signal = {
        let _g = runtime.enter();
        crate::serving::cancel_on_signal()
    };
    let mut log = LogFollower {
        path: p.run.log_file("job"),
        offset: 0,
        partial: String::new(),
    };
    let mut events = Events::new(t0, std::io::stderr().is_terminal());
    let mut last_pending = String::new();
    let deadline = Duration::from_secs_f64(p.spec.timeouts.run_s + 120.0);
    let mut interrupted = false;
    let mut failure: Option<String> = None;
    let mut started = false;
    let mut requeued = false;
    let mut polls: u64 = 0;
    let ended = loop {
        polls += 1;
        runtime.block_on(async {
            tokio::select! {
                _ = signal.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        });
        log.poll();
        events.show(&p.run.roles().unwrap_or_default());
        if signal.is_cancelled() && !interrupted {
            interrupted = true;
            eprintln!("{} interrupted: cancelling job {job_id}", at(t0));
            let _ = p
                .run
                .write_status(&Status::Failed("interrupted; the job was cancelled".into()));
            slurm.cancel(job_id)?;
        }
        match slurm.state(job_id) {
            JobState::Pending(_) if started => {
                // Back in the queue after it ran: Slurm requeued it (preemption, a node that
                // failed, `scontrol requeue`). Its rerun would start the roles again in this
                // run directory over the first attempt's files: end it instead, and say why.
                requeued = true;
                if failure.is_none() {
                    let why = format!(
                        "job {job_id} was requeued by Slurm after it had started (preempted, a \
                         node failed, or `scontrol requeue`); a run never restarts in its own \
                         directory, so the job was cancelled: submit it again"
                    );
                    let _ = p.run.write_status_once(&Status::Failed(why.clone()));
                    eprintln!("{} {why}", at(t0));
                    let _ = slurm.cancel(job_id);
                    failure = Some(why);
                }
            }
            state @ JobState::Pending(_) => {
                let JobState::Pending(reason) = &state else {
                    continue;
                };
                if state.never_starts() {
                    let _ = slurm.cancel(job_id);
                    failure = Some(format!(
                        "job {job_id} can never start ({reason}): it asks for {} node(s); cancelled",
                        p.plan.total_nodes
                    ));
                }
                if *reason != last_pending {
                    eprintln!("{} job {job_id} {state}", at(t0));
                    last_pending.clone_from(reason);
                }
            }
            JobState::Running => {
                started = true;
                // The run has its verdict but Slurm still holds the job: a job whose node daemon
                // died stays COMPLETING until the node answers again or SlurmdTimeout (minutes)
                // marks it DOWN, while everything of the run is done. Looked at once a second.
                if polls % 5 == 0 && p.run.status().is_some() {
                    if let Some(stuck) = slurm.stuck(job_id) {
                        eprintln!(
                            "{} job {job_id} ended (its script's exit code {}) but Slurm cannot \
                             finish it: node(s) {} do not respond (slurmd down?); Slurm waits \
                             for them until they answer or SlurmdTimeout marks them DOWN. The \
                             run ends here.",
                            at(t0),
                            stuck.exit_code,
                            stuck.nodes.join(", ")
                        );
                        break Some(("COMPLETING".to_string(), stuck.exit_code));
                    }
                }
            }
            JobState::Ended { state, exit_code } => break Some((state, exit_code)),
            JobState::Unknown => break None,
        }
        if t0.elapsed() > deadline && failure.is_none() {
            let _ = slurm.cancel(job_id);
            failure = Some(format!(
                "job {job_id} ran past the run's limit of {:.0} s; cancelled",
                p.spec.timeouts.run_s
            ));
        }
    };
    log.poll();
    events.end_line();
    Ok(Followed {
        ended,
        failure,
        interrupted,
        requeued,
    })
}

/// The last lines of a log, indented, under a heading naming it.
pub fn indented_tail(log: &Path) -> String {
    let lines = crate::supervise::tail(log, 12);
    if lines.is_empty() {
        return format!("  ({} is empty)\n", log.display());
    }
    let mut s = format!("  last lines of {}:\n", log.display());
    for l in lines {
        s.push_str("    ");
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// The last lines of the log of the role a failure message names (or of the first failed role).
fn failing_role_tail(run: &RunDir, all: &[disagg_plan::Role], why: &str) -> String {
    // The role the reason names first — from the run's roles, so a step that died before its
    // role ever started (a missing program in the task's prelude) is found too — else the one
    // that failed.
    let named = all
        .iter()
        .map(ToString::to_string)
        .filter_map(|r| why.find(r.as_str()).map(|i| (i, r)))
        .min()
        .map(|(_, r)| r);
    let role = named.or_else(|| {
        run.roles()
            .unwrap_or_default()
            .iter()
            .find(|r| r.state == State::Failed)
            .map(|r| r.role.to_string())
    });
    match role {
        Some(role) => indented_tail(&run.log_file(&format!("slurm-{role}"))),
        None => String::new(),
    }
}

/// `disagg status RUN`: the job's state, each role's state, the verdict.
pub fn status_report(run_dir: &Path) -> anyhow::Result<String> {
    let record = JobRecord::read(run_dir)?;
    let run = RunDir::open(run_dir);
    let state = record.slurm().state(record.job_id);
    let mut out = format!("job {} ({}): {state}\n", record.job_id, record.job_name);
    for r in run.roles().unwrap_or_default() {
        let age = now_ms().saturating_sub(r.heartbeat_ms) as f64 / 1000.0;
        out.push_str(&format!(
            "  {:<14} {:<8} {:<22} heartbeat {age:.1} s ago{}\n",
            r.role.to_string(),
            format!("{:?}", r.state).to_lowercase(),
            r.address().unwrap_or_default(),
            r.reason.map(|w| format!(" — {w}")).unwrap_or_default()
        ));
        if let Some(pr) = r.progress {
            out.push_str(&format!(
                "  {:<14} {} {}/{} requests (run {}/{})\n",
                "",
                pr.label,
                pr.done,
                pr.total,
                pr.runs_done + 1,
                pr.runs_total
            ));
        }
    }
    out.push_str(&match run.status() {
        Some(Status::Done) => "verdict: Done\n".to_string(),
        Some(Status::Failed(why)) => format!("verdict: Failed: {why}\n"),
        None => "verdict: none yet\n".to_string(),
    });
    Ok(out)
}

/// `disagg cancel RUN`: cancel the run's job — only if the id still carries our job name.
pub fn cancel(run_dir: &Path) -> anyhow::Result<()> {
    let record = JobRecord::read(run_dir)?;
    let slurm = record.slurm();
    match slurm.job_name(record.job_id) {
        Some(name) if name == record.job_name => {
            slurm.cancel(record.job_id)?;
            let _ = RunDir::open(run_dir)
                .write_status_once(&Status::Failed("cancelled by `disagg cancel`".into()));
            eprintln!("cancelled job {} ({name})", record.job_id);
            Ok(())
        }
        Some(name) => bail!(
            "job {} is now `{name}`, not this run's `{}`; not cancelling it",
            record.job_id,
            record.job_name
        ),
        None => bail!(
            "Slurm does not know job {} any more; nothing to cancel",
            record.job_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `disagg ci --retry-infra` retries: the cluster's failures, never the test's.
    #[test]
    fn only_the_clusters_failures_are_infrastructure() {
        let ended = |s: &str, code| Some((s.to_string(), code));
        for state in ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"] {
            assert_eq!(
                infrastructure_failure(7, ended(state, 1).as_ref(), false),
                Some(format!("job 7 ended {state}"))
            );
        }
        for state in [
            "FAILED",
            "TIMEOUT",
            "CANCELLED",
            "COMPLETED",
            "OUT_OF_MEMORY",
        ] {
            assert_eq!(
                infrastructure_failure(7, ended(state, 1).as_ref(), false),
                None,
                "{state}"
            );
        }
        assert_eq!(infrastructure_failure(7, None, false), None);
        assert_eq!(
            infrastructure_failure(7, ended("CANCELLED", 0).as_ref(), true),
            Some("job 7 was requeued".to_string())
        );
    }

    #[test]
    fn job_names_are_sbatch_safe_and_differ_per_run_directory() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap();
        let config = TestConfig::parse(Path::new("my test;$(x).yaml"), &text).unwrap();
        let a = job_name(&config, Path::new("/runs/a"));
        assert!(a.starts_with("disagg-my_test___x_-"), "{a}");
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_ne!(a, job_name(&config, Path::new("/runs/b")));
    }
}
