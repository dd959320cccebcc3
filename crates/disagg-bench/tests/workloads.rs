//! The realistic workloads end to end against a simulator on 127.0.0.1: shared prefixes hit the
//! server's prefix cache, multi-turn sessions keep their turns in order with think time, and a
//! Mooncake trace is replayed on its timestamps.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};

use disagg_bench::plan::Dataset;
use disagg_bench::record::{RunRecord, load_records};
use disagg_bench::runner::Load;
use disagg_bench::{BenchPlan, Hooks, execute};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::{Http, TestSim, metric};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sim(rt: &Runtime) -> TestSim {
    rt.block_on(TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel {
                decode_step_base_ms: 2.0,
                ..CostModel::zero()
            },
            ..SimConfig::default()
        },
        Limits::default(),
    ))
}

fn plan(url: String, out: &Path, dataset: Dataset, load: Load) -> BenchPlan {
    let mut plan = BenchPlan::new(url, "sim");
    plan.loads = vec![load];
    plan.dataset = dataset;
    plan.isl = 64;
    plan.osl = 4;
    plan.ignore_eos = true;
    plan.timeout = 30.0;
    plan.save_timelines = true;
    plan.out = Some(out.to_path_buf());
    plan
}

fn the_record(dir: &Path) -> RunRecord {
    let mut all = load_records(dir).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0).1
}

fn secs(v: &serde_json::Value) -> f64 {
    v["secs"].as_f64().unwrap() + v["nanos"].as_f64().unwrap() / 1e9
}

fn counter(rt: &Runtime, s: &TestSim, name: &str) -> f64 {
    let m = rt.block_on(Http::new().get(&format!("{}/metrics", s.url())));
    metric(&m.body, name).unwrap()
}

#[test]
fn shared_prefix_prompts_hit_the_servers_prefix_cache() {
    shared_prefix_hits(false);
}

#[test]
fn shared_prefix_prompts_sent_as_words_hit_the_same() {
    shared_prefix_hits(true);
}

fn shared_prefix_hits(words: bool) {
    let rt = runtime();
    let s = sim(&rt);
    let dir = tempfile::tempdir().unwrap();
    let dataset = Dataset::SharedPrefix {
        groups: 4,
        prefix_len: 256,
        suffix_len: 32,
    };
    let mut p = plan(s.url(), dir.path(), dataset, Load::Concurrency(1));
    p.num_prompts = Some(16);
    p.prompt_words = words;
    let outcome = execute(&p, &rt, &Hooks::default()).unwrap();
    assert!(!outcome.any_invalid);
    let r = the_record(dir.path());
    assert_eq!(r.metrics.completed, 16);
    assert_eq!(
        r.dataset.as_deref(),
        Some("shared-prefix groups=4 prefix=256 suffix=32")
    );
    // One at a time on one server: every prefix but each group's first is a hit (8 blocks of
    // 32 = the 256 shared tokens).
    assert_eq!(
        counter(&rt, &s, "disagg_sim_prefix_cache_hits_total"),
        12.0 * 256.0
    );
}

#[test]
fn multi_turn_sessions_keep_their_turns_in_order_with_think_time() {
    let rt = runtime();
    let s = sim(&rt);
    let dir = tempfile::tempdir().unwrap();
    let dataset = Dataset::MultiTurn {
        turns: 3,
        turn_len: 16,
        think_time: 0.05,
    };
    let mut p = plan(s.url(), dir.path(), dataset, Load::Concurrency(2));
    p.num_prompts = Some(12);
    execute(&p, &rt, &Hooks::default()).unwrap();
    let r = the_record(dir.path());
    assert_eq!(r.metrics.completed, 12, "4 sessions of 3 turns");
    let t = r.timelines.unwrap();
    let t = t.as_array().unwrap();
    // Session-major: requests 3k, 3k+1, 3k+2 are one session's turns.
    for session in t.chunks(3) {
        let lens: Vec<u64> = session
            .iter()
            .map(|x| x["prompt_tokens"].as_u64().unwrap())
            .collect();
        assert_eq!(lens, [64, 84, 104], "previous prompt + answer (4) + 16 new");
        for w in session.windows(2) {
            let (end, intended, sent) = (
                secs(&w[0]["end"]),
                secs(&w[1]["intended"]),
                secs(&w[1]["sent"]),
            );
            assert!(
                (intended - (end + 0.05)).abs() < 1e-6,
                "a turn is due a think time after the previous answer: {intended} vs {end}"
            );
            assert!(sent >= intended - 1e-6, "and not sent before");
        }
    }
    // Each later turn reuses the previous prompt's full blocks: turn 2 the one block of turn 1's
    // 63 keyed tokens, turn 3 the two of turn 2's 83.
    assert_eq!(
        counter(&rt, &s, "disagg_sim_prefix_cache_hits_total"),
        4.0 * (32.0 + 64.0)
    );
}

#[test]
fn a_mooncake_trace_is_replayed_on_its_timestamps() {
    let rt = runtime();
    let s = sim(&rt);
    let dir = tempfile::tempdir().unwrap();
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample-trace.jsonl");
    let dataset = Dataset::Mooncake {
        path: trace.clone(),
        block_size: 512,
    };
    // The first 16 lines, 20 times faster than recorded.
    let mut p = plan(s.url(), dir.path(), dataset, Load::Trace { speedup: 20.0 });
    p.num_prompts = Some(16);
    let outcome = execute(&p, &rt, &Hooks::default()).unwrap();
    assert!(!outcome.any_invalid);
    let r = the_record(dir.path());
    assert_eq!(r.load, "trace20x");
    assert_eq!(r.metrics.completed, 16);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t0 = lines[0]["timestamp"].as_f64().unwrap();
    let t = r.timelines.unwrap();
    for (x, line) in t.as_array().unwrap().iter().zip(&lines) {
        let due = (line["timestamp"].as_f64().unwrap() - t0) / 1000.0 / 20.0;
        assert!(
            (secs(&x["intended"]) - due).abs() < 1e-6,
            "due on the trace's time"
        );
        assert_eq!(x["prompt_tokens"], line["input_length"]);
        assert_eq!(x["requested_output_tokens"], line["output_length"]);
    }
    // Lines sharing leading hash ids shared blocks on the server.
    assert!(counter(&rt, &s, "disagg_sim_prefix_cache_hits_total") > 0.0);
}
