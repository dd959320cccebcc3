//! The numbers that matter for `disagg sweep`:
//! 1. overhead — a local sweep of 8 points × 3 concurrencies on the sim takes no more than 10 %
//!    longer than the sum of its runs (each run's wall time as the sweep saw it, from
//!    `sweep.json`); `--resume` of the finished sweep returns in under a second;
//! 2. parallelism — a Slurm sweep (the local Slurm of `scripts/local-slurm.sh`, when
//!    `SLURM_CONF` names it) with `--max-parallel 3`: jobs in flight, sampled twice a second
//!    from `squeue`, never exceed 3 and are 3 whenever points are still waiting; its wall time
//!    against the same sweep with `--max-parallel 1`.
//!
//! Run: `cargo bench -p disagg --bench sweep` (env: `PROMPTS`, `ISL`, `OSL` of the local
//! sweep; `SLURM_POINTS`, `SLURM_PROMPTS`, `SLURM_OSL` of the Slurm one). Every run is bounded.

#![expect(clippy::unwrap_used, reason = "a benchmark aborts on any setup error")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn disagg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env_remove("DISAGG_DB");
    c
}

fn sweep_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

/// Wall time of each run the sweep made, s.
fn run_times(doc: &serde_json::Value) -> Vec<f64> {
    doc["points"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["runs"].as_array().unwrap().iter())
        .map(|r| r["elapsed_s"].as_f64().unwrap())
        .collect()
}

fn local(work: &Path) {
    let (prompts, isl, osl) = (env("PROMPTS", 8), env("ISL", 64), env("OSL", 32));
    let out = work.join("local");
    let db = work.join("local.sqlite");
    let args = |c: &mut Command| {
        c.arg("sweep")
            .arg(repo().join("examples/sweep-sim.yaml"))
            .arg("--out")
            .arg(&out)
            .arg("--db")
            .arg(&db)
            .args(["--num-prompts", &prompts.to_string()])
            .args(["--isl", &isl.to_string(), "--osl", &osl.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let t0 = Instant::now();
    let mut c = disagg();
    args(&mut c);
    let status = c.status().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    assert!(status.success(), "the local sweep failed");
    let doc = sweep_json(&out);
    let runs = run_times(&doc);
    let sum: f64 = runs.iter().sum();
    println!(
        "local sweep: {} points × 3 concurrencies (sim, {prompts} prompts, isl {isl}, osl {osl}), {} runs: wall {wall:.2} s, sum of its runs {sum:.2} s, overhead {:+.1} %",
        doc["points"].as_array().unwrap().len(),
        runs.len(),
        (wall - sum) / sum * 100.0
    );
    let t1 = Instant::now();
    let mut c = disagg();
    args(&mut c);
    c.arg("--resume");
    assert!(c.status().unwrap().success());
    println!(
        "resume of the finished sweep: {:.3} s",
        t1.elapsed().as_secs_f64()
    );
}

fn squeue(conf: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%j"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Run a Slurm sweep with `parallel` in flight; its wall time, the most jobs in flight, and
/// `(samples with points waiting, of which at the limit)`.
fn slurm_sweep(work: &Path, conf: &str, parallel: u64) -> (f64, usize, (usize, usize)) {
    let points = env("SLURM_POINTS", 6);
    let name = format!("sweepbench{parallel}");
    std::fs::write(
        work.join(format!("{name}.yaml")),
        format!("metadata: {{model_name: sim-{name}}}\nbenchmark: {{mode: e2e, concurrency_list: '2', multi_round: 1, input_length: 32, output_length: {}, streaming: true}}\nhardware: {{gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}}\nslurm: {{timeout: 300}}\nworker_config:\n  ctx: {{tensor_parallel_size: 1}}\n  gen: {{tensor_parallel_size: 4, max_batch_size: 16}}\nengine: {{type: sim}}\n", env("SLURM_OSL", 64)),
    )
    .unwrap();
    let values: Vec<String> = (1..=points).map(|i| (i * 8).to_string()).collect();
    let spec = work.join(format!("{name}-spec.yaml"));
    std::fs::write(
        &spec,
        format!(
            "base: {name}.yaml\naxes:\n  worker_config.gen.max_batch_size: [{}]\n",
            values.join(", ")
        ),
    )
    .unwrap();
    let clusters = work.join("clusters.yaml");
    std::fs::write(
        &clusters,
        format!("clusters:\n  local:\n    partition: local\n    gpus_per_node: 4\n    slurm_conf: {conf}\n"),
    )
    .unwrap();
    let out = work.join(&name);
    let t0 = Instant::now();
    let mut child = disagg()
        .env("SLURM_CONF", conf)
        .arg("--clusters")
        .arg(&clusters)
        .arg("sweep")
        .arg(&spec)
        .args(["--cluster", "local", "--aggregated"])
        .args(["--max-parallel", &parallel.to_string()])
        .args(["--num-prompts", &env("SLURM_PROMPTS", 16).to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(work.join(format!("{name}.sqlite")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut most, mut waiting_samples, mut at_limit) = (0, 0, 0);
    while child.try_wait().unwrap().is_none() {
        let in_flight = squeue(conf)
            .iter()
            .filter(|j| j.starts_with(&format!("disagg-{name}")))
            .count();
        // Points started so far: their run directories exist.
        let started = std::fs::read_dir(out.join("runs"))
            .map(|d| d.count())
            .unwrap_or(0) as u64;
        most = most.max(in_flight);
        if started < points && started > 0 {
            waiting_samples += 1;
            at_limit += usize::from(in_flight as u64 == parallel);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wall = t0.elapsed().as_secs_f64();
    assert!(child.wait().unwrap().success(), "the Slurm sweep failed");
    let doc = sweep_json(&out);
    assert!(
        doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "passed")
    );
    (wall, most, (waiting_samples, at_limit))
}

fn main() {
    let work = std::env::temp_dir().join(format!("disagg-sweep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    local(&work);
    match std::env::var("SLURM_CONF")
        .ok()
        .filter(|c| Path::new(c).exists())
    {
        None => println!("slurm sweep: skipped (SLURM_CONF names no local Slurm)"),
        Some(conf) => {
            let points = env("SLURM_POINTS", 6);
            let (par, most, (waiting, full)) = slurm_sweep(&work, &conf, 3);
            let (seq, most_seq, _) = slurm_sweep(&work, &conf, 1);
            println!(
                "slurm sweep: {points} one-node points, --max-parallel 3: wall {par:.1} s, most jobs in flight {most}; while points waited, 3 in flight in {full} of {waiting} samples (2/s)"
            );
            println!(
                "slurm sweep: the same with --max-parallel 1: wall {seq:.1} s (most in flight {most_seq}); speed-up {:.2}×",
                seq / par
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}
