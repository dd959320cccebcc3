//! `disagg role ROLE --run-dir DIR`: one role of a run.

use disagg_runtime::ExitStatus;

use crate::cli::RoleArgs;

pub fn run(args: &RoleArgs) -> anyhow::Result<ExitStatus> {
    let env = |k: &str| std::env::var(k).ok();
    let role = disagg_runtime::roles::role_of(args.role.as_deref(), &env)?;
    disagg_runtime::roles::run(role, &args.run_dir, args.host.as_deref(), args.parent_pid)
}
