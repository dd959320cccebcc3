//! Telemetry during a run: every target's series is kept, a target whose `/metrics` is garbage
//! or that does not answer costs one warning each and never the run.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use disagg_bench::record::load_records;
use disagg_bench::runner::Load;
use disagg_bench::telemetry::Target;
use disagg_bench::{BenchPlan, Hooks, execute};
use disagg_sim::scheduler::{CostModel, Limits};
use disagg_sim::{Role, SimConfig};
use disagg_test_support::TestSim;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A server that answers every request with 200 and a body that is not Prometheus text.
async fn garbage_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = "{\"not\": \"prometheus\"} <<<>>> \u{1F600}";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/metrics")
}

#[test]
fn telemetry_series_survive_a_garbage_and_a_missing_target() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(TestSim::start(
        SimConfig {
            role: Role::Both,
            cost: CostModel {
                decode_step_base_ms: 20.0,
                ..CostModel::zero()
            },
            ..SimConfig::default()
        },
        Limits::default(),
    ));
    let garbage = rt.block_on(garbage_server());
    let dir = tempfile::tempdir().unwrap();
    let mut plan = BenchPlan::new(s.url(), "sim");
    plan.loads = vec![Load::Concurrency(2)];
    plan.num_prompts = Some(4);
    plan.isl = 16;
    plan.osl = 40;
    plan.ignore_eos = true;
    plan.out = Some(dir.path().join("results"));
    plan.telemetry_dir = Some(dir.path().join("telemetry"));
    plan.telemetry_interval = 0.1;
    plan.telemetry = vec![
        Target {
            name: "GEN_0".into(),
            url: format!("{}/metrics", s.url()),
        },
        Target {
            name: "BROKEN".into(),
            url: garbage,
        },
        Target {
            name: "GONE".into(),
            url: "http://127.0.0.1:9/metrics".into(),
        },
    ];
    let outcome = execute(&plan, &rt, &Hooks::default()).unwrap();
    assert!(!outcome.any_invalid, "telemetry never fails a run");
    let records = load_records(&dir.path().join("results")).unwrap();
    let t = records[0].1.telemetry.clone().unwrap();
    let gen_ = t.targets.iter().find(|t| t.name == "GEN_0").unwrap();
    assert!(
        gen_.scrapes >= 5,
        "a read every 0.1 s over ~0.8 s: {}",
        gen_.scrapes
    );
    assert!(gen_.running.unwrap().max >= 1.0);
    assert!(gen_.kv_usage.unwrap().max > 0.0);
    let broken = t.targets.iter().find(|t| t.name == "BROKEN").unwrap();
    assert_eq!(broken.scrapes, 0);
    assert_eq!(
        t.warnings.len(),
        2,
        "one warning per bad target: {:?}",
        t.warnings
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("BROKEN") && w.contains("not Prometheus"))
    );
    assert!(t.warnings.iter().any(|w| w.starts_with("GONE")));
    assert!(!t.client_output_tokens_per_s.is_empty());
    let lines = std::fs::read_to_string(dir.path().join("telemetry/con2.jsonl")).unwrap();
    let targets: std::collections::BTreeSet<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["target"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        targets.into_iter().collect::<Vec<_>>(),
        ["BROKEN", "GEN_0", "GONE"],
        "every target has its series (the broken ones their errors)"
    );
}
