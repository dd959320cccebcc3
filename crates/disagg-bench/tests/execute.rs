//! `execute` runs a plan against a simulator on 127.0.0.1 and writes what `disagg bench` writes.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use disagg_bench::progress::Progress;
use disagg_bench::record::{RECORD_VERSION, RunRecord, load_records};
use disagg_bench::runner::Load;
use disagg_bench::{BenchPlan, Hooks, Outcome, execute};
use disagg_sim::scheduler::{CostModel, Limits, Speculation};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::TestSim;
use tokio::runtime::Runtime;

/// `execute` blocks on the runtime it is given, so the tests run outside one and start the
/// simulator on it.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sim(rt: &Runtime, cost: CostModel) -> TestSim {
    rt.block_on(TestSim::start(
        SimConfig {
            role: Role::Both,
            cost,
            stream_interval: 1,
            ..SimConfig::default()
        },
        Limits::default(),
    ))
}

/// A slow engine: 100 ms a decode step, so a request of 1000 tokens outlasts any test.
fn slow() -> CostModel {
    CostModel {
        decode_step_base_ms: 100.0,
        ..CostModel::zero()
    }
}

fn plan(url: String, out: &Path) -> BenchPlan {
    let mut plan = BenchPlan::new(url, "sim");
    plan.loads = vec![Load::Concurrency(1), Load::Concurrency(2)];
    plan.isl = 32;
    plan.osl = 8;
    plan.ignore_eos = true;
    plan.percentiles = vec![50.0, 99.0];
    plan.timeout = 30.0;
    plan.out = Some(out.to_path_buf());
    plan
}

fn records(dir: &Path) -> Vec<RunRecord> {
    load_records(dir)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn each_concurrency_is_run_and_recorded() {
    let rt = runtime();
    let s = sim(&rt, CostModel::zero());
    let dir = tempfile::tempdir().unwrap();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let hooks = Hooks {
        progress: Some(progress.clone()),
        ..Hooks::default()
    };
    let outcome = execute(&plan(s.url(), dir.path()), &rt, &hooks).unwrap();
    assert_eq!(
        outcome,
        Outcome {
            any_invalid: false,
            interrupted: false
        }
    );

    assert!(dir.path().join("con1.json").is_file());
    assert!(dir.path().join("con2.json").is_file());
    let records = records(dir.path());
    let got: Vec<(&str, usize, usize)> = records
        .iter()
        .map(|r| (r.load.as_str(), r.num_prompts, r.metrics.completed))
        .collect();
    assert_eq!(got, [("con1", 1, 1), ("con2", 2, 2)]);
    for r in &records {
        assert_eq!(r.record_version, RECORD_VERSION);
        assert_eq!(
            (r.url.as_str(), r.model.as_str()),
            (s.url().as_str(), "sim")
        );
        assert_eq!(r.endpoint, "completions");
        assert_eq!((r.isl, r.osl), (32, 8));
        assert!(r.streaming && r.ignore_eos);
        assert!(r.valid && !r.interrupted, "{:?}", r.invalid_reasons);
        assert_eq!(r.metrics.failed, 0);
        assert_eq!(r.metrics.total_output_tokens, 8 * r.num_prompts as u64);
        assert!(r.timelines.is_none());
    }

    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(lines[0], disagg_bench::report::csv_header(&[50.0, 99.0]));
    assert!(lines[1].starts_with("con1,"), "{csv}");
    assert!(lines[2].starts_with("con2,"), "{csv}");

    let p = progress.lock().unwrap().clone();
    assert_eq!((p.label.as_str(), p.total), ("con2", 2));
    assert_eq!((p.runs_done, p.runs_total), (2, 2));
    assert!(p.first_request_ms.is_some());

    // Only the records, the table and nothing half-written.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["con1.json", "con2.json", "results.csv"]);
}

#[test]
fn speculative_decoding_reports_upstreams_decoded_tokens_per_iter() {
    // MTP with 3 drafts of which 2 are accepted: an 8-token output is the prefill's token, then
    // 3 + 3 + 1 decoded ones, so 8 tokens in 4 iterations, 2.0 per iteration for every request.
    let rt = runtime();
    let s = rt.block_on(TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel::zero(),
            stream_interval: 1,
            speculation: Speculation {
                draft_len: 3,
                accepted: 2,
            },
            ..SimConfig::default()
        },
        Limits::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(s.url(), dir.path());
    p.loads = vec![Load::Concurrency(2)];
    p.require_decoded_per_iter = true;
    let outcome = execute(&p, &rt, &Hooks::default()).unwrap();
    assert!(!outcome.any_invalid);
    let r = &records(dir.path())[0];
    assert_eq!(r.al(), Some(2.0));
    let a = r.metrics.avg_decoded_tokens_per_iter.as_ref().unwrap();
    assert_eq!((a.min, a.max, a.summary.count), (2.0, 2.0, 2));
    // Without speculation the servers send nothing: the run is invalid when it is required.
    let plain = sim(&rt, CostModel::zero());
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(plain.url(), dir.path());
    p.loads = vec![Load::Concurrency(1)];
    p.require_decoded_per_iter = true;
    assert!(execute(&p, &rt, &Hooks::default()).unwrap().any_invalid);
    assert_eq!(records(dir.path())[0].al(), None);
}

#[test]
fn warm_up_requests_are_not_measured_and_timelines_are_kept_when_asked() {
    let rt = runtime();
    let s = sim(&rt, CostModel::zero());
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(s.url(), dir.path());
    plan.loads = vec![Load::Concurrency(3)];
    plan.warmup = 2;
    plan.save_timelines = true;
    let outcome = execute(&plan, &rt, &Hooks::default()).unwrap();
    assert!(!outcome.any_invalid && !outcome.interrupted);
    let r = &records(dir.path())[0];
    assert_eq!((r.load.as_str(), r.metrics.total_requests), ("con3", 3));
    let timelines = r.timelines.as_ref().unwrap().as_array().unwrap();
    assert_eq!(timelines.len(), 3);
}

#[test]
fn a_stop_before_the_start_runs_nothing_and_is_interrupted() {
    let rt = runtime();
    let s = sim(&rt, CostModel::zero());
    let dir = tempfile::tempdir().unwrap();
    let hooks = Hooks::default();
    hooks.stop.cancel();
    let outcome = execute(&plan(s.url(), dir.path()), &rt, &hooks).unwrap();
    assert_eq!(
        outcome,
        Outcome {
            any_invalid: false,
            interrupted: true
        }
    );
    assert!(records(dir.path()).is_empty());
    assert!(!dir.path().join("results.csv").exists());
}

#[test]
fn a_stop_during_a_run_keeps_it_marked_interrupted_and_runs_no_other() {
    let rt = runtime();
    let s = sim(&rt, slow());
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(s.url(), dir.path());
    plan.osl = 1000;
    let hooks = Hooks::default();
    let stop = hooks.stop.clone();
    rt.spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let outcome = execute(&plan, &rt, &hooks).unwrap();
    assert_eq!(
        outcome,
        Outcome {
            any_invalid: true,
            interrupted: true
        }
    );
    let records = records(dir.path());
    assert_eq!(records.len(), 1, "con2 must not start after the stop");
    let r = &records[0];
    assert_eq!(r.load, "con1");
    assert!(r.interrupted && !r.valid);
    assert_eq!(r.invalid_reasons[0], "interrupted after 0 of 1 requests");
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
}

#[test]
fn max_duration_ends_only_the_run_it_limits() {
    let rt = runtime();
    let s = sim(&rt, slow());
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(s.url(), dir.path());
    plan.loads = vec![Load::Concurrency(1)];
    plan.osl = 1000;
    plan.max_duration = 0.3;
    let outcome = execute(&plan, &rt, &Hooks::default()).unwrap();
    assert_eq!(
        outcome,
        Outcome {
            any_invalid: true,
            interrupted: false
        }
    );
    let r = &records(dir.path())[0];
    assert!(r.interrupted && !r.valid);
    assert_eq!(
        r.invalid_reasons[0],
        "stopped at --max-duration after 0 of 1 requests"
    );
}

#[test]
fn an_invalid_plan_sends_nothing_and_writes_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut plan = plan("http://127.0.0.1:1".into(), &out);
    plan.osl = 0;
    let e = execute(&plan, &rt, &Hooks::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--isl and --osl must be at least 1 token, got 32 and 0"
    );
    assert!(!out.exists());
}

#[test]
fn a_missing_dataset_is_invalid_input_naming_the_file() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan("http://127.0.0.1:1".into(), &dir.path().join("out"));
    let missing = dir.path().join("nope.jsonl");
    plan.dataset = disagg_bench::plan::Dataset::Jsonl(missing.clone());
    let e = execute(&plan, &rt, &Hooks::default()).unwrap_err();
    assert!(e.is_invalid_input());
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read the dataset {}", missing.display())),
        "{e}"
    );
}
