//! `disagg run FILE`: the whole test on this machine.

use std::time::Duration;

use disagg_runtime::ExitStatus;

use crate::cli::{Global, RunArgs};

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<ExitStatus> {
    let request = args.request(global)?;
    let grace = Duration::from_secs_f64(args.grace);
    disagg_runtime::local::run(&request, grace, &args.store())
}
