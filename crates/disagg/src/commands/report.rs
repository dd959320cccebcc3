//! `disagg report RUN [--compare RUN...] [--history] [--pdf]`.

use disagg_runtime::ExitStatus;
use disagg_runtime::report::{ReportRequest, pdf, write};

use crate::cli::ReportArgs;

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitStatus> {
    let html = write(&ReportRequest {
        run: args.run.clone(),
        compare: args.compare.clone(),
        history: args.history,
        out: args.out.clone(),
        store: args.store(),
    })?;
    println!("{}", html.display());
    if args.pdf {
        println!("{}", pdf(&html)?.display());
    }
    Ok(ExitStatus::Success)
}
