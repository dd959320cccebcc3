//! `disagg status RUN`: a submitted run's job, roles and verdict.

use std::io::Write as _;

use disagg_runtime::ExitStatus;

use crate::cli::RunDirArgs;

pub fn run(args: &RunDirArgs) -> anyhow::Result<ExitStatus> {
    let report = disagg_runtime::job::status_report(&args.run)?;
    std::io::stdout().lock().write_all(report.as_bytes())?;
    Ok(ExitStatus::Success)
}
