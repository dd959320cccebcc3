//! `disagg submit`, `status`, `cancel` and `ci`: a test as a Slurm job — render the batch
//! script, `sbatch` it, follow it to its end (state, the job's log, each role's state), collect
//! the results, exit with the test's verdict. Only the job id recorded in the run directory is
//! ever cancelled.

use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use disagg_results::junit;
use disagg_results::summary::Summary;
use disagg_runtime::now_ms;
use disagg_runtime::rundir::{RunDir, State, Status, write_atomic};
use serde::{Deserialize, Serialize};

use crate::cli::{CiArgs, Global, RunArgs, RunDirArgs, SubmitArgs};
use crate::run_cmd::{Prepared, at, collect, conclude, prepare, prepare_in, show_progress};
use crate::{InvalidInput, job};

/// `RUN/job.json`: which Slurm job runs this run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

    fn read(run: &Path) -> anyhow::Result<JobRecord> {
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
}

/// The Slurm commands, pointed at the cluster's `slurm.conf` when the profile names one.
#[derive(Debug, Clone)]
struct Slurm {
    conf: Option<String>,
}

/// A job's state as Slurm reports it.
#[derive(Debug, Clone, PartialEq)]
enum JobState {
    /// Waiting, and why.
    Pending(String),
    /// Running (or completing).
    Running,
    /// Ended: the Slurm state and the batch script's exit code.
    Ended { state: String, exit_code: i32 },
    /// Slurm no longer knows the job (purged) and there is no accounting.
    Unknown,
}

/// Pending reasons that no amount of waiting fixes.
const NEVER: &[&str] = &[
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "PartitionConfig",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "PartitionDown",
    "PartitionInactive",
];

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobState::Pending(reason) if reason.is_empty() || reason == "None" => {
                f.write_str("pending")
            }
            JobState::Pending(reason) => write!(f, "pending ({reason})"),
            JobState::Running => f.write_str("running"),
            JobState::Ended { state, exit_code } => {
                write!(f, "ended {state}, exit code {exit_code}")
            }
            JobState::Unknown => f.write_str("unknown to Slurm (purged, no accounting)"),
        }
    }
}

impl Slurm {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        if let Some(conf) = &self.conf {
            c.env("SLURM_CONF", conf);
        }
        c
    }

    fn sbatch(&self, script: &Path, cwd: &Path) -> anyhow::Result<u64> {
        let out = self
            .cmd("sbatch")
            .arg("--parsable")
            .arg(script)
            .current_dir(cwd)
            .output()
            .context("cannot run sbatch (is Slurm installed and on PATH?)")?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            bail!(
                "sbatch rejected the job: {}",
                if stderr.is_empty() {
                    "no message".to_string()
                } else {
                    stderr
                }
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or_default();
        id.parse()
            .with_context(|| format!("sbatch printed `{}`, not a job id", text.trim()))
    }

    fn state(&self, id: u64) -> JobState {
        let out = self
            .cmd("scontrol")
            .args(["show", "job", &id.to_string(), "-o"])
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |k: &str| {
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_default()
                    .to_string()
            };
            let state = field("JobState=");
            return match state.as_str() {
                "PENDING" => JobState::Pending(field("Reason=")),
                "RUNNING" | "COMPLETING" | "CONFIGURING" | "SUSPENDED" | "REQUEUED" => {
                    JobState::Running
                }
                "" => JobState::Unknown,
                _ => JobState::Ended {
                    exit_code: field("ExitCode=")
                        .split(':')
                        .next()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1),
                    state,
                },
            };
        }
        // Purged from slurmctld: accounting, when there is some.
        let out = self
            .cmd("sacct")
            .args([
                "-n",
                "-X",
                "-P",
                "-o",
                "State,ExitCode",
                "-j",
                &id.to_string(),
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let line = text.lines().next().unwrap_or_default();
                match line.split_once('|') {
                    Some((state, code)) => JobState::Ended {
                        state: state
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        exit_code: code
                            .split(':')
                            .next()
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(-1),
                    },
                    None => JobState::Unknown,
                }
            }
            _ => JobState::Unknown,
        }
    }

    fn cancel(&self, id: u64) -> anyhow::Result<()> {
        let out = self
            .cmd("scancel")
            .arg(id.to_string())
            .output()
            .context("cannot run scancel")?;
        if !out.status.success() {
            bail!(
                "scancel {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn job_name(&self, id: u64) -> Option<String> {
        let out = self
            .cmd("scontrol")
            .args(["show", "job", &id.to_string(), "-o"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("JobName="))
            .map(str::to_string)
    }
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

/// How a submitted run ended.
pub struct Finished {
    /// The summary written to `results/`.
    pub summary: Summary,
    /// `disagg submit`'s exit code.
    pub code: u8,
}

/// Render the job script of a prepared run into `RUN/job.sbatch`.
fn write_script(p: &Prepared, bin: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe().context("cannot locate the disagg binary")?,
    };
    let spec = job::job_spec(&p.config, p.cluster.as_ref(), &p.plan, p.run.root(), &bin);
    let script = disagg_launch::sbatch::render(&spec).with_context(|| {
        format!(
            "cannot render the job script of {}",
            p.config.path().display()
        )
    })?;
    let path = p.run.root().join("job.sbatch");
    write_atomic(&path, &script)?;
    Ok(path)
}

/// Submit a prepared run and follow it to its end; `store`: store and check the results (in
/// this database, or the default one).
fn submit_and_follow(
    p: &Prepared,
    bin: Option<&Path>,
    no_wait: bool,
    store: Option<Option<&Path>>,
) -> anyhow::Result<Option<Finished>> {
    let script = write_script(p, bin)?;
    let slurm = Slurm {
        conf: p.cluster.as_ref().and_then(|c| c.slurm_conf.clone()),
    };
    let t0 = Instant::now();
    let submitted = now_ms();
    let job_id = slurm.sbatch(&script, p.run.root()).map_err(|e| {
        let why = format!("{e:#}");
        let _ = p.run.write_status(&Status::Failed(why.clone()));
        e.context(format!(
            "{} needs {} node(s) of {} GPUs (run directory {})",
            p.config.name(),
            p.plan.total_nodes,
            p.plan.gpus_per_node,
            p.run.root().display()
        ))
    })?;
    let record = JobRecord {
        job_id,
        job_name: job::job_name(&p.config, p.run.root()),
        submitted_unix_ms: submitted,
        slurm_conf: slurm.conf.clone(),
    };
    write_atomic(
        &JobRecord::path(p.run.root()),
        &serde_json::to_string_pretty(&record)?,
    )?;
    eprintln!(
        "{} submitted job {job_id} ({}) for {}: {} nodes, run directory {}",
        at(t0),
        record.job_name,
        p.config.name(),
        p.plan.total_nodes,
        p.run.root().display()
    );
    if no_wait {
        println!("{job_id}");
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal = {
        let _g = runtime.enter();
        crate::listening::cancel_on_signal()
    };
    let mut log = LogFollower {
        path: p.run.log_file("job"),
        offset: 0,
        partial: String::new(),
    };
    let terminal = std::io::stderr().is_terminal();
    let mut seen = Vec::new();
    let mut last_label = String::new();
    let mut last_pending = String::new();
    let deadline = Duration::from_secs_f64(p.spec.timeouts.run_s + 120.0);
    let mut interrupted = false;
    let mut failure: Option<String> = None;
    let ended = loop {
        runtime.block_on(async {
            tokio::select! {
                _ = signal.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        });
        log.poll();
        let roles = p.run.roles().unwrap_or_default();
        show_progress(&roles, &mut seen, &mut last_label, terminal, t0);
        if signal.is_cancelled() && !interrupted {
            interrupted = true;
            eprintln!("{} interrupted: cancelling job {job_id}", at(t0));
            let _ = p
                .run
                .write_status(&Status::Failed("interrupted; the job was cancelled".into()));
            slurm.cancel(job_id)?;
        }
        match slurm.state(job_id) {
            JobState::Pending(reason) => {
                if NEVER.contains(&reason.as_str()) {
                    let _ = slurm.cancel(job_id);
                    failure = Some(format!(
                        "job {job_id} can never start ({reason}): it asks for {} node(s); cancelled",
                        p.plan.total_nodes
                    ));
                }
                if reason != last_pending {
                    eprintln!(
                        "{} job {job_id} {}",
                        at(t0),
                        JobState::Pending(reason.clone())
                    );
                    last_pending = reason;
                }
            }
            JobState::Running => {}
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
    if terminal {
        eprintln!();
    }
    let status = p.run.status();
    let verdict = match (&ended, &status) {
        (Some((state, 0)), Some(Status::Done)) if state == "COMPLETED" => None,
        (ended, status) => {
            let job = match ended {
                Some((state, code)) => format!("job {job_id} ended {state} with exit code {code}"),
                None => format!("job {job_id} is gone and Slurm keeps no record of it"),
            };
            let why = match status {
                Some(Status::Failed(why)) => why.clone(),
                Some(Status::Done) => "the benchmark finished but the job failed".to_string(),
                None => "no verdict was written (the job never started its roles?)".to_string(),
            };
            Some(format!("{job}: {why}"))
        }
    };
    let failure = failure.or(verdict).map(|why| {
        let tail = failing_role_tail(&p.run, &why);
        let message = if tail.is_empty() {
            why
        } else {
            format!("{why}\n{}", tail.trim_end())
        };
        (message, if interrupted { 130 } else { 1 })
    });
    let (summary, code) = conclude(
        p,
        &format!("{} (job {job_id})", p.config.name()),
        "sbatch",
        submitted,
        t0,
        failure,
        store,
    )?;
    Ok(Some(Finished { summary, code }))
}

/// The last lines of the log of the role a failure message names (or of the first failed role).
fn failing_role_tail(run: &RunDir, why: &str) -> String {
    let roles = run.roles().unwrap_or_default();
    let named = roles
        .iter()
        .map(|r| r.role.clone())
        .filter(|r| why.contains(r.as_str()))
        .max_by_key(|r| why.find(r.as_str()).map(|i| usize::MAX - i));
    let role = named.or_else(|| {
        roles
            .iter()
            .find(|r| r.state == State::Failed)
            .map(|r| r.role.clone())
    });
    let Some(role) = role else {
        return String::new();
    };
    let log = run.log_file(&format!("slurm-{role}"));
    let lines = disagg_runtime::supervise::tail(&log, 12);
    let mut s = format!("  last lines of {}:\n", log.display());
    for l in lines {
        s.push_str("    ");
        s.push_str(&l);
        s.push('\n');
    }
    s
}

pub fn submit(global: &Global, args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    check_cluster(&args.run)?;
    let p = prepare(global, &args.run, None)?;
    if args.dry_run {
        let script = write_script(&p, args.disagg_bin.as_deref())?;
        let text = std::fs::read_to_string(&script)?;
        print!("{text}");
        eprintln!(
            "dry run: run directory {} prepared, script {} not submitted",
            p.run.root().display(),
            script.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = (!args.run.no_store).then_some(args.run.db.as_deref());
    match submit_and_follow(&p, args.disagg_bin.as_deref(), args.no_wait, store)? {
        Some(f) => Ok(ExitCode::from(f.code)),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn check_cluster(args: &RunArgs) -> anyhow::Result<()> {
    if args.cluster.is_none() {
        return Err(InvalidInput(
            "submit needs --cluster NAME (a profile in the clusters file; scripts/local-slurm.sh up writes `local`)"
                .to_string(),
        )
        .into());
    }
    Ok(())
}

pub fn status(args: &RunDirArgs) -> anyhow::Result<ExitCode> {
    let record = JobRecord::read(&args.run)?;
    let slurm = Slurm {
        conf: record.slurm_conf.clone(),
    };
    let run = RunDir::open(&args.run);
    let mut out = std::io::stdout().lock();
    let state = slurm.state(record.job_id);
    writeln!(out, "job {} ({}): {state}", record.job_id, record.job_name)?;
    for r in run.roles().unwrap_or_default() {
        let age = now_ms().saturating_sub(r.heartbeat_ms) as f64 / 1000.0;
        writeln!(
            out,
            "  {:<14} {:<8} {:<22} heartbeat {age:.1} s ago{}",
            r.role,
            format!("{:?}", r.state).to_lowercase(),
            r.address().unwrap_or_default(),
            r.reason.map(|w| format!(" — {w}")).unwrap_or_default()
        )?;
        if let Some(pr) = r.progress {
            writeln!(
                out,
                "  {:<14} {} {}/{} requests (run {}/{})",
                "",
                pr.label,
                pr.done,
                pr.total,
                pr.runs_done + 1,
                pr.runs_total
            )?;
        }
    }
    match run.status() {
        Some(Status::Done) => writeln!(out, "verdict: Done")?,
        Some(Status::Failed(why)) => writeln!(out, "verdict: Failed: {why}")?,
        None => writeln!(out, "verdict: none yet")?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cancel(args: &RunDirArgs) -> anyhow::Result<ExitCode> {
    let record = JobRecord::read(&args.run)?;
    let slurm = Slurm {
        conf: record.slurm_conf.clone(),
    };
    // Never cancel a job that is not ours: the id must still carry the name we gave it.
    match slurm.job_name(record.job_id) {
        Some(name) if name == record.job_name => {
            slurm.cancel(record.job_id)?;
            let _ = RunDir::open(&args.run)
                .write_status_once(&Status::Failed("cancelled by `disagg cancel`".into()));
            eprintln!("cancelled job {} ({name})", record.job_id);
            Ok(ExitCode::SUCCESS)
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

/// The test ids of a test list: one per line, `#` comments and blank lines skipped, upstream
/// suffixes such as ` TIMEOUT (120)` dropped.
pub fn read_test_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the test list {}", path.display()))?;
    let tests: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    if tests.is_empty() {
        return Err(
            InvalidInput(format!("{}: the test list names no test", path.display())).into(),
        );
    }
    Ok(tests)
}

pub fn ci(global: &Global, args: &CiArgs) -> anyhow::Result<ExitCode> {
    let workspace = std::env::var_os("WORKSPACE").map(PathBuf::from);
    let junit_path = args.junit.clone().unwrap_or_else(|| {
        workspace
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("results.xml")
    });
    let runs_dir = args.runs_dir.clone().unwrap_or_else(|| {
        workspace
            .unwrap_or_else(|| PathBuf::from("."))
            .join("disagg-runs")
    });
    let tests = read_test_list(&args.test_list)?;
    let cluster = job::load_cluster(global.clusters.as_deref(), &args.cluster)?;
    let mut summaries = Vec::new();
    let mut code = 0u8;
    for test in &tests {
        eprintln!("== {test}");
        let config = job::load_config(test, &args.config_dir)?;
        let stamp = junit::iso8601(now_ms()).replace([':', '-'], "");
        let dir = runs_dir.join(format!("{}-{stamp}", config.name()));
        let p = prepare_in(
            config,
            &args.overrides,
            Some(cluster.clone()),
            Some(&args.cluster),
            &dir,
            None,
        )?;
        let store = (!args.no_store).then_some(args.db.as_deref());
        match submit_and_follow(&p, None, false, store) {
            Ok(Some(f)) => {
                if code == 0 {
                    code = f.code;
                }
                summaries.push(f.summary);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {test}: {e:#}");
                if code == 0 {
                    code = 1;
                }
                let why = format!("{e:#}");
                summaries.push(collect(&p, Some(&why), now_ms(), 0.0, None)?);
            }
        }
    }
    if let Some(dir) = junit_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&junit_path, &junit::render_many(&summaries))?;
    eprintln!(
        "JUnit: {} ({} tests, exit code {code})",
        junit_path.display(),
        summaries.len()
    );
    Ok(ExitCode::from(code))
}
