//! `disagg ci --test-list FILE --cluster C [--parallel N]`: the Jenkins entry point. Every test
//! of the list is loaded, checked and planned first (a bad test id or config stops everything
//! before a job is submitted), then each runs as an ordinary `disagg submit` child, at most N at
//! once ([`crate::queue`]; alone, its output is shown as it comes; in parallel, each writes
//! `<run dir>.log`). One JUnit file with a suite per test; the exit status is the first failing
//! test's in list order.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus as ProcessStatus};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use disagg_config::TestConfig;
use disagg_plan::Placement;
use disagg_results::junit;
use disagg_results::summary::{RunFacts, Summary};

use crate::conclude::StoreTo;
use crate::error::InvalidInput;
use crate::events::at;
use crate::exit::ExitStatus;
use crate::now_ms;
use crate::prepare::{RunOptions, default_run_dir, load_cluster, load_config};
use crate::queue::{Driver, Job, Running};
use crate::rundir::write_atomic;

/// The test ids of a test list: one per line, `#` comments and blank lines skipped, upstream
/// suffixes such as ` TIMEOUT (120)` dropped.
pub fn read_test_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the test list {}", path.display()))?;
    let tests = test_ids(&text);
    if tests.is_empty() {
        return Err(
            InvalidInput(format!("{}: the test list names no test", path.display())).into(),
        );
    }
    Ok(tests)
}

fn test_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

/// `disagg ci`: the tests of a list.
#[derive(Debug, Clone)]
pub struct CiRequest {
    /// The test list.
    pub test_list: PathBuf,
    /// Where test ids are looked up.
    pub config_dir: PathBuf,
    /// The clusters file (`--clusters`).
    pub clusters_file: Option<PathBuf>,
    /// The cluster profile.
    pub cluster: String,
    /// Where Jenkins expects the JUnit file.
    pub junit: PathBuf,
    /// Where the run directories go.
    pub runs_dir: PathBuf,
    /// How to run each test.
    pub options: RunOptions,
    /// Most tests (Slurm jobs) in flight.
    pub parallel: usize,
    /// How many times a test whose job failed for a reason of the cluster (a node failed, the
    /// job was requeued or preempted) is submitted again; a test's own failure never is.
    pub retry_infra: u32,
}

/// One test of the list, checked and planned.
struct Test {
    id: String,
    config: TestConfig,
    run_dir: PathBuf,
    /// How its `disagg submit` ended (`None`: it never ran).
    ended: Option<(ProcessStatus, bool)>,
    log: Option<PathBuf>,
    /// Submissions again after an infrastructure failure.
    retries: u32,
}

/// Every test of the list through `disagg submit`, at most `parallel` at once; one JUnit file
/// (one suite per test, in list order); the exit status is the first failing test's.
pub fn ci(request: &CiRequest, store: &StoreTo) -> anyhow::Result<ExitStatus> {
    let t0 = Instant::now();
    let ids = read_test_list(&request.test_list)?;
    let cluster = load_cluster(request.clusters_file.as_deref(), &request.cluster)?;
    let mut tests = Vec::new();
    for id in &ids {
        let config = load_config(id, &request.config_dir)?
            .with_overrides(&request.options.overrides)
            .with_context(|| format!("test {id}"))?;
        let engine = crate::prepare::engine_of(&config, request.options.engine);
        crate::prepare::make_plan(&config, Some(&cluster), Placement::Upstream, engine)?;
        let run_dir = unique(&default_run_dir(&request.runs_dir, &config), &tests);
        tests.push(Test {
            id: id.clone(),
            config,
            run_dir,
            ended: None,
            log: None,
            retries: 0,
        });
    }
    std::fs::create_dir_all(&request.runs_dir)
        .with_context(|| format!("cannot create {}", request.runs_dir.display()))?;
    let exe = std::env::current_exe().context("cannot locate the disagg binary")?;
    let parallel = request.parallel.max(1);
    // A test's `disagg submit`, into its run directory.
    let job = |i: usize, t: &mut Test| {
        let mut cmd = Command::new(&exe);
        if let Some(f) = &request.clusters_file {
            cmd.arg("--clusters").arg(f);
        }
        cmd.arg("submit")
            .arg(t.config.path())
            .args(["--cluster", &request.cluster])
            .arg("--out")
            .arg(&t.run_dir);
        match store {
            StoreTo::Off => {
                cmd.arg("--no-store");
            }
            StoreTo::At(db) => {
                cmd.arg("--db").arg(db);
            }
            StoreTo::Default => {}
        }
        cmd.args(request.options.args());
        // Alone, a test shows its progress as `disagg submit` does; in parallel each writes its
        // own log beside its run directory.
        t.log = (parallel > 1).then(|| t.run_dir.with_extension("log"));
        Job {
            tag: i,
            name: t.id.clone(),
            command: cmd,
            run_dir: t.run_dir.clone(),
            log: t.log.clone(),
        }
    };
    let jobs: Vec<Job> = tests
        .iter_mut()
        .enumerate()
        .map(|(i, t)| job(i, t))
        .collect();
    let interrupted = {
        let mut driver = CiDriver {
            tests: &mut tests,
            t0,
            retry_infra: request.retry_infra,
            job: &job,
        };
        crate::queue::run(jobs, parallel, &mut driver)?
    };
    let mut summaries = Vec::new();
    let mut status = ExitStatus::Success;
    for t in &tests {
        let code = match t.ended {
            Some((s, true)) if s.code().is_none() => ExitStatus::Interrupted,
            Some((s, _)) => s.code().map_or(ExitStatus::Failure, ExitStatus::from_code),
            None if interrupted => ExitStatus::Interrupted,
            None => ExitStatus::Failure,
        };
        if status == ExitStatus::Success {
            status = code;
        }
        summaries.push(summary_of(t));
    }
    let junit_path = &request.junit;
    if let Some(dir) = junit_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(junit_path, &junit::render_many(&summaries))?;
    eprintln!(
        "JUnit: {} ({} tests, exit code {})",
        junit_path.display(),
        summaries.len(),
        status.code()
    );
    Ok(status)
}

/// `dir`, or `dir-2`, `dir-3`, ... when an earlier test of the list (the same config twice, in
/// the same second) or an old run holds it.
fn unique(dir: &Path, earlier: &[Test]) -> PathBuf {
    let mut candidate = dir.to_path_buf();
    let mut n = 2;
    while candidate.exists() || earlier.iter().any(|t| t.run_dir == candidate) {
        candidate = PathBuf::from(format!("{}-{n}", dir.display()));
        n += 1;
    }
    candidate
}

/// The test's summary: what its run wrote, else a failure naming why it has none.
fn summary_of(t: &Test) -> Summary {
    if let Some(s) = std::fs::read_to_string(t.run_dir.join("results/summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Summary>(&text).ok())
    {
        return s;
    }
    let why = match (&t.ended, &t.log) {
        (None, _) => "not run: ci was interrupted first".to_string(),
        (Some((s, _)), Some(log)) => format!(
            "disagg submit {} and left no results; see {}",
            crate::supervise::describe(*s),
            log.display()
        ),
        (Some((s, _)), None) => format!(
            "disagg submit {} and left no results",
            crate::supervise::describe(*s)
        ),
    };
    let planned: Vec<String> = t
        .config
        .benchmark()
        .concurrency
        .iter()
        .map(|c| format!("con{c}"))
        .collect();
    let run_dir = t.run_dir.display().to_string();
    Summary::build(
        &RunFacts {
            config: t.config.name(),
            run_dir: &run_dir,
            planned: &planned,
            failure: Some(&why),
            started_unix_ms: now_ms(),
            duration_s: 0.0,
            first_request_s: None,
        },
        &[],
    )
}

struct CiDriver<'a> {
    tests: &'a mut [Test],
    t0: Instant,
    retry_infra: u32,
    job: &'a dyn Fn(usize, &mut Test) -> Job,
}

impl Driver for CiDriver<'_> {
    fn started(&mut self, job: &Job) {
        eprintln!(
            "{} == {} started{}",
            at(self.t0),
            job.name,
            job.log
                .as_ref()
                .map_or(String::new(), |l| format!(" (log {})", l.display()))
        );
    }

    fn ended(
        &mut self,
        job: Job,
        status: ProcessStatus,
        elapsed: Duration,
        interrupted: bool,
    ) -> Vec<Job> {
        let t = &mut self.tests[job.tag];
        t.ended = Some((status, interrupted));
        if !interrupted && !status.success() && t.retries < self.retry_infra {
            let why = crate::sweep::exec::failure_reason(&t.run_dir, t.log.as_deref(), status);
            if crate::sweep::exec::is_infrastructure(&why) {
                // A retry gets a run directory of its own: runs are never reused.
                t.retries += 1;
                let first = t.run_dir.file_name().unwrap_or_default().to_string_lossy();
                let first = first.split("-retry").next().unwrap_or_default().to_string();
                t.run_dir = t
                    .run_dir
                    .with_file_name(format!("{first}-retry{}", t.retries));
                t.ended = None;
                eprintln!(
                    "{} == {}: an infrastructure failure ({why}), not the test's: retrying ({} of {})",
                    at(self.t0),
                    job.name,
                    t.retries,
                    self.retry_infra
                );
                return vec![(self.job)(job.tag, t)];
            }
        }
        eprintln!(
            "{} == {} {} after {:.1} s",
            at(self.t0),
            job.name,
            match status.code() {
                Some(0) => "passed".to_string(),
                _ => crate::supervise::describe(status),
            },
            elapsed.as_secs_f64()
        );
        Vec::new()
    }

    fn tick(&mut self, _running: &[Running], _waiting: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lists_drop_comments_blanks_and_upstream_suffixes() {
        let text = "# nightly\n\nperf/test_perf_sanity.py::test_e2e[disagg_upload-a] TIMEOUT (120)\n  b.yaml # local\n";
        assert_eq!(
            test_ids(text),
            [
                "perf/test_perf_sanity.py::test_e2e[disagg_upload-a]",
                "b.yaml"
            ]
        );
    }
}
