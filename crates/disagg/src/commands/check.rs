//! `disagg check RUN|--latest`: a run's gated metrics against their baselines.

use std::io::Write as _;

use disagg_results::check;
use disagg_runtime::store::CheckRequest;
use disagg_runtime::{ExitStatus, InvalidInput};

use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitStatus> {
    if args.run.is_none() && !args.latest {
        return Err(InvalidInput("give a run directory or --latest".to_string()).into());
    }
    let checked = disagg_runtime::store::check(&CheckRequest {
        run: args.run.clone(),
        db: args.db.clone(),
        pre_merge: args.pre_merge,
        baseline: args.baseline.clone(),
        metrics: args.metrics.clone(),
        thresholds: args.threshold.clone(),
    })?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", check::table(&checked.rows))?;
    // Why an invalid or regressed run went wrong, as the report says it.
    for d in &checked.diagnoses {
        write!(out, "{}", d.text())?;
    }
    writeln!(out, "written: {}", checked.written.display())?;
    if checked.regressed {
        let names: Vec<String> = checked
            .rows
            .iter()
            .filter(|r| r.verdict == "regression")
            .map(|r| format!("{} {}", r.run, r.metric))
            .collect();
        eprintln!("error: regression: {}", names.join(", "));
        return Ok(ExitStatus::Failure);
    }
    Ok(ExitStatus::Success)
}
