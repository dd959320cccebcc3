//! `disagg run` end to end: the roles as real processes on 127.0.0.1, the results, and the
//! failure behaviour — a worker or the router killed with SIGKILL, an engine that never gets
//! ready, SIGINT to the launcher — each ending fast with a message and no process left behind.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use disagg_test_support::ChildGuard;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

/// `disagg`, with the results store in a directory of this test process (never the user's).
fn disagg() -> Command {
    static DATA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let data = DATA.get_or_init(|| tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env("XDG_DATA_HOME", data.path()).env_remove("DISAGG_DB");
    c
}

/// `disagg run` in the background, its output captured in files of `dir`.
fn start_run(dir: &Path, args: &[&str]) -> ChildGuard {
    let out = std::fs::File::create(dir.join("stdout")).unwrap();
    let err = std::fs::File::create(dir.join("stderr")).unwrap();
    let child = disagg()
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(dir.join("run"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    ChildGuard::new(child)
}

/// Wait for the child to exit, at most `limit`; returns its exit code and how long it took.
fn wait_exit(p: &mut ChildGuard, limit: Duration) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = p.try_wait().unwrap() {
            return (status.code(), t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "disagg run still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn role_json(run: &Path, role: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("rendezvous").join(format!("{role}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn role_pid(run: &Path, role: &str) -> u32 {
    role_json(run, role).unwrap()["pid"].as_u64().unwrap() as u32
}

/// Every pid a run published (roles) plus the engine pids its logs name.
fn run_pids(run: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(run.join("rendezvous")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(role) = name.strip_suffix(".json") {
            pids.push(role_pid(run, role));
        }
    }
    for entry in std::fs::read_dir(run.join("logs")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.split("engine pid ").nth(1) {
                let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
                pids.push(pid.parse().unwrap());
            }
        }
    }
    pids
}

/// Running = present in /proc and not a zombie (a zombie is dead, just not yet reaped by init).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn assert_nothing_left(run: &Path) {
    let pids = run_pids(run);
    assert!(pids.len() >= 4, "roles published: {pids:?}");
    // Grandchildren may need a moment for init to reap them after their SIGKILL.
    let t0 = Instant::now();
    while pids.iter().any(|&p| running(p)) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.into_iter().filter(|&p| running(p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// A finished command's stdout and stderr, for assertion messages.
fn both(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_local_run_measures_every_concurrency_and_writes_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out: Output = disagg()
        .args(["run", EXAMPLE, "--concurrency", "1,3", "--num-prompts", "6"])
        .args(["--isl", "64", "--osl", "8", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("con1 ") && stdout.contains("con3 "),
        "{stdout}"
    );
    assert!(stdout.contains("first request sent"), "{stdout}");
    for role in ["GEN_0", "CTX_0", "DISAGG_SERVER", "BENCHMARK"] {
        assert!(stderr.contains(role), "no event for {role}: {stderr}");
        assert_eq!(role_json(&run, role).unwrap()["state"], "exited", "{role}");
    }
    assert_eq!(read(run.join("rendezvous/benchmark_status.txt")), "Done");
    // The upstream rendezvous files.
    let gen_addr = read(run.join("rendezvous/hostnames/GEN_0.txt"));
    assert!(gen_addr.starts_with("127.0.0.1:"), "{gen_addr}");
    let server_config = read(run.join("rendezvous/server_config.yaml"));
    assert!(
        server_config.contains(&format!("\"{gen_addr}\"")),
        "{server_config}"
    );

    let record: serde_json::Value =
        serde_json::from_str(&read(run.join("results/con3.json"))).unwrap();
    assert_eq!(record["metrics"]["total_requests"], 6);
    assert_eq!(record["metrics"]["total_output_tokens"], 6 * 8);
    assert_eq!(record["valid"], true);
    let summary: serde_json::Value =
        serde_json::from_str(&read(run.join("results/summary.json"))).unwrap();
    assert_eq!(summary["outcome"], "passed");
    assert_eq!(summary["runs"].as_array().unwrap().len(), 2);
    assert!(summary["first_request_s"].as_f64().unwrap() > 0.0);
    let csv = read(run.join("results/results.csv"));
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // The JUnit file, read by a JUnit parser.
    let xml = read(run.join("results/results.xml"));
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
    assert_eq!(suites.suites.len(), 1);
    let suite = &suites.suites[0];
    assert_eq!(suite.name, "local-sim");
    assert_eq!((suite.tests, suite.failures, suite.errors), (2, 0, 0));
    let names: Vec<&str> = suite
        .cases
        .iter()
        .map(|c| c.original_name.as_str())
        .collect();
    assert_eq!(names, ["con1", "con3"]);
    assert_eq!(
        suite.cases[0].classname.as_deref(),
        Some("disagg.local-sim")
    );
    assert!(suite.cases.iter().all(|c| c.status.is_success()));
    let props = &suite.cases[1].properties.vec;
    let requests = props.iter().find(|(k, _)| k == "requests").unwrap();
    assert_eq!(requests.1, "6");
    assert!(
        props.iter().any(|(k, _)| k == "ttft_median_ms"),
        "{props:?}"
    );
    assert_nothing_left(&run);
}

/// Kill `victim` with SIGKILL once the first concurrency's results are in.
fn kill_mid_benchmark(victim: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut p = start_run(
        dir.path(),
        &[
            EXAMPLE,
            "--concurrency",
            "1,4",
            "--multi-round",
            "8",
            "--isl",
            "32",
            "--osl",
            "64",
        ],
    );
    // Each request takes ~0.55 s: con1 is 8 in a row, con4 8 rounds of 4, ~4.5 s each.
    wait_for("con1.json", Duration::from_secs(60), || {
        run.join("results/con1.json").exists()
    });
    let pid = role_pid(&run, victim);
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let (code, took) = wait_exit(&mut p, Duration::from_secs(30));
    let stderr = read(dir.path().join("stderr"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?} to notice");
    assert!(
        stderr.contains(&format!(
            "{victim} (pid {pid}) was killed by signal 9 (SIGKILL)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "last lines of {}",
            run.join("logs").join(format!("{victim}.log")).display()
        )),
        "{stderr}"
    );
    let status = read(run.join("rendezvous/benchmark_status.txt"));
    assert!(
        status.starts_with("Failed: ") && status.contains(victim),
        "{status}"
    );
    // The finished concurrency is kept; the JUnit file says what happened to the other.
    let summary: serde_json::Value =
        serde_json::from_str(&read(run.join("results/summary.json"))).unwrap();
    assert_eq!(summary["outcome"], "failed");
    assert_eq!(summary["runs"][0]["label"], "con1");
    assert_eq!(summary["runs"][0]["status"], "valid");
    assert_ne!(summary["runs"][1]["status"], "valid");
    let xml = read(run.join("results/results.xml"));
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
    let suite = &suites.suites[0];
    assert!(suite.cases[0].status.is_success());
    assert!(!suite.cases[1].status.is_success());
    // Stored, but a failed run is never a baseline: even its finished concurrency is invalid.
    let stored = disagg()
        .args(["results", "export", "--format", "json"])
        .output()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored.stdout).unwrap();
    let root = std::fs::canonicalize(&run).unwrap();
    let mine: Vec<&serde_json::Value> = stored
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["run_dir"] == root.display().to_string())
        .collect();
    assert!(!mine.is_empty(), "the failed run's records are stored");
    assert!(mine.iter().all(|r| r["valid"] == false), "{mine:?}");
    assert_nothing_left(&run);
}

#[test]
fn killing_a_worker_mid_benchmark_fails_the_run_within_seconds() {
    kill_mid_benchmark("GEN_0");
}

#[test]
fn killing_the_router_mid_benchmark_fails_the_run_within_seconds() {
    kill_mid_benchmark("DISAGG_SERVER");
}

#[test]
fn an_engine_that_never_gets_ready_times_out_with_the_role_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/never-ready.yaml");
    let mut p = start_run(dir.path(), &[config, "--ready-timeout", "1.5"]);
    let (code, took) = wait_exit(&mut p, Duration::from_secs(30));
    let stderr = read(dir.path().join("stderr"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr.contains("not ready after 2 s"), "{stderr}");
    assert!(
        stderr.contains("GEN_0 (pid") || stderr.contains("CTX_0 (pid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("engine for"),
        "the engine's output is in the log tail: {stderr}"
    );
    assert!(read(run.join("rendezvous/benchmark_status.txt")).starts_with("Failed: "));
    assert_nothing_left(&run);
}

#[test]
fn sigint_ends_every_role_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut p = start_run(
        dir.path(),
        &[
            EXAMPLE,
            "--concurrency",
            "8",
            "--num-prompts",
            "400",
            "--grace",
            "3",
        ],
    );
    wait_for("the benchmark to run", Duration::from_secs(60), || {
        role_json(&run, "BENCHMARK").is_some_and(|b| b["state"] == "ready")
    });
    let pids = run_pids(&run);
    Command::new("kill")
        .args(["-INT", &p.id().to_string()])
        .status()
        .unwrap();
    let (code, took) = wait_exit(&mut p, Duration::from_secs(30));
    let stderr = read(dir.path().join("stderr"));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(took < Duration::from_secs(3 + 2), "took {took:?}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(read(run.join("rendezvous/benchmark_status.txt")).starts_with("Failed: interrupted"));
    let left: Vec<u32> = pids.into_iter().filter(|&p| running(p)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_nothing_left(&run);
}

#[test]
fn a_run_directory_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("run.json"), "{}").unwrap();
    let out = disagg()
        .args(["run", EXAMPLE, "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds a run"), "{stderr}");
}

#[test]
fn killing_a_context_worker_mid_benchmark_fails_the_run_within_seconds() {
    kill_mid_benchmark("CTX_0");
}

/// Every upstream fixture config, shrunk by the overrides, runs locally on the sim engine: its
/// roles come up (gen-only modes included) and every request succeeds.
#[test]
fn every_upstream_fixture_runs_locally_on_the_sim_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trtllm-configs");
    let mut configs = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                configs.push(p);
            }
        }
    }
    assert!(configs.len() >= 40, "fixtures found: {}", configs.len());
    let tmp = tempfile::tempdir().unwrap();
    // A few at a time: each run is four to a dozen processes.
    for chunk in configs.chunks(4) {
        let runs: Vec<(PathBuf, ChildGuard)> = chunk
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                let out = tmp.path().join(format!(
                    "{}-{i}",
                    cfg.file_stem().unwrap().to_string_lossy()
                ));
                let child = disagg()
                    .arg("run")
                    .arg(cfg)
                    .args([
                        "--engine",
                        "sim",
                        "--concurrency",
                        "2",
                        "--num-prompts",
                        "4",
                        // Their datasets live under a cluster's models root.
                        "--random-prompts",
                    ])
                    // Fixtures of identical settings are one case: no baselines between them.
                    .args([
                        "--isl",
                        "64",
                        "--osl",
                        "4",
                        "--timeout",
                        "60",
                        "--no-store",
                        "--out",
                    ])
                    .arg(&out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (out, ChildGuard::new(child))
            })
            .collect();
        for (out, mut p) in runs {
            let (code, _) = wait_exit(&mut p, Duration::from_secs(90));
            let mut stderr = String::new();
            if let Some(mut e) = p.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
            }
            assert_eq!(code, Some(0), "{}: {stderr}", out.display());
            let summary: serde_json::Value =
                serde_json::from_str(&read(out.join("results/summary.json"))).unwrap();
            assert_eq!(summary["outcome"], "passed", "{}", out.display());
            assert_eq!(summary["runs"][0]["requests"], 4);
        }
    }
}

/// The `command` engine profile end to end: each worker role starts its engine (here `disagg
/// sim` as a separate process) from the template on a port it picked, waits for its /health,
/// publishes it, and stops it at the end.
#[test]
fn workers_run_external_engines_from_a_command_template() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/command-engine.yaml"
    );
    let out = disagg()
        .env("DISAGG_BIN", env!("CARGO_BIN_EXE_disagg"))
        .args([
            "run",
            config,
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for role in ["CTX_0", "GEN_0"] {
        let log = read(run.join("logs").join(format!("{role}.log")));
        assert!(log.contains("engine pid "), "{log}");
        assert!(
            log.contains("disagg sim: listening on http://127.0.0.1:"),
            "{log}"
        );
        assert!(log.contains("engine ready at 127.0.0.1:"), "{log}");
        let opts = read(run.join("engines").join(format!("{role}.yaml")));
        assert!(opts.contains("\"tensor_parallel_size\": 1"), "{opts}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&read(run.join("results/summary.json"))).unwrap();
    assert_eq!(summary["outcome"], "passed");
    assert_nothing_left(&run);
}

/// A stand-in `trtllm-serve` (this bash `script`) in `dir/bin`; the `PATH` that finds it first.
fn trtllm_stand_in(dir: &Path, script: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("trtllm-serve");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Upstream's internal auth: one key per run (`secrets.token_hex(32)`), kept owner-only in the
/// run directory and written where upstream writes it (`server_config.yaml`); the router signs
/// with it and the sim workers check it, so the run passing shows both sides agree. It is in
/// no log, no result, not in run.json, the store, stdout or stderr.
#[test]
fn the_runs_auth_key_is_only_where_upstream_puts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, data) = (dir.path().join("run"), dir.path().join("data"));
    let out = disagg()
        .env("XDG_DATA_HOME", &data)
        .args(["run", EXAMPLE, "--concurrency", "2", "--num-prompts", "4"])
        .args(["--osl", "8", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let key_file = run.join("internal_request_auth_key.txt");
    let key = read(key_file.clone()).trim().to_string();
    assert!(
        key.len() == 64
            && key
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "64 lower-case hex digits, as secrets.token_hex(32)"
    );
    assert_eq!(mode(&key_file), 0o600);
    let server_config = run.join("rendezvous/server_config.yaml");
    assert!(
        read(server_config.clone()).contains(&format!("internal_request_auth_key: \"{key}\"\n"))
    );
    assert_eq!(mode(&server_config), 0o600);
    assert!(!all.contains(&key), "the key reached stdout or stderr");
    let mut leaked = Vec::new();
    for place in [
        "logs",
        "results",
        "run.json",
        "plan.json",
        "rendezvous/hostnames",
    ] {
        let path = run.join(place);
        if path.is_dir() {
            leaked.extend(files_containing(&path, &key));
        } else if read(path.clone()).contains(&key) {
            leaked.push(path);
        }
    }
    for state in ["CTX_0", "GEN_0", "DISAGG_SERVER", "BENCHMARK"] {
        let path = run.join("rendezvous").join(format!("{state}.json"));
        if read(path.clone()).contains(&key) {
            leaked.push(path);
        }
    }
    // The results store (SQLite) and anything else written under the data directory.
    assert!(
        data.exists(),
        "the run stored its results under {}",
        data.display()
    );
    leaked.extend(files_containing(&data, &key));
    assert!(leaked.is_empty(), "the key leaked into {leaked:?}");
    // A run has its own key.
    let again = dir.path().join("again");
    let out = disagg()
        .env("XDG_DATA_HOME", &data)
        .args(["run", EXAMPLE, "--concurrency", "1", "--num-prompts", "1"])
        .args(["--osl", "2", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_ne!(
        read(again.join("internal_request_auth_key.txt")).trim(),
        key
    );
}

/// `router.implementation: trtllm`: DISAGG_SERVER runs upstream's coordinator command,
/// `trtllm-serve disaggregated -c server_config.yaml -t T -r R`, here a stand-in on PATH that
/// execs `disagg router` with the same arguments (it takes upstream's -c/-t/-r).
#[test]
fn the_server_role_can_run_upstreams_coordinator_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = trtllm_stand_in(
        dir.path(),
        "#!/bin/bash\n[[ \"$1\" == disaggregated ]] || exit 64\nshift\nexec \"$DISAGG_BIN\" router \"$@\"\n",
    );
    let run = dir.path().join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/trtllm-router.yaml");
    let out = disagg()
        .env("DISAGG_BIN", env!("CARGO_BIN_EXE_disagg"))
        .env("PATH", path)
        .args([
            "run",
            config,
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--osl",
            "8",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let log = read(run.join("logs/DISAGG_SERVER.log"));
    assert!(
        log.contains("trtllm-serve disaggregated -c ") && log.contains(" -t 10800 -r 10800"),
        "{log}"
    );
    assert!(
        log.contains("disagg router: listening on http://127.0.0.1:"),
        "{log}"
    );
    let server_config = read(run.join("rendezvous/server_config.yaml"));
    let port = server_config
        .lines()
        .find_map(|l| l.strip_prefix("port: "))
        .unwrap();
    assert_ne!(
        port, "0",
        "a concrete port for trtllm-serve: {server_config}"
    );
    assert_eq!(
        read(run.join("rendezvous/hostnames/DISAGG_SERVER.txt")),
        format!("127.0.0.1:{port}")
    );
    assert_nothing_left(&run);
}

/// `engine.type: trtllm`: each worker starts `trtllm-serve MODEL --backend pytorch --config F
/// --host H --port 0 --report_addr FILE` as upstream's era-E harness does; the stand-in on PATH
/// refuses any other flag, requires port 0 with a report file, and execs `disagg sim`, which
/// binds a port and reports it. The role serves what was reported.
#[test]
fn trtllm_workers_bind_port_zero_and_report_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = trtllm_stand_in(
        dir.path(),
        r#"#!/bin/bash
model=$1; shift
while (($#)); do
  case $1 in
    --backend) [[ $2 == pytorch ]] || exit 64; shift 2 ;;
    --config) [[ -s $2 ]] || exit 65
      grep -Eq '"internal_request_auth_key": "[0-9a-f]{64}"' "$2" || { echo "no internal_request_auth_key in $2" >&2; exit 67; }
      shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --report_addr) report=$2; shift 2 ;;
    *) echo "trtllm-serve stand-in: unknown flag $1" >&2; exit 64 ;;
  esac
done
[[ $port == 0 && -n $report ]] || { echo "expected --port 0 --report_addr FILE" >&2; exit 66; }
exec "$DISAGG_BIN" sim --host "$host" --port 0 --report-addr "$report" --role both --zero-cost --model "$model"
"#,
    );
    let run = dir.path().join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/trtllm-engine.yaml");
    let out = disagg()
        .env("DISAGG_BIN", env!("CARGO_BIN_EXE_disagg"))
        .env("PATH", path)
        .args([
            "run",
            config,
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for role in ["CTX_0", "GEN_0"] {
        let log = read(run.join("logs").join(format!("{role}.log")));
        assert!(log.contains(" --port 0 --report_addr "), "{log}");
        let reported = read(run.join("engines").join(format!("{role}.addr")));
        let published = read(run.join("rendezvous/hostnames").join(format!("{role}.txt")));
        assert_eq!(reported.trim(), published, "{log}");
        assert!(!published.ends_with(":0"), "{published}");
    }
    assert_nothing_left(&run);
}

#[test]
fn the_sim_speaks_sglangs_and_vllms_hand_off_in_a_run_with_ports_from_the_plan() {
    let text = read(PathBuf::from(EXAMPLE));
    for protocol in ["sglang", "vllm"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        // A port range of this test's own: two ports per server from a free one.
        let from = disagg_test_support::free_port();
        let config = dir.path().join("local-sim.yaml");
        std::fs::write(
            &config,
            text.replace(
                "engine:\n  type: sim",
                &format!(
                    "router:\n  protocol: {protocol}\nengine:\n  type: sim\n  ports_from: {from}"
                ),
            ),
        )
        .unwrap();
        let out = disagg()
            .arg("run")
            .arg(&config)
            .args([
                "--concurrency",
                "2",
                "--num-prompts",
                "4",
                "--no-store",
                "--out",
            ])
            .arg(&run)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{protocol}: {}", both(&out));
        let spec: serde_json::Value = serde_json::from_str(&read(run.join("run.json"))).unwrap();
        assert_eq!(spec["router"]["handoff"], protocol, "{spec}");
        let ctx = spec["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["role"] == "CTX_0")
            .unwrap();
        assert_eq!(ctx["kv_port"], from, "{spec}");
        // Valid: every request took the hand-off (the sim refuses a decode leg without one,
        // and an SGLang one whose bootstrap port is not its prefill server's).
        let records: serde_json::Value =
            serde_json::from_str(&read(run.join("results/con2.json"))).unwrap();
        assert_eq!(records["valid"], true, "{protocol}: {records}");
        assert_nothing_left(&run);
    }
    // A real engine speaks its own hand-off only.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("local-vllm.yaml");
    let vllm = read(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/local-vllm.yaml"
    )));
    std::fs::write(
        &config,
        vllm.replacen("engine:", "router:\n  protocol: sglang\nengine:", 1),
    )
    .unwrap();
    let out = disagg()
        .arg("run")
        .arg(&config)
        .args(["--no-store", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("router.protocol is sglang but the vllm engine speaks vllm"),
        "{}",
        both(&out)
    );
}

/// The value a worker's log names as its `CUDA_VISIBLE_DEVICES` (its first line).
fn logged_gpus(run: &Path, role: &str) -> String {
    let log = read(run.join(format!("logs/{role}.log")));
    let line = log
        .lines()
        .find(|l| l.contains("CUDA_VISIBLE_DEVICES="))
        .unwrap_or_else(|| panic!("{role} names no GPUs: {log}"));
    line.rsplit("CUDA_VISIBLE_DEVICES=")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn local_workers_on_different_planned_nodes_get_gpus_of_their_own() {
    // CTX_0 (TP4) on node 2, GEN_0 (TP8) on nodes 0-1: on one machine they would otherwise both
    // start at GPU 0.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out: Output = disagg()
        .args([
            "run",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/slurm-ctx4-gen8.yaml"
            ),
            "--concurrency",
            "1",
            "--num-prompts",
            "2",
            "--isl",
            "16",
            "--osl",
            "2",
            "--out",
        ])
        .arg(&run)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let gen_ = logged_gpus(&run, "GEN_0");
    let ctx = logged_gpus(&run, "CTX_0");
    assert_eq!(gen_, "0,1,2,3,4,5,6,7");
    assert_eq!(ctx, "8,9,10,11");
    for role in ["DISAGG_SERVER", "BENCHMARK"] {
        let log = read(run.join(format!("logs/{role}.log")));
        assert!(!log.contains("CUDA_VISIBLE_DEVICES"), "{role}: {log}");
    }
}

#[test]
fn a_multi_gpu_trtllm_server_is_refused_locally_with_the_command_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/slurm-ctx4-gen8.yaml"
    );
    let out: Output = disagg()
        .args(["run", config, "--engine", "trtllm", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr.contains("engine trtllm with CTX_0 (4 GPUs), GEN_0 (8 GPUs): ")
            && stderr.contains("one MPI rank per GPU"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("hint: run it as a Slurm job, one rank per GPU as upstream does: `disagg submit {config} --cluster <profile>`")),
        "{stderr}"
    );
    // Nothing started; the run directory records why.
    assert!(role_json(&run, "GEN_0").is_none());
    assert!(read(run.join("rendezvous/benchmark_status.txt")).starts_with("Failed: "));
}

/// The example config with `extra` appended and `metadata_extra` under `metadata:`, written to
/// `dir/name.yaml`.
fn config_with(dir: &Path, name: &str, metadata_extra: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("metadata:\n", &format!("metadata:\n{metadata_extra}"))
        + extra;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

const ACCURACY: &str = "accuracy:\n  enable_accuracy_test: true\n  tasks:\n    gsm8k:\n      model_args_extra: num_concurrent=4,max_gen_toks=16\n";

#[test]
fn an_accuracy_step_without_lm_eval_stops_the_run_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), "acc", "", ACCURACY);
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let run = dir.path().join("run");
    let out = disagg()
        .arg("run")
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .env("PATH", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`lm_eval` is not on PATH; accuracy.enable_accuracy_test is true"),
        "{stderr}"
    );
    assert!(stderr.contains("pip install"), "{stderr}");
    assert!(!run.exists(), "no run directory, no role started");
}

/// A stand-in for `lm_eval`: records its arguments and environment, then writes a results file
/// shaped as lm_eval writes it (gsm8k, flexible-extract 0.95) under `--output_path`.
fn fake_lm_eval(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("lm_eval");
    std::fs::write(
        &script,
        r#"#!/bin/sh
printf '%s\n' "$@" > "$FAKE_LM_EVAL_ARGS"
out=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--output_path" ]; then out="$2"; fi
  shift
done
mkdir -p "$out/sim-llama-8b"
cat > "$out/sim-llama-8b/results_2026-01-01T00-00-00.json" <<'JSON'
{"results": {"gsm8k": {"alias": "gsm8k",
  "exact_match,strict-match": 0.93, "exact_match_stderr,strict-match": 0.007,
  "exact_match,flexible-extract": 0.95, "exact_match_stderr,flexible-extract": 0.006}},
 "n-samples": {"gsm8k": {"original": 1319, "effective": 1319}}}
JSON
"#,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn the_accuracy_step_runs_lm_eval_against_the_router_and_gates_its_scores() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_lm_eval(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let args = |name: &str| dir.path().join(format!("args-{name}"));
    let gate = |expected: &str| {
        format!("  accuracy:\n    datasets:\n    - name: gsm8k\n      expected_value: {expected}\n")
    };
    let mut runs = Vec::new();
    for (name, expected) in [("pass", "0.95"), ("fail", "0.99")] {
        let env = format!(
            "  env_var: {{FAKE_LM_EVAL_ARGS: {}}}\n",
            args(name).display()
        );
        let accuracy = ACCURACY.replace("  tasks:\n", &format!("{env}  tasks:\n"));
        let config = config_with(dir.path(), name, &gate(expected), &accuracy);
        let run = dir.path().join(format!("run-{name}"));
        let out = disagg()
            .arg("run")
            .arg(&config)
            .args([
                "--concurrency",
                "2",
                "--num-prompts",
                "2",
                "--osl",
                "4",
                "--out",
            ])
            .arg(&run)
            .env("PATH", &path)
            .output()
            .unwrap();
        runs.push((run, out));
    }
    let (run, out) = &runs[0];
    assert_eq!(out.status.code(), Some(0), "{}", both(out));
    let argv = read(args("pass"));
    let lines: Vec<&str> = argv.lines().collect();
    assert_eq!(
        &lines[..4],
        ["--model", "local-completions", "--tasks", "gsm8k"]
    );
    let router = role_json(run, "DISAGG_SERVER").unwrap();
    let base_url = format!(
        "base_url=http://127.0.0.1:{}/v1/completions,",
        router["port"].as_u64().unwrap()
    );
    assert!(
        lines[5].starts_with("model=sim-llama-8b,") && lines[5].contains(&base_url),
        "{argv}"
    );
    assert!(
        lines[5].ends_with(",num_concurrent=4,max_gen_toks=16"),
        "{}",
        lines[5]
    );
    assert_eq!(lines[6..8], ["--log_samples", "--output_path"]);
    let record: serde_json::Value =
        serde_json::from_str(&read(run.join("results/accuracy.json"))).unwrap();
    assert_eq!(record["runs"][0]["exit_code"], 0);
    assert_eq!(record["runs"][0]["scores"].as_array().unwrap().len(), 2);
    // 95 − 1.6449 × sqrt(5000 / 1319) = 91.80 ≤ 95.
    assert_eq!(record["verdicts"][0]["passed"], true);
    // A reference of 0.99: 95.00 < 95.80, the run fails with the verdict.
    let (run, out) = &runs[1];
    assert_eq!(out.status.code(), Some(1), "{}", both(out));
    assert!(
        both(out)
            .contains("gsm8k flexible-extract: actual 95.00%, expected 99.00%, threshold 95.80%"),
        "{}",
        both(out)
    );
    let record: serde_json::Value =
        serde_json::from_str(&read(run.join("results/accuracy.json"))).unwrap();
    assert_eq!(record["verdicts"][0]["passed"], false);
}

#[test]
fn gen_only_runs_once_at_the_first_concurrency_and_records_the_step_time() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("  mode: e2e\n", "  mode: gen_only\n");
    let config = dir.path().join("gen-only.yaml");
    std::fs::write(&config, text).unwrap();
    let run = dir.path().join("run");
    let out = disagg()
        .arg("run")
        .arg(&config)
        .args(["--isl", "32", "--osl", "16", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The example's concurrencies are 1 4 16 with multi_round 4: gen-only runs con1, once.
    assert!(
        stdout.contains("con1") && !stdout.contains("con4"),
        "{stdout}"
    );
    let log = read(run.join("logs/BENCHMARK.log"));
    assert!(
        log.contains("Average Per Iter Device Step Time (ms): 8.05\n"),
        "{log}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&read(run.join("results/con1.json"))).unwrap();
    assert_eq!(record["metrics"]["total_requests"], 1);
    let mean = record["gen_step_time_ms"]["mean"].as_f64().unwrap();
    // The sim's default cost: 8 ms a step plus 0.05 ms a decoding sequence.
    assert!((mean - 8.05).abs() < 1e-9, "{mean}");
    assert!(read(run.join("logs/GEN_0.log")).contains("prev_device_step_time = 8.05ms"));
}

#[test]
fn speculative_decoding_on_the_sim_gives_upstreams_d_al() {
    let dir = tempfile::tempdir().unwrap();
    // MTP with 3 drafts, 1 accepted (forced, as upstream's configs do): the generation server
    // emits the context's token and 2 decoded ones, then 2 a step: 8 tokens in 4 steps.
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace(
            "    stream_interval: 1\n",
            "    stream_interval: 1\n    speculative_config: {decoding_type: MTP, num_nextn_predict_layers: 3}\n",
        )
        .replace(
            "TLLM_LOG_LEVEL=INFO",
            "TLLM_LOG_LEVEL=INFO TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=1",
        );
    let config = dir.path().join("mtp.yaml");
    std::fs::write(&config, text).unwrap();
    let run = dir.path().join("run");
    let out = disagg()
        .arg("run")
        .arg(&config)
        .args([
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--isl",
            "32",
            "--osl",
            "8",
        ])
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let log = read(run.join("logs/BENCHMARK.log"));
    assert!(
        log.contains("Mean Avg Decoded Tokens per Iter:        2.00"),
        "{log}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&read(run.join("results/con2.json"))).unwrap();
    let per_iter = &record["metrics"]["avg_decoded_tokens_per_iter"];
    assert_eq!(per_iter["summary"]["mean"], 2.0);
    assert_eq!(per_iter["summary"]["count"], 4);
}
