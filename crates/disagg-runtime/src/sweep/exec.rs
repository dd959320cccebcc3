//! Running a sweep's points through the [`crate::queue`]: each point an ordinary `disagg run`
//! (local) or `disagg submit` (Slurm) child tagged with the sweep id and the point's key, one
//! live table of what is in flight, retries of infrastructure failures, SLA probes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use disagg_config::Sla;
use disagg_results::store::Store;
use disagg_results::sweep::{PointRun, next_probe};

use super::points::{Point, State};
use crate::events::at;
use crate::prepare::RunOptions;
use crate::queue::{Driver, Job, Running};
use crate::rundir::{RunDir, State as RoleStateKind};

/// How every point's run is started.
pub(crate) struct Launch {
    /// This binary.
    pub exe: PathBuf,
    /// `--clusters`.
    pub clusters_file: Option<PathBuf>,
    /// `--cluster` (`None`: local runs).
    pub cluster: Option<String>,
    /// The store every run writes to (`--db`).
    pub db: PathBuf,
    /// The run flags.
    pub options: RunOptions,
    /// The sweep's directory.
    pub dir: PathBuf,
    /// The sweep id (`DISAGG_SWEEP_ID`).
    pub sweep_id: String,
}

impl Launch {
    /// The job of a run of `point` (`concurrency`: an SLA probe's one concurrency).
    pub fn job(&self, tag: usize, point: &Point, concurrency: Option<u32>) -> Job {
        let mut options = self.options.clone();
        if let Some(c) = concurrency {
            options.overrides.concurrency = Some(vec![c]);
        }
        let run_dir = unique_dir(&self.dir.join("runs"), &point.name);
        let mut cmd = Command::new(&self.exe);
        if let Some(f) = &self.clusters_file {
            cmd.arg("--clusters").arg(f);
        }
        match &self.cluster {
            Some(c) => cmd.arg("submit").arg(&point.file).args(["--cluster", c]),
            None => cmd.arg("run").arg(&point.file),
        };
        cmd.arg("--out")
            .arg(&run_dir)
            .arg("--db")
            .arg(&self.db)
            .args(options.args())
            .env("DISAGG_SWEEP_ID", &self.sweep_id)
            .env("DISAGG_SWEEP_POINT", &point.key);
        Job {
            tag,
            name: point.name.clone(),
            command: cmd,
            run_dir,
            log: Some(self.dir.join("logs").join(format!("{}.log", point.name))),
        }
    }
}

/// `root/<name>-<UTC time>`, with `-2`, `-3`, ... when taken (runs are never reused).
pub(crate) fn unique_dir(root: &Path, name: &str) -> PathBuf {
    let stamp = disagg_results::junit::iso8601(crate::now_ms()).replace([':', '-'], "");
    let first = root.join(format!("{name}-{stamp}"));
    let mut dir = first.clone();
    let mut n = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{n}", first.display()));
        n += 1;
    }
    dir
}

/// Whether a failure is the infrastructure's (retried with `--retry-failed`) rather than the
/// test's: a node that failed, a job that never started (Slurm says it never will, it lost it,
/// or its roles never came up), a submission Slurm refused. Everything else — a role that failed, an invalid benchmark — is the test's.
pub(crate) fn is_infrastructure(reason: &str) -> bool {
    [
        "NODE_FAIL",
        "BOOT_FAIL",
        "PREEMPTED",
        "never started its roles",
        "Slurm keeps no record",
        "Batch job submission failed",
        "can never start",
        "was requeued by Slurm",
    ]
    .iter()
    .any(|needle| reason.contains(needle))
}

/// Why a run ended unsuccessfully, from its run directory (`summary.json`, else the verdict
/// file), else the last line of its log.
pub(crate) fn failure_reason(run_dir: &Path, log: Option<&Path>, status: ExitStatus) -> String {
    let summary = std::fs::read_to_string(run_dir.join("results/summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<disagg_results::Summary>(&t).ok())
        .and_then(|s| s.reason);
    let verdict = match RunDir::open(run_dir).status() {
        Some(crate::rundir::Status::Failed(why)) => Some(why),
        _ => None,
    };
    let last = log
        .map(|l| crate::supervise::tail(l, 1))
        .and_then(|t| t.into_iter().next());
    summary
        .or(verdict)
        .or(last)
        .unwrap_or_else(|| format!("the run {}", crate::supervise::describe(status)))
}

/// The sweep's side of the queue.
pub(crate) struct SweepDriver<'a> {
    pub points: &'a mut [Point],
    pub launch: &'a Launch,
    pub store: &'a Store,
    pub sla: Option<&'a Sla>,
    pub sla_search: bool,
    pub t0: Instant,
    pub terminal: bool,
    /// Why and what each job in flight measures, by run directory.
    pub inflight: BTreeMap<PathBuf, (&'static str, Vec<u32>)>,
    /// Lines of the live table on screen.
    pub shown: usize,
    /// Runs this invocation made.
    pub runs_made: usize,
}

impl SweepDriver<'_> {
    /// Record what a job is for before it is queued.
    pub fn queue(&mut self, job: &Job, purpose: &'static str, concurrency: Vec<u32>) {
        self.inflight
            .insert(job.run_dir.clone(), (purpose, concurrency));
    }

    fn erase_table(&mut self) {
        if self.terminal && self.shown > 0 {
            eprint!("\x1b[{}F\x1b[J", self.shown);
            self.shown = 0;
        }
    }

    fn event(&mut self, line: &str) {
        self.erase_table();
        eprintln!("{} {line}", at(self.t0));
    }

    /// The next SLA probe of point `i`, if the search goes on.
    fn probe(&mut self, i: usize) -> Option<Job> {
        if !self.sla_search || self.sla.is_none() {
            return None;
        }
        let p = &self.points[i];
        let known = p.sla_known();
        let c = next_probe(&known).filter(|c| !known.contains_key(c))?;
        if p.probes_left == 0 {
            return None;
        }
        self.points[i].probes_left -= 1;
        let job = self.launch.job(i, &self.points[i], Some(c));
        self.queue(&job, "sla-search", vec![c]);
        Some(job)
    }

    /// The first job of every point that is to run (and the SLA probes of those stored).
    pub fn first_jobs(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for i in 0..self.points.len() {
            match self.points[i].state {
                State::Pending => {
                    let job = self.launch.job(i, &self.points[i], None);
                    let planned = self.points[i].planned();
                    self.queue(&job, "run", planned);
                    jobs.push(job);
                }
                State::Passed => jobs.extend(self.probe(i)),
                _ => {}
            }
        }
        jobs
    }
}

impl Driver for SweepDriver<'_> {
    fn started(&mut self, job: &Job) {
        self.runs_made += 1;
        let p = &mut self.points[job.tag];
        if p.state == State::Pending {
            p.state = State::Running;
        }
        let (purpose, conc) = self
            .inflight
            .get(&job.run_dir)
            .cloned()
            .unwrap_or(("run", Vec::new()));
        let what = match purpose {
            "run" => String::new(),
            other => format!(" ({other}, concurrency {conc:?})"),
        };
        self.event(&format!(
            "{} started{what}: {}",
            job.name,
            job.run_dir.display()
        ));
    }

    fn ended(
        &mut self,
        job: Job,
        status: ExitStatus,
        elapsed: Duration,
        interrupted: bool,
    ) -> Vec<Job> {
        let i = job.tag;
        let (purpose, concurrency) = self
            .inflight
            .remove(&job.run_dir)
            .unwrap_or(("run", Vec::new()));
        let code = status.code();
        let job_id = crate::job::JobRecord::read(&job.run_dir)
            .ok()
            .map(|r| r.job_id);
        let summary = std::fs::read_to_string(job.run_dir.join("results/summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<disagg_results::Summary>(&t).ok());
        let test_passed = summary.is_some_and(|s| s.outcome == disagg_results::Outcome::Passed);
        let (outcome, reason) = if interrupted || code == Some(130) {
            ("interrupted", Some("interrupted by a signal".to_string()))
        } else if code == Some(0) {
            ("passed", None)
        } else if test_passed {
            // A sweep explores: the regression gate of the run (against earlier runs of the
            // same case) does not fail the point; its records are valid.
            (
                "passed",
                Some("the run's check found a regression against its baseline".to_string()),
            )
        } else {
            let why = failure_reason(&job.run_dir, job.log.as_deref(), status);
            let kind = if is_infrastructure(&why) {
                "infrastructure"
            } else {
                "failed"
            };
            (kind, Some(why))
        };
        self.points[i].runs.push(PointRun {
            run_dir: job.run_dir.display().to_string(),
            concurrency: concurrency.clone(),
            purpose: purpose.to_string(),
            job_id,
            elapsed_s: elapsed.as_secs_f64(),
            outcome: outcome.to_string(),
            reason: reason.clone(),
        });
        // Whatever the outcome, what it stored counts (a failed run's records are invalid).
        if let Err(e) = self.points[i].refresh(self.store, self.sla) {
            eprintln!("warning: cannot read {}'s results back: {e:#}", job.name);
        }
        let why = reason.clone().unwrap_or_default();
        let mut next = Vec::new();
        match (outcome, purpose) {
            ("passed", _) => {
                let p = &mut self.points[i];
                if purpose == "run" || p.state != State::Passed {
                    p.state = if p.covered() {
                        State::Passed
                    } else {
                        State::Failed
                    };
                    if p.state == State::Failed {
                        p.reason = Some(
                            "the run passed but left no valid record of every concurrency".into(),
                        );
                    }
                }
                self.event(&format!(
                    "{} passed ({:.1} s)",
                    job.name,
                    elapsed.as_secs_f64()
                ));
                if self.points[i].state == State::Passed {
                    next.extend(self.probe(i));
                }
            }
            ("interrupted", _) => {
                let p = &mut self.points[i];
                if p.state != State::Passed {
                    p.state = State::Interrupted;
                    p.reason = reason;
                }
                self.event(&format!("{} interrupted", job.name));
            }
            ("infrastructure", _) if self.points[i].retries_left > 0 => {
                self.points[i].retries_left -= 1;
                self.event(&format!(
                    "{} failed on the infrastructure ({why}); retrying ({} retries left)",
                    job.name, self.points[i].retries_left
                ));
                let retry = self.launch.job(
                    i,
                    &self.points[i],
                    (purpose == "sla-search")
                        .then(|| concurrency.first().copied())
                        .flatten(),
                );
                self.queue(
                    &retry,
                    if purpose == "run" { "retry" } else { purpose },
                    concurrency,
                );
                next.push(retry);
            }
            (_, "sla-search") => {
                // A probe that failed as a test misses the SLA at its concurrency.
                self.points[i]
                    .failed_probes
                    .extend(concurrency.iter().copied());
                self.event(&format!(
                    "{} SLA probe {concurrency:?} failed: {why}",
                    job.name
                ));
                next.extend(self.probe(i));
            }
            _ => {
                let p = &mut self.points[i];
                p.state = State::Failed;
                p.reason = reason;
                self.event(&format!("{} FAILED: {why}", job.name));
            }
        }
        next
    }

    fn tick(&mut self, running: &[Running], waiting: usize) {
        if !self.terminal {
            return;
        }
        self.erase_table();
        let runnable: Vec<usize> = (0..self.points.len())
            .filter(|&i| !matches!(self.points[i].state, State::Invalid | State::Skipped))
            .collect();
        let done = runnable
            .iter()
            .filter(|&&i| {
                matches!(
                    self.points[i].state,
                    State::Passed | State::Failed | State::Interrupted
                )
            })
            .count();
        // Every point while the table fits a screen, else only those in flight.
        let shown: Vec<usize> = if runnable.len() <= TABLE_ROWS {
            runnable.clone()
        } else {
            running.iter().map(|r| r.job.tag).collect()
        };
        let mut lines = vec![format!(
            "{:<44} {:<22} {:>9} {:>9}  {}",
            "point", "state", "job", "elapsed", "verdict"
        )];
        for i in shown {
            let p = &self.points[i];
            let live = running.iter().find(|r| r.job.tag == i);
            let last = p.runs.last();
            let (state, job, elapsed) = match live {
                Some(r) => {
                    let (state, job) = live_state(&r.job.run_dir);
                    (state, job, Some(r.started.elapsed().as_secs_f64()))
                }
                None => (
                    match p.state {
                        State::Pending => "waiting".to_string(),
                        _ => "ended".to_string(),
                    },
                    last.and_then(|r| r.job_id),
                    last.map(|r| r.elapsed_s),
                ),
            };
            let verdict = match (live, p.state) {
                (Some(_), _) | (None, State::Pending | State::Running) => "-".to_string(),
                (None, State::Passed) => "passed".to_string(),
                (None, _) => format!(
                    "{} {}",
                    p.state.as_str(),
                    p.reason.as_deref().unwrap_or_default()
                ),
            };
            lines.push(format!(
                "{:<44} {:<22} {:>9} {:>9}  {}",
                truncate(&p.name, 44),
                truncate(&state, 22),
                job.map_or("-".to_string(), |j| j.to_string()),
                elapsed.map_or("-".to_string(), |e| format!("{e:.0}s")),
                truncate(&verdict, 60)
            ));
        }
        lines.push(format!(
            "{done}/{} points done, {} in flight, {waiting} waiting",
            runnable.len(),
            running.len()
        ));
        for l in &lines {
            eprintln!("{l}");
        }
        self.shown = lines.len();
    }
}

/// Most points the live table lists one per line; a longer sweep shows those in flight only.
const TABLE_ROWS: usize = 24;

/// `s` in at most `n` characters: its end, which tells points apart (their names share the
/// base's prefix).
fn truncate(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(count - (n - 1)).collect();
        format!("…{tail}")
    }
}

/// A run in flight as its directory shows it: `starting`, `queued` (a job without roles yet),
/// `running`, `BENCHMARK con4 3/16`; and its Slurm job id.
fn live_state(run_dir: &Path) -> (String, Option<u64>) {
    let job = crate::job::JobRecord::read(run_dir).ok().map(|r| r.job_id);
    let roles = RunDir::open(run_dir).roles().unwrap_or_default();
    let progress = roles
        .iter()
        .find_map(|r| r.progress.as_ref().filter(|p| !p.label.is_empty()));
    let state = match (progress, roles.is_empty(), job) {
        (Some(p), _, _) => format!("bench {} {}/{}", p.label, p.done, p.total),
        (None, true, Some(_)) => "queued".to_string(),
        (None, true, None) => "starting".to_string(),
        (None, false, _) if roles.iter().all(|r| r.state == RoleStateKind::Ready) => {
            "running".to_string()
        }
        (None, false, _) => "roles starting".to_string(),
    };
    (state, job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infrastructure_failures_are_told_from_test_failures() {
        for infra in [
            "job 12 ended NODE_FAIL with exit code 1: no verdict was written (the job never started its roles?)",
            "job 9 is gone and Slurm keeps no record of it: no verdict",
            "sbatch: error: Batch job submission failed: Socket timed out",
            "job 7 can never start (PartitionConfig): it asks for 9 node(s); cancelled",
        ] {
            assert!(is_infrastructure(infra), "{infra}");
        }
        for test in [
            "GEN_0 (pid 12) exited with status 1: engine failed",
            "con4: 3 failed requests",
            "job 12 ended FAILED with exit code 1: BENCHMARK failed",
        ] {
            assert!(!is_infrastructure(test), "{test}");
        }
    }

    #[test]
    fn run_directories_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = unique_dir(dir.path(), "p");
        std::fs::create_dir_all(&a).unwrap();
        let b = unique_dir(dir.path(), "p");
        assert_ne!(a, b);
        assert!(!b.exists());
    }
}
