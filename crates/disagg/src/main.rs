//! `disagg`: run disaggregated LLM-serving performance tests end to end.
//!
//! This binary is thin: it parses the command line ([`cli`]), maps each subcommand onto the
//! library crates, prints the whole error chain, and turns the outcome into an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command failed (the test failed, a run or an I/O step went wrong) |
//! | 2 | invalid input: a config, a cluster profile, a test id or a flag |

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

mod bench_cmd;
mod cli;
mod engine;
mod job;
mod listening;
mod plan_cmd;
mod probe;
mod report_cmd;
mod results_cmd;
mod role_cmd;
mod router_cmd;
mod run_cmd;
mod sim_cmd;
mod submit_cmd;
mod validate;

/// An error caused by what the user gave us; exits with code 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// A hint printed after the error chain.
#[derive(Debug)]
pub struct Hint(pub String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Logs go to stderr; RUST_LOG=debug shows more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err}");
            let mut hint = None;
            for cause in err.chain().skip(1) {
                if let Some(h) = cause.downcast_ref::<Hint>() {
                    hint = Some(h.0.clone());
                    continue;
                }
                let _ = writeln!(stderr, "caused by: {cause}");
            }
            if let Some(h) = hint {
                let _ = writeln!(stderr, "hint: {h}");
            }
            let invalid = err.downcast_ref::<InvalidInput>().is_some()
                || err.chain().any(|c| {
                    c.downcast_ref::<InvalidInput>().is_some()
                        || c.downcast_ref::<disagg_config::ConfigError>().is_some()
                        || c.downcast_ref::<disagg_plan::PlanError>().is_some()
                        || c.downcast_ref::<disagg_launch::sbatch::RenderError>()
                            .is_some()
                });
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Validate(args) => validate::run(&args),
        cli::Command::Plan(args) => plan_cmd::run(&cli.global, &args),
        cli::Command::Sim(args) => sim_cmd::run(&args),
        cli::Command::Router(args) => router_cmd::run(&args),
        cli::Command::Bench(args) => bench_cmd::run(&args),
        cli::Command::Run(args) => run_cmd::run(&cli.global, &args),
        cli::Command::Role(args) => role_cmd::run(&args),
        cli::Command::Check(args) => results_cmd::check(&args),
        cli::Command::Results(args) => results_cmd::results(&args),
        cli::Command::Report(args) => report_cmd::report(&args),
        cli::Command::Submit(args) => submit_cmd::submit(&cli.global, &args),
        cli::Command::Status(args) => submit_cmd::status(&args),
        cli::Command::Cancel(args) => submit_cmd::cancel(&args),
        cli::Command::Ci(args) => submit_cmd::ci(&cli.global, &args),
    }
}
