//! `disagg router -c server_config.yaml`: the disaggregated router alone.

use std::time::Duration;

use anyhow::Context as _;
use disagg_config::CoordinatorConfig;
use disagg_router::{PromptTokenizer, Router, RouterSettings};
use disagg_runtime::{ExitStatus, InvalidInput};

use crate::cli::RouterArgs;

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(InvalidInput(format!(
            "{name} must be a positive number of seconds, got {v}"
        ))
        .into())
    }
}

/// `--tokenizer sim|PATH`.
fn tokenizer(arg: Option<&str>) -> anyhow::Result<Option<PromptTokenizer>> {
    Ok(match arg {
        None => None,
        Some("sim") => Some(PromptTokenizer::Words),
        Some(path) => Some(
            disagg_bench::dataset::prompt_tokenizer(path.as_ref())
                .map_err(|e| InvalidInput(format!("--tokenizer: {e}")))?,
        ),
    })
}

pub fn run(args: &RouterArgs) -> anyhow::Result<ExitStatus> {
    let config = CoordinatorConfig::load(&args.config).inspect_err(|e| {
        if let Some(d) = e.diagnostics() {
            eprint!("{d}");
        }
    })?;
    if !config.warnings.0.is_empty() {
        eprint!("{}", config.warnings);
    }
    let settings = RouterSettings {
        context: config.context.urls.clone(),
        generation: config.generation.urls.clone(),
        context_policy: config.context.policy,
        generation_policy: config.generation.policy,
        max_retries: config.max_retries,
        request_timeout: seconds("--request-timeout", args.request_timeout)?,
        server_start_timeout: seconds("--server-start-timeout", args.server_start_timeout)?,
        health_check_interval: seconds("--health-check-interval", args.health_check_interval)?,
        gen_only: args.gen_only,
        handoff: args.handoff.parse().map_err(InvalidInput)?,
        bootstrap_ports: args.bootstrap_ports.clone(),
        // Upstream's coordinator signs with the key of its server_config.yaml.
        auth_key: config.auth_key.clone(),
        max_local_prefill_length: config.max_local_prefill_length,
        tokenizer: tokenizer(args.tokenizer.as_deref())?,
    };
    if let Err(e) = settings.check() {
        return Err(InvalidInput(format!("{}: {e}", args.config.display())).into());
    }
    let runtime = disagg_runtime::serving::runtime(args.threads.max(1))?;
    runtime.block_on(async {
        let host = args.host.clone().unwrap_or(config.hostname.clone());
        let port = args.port.unwrap_or(config.port);
        let bind = format!("{host}:{port}");
        let router = Router::bind(&bind, settings.clone())
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = router.local_addr();
        disagg_runtime::serving::announce(
            addr,
            args.report_addr.as_deref(),
            &format!(
                "disagg router: listening on http://{addr} ({} context, {} generation servers; /health is 503 until all are up)",
                settings.context.len(),
                settings.generation.len()
            ),
        )?;
        let cancel = disagg_runtime::serving::cancel_on_signal();
        router.run(cancel).await.context("the router stopped")?;
        Ok(ExitStatus::Success)
    })
}
