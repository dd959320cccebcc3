//! What a person reads, pinned with snapshots: the summary table, `summary.json`, the JUnit
//! file, the check table and `regression.yaml`, from hand-made records.

use std::collections::BTreeMap;

use disagg_results::check::{Gate, check_run, regression_yaml, table};
use disagg_results::record::{Environment, RunRecord};
use disagg_results::store::StoredRun;
use disagg_results::summary::{RunFacts, Summary};

fn record(label: &str, out_tok_s: f64, valid: bool) -> RunRecord {
    let mut metrics = disagg_bench::metrics::compute(&[], &[50.0, 99.0], None);
    metrics.total_requests = 16;
    metrics.completed = if valid { 16 } else { 12 };
    metrics.failed = 16 - metrics.completed;
    metrics.request_throughput = out_tok_s / 64.0;
    metrics.output_throughput = out_tok_s;
    metrics.total_token_throughput = out_tok_s * 5.0;
    metrics.user_throughput = out_tok_s / 4.0;
    metrics.ttft_ms.median = 41.25;
    metrics.ttft_ms.percentiles = vec![(50.0, 41.25), (99.0, 60.5)];
    metrics.tpot_ms.median = 8.06;
    metrics.itl_ms.median = 8.1;
    metrics.e2el_ms.median = 548.5;
    metrics.e2el_ms.percentiles = vec![(50.0, 548.5), (99.0, 592.1)];
    RunRecord {
        record_version: 1,
        tool: "disagg test".into(),
        url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        endpoint: "completions".into(),
        load: label.into(),
        num_prompts: 16,
        isl: 256,
        osl: 64,
        range_ratio: 0.0,
        streaming: true,
        ignore_eos: true,
        seed: 0,
        environment: Environment {
            host: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpus: 2,
            started_unix_s: 0,
        },
        metric_definitions: "test".into(),
        interrupted: !valid,
        valid,
        invalid_reasons: if valid {
            vec![]
        } else {
            vec!["4 of 16 requests failed".into()]
        },
        metrics,
        timelines: None,
        gen_step_time_ms: None,
        dataset: None,
        telemetry: None,
    }
}

fn summary(failure: Option<&str>) -> Summary {
    let planned = vec!["con1".to_string(), "con4".to_string(), "con16".to_string()];
    Summary::build(
        &RunFacts {
            config: "local-sim",
            run_dir: "/runs/local-sim-20261128T173211",
            planned: &planned,
            failure,
            started_unix_ms: 1_795_886_507_000,
            duration_s: 7.3,
            first_request_s: Some(0.02),
        },
        &[record("con1", 119.9, true), record("con4", 446.5, false)],
    )
}

#[test]
fn summary_table_json_and_junit() {
    let s = summary(Some(
        "GEN_0 (pid 1568) was killed by signal 9 (SIGKILL) after 2.1 s",
    ));
    insta::assert_snapshot!("summary_table", s.table());
    insta::assert_snapshot!("summary_json", serde_json::to_string_pretty(&s).unwrap());
    insta::assert_snapshot!("junit", disagg_results::junit::render(&s));
}

fn stored(id: i64, at: u64, tok: f64) -> StoredRun {
    StoredRun {
        id,
        run_dir: format!("/runs/{id}"),
        label: "con4".into(),
        config_name: "local-sim".into(),
        config_hash: "h".into(),
        case_key: "k".into(),
        match_key: "m".into(),
        created_unix_ms: at,
        valid: true,
        stored_valid: true,
        post_merge: true,
        baseline: false,
        identity: BTreeMap::new(),
        job: BTreeMap::new(),
        metrics: BTreeMap::from([
            ("token_throughput".to_string(), tok),
            ("total_token_throughput".to_string(), tok * 5.0),
        ]),
        tool: "disagg test".into(),
        regression: false,
        regression_info: String::new(),
        embedded: BTreeMap::new(),
    }
}

#[test]
fn check_table_and_regression_yaml() {
    const DAY: u64 = 86_400_000;
    let history: Vec<StoredRun> = (0..4)
        .map(|d| stored(d, 1_795_000_000_000 + d as u64 * DAY, 448.0))
        .collect();
    let slow = stored(9, 1_795_000_000_000 + 5 * DAY, 197.1);
    let rows = check_run(&slow, &history, None, &Gate::default());
    insta::assert_snapshot!("check_table", table(&rows));
    insta::assert_snapshot!("regression_yaml", regression_yaml("local-sim", &rows));
}
