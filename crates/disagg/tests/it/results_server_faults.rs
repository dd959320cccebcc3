//! Results-server faults (docs/RELIABILITY.md): a real OpenSearch-compatible server
//! (`osmem-server`) behind a fault-injecting proxy that answers 429 or 503, answers garbage,
//! hangs, is slow, loses the answer of an upload it passed on, or whose server is stopped with
//! SIGSTOP. Every record stays unsent until an upload is confirmed, goes out later, and no
//! record is ever there twice.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use disagg_test_support::{Fault, FaultProxy};

use disagg_test_support::{Osmem, osmem_server};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `disagg` with the store `db`, exporting to `url` with an upload budget of `budget_s`.
fn disagg(db: &Path, url: &str, budget_s: u32) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env("DISAGG_DB", db)
        .env("DISAGG_OPENSEARCH_URL", url)
        .env("DISAGG_OPENSEARCH_TIMEOUT", budget_s.to_string())
        .env_remove("DISAGG_PRE_MERGE")
        .env_remove("BUILD_URL")
        .env_remove("JOB_URL");
    c
}

fn run(db: &Path, url: &str, out: &Path) -> Output {
    disagg(db, url, 3)
        .args(["run", EXAMPLE, "--concurrency", "1,2", "--num-prompts", "2"])
        .args(["--osl", "4", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// `disagg results push`: its output and how long it took.
fn push(db: &Path, url: &str, budget_s: u32) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = disagg(db, url, budget_s)
        .args(["results", "push"])
        .output()
        .unwrap();
    (out, t0.elapsed())
}

/// Every document osmem-server holds: `(s_run_dir, s_label)` → (count, `b_is_valid`).
fn documents(osmem: &str) -> BTreeMap<(String, String), (usize, bool)> {
    let mut resp = ureq::post(&format!("{osmem}/df-disagg-perf-*/_search"))
        .header("Content-Type", "application/json")
        .send(r#"{"size": 1000, "query": {"match_all": {}}}"#)
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let mut out: BTreeMap<(String, String), (usize, bool)> = BTreeMap::new();
    for h in body["hits"]["hits"].as_array().unwrap() {
        let d = &h["_source"];
        let key = (
            d["s_run_dir"].as_str().unwrap().to_string(),
            d["s_label"].as_str().unwrap().to_string(),
        );
        let e = out.entry(key).or_insert((0, true));
        e.0 += 1;
        e.1 = d["b_is_valid"].as_bool().unwrap();
    }
    out
}

fn stored_ids(db: &Path) -> Vec<i64> {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .env("DISAGG_DB", db)
        .args(["results", "export", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_flapping_results_server_loses_no_record_and_duplicates_none() {
    let Some(bin) = osmem_server() else { return };
    let osmem = Osmem::start(&bin);
    let osmem_url = osmem.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = rt.block_on(FaultProxy::start(&osmem_url));
    let url = proxy.url();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");

    // The server answers 503 through a whole run: the test passes, its records stay unsent.
    proxy.set(Fault::Status(503));
    let t0 = Instant::now();
    let a = run(&db, &url, &tmp.path().join("a"));
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert!(text(&a).contains("kept as unsent"), "{}", text(&a));
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());

    // Each fault: the push fails within its budget, says so, keeps both records unsent.
    for fault in [
        Fault::Status(429),
        Fault::Status(503),
        Fault::Malformed,
        Fault::Hang,
    ] {
        proxy.set(fault);
        let (out, took) = push(&db, &url, 3);
        assert_eq!(out.status.code(), Some(1), "{fault:?}: {}", text(&out));
        assert!(
            text(&out).contains("pushing 2 record(s) failed"),
            "{fault:?}: {}",
            text(&out)
        );
        assert!(took < Duration::from_secs(8), "{fault:?} took {took:?}");
    }
    // The server itself stopped (SIGSTOP) behind a working network: the same.
    proxy.set(Fault::Pass);
    let pid = osmem.pid().to_string();
    let stop = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    stop("-STOP");
    let (out, took) = push(&db, &url, 3);
    stop("-CONT");
    assert_eq!(out.status.code(), Some(1), "stopped: {}", text(&out));
    assert!(took < Duration::from_secs(8), "stopped took {took:?}");
    assert!(documents(&osmem_url).is_empty(), "nothing was sent yet");

    // The server takes the upload but its answer is lost: still unsent (nothing confirmed it)...
    proxy.set(Fault::LoseAnswer);
    let (out, _) = push(&db, &url, 3);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(documents(&osmem_url).len(), 2, "the server did index them");
    // ... and a record marked invalid in the meantime replaces its document when sent again.
    let ids = stored_ids(&db);
    let marked = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .env("DISAGG_DB", &db)
        .args(["results", "mark-invalid", &ids[0].to_string()])
        .output()
        .unwrap();
    assert_eq!(marked.status.code(), Some(0), "{}", text(&marked));

    // A slow server (5 s per request) within a budget that allows it: sent.
    proxy.set(Fault::Delay(Duration::from_secs(5)));
    let (out, took) = push(&db, &url, 30);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("pushed 2 record(s)"), "{}", text(&out));
    assert!(took >= Duration::from_secs(5), "{took:?}");

    // Healthy again: nothing is sent twice, and a new run goes out at once.
    proxy.set(Fault::Pass);
    let (out, _) = push(&db, &url, 3);
    assert!(text(&out).contains("pushed 0 record(s)"), "{}", text(&out));
    let b = run(&db, &url, &tmp.path().join("b"));
    assert!(
        text(&b).contains("exported 2 record(s) to OpenSearch"),
        "{}",
        text(&b)
    );
    let docs = documents(&osmem_url);
    assert_eq!(docs.len(), 4, "every record is there: {docs:?}");
    assert!(
        docs.values().all(|(n, _)| *n == 1),
        "a record is there twice: {docs:?}"
    );
    assert_eq!(
        docs.values().filter(|(_, valid)| !valid).count(),
        1,
        "the marked record's document was replaced: {docs:?}"
    );
    drop(proxy);
}
