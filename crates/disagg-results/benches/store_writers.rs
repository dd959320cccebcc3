//! The number that matters: runs lost and `database is locked` errors when many processes write
//! one results store at once (parallel sweep points, parallel CI tests) — both must be 0.
//!
//! `WRITERS` processes (default 8), each this benchmark re-executed as a writer, store `RUNS`
//! runs (default 200) of three records each (con1, con4, con16: one transaction per run) into
//! one fresh store, each run tagged as a sweep point and read back by that tag right after, as a
//! sweep does after every point.
//! Run: `cargo bench -p disagg-results --bench store_writers`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on any setup error"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use disagg_results::record::{Environment, RunRecord};
use disagg_results::store::{NewRun, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(label: &str) -> RunRecord {
    let mut metrics = disagg_bench::metrics::compute(&[], &[50.0, 99.0], None);
    metrics.output_throughput = 100.0;
    metrics.total_token_throughput = 500.0;
    RunRecord {
        record_version: 1,
        tool: "disagg bench".into(),
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
        metric_definitions: "bench".into(),
        interrupted: false,
        valid: true,
        invalid_reasons: Vec::new(),
        metrics,
        timelines: None,
        gen_step_time_ms: None,
        dataset: None,
        telemetry: None,
    }
}

/// One writer: `runs` runs; prints how many failed and the first error.
fn writer(db: &Path, me: usize, runs: usize) {
    let mut store = Store::open(db).unwrap();
    let records: Vec<RunRecord> = ["con1", "con4", "con16"]
        .iter()
        .map(|l| record(l))
        .collect();
    let identity = BTreeMap::from([("s_gpu_type".to_string(), serde_json::Value::from("sim"))]);
    let (mut failed, mut locked, mut first) = (0, 0, None);
    for r in 0..runs {
        let key = format!("w{me}-r{r}");
        let job = BTreeMap::from([(
            "s_sweep_point".to_string(),
            serde_json::Value::from(key.clone()),
        )]);
        let run_dir = format!("/runs/w{me}/r{r}");
        let new: Vec<NewRun<'_>> = records
            .iter()
            .map(|rec| NewRun {
                run_dir: &run_dir,
                config_name: "bench",
                config_hash: "h",
                identity: &identity,
                job: &job,
                post_merge: true,
                created_unix_ms: 1,
                record: rec,
            })
            .collect();
        let result = store
            .insert_run(&new)
            .and_then(|_| store.by_job_field("s_sweep_point", &key))
            .map_err(|e| e.to_string())
            .and_then(|back| match back.len() {
                3 => Ok(()),
                n => Err(format!("read back {n} records of run {r}, not 3")),
            });
        if let Err(e) = result {
            failed += 1;
            locked += usize::from(e.contains("locked"));
            first.get_or_insert(e);
        }
    }
    println!("{failed} {locked} {}", first.unwrap_or_default());
}

fn main() {
    if let Ok(me) = std::env::var("STORE_WRITER") {
        let db = std::env::var("STORE_DB").unwrap();
        writer(Path::new(&db), me.parse().unwrap(), env("RUNS", 200));
        return;
    }
    let (writers, runs) = (env("WRITERS", 8), env("RUNS", 200));
    let dir = std::env::temp_dir().join(format!("disagg-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("results.sqlite");
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let children: Vec<_> = (0..writers)
        .map(|w| {
            Command::new(&exe)
                .env("STORE_WRITER", w.to_string())
                .env("STORE_DB", &db)
                .env("RUNS", runs.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("cannot start a writer")
        })
        .collect();
    let (mut failed, mut locked) = (0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = line.split_whitespace();
        failed += words
            .next()
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(runs);
        locked += words
            .next()
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(0);
        let rest: Vec<&str> = words.collect();
        if !rest.is_empty() {
            println!("writer error: {}", rest.join(" "));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let store = Store::open(&db).unwrap();
    let stored = store.list(None, usize::MAX / 2).unwrap();
    let runs_stored: std::collections::BTreeSet<&str> =
        stored.iter().map(|r| r.run_dir.as_str()).collect();
    let expected = writers * runs;
    println!(
        "store writers: {writers} processes × {runs} runs (3 records each, one transaction per run) in {secs:.2} s ({:.0} runs/s)",
        expected as f64 / secs
    );
    println!(
        "  runs stored {}/{expected} (records {}/{}), lost {}, failed writes {failed}, 'database is locked' {locked}",
        runs_stored.len(),
        stored.len(),
        expected * 3,
        expected - runs_stored.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
