//! `disagg`: run disaggregated LLM-serving performance tests end to end.
//!
//! This binary is thin: it parses the command line ([`cli`]), maps each subcommand onto one
//! library call ([`commands`], one file each), and ends with the [`disagg_runtime::ExitStatus`] the call gives,
//! or the one [`error::report`] gives an error (exit statuses: [`disagg_runtime::exit`]).

use std::process::ExitCode;

use clap::Parser as _;

mod cli;
mod commands;
mod error;

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
    match commands::run(cli) {
        Ok(status) => status.into(),
        Err(err) => error::report(&err).into(),
    }
}
