//! `disagg sim`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use disagg_config::TestConfig;
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Protocol, Role, Sim, SimConfig};

use crate::cli::{SimArgs, SimProtocol, SimRole};

/// Settings from flags, `--config` and defaults, in that order of precedence.
pub fn settings(args: &SimArgs) -> anyhow::Result<(SimConfig, Limits)> {
    let mut cost = if args.zero_cost {
        CostModel::zero()
    } else {
        CostModel::default()
    };
    let mut limits = Limits::default();
    let mut cfg = SimConfig {
        model: args.model.clone().unwrap_or_else(|| "sim".to_string()),
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
        eos_probability: args.eos_probability.unwrap_or(0.0),
        accept_synthetic_handoff: args.accept_synthetic_handoff,
        ..SimConfig::default()
    };
    if let Some(path) = &args.config {
        let config = crate::job::load_config(&path.display().to_string(), Path::new("."))?;
        let w = if args.worker == "ctx" {
            config.ctx()
        } else {
            config.gen_()
        };
        cost.tensor_parallel = w.tp();
        limits.max_batch_size = w.max_batch_size();
        limits.max_num_tokens = w.max_num_tokens();
        if let Some(l) = w.max_seq_len() {
            cfg.max_seq_len = l;
        }
        cfg.stream_interval = w.stream_interval();
        if let (None, Some(name)) = (&args.model, &config.metadata().model_name) {
            cfg.model = name.clone();
        }
        apply_sim_section(&config, &mut cost, &mut limits, &mut cfg);
    }
    let set = |v: Option<f64>, slot: &mut f64| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(args.prefill_tokens_per_s, &mut cost.prefill_tokens_per_s);
    set(args.decode_step_base_ms, &mut cost.decode_step_base_ms);
    set(
        args.decode_step_per_seq_ms,
        &mut cost.decode_step_per_seq_ms,
    );
    set(args.kv_transfer_gb_per_s, &mut cost.kv_transfer_gb_per_s);
    set(args.kv_bytes_per_token, &mut cost.kv_bytes_per_token);
    for (name, v) in [
        ("--prefill-tokens-per-s", cost.prefill_tokens_per_s),
        ("--decode-step-base-ms", cost.decode_step_base_ms),
        ("--decode-step-per-seq-ms", cost.decode_step_per_seq_ms),
        ("--kv-transfer-gb-per-s", cost.kv_transfer_gb_per_s),
        ("--kv-bytes-per-token", cost.kv_bytes_per_token),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(crate::InvalidInput(format!(
                "{name} must be a non-negative number, got {v}"
            ))
            .into());
        }
    }
    if let Some(p) = args.eos_probability {
        cfg.eos_probability = p;
    }
    if !(0.0..1.0).contains(&cfg.eos_probability) {
        return Err(crate::InvalidInput(format!(
            "the EOS probability must be in [0, 1), got {}",
            cfg.eos_probability
        ))
        .into());
    }
    if let Some(v) = args.tensor_parallel_size {
        cost.tensor_parallel = v.max(1);
    }
    if let Some(v) = args.kv_capacity_tokens {
        limits.kv_capacity_tokens = v;
    }
    if let Some(v) = args.max_batch_size {
        limits.max_batch_size = v.max(1);
    }
    if let Some(v) = args.max_num_tokens {
        limits.max_num_tokens = v.max(1);
    }
    if let Some(v) = args.max_seq_len {
        cfg.max_seq_len = v;
    }
    if let Some(v) = args.stream_interval {
        cfg.stream_interval = v.max(1);
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(k) = &args.handoff_key {
        cfg.handoff_key = k.clone();
    }
    cfg.cost = cost;
    if let Some(dir) = &args.tokenizer {
        let tok = disagg_bench::dataset::Tokenizer::load(dir)
            .map_err(|e| crate::InvalidInput(format!("--tokenizer: {e}")))?;
        cfg.tokenizer = Some(disagg_sim::TextTokenizer(std::sync::Arc::new(
            move |t: &str| tok.encode(t),
        )));
    }
    Ok((cfg, limits))
}

fn apply_sim_section(
    config: &TestConfig,
    cost: &mut CostModel,
    limits: &mut Limits,
    cfg: &mut SimConfig,
) {
    if let Some(engine) = &config.extensions().engine {
        apply_sim_params(&engine.sim.values, cost, limits, cfg);
    }
}

/// Apply named cost-model parameters (`engine.sim`, `disagg run --sim`).
pub fn apply_sim_params(
    values: &[(String, f64)],
    cost: &mut CostModel,
    limits: &mut Limits,
    cfg: &mut SimConfig,
) {
    for (name, v) in values {
        match name.as_str() {
            "prefill_tokens_per_s" => cost.prefill_tokens_per_s = *v,
            "decode_step_base_ms" => cost.decode_step_base_ms = *v,
            "decode_step_per_seq_ms" => cost.decode_step_per_seq_ms = *v,
            "kv_transfer_gb_per_s" => cost.kv_transfer_gb_per_s = *v,
            "kv_bytes_per_token" => cost.kv_bytes_per_token = *v,
            "kv_capacity_tokens" => limits.kv_capacity_tokens = *v as u64,
            "seed" => cfg.seed = *v as u64,
            "eos_probability" => cfg.eos_probability = *v,
            _ => {}
        }
    }
}

pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let (cfg, limits) = settings(args)?;
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let bind = format!("{}:{}", args.host, args.port);
        let sim = Sim::bind(&bind, cfg.clone(), limits)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = sim.local_addr();
        crate::listening::announce(
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
        let cancel = crate::listening::cancel_on_signal();
        let serve = sim.run(cancel.clone());
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => r?,
            _ = cancel.cancelled() => {
                // Drain for a bounded time, then give up on stragglers.
                let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
