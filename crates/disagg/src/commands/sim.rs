//! `disagg sim`: the simulated engine alone, on its own address.

use std::time::Duration;

use anyhow::Context as _;
use disagg_runtime::{ExitStatus, InvalidInput};
use disagg_sim::{Protocol, Role, Sim, SimOptions, TextTokenizer, WorkerSide};

use crate::cli::{SimArgs, SimProtocol, SimRole};

/// The typed options of the flags.
fn options(args: &SimArgs) -> anyhow::Result<SimOptions> {
    let tokenizer = match &args.tokenizer {
        Some(dir) => {
            let tok = disagg_bench::dataset::Tokenizer::load(dir)
                .map_err(|e| InvalidInput(format!("--tokenizer: {e}")))?;
            Some(TextTokenizer(std::sync::Arc::new(move |t: &str| {
                tok.encode(t)
            })))
        }
        None => None,
    };
    Ok(SimOptions {
        model: args.model.clone(),
        role: match args.role {
            SimRole::Context => Role::Context,
            SimRole::Generation => Role::Generation,
            SimRole::Both => Role::Both,
        },
        protocol: match args.protocol {
            SimProtocol::Trtllm => Protocol::Trtllm,
            SimProtocol::Vllm => Protocol::Vllm,
            SimProtocol::Sglang => Protocol::Sglang,
        },
        zero_cost: args.zero_cost,
        prefill_tokens_per_s: args.prefill_tokens_per_s,
        decode_step_base_ms: args.decode_step_base_ms,
        decode_step_per_seq_ms: args.decode_step_per_seq_ms,
        kv_transfer_gb_per_s: args.kv_transfer_gb_per_s,
        kv_bytes_per_token: args.kv_bytes_per_token,
        kv_capacity_tokens: args.kv_capacity_tokens,
        tensor_parallel_size: args.tensor_parallel_size,
        max_batch_size: args.max_batch_size,
        max_num_tokens: args.max_num_tokens,
        max_seq_len: args.max_seq_len,
        stream_interval: args.stream_interval,
        seed: args.seed,
        eos_probability: args.eos_probability,
        handoff_key: args.handoff_key.clone(),
        accept_synthetic_handoff: args.accept_synthetic_handoff,
        // From --config: its internal_request_auth_key, which upstream writes into every
        // worker's options.
        auth_key: None,
        tokenizer,
        params: Vec::new(),
        tokens_per_block: args.tokens_per_block,
        enable_block_reuse: args.enable_block_reuse,
        event_buffer_max_size: args.event_buffer_max_size,
    })
}

pub fn run(args: &SimArgs) -> anyhow::Result<ExitStatus> {
    let config = match &args.config {
        Some(path) => Some(disagg_runtime::prepare::load_config(
            &path.display().to_string(),
            std::path::Path::new("."),
        )?),
        None => None,
    };
    let side = if args.worker == "ctx" {
        WorkerSide::Ctx
    } else {
        WorkerSide::Gen
    };
    let (cfg, limits) = options(args)?.resolve(config.as_ref().map(|c| (c, side)))?;
    let runtime = disagg_runtime::serving::runtime(args.threads.max(1))?;
    runtime.block_on(async {
        let bind = format!("{}:{}", args.host, args.port);
        let mut sim = Sim::bind(&bind, cfg.clone(), limits)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        if let Some(port) = args.bootstrap_port {
            let bootstrap = format!("{}:{port}", args.host);
            sim.bind_bootstrap(&bootstrap)
                .await
                .with_context(|| format!("cannot listen on {bootstrap} (--bootstrap-port)"))?;
        }
        let addr = sim.local_addr();
        disagg_runtime::serving::announce(
            addr,
            args.report_addr.as_deref(),
            &format!(
                "disagg sim: listening on http://{addr} (model {}, role {:?}, protocol {:?}, tp {}, max_batch_size {}, max_num_tokens {}, stream_interval {})",
                cfg.model,
                cfg.role,
                cfg.protocol,
                cfg.cost.tensor_parallel,
                limits.max_batch_size,
                limits.max_num_tokens,
                cfg.stream_interval
            ),
        )?;
        let cancel = disagg_runtime::serving::cancel_on_signal();
        let serve = sim.run(cancel.clone());
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => r?,
            _ = cancel.cancelled() => {
                // Drain for a bounded time, then give up on stragglers.
                let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
            }
        }
        Ok(ExitStatus::Success)
    })
}
