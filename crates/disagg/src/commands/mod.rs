//! One module per subcommand: each maps its arguments onto one library call and returns the
//! call's [`ExitStatus`]. No command module uses another.

use disagg_runtime::ExitStatus;

use crate::cli::{Cli, Command};

mod bench;
mod cancel;
mod check;
mod ci;
mod plan;
mod report;
mod results;
mod role;
mod router;
mod run;
mod sim;
mod status;
mod submit;
mod sweep;
mod validate;

/// Run the command of `cli`.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&cli.global, &args),
        Command::Sim(args) => sim::run(&args),
        Command::Router(args) => router::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Run(args) => run::run(&cli.global, &args),
        Command::Role(args) => role::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Results(args) => results::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Submit(args) => submit::run(&cli.global, &args),
        Command::Status(args) => status::run(&args),
        Command::Cancel(args) => cancel::run(&args),
        Command::Ci(args) => ci::run(&cli.global, &args),
        Command::Sweep(args) => sweep::run(&cli.global, &args),
    }
}
