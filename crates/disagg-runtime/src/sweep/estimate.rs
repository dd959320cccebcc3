//! What a sweep will cost before anything is spent (`--dry-run`): each point's wall time — from
//! the store's history of the same point or config when there is one, else from the sim's
//! cost model (the sim engine), else the run's time limit (an upper bound) — and from it the
//! GPU-hours (allocated GPUs × time) and the sweep's wall time at `--max-parallel`.

use disagg_config::{EngineKind, TestConfig};
use disagg_results::store::{Store, content_hash};
use disagg_sim::{SimOptions, WorkerSide};

use super::points::Point;
use crate::prepare::RunOptions;

/// Start-up and ending of one local sim run (processes, readiness, results, store), s: what
/// `disagg run` adds to the benchmark itself on the 2-core development machine.
const LOCAL_OVERHEAD_S: f64 = 2.5;
/// The same for a Slurm job on the local Slurm (scheduling, steps, teardown), s.
const SLURM_OVERHEAD_S: f64 = 10.0;

/// How long one point is expected to take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// Wall time of its run, s.
    pub seconds: f64,
    /// Where the figure comes from: `history`, `model` (the sim's cost model) or `limit` (the
    /// run's time limit: at most this).
    pub source: &'static str,
}

/// The estimate of `point`.
pub(crate) fn estimate(
    point: &Point,
    store: Option<&Store>,
    options: &RunOptions,
    slurm: bool,
) -> Option<Estimate> {
    let config = point.config.as_ref()?;
    if let Some(s) = store.and_then(|s| from_history(s, point)) {
        return Some(Estimate {
            seconds: s,
            source: "history",
        });
    }
    if crate::prepare::engine_of(config, options.engine) == EngineKind::Sim {
        if let Some(s) = model_seconds(config, &options.overrides) {
            let overhead = if slurm {
                SLURM_OVERHEAD_S
            } else {
                LOCAL_OVERHEAD_S
            };
            return Some(Estimate {
                seconds: overhead + s,
                source: "model",
            });
        }
    }
    let limit = options
        .timeout
        .or(config.slurm().timeout_s.map(|t| t as f64))
        .unwrap_or(3600.0);
    Some(Estimate {
        seconds: limit,
        source: "limit",
    })
}

/// The wall time of the latest run of the same point (its key), else of the same config text,
/// from its run directory's `summary.json`.
fn from_history(store: &Store, point: &Point) -> Option<f64> {
    let by_key = store.by_job_field("s_sweep_point", &point.key).ok()?;
    let runs = if by_key.is_empty() {
        // The file of a run is the point's text as written.
        store.by_config_hash(&content_hash(&point.text)).ok()?
    } else {
        by_key
    };
    runs.iter().rev().find_map(|r| {
        let text = std::fs::read_to_string(format!("{}/results/summary.json", r.run_dir)).ok()?;
        let s: disagg_results::Summary = serde_json::from_str(&text).ok()?;
        (s.outcome == disagg_results::Outcome::Passed).then_some(s.duration_s)
    })
}

/// The benchmark time the sim's cost model predicts for `config`, s: for each concurrency C,
/// `ceil(prompts / C)` rounds of one request each, a request being the context step that
/// prefills C/ctx-servers prompts plus `osl − 1` generation steps of C/gen-servers sequences
/// (`base + per_seq × sequences`; see docs/simulator.md, "Cost model"). `None` when the model cannot be
/// resolved.
pub(crate) fn model_seconds(
    config: &TestConfig,
    overrides: &disagg_config::Overrides,
) -> Option<f64> {
    let resolve = |side| {
        SimOptions {
            params: overrides.sim.clone(),
            ..SimOptions::default()
        }
        .resolve(Some((config, side)))
        .ok()
    };
    let (gen_cfg, gen_limits) = resolve(WorkerSide::Gen)?;
    let (ctx_cfg, _) = resolve(WorkerSide::Ctx)?;
    let b = config.benchmark();
    let gen_servers = f64::from(config.hardware().num_gen_servers.max(1));
    let ctx_servers = f64::from(config.ctx_servers().max(1));
    let mut total_ms = 0.0;
    for &c in &b.concurrency {
        let c = f64::from(c);
        let prompts = overrides
            .num_prompts
            .map_or(c * f64::from(b.multi_round.max(1)), |n| n as f64);
        let rounds = (prompts / c).ceil();
        let per_gen = (c / gen_servers)
            .ceil()
            .min(f64::from(gen_limits.max_batch_size.max(1)));
        let step = gen_cfg.cost.decode_step_base_ms + gen_cfg.cost.decode_step_per_seq_ms * per_gen;
        let rate =
            ctx_cfg.cost.prefill_tokens_per_s * f64::from(ctx_cfg.cost.tensor_parallel.max(1));
        let prefill_ms = if rate > 0.0 {
            f64::from(b.isl) * (c / ctx_servers).ceil() / rate * 1000.0
        } else {
            0.0
        };
        let request = ctx_cfg.cost.decode_step_base_ms
            + prefill_ms
            + f64::from(b.osl.saturating_sub(1)) * step;
        total_ms += rounds * request;
    }
    Some(total_ms / 1000.0)
}

/// The wall time of runs of `durations` started in order, at most `parallel` at once, each as
/// soon as a slot is free.
pub(crate) fn makespan(durations: &[f64], parallel: usize) -> f64 {
    let mut slots = vec![0.0f64; parallel.max(1)];
    for d in durations {
        if let Some(first) = slots.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *first += d;
        }
    }
    slots.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fill_the_free_slots_in_order() {
        assert_eq!(makespan(&[], 3), 0.0);
        assert_eq!(makespan(&[4.0, 4.0, 4.0], 1), 12.0);
        assert_eq!(makespan(&[4.0, 1.0, 1.0, 1.0], 2), 4.0);
        assert_eq!(makespan(&[1.0, 2.0, 3.0, 4.0], 2), 6.0);
    }

    #[test]
    fn the_model_follows_the_documented_cost_model() {
        let text = "metadata: {model_name: m}\nbenchmark: {concurrency_list: '1 4', multi_round: 2, input_length: 100, output_length: 11}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nworker_config:\n  ctx: {tensor_parallel_size: 1}\n  gen: {tensor_parallel_size: 1}\nengine:\n  type: sim\n  sim: {decode_step_base_ms: 2, decode_step_per_seq_ms: 1, prefill_tokens_per_s: 10000}\n";
        let config = TestConfig::parse(std::path::Path::new("x.yaml"), text).unwrap();
        let got = model_seconds(&config, &disagg_config::Overrides::default()).unwrap();
        // C=1: 2 rounds × (2 + 100/10000 s + 10 × (2 + 1)) ms = 2 × 42 ms;
        // C=4: 2 rounds × (2 + 400/10000 s + 10 × (2 + 4)) ms = 2 × 102 ms.
        assert!(
            (got - (2.0 * 42.0 + 2.0 * 102.0) / 1000.0).abs() < 1e-9,
            "{got}"
        );
    }
}
