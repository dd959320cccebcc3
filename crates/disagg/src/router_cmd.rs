//! `disagg router`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use disagg_config::{CoordinatorConfig, RouterPolicy};
use disagg_router::{Policy, Router, RouterSettings};

use crate::InvalidInput;
use crate::cli::RouterArgs;

pub fn policy(p: RouterPolicy, pool: &str) -> Policy {
    match p {
        RouterPolicy::RoundRobin => Policy::RoundRobin,
        RouterPolicy::LoadBalancing { use_tokens } => Policy::LoadBalancing { use_tokens },
        RouterPolicy::KvCacheAware => {
            eprintln!(
                "warning: {pool}.router.type kv_cache_aware is not implemented yet; using load_balancing"
            );
            Policy::LoadBalancing { use_tokens: false }
        }
    }
}

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

pub fn run(args: &RouterArgs) -> anyhow::Result<ExitCode> {
    let config = match CoordinatorConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            if let Some(d) = e.diagnostics() {
                eprint!("{d}");
            }
            return Err(e.into());
        }
    };
    if !config.warnings.0.is_empty() {
        eprint!("{}", config.warnings);
    }
    let settings = RouterSettings {
        context: config.context.urls.clone(),
        generation: config.generation.urls.clone(),
        context_policy: policy(config.context.policy, "context_servers"),
        generation_policy: policy(config.generation.policy, "generation_servers"),
        max_retries: config.max_retries,
        request_timeout: seconds("--request-timeout", args.request_timeout)?,
        server_start_timeout: seconds("--server-start-timeout", args.server_start_timeout)?,
        health_check_interval: seconds("--health-check-interval", args.health_check_interval)?,
        gen_only: args.gen_only,
    };
    if settings.context.is_empty() && !settings.gen_only {
        return Err(InvalidInput(format!(
            "{}: context_servers lists no workers; add them, or run in gen-only benchmark mode (--gen-only)",
            args.config.display()
        ))
        .into());
    }
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let host = args.host.clone().unwrap_or(config.hostname.clone());
        let port = args.port.unwrap_or(config.port);
        let bind = format!("{host}:{port}");
        let router = Router::bind(&bind, settings.clone())
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = router.local_addr();
        crate::listening::announce(
            addr,
            args.report_addr.as_deref(),
            &format!(
                "disagg router: listening on http://{addr} ({} context, {} generation servers; /health is 503 until all are up)",
                settings.context.len(),
                settings.generation.len()
            ),
        )?;
        let cancel = crate::listening::cancel_on_signal();
        router.run(cancel).await.context("the router stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}
