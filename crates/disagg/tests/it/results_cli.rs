//! The results store through the CLI: `disagg run` stores and checks, a deliberately slower sim
//! regresses, invalid runs leave the baseline, and the OpenSearch export round-trips through
//! `osmem-server` (an OpenSearch-API-compatible in-memory server), including an upload that
//! fails first and is pushed later.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use disagg_test_support::{Osmem, free_port, osmem_server};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

fn disagg(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env("DISAGG_DB", db)
        .env_remove("DISAGG_OPENSEARCH_URL")
        .env_remove("DISAGG_PRE_MERGE")
        .env_remove("BUILD_URL")
        .env_remove("JOB_URL");
    c
}

fn run(db: &Path, out: &Path, extra: &[&str]) -> Output {
    disagg(db)
        .args([
            "run",
            EXAMPLE,
            "--concurrency",
            "4",
            "--num-prompts",
            "16",
            "--osl",
            "16",
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_slower_sim_fails_the_check_and_invalid_runs_leave_the_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let first = run(&db, &tmp.path().join("a"), &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(text(&first).contains("no baseline"), "{}", text(&first));
    // Twice the step time halves the token throughput.
    let slow = run(
        &db,
        &tmp.path().join("b"),
        &["--sim", "decode_step_base_ms=16"],
    );
    let out = text(&slow);
    assert_eq!(slow.status.code(), Some(1), "{out}");
    assert!(out.contains("regressed against its baseline"), "{out}");
    assert!(out.contains("con4: This run is regressed"), "{out}");
    for metric in ["token_throughput", "total_token_throughput"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!(" {metric} ")))
            .unwrap_or_else(|| panic!("no row for {metric}: {out}"));
        assert!(line.ends_with("REGRESSION"), "{line}");
    }
    // disagg check says the same, writes regression.yaml, exits 1.
    let check = disagg(&db)
        .arg("check")
        .arg(tmp.path().join("b"))
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("regression: con4 token_throughput"),
        "{}",
        text(&check)
    );
    // With the telemetry diagnosis of the regressed run, as the report shows it.
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("con4: This run is regressed"), "{stdout}");
    let yaml = std::fs::read_to_string(tmp.path().join("b/results/regression.yaml")).unwrap();
    assert!(
        yaml.contains("regressed: true") && yaml.contains("verdict: regression"),
        "{yaml}"
    );
    // The fast run passes against the slow one.
    let check_a = disagg(&db)
        .arg("check")
        .arg(tmp.path().join("a"))
        .output()
        .unwrap();
    assert_eq!(check_a.status.code(), Some(0), "{}", text(&check_a));
    // Marking the fast run invalid removes the only baseline: no baseline, no failure.
    let list = disagg(&db)
        .args(["results", "export", "--format", "json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let fast_id = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_dir"].as_str().unwrap().ends_with("/a"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let mark = disagg(&db)
        .args([
            "results",
            "mark-invalid",
            &fast_id.to_string(),
            "--note",
            "bad node",
        ])
        .output()
        .unwrap();
    assert_eq!(mark.status.code(), Some(0), "{}", text(&mark));
    let check = disagg(&db).args(["check", "--latest"]).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(text(&check).contains("no baseline"), "{}", text(&check));
    // A pinned baseline file gates on exactly its values.
    let pinned = tmp.path().join("baseline.yaml");
    std::fs::write(&pinned, "token_throughput: 100000\n").unwrap();
    let check = disagg(&db)
        .args([
            "check",
            "--latest",
            "--metrics",
            "token_throughput",
            "--baseline",
        ])
        .arg(&pinned)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    std::fs::write(&pinned, "tokens_per_second: 1\n").unwrap();
    let bad = disagg(&db)
        .args(["check", "--latest", "--baseline"])
        .arg(&pinned)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("unknown metric `tokens_per_second`"),
        "{}",
        text(&bad)
    );
    // Undo the mark: the fast run is the baseline again, as the report's band shows.
    let unmark = disagg(&db)
        .args(["results", "mark-valid", &fast_id.to_string()])
        .output()
        .unwrap();
    assert_eq!(unmark.status.code(), Some(0), "{}", text(&unmark));
    report(&db, tmp.path());
}

/// The report of the slow run: self-contained HTML with the tables and charts; a PDF with pages.
fn report(db: &Path, tmp: &Path) {
    let out = disagg(db)
        .arg("report")
        .arg(tmp.join("b"))
        .arg("--history")
        .arg("--compare")
        .arg(tmp.join("a"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(tmp.join("b/results/report.html")).unwrap();
    for needle in [
        "<h2>Summary</h2>",
        "<h2>Regression check</h2>",
        "TTFT vs concurrency",
        "TPOT vs concurrency",
        "ITL vs concurrency",
        "E2EL vs concurrency",
        "Pareto: throughput per GPU vs per user",
        "con4 token_throughput history",
        "class=\"band\"",
        "Comparison for output tok/s",
        "configuration_1",
        "<h2>Config</h2>",
        // Every worker and the router were read during each run.
        "<h2>Telemetry</h2>",
        "KV-cache usage — con4",
        "Requests queued — con4",
        "Client output throughput — con4",
        "<td class=\"l\">CTX_0</td>",
        "<td class=\"l\">GEN_0</td>",
        "<td class=\"l\">DISAGG_SERVER</td>",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    assert!(
        html.matches("<svg").count() >= 14,
        "charts: {}",
        html.matches("<svg").count()
    );
    assert!(!html.contains("<script"), "self-contained: no scripts");
    assert!(
        !html.contains("src=\"http"),
        "self-contained: no remote resources"
    );
    // PDF through headless Chromium, checked with poppler.
    let has = |b: &str| {
        Command::new(b)
            .arg(if b == "pdftoppm" { "-v" } else { "--version" })
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(has("chromium") && has("pdftoppm")) {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_CHROMIUM").is_none(),
            "DISAGG_REQUIRE_CHROMIUM is set but chromium or pdftoppm is missing"
        );
        eprintln!("SKIPPED: the PDF part (no chromium or pdftoppm)");
        return;
    }
    let out = disagg(db)
        .arg("report")
        .arg(tmp.join("b"))
        .args(["--history", "--pdf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pdf = tmp.join("b/results/report.pdf");
    let info = Command::new("pdfinfo").arg(&pdf).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pages >= 2, "{info}");
    assert!(info.contains("A4"), "{info}");
    let png = Command::new("pdftoppm")
        .args(["-r", "30", "-png"])
        .arg(&pdf)
        .arg(tmp.join("page"))
        .status()
        .unwrap();
    assert!(png.success());
    let rendered = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("page"))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 1000))
        .count();
    assert_eq!(rendered, pages, "every page renders to a non-empty image");
}

#[test]
fn results_round_trip_through_opensearch_and_a_failed_upload_is_pushed_later() {
    let Some(bin) = osmem_server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let dead = format!("http://127.0.0.1:{}", free_port());
    // The server is down: the run passes, the upload is kept as unsent.
    let out = disagg(&db)
        .env("DISAGG_OPENSEARCH_URL", &dead)
        .env("DISAGG_OPENSEARCH_USER", "ci")
        .env("DISAGG_OPENSEARCH_PASSWORD", "hunter2-secret")
        .args([
            "run",
            EXAMPLE,
            "--concurrency",
            "1,2",
            "--num-prompts",
            "2",
            "--osl",
            "4",
        ])
        .arg("--out")
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("OpenSearch export failed") && all.contains("kept as unsent"),
        "{all}"
    );
    assert!(
        !all.contains("hunter2-secret"),
        "a credential leaked: {all}"
    );
    for entry in walk(&tmp.path().join("run")) {
        let content = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&content).contains("hunter2-secret"),
            "a credential leaked into {}",
            entry.display()
        );
    }
    // Now the server is up: `results push` sends both records.
    let server = Osmem::start(&bin);
    let url = server.url.clone();
    let push = disagg(&db)
        .env("DISAGG_OPENSEARCH_URL", &url)
        .args(["results", "push"])
        .output()
        .unwrap();
    assert_eq!(push.status.code(), Some(0), "{}", text(&push));
    assert!(
        text(&push).contains("pushed 2 record(s)"),
        "{}",
        text(&push)
    );
    let again = disagg(&db)
        .env("DISAGG_OPENSEARCH_URL", &url)
        .args(["results", "push"])
        .output()
        .unwrap();
    assert!(
        text(&again).contains("pushed 0 record(s)"),
        "nothing is sent twice: {}",
        text(&again)
    );
    // Read them back with upstream's kind of query.
    let query = serde_json::json!({
        "size": 100,
        "query": {"bool": {"must": [
            {"term": {"b_is_valid": true}},
            {"term": {"s_config_name": "local-sim"}},
            {"range": {"ts_created": {"gte": 0}}}
        ]}}
    });
    let mut resp = ureq::post(&format!("{url}/df-disagg-perf-*/_search"))
        .header("Content-Type", "application/json")
        .send(query.to_string())
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let hits = body["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{body}");
    let mut cons: Vec<i64> = hits
        .iter()
        .map(|h| h["_source"]["l_concurrency"].as_i64().unwrap())
        .collect();
    cons.sort_unstable();
    assert_eq!(cons, [1, 2]);
    for h in hits {
        let d = &h["_source"];
        assert!(d["d_token_throughput"].as_f64().unwrap() > 0.0, "{d}");
        assert_eq!(d["s_runtime"], "multi_node_disagg_server");
        assert_eq!(d["s_gpu_type"], "sim");
        assert!(d["ts_created"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(h["_id"].as_str().unwrap().len(), 32, "md5 ids");
        // Upstream's identity: 2 prompts at concurrency c are 2 / c iterations.
        let c = d["l_concurrency"].as_u64().unwrap();
        let client = format!("con{c}_iter{}_isl256_osl4", 2 / c);
        assert_eq!(d["s_client_name"], client.as_str());
        assert_eq!(
            d["s_test_case_name"],
            format!("e2e-local-sim-{client}").as_str()
        );
        assert_eq!(d["s_ctx_kv_cache_dtype"], "fp8");
        assert_eq!(d["s_engine"], "sim");
        assert_eq!(d["b_is_regression"], false);
    }
    // Another machine with an empty store checks against the OpenSearch history: its slower
    // run regresses against the runs pushed above.
    let other_db = tmp.path().join("other.sqlite");
    let slow = disagg(&other_db)
        .env("DISAGG_OPENSEARCH_URL", &url)
        .args([
            "run",
            EXAMPLE,
            "--concurrency",
            "1,2",
            "--num-prompts",
            "2",
            "--osl",
            "4",
        ])
        .args(["--sim", "decode_step_base_ms=24", "--out"])
        .arg(tmp.path().join("slow"))
        .output()
        .unwrap();
    let all = text(&slow);
    assert_eq!(slow.status.code(), Some(1), "{all}");
    assert!(all.contains("REGRESSION"), "{all}");
    let yaml = std::fs::read_to_string(tmp.path().join("slow/results/regression.yaml")).unwrap();
    assert!(yaml.contains("source: history of 1 runs"), "{yaml}");
    // Checked before the export, as upstream: the slow run's documents carry the verdict.
    let query = serde_json::json!({
        "size": 100,
        "query": {"bool": {"must": [{"term": {"b_is_regression": true}}]}}
    });
    let mut resp = ureq::post(&format!("{url}/df-disagg-perf-*/_search"))
        .header("Content-Type", "application/json")
        .send(query.to_string())
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let hits = body["hits"]["hits"].as_array().unwrap();
    assert!(!hits.is_empty(), "{body}");
    for h in hits {
        let d = &h["_source"];
        assert!(d["s_run_dir"].as_str().unwrap().ends_with("/slow"), "{d}");
        assert!(
            d["s_regression_info"]
                .as_str()
                .unwrap()
                .starts_with("Regression in e2e-local-sim-con"),
            "{d}"
        );
    }
    drop(server);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The config's `results.db` is where `disagg run` stores, unless --db or $DISAGG_DB say
/// otherwise.
#[test]
fn the_config_names_the_store_when_no_flag_or_variable_does() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("from-config.sqlite");
    let yaml =
        std::fs::read_to_string(EXAMPLE).unwrap() + &format!("results:\n  db: {}\n", db.display());
    let config = tmp.path().join("local-sim.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .env_remove("DISAGG_DB")
        .env_remove("DISAGG_OPENSEARCH_URL")
        .env("XDG_DATA_HOME", tmp.path().join("xdg"))
        .arg("run")
        .arg(&config)
        .args([
            "--concurrency",
            "1",
            "--num-prompts",
            "1",
            "--osl",
            "4",
            "--out",
        ])
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(db.exists(), "the store named by the config was not written");
    // The run wrote its report, with the check table read from the same store.
    let report = tmp.path().join("run/results/report.html");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("report: {}", report.display())),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read_to_string(&report)
            .unwrap()
            .contains("token_throughput")
    );
    // `check` and `report` of that run directory read the store its config names too.
    for args in [&["check"][..], &["report"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
            .env_remove("DISAGG_DB")
            .env("XDG_DATA_HOME", tmp.path().join("xdg"))
            .args(args)
            .arg(tmp.path().join("run"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    assert!(!tmp.path().join("xdg/disagg/results.sqlite").exists());
}
