//! `disagg submit FILE --cluster C`: the test as a Slurm job, followed to its end.

use disagg_runtime::{ExitStatus, InvalidInput};

use crate::cli::{Global, SubmitArgs};

pub fn run(global: &Global, args: &SubmitArgs) -> anyhow::Result<ExitStatus> {
    if args.run.cluster.is_none() {
        return Err(InvalidInput(
            "submit needs --cluster NAME (a profile in the clusters file; scripts/local-slurm.sh up writes `local`)"
                .to_string(),
        )
        .into());
    }
    let p = args.run.request(global)?.prepare(None)?;
    if args.dry_run {
        let script = disagg_runtime::job::write_script(&p, args.disagg_bin.as_deref())?;
        print!("{}", std::fs::read_to_string(&script)?);
        eprintln!(
            "dry run: run directory {} prepared, script {} not submitted",
            p.run.root().display(),
            script.display()
        );
        return Ok(ExitStatus::Success);
    }
    let done = disagg_runtime::job::submit_and_follow(
        &p,
        args.disagg_bin.as_deref(),
        args.no_wait,
        &args.run.store(),
    )?;
    Ok(done.map_or(ExitStatus::Success, |d| d.status))
}
