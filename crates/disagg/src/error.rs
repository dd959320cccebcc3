//! How an error ends the program: `error:` and every `caused by:`, then `hint:` when one of the
//! causes has advice, and the exit status — 2 when the user's input is to blame, else 1.

use std::io::Write as _;

use disagg_runtime::{ExitStatus, Hint, InvalidInput};

/// Print `err` to stderr; its exit status.
pub fn report(err: &anyhow::Error) -> ExitStatus {
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
    let config_hint = err
        .chain()
        .find_map(|c| c.downcast_ref::<disagg_config::ConfigError>()?.hint());
    if let Some(h) = hint.as_deref().or(config_hint) {
        let _ = writeln!(stderr, "hint: {h}");
    }
    // A context layer is not in the chain as its own type; anyhow finds it by downcasting.
    if err.chain().any(is_invalid_input) || err.downcast_ref::<InvalidInput>().is_some() {
        ExitStatus::InvalidInput
    } else {
        ExitStatus::Failure
    }
}

/// Whether an error in a chain is the user's input: ours, or a library's input error.
fn is_invalid_input(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<InvalidInput>()
        || e.is::<disagg_config::ConfigError>()
        || e.is::<disagg_plan::PlanError>()
        || e.is::<disagg_plan::role::UnknownRole>()
        || e.is::<disagg_launch::sbatch::RenderError>()
        || e.is::<disagg_sim::SimError>()
        || e.downcast_ref::<disagg_bench::BenchError>()
            .is_some_and(disagg_bench::BenchError::is_invalid_input)
        || e.downcast_ref::<disagg_results::ResultsError>()
            .is_some_and(|r| matches!(r, disagg_results::ResultsError::Invalid(_)))
}
