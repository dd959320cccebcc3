//! `disagg cancel RUN`: cancel a submitted run's job (only the job the run directory records).

use disagg_runtime::ExitStatus;

use crate::cli::RunDirArgs;

pub fn run(args: &RunDirArgs) -> anyhow::Result<ExitStatus> {
    disagg_runtime::job::cancel(&args.run)?;
    Ok(ExitStatus::Success)
}
