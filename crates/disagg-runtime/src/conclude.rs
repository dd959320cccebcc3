//! The end of a run, local or Slurm: collect the results (`summary.json`, `results.xml`), print
//! the table, store and check them, and apply the exit-status rule — the test's failure first,
//! then the check's.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use disagg_plan::Role;
use disagg_results::junit;
use disagg_results::summary::{Outcome, RunFacts, Summary};

use crate::events::at;
use crate::exit::ExitStatus;
use crate::prepare::Prepared;
use crate::rundir::write_atomic;

/// Where a run's results are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreTo {
    /// Not stored nor checked (`--no-store`).
    Off,
    /// `$DISAGG_DB`, else the config's `results.db`, else the default database.
    #[default]
    Default,
    /// This database (`--db`).
    At(PathBuf),
}

/// Why a run failed: the message (its first line is the verdict) and the exit status.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The message.
    pub why: String,
    /// The launcher's exit status for it.
    pub status: ExitStatus,
}

/// How a run ended.
pub struct Concluded {
    /// What `results/summary.json` says.
    pub summary: Summary,
    /// The launcher's exit status.
    pub status: ExitStatus,
    /// Why the run failed for a reason of the cluster, not of the test (a node failed, the job
    /// was requeued or preempted): what `disagg ci --retry-infra` retries.
    pub infrastructure: Option<String>,
}

/// Collect, print, store and check; `heading` titles the table, `since` names what the
/// first-request time counts from (`start`, `sbatch`).
pub fn conclude(
    p: &Prepared,
    heading: &str,
    since: &str,
    started_ms: u64,
    t0: Instant,
    failure: Option<Failure>,
    store: &StoreTo,
) -> anyhow::Result<Concluded> {
    let first_request_s = p
        .run
        .roles()
        .ok()
        .and_then(|rs| rs.into_iter().find(|r| r.role == Role::Benchmark))
        .and_then(|r| r.progress?.first_request_ms)
        .map(|ms| ms.saturating_sub(started_ms) as f64 / 1000.0);
    // A full disk is the cause whatever failed first: say so, with the path.
    let failure = failure.map(|mut f| {
        if let Some(full) = full_filesystem(p.run.root()) {
            f.why.push_str(&format!("\n  {full}"));
        }
        f
    });
    let verdict = failure
        .as_ref()
        .map(|f| f.why.lines().next().unwrap_or_default());
    let (summary, unwritten) = collect(
        p,
        verdict,
        started_ms,
        t0.elapsed().as_secs_f64(),
        first_request_s,
    )?;
    // Results that cannot be written are a failure of the run, reported after its own cause;
    // the records already written are still stored.
    let failure = match (failure, unwritten) {
        (f, None) => f,
        (Some(mut f), Some(e)) => {
            f.why
                .push_str(&format!("\n  and the summary was not written: {e}"));
            Some(f)
        }
        (None, Some(e)) => Some(Failure {
            why: format!(
                "the results could not be written: {e}{}",
                full_filesystem(p.run.root())
                    .map(|f| format!("\n  {f}"))
                    .unwrap_or_default()
            ),
            status: ExitStatus::Failure,
        }),
    };
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
    let regressed = *store != StoreTo::Off
        && crate::store::after_run(&p.run, &p.spec, store, &p.config, passed);
    // The report of what ran (a failed run's too); one that cannot be written is a warning.
    let report = crate::report::ReportRequest {
        run: p.run.root().to_path_buf(),
        store: store.clone(),
        ..Default::default()
    };
    match crate::report::write(&report) {
        Ok(path) => println!("report: {}", path.display()),
        Err(e) => eprintln!("warning: the report was not written: {e:#}"),
    }
    let status = match (failure, summary.outcome) {
        (Some(f), _) => {
            eprintln!("error: the run failed: {}", f.why);
            f.status
        }
        (None, Outcome::Passed) if regressed => {
            eprintln!(
                "error: the test passed but regressed against its baseline (see the check above)"
            );
            ExitStatus::Failure
        }
        (None, Outcome::Passed) => {
            eprintln!("{} passed", at(t0));
            ExitStatus::Success
        }
        (None, _) => {
            eprintln!(
                "error: {}",
                summary.reason.as_deref().unwrap_or("the run is invalid")
            );
            ExitStatus::Failure
        }
    };
    Ok(Concluded {
        summary,
        status,
        infrastructure: None,
    })
}

/// `the filesystem of DIR is full (N bytes free)` when it has less than 64 KiB left.
pub fn full_filesystem(dir: &std::path::Path) -> Option<String> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = st.blocks_available() * st.fragment_size();
    (free < 64 * 1024).then(|| {
        format!(
            "the filesystem of {} is full ({free} bytes free): free space or give another --out",
            dir.display()
        )
    })
}

/// Read the records, write `summary.json` and `results.xml`. The summary is returned also when
/// it could not be written (with that error), so a full disk still shows the table and stores
/// the records.
pub fn collect(
    p: &Prepared,
    failure: Option<&str>,
    started_ms: u64,
    duration_s: f64,
    first_request_s: Option<f64>,
) -> anyhow::Result<(Summary, Option<anyhow::Error>)> {
    let dir = p.run.results_dir();
    let records: Vec<_> = disagg_results::load_records(&dir)?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let planned = crate::roles::planned_runs(&p.config, p.spec.workload.as_ref());
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
    let written = write_atomic(
        &dir.join("summary.json"),
        &(serde_json::to_string_pretty(&summary)? + "\n"),
    )
    .and_then(|()| write_atomic(&dir.join("results.xml"), &junit::render(&summary)));
    Ok((summary, written.err().map(anyhow::Error::from)))
}
