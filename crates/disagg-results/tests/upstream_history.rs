//! History that upstream wrote, read back by `disagg check` (compat-fake: `osmem-server`, an
//! in-memory server speaking the OpenSearch API, stands in for upstream's OpenSearch).
//!
//! `tests/data/upstream_history.ndjson` holds upstream-format documents, hand-made from the
//! fields upstream's `test_perf_sanity.py` and `perf_regression_utils.py` write: five days of
//! one case's valid post-merge history, records that must not count (invalid, pre-merge, a
//! baseline document, another case, GPU type or branch, one outside the window), and a second
//! case whose history embeds a baseline and thresholds. The record under test is derived from
//! the upstream config that produced that case, so the case it reads is found by upstream's
//! match keys alone; the baselines are checked against the rule computed by hand.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::BTreeMap;

use disagg_config::{EngineKind, TestConfig};
use disagg_results::baseline::window_start;
use disagg_results::check::{Gate, Source, check_run, verdict};
use disagg_results::identity::{baseline_branch, identity, match_key, match_values};
use disagg_results::opensearch::{self, Document, Target};
use disagg_results::record::{Environment, RunRecord};
use disagg_results::store::StoredRun;
use disagg_test_support::{Osmem, osmem_server};
use serde_json::{Map, Value};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/trtllm-configs/disaggregated/",
    "gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL.yaml"
);
const DATA: &str = include_str!("data/upstream_history.ndjson");
/// Upstream's perf-sanity index (`df-{PERF_SANITY_PROJECT_NAME}-*`).
const INDEX: &str = "df-swdl-trtllm-infra-ci-prod-perf_sanity_info";
/// The record under test: 2026-11-28T12:00:00Z.
const NOW: u64 = 1_795_867_200_000;

fn record(concurrency: u32) -> RunRecord {
    RunRecord {
        record_version: 1,
        tool: "disagg test".into(),
        url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        endpoint: "completions".into(),
        load: format!("con{concurrency}"),
        // benchmark.multi_round 5
        num_prompts: concurrency as usize * 5,
        isl: 1024,
        osl: 1024,
        range_ratio: 0.0,
        streaming: true,
        ignore_eos: true,
        seed: 0,
        environment: Environment::here(),
        metric_definitions: "test".into(),
        interrupted: false,
        valid: true,
        invalid_reasons: Vec::new(),
        metrics: disagg_bench::metrics::compute(&[], &[50.0], None),
        timelines: None,
        gen_step_time_ms: None,
        dataset: None,
        telemetry: None,
    }
}

/// The record of a run of the fixture at `concurrency` on `branch`, with these metrics.
fn new_run(concurrency: u32, branch: &str, post_merge: bool, metrics: &[(&str, f64)]) -> StoredRun {
    let config = TestConfig::load(std::path::Path::new(FIXTURE)).unwrap();
    let identity = identity(
        &config,
        EngineKind::Trtllm,
        Some("GB200"),
        &record(concurrency),
    );
    let job = BTreeMap::from([("s_branch".to_string(), Value::from(branch))]);
    StoredRun {
        id: 1,
        run_dir: "/runs/new".into(),
        label: format!("con{concurrency}"),
        config_name: config.name().to_string(),
        config_hash: "h".into(),
        case_key: String::new(),
        match_key: match_key(&match_values(&identity, &job)),
        created_unix_ms: NOW,
        valid: true,
        stored_valid: true,
        post_merge,
        baseline: false,
        identity,
        job,
        metrics: metrics
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect(),
        tool: "disagg test".into(),
        regression: false,
        regression_info: String::new(),
        embedded: BTreeMap::new(),
    }
}

fn target(url: &str) -> Target {
    let url = url.to_string();
    Target::from_env(&move |k| match k {
        "DISAGG_OPENSEARCH_URL" => Some(url.clone()),
        "DISAGG_OPENSEARCH_INDEX" => Some(INDEX.to_string()),
        _ => None,
    })
    .unwrap()
}

/// Load the upstream documents (each carries its `_id`, as upstream posts them).
fn load(t: &Target) {
    let docs: Vec<Document> = DATA
        .lines()
        .map(|l| {
            let mut body: Map<String, Value> = serde_json::from_str(l).unwrap();
            let id = body.remove("_id").unwrap().as_str().unwrap().to_string();
            Document { id, body }
        })
        .collect();
    assert_eq!(docs.len(), 14);
    t.post(&docs).unwrap();
}

/// The history of `run` as `disagg check` reads it: upstream's query for its case (on the
/// baseline branch before merge) over the run's window.
fn history(t: &Target, run: &StoredRun, pre_merge: bool) -> Vec<StoredRun> {
    let mut case = match_values(&run.identity, &run.job);
    if pre_merge {
        let own = run.job["s_branch"].as_str().unwrap().to_string();
        case.insert(
            "s_branch".into(),
            baseline_branch(&own, &|_: &str| None).into(),
        );
    }
    let docs = t.history(&case, window_start(run.created_unix_ms)).unwrap();
    let mut h: Vec<StoredRun> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| opensearch::from_document(i, d))
        .collect();
    h.sort_by_key(|r| r.created_unix_ms);
    h
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn the_baseline_of_upstreams_history_is_upstreams_rule() {
    let Some(bin) = osmem_server() else { return };
    let server = Osmem::start(&bin);
    let t = target(&server.url);
    load(&t);

    let run = new_run(
        2048,
        "main",
        true,
        &[("token_throughput", 1000.0), ("median_ttft", 55.0)],
    );
    let h = history(&t, &run, false);
    // The six records of the case, and none of the others.
    let mut days: Vec<(String, f64)> = h
        .iter()
        .map(|r| {
            (
                r.identity["@timestamp"].as_str().unwrap()[..10].to_string(),
                r.metrics["token_throughput"],
            )
        })
        .collect();
    days.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    assert_eq!(
        days,
        [
            ("2026-11-23".to_string(), 1000.0),
            ("2026-11-23".to_string(), 1100.0),
            ("2026-11-24".to_string(), 1200.0),
            ("2026-11-25".to_string(), 900.0),
            ("2026-11-26".to_string(), 1150.0),
            ("2026-11-27".to_string(), 1000.0),
        ]
    );

    let gate = Gate {
        metrics: vec!["token_throughput".into(), "median_ttft".into()],
        ..Gate::default()
    };
    let rows = check_run(&run, &h, None, &gate);
    // token_throughput, more is better:
    //   daily means 1050 (1000, 1100), 1200, 900, 1150, 1000 (the regressed record counts)
    //   trailing mean of 3: 1050, 1125, 1050, 1083.33 (3250/3), 1016.67 (3050/3)
    //   sorted 1016.67, 1050, 1050, 1083.33, 1125; P95: k = 0.95 × 4 = 3.8
    //   → 1083.33 + 0.8 × (1125 − 1083.33) = 3250/3 + 100/3 = 3350/3 = 1116.67
    let tok = &rows[0];
    assert!(close(tok.baseline, 3350.0 / 3.0), "{tok:?}");
    assert!(matches!(tok.source, Source::History(6)), "{tok:?}");
    //   1000 < 1116.67 × (1 − 0.05) = 1060.83: a regression after merge.
    assert_eq!((tok.threshold, tok.verdict), (0.05, "regression"));
    // median_ttft, less is better:
    //   daily means 60 (50, 70), 40, 80, 50, 65
    //   trailing mean of 3: 60, 50, 60, 56.67 (170/3), 65 (195/3)
    //   sorted 50, 56.67, 60, 60, 65; P5: k = 0.05 × 4 = 0.2
    //   → 50 + 0.2 × (56.67 − 50) = 50 + 4/3 = 154/3 = 51.33
    let ttft = &rows[1];
    assert!(close(ttft.baseline, 154.0 / 3.0), "{ttft:?}");
    //   55 ≤ 51.33 × 1.05 = 53.9? No: 55 > 53.9, a regression.
    assert_eq!(ttft.verdict, "regression");

    // Before merge, a PR branch reads main's history: 10 %, so 1000 < 1116.67 × 0.9 = 1005 is
    // still a regression, but main's latest record (1000, 2026-11-27) fails that same gate, so
    // the case is exempt.
    let pr = new_run(
        2048,
        "github-pr-7",
        false,
        &[("token_throughput", 1000.0), ("median_ttft", 55.0)],
    );
    let pre = Gate {
        pre_merge: true,
        ..gate.clone()
    };
    let ph = history(&t, &pr, true);
    assert_eq!(ph.len(), 6);
    let rows = check_run(&pr, &ph, None, &pre);
    assert!(close(rows[0].baseline, 3350.0 / 3.0));
    assert_eq!(rows[0].verdict, "exempt", "{rows:?}");
    // median_ttft: 55 ≤ 51.33 × 1.1 = 56.47 passes before merge.
    assert_eq!(rows[1].verdict, "pass", "{rows:?}");
    assert!(verdict(&pr, &ph, None, &pre).regression, "still recorded");
    // Its own branch has no history at all.
    assert!(history(&t, &pr, false).is_empty());
}

#[test]
fn an_embedded_baseline_is_inherited_and_upstream_can_read_our_record() {
    let Some(bin) = osmem_server() else { return };
    let server = Osmem::start(&bin);
    let t = target(&server.url);
    load(&t);

    // Concurrency 1024: its history is at 5000 tok/s, but the latest record with baseline
    // fields (2026-11-25) embeds d_baseline 4000 and a 2 % post-merge threshold.
    let run = new_run(1024, "main", true, &[("token_throughput", 3950.0)]);
    let h = history(&t, &run, false);
    assert_eq!(h.len(), 2);
    let rows = check_run(&run, &h, None, &Gate::default());
    let tok = &rows[0];
    assert!(matches!(tok.source, Source::Embedded(_)), "{tok:?}");
    // 3950 ≥ 4000 × (1 − 0.02) = 3920: passes (the rule's 5000 × 0.95 = 4750 would not).
    assert_eq!(
        (tok.baseline, tok.threshold, tok.verdict),
        (Some(4000.0), 0.02, "pass")
    );
    // The post-merge record inherits the positive fields.
    let v = verdict(&run, &h, None, &Gate::default());
    assert_eq!(
        v.embedded,
        BTreeMap::from([
            ("d_baseline_token_throughput".to_string(), 4000.0),
            ("d_threshold_post_merge_token_throughput".to_string(), 0.02),
            ("d_threshold_pre_merge_token_throughput".to_string(), 0.04),
        ])
    );
    assert!(!v.regression);

    // Our record, exported, is found by upstream's query for the case and carries what the
    // next run inherits.
    let mut ours = run.clone();
    ours.regression = v.regression;
    ours.regression_info = v.info.clone();
    ours.embedded = v.embedded.clone();
    t.post(&[opensearch::document(&ours)]).unwrap();
    let mut later = new_run(1024, "main", true, &[("token_throughput", 3950.0)]);
    later.created_unix_ms = NOW + 86_400_000;
    later.run_dir = "/runs/later".into();
    let h = history(&t, &later, false);
    assert_eq!(h.len(), 3);
    let back = h.iter().find(|r| r.run_dir == "/runs/new").unwrap();
    assert_eq!(back.embedded, v.embedded);
    assert_eq!(
        back.identity["s_test_case_name"],
        run.identity["s_test_case_name"]
    );
    let rows = check_run(&later, &h, None, &Gate::default());
    assert!(matches!(rows[0].source, Source::Embedded(id) if id == back.id));
}
