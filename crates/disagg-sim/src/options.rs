//! Typed options of a simulated worker: every knob of `disagg sim` (apart from where it listens),
//! resolved against an optional test config into the [`SimConfig`] and [`Limits`] a
//! [`Sim`](crate::Sim) is bound with.
//!
//! Precedence, lowest first: the built-in defaults (or [`CostModel::zero`]); the config's
//! `worker_config.ctx|gen` section and `metadata.model_name`; its `engine.sim` section;
//! [`SimOptions::params`] (`disagg run --sim NAME=VALUE`); the explicit fields (the flags).

use disagg_config::{AuthKey, SIM_PARAMS, TestConfig};

use crate::prefix_cache::CacheSettings;
use crate::scheduler::{CostModel, Limits, Speculation};
use crate::{Protocol, Role, SimConfig, SimError, TextTokenizer};

/// Which `worker_config` section of a test config a simulated server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSide {
    /// `worker_config.ctx`.
    Ctx,
    /// `worker_config.gen`.
    Gen,
}

/// Every setting of a simulated server apart from its address; `None` leaves a setting to the
/// config, else to the default.
///
/// ```
/// use disagg_sim::{Role, SimOptions};
/// let options = SimOptions {
///     role: Role::Context,
///     max_batch_size: Some(8),
///     params: vec![("decode_step_base_ms".into(), 16.0)],
///     ..SimOptions::default()
/// };
/// let (cfg, limits) = options.resolve(None)?;
/// assert_eq!((limits.max_batch_size, cfg.cost.decode_step_base_ms), (8, 16.0));
/// # Ok::<(), disagg_sim::SimError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Model name served [default: the config's `metadata.model_name`, else `sim`].
    pub model: Option<String>,
    /// Legs taken [default: both].
    pub role: Role,
    /// Hand-off protocol [default: TensorRT-LLM].
    pub protocol: Protocol,
    /// Start from [`CostModel::zero`] instead of the default cost model.
    pub zero_cost: bool,
    /// Prefill tokens per second per GPU (0 = free).
    pub prefill_tokens_per_s: Option<f64>,
    /// Fixed cost of a step, ms.
    pub decode_step_base_ms: Option<f64>,
    /// Cost per decoding sequence, ms.
    pub decode_step_per_seq_ms: Option<f64>,
    /// KV hand-off bandwidth, GB/s (0 = free).
    pub kv_transfer_gb_per_s: Option<f64>,
    /// KV bytes per token.
    pub kv_bytes_per_token: Option<f64>,
    /// KV-cache capacity, tokens.
    pub kv_capacity_tokens: Option<u64>,
    /// Tensor parallel size (scales prefill); 0 counts as 1.
    pub tensor_parallel_size: Option<u32>,
    /// Most sequences at once; 0 counts as 1.
    pub max_batch_size: Option<u32>,
    /// Most tokens per step; 0 counts as 1.
    pub max_num_tokens: Option<u32>,
    /// Longest prompt + output.
    pub max_seq_len: Option<u32>,
    /// Tokens per streamed chunk after the first; 0 counts as 1.
    pub stream_interval: Option<u32>,
    /// Seed of the generated tokens.
    pub seed: Option<u64>,
    /// Chance that a generated token ends the output, in [0, 1).
    pub eos_probability: Option<f64>,
    /// Key of the hand-off digest; every server of one test must share it.
    pub handoff_key: Option<String>,
    /// Accept `generation_only` requests without a hand-off (upstream's gen-only benchmark mode).
    pub accept_synthetic_handoff: bool,
    /// `internal_request_auth_key` the server checks generation requests against [default: the
    /// config's own, the key upstream writes into every worker's options; none: unchecked].
    pub auth_key: Option<AuthKey>,
    /// How text prompts become token ids [default: one token per word].
    pub tokenizer: Option<TextTokenizer>,
    /// Named cost-model parameters (names from [`disagg_config::SIM_PARAMS`]), applied after the
    /// config's `engine.sim` section and before the fields above.
    pub params: Vec<(String, f64)>,
    /// Tokens per KV-cache block [default: `kv_cache_config.tokens_per_block`, else 32]; 0
    /// counts as 1.
    pub tokens_per_block: Option<u32>,
    /// Reuse cached prompt blocks [default: `kv_cache_config.enable_block_reuse`, else true].
    pub enable_block_reuse: Option<bool>,
    /// KV cache events kept for `/kv_cache_events` [default:
    /// `kv_cache_config.event_buffer_max_size`, else 0: none].
    pub event_buffer_max_size: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            model: None,
            role: Role::Both,
            protocol: Protocol::Trtllm,
            zero_cost: false,
            prefill_tokens_per_s: None,
            decode_step_base_ms: None,
            decode_step_per_seq_ms: None,
            kv_transfer_gb_per_s: None,
            kv_bytes_per_token: None,
            kv_capacity_tokens: None,
            tensor_parallel_size: None,
            max_batch_size: None,
            max_num_tokens: None,
            max_seq_len: None,
            stream_interval: None,
            seed: None,
            eos_probability: None,
            handoff_key: None,
            accept_synthetic_handoff: false,
            auth_key: None,
            tokenizer: None,
            params: Vec::new(),
            tokens_per_block: None,
            enable_block_reuse: None,
            event_buffer_max_size: None,
        }
    }
}

impl SimOptions {
    /// The server settings and scheduler limits, from these options over `config`'s `side`
    /// worker section and `engine.sim` (see the module docs for the precedence).
    ///
    /// # Errors
    ///
    /// [`SimError::InvalidOption`] when a cost is negative or not a number, the EOS probability
    /// is outside [0, 1), or a parameter name is not one of [`disagg_config::SIM_PARAMS`].
    pub fn resolve(
        &self,
        config: Option<(&TestConfig, WorkerSide)>,
    ) -> Result<(SimConfig, Limits), SimError> {
        let mut cost = if self.zero_cost {
            CostModel::zero()
        } else {
            CostModel::default()
        };
        let mut limits = Limits::default();
        let mut cfg = SimConfig {
            model: self.model.clone().unwrap_or_else(|| "sim".to_string()),
            role: self.role,
            protocol: self.protocol,
            eos_probability: self.eos_probability.unwrap_or(0.0),
            accept_synthetic_handoff: self.accept_synthetic_handoff,
            ..SimConfig::default()
        };
        if let Some((config, side)) = config {
            let w = match side {
                WorkerSide::Ctx => config.ctx(),
                WorkerSide::Gen => config.gen_(),
            };
            cost.tensor_parallel = w.tp();
            limits.max_batch_size = w.max_batch_size();
            limits.max_num_tokens = w.max_num_tokens();
            if let Some(l) = w.max_seq_len() {
                cfg.max_seq_len = l;
            }
            cfg.stream_interval = w.stream_interval();
            cfg.speculation = speculation(config, side);
            cfg.print_iter_log = w
                .raw()
                .and_then(|n| n.get("print_iter_log"))
                .and_then(|n| n.scalar())
                == Some(disagg_config::yaml::Scalar::Bool(true));
            if let (None, Some(name)) = (&self.model, &config.metadata().model_name) {
                cfg.model = name.clone();
            }
            cfg.auth_key = config.auth_key().cloned();
            let kv = w.kv_cache();
            cfg.kv_cache = CacheSettings {
                tokens_per_block: kv.tokens_per_block,
                enable_block_reuse: kv.enable_block_reuse,
                event_buffer_max_size: kv.event_buffer_max_size as usize,
            };
            if let Some(engine) = &config.extensions().engine {
                apply_params(&engine.sim.values, &mut cost, &mut limits, &mut cfg)?;
            }
        }
        apply_params(&self.params, &mut cost, &mut limits, &mut cfg)?;
        self.apply_costs(&mut cost)?;
        if let Some(p) = self.eos_probability {
            cfg.eos_probability = p;
        }
        if !(0.0..1.0).contains(&cfg.eos_probability) {
            return Err(SimError::InvalidOption(format!(
                "the EOS probability must be in [0, 1), got {}",
                cfg.eos_probability
            )));
        }
        self.apply_limits(&mut cost, &mut limits, &mut cfg);
        cfg.cost = cost;
        cfg.tokenizer = self.tokenizer.clone();
        Ok((cfg, limits))
    }

    /// The explicit costs over `cost`, then every cost checked, whatever set it.
    fn apply_costs(&self, cost: &mut CostModel) -> Result<(), SimError> {
        let set = |v: Option<f64>, slot: &mut f64| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(self.prefill_tokens_per_s, &mut cost.prefill_tokens_per_s);
        set(self.decode_step_base_ms, &mut cost.decode_step_base_ms);
        set(
            self.decode_step_per_seq_ms,
            &mut cost.decode_step_per_seq_ms,
        );
        set(self.kv_transfer_gb_per_s, &mut cost.kv_transfer_gb_per_s);
        set(self.kv_bytes_per_token, &mut cost.kv_bytes_per_token);
        // The messages name the `disagg sim` flags, as the command reported them before these
        // options moved here.
        for (name, v) in [
            ("--prefill-tokens-per-s", cost.prefill_tokens_per_s),
            ("--decode-step-base-ms", cost.decode_step_base_ms),
            ("--decode-step-per-seq-ms", cost.decode_step_per_seq_ms),
            ("--kv-transfer-gb-per-s", cost.kv_transfer_gb_per_s),
            ("--kv-bytes-per-token", cost.kv_bytes_per_token),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::InvalidOption(format!(
                    "{name} must be a non-negative number, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// The explicit limits and output settings; the ones that count things are at least 1.
    fn apply_limits(&self, cost: &mut CostModel, limits: &mut Limits, cfg: &mut SimConfig) {
        if let Some(v) = self.tensor_parallel_size {
            cost.tensor_parallel = v.max(1);
        }
        if let Some(v) = self.kv_capacity_tokens {
            limits.kv_capacity_tokens = v;
        }
        if let Some(v) = self.max_batch_size {
            limits.max_batch_size = v.max(1);
        }
        if let Some(v) = self.max_num_tokens {
            limits.max_num_tokens = v.max(1);
        }
        if let Some(v) = self.max_seq_len {
            cfg.max_seq_len = v;
        }
        if let Some(v) = self.stream_interval {
            cfg.stream_interval = v.max(1);
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(k) = &self.handoff_key {
            cfg.handoff_key = k.clone();
        }
        if let Some(k) = &self.auth_key {
            cfg.auth_key = Some(k.clone());
        }
        if let Some(v) = self.tokens_per_block {
            cfg.kv_cache.tokens_per_block = v.max(1);
        }
        if let Some(v) = self.enable_block_reuse {
            cfg.kv_cache.enable_block_reuse = v;
        }
        if let Some(v) = self.event_buffer_max_size {
            cfg.kv_cache.event_buffer_max_size = v;
        }
    }
}

/// The worker's speculative decoding: `speculative_config`'s draft length, with every draft
/// accepted unless the worker environment forces a number, as upstream's perf configs do with
/// `TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS` (`environment.worker_env_var`, then the side's
/// own `ctx|gen_worker_env_var`, the later one winning as in a shell).
fn speculation(config: &TestConfig, side: WorkerSide) -> Speculation {
    let (w, extra) = match side {
        WorkerSide::Ctx => (config.ctx(), &config.environment().ctx_worker),
        WorkerSide::Gen => (config.gen_(), &config.environment().gen_worker),
    };
    let Some(spec) = w.speculative().filter(|s| s.draft_len > 0) else {
        return Speculation::default();
    };
    let forced = config
        .environment()
        .worker
        .iter()
        .chain(extra)
        .rev()
        .filter(|(k, _)| k == "TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS")
        .find_map(|(_, v)| v.parse::<u32>().ok());
    Speculation {
        draft_len: spec.draft_len,
        accepted: forced.unwrap_or(spec.draft_len).min(spec.draft_len),
    }
}

/// Apply named cost-model parameters (`engine.sim`, `disagg run --sim`) in order.
fn apply_params(
    values: &[(String, f64)],
    cost: &mut CostModel,
    limits: &mut Limits,
    cfg: &mut SimConfig,
) -> Result<(), SimError> {
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
            // Names are checked where they are read (config, `--sim`); one that gets here
            // anyway is refused rather than ignored.
            _ => {
                return Err(SimError::InvalidOption(format!(
                    "`{name}` is not a sim parameter; use one of {}",
                    SIM_PARAMS.join(", ")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::handoff;

    /// `examples/local-sim.yaml` with distinct ctx and gen values, plus `extra` at the end.
    fn config(extra: &str) -> TestConfig {
        config_with_ctx("", extra)
    }

    /// The same with `ctx` lines added to `worker_config.ctx`.
    fn config_with_ctx(ctx: &str, extra: &str) -> TestConfig {
        let text = format!(
            "\
metadata:
  model_name: sim-llama-8b
  precision: bf16
  benchmark_type: 1k1k
benchmark:
  mode: e2e
  concurrency_list: \"1 4 16\"
  multi_round: 4
  input_length: 256
  output_length: 64
  benchmark_ratio: 0.0
  streaming: true
hardware:
  gpus_per_node: 4
  num_ctx_servers: 1
  num_gen_servers: 1
worker_config:
  ctx:
    tensor_parallel_size: 2
    max_batch_size: 8
    max_num_tokens: 4096
    max_seq_len: 2048
{ctx}  gen:
    tensor_parallel_size: 1
    max_batch_size: 64
    max_num_tokens: 256
    max_seq_len: 4096
    stream_interval: 3
engine:
  type: sim
{extra}"
        );
        TestConfig::parse(Path::new("options.yaml"), &text).unwrap()
    }

    fn params(values: &[(&str, f64)]) -> Vec<(String, f64)> {
        values.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    fn refusal(options: SimOptions, config: Option<(&TestConfig, WorkerSide)>) -> String {
        match options.resolve(config) {
            Err(SimError::InvalidOption(m)) => m,
            Ok(_) => panic!("resolved, expected a refusal"),
        }
    }

    #[test]
    fn the_auth_key_comes_from_the_config_unless_given() {
        let keyed = config("internal_request_auth_key: \"from-config\"\n");
        let (cfg, _) = SimOptions::default()
            .resolve(Some((&keyed, WorkerSide::Gen)))
            .unwrap();
        let key = |c: &SimConfig| c.auth_key.as_ref().map(|k| k.expose_secret().to_string());
        assert_eq!(key(&cfg).as_deref(), Some("from-config"));
        let (cfg, _) = SimOptions {
            auth_key: AuthKey::new("explicit"),
            ..SimOptions::default()
        }
        .resolve(Some((&keyed, WorkerSide::Ctx)))
        .unwrap();
        assert_eq!(key(&cfg).as_deref(), Some("explicit"));
        let (cfg, _) = SimOptions::default()
            .resolve(Some((&config(""), WorkerSide::Gen)))
            .unwrap();
        assert_eq!(cfg.auth_key, None, "no key: requests are not checked");
        assert!(!format!("{cfg:?}").contains("explicit"));
    }

    #[test]
    fn kv_cache_config_sets_blocks_reuse_and_events_unless_flags_say_otherwise() {
        let c = config("");
        let (cfg, _) = SimOptions::default()
            .resolve(Some((&c, WorkerSide::Ctx)))
            .unwrap();
        assert_eq!(
            cfg.kv_cache,
            CacheSettings::default(),
            "upstream's defaults"
        );
        assert!(cfg.kv_cache.enable_block_reuse && cfg.kv_cache.tokens_per_block == 32);
        let c = config_with_ctx(
            "    kv_cache_config:\n      tokens_per_block: 64\n      enable_block_reuse: false\n      event_buffer_max_size: 1024\n",
            "",
        );
        let (cfg, _) = SimOptions::default()
            .resolve(Some((&c, WorkerSide::Ctx)))
            .unwrap();
        assert_eq!(
            cfg.kv_cache,
            CacheSettings {
                tokens_per_block: 64,
                enable_block_reuse: false,
                event_buffer_max_size: 1024
            }
        );
        let (gen_cfg, _) = SimOptions::default()
            .resolve(Some((&c, WorkerSide::Gen)))
            .unwrap();
        assert_eq!(
            gen_cfg.kv_cache,
            CacheSettings::default(),
            "only ctx set it"
        );
        let (cfg, _) = SimOptions {
            tokens_per_block: Some(16),
            enable_block_reuse: Some(true),
            event_buffer_max_size: Some(8),
            ..SimOptions::default()
        }
        .resolve(Some((&c, WorkerSide::Ctx)))
        .unwrap();
        assert_eq!(
            cfg.kv_cache,
            CacheSettings {
                tokens_per_block: 16,
                enable_block_reuse: true,
                event_buffer_max_size: 8
            }
        );
    }

    #[test]
    fn defaults_are_the_sim_config_and_limits_defaults() {
        let (cfg, limits) = SimOptions::default().resolve(None).unwrap();
        let d = SimConfig::default();
        assert_eq!(cfg.model, "sim");
        assert_eq!((cfg.role, cfg.protocol), (Role::Both, Protocol::Trtllm));
        assert_eq!(cfg.stream_interval, d.stream_interval);
        assert_eq!(cfg.max_seq_len, d.max_seq_len);
        assert_eq!(cfg.default_max_tokens, d.default_max_tokens);
        assert_eq!(cfg.seed, 0);
        assert_eq!(cfg.eos_probability, 0.0);
        assert_eq!(cfg.handoff_key, handoff::DEFAULT_KEY);
        assert_eq!(cfg.issuer, d.issuer);
        assert!(!cfg.accept_synthetic_handoff);
        assert_eq!(cfg.bootstrap_timeout, d.bootstrap_timeout);
        assert_eq!(cfg.cost, CostModel::default());
        assert!(cfg.tokenizer.is_none());
        assert_eq!(limits, Limits::default());
    }

    #[test]
    fn the_config_worker_section_sets_limits_and_the_model_name() {
        let c = config("");
        let (ctx, ctx_limits) = SimOptions::default()
            .resolve(Some((&c, WorkerSide::Ctx)))
            .unwrap();
        assert_eq!(ctx.cost.tensor_parallel, 2);
        assert_eq!(
            (ctx_limits.max_batch_size, ctx_limits.max_num_tokens),
            (8, 4096)
        );
        assert_eq!(ctx.max_seq_len, 2048);
        assert_eq!(ctx.stream_interval, 10, "upstream's default when unset");
        assert_eq!(ctx.model, "sim-llama-8b");
        assert_eq!(
            ctx_limits.kv_capacity_tokens,
            Limits::default().kv_capacity_tokens
        );

        let (generation, gen_limits) = SimOptions::default()
            .resolve(Some((&c, WorkerSide::Gen)))
            .unwrap();
        assert_eq!(generation.cost.tensor_parallel, 1);
        assert_eq!(
            (gen_limits.max_batch_size, gen_limits.max_num_tokens),
            (64, 256)
        );
        assert_eq!(generation.max_seq_len, 4096);
        assert_eq!(generation.stream_interval, 3);
        assert_eq!(
            generation.cost.prefill_tokens_per_s, 20_000.0,
            "no engine.sim"
        );

        let named = SimOptions {
            model: Some("mine".into()),
            ..SimOptions::default()
        };
        let (cfg, _) = named.resolve(Some((&c, WorkerSide::Gen))).unwrap();
        assert_eq!(
            cfg.model, "mine",
            "an explicit model beats metadata.model_name"
        );
    }

    #[test]
    fn precedence_is_config_then_engine_sim_then_params_then_fields() {
        let c = config(
            "  sim:\n    prefill_tokens_per_s: 1000\n    decode_step_base_ms: 4\n    seed: 7\n    \
             kv_capacity_tokens: 5000\n    eos_probability: 0.1\n",
        );
        let options = SimOptions {
            params: params(&[
                ("decode_step_base_ms", 5.0),
                ("seed", 8.0),
                ("kv_bytes_per_token", 64.0),
            ]),
            seed: Some(9),
            kv_bytes_per_token: Some(32.0),
            max_batch_size: Some(16),
            tensor_parallel_size: Some(4),
            stream_interval: Some(2),
            max_seq_len: Some(1024),
            ..SimOptions::default()
        };
        let (cfg, limits) = options.resolve(Some((&c, WorkerSide::Gen))).unwrap();
        assert_eq!(
            cfg.cost.prefill_tokens_per_s, 1000.0,
            "engine.sim over the default"
        );
        assert_eq!(cfg.cost.decode_step_base_ms, 5.0, "params over engine.sim");
        assert_eq!(
            cfg.cost.decode_step_per_seq_ms, 0.05,
            "the default, set nowhere"
        );
        assert_eq!(cfg.cost.kv_bytes_per_token, 32.0, "a field over params");
        assert_eq!(cfg.seed, 9, "a field over params over engine.sim");
        assert_eq!(cfg.eos_probability, 0.1);
        assert_eq!(limits.kv_capacity_tokens, 5000);
        assert_eq!(limits.max_batch_size, 16, "a field over the worker section");
        assert_eq!(limits.max_num_tokens, 256, "the worker section");
        assert_eq!(cfg.cost.tensor_parallel, 4);
        assert_eq!(cfg.stream_interval, 2);
        assert_eq!(cfg.max_seq_len, 1024);

        let params_only = SimOptions {
            params: params(&[("eos_probability", 0.25), ("kv_capacity_tokens", 77.0)]),
            ..SimOptions::default()
        };
        let (cfg, limits) = params_only.resolve(Some((&c, WorkerSide::Ctx))).unwrap();
        assert_eq!(cfg.eos_probability, 0.25, "params over engine.sim");
        assert_eq!(limits.kv_capacity_tokens, 77);
        let explicit = SimOptions {
            eos_probability: Some(0.5),
            ..params_only
        };
        let (cfg, _) = explicit.resolve(Some((&c, WorkerSide::Ctx))).unwrap();
        assert_eq!(cfg.eos_probability, 0.5, "a field over params");
    }

    #[test]
    fn zero_cost_is_the_base_the_config_and_params_build_on() {
        let (cfg, _) = SimOptions {
            zero_cost: true,
            ..SimOptions::default()
        }
        .resolve(None)
        .unwrap();
        assert_eq!(cfg.cost, CostModel::zero());

        let c = config("  sim:\n    prefill_tokens_per_s: 1000\n");
        let (cfg, _) = SimOptions {
            zero_cost: true,
            params: params(&[("decode_step_base_ms", 2.0)]),
            ..SimOptions::default()
        }
        .resolve(Some((&c, WorkerSide::Ctx)))
        .unwrap();
        assert_eq!(
            cfg.cost,
            CostModel {
                prefill_tokens_per_s: 1000.0,
                decode_step_base_ms: 2.0,
                tensor_parallel: 2,
                ..CostModel::zero()
            }
        );
    }

    #[test]
    fn counts_of_zero_are_raised_to_one() {
        let (cfg, limits) = SimOptions {
            tensor_parallel_size: Some(0),
            max_batch_size: Some(0),
            max_num_tokens: Some(0),
            stream_interval: Some(0),
            kv_capacity_tokens: Some(0),
            ..SimOptions::default()
        }
        .resolve(None)
        .unwrap();
        assert_eq!(cfg.cost.tensor_parallel, 1);
        assert_eq!((limits.max_batch_size, limits.max_num_tokens), (1, 1));
        assert_eq!(cfg.stream_interval, 1);
        assert_eq!(limits.kv_capacity_tokens, 0, "a capacity is not clamped");
    }

    #[test]
    fn the_rest_of_the_fields_pass_through() {
        let (cfg, _) = SimOptions {
            role: Role::Context,
            protocol: Protocol::Sglang,
            handoff_key: Some("k".into()),
            accept_synthetic_handoff: true,
            tokenizer: Some(TextTokenizer(Arc::new(|t: &str| vec![t.len() as u32]))),
            ..SimOptions::default()
        }
        .resolve(None)
        .unwrap();
        assert_eq!((cfg.role, cfg.protocol), (Role::Context, Protocol::Sglang));
        assert_eq!(cfg.handoff_key, "k");
        assert!(cfg.accept_synthetic_handoff);
        let tokenizer = cfg.tokenizer.unwrap();
        assert_eq!((tokenizer.0)("abc"), vec![3]);
    }

    #[test]
    fn a_negative_cost_is_refused_naming_its_flag() {
        assert_eq!(
            refusal(
                SimOptions {
                    prefill_tokens_per_s: Some(-1.0),
                    ..SimOptions::default()
                },
                None
            ),
            "--prefill-tokens-per-s must be a non-negative number, got -1"
        );
        assert_eq!(
            refusal(
                SimOptions {
                    kv_transfer_gb_per_s: Some(f64::NAN),
                    ..SimOptions::default()
                },
                None
            ),
            "--kv-transfer-gb-per-s must be a non-negative number, got NaN"
        );
        assert_eq!(
            refusal(
                SimOptions {
                    params: params(&[("decode_step_per_seq_ms", -0.5)]),
                    ..SimOptions::default()
                },
                None
            ),
            "--decode-step-per-seq-ms must be a non-negative number, got -0.5",
            "params are checked as the fields are"
        );
        let e = SimOptions {
            decode_step_base_ms: Some(-2.0),
            ..SimOptions::default()
        }
        .resolve(None)
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--decode-step-base-ms must be a non-negative number, got -2",
            "displayed as the message alone"
        );
    }

    #[test]
    fn an_eos_probability_of_one_is_refused() {
        let message = "the EOS probability must be in [0, 1), got 1";
        let field = SimOptions {
            eos_probability: Some(1.0),
            ..SimOptions::default()
        };
        assert_eq!(refusal(field, None), message);
        let param = SimOptions {
            params: params(&[("eos_probability", 1.0)]),
            ..SimOptions::default()
        };
        assert_eq!(refusal(param, None), message);
        let c = config("  sim:\n    eos_probability: 1\n");
        assert_eq!(
            refusal(SimOptions::default(), Some((&c, WorkerSide::Gen))),
            message
        );
    }

    #[test]
    fn every_sim_param_is_understood_and_no_other() {
        for name in SIM_PARAMS {
            let options = SimOptions {
                params: params(&[(*name, 0.5)]),
                ..SimOptions::default()
            };
            assert!(options.resolve(None).is_ok(), "{name}");
        }
        assert_eq!(
            refusal(
                SimOptions {
                    params: params(&[("decode_ms", 1.0)]),
                    ..SimOptions::default()
                },
                None
            ),
            format!(
                "`decode_ms` is not a sim parameter; use one of {}",
                SIM_PARAMS.join(", ")
            )
        );
    }

    #[test]
    fn speculation_comes_from_the_worker_section_and_the_forced_acceptance() {
        // No speculative_config: off.
        let (cfg, _) = SimOptions::default()
            .resolve(Some((&config(""), WorkerSide::Gen)))
            .unwrap();
        assert!(!cfg.speculation.is_on());
        let with_mtp = |env: &str| {
            let text = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/local-sim.yaml"
            ))
            .unwrap()
            .replace(
                "    stream_interval: 1\n",
                "    stream_interval: 1\n    speculative_config: {decoding_type: MTP, num_nextn_predict_layers: 3}\n",
            )
            .replace("TLLM_LOG_LEVEL=INFO", env);
            TestConfig::parse(Path::new("mtp.yaml"), &text).unwrap()
        };
        let resolve = |c: &TestConfig| {
            SimOptions::default()
                .resolve(Some((c, WorkerSide::Gen)))
                .unwrap()
                .0
                .speculation
        };
        assert_eq!(
            resolve(&with_mtp("TLLM_LOG_LEVEL=INFO")),
            Speculation {
                draft_len: 3,
                accepted: 3
            },
            "every draft accepted unless forced"
        );
        assert_eq!(
            resolve(&with_mtp("TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=1")),
            Speculation {
                draft_len: 3,
                accepted: 1
            }
        );
        assert_eq!(
            resolve(&with_mtp("TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=9")).accepted,
            3,
            "capped at the draft length"
        );
    }
}
