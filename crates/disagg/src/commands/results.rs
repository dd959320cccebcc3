//! `disagg results list|show|export|mark-*|import|push`: the results store.

use std::io::Write as _;

use anyhow::Context as _;
use disagg_results::listing;
use disagg_runtime::rundir::RunDir;
use disagg_runtime::store::{open_store, push, stored_runs};
use disagg_runtime::{ExitStatus, InvalidInput};

use crate::cli::{ResultsArgs, ResultsCommand};

pub fn run(args: &ResultsArgs) -> anyhow::Result<ExitStatus> {
    let mut store = open_store(args.db.as_deref())?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        ResultsCommand::List { config, limit } => {
            write!(
                out,
                "{}",
                listing::table(&store.list(config.as_deref(), *limit)?)
            )?;
        }
        ResultsCommand::Show { id } => {
            serde_json::to_writer_pretty(&mut out, &store.get(*id)?)?;
            writeln!(out)?;
        }
        ResultsCommand::Export {
            format,
            config,
            limit,
        } => {
            let runs = store.list(config.as_deref(), *limit)?;
            if format == "json" {
                serde_json::to_writer_pretty(&mut out, &runs)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", listing::csv(&runs))?;
            }
        }
        ResultsCommand::MarkInvalid { id, note } => {
            store.mark(*id, "invalid", note.as_deref())?;
            writeln!(
                out,
                "run {id} marked invalid: it no longer counts toward any baseline"
            )?;
        }
        ResultsCommand::MarkValid { id } => {
            store.mark(*id, "valid", None)?;
            writeln!(out, "run {id} marked valid")?;
        }
        ResultsCommand::MarkBaseline { id } => {
            store.mark(*id, "baseline", None)?;
            writeln!(out, "run {id} is now the baseline of its case")?;
        }
        ResultsCommand::Import { run } => {
            let dir = std::fs::canonicalize(run)
                .with_context(|| format!("no run directory {}", run.display()))?;
            let (stored, _) = stored_runs(&mut store, &RunDir::open(&dir))?;
            writeln!(
                out,
                "stored {} record(s) of {}",
                stored.len(),
                dir.display()
            )?;
        }
        ResultsCommand::Push => match push(&store)? {
            None => {
                return Err(InvalidInput(
                    "no OpenSearch configured: set DISAGG_OPENSEARCH_URL (and DISAGG_OPENSEARCH_USER/PASSWORD)"
                        .to_string(),
                )
                .into());
            }
            Some((n, None)) => writeln!(out, "pushed {n} record(s)")?,
            Some((n, Some(e))) => {
                eprintln!("error: pushing {n} record(s) failed: {e}; they stay unsent");
                return Ok(ExitStatus::Failure);
            }
        },
    }
    Ok(ExitStatus::Success)
}
