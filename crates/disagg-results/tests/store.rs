//! The SQLite store: migrations, append-only marks and verdicts, history queries, the upload
//! log; and the check over stored runs.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::BTreeMap;

use disagg_results::check::{Gate, Verdict, check_run};
use disagg_results::record::{Environment, RunRecord};
use disagg_results::store::{NewRun, SCHEMA_VERSION, Store};

fn record(label: &str, out_tok_s: f64, valid: bool) -> RunRecord {
    let mut metrics = disagg_bench::metrics::compute(&[], &[50.0, 99.0], None);
    metrics.output_throughput = out_tok_s;
    metrics.total_token_throughput = out_tok_s * 5.0;
    metrics.ttft_ms.median = 1000.0 / out_tok_s;
    RunRecord {
        record_version: 1,
        tool: "disagg test".into(),
        url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        endpoint: "completions".into(),
        load: label.into(),
        num_prompts: 8,
        isl: 128,
        osl: 16,
        range_ratio: 0.0,
        streaming: true,
        ignore_eos: true,
        seed: 0,
        environment: Environment::here(),
        metric_definitions: "test".into(),
        interrupted: false,
        valid,
        invalid_reasons: Vec::new(),
        metrics,
        timelines: None,
        gen_step_time_ms: None,
        dataset: None,
        telemetry: None,
    }
}

fn identity(con: u32) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([
        ("s_gpu_type".to_string(), "sim".into()),
        ("l_concurrency".to_string(), con.into()),
    ])
}

const DAY: u64 = 86_400_000;
const T0: u64 = 1_795_000_000_000;

fn store_run(s: &mut Store, dir: &str, at: u64, rec: &RunRecord, post_merge: bool) -> i64 {
    s.insert(&NewRun {
        run_dir: dir,
        config_name: "cfg",
        config_hash: "h",
        identity: &identity(4),
        job: &BTreeMap::new(),
        post_merge,
        created_unix_ms: at,
        record: rec,
    })
    .unwrap()
}

#[test]
fn a_new_store_is_created_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/results.sqlite");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.version().unwrap(), SCHEMA_VERSION);
    assert!(s.list(None, 10).unwrap().is_empty());
    drop(s);
    // Reopening changes nothing.
    assert_eq!(
        Store::open(&path).unwrap().version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_store_of_the_first_schema_is_migrated_and_keeps_its_runs_and_cases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite");
    drop(Store::open_at(&path, 1).unwrap());
    // A run as version 1 stored it: an identity from before upstream's test case name.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let old_identity = serde_json::json!({
        "s_gpu_type": "GB200", "s_runtime": "multi_node_disagg_server", "s_engine": "trtllm",
        "s_benchmark_mode": "e2e", "l_concurrency": 4, "l_iterations": 4, "l_isl": 128,
        "l_osl": 16, "l_ctx_tp": 4
    });
    conn.execute(
        "INSERT INTO runs (run_dir, label, config_name, config_hash, case_key, created_unix_ms,
            valid, post_merge, identity, job, record, tool, metric_definitions)
         VALUES ('/runs/a', 'con4', 'cfg', 'h', 'old', ?1, 1, 1, ?2, ?3, '{}', 't', 'd')",
        rusqlite::params![
            T0 as i64,
            old_identity.to_string(),
            r#"{"s_branch": "main"}"#
        ],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO metrics (run_id, name, value) VALUES (?1, 'token_throughput', 100.0)",
        [id],
    )
    .unwrap();
    drop(conn);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.version().unwrap(), SCHEMA_VERSION);
    let run = s.get(id).unwrap();
    assert_eq!(run.label, "con4");
    assert_eq!(run.metrics["token_throughput"], 100.0);
    // The migration gave it upstream's case: the name rebuilt as upstream builds it, the GPU
    // lower-cased, TensorRT-LLM's engine name dropped.
    let case = BTreeMap::from([
        (
            "s_test_case_name".to_string(),
            serde_json::Value::from("e2e-cfg-con4_iter4_isl128_osl16"),
        ),
        ("s_gpu_type".to_string(), "gb200".into()),
        ("s_runtime".to_string(), "multi_node_disagg_server".into()),
        ("s_branch".to_string(), "main".into()),
    ]);
    assert_eq!(run.match_key, disagg_results::identity::match_key(&case));
    assert_eq!(s.history(&run.match_key, 0, "/other").unwrap().len(), 1);
    // The upload log of version 2 works on the migrated file.
    assert_eq!(s.unsent("os").unwrap().len(), 1);
    s.log_upload(id, "os", None).unwrap();
    assert!(s.unsent("os").unwrap().is_empty());
}

#[test]
fn verdicts_append_and_the_latest_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("r.sqlite")).unwrap();
    let a = store_run(&mut s, "/runs/a", T0, &record("con4", 100.0, true), true);
    assert!(!s.get(a).unwrap().regression, "no check yet");
    let first = Verdict {
        regression: true,
        info: "Regression in x:".into(),
        embedded: BTreeMap::from([("d_baseline_token_throughput".to_string(), 120.0)]),
    };
    s.record_verdict(a, &first).unwrap();
    let run = s.get(a).unwrap();
    assert!(run.regression);
    assert_eq!(run.regression_info, "Regression in x:");
    assert_eq!(run.embedded["d_baseline_token_throughput"], 120.0);
    s.record_verdict(a, &Verdict::default()).unwrap();
    let run = s.get(a).unwrap();
    assert!(
        !run.regression && run.embedded.is_empty(),
        "the latest wins"
    );
}

#[test]
fn runs_are_stored_once_and_marks_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("r.sqlite")).unwrap();
    let rec = record("con4", 100.0, true);
    let a = store_run(&mut s, "/runs/a", T0, &rec, true);
    assert_eq!(
        store_run(&mut s, "/runs/a", T0, &rec, true),
        a,
        "idempotent"
    );
    assert!(s.get(a).unwrap().valid);
    s.mark(a, "invalid", Some("bad node")).unwrap();
    assert!(!s.get(a).unwrap().valid);
    s.mark(a, "valid", None).unwrap();
    assert!(s.get(a).unwrap().valid, "the latest mark wins");
    s.mark(a, "baseline", None).unwrap();
    assert!(s.get(a).unwrap().baseline);
    assert!(s.mark(a, "nonsense", None).is_err());
    assert!(s.mark(999, "invalid", None).is_err());
    assert_eq!(s.latest_run_dir().unwrap().as_deref(), Some("/runs/a"));
}

#[test]
fn a_slower_run_regresses_against_valid_post_merge_history_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("r.sqlite")).unwrap();
    // Five days of history around 100 tok/s, one invalid run at 1000 and a pre-merge run at
    // 1000 that must not lift the baseline, one run far outside the 90-day window.
    for d in 0..5 {
        store_run(
            &mut s,
            &format!("/h/{d}"),
            T0 + d * DAY,
            &record("con4", 100.0, true),
            true,
        );
    }
    let bad = store_run(
        &mut s,
        "/h/invalid",
        T0 + DAY,
        &record("con4", 1000.0, false),
        true,
    );
    store_run(
        &mut s,
        "/h/pre",
        T0 + 2 * DAY,
        &record("con4", 1000.0, true),
        false,
    );
    store_run(
        &mut s,
        "/h/ancient",
        T0 - 200 * DAY,
        &record("con4", 1000.0, true),
        true,
    );
    let now = T0 + 6 * DAY;
    let slow = store_run(&mut s, "/new", now, &record("con4", 90.0, true), true);
    let case = s.get(slow).unwrap().match_key;
    let history = s.history(&case, 0, "/new").unwrap();
    assert_eq!(history.len(), 8);
    assert!(!history.iter().find(|h| h.id == bad).unwrap().valid);
    let run = s.get(slow).unwrap();
    let rows = check_run(&run, &history, None, &Gate::default());
    assert_eq!(rows.len(), 2);
    let tok = rows
        .iter()
        .find(|r| r.metric == "token_throughput")
        .unwrap();
    assert_eq!(tok.baseline, Some(100.0));
    assert_eq!(tok.verdict, "regression");
    assert!((tok.diff.unwrap() + 0.10).abs() < 1e-9);
    // Pre-merge: 10 % lets -10 % pass (not strictly worse than the threshold).
    let pre = Gate {
        pre_merge: true,
        ..Gate::default()
    };
    assert!(
        check_run(&run, &history, None, &pre)
            .iter()
            .all(|r| r.verdict == "pass")
    );
    // A faster run passes; a latency metric gated on request regresses when slower.
    let fast = store_run(&mut s, "/fast", now, &record("con4", 120.0, true), true);
    let fast = s.get(fast).unwrap();
    assert!(
        check_run(&fast, &history, None, &Gate::default())
            .iter()
            .all(|r| r.verdict == "pass")
    );
    let lat = Gate {
        metrics: vec!["median_ttft".into()],
        ..Gate::default()
    };
    assert_eq!(
        check_run(&run, &history, None, &lat)[0].verdict,
        "regression"
    );
    // A pinned baseline wins; no history means no baseline (and no failure).
    let pinned = BTreeMap::from([("token_throughput".to_string(), 80.0)]);
    let rows = check_run(&run, &history, Some(&pinned), &Gate::default());
    assert_eq!(rows[0].verdict, "pass");
    assert!(
        check_run(&run, &[], None, &Gate::default())
            .iter()
            .all(|r| r.verdict == "no_baseline")
    );
    // A run marked as the baseline is used as is.
    let marked = history.iter().find(|h| h.run_dir == "/h/4").unwrap().id;
    s.mark(marked, "baseline", None).unwrap();
    let history = s.history(&case, 0, "/new").unwrap();
    let rows = check_run(&run, &history, None, &Gate::default());
    assert!(matches!(rows[0].source, disagg_results::check::Source::Marked(id) if id == marked));
}

#[test]
fn a_pre_merge_regression_is_exempt_when_main_already_regressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("r.sqlite")).unwrap();
    // Five days at 100 tok/s, then the latest post-merge run already at 80.
    for d in 0..5 {
        store_run(
            &mut s,
            &format!("/h/{d}"),
            T0 + d * DAY,
            &record("con4", 100.0, true),
            true,
        );
    }
    store_run(
        &mut s,
        "/h/main",
        T0 + 5 * DAY + 1,
        &record("con4", 80.0, true),
        true,
    );
    let pr = store_run(
        &mut s,
        "/pr",
        T0 + 6 * DAY,
        &record("con4", 80.0, true),
        false,
    );
    let run = s.get(pr).unwrap();
    let history = s.history(&run.match_key, 0, "/pr").unwrap();
    let pre = Gate {
        pre_merge: true,
        ..Gate::default()
    };
    let rows = check_run(&run, &history, None, &pre);
    let tok = rows
        .iter()
        .find(|r| r.metric == "token_throughput")
        .unwrap();
    assert_eq!(tok.verdict, "exempt", "{tok:?}");
    // After merge the same value is a regression.
    let post = check_run(&run, &history, None, &Gate::default());
    assert_eq!(post[0].verdict, "regression");
}

/// Two processes (a run's ending and a `disagg results` command, two runs) opening a new store at
/// once both get it, migrated once: neither fails with "database is locked".
#[test]
fn a_new_store_opened_twice_at_once_is_created_once() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let path = dir.path().join(format!("s{i}.sqlite"));
        let opened: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Store::open(&path).map(|s| s.version().unwrap()))
            })
            .collect();
        for o in opened {
            let version = o.join().unwrap().map_err(|e| e.to_string());
            assert_eq!(version, Ok(SCHEMA_VERSION), "store {i}");
        }
    }
}

/// Parallel sweep points, parallel CI tests and a report reading, all on one store: every run's
/// records land (one transaction per run), and no writer sees "database is locked" — which a
/// read-then-write transaction used to get at once in WAL mode, whatever the busy timeout.
#[test]
fn many_writers_at_once_lose_nothing_and_are_never_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (writers, runs) = (6, 15);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = Store::open(&path).unwrap();
                let job = BTreeMap::from([("s_sweep_point".to_string(), format!("p{w}").into())]);
                let recs: Vec<RunRecord> = ["con1", "con4", "con16"]
                    .iter()
                    .map(|l| record(l, 10.0, true))
                    .collect();
                for r in 0..runs {
                    let run_dir = format!("/runs/w{w}-r{r}");
                    let id = identity(4);
                    let new: Vec<NewRun<'_>> = recs
                        .iter()
                        .map(|rec| NewRun {
                            run_dir: &run_dir,
                            config_name: "cfg",
                            config_hash: "h",
                            identity: &id,
                            job: &job,
                            post_merge: true,
                            created_unix_ms: T0,
                            record: rec,
                        })
                        .collect();
                    s.insert_run(&new).map_err(|e| e.to_string())?;
                    // A reader between writes, as a sweep deciding what is left to run.
                    s.by_job_field("s_sweep_point", &format!("p{w}"))
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok(()));
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.list(None, 100_000).unwrap().len(), writers * runs * 3);
    let mine = s.by_job_field("s_sweep_point", "p3").unwrap();
    assert_eq!(mine.len(), runs * 3);
    assert!(mine.iter().all(|r| r.job["s_sweep_point"] == "p3"));
    assert!(s.by_job_field("s_sweep_point", "nope").unwrap().is_empty());
    assert_eq!(s.by_config_hash("h").unwrap().len(), writers * runs * 3);
}
