//! Slurm faults (docs/RELIABILITY.md) on the local Slurm: a node set DOWN under a running job,
//! a step's node daemon (`slurmstepd`) killed, a node's daemon (`slurmd`) killed, a job past its
//! time limit, a job requeued. Each ends `disagg submit` soon after the fault with a diagnosis
//! that names it, and the concurrencies that finished are kept. A node set DOWN is set back to
//! service at the end, and a killed `slurmd` started again, also when the test fails.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::slurm_cli::{clusters, data, disagg, exclusive, job_id, slurm, slurm_conf};
use crate::support::repo_root;

/// `disagg submit` of the 3-node example in the background: a long benchmark (con1, 160
/// requests of 64 tokens), its stderr in a file.
fn submit(conf: &str, tmp: &Path) -> (Child, PathBuf, PathBuf) {
    submit_with(conf, tmp, &clusters(tmp, conf))
}

/// [`submit`] with this clusters file.
fn submit_with(conf: &str, tmp: &Path, clusters: &Path) -> (Child, PathBuf, PathBuf) {
    let load = [
        "--concurrency",
        "1,4",
        "--num-prompts",
        "160",
        "--osl",
        "64",
    ];
    submit_load(conf, tmp, clusters, &load)
}

/// [`submit`] with this clusters file and this benchmark load.
fn submit_load(
    conf: &str,
    tmp: &Path,
    clusters: &Path,
    load: &[&str],
) -> (Child, PathBuf, PathBuf) {
    let run = tmp.join("run");
    let stderr = tmp.join("stderr");
    let child = disagg(conf, clusters)
        .args([
            "submit",
            &data("slurm-ctx4-gen8.yaml"),
            "--cluster",
            "local",
        ])
        .args(load)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (child, run, stderr)
}

/// Wait until the benchmark runs; the job id and the node list of the GEN_0 step.
fn benchmark_running(conf: &str, run: &Path) -> (String, String) {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the benchmark never started"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(bench) = std::fs::read_to_string(run.join("rendezvous/BENCHMARK.json")) else {
            continue;
        };
        if !bench.contains("\"ready\"") {
            continue;
        }
        let id = job_id(run);
        let steps = slurm(conf, &["squeue", "-h", "-s", "-j", &id, "-o", "%i %j %N"]);
        if let Some(line) = steps.lines().find(|l| l.contains(" GEN_0 ")) {
            let nodes = line.split_whitespace().nth(2).unwrap().to_string();
            return (id, nodes);
        }
    }
}

/// Wait for `disagg submit` to end, at most `limit` after the fault; its exit code, stderr and
/// how long it took.
fn ended(
    child: &mut Child,
    stderr: &Path,
    fault: Instant,
    limit: Duration,
) -> (i32, String, Duration) {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(stderr).unwrap();
            return (s.code().unwrap_or(-1), text, fault.elapsed());
        }
        if fault.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "disagg submit still running {limit:?} after the fault:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job cancelled when dropped, so a failing test leaves no job holding the nodes.
pub(crate) struct Job<'a>(pub(crate) &'a str, pub(crate) String);

impl Drop for Job<'_> {
    fn drop(&mut self) {
        let _ = Command::new("scancel")
            .arg(&self.1)
            .env("SLURM_CONF", self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// A node set DOWN for a test, resumed when dropped (a panicking test included).
pub(crate) struct DownNode<'a> {
    pub(crate) conf: &'a str,
    pub(crate) node: String,
}

impl Drop for DownNode<'_> {
    fn drop(&mut self) {
        let _ = Command::new("scontrol")
            .args(["update", &format!("nodename={}", self.node), "state=resume"])
            .env("SLURM_CONF", self.conf)
            .status();
        // Wait until it takes jobs again, so the next test finds the cluster as it was.
        for _ in 0..100 {
            let s = slurm(self.conf, &["sinfo", "-h", "-n", &self.node, "-o", "%t"]);
            if s.trim() == "idle" || s.trim() == "mix" || s.trim() == "alloc" {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A node whose `slurmd` a test killed, by the PID `scripts/local-slurm.sh` recorded for it.
/// Dropped (a panicking test included), it is started again as `up` starts it
/// (`scripts/local-slurm.sh start-node`), the job Slurm could not finish on it is ended (the
/// node set DOWN and resumed) and the node is back in service for the next test.
struct KilledSlurmd<'a> {
    conf: &'a str,
    node: String,
}

impl<'a> KilledSlurmd<'a> {
    fn kill(conf: &'a str, node: &str) -> KilledSlurmd<'a> {
        let dir = local_slurm_dir(conf);
        let pid = std::fs::read_to_string(dir.join(format!("pids/slurmd-{node}.pid")))
            .unwrap()
            .trim()
            .to_string();
        // Ours: the recorded PID is a slurmd of this cluster's config, not a reused number.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.starts_with("slurmd ") && cmdline.contains(conf),
            "pid {pid} is `{cmdline}`"
        );
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
        KilledSlurmd {
            conf,
            node: node.to_string(),
        }
    }
}

impl Drop for KilledSlurmd<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/local-slurm.sh"))
            .args(["start-node", &self.node])
            .env("LOCAL_SLURM_DIR", local_slurm_dir(self.conf))
            .env("SLURM_CONF", self.conf)
            .status();
        // Slurm resends the job's end to the node only every 100 s or so: end it now, while
        // the node still holds that job only (a completing node takes no other job).
        let state = slurm(
            self.conf,
            &["sinfo", "-h", "-N", "-n", &self.node, "-o", "%t"],
        );
        if !state.trim_start().starts_with("comp") {
            return;
        }
        let _ = Command::new("scontrol")
            .args(["update", &format!("nodename={}", self.node), "state=down"])
            .arg("reason=disagg fault test: slurmd restarted")
            .env("SLURM_CONF", self.conf)
            .status();
        drop(DownNode {
            conf: self.conf,
            node: self.node.clone(),
        });
    }
}

/// The local Slurm's directory: `DIR/etc/slurm.conf`.
fn local_slurm_dir(conf: &str) -> PathBuf {
    Path::new(conf)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// The `slurmd` of GEN_0's first node killed once the first concurrency is done. Its steps live
/// on (each `slurmstepd` is a process of its own), so the benchmark finishes and the job's
/// script ends; Slurm then cannot finish the job (the node does not answer the job's end) and
/// keeps it COMPLETING until the node answers or `SlurmdTimeout` (300 s here) marks it DOWN.
/// The run does not wait for that: it passes once Slurm marks the node not responding, naming
/// it, with both concurrencies kept.
#[test]
fn a_killed_slurmd_ends_the_run_without_waiting_for_slurm_to_give_up_the_node() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let load = ["--concurrency", "4,1", "--num-prompts", "16", "--osl", "64"];
    let (mut child, run, stderr) =
        submit_load(conf, tmp.path(), &clusters(tmp.path(), conf), &load);
    let (id, nodes) = benchmark_running(conf, &run);
    let _job = Job(conf, id);
    let t0 = Instant::now();
    while !run.join("results/con4.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "con4 never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let node = slurm(conf, &["scontrol", "show", "hostnames", &nodes])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let killed = KilledSlurmd::kill(conf, &node);
    let (code, text, took) = ended(
        &mut child,
        &stderr,
        Instant::now(),
        Duration::from_secs(120),
    );
    drop(killed);
    eprintln!("slurmd of {node} killed: the run ended after {took:?}");
    assert_eq!(code, 0, "{text}");
    assert!(took < Duration::from_secs(60), "{took:?}: {text}");
    assert!(
        text.contains(&format!("node(s) {node} do not respond")),
        "{text}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results/summary.json")).unwrap())
            .unwrap();
    for (i, label) in ["con4", "con1"].iter().enumerate() {
        assert_eq!(summary["runs"][i]["label"], *label, "{summary}");
        assert_eq!(summary["runs"][i]["status"], "valid", "{summary}");
    }
}

/// A node set DOWN once the first concurrency is done: the run ends naming the node failure,
/// and the finished concurrency is kept (in the summary, valid, and in the store).
#[test]
fn a_node_set_down_under_the_job_ends_the_run_naming_the_node_failure() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // con4 first (4 rounds, ~2 s), then con1 (16 requests in a row, ~9 s).
    let load = ["--concurrency", "4,1", "--num-prompts", "16", "--osl", "64"];
    let (mut child, run, stderr) =
        submit_load(conf, tmp.path(), &clusters(tmp.path(), conf), &load);
    let (id, nodes) = benchmark_running(conf, &run);
    let _job = Job(conf, id);
    let t0 = Instant::now();
    while !run.join("results/con4.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "con4 never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let node = slurm(conf, &["scontrol", "show", "hostnames", &nodes])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let down = DownNode { conf, node };
    let set = Command::new("scontrol")
        .args(["update", &format!("nodename={}", down.node), "state=down"])
        .arg("reason=disagg fault test")
        .env("SLURM_CONF", conf)
        .status()
        .unwrap();
    assert!(set.success());
    let (code, text, took) = ended(&mut child, &stderr, Instant::now(), Duration::from_secs(60));
    drop(down);
    eprintln!("node down: ended after {took:?}");
    assert_eq!(code, 1, "{text}");
    assert!(took < Duration::from_secs(30), "{took:?}: {text}");
    assert!(text.contains("NODE_FAIL"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["runs"][0]["label"], "con4", "{summary}");
    assert_eq!(summary["runs"][0]["status"], "valid", "{summary}");
    assert_ne!(summary["runs"][1]["status"], "valid", "{summary}");
}

/// `slurmstepd` of the GEN_0 step killed: the worker it started lives on (its daemon is not its
/// parent in any way that matters), so the run goes on, passes, and the job ends.
#[test]
fn a_killed_slurmstepd_leaves_the_run_to_finish() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let load = ["--concurrency", "1", "--num-prompts", "10", "--osl", "32"];
    let (mut child, run, stderr) =
        submit_load(conf, tmp.path(), &clusters(tmp.path(), conf), &load);
    let (id, _) = benchmark_running(conf, &run);
    let _job = Job(conf, id.clone());
    let steps = slurm(conf, &["squeue", "-h", "-s", "-j", &id, "-o", "%i %j"]);
    let step = steps
        .lines()
        .find(|l| l.ends_with(" GEN_0"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    // slurmstepd names itself `slurmstepd: [JOB.STEP]`.
    let needle = format!("slurmstepd: [{step}]");
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(&needle))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!pids.is_empty(), "no process `{needle}`");
    for pid in &pids {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let (code, text, took) = ended(&mut child, &stderr, Instant::now(), Duration::from_secs(60));
    eprintln!("slurmstepd killed: the job ended after {took:?}");
    assert_eq!(code, 0, "{text}");
    let summary = std::fs::read_to_string(run.join("results/summary.json")).unwrap();
    assert!(summary.contains("\"outcome\": \"passed\""), "{summary}");
}

#[test]
fn a_job_past_its_time_limit_ends_the_run_naming_the_timeout() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, _run, stderr) = submit(conf, tmp.path());
    let (id, _) = benchmark_running(conf, &tmp.path().join("run"));
    let _job = Job(conf, id.clone());
    // A limit the job has already passed: Slurm ends it at its next check.
    let set = Command::new("scontrol")
        .args(["update", &format!("jobid={id}"), "timelimit=00:00:01"])
        .env("SLURM_CONF", conf)
        .status()
        .unwrap();
    assert!(set.success());
    // Slurm checks time limits on its own schedule (about once a minute here): from then on,
    // the run has 30 s to say so.
    let set_at = Instant::now();
    let killed = loop {
        let state = slurm(conf, &["squeue", "-h", "-j", &id, "-o", "%T"]);
        if state.trim() != "RUNNING" {
            break Instant::now();
        }
        assert!(
            set_at.elapsed() < Duration::from_secs(150),
            "Slurm never ended the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (code, text, took) = ended(&mut child, &stderr, killed, Duration::from_secs(60));
    eprintln!(
        "time limit: Slurm ended the job {:?} after the limit was set, the run {took:?} after that",
        killed - set_at
    );
    assert_eq!(code, 1, "{text}");
    assert!(took < Duration::from_secs(30), "{took:?}: {text}");
    assert!(text.contains("TIMEOUT"), "{text}");
}

#[test]
fn a_requeued_job_ends_the_run_instead_of_running_twice_in_one_directory() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // The local Slurm has JobRequeue=0: the job has to ask to be requeueable.
    let clusters = tmp.path().join("clusters.yaml");
    std::fs::write(
        &clusters,
        format!(
            "clusters:\n  local:\n    partition: local\n    gpus_per_node: 4\n    slurm_conf: {conf}\n    sbatch_args: [\"--requeue\"]\n"
        ),
    )
    .unwrap();
    let (mut child, run, stderr) = submit_with(conf, tmp.path(), &clusters);
    let (id, _) = benchmark_running(conf, &run);
    let _job = Job(conf, id.clone());
    let out = Command::new("scontrol")
        .args(["requeue", &id])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    eprintln!("scontrol requeue: {}", String::from_utf8_lossy(&out.stderr));
    let (code, text, took) = ended(&mut child, &stderr, Instant::now(), Duration::from_secs(60));
    eprintln!("requeue: ended after {took:?}");
    assert_eq!(code, 1, "{text}");
    assert!(took < Duration::from_secs(30), "{took:?}: {text}");
    assert!(text.contains("requeued"), "{text}");
    assert_eq!(
        slurm(conf, &["squeue", "-h", "-j", &id]).trim(),
        "",
        "the job is gone"
    );
}

/// `disagg ci --retry-infra 2`: the first attempt's node fails (infrastructure: retried in a
/// new run directory), the second attempt's worker step is killed (the test's own failure:
/// never retried, although a retry is left).
#[test]
fn ci_retries_an_infrastructure_failure_but_never_a_test_failure() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("tests.txt");
    std::fs::write(&list, format!("{}\n", data("slurm-ctx4-gen8.yaml"))).unwrap();
    let runs = tmp.path().join("runs");
    let stderr = tmp.path().join("stderr");
    let mut child = disagg(conf, &clusters(tmp.path(), conf))
        .args([
            "ci",
            "--cluster",
            "local",
            "--retry-infra",
            "2",
            "--test-list",
        ])
        .arg(&list)
        .args([
            "--concurrency",
            "1",
            "--num-prompts",
            "160",
            "--osl",
            "64",
            "--junit",
        ])
        .arg(tmp.path().join("results.xml"))
        .arg("--runs-dir")
        .arg(&runs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // The n-th attempt's run directory, once its benchmark runs.
    let attempt = |n: usize| -> (PathBuf, String, String) {
        let t0 = Instant::now();
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "attempt {n} never ran"
            );
            std::thread::sleep(Duration::from_millis(100));
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            dirs.sort_by_key(|d| d.to_string_lossy().contains("-retry"));
            if let Some(run) = dirs.get(n) {
                if run.join("rendezvous/BENCHMARK.json").exists() {
                    let (id, nodes) = benchmark_running(conf, run);
                    return (run.clone(), id, nodes);
                }
            }
        }
    };
    let (_, id, nodes) = attempt(0);
    let first = Job(conf, id);
    let node = slurm(conf, &["scontrol", "show", "hostnames", &nodes])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let down = DownNode { conf, node };
    assert!(
        Command::new("scontrol")
            .args(["update", &format!("nodename={}", down.node), "state=down"])
            .arg("reason=disagg fault test")
            .env("SLURM_CONF", conf)
            .status()
            .unwrap()
            .success()
    );
    drop(down);
    let (_, id, _) = attempt(1);
    let second = Job(conf, id.clone());
    let steps = slurm(conf, &["squeue", "-h", "-s", "-j", &id, "-o", "%i %j"]);
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
    let (code, text, _) = ended(&mut child, &stderr, Instant::now(), Duration::from_secs(60));
    drop((first, second));
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text.matches("retrying (").count(),
        1,
        "one retry, for the node failure only: {text}"
    );
    assert!(
        text.contains("NODE_FAIL") && text.contains("retrying (1 of 2)"),
        "{text}"
    );
    assert!(
        text.contains("step GEN_0 ended before the benchmark"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        2,
        "two attempts, two run directories"
    );
}
