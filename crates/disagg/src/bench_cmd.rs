//! `disagg bench`.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use disagg_bench::arrival::schedule;
use disagg_bench::dataset::{
    Tokenizer, load_jsonl, load_trtllm_custom, measure, random_requests, random_text_requests,
};
use disagg_bench::metrics::{RunMetrics, Slo, compute};
use disagg_bench::report::{console_block, csv_header, csv_row};
use disagg_bench::runner::{Endpoint, Load, RunSpec, run as run_load};
use disagg_bench::timeline::Timeline;
use disagg_results::record::{Environment, METRIC_DEFINITIONS, RECORD_VERSION, RunRecord};
use disagg_runtime::rundir::Progress;
use tokio_util::sync::CancellationToken;

use crate::InvalidInput;
use crate::cli::BenchArgs;

fn parse_slo(text: &str) -> anyhow::Result<Slo> {
    let mut slo = Slo::default();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once(':').ok_or_else(|| {
            InvalidInput(format!(
                "--goodput `{part}`: write metric:ms, e.g. ttft:300"
            ))
        })?;
        let v: f64 = v.parse().map_err(|_| {
            InvalidInput(format!("--goodput `{part}`: `{v}` is not a number of ms"))
        })?;
        match k {
            "ttft" => slo.ttft_ms = Some(v),
            "tpot" => slo.tpot_ms = Some(v),
            "e2el" => slo.e2el_ms = Some(v),
            _ => {
                return Err(
                    InvalidInput(format!("--goodput `{k}`: use ttft, tpot or e2el")).into(),
                );
            }
        }
    }
    Ok(slo)
}

/// Why a run cannot be trusted.
fn validity(m: &RunMetrics, timelines: &[Timeline], ignore_eos: bool) -> Vec<String> {
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
    reasons
}

/// Keeps the progress up to date while a run goes on: in `shared` (what the BENCHMARK role
/// publishes) and, on a terminal, as a line on stderr twice a second.
fn progress(
    label: String,
    total: usize,
    done: Arc<AtomicUsize>,
    shared: Option<Arc<Mutex<Progress>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use std::io::IsTerminal as _;
        let terminal = std::io::stderr().is_terminal();
        let start = std::time::Instant::now();
        let mut tick = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            tick += 1;
            let d = done.load(Ordering::Relaxed);
            if let Some(p) = &shared {
                if let Ok(mut p) = p.lock() {
                    p.done = d;
                }
            }
            if terminal && tick % 2 == 0 {
                let rate = d as f64 / start.elapsed().as_secs_f64();
                eprint!("\r{label}: {d}/{total} requests, {rate:.1} req/s ");
            }
        }
    })
}

/// What a caller of [`execute`] can see and steer.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Cancelled: the current run ends, what finished is kept and marked interrupted.
    pub stop: CancellationToken,
    /// Kept up to date while the benchmark runs.
    pub progress: Option<Arc<Mutex<Progress>>>,
}

/// How the benchmark went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// At least one run is invalid.
    pub any_invalid: bool,
    /// Stopped through [`Hooks::stop`].
    pub interrupted: bool,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Ctrl-C (or SIGTERM) ends the current run; what finished is kept and marked interrupted.
    let stop = {
        let _runtime = runtime.enter();
        crate::listening::cancel_on_signal()
    };
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            stop.cancelled().await;
            eprintln!("\ninterrupted: keeping the requests that finished");
        });
    }
    let outcome = execute(
        args,
        &runtime,
        &Hooks {
            stop,
            progress: None,
        },
    )?;
    if outcome.interrupted {
        eprintln!("error: interrupted; partial results are marked interrupted");
        return Ok(ExitCode::from(130));
    }
    if outcome.any_invalid && !args.allow_invalid {
        eprintln!(
            "error: at least one run is INVALID (see above); --allow-invalid to exit 0 anyway"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Run every load of `args` one after the other on `runtime`, printing each result block and
/// writing the records to `--out`.
pub fn execute(
    args: &BenchArgs,
    runtime: &tokio::runtime::Runtime,
    hooks: &Hooks,
) -> anyhow::Result<Outcome> {
    if !(0.0..1.0).contains(&args.range_ratio) {
        return Err(InvalidInput(format!(
            "--range-ratio must be in [0, 1), got {}",
            args.range_ratio
        ))
        .into());
    }
    if args.isl == 0 || args.osl == 0 {
        return Err(InvalidInput(format!(
            "--isl and --osl must be at least 1 token, got {} and {}",
            args.isl, args.osl
        ))
        .into());
    }
    if !(args.max_duration.is_finite() && args.max_duration > 0.0) {
        return Err(InvalidInput(format!(
            "--max-duration must be positive seconds, got {}",
            args.max_duration
        ))
        .into());
    }
    if !args.url.starts_with("http://") {
        return Err(InvalidInput(format!("--url `{}`: give http://host:port", args.url)).into());
    }
    let slo = args.goodput.as_deref().map(parse_slo).transpose()?;
    let tokenizer = args
        .tokenizer
        .as_deref()
        .map(Tokenizer::load)
        .transpose()
        .map_err(|e| InvalidInput(e.to_string()))?;
    let file_requests = match (args.dataset.as_str(), &args.dataset_path) {
        ("jsonl", Some(path)) => {
            Some(load_jsonl(path, args.osl).map_err(|e| InvalidInput(e.to_string()))?)
        }
        ("trtllm-custom", Some(path)) => {
            Some(load_trtllm_custom(path, args.seed).map_err(|e| InvalidInput(e.to_string()))?)
        }
        ("random", Some(_)) => {
            return Err(InvalidInput(
                "--dataset-path is read only with --dataset jsonl or trtllm-custom".into(),
            )
            .into());
        }
        ("random", None) => None,
        (kind, None) => {
            return Err(InvalidInput(format!("--dataset {kind} needs --dataset-path FILE")).into());
        }
        (kind, Some(_)) => return Err(InvalidInput(format!("unknown --dataset {kind}")).into()),
    };
    let runs: Vec<Load> = match args.request_rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => vec![Load::Rate {
            rate,
            burstiness: args.burstiness,
        }],
        Some(rate) => {
            return Err(
                InvalidInput(format!("--request-rate must be positive, got {rate}")).into(),
            );
        }
        None if args.concurrency.is_empty() => vec![Load::Concurrency(1)],
        None => args
            .concurrency
            .iter()
            .map(|&c| Load::Concurrency(c.max(1)))
            .collect(),
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut any_invalid = false;
    let stop = &hooks.stop;
    let runs_total = runs.len();
    let mut csv = vec![csv_header(&args.percentiles)];
    for (run_index, load) in runs.into_iter().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let (label, n) = match load {
            Load::Concurrency(c) => (
                format!("con{c}"),
                args.num_prompts.unwrap_or(c * args.multi_round.max(1)),
            ),
            Load::Rate { rate, .. } => (
                format!("rate{rate}"),
                args.num_prompts.unwrap_or(args.multi_round.max(1) * 100),
            ),
        };
        let mut requests: Vec<_> = match (&file_requests, &tokenizer) {
            (Some(all), _) => all.iter().cycle().take(n + args.warmup).cloned().collect(),
            (None, Some(tok)) => random_text_requests(
                n + args.warmup,
                args.isl,
                args.osl,
                args.range_ratio,
                tok,
                args.seed,
            ),
            (None, None) => random_requests(
                n + args.warmup,
                args.isl,
                args.osl,
                args.range_ratio,
                32_000,
                args.seed,
            ),
        };
        if let Some(tok) = &tokenizer {
            measure(&mut requests, tok);
        }
        let (warm, measured) = requests.split_at(args.warmup);
        let mut spec = RunSpec {
            base_url: args.url.clone(),
            endpoint: if args.endpoint == "chat" {
                Endpoint::Chat
            } else {
                Endpoint::Completions
            },
            model: args.model.clone(),
            stream: !args.no_stream,
            ignore_eos: args.ignore_eos,
            load,
            offsets: Vec::new(),
            timeout: Duration::from_secs_f64(args.timeout.max(0.001)),
            keep_text: tokenizer.is_some(),
        };
        if let Load::Rate { rate, burstiness } = load {
            spec.offsets = schedule(n, rate, burstiness, args.seed);
        }
        let done = Arc::new(AtomicUsize::new(0));
        if let Some(p) = &hooks.progress {
            if let Ok(mut p) = p.lock() {
                p.label = label.clone();
                p.done = 0;
                p.total = n;
                p.runs_done = run_index;
                p.runs_total = runs_total;
                p.first_request_ms
                    .get_or_insert_with(disagg_runtime::now_ms);
            }
        }
        let outcome = runtime.block_on(async {
            if !warm.is_empty() {
                let warm_spec = RunSpec {
                    load: Load::Concurrency(warm.len()),
                    ..spec.clone()
                };
                let warm_done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                run_load(&warm_spec, warm, stop, &warm_done).await;
            }
            let progress = progress(label.clone(), n, done.clone(), hooks.progress.clone());
            // The run's own deadline ends it like Ctrl-C, but only this run.
            let run_stop = stop.child_token();
            let deadline = {
                let run_stop = run_stop.clone();
                let limit = Duration::from_secs_f64(args.max_duration);
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    run_stop.cancel();
                })
            };
            let outcome = run_load(&spec, measured, &run_stop, &done).await;
            deadline.abort();
            progress.abort();
            outcome
        });
        let mut timelines = outcome.timelines;
        if let Some(tok) = &tokenizer {
            // Counted after the run, off the measuring path.
            for t in &mut timelines {
                if let Some(text) = t.output_text.take() {
                    t.tokenizer_output_tokens = Some(tok.encode(&text).len() as u32);
                }
            }
        }
        let metrics = compute(&timelines, &args.percentiles, slo);
        let mut reasons = validity(&metrics, &timelines, args.ignore_eos);
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
        let mut out = std::io::stdout().lock();
        writeln!(out, "{label}")?;
        write!(out, "{}", console_block(&metrics))?;
        if !reasons.is_empty() {
            writeln!(out, "INVALID: {}", reasons.join("; "))?;
        }
        if let Some(dir) = &args.out {
            let record = RunRecord {
                record_version: RECORD_VERSION,
                tool: format!("disagg {}", env!("CARGO_PKG_VERSION")),
                url: args.url.clone(),
                model: args.model.clone(),
                endpoint: args.endpoint.clone(),
                load: label.clone(),
                num_prompts: n,
                isl: args.isl,
                osl: args.osl,
                range_ratio: args.range_ratio,
                streaming: !args.no_stream,
                ignore_eos: args.ignore_eos,
                seed: args.seed,
                interrupted: outcome.interrupted,
                environment: Environment::here(),
                metric_definitions: METRIC_DEFINITIONS.to_string(),
                valid: reasons.is_empty(),
                invalid_reasons: reasons.clone(),
                metrics: metrics.clone(),
                timelines: args
                    .save_timelines
                    .then(|| serde_json::to_value(&timelines))
                    .transpose()?,
            };
            let path = dir.join(format!("{label}.json"));
            let text = serde_json::to_string_pretty(&record)?;
            disagg_runtime::rundir::write_atomic(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            csv.push(csv_row(
                &label,
                outcome.interrupted,
                reasons.is_empty(),
                &metrics,
            ));
            let csv_path = dir.join("results.csv");
            disagg_runtime::rundir::write_atomic(&csv_path, &(csv.join("\n") + "\n"))
                .with_context(|| format!("cannot write {}", csv_path.display()))?;
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
