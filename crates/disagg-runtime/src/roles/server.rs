//! DISAGG_SERVER: wait for every worker, write `server_config.yaml`, serve the coordinator —
//! the built-in router, or upstream's `trtllm-serve disaggregated` (`router.implementation`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use disagg_config::{RouterPolicy, TestConfig};
use disagg_plan::{Role, ServerKind};
use tokio_util::sync::CancellationToken;

use crate::error::InvalidInput;
use crate::exit::ExitStatus;
use crate::lifecycle::RoleRun;
use crate::rundir::State;

/// The server's body.
pub(super) async fn run(me: &RoleRun, signal: &CancellationToken) -> anyhow::Result<ExitStatus> {
    let workers: Vec<Role> = me.spec.workers().collect();
    let waited = me
        .wait_for("the workers", 10.0, signal, || {
            let roles = me.run.roles();
            let workers = &workers;
            async move {
                let roles = roles?;
                Ok(workers.iter().all(|w| {
                    roles
                        .iter()
                        .any(|r| r.role == *w && r.state == State::Ready)
                }))
            }
        })
        .await;
    let waited = waited.map_err(|e| {
        let missing: Vec<String> = me
            .run
            .roles()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| workers.contains(&r.role) && r.state != State::Ready)
            .map(|r| format!("{} ({})", r.role, format!("{:?}", r.state).to_lowercase()))
            .collect();
        e.context(format!(
            "waiting for workers; not ready: {}",
            missing.join(", ")
        ))
    })?;
    if let Err(ending) = waited {
        return Ok(me.finish(&ending));
    }
    let roles = me.run.roles()?;
    reach_workers(me, &roles, &workers).await?;
    let urls = |kind: ServerKind| -> Vec<String> {
        workers
            .iter()
            .filter(|w| w.server_kind() == Some(kind))
            .filter_map(|w| roles.iter().find(|r| r.role == *w)?.address())
            .collect()
    };
    let (ctx, gen_) = (urls(ServerKind::Ctx), urls(ServerKind::Gen));
    let ext = me.config.extensions().router.clone().unwrap_or_default();
    // The coordinator signs generation legs with the run's key (upstream's
    // `internal_request_auth_key` in server_config.yaml).
    let auth_key = me.run.auth_key()?;
    let (start_timeout, request_timeout) = coordinator_timeouts(&me.spec, &ext);
    let routing = crate::rundir::Routing {
        context: router_policy(&me.config, ServerKind::Ctx),
        generation: router_policy(&me.config, ServerKind::Gen),
        max_local_prefill_length: ext.max_local_prefill_length,
    };
    if ext.implementation == Some("trtllm") {
        // Upstream's coordinator: `trtllm-serve disaggregated -c server_config.yaml -t T -r R`
        // on a port picked here (it has no way to report a port it picked itself).
        let port = super::free_port(&me.address.bind)?;
        me.run.write_server_config(
            &me.address.advertised,
            port,
            &ctx,
            &gen_,
            Some(&auth_key),
            &routing,
        )?;
        let argv = coordinator_argv(
            &me.run.server_config_file(),
            (start_timeout, request_timeout),
        );
        let port = super::worker::Port::Fixed(port);
        return super::worker::serve_child(
            me,
            &argv,
            &[],
            port,
            "trtllm-serve disaggregated",
            signal,
        )
        .await;
    }
    me.run.write_server_config(
        &me.address.advertised,
        0,
        &ctx,
        &gen_,
        Some(&auth_key),
        &routing,
    )?;
    let handoff = handoff_of(me.spec.engine, &me.config).map_err(InvalidInput)?;
    // SGLang's bootstrap ports come from the plan, in context-server order.
    let bootstrap_ports = if handoff == disagg_router::HandOff::Sglang {
        workers
            .iter()
            .filter(|w| w.server_kind() == Some(ServerKind::Ctx))
            .map(|w| {
                me.spec
                    .server(*w)
                    .and_then(|s| s.kv_port)
                    .with_context(|| format!("run.json gives {w} no bootstrap port"))
            })
            .collect::<anyhow::Result<Vec<u16>>>()?
    } else {
        Vec::new()
    };
    let settings = disagg_router::RouterSettings {
        context: ctx,
        generation: gen_,
        context_policy: routing.context,
        generation_policy: routing.generation,
        max_retries: ext.max_retries.unwrap_or(1),
        request_timeout: Duration::from_secs_f64(request_timeout),
        server_start_timeout: Duration::from_secs_f64(start_timeout),
        health_check_interval: Duration::from_secs(1),
        gen_only: me.gen_only(),
        handoff,
        bootstrap_ports,
        auth_key: Some(auth_key),
        max_local_prefill_length: routing.max_local_prefill_length,
        tokenizer: router_tokenizer(me.spec.engine, ext.tokenizer.as_deref())?,
    };
    settings
        .check()
        .map_err(|e| anyhow::anyhow!("cannot route this run: {e}"))?;
    let bind = format!("{}:0", me.address.bind);
    let router = disagg_router::Router::bind(&bind, settings)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let port = router.local_addr().port();
    me.ready(port)?;
    eprintln!(
        "DISAGG_SERVER: router serving at {}:{port} (policy {})",
        me.address.advertised,
        routing.generation.name()
    );
    let stop = CancellationToken::new();
    let serve = router.run(stop.clone());
    tokio::pin!(serve);
    let ending = tokio::select! {
        r = &mut serve => {
            r.context("the router stopped")?;
            bail!("the router stopped serving");
        }
        e = me.watch(signal) => e,
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), serve).await;
    Ok(me.finish(&ending))
}

/// The coordinator's start and request timeouts, s: the config's `router` section, else the
/// run's. Upstream runs `trtllm-serve disaggregated -t {timeout} -r {timeout}`: the test's one
/// timeout bounds both the wait for the workers and each request.
pub(crate) fn coordinator_timeouts(
    spec: &crate::spec::RunSpec,
    ext: &disagg_config::Router,
) -> (f64, f64) {
    (
        ext.server_start_timeout_s.unwrap_or(spec.timeouts.run_s),
        ext.request_timeout_s.unwrap_or(spec.timeouts.request_s),
    )
}

/// Upstream's coordinator command, `trtllm-serve disaggregated -c FILE -t T -r R` (whole
/// seconds, rounded up).
pub(crate) fn coordinator_argv(
    config: &std::path::Path,
    (start_s, request_s): (f64, f64),
) -> Vec<String> {
    let secs = |v: f64| format!("{}", v.ceil() as u64);
    vec![
        "trtllm-serve".into(),
        "disaggregated".into(),
        "-c".into(),
        config.display().to_string(),
        "-t".into(),
        secs(start_s),
        "-r".into(),
        secs(request_s),
    ]
}

/// Every worker must answer at the address it published, from here: a worker bound to
/// loopback on another node, a hostname that resolves elsewhere, a port taken on another host
/// all fail here, naming the worker, its address and node, and this node — not later as a
/// router that never becomes healthy.
async fn reach_workers(
    me: &RoleRun,
    roles: &[crate::rundir::RoleState],
    workers: &[Role],
) -> anyhow::Result<()> {
    for w in workers {
        let Some(state) = roles.iter().find(|r| r.role == *w) else {
            continue;
        };
        let Some(addr) = state.address() else {
            continue;
        };
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match crate::probe::health(&addr, Duration::from_secs(2)).await {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            let node = state.host.as_deref().unwrap_or("?");
            bail!(
                "cannot reach {w} at {addr} (published by {w}, pid {}, on node {node}) from DISAGG_SERVER on {}: {e}; \
                 is its server bound to 127.0.0.1 only, or does {node} resolve to another address here?",
                state.pid,
                me.address.advertised
            );
        }
    }
    Ok(())
}

/// The hand-off the built-in router speaks to the workers: the engine's own (aggregated serving
/// has none); `router.protocol` picks one for the engines that speak any (the sim, `command`)
/// and must agree with a real engine's.
pub fn handoff_of(
    engine: disagg_config::EngineKind,
    config: &disagg_config::TestConfig,
) -> Result<disagg_router::HandOff, String> {
    use disagg_config::EngineKind;
    use disagg_router::HandOff;
    if config.aggregated() {
        return Ok(HandOff::Aggregated);
    }
    let own = match engine {
        EngineKind::Trtllm => Some(HandOff::Trtllm),
        EngineKind::Vllm => Some(HandOff::Vllm),
        EngineKind::Sglang => Some(HandOff::Sglang),
        EngineKind::Sim | EngineKind::Command => None,
    };
    let asked = match config.extensions().router.as_ref().and_then(|r| r.protocol) {
        Some(p) => Some(p.parse::<HandOff>()?),
        None => None,
    };
    match (own, asked) {
        (Some(own), Some(asked)) if own != asked => Err(format!(
            "router.protocol is {} but the {engine} engine speaks {}; drop router.protocol \
             (only the sim and command engines speak another)",
            asked.name(),
            own.name()
        )),
        (Some(h), _) | (None, Some(h)) => Ok(h),
        (None, None) => Ok(HandOff::Trtllm),
    }
}

/// The policy of the config's `router.policy` for the pool of `side`'s servers: a
/// `kv_cache_aware` pool hashes prompts with those workers' `kv_cache_config.tokens_per_block`
/// and weighs load against their `max_batch_size` (upstream copies both from a server section
/// into its router args).
pub fn router_policy(config: &TestConfig, side: ServerKind) -> RouterPolicy {
    let name = config.extensions().router.as_ref().and_then(|r| r.policy);
    let worker = match side {
        ServerKind::Ctx => config.ctx(),
        ServerKind::Gen => config.gen_(),
    };
    match name {
        Some("load_balancing") => RouterPolicy::LoadBalancing { use_tokens: false },
        Some("kv_cache_aware") => RouterPolicy::KvCacheAware(disagg_config::KvAwareArgs {
            max_batch_size: worker.max_batch_size(),
            tokens_per_block: worker.kv_cache().tokens_per_block,
            backfill_block_hashes_on_finish: false,
        }),
        _ => RouterPolicy::RoundRobin,
    }
}

/// The built-in router's tokenizer for text prompts: the config's `router.tokenizer`, else the
/// sim's own with the sim engine (its workers count one token per word, so the router makes the
/// very ids and block hashes they make); another engine's tokenizer is not known without it.
fn router_tokenizer(
    engine: disagg_config::EngineKind,
    configured: Option<&str>,
) -> anyhow::Result<Option<disagg_router::PromptTokenizer>> {
    Ok(match configured {
        Some("sim") => Some(disagg_router::PromptTokenizer::Words),
        Some(path) => Some(
            disagg_bench::dataset::prompt_tokenizer(std::path::Path::new(path))
                .map_err(|e| anyhow::anyhow!("router.tokenizer: {e}"))?,
        ),
        None => (engine == disagg_config::EngineKind::Sim)
            .then_some(disagg_router::PromptTokenizer::Words),
    })
}

#[cfg(test)]
mod tests {
    use disagg_config::EngineKind;
    use disagg_router::PromptTokenizer;

    use super::router_tokenizer;

    #[test]
    fn the_routers_tokenizer_is_the_configs_else_the_sims_own_on_the_sim() {
        let words = |t: Option<PromptTokenizer>| matches!(t, Some(PromptTokenizer::Words));
        assert!(words(router_tokenizer(EngineKind::Sim, None).unwrap()));
        assert!(router_tokenizer(EngineKind::Vllm, None).unwrap().is_none());
        assert!(words(
            router_tokenizer(EngineKind::Vllm, Some("sim")).unwrap()
        ));
        let tiny = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../disagg/tests/data/tiny-tokenizer"
        );
        let model = router_tokenizer(EngineKind::Vllm, Some(tiny)).unwrap();
        let Some(PromptTokenizer::Model { .. }) = &model else {
            panic!("a model tokenizer: {model:?}");
        };
        assert!(!model.unwrap().completion("hello world").is_empty());
        let err = router_tokenizer(EngineKind::Trtllm, Some("/nonexistent/tok")).unwrap_err();
        assert!(err.to_string().contains("router.tokenizer"), "{err}");
    }
}
