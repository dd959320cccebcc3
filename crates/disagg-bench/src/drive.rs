//! Runs a [`BenchPlan`]: every load one after the other, each with its warm-up, its own
//! `max_duration` deadline and the validity gate, printing the result block of each run on
//! stdout and writing its record (`con8.json`) and the table so far (`results.csv`).

use std::convert::Infallible;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::BenchError;
use crate::arrival::schedule;
use crate::dataset::{
    Tokenizer, load_jsonl, load_trtllm_custom, measure, multi_turn_requests, random_requests,
    random_text_requests, shared_prefix_requests,
};
use crate::trace::{load_mooncake, trace_requests};

/// Token ids of synthetic prompts are drawn from `0..VOCAB` (a small model's vocabulary).
const VOCAB: u32 = 32_000;
use crate::metrics::{RunMetrics, compute};
use crate::plan::{BenchPlan, Dataset};
use crate::progress::{Progress, now_ms, track};
use crate::record::{Environment, METRIC_DEFINITIONS, RECORD_VERSION, RunRecord};
use crate::report::{console_block, csv_header, csv_row};
use crate::runner::{Load, RunSpec, run as run_load};
use crate::timeline::Timeline;

/// What a caller of [`execute`] can see and steer.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Cancelled: the current run ends, what finished is kept and marked interrupted.
    pub stop: CancellationToken,
    /// Kept up to date while the benchmark runs.
    pub progress: Option<Arc<Mutex<Progress>>>,
}

/// How the benchmark went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// At least one run is invalid.
    pub any_invalid: bool,
    /// Stopped through [`Hooks::stop`].
    pub interrupted: bool,
}

/// Why a run cannot be trusted.
fn validity(
    m: &RunMetrics,
    timelines: &[Timeline],
    ignore_eos: bool,
    require_decoded_per_iter: bool,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if m.failed > 0 {
        reasons.push(format!(
            "{} of {} requests failed",
            m.failed, m.total_requests
        ));
    }
    if m.total_output_tokens == 0 {
        reasons.push("no output tokens".to_string());
    }
    if ignore_eos {
        let short = timelines
            .iter()
            .filter(|t| t.succeeded() && t.output_tokens().0 != t.requested_output_tokens)
            .count();
        if short > 0 {
            reasons.push(format!(
                "{short} requests returned another output length than requested despite ignore_eos"
            ));
        }
    }
    if require_decoded_per_iter && m.completed > 0 && m.avg_decoded_tokens_per_iter.is_none() {
        reasons.push(
            "speculative decoding, but no response carried avg_decoded_tokens_per_iter \
             (upstream's d_al is missing)"
                .to_string(),
        );
    }
    reasons
}

/// [`crate::record::write_atomic`], with the error this crate reports.
fn write_atomic(path: &Path, text: &str) -> Result<(), BenchError> {
    crate::record::write_atomic(path, text).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Seconds as a [`Duration`]; one too long to represent is "forever" rather than a panic.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// Cancels `token` after `limit`; never ends: race it against the run.
async fn deadline(limit: Duration, token: &CancellationToken) -> Infallible {
    tokio::time::sleep(limit).await;
    token.cancel();
    std::future::pending().await
}

/// Run every load of `plan` one after the other on `runtime`, printing each result block on
/// stdout and writing the records to [`BenchPlan::out`]. Validates the plan first
/// ([`BenchPlan::validate`]) and loads the tokenizer and the dataset before the first request.
///
/// A run that fails a check (failed requests, no output, wrong lengths despite `ignore_eos`,
/// stopped early) is printed and recorded as INVALID and the next run goes on;
/// [`Outcome::any_invalid`] tells. Cancelling [`Hooks::stop`] ends the current run, keeps what
/// finished (marked interrupted) and starts no other.
pub fn execute(
    plan: &BenchPlan,
    runtime: &tokio::runtime::Runtime,
    hooks: &Hooks,
) -> Result<Outcome, BenchError> {
    plan.validate()?;
    let tokenizer = plan.tokenizer.as_deref().map(Tokenizer::load).transpose()?;
    let file_requests = match &plan.dataset {
        Dataset::Jsonl(path) => Some(load_jsonl(path, plan.osl)?),
        Dataset::TrtllmCustom(path) => Some(load_trtllm_custom(path, plan.seed)?),
        _ => None,
    };
    let trace = match &plan.dataset {
        Dataset::Mooncake { path, .. } => Some(load_mooncake(path)?),
        _ => None,
    };
    let runs = plan.runs();
    // GPUs are read only where nvidia-smi runs, and only when the servers are read too.
    let gpus = !plan.telemetry.is_empty() && crate::telemetry::nvidia_smi_present();
    let scrape_interval = seconds(plan.telemetry_interval.max(0.05));
    let telemetry_dir = plan
        .telemetry_dir
        .clone()
        .or_else(|| plan.out.as_ref().map(|o| o.join("telemetry")));
    if let Some(dir) = &plan.out {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let mut any_invalid = false;
    let stop = &hooks.stop;
    let runs_total = runs.len();
    let mut csv = vec![csv_header(&plan.percentiles)];
    for (run_index, load) in runs.into_iter().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let (label, mut n) = plan.label_and_prompts(load);
        let mut offsets = Vec::new();
        let mut requests: Vec<_> = match (&file_requests, &tokenizer, &plan.dataset) {
            (_, _, Dataset::Mooncake { block_size, .. }) => {
                let entries = trace.as_deref().unwrap_or_default();
                n = n.min(entries.len());
                let speedup = match load {
                    Load::Trace { speedup } => speedup,
                    _ => 1.0,
                };
                let (mut reqs, times) =
                    trace_requests(&entries[..n], *block_size, speedup, VOCAB, plan.seed);
                offsets = times;
                // Warm-up requests come from the trace's start, sent before the replay.
                let warm: Vec<_> = reqs.iter().take(plan.warmup).cloned().collect();
                reqs.splice(0..0, warm);
                reqs
            }
            (
                _,
                _,
                Dataset::SharedPrefix {
                    groups,
                    prefix_len,
                    suffix_len,
                },
            ) => shared_prefix_requests(
                n + plan.warmup,
                *groups,
                *prefix_len,
                *suffix_len,
                plan.osl,
                VOCAB,
                plan.seed,
            ),
            (
                _,
                _,
                Dataset::MultiTurn {
                    turns, turn_len, ..
                },
            ) => {
                // Whole sessions: the prompts asked for, rounded up to a multiple of the turns.
                let sessions = (n + plan.warmup).div_ceil(*turns as usize) as u32;
                let reqs = multi_turn_requests(
                    sessions, *turns, plan.isl, *turn_len, plan.osl, VOCAB, plan.seed,
                );
                n = reqs.len() - plan.warmup.min(reqs.len());
                reqs
            }
            (Some(all), _, _) => all.iter().cycle().take(n + plan.warmup).cloned().collect(),
            (None, Some(tok), _) => random_text_requests(
                n + plan.warmup,
                plan.isl,
                plan.osl,
                plan.range_ratio,
                tok,
                plan.seed,
            ),
            (None, None, _) => random_requests(
                n + plan.warmup,
                plan.isl,
                plan.osl,
                plan.range_ratio,
                VOCAB,
                plan.seed,
            ),
        };
        if let Some(tok) = &tokenizer {
            measure(&mut requests, tok);
        }
        let (warm, measured) = requests.split_at(plan.warmup);
        let mut spec = RunSpec {
            base_url: plan.url.clone(),
            endpoint: plan.endpoint,
            model: plan.model.clone(),
            stream: plan.stream,
            ignore_eos: plan.ignore_eos,
            load,
            offsets: Vec::new(),
            timeout: seconds(plan.timeout.max(0.001)),
            keep_text: tokenizer.is_some(),
            words: plan.prompt_words,
            think_time: match plan.dataset {
                Dataset::MultiTurn { think_time, .. } => seconds(think_time),
                _ => Duration::ZERO,
            },
        };
        match load {
            Load::Rate { rate, burstiness } => {
                spec.offsets = schedule(n, rate, burstiness, plan.seed);
            }
            Load::Trace { .. } => spec.offsets = offsets,
            Load::Concurrency(_) => {}
        }
        let done = Arc::new(AtomicUsize::new(0));
        if let Some(p) = &hooks.progress {
            if let Ok(mut p) = p.lock() {
                p.label = label.clone();
                p.done = 0;
                p.total = n;
                p.runs_done = run_index;
                p.runs_total = runs_total;
                p.first_request_ms.get_or_insert_with(now_ms);
            }
        }
        let outcome = runtime.block_on(async {
            if !warm.is_empty() {
                let warm_spec = RunSpec {
                    load: Load::Concurrency(warm.len()),
                    ..spec.clone()
                };
                let warm_done = Arc::new(AtomicUsize::new(0));
                run_load(&warm_spec, warm, stop, &warm_done).await;
            }
            // The run's own deadline ends it like Ctrl-C, but only this run. It and the
            // progress line race the run, so neither outlives it: no task to abort. The
            // telemetry is read beside it and stops with it.
            let run_stop = stop.child_token();
            let scrape_stop = CancellationToken::new();
            let measured_run = async {
                let outcome = tokio::select! {
                    outcome = run_load(&spec, measured, &run_stop, &done) => outcome,
                    never = track(&label, n, &done, hooks.progress.as_deref()) => match never {},
                    never = deadline(seconds(plan.max_duration), &run_stop) => match never {},
                };
                scrape_stop.cancel();
                outcome
            };
            tokio::join!(
                measured_run,
                crate::telemetry::scrape(&plan.telemetry, gpus, scrape_interval, &scrape_stop)
            )
        });
        let (outcome, series) = outcome;
        let mut timelines = outcome.timelines;
        if let Some(tok) = &tokenizer {
            // Counted after the run, off the measuring path.
            for t in &mut timelines {
                if let Some(text) = t.output_text.take() {
                    t.tokenizer_output_tokens = Some(tok.encode(&text).len() as u32);
                }
            }
        }
        let metrics = compute(&timelines, &plan.percentiles, plan.slo);
        let mut reasons = validity(
            &metrics,
            &timelines,
            plan.ignore_eos,
            plan.require_decoded_per_iter,
        );
        if outcome.interrupted {
            let why = if stop.is_cancelled() {
                "interrupted"
            } else {
                "stopped at --max-duration"
            };
            reasons.insert(
                0,
                format!("{why} after {} of {n} requests", timelines.len()),
            );
        }
        any_invalid |= !reasons.is_empty();
        let telemetry = (!plan.telemetry.is_empty() || gpus).then(|| {
            crate::telemetry::summarize(&series, scrape_interval, client_rate(&timelines))
        });
        if let Some(dir) = &telemetry_dir {
            if !series.scrapes.is_empty() {
                let path = dir.join(format!("{label}.jsonl"));
                if let Err(e) = crate::telemetry::write_series(&path, &series) {
                    // Telemetry never fails a run.
                    eprintln!("warning: telemetry: cannot write {}: {e}", path.display());
                }
            }
        }
        let diagnosis = match &telemetry {
            Some(t) if !reasons.is_empty() => crate::telemetry::diagnose(t),
            _ => Vec::new(),
        };
        print_run(&label, &metrics, &reasons, &diagnosis).map_err(BenchError::Print)?;
        if let Some(dir) = &plan.out {
            let record = RunRecord {
                record_version: RECORD_VERSION,
                tool: format!("disagg {}", env!("CARGO_PKG_VERSION")),
                url: plan.url.clone(),
                model: plan.model.clone(),
                endpoint: plan.endpoint.as_str().to_string(),
                load: label.clone(),
                num_prompts: n,
                isl: plan.isl,
                osl: plan.osl,
                range_ratio: plan.range_ratio,
                streaming: plan.stream,
                ignore_eos: plan.ignore_eos,
                seed: plan.seed,
                interrupted: outcome.interrupted,
                environment: Environment::here(),
                metric_definitions: METRIC_DEFINITIONS.to_string(),
                valid: reasons.is_empty(),
                invalid_reasons: reasons.clone(),
                metrics: metrics.clone(),
                dataset: plan.dataset.describe(),
                telemetry,
                timelines: plan
                    .save_timelines
                    .then(|| serde_json::to_value(&timelines))
                    .transpose()
                    .map_err(|source| BenchError::Serialize {
                        label: label.clone(),
                        source,
                    })?,
                gen_step_time_ms: None,
            };
            let path = dir.join(format!("{label}.json"));
            let text =
                serde_json::to_string_pretty(&record).map_err(|source| BenchError::Serialize {
                    label: label.clone(),
                    source,
                })?;
            write_atomic(&path, &text)?;
            csv.push(csv_row(
                &label,
                outcome.interrupted,
                reasons.is_empty(),
                &metrics,
            ));
            write_atomic(&dir.join("results.csv"), &(csv.join("\n") + "\n"))?;
        }
    }
    if let Some(p) = &hooks.progress {
        if let Ok(mut p) = p.lock() {
            p.runs_done = runs_total;
        }
    }
    Ok(Outcome {
        any_invalid,
        interrupted: stop.is_cancelled(),
    })
}

/// The run's label, its result block and, when invalid, why and what the telemetry says about
/// it: what a person reads on stdout.
fn print_run(
    label: &str,
    metrics: &RunMetrics,
    reasons: &[String],
    diagnosis: &[String],
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{label}")?;
    write!(out, "{}", console_block(metrics))?;
    if !reasons.is_empty() {
        writeln!(out, "INVALID: {}", reasons.join("; "))?;
    }
    for d in diagnosis {
        writeln!(out, "  diagnosis: {d}")?;
    }
    Ok(())
}

/// The client's output tokens per second of the run (chunk arrivals bucketed by second).
fn client_rate(timelines: &[Timeline]) -> Vec<(f64, f64)> {
    let mut buckets: Vec<f64> = Vec::new();
    for t in timelines.iter().filter(|t| t.succeeded()) {
        for c in &t.chunks {
            let s = c.at.as_secs() as usize;
            if buckets.len() <= s {
                buckets.resize(s + 1, 0.0);
            }
            buckets[s] += f64::from(c.tokens);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(s, v)| (s as f64 + 0.5, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        write_atomic(&path, "old\n").unwrap();
        write_atomic(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["results.csv"]);
    }

    #[test]
    fn an_atomic_write_names_the_file_it_could_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("con1.json");
        let e = write_atomic(&path, "{}").unwrap_err();
        assert_eq!(e.to_string(), format!("cannot write {}", path.display()));
    }

    #[test]
    fn a_speculative_run_without_decoded_tokens_per_iter_is_invalid() {
        use crate::timeline::DecodedPerIter;
        let mut t = Timeline::sample(DecodedPerIter::NotSent);
        let m = compute(std::slice::from_ref(&t), &[99.0], None);
        assert!(validity(&m, std::slice::from_ref(&t), true, false).is_empty());
        let reasons = validity(&m, std::slice::from_ref(&t), true, true);
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].contains("avg_decoded_tokens_per_iter"),
            "{reasons:?}"
        );
        t.decoded_per_iter = DecodedPerIter::Value(2.0);
        let m = compute(std::slice::from_ref(&t), &[99.0], None);
        assert!(validity(&m, std::slice::from_ref(&t), true, true).is_empty());
    }

    #[test]
    fn seconds_too_long_for_a_duration_mean_forever() {
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        assert_eq!(seconds(f64::INFINITY), Duration::MAX);
        assert_eq!(seconds(1e300), Duration::MAX);
    }
}
