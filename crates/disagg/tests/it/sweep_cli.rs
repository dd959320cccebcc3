//! `disagg sweep` and `disagg ci --parallel`: a local sweep on the sim whose frontier is checked
//! against one computed by hand from the stored records; a sweep killed mid-way and resumed;
//! the SLA answer against the concurrency the sim's documented cost model predicts; and, on the
//! local Slurm, `--max-parallel` and `ci --parallel 2` counted in `squeue`, and `--retry-failed`
//! under a node failure and a killed worker (docs/RELIABILITY.md).

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::slurm_cli::{clusters, disagg as slurm_disagg, exclusive, slurm, slurm_conf};
use crate::slurm_faults::{DownNode, Job};
use crate::support::{log_tail, repo_root};

/// One local sweep at a time: each runs a whole test per point on this machine's two cores, and
/// the SLA test measures latencies.
fn one_local_sweep() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn disagg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env_remove("DISAGG_DB");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A 2 × 2 × 2 spec over the local example: generation servers, their batch limit, the
/// context's tensor parallelism.
fn eight_point_spec(dir: &Path) -> PathBuf {
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "base: {}\naxes:\n  hardware.num_gen_servers: [1, 2]\n  worker_config.gen.max_batch_size: [2, 64]\n  worker_config.ctx.tensor_parallel_size: [1, 2]\nconcurrency: [1, 4]\n",
            repo_root().join("examples/local-sim.yaml").display()
        ),
    )
    .unwrap();
    spec
}

const SMALL: &[&str] = &["--num-prompts", "4", "--isl", "32", "--osl", "8"];

/// GPUs the servers of a stored record use, from its identity.
fn server_gpus(identity: &Value) -> f64 {
    let n = |k: &str| identity[k].as_f64().unwrap_or(1.0);
    n("l_num_ctx_servers") * n("l_ctx_tp") * n("l_ctx_pp") * n("l_ctx_cp")
        + n("l_num_gen_servers") * n("l_gen_tp") * n("l_gen_pp") * n("l_gen_cp")
}

#[test]
fn a_local_sweep_answers_with_the_frontier_of_its_stored_records() {
    let _one = one_local_sweep();
    let tmp = tempfile::tempdir().unwrap();
    let spec = eight_point_spec(tmp.path());
    let (out, db) = (tmp.path().join("sweep"), tmp.path().join("results.sqlite"));
    let run = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db)
        .args(SMALL)
        .args(["--sla", "p99_ttft_ms=5000"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let sweep = json(&out.join("sweep.json"));
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    for p in points {
        assert_eq!(p["state"], "passed", "{p}");
        assert!(Path::new(p["config"].as_str().unwrap()).exists());
    }
    // The frontier by hand: every stored record of the sweep, per GPU from its identity.
    let export = disagg()
        .args(["results", "export", "--format", "json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", text(&export));
    let stored: Vec<Value> = serde_json::from_slice(&export.stdout).unwrap();
    let id = sweep["sweep_id"].as_str().unwrap();
    let mine: Vec<(String, u32, f64, f64)> = stored
        .iter()
        .filter(|r| r["job"]["s_sweep_id"] == id && r["valid"] == true)
        .map(|r| {
            (
                r["config_name"].as_str().unwrap().to_string(),
                r["label"].as_str().unwrap()[3..].parse().unwrap(),
                r["metrics"]["user_throughput"].as_f64().unwrap(),
                r["metrics"]["token_throughput"].as_f64().unwrap() / server_gpus(&r["identity"]),
            )
        })
        .collect();
    assert_eq!(mine.len(), 16, "8 points × 2 concurrencies");
    let dominated = |a: &(String, u32, f64, f64)| {
        mine.iter()
            .any(|b| b.2 >= a.2 && b.3 >= a.3 && (b.2 > a.2 || b.3 > a.3))
    };
    let by_hand: BTreeSet<(String, u32)> = mine
        .iter()
        .filter(|m| !dominated(m))
        .map(|m| (m.0.clone(), m.1))
        .collect();
    let frontier = json(&out.join("frontier.json"));
    let answered: BTreeSet<(String, u32)> = frontier["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["point"].as_str().unwrap().to_string(),
                m["concurrency"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert!(!by_hand.is_empty());
    assert_eq!(answered, by_hand);
    assert_eq!(frontier["measurements"], 16);
    // Every measurement meets this SLA: the best is the most per GPU of all.
    let best = &sweep["best"];
    let most = mine.iter().map(|m| m.3).fold(f64::MIN, f64::max);
    assert!(
        (best["output_tok_s_per_gpu"].as_f64().unwrap() - most).abs() < 1e-9,
        "{best}"
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("best under the SLA"), "{stdout}");
    assert!(
        stdout.contains(&format!("config: {}", out.join("points").display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Pareto frontier") && html.contains("SLA answer"));
    // `disagg report` of the sweep's directory writes its page again.
    std::fs::remove_file(out.join("report.html")).unwrap();
    let report = disagg().arg("report").arg(&out).output().unwrap();
    assert!(report.status.success(), "{}", text(&report));
    assert!(out.join("report.html").exists());
    // A finished sweep resumes at once: nothing left to run.
    let t0 = Instant::now();
    let again = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db)
        .args(SMALL)
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 runs made"));
    // Without --resume the directory is not reused.
    let refused = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
}

/// Processes whose command line names `needle` (the sweep's children).
fn processes_naming(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_sweep_killed_midway_completes_only_the_missing_points_on_resume() {
    let _one = one_local_sweep();
    let tmp = tempfile::tempdir().unwrap();
    let spec = eight_point_spec(tmp.path());
    let (out, db) = (tmp.path().join("sweep"), tmp.path().join("results.sqlite"));
    let log = tmp.path().join("first.log");
    let mut first = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db)
        .args(SMALL)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no chance to clean up) once three points have passed.
    let passed = |out: &Path| -> BTreeSet<String> {
        std::fs::read_dir(out.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("results/summary.json"))
                    .is_ok_and(|s| s.contains("\"outcome\": \"passed\""))
            })
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                Some(name.rsplit_once('-')?.0.to_string())
            })
            .collect()
    };
    let t0 = Instant::now();
    while passed(&out).len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{}",
            log_tail(&log)
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "ended early: {}",
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // Its run in flight ends with it (the runs follow their launcher), leaving nothing behind.
    let needle = out.display().to_string();
    let t1 = Instant::now();
    while !processes_naming(&needle).is_empty() {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "children outlived the sweep"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = passed(&out);
    assert!((3..8).contains(&done.len()), "{done:?}");
    let again = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db)
        .args(SMALL)
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let sweep = json(&out.join("sweep.json"));
    let points = sweep["points"].as_array().unwrap();
    let rerun: BTreeSet<String> = points
        .iter()
        .filter(|p| !p["runs"].as_array().unwrap().is_empty())
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let skipped: BTreeSet<String> = points
        .iter()
        .filter(|p| p["runs"].as_array().unwrap().is_empty())
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        skipped, done,
        "the points stored valid are the ones skipped"
    );
    assert_eq!(rerun.len(), 8 - done.len(), "only the missing points ran");
    assert!(points.iter().all(|p| p["state"] == "passed"));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&format!("{} runs made", 8 - done.len()))
    );
}

#[test]
fn the_sla_answer_on_the_sim_is_the_concurrency_its_cost_model_predicts() {
    let _one = one_local_sweep();
    let tmp = tempfile::tempdir().unwrap();
    // A generation step costs `base + per_seq × decoding` (docs/simulator.md, "Cost model"); prefill and
    // the KV hand-off are free here. C requests sent at once decode in lockstep; a generation
    // leg sends the context's token with its first decoded one, so after the first chunk the
    // remaining osl − 2 tokens take osl − 2 steps: TPOT = step(C) × (osl − 2) / (osl − 1).
    let (base, per_seq, osl) = (4.0, 20.0, 10.0);
    let tpot = |c: f64| (base + per_seq * c) * (osl - 2.0) / (osl - 1.0);
    // The limit halfway between concurrency 5 and 6.
    let limit = tpot(5.5);
    let predicted = (1..=64)
        .filter(|&c| tpot(f64::from(c)) <= limit)
        .max()
        .unwrap();
    assert_eq!(predicted, 5);
    let config = tmp.path().join("slasim.yaml");
    std::fs::write(
        &config,
        format!(
            "metadata: {{model_name: sim-sla}}\nbenchmark: {{mode: e2e, concurrency_list: '1', multi_round: 1, input_length: 16, output_length: {osl}, streaming: true}}\nhardware: {{gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}}\nworker_config:\n  ctx: {{tensor_parallel_size: 1, max_batch_size: 64}}\n  gen: {{tensor_parallel_size: 1, max_batch_size: 64}}\nengine:\n  type: sim\n  sim: {{decode_step_base_ms: {base}, decode_step_per_seq_ms: {per_seq}, prefill_tokens_per_s: 0, kv_transfer_gb_per_s: 0}}\n"
        ),
    )
    .unwrap();
    let spec = tmp.path().join("sla.yaml");
    std::fs::write(
        &spec,
        format!("base: slasim.yaml\nconcurrency: [1, 8]\nsla: {{median_tpot_ms: {limit}}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let run = disagg()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(tmp.path().join("results.sqlite"))
        .arg("--sla-search")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let sweep = json(&out.join("sweep.json"));
    let point = &sweep["points"][0];
    let measured: BTreeMap<u64, f64> = point["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["concurrency"].as_u64().unwrap(),
                m["latency_ms"]["median_tpot"].as_f64().unwrap(),
            )
        })
        .collect();
    // 1 and 8 as listed, then the bisection: 4, 6, 5 — three extra runs.
    assert_eq!(
        measured.keys().copied().collect::<Vec<_>>(),
        [1, 4, 5, 6, 8],
        "{measured:?}"
    );
    assert_eq!(point["runs"].as_array().unwrap().len(), 4);
    assert_eq!(
        point["sla_concurrency"], predicted,
        "median TPOT by concurrency {measured:?}, limit {limit:.1} ms"
    );
    assert_eq!(sweep["best"]["concurrency"], predicted, "{}", sweep["best"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains(&format!("at concurrency {predicted}")),
        "{stdout}"
    );
}

/// A sim config of one node (one generation server of 4 GPUs, served aggregated); its model is
/// named after it, so no two are the same case (and none is the other's baseline).
fn one_node_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!("metadata: {{model_name: sim-{name}}}\n") + "benchmark: {mode: e2e, concurrency_list: '2', multi_round: 2, input_length: 32, output_length: 8, streaming: true}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nslurm: {timeout: 120}\nworker_config:\n  ctx: {tensor_parallel_size: 1}\n  gen: {tensor_parallel_size: 4, max_batch_size: 16}\nengine: {type: sim}\n",
    )
    .unwrap();
    path
}

/// Samples `squeue` every 200 ms while `child` runs: the most jobs in flight whose name starts
/// with `prefix`.
fn most_in_flight(conf: &str, prefix: &str, child: &mut std::process::Child) -> usize {
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        let names = slurm(conf, &["squeue", "-h", "-o", "%j"]);
        let n = names.lines().filter(|l| l.starts_with(prefix)).count();
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(200));
    }
    most
}

#[test]
fn a_slurm_sweep_keeps_at_most_max_parallel_jobs_in_flight() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    one_node_config(tmp.path(), "sweepmp");
    let spec = tmp.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "base: sweepmp.yaml\naxes:\n  worker_config.gen.max_batch_size: [2, 4, 8, 16, 32]\n",
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let stderr = tmp.path().join("stderr");
    let mut child = slurm_disagg(conf, &clusters(tmp.path(), conf))
        .arg("sweep")
        .arg(&spec)
        .args(["--cluster", "local", "--max-parallel", "3", "--aggregated"])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(tmp.path().join("results.sqlite"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let most = most_in_flight(conf, "disagg-sweepmp", &mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", log_tail(&stderr));
    assert_eq!(
        most, 3,
        "jobs in flight never exceed --max-parallel and reach it"
    );
    let sweep = json(&out.join("sweep.json"));
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 5);
    for p in points {
        assert_eq!(p["state"], "passed", "{p}");
        assert!(p["runs"][0]["job_id"].as_u64().is_some(), "{p}");
    }
}

#[test]
fn ci_parallel_runs_two_jobs_at_once_and_writes_one_junit() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let mut list = String::from("# three one-node tests\n");
    for name in ["ci-par-a", "ci-par-b", "ci-par-c"] {
        list.push_str(&format!(
            "{}\n",
            one_node_config(tmp.path(), name).display()
        ));
    }
    let list_path = tmp.path().join("tests.txt");
    std::fs::write(&list_path, list).unwrap();
    let junit = tmp.path().join("ws/results.xml");
    let stderr = tmp.path().join("stderr");
    let mut child = slurm_disagg(conf, &clusters(tmp.path(), conf))
        .arg("ci")
        .arg("--test-list")
        .arg(&list_path)
        .args(["--cluster", "local", "--parallel", "2", "--aggregated"])
        .arg("--junit")
        .arg(&junit)
        .arg("--runs-dir")
        .arg(tmp.path().join("runs"))
        .arg("--db")
        .arg(tmp.path().join("results.sqlite"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let most = most_in_flight(conf, "disagg-ci-par-", &mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", log_tail(&stderr));
    assert_eq!(most, 2, "two jobs at once, never three");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
    let names: Vec<&str> = suites.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ci-par-a", "ci-par-b", "ci-par-c"]);
    for s in &suites.suites {
        assert_eq!((s.tests, s.failures, s.errors), (1, 0, 0), "{}", s.name);
    }
    // In parallel, each test's output is in a log beside its run directory.
    let logs = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .count();
    assert_eq!(logs, 3);
}

/// `disagg sweep --retry-failed 2` of three one-node points on the local Slurm, all running at
/// once: the first point's node is set DOWN (NODE_FAIL, the infrastructure: retried in a new run
/// directory, and the retry passes), the second point's worker step is killed (the test's own
/// failure: never retried), the third is left alone. `--resume` then runs only the failed point;
/// the store holds one valid record per point, none twice.
#[test]
fn a_sweep_retries_a_node_failure_but_not_a_killed_worker_and_resume_reruns_only_the_failure() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    one_node_config(tmp.path(), "sweeprf");
    let spec = tmp.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "base: sweeprf.yaml\naxes:\n  worker_config.gen.max_batch_size: [4, 8, 16]\n",
    )
    .unwrap();
    let (out, db) = (tmp.path().join("sweep"), tmp.path().join("results.sqlite"));
    let clusters = clusters(tmp.path(), conf);
    let sweep = |resume: bool, stderr: &Path| {
        let mut c = slurm_disagg(conf, &clusters);
        c.arg("sweep").arg(&spec);
        if resume {
            c.arg("--resume");
        }
        c.args(["--cluster", "local", "--aggregated", "--max-parallel", "3"])
            .args(["--retry-failed", "2", "--concurrency", "2"])
            // Long enough to be killed mid-benchmark (~15 s a run).
            .args(["--num-prompts", "40", "--osl", "64"])
            .arg("--out")
            .arg(&out)
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap()
    };
    let stderr = tmp.path().join("stderr");
    let mut child = sweep(false, &stderr);
    // The three first runs, once each one's benchmark runs: (run directory, job id).
    let t0 = Instant::now();
    let running: Vec<(PathBuf, String)> = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "three benchmarks never ran at once: {}",
            log_tail(&stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
        let mut runs: Vec<(PathBuf, String)> = std::fs::read_dir(out.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|r| {
                std::fs::read_to_string(r.join("rendezvous/BENCHMARK.json"))
                    .is_ok_and(|b| b.contains("\"ready\""))
            })
            .filter_map(|r| {
                let job: Value =
                    serde_json::from_str(&std::fs::read_to_string(r.join("job.json")).ok()?)
                        .ok()?;
                let id = job["job_id"].as_u64()?.to_string();
                Some((r, id))
            })
            .collect();
        if runs.len() == 3 {
            runs.sort();
            break runs;
        }
    };
    let _jobs: Vec<Job> = running
        .iter()
        .map(|(_, id)| Job(conf, id.clone()))
        .collect();
    let point = |run: &Path| -> String {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        name.rsplit_once('-').unwrap().0.to_string()
    };
    let (node_failed, killed, untouched) = (
        point(&running[0].0),
        point(&running[1].0),
        point(&running[2].0),
    );
    // The infrastructure: the first point's node fails.
    let node = slurm(conf, &["squeue", "-h", "-j", &running[0].1, "-o", "%N"])
        .trim()
        .to_string();
    let down = DownNode { conf, node };
    assert!(
        Command::new("scontrol")
            .args(["update", &format!("nodename={}", down.node), "state=down"])
            .arg("reason=disagg sweep fault test")
            .env("SLURM_CONF", conf)
            .status()
            .unwrap()
            .success()
    );
    drop(down);
    // The test: the second point's worker is killed.
    let steps = slurm(
        conf,
        &["squeue", "-h", "-s", "-j", &running[1].1, "-o", "%i %j"],
    );
    let step = steps
        .lines()
        .find(|l| l.ends_with(" GEN_0"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    Command::new("scancel")
        .args(["--signal=KILL", &step])
        .env("SLURM_CONF", conf)
        .status()
        .unwrap();
    let wait = |child: &mut std::process::Child, stderr: &Path| {
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if t0.elapsed() > Duration::from_secs(240) {
                let _ = child.kill();
                panic!("the sweep still runs after 240 s: {}", log_tail(stderr));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let code = wait(&mut child, &stderr);
    let log = std::fs::read_to_string(&stderr).unwrap();
    for l in log
        .lines()
        .filter(|l| l.contains("retrying") || l.contains("FAILED"))
    {
        eprintln!("sweep: {l}");
    }
    assert_eq!(code, Some(1), "a point failed: {log}");
    let doc = json(&out.join("sweep.json"));
    let by_name = |doc: &Value, name: &str| -> Value {
        doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no point {name}: {doc}"))
            .clone()
    };
    let outcomes = |p: &Value| -> Vec<String> {
        p["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["purpose"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };
    let p = by_name(&doc, &node_failed);
    assert_eq!(p["state"], "passed", "{p}");
    assert_eq!(outcomes(&p), ["run:infrastructure", "retry:passed"], "{p}");
    assert!(
        p["runs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("NODE_FAIL"),
        "{p}"
    );
    let p = by_name(&doc, &killed);
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(outcomes(&p), ["run:failed"], "never retried: {p}");
    let p = by_name(&doc, &untouched);
    assert_eq!(outcomes(&p), ["run:passed"], "{p}");
    // Resumed: only the failed point runs again.
    let stderr2 = tmp.path().join("stderr-resume");
    let mut child = sweep(true, &stderr2);
    let code = wait(&mut child, &stderr2);
    let log2 = std::fs::read_to_string(&stderr2).unwrap();
    eprintln!("resumed sweep:\n{log2}");
    assert_eq!(code, Some(0), "{log2}");
    let doc = json(&out.join("sweep.json"));
    for name in [&node_failed, &untouched, &killed] {
        assert_eq!(by_name(&doc, name)["state"], "passed", "{doc}");
    }
    let runs_now = std::fs::read_dir(out.join("runs")).unwrap().count();
    assert_eq!(runs_now, 5, "3 runs, 1 retry, 1 resumed run: {log2}");
    // One valid record per point (one concurrency each), none twice.
    let export = slurm_disagg(conf, &clusters)
        .args(["results", "export", "--format", "json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", text(&export));
    let stored: Vec<Value> = serde_json::from_slice(&export.stdout).unwrap();
    let valid: Vec<String> = stored
        .iter()
        .filter(|r| r["valid"] == true)
        .map(|r| format!("{} {}", r["job"]["s_sweep_point"], r["label"]))
        .collect();
    let distinct: BTreeSet<&String> = valid.iter().collect();
    assert_eq!(valid.len(), 3, "{valid:?}");
    assert_eq!(distinct.len(), 3, "{valid:?}");
}
