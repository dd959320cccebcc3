//! `disagg bench`: benchmark any OpenAI-compatible server.

use disagg_bench::plan::{BenchPlan, Dataset, dataset_from_flags, parse_slo};
use disagg_bench::runner::{Endpoint, Load};
use disagg_bench::{Hooks, execute};
use disagg_runtime::ExitStatus;

use crate::cli::BenchArgs;

/// The typed plan of the flags.
fn plan(args: &BenchArgs) -> anyhow::Result<BenchPlan> {
    let loads = match (args.trace_speedup, args.request_rate) {
        (Some(speedup), _) => vec![Load::Trace { speedup }],
        (None, Some(rate)) => vec![Load::Rate {
            rate,
            burstiness: args.burstiness,
        }],
        (None, None) => args
            .concurrency
            .iter()
            .map(|&c| Load::Concurrency(c))
            .collect(),
    };
    Ok(BenchPlan {
        endpoint: if args.endpoint == "chat" {
            Endpoint::Chat
        } else {
            Endpoint::Completions
        },
        loads,
        num_prompts: args.num_prompts,
        multi_round: args.multi_round,
        isl: args.isl,
        osl: args.osl,
        range_ratio: args.range_ratio,
        dataset: dataset(args)?,
        ignore_eos: args.ignore_eos,
        stream: !args.no_stream,
        warmup: args.warmup,
        seed: args.seed,
        slo: args.goodput.as_deref().map(parse_slo).transpose()?,
        percentiles: args.percentiles.clone(),
        timeout: args.timeout,
        max_duration: args.max_duration,
        out: args.out.clone(),
        tokenizer: args.tokenizer.clone(),
        save_timelines: args.save_timelines,
        telemetry: args
            .scrape
            .iter()
            .map(|s| {
                let (name, url) = s.split_once('=').ok_or_else(|| {
                    disagg_runtime::InvalidInput(format!(
                        "--scrape `{s}`: write NAME=URL, e.g. ctx0=http://127.0.0.1:8001/metrics"
                    ))
                })?;
                Ok(disagg_bench::telemetry::Target {
                    name: name.to_string(),
                    url: url.to_string(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        telemetry_interval: args.scrape_interval,
        prompt_words: args.prompt_words,
        ..BenchPlan::new(args.url.clone(), args.model.clone())
    })
}

/// The dataset of `--dataset` and its own flags.
fn dataset(args: &BenchArgs) -> anyhow::Result<Dataset> {
    Ok(match (args.dataset.as_str(), &args.dataset_path) {
        ("shared-prefix", None) => Dataset::SharedPrefix {
            groups: args.prefix_groups,
            prefix_len: args.prefix_len,
            suffix_len: args.suffix_len,
        },
        ("multi-turn", None) => Dataset::MultiTurn {
            turns: args.turns,
            turn_len: args.turn_len,
            think_time: args.think_time,
        },
        ("mooncake", Some(path)) => Dataset::Mooncake {
            path: path.clone(),
            block_size: args.trace_block_size,
        },
        ("shared-prefix" | "multi-turn", Some(_)) => {
            return Err(disagg_runtime::InvalidInput(format!(
                "--dataset {} is generated: drop --dataset-path",
                args.dataset
            ))
            .into());
        }
        (kind, path) => dataset_from_flags(kind, path.clone())?,
    })
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitStatus> {
    let plan = plan(args)?;
    let runtime = disagg_runtime::serving::runtime(0)?;
    // Ctrl-C (or SIGTERM) ends the current run; what finished is kept and marked interrupted.
    let stop = {
        let _runtime = runtime.enter();
        disagg_runtime::serving::cancel_on_signal()
    };
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            stop.cancelled().await;
            eprintln!("\ninterrupted: keeping the requests that finished");
        });
    }
    let hooks = Hooks {
        stop,
        progress: None,
    };
    let outcome = execute(&plan, &runtime, &hooks)?;
    if outcome.interrupted {
        eprintln!("error: interrupted; partial results are marked interrupted");
        return Ok(ExitStatus::Interrupted);
    }
    if outcome.any_invalid && !args.allow_invalid {
        eprintln!(
            "error: at least one run is INVALID (see above); --allow-invalid to exit 0 anyway"
        );
        return Ok(ExitStatus::Failure);
    }
    Ok(ExitStatus::Success)
}
