//! `disagg submit`, `status`, `cancel` and `ci` against a real Slurm: the project's local
//! multi-node Slurm (`scripts/local-slurm.sh`, 4 nodes × 4 fake GPUs on this machine).
//!
//! The Slurm is the one `SLURM_CONF` names (`.ci/run` brings it up); without one, a root user
//! gets it started here. Without root and without a Slurm the tests say so and pass, unless
//! `DISAGG_REQUIRE_SLURM=1` (set by CI) makes that a failure.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::repo_root;

pub(crate) fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The local Slurm's `slurm.conf`, starting the cluster when needed and possible.
pub(crate) fn slurm_conf() -> Option<&'static str> {
    static CONF: OnceLock<Option<String>> = OnceLock::new();
    CONF.get_or_init(|| {
        if let Some(conf) = std::env::var("SLURM_CONF").ok().filter(|c| Path::new(c).exists()) {
            return Some(conf);
        }
        let root = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&root.stdout).trim() == "0" {
            let dir = std::env::var("LOCAL_SLURM_DIR")
                .unwrap_or_else(|_| "/tmp/disagg-local-slurm".to_string());
            let up = Command::new("bash")
                .arg(repo_root().join("scripts/local-slurm.sh"))
                .arg("up")
                .env("LOCAL_SLURM_DIR", &dir)
                .status()
                .unwrap();
            assert!(up.success(), "scripts/local-slurm.sh up failed");
            return Some(format!("{dir}/etc/slurm.conf"));
        }
        assert!(
            std::env::var_os("DISAGG_REQUIRE_SLURM").is_none(),
            "DISAGG_REQUIRE_SLURM is set but there is no Slurm (SLURM_CONF) and no root to start one"
        );
        eprintln!("SKIPPED: no local Slurm (SLURM_CONF unset) and not root to start one");
        None
    })
    .as_deref()
}

/// One job at a time: the `local` partition gives whole nodes and has only four.
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A clusters file with the `local` profile pointing at the local Slurm.
pub(crate) fn clusters(dir: &Path, conf: &str) -> PathBuf {
    let path = dir.join("clusters.yaml");
    std::fs::write(
        &path,
        format!(
            "clusters:\n  local:\n    partition: local\n    gpus_per_node: 4\n    slurm_conf: {conf}\n"
        ),
    )
    .unwrap();
    path
}

/// `disagg` on the local Slurm, with the results store in a directory of this test process.
pub(crate) fn disagg(conf: &str, clusters: &Path) -> Command {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    let data = DATA.get_or_init(|| tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env("SLURM_CONF", conf)
        .env("XDG_DATA_HOME", data.path())
        .env_remove("DISAGG_DB")
        .arg("--clusters")
        .arg(clusters);
    c
}

pub(crate) fn slurm(conf: &str, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn job_id(run: &Path) -> String {
    let text = std::fs::read_to_string(run.join("job.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["job_id"].as_u64().unwrap().to_string()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_three_node_job_runs_every_role_and_delivers_the_results() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = disagg(conf, &clusters(tmp.path(), conf))
        .args([
            "submit",
            &data("slurm-ctx4-gen8.yaml"),
            "--cluster",
            "local",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("con1 ") && stdout.contains("con4 "),
        "{stdout}"
    );
    let script = std::fs::read_to_string(run.join("job.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --nodes=3"), "{script}");
    // The generation server's step spans two nodes, eight tasks; only rank 0 serves.
    let gen_log = std::fs::read_to_string(run.join("logs/slurm-GEN_0.log")).unwrap();
    assert_eq!(gen_log.matches("GEN_0: pid").count(), 8, "{gen_log}");
    let nodes: std::collections::BTreeSet<&str> = gen_log
        .lines()
        .filter_map(|l| l.split("node ").nth(1)?.split(',').next())
        .collect();
    assert_eq!(nodes.len(), 2, "{gen_log}");
    assert_eq!(
        gen_log.matches("sim engine serving").count(),
        1,
        "{gen_log}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["outcome"], "passed");
    assert_eq!(summary["runs"][1]["requests"], 8);
    assert!(run.join("results/results.xml").exists());
    let id = job_id(&run);
    assert_eq!(
        slurm(conf, &["squeue", "-h", "-j", &id]).trim(),
        "",
        "job {id} still queued"
    );
    let state = slurm(conf, &["scontrol", "show", "job", &id, "-o"]);
    assert!(
        state.contains("JobState=COMPLETED") && state.contains("ExitCode=0:0"),
        "{state}"
    );
}

#[test]
fn a_killed_worker_step_ends_the_job_within_seconds_and_names_the_role() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let stderr_path = tmp.path().join("stderr");
    let mut child = disagg(conf, &clusters(tmp.path(), conf))
        .args([
            "submit",
            &data("slurm-ctx4-gen8.yaml"),
            "--cluster",
            "local",
        ])
        .args([
            "--concurrency",
            "1",
            "--num-prompts",
            "40",
            "--osl",
            "64",
            "--out",
        ])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Wait until the benchmark runs, then find the GEN_0 step by its name.
    let step = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the benchmark never started"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(bench) = std::fs::read_to_string(run.join("rendezvous/BENCHMARK.json")) else {
            continue;
        };
        if !bench.contains("\"ready\"") {
            continue;
        }
        let id = job_id(&run);
        let steps = slurm(conf, &["squeue", "-h", "-s", "-j", &id, "-o", "%i %j"]);
        if let Some(line) = steps.lines().find(|l| l.ends_with(" GEN_0")) {
            break line.split_whitespace().next().unwrap().to_string();
        }
    };
    Command::new("scancel")
        .args(["--signal=KILL", &step])
        .env("SLURM_CONF", conf)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("disagg submit still running a minute after the step was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        took < Duration::from_secs(30),
        "the job took {took:?} to end"
    );
    assert!(
        stderr.contains("error: the run failed")
            && stderr.contains("step GEN_0 ended before the benchmark"),
        "{stderr}"
    );
    assert!(stderr.contains("slurm-GEN_0.log"), "{stderr}");
    let id = job_id(&run);
    assert_eq!(slurm(conf, &["squeue", "-h", "-j", &id]).trim(), "");
    let verdict = std::fs::read_to_string(run.join("rendezvous/benchmark_status.txt")).unwrap();
    assert!(
        verdict.starts_with("Failed: ") && verdict.contains("GEN_0"),
        "{verdict}"
    );
}

#[test]
fn a_job_that_can_never_be_scheduled_is_reported_at_submit_time() {
    let Some(conf) = slurm_conf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = disagg(conf, &clusters(tmp.path(), conf))
        .args([
            "submit",
            &data("slurm-too-big.yaml"),
            "--cluster",
            "local",
            "--out",
        ])
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert!(stderr.contains("needs 5 node(s)"), "{stderr}");
    assert!(
        stderr.contains("Node count specification invalid") || stderr.contains("can never start"),
        "{stderr}"
    );
}

#[test]
fn ci_runs_a_test_list_through_slurm_and_writes_the_junit_file() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("tests.txt");
    std::fs::write(
        &list,
        "# perf sanity, disaggregated\n\nperf/test_perf_sanity.py::test_e2e[disagg_upload-gb200_gemma-3-1b-bf16_1k1k_con256_ctx1_tp1_gen1_tp1_eplb0_mtp0_ccb-NIXL] TIMEOUT (120)\n",
    )
    .unwrap();
    let junit = tmp.path().join("ws/results.xml");
    let out = disagg(conf, &clusters(tmp.path(), conf))
        .arg("ci")
        .arg("--test-list")
        .arg(&list)
        .arg("--config-dir")
        .arg(repo_root().join("fixtures/trtllm-configs"))
        .args([
            "--cluster",
            "local",
            "--engine",
            "sim",
            "--concurrency",
            "2",
        ])
        .args(["--num-prompts", "4", "--isl", "64", "--osl", "4", "--junit"])
        .arg(&junit)
        .arg("--runs-dir")
        .arg(tmp.path().join("runs"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
    assert_eq!(suites.suites.len(), 1);
    let suite = &suites.suites[0];
    assert_eq!(
        suite.name,
        "gb200_gemma-3-1b-bf16_1k1k_con256_ctx1_tp1_gen1_tp1_eplb0_mtp0_ccb-NIXL"
    );
    assert_eq!((suite.tests, suite.failures, suite.errors), (1, 0, 0));
    assert_eq!(suite.cases[0].original_name, "con2");
}

#[test]
fn status_and_cancel_work_on_a_run_directory() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cl = clusters(tmp.path(), conf);
    let out = disagg(conf, &cl)
        .args([
            "submit",
            &data("slurm-ctx4-gen8.yaml"),
            "--cluster",
            "local",
            "--no-wait",
        ])
        .args([
            "--concurrency",
            "1",
            "--num-prompts",
            "200",
            "--osl",
            "64",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let id = job_id(&run);
    assert_eq!(stdout.trim(), id);
    let t0 = Instant::now();
    while !std::fs::read_to_string(run.join("rendezvous/BENCHMARK.json"))
        .is_ok_and(|b| b.contains("\"ready\""))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the benchmark never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = disagg(conf, &cl).arg("status").arg(&run).output().unwrap();
    let (st_out, st_err) = text(&st);
    assert_eq!(st.status.code(), Some(0), "{st_err}");
    assert!(
        st_out.contains(&format!("job {id}")) && st_out.contains("): running"),
        "{st_out}"
    );
    assert!(
        st_out.contains("GEN_0") && st_out.contains("verdict: none yet"),
        "{st_out}"
    );
    let c = disagg(conf, &cl).arg("cancel").arg(&run).output().unwrap();
    assert_eq!(c.status.code(), Some(0), "{}", text(&c).1);
    let t0 = Instant::now();
    while !slurm(conf, &["squeue", "-h", "-j", &id]).trim().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job {id} still queued after cancel"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let verdict = std::fs::read_to_string(run.join("rendezvous/benchmark_status.txt")).unwrap();
    assert!(verdict.starts_with("Failed: "), "{verdict}");
}

/// Whether the local Slurm puts each node in its own network namespace (`LOCAL_SLURM_NET=netns`,
/// recorded in `<dir>/etc/net.layout`); `DISAGG_REQUIRE_NETNS=1` (set by CI) makes another
/// layout a failure.
fn namespaced(conf: &str) -> bool {
    let layout = Path::new(conf).with_file_name("net.layout");
    let netns = std::fs::read_to_string(&layout).is_ok_and(|l| l.trim() == "netns");
    if !netns {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_NETNS").is_none(),
            "DISAGG_REQUIRE_NETNS is set but {} does not say netns",
            layout.display()
        );
        eprintln!(
            "SKIPPED: the local Slurm runs every node on 127.0.0.1 (LOCAL_SLURM_NET=loopback)"
        );
    }
    netns
}

/// The address a host name resolves to here.
fn resolve(host: &str) -> std::net::IpAddr {
    use std::net::ToSocketAddrs as _;
    (host, 1).to_socket_addrs().unwrap().next().unwrap().ip()
}

#[test]
fn roles_on_different_nodes_talk_across_the_bridge() {
    let Some(conf) = slurm_conf() else { return };
    if !namespaced(conf) {
        return;
    }
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = disagg(conf, &clusters(tmp.path(), conf))
        .args([
            "submit",
            &data("slurm-ctx4-gen8.yaml"),
            "--cluster",
            "local",
        ])
        .args(["--concurrency", "2", "--num-prompts", "4", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let host = |role: &str| -> String {
        let path = run.join(format!("rendezvous/{role}.json"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["host"].as_str().unwrap().to_string()
    };
    let (ctx, gen_, server) = (host("CTX_0"), host("GEN_0"), host("DISAGG_SERVER"));
    let (ctx_ip, gen_ip, server_ip) = (resolve(&ctx), resolve(&gen_), resolve(&server));
    for ip in [ctx_ip, gen_ip, server_ip] {
        assert!(
            !ip.is_loopback(),
            "{ctx}={ctx_ip} {gen_}={gen_ip} {server}={server_ip}"
        );
    }
    assert_ne!(ctx_ip, gen_ip, "the two servers sit on different nodes");
    // The router on the generation server's first node reached the context server on another
    // node, by the address it published.
    let config = std::fs::read_to_string(run.join("rendezvous/server_config.yaml")).unwrap();
    assert!(config.contains(&format!("\"{ctx}:")), "{config}");
    assert_ne!(server_ip, ctx_ip, "{config}");
}

#[test]
fn a_worker_bound_to_loopback_fails_the_run_naming_its_address_and_node() {
    let Some(conf) = slurm_conf() else { return };
    if !namespaced(conf) {
        return;
    }
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let t0 = Instant::now();
    let out = disagg(conf, &clusters(tmp.path(), conf))
        .env("DISAGG_BIN", env!("CARGO_BIN_EXE_disagg"))
        .args([
            "submit",
            &data("slurm-loopback-worker.yaml"),
            "--cluster",
            "local",
        ])
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{stderr}");
    // The diagnosis names the loopback address it answers at, the node address nobody reaches,
    // and the node.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: the run failed"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("answers at 127.0.0.1:"), "{line}");
    assert!(
        line.contains("bound to the loopback interface only"),
        "{line}"
    );
    let node = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| line.contains(&format!("but not at {n}:")))
        .unwrap_or_else(|| panic!("no node named: {line}"));
    let log = std::fs::read_to_string(run.join("logs/slurm-GEN_0.log")).unwrap_or_default()
        + &std::fs::read_to_string(run.join("logs/slurm-CTX_0.log")).unwrap_or_default();
    assert!(log.contains(&format!("node {node}")), "{log}");
}

/// The seed's 3-node DeepSeek-R1 config with `engine: trtllm`, as a real job on the local
/// Slurm, against conformance stand-ins of `trtllm-serve` and `trtllm-llmapi-launch`
/// (tests/data/conformance: upstream's flags only, the options file checked, argv, env and rank
/// recorded): every one of the 8 GEN and 4 CTX ranks runs the launcher in its world, rank 0
/// serves, and both coordinators pass — the built-in router and `router.implementation: trtllm`
/// (the stand-in's `trtllm-serve disaggregated`, upstream's CLI).
#[test]
fn the_seed_config_runs_on_trtllm_stand_ins_rank_by_rank() {
    let Some(conf) = slurm_conf() else { return };
    let _one = exclusive();
    let seed = repo_root().join(
        "fixtures/trtllm-configs/perf/deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX.yaml",
    );
    let stand_ins = data("conformance");
    for coordinator in ["disagg", "trtllm"] {
        let tmp = tempfile::tempdir().unwrap();
        let records = tmp.path().join("records");
        std::fs::create_dir_all(&records).unwrap();
        // The config keeps its file name (the test's identity); only the coordinator differs.
        let config = tmp.path().join(seed.file_name().unwrap());
        // `numactl -m 0,1` (slurm.numa_bind) needs two NUMA nodes; this machine has one. The
        // binding is covered by the batch-script snapshots and the injection test.
        let mut yaml = std::fs::read_to_string(&seed)
            .unwrap()
            .replace("numa_bind: true", "numa_bind: false");
        yaml.push_str(&format!("router:\n  implementation: {coordinator}\n"));
        std::fs::write(&config, yaml).unwrap();
        let run = tmp.path().join("run");
        let out = disagg(conf, &clusters(tmp.path(), conf))
            .env(
                "PATH",
                format!("{stand_ins}:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .env("DISAGG_BIN", env!("CARGO_BIN_EXE_disagg"))
            .env("DISAGG_CONFORMANCE_DIR", &records)
            .arg("submit")
            .arg(&config)
            .args(["--cluster", "local", "--engine", "trtllm"])
            .args(["--concurrency", "1,2", "--num-prompts", "4"])
            .args(["--isl", "64", "--osl", "8", "--no-store", "--out"])
            .arg(&run)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{coordinator}: {stdout}\n{stderr}"
        );
        let record = |name: &str| {
            std::fs::read_to_string(records.join(name))
                .unwrap_or_else(|e| panic!("{coordinator}: no {name} ({e}); {stderr}"))
        };
        for (role, world) in [("GEN_0", 8), ("CTX_0", 4)] {
            let mut nodes = std::collections::BTreeSet::new();
            for rank in 0..world {
                let launch = record(&format!("{role}.{rank}.launch"));
                assert!(
                    launch.contains(&format!("procid={rank} ntasks={world} ")),
                    "{role} rank {rank}: {launch}"
                );
                assert!(launch.contains("argv=trtllm-serve "), "{launch}");
                nodes.insert(
                    launch
                        .split("node=")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
            assert_eq!(
                nodes.len(),
                world / 4,
                "{role}: 4 ranks per node: {nodes:?}"
            );
            // Only rank 0 runs the server, with upstream's worker flags and env.
            let serve = record(&format!("{role}.0.serve"));
            assert!(
                serve.contains(" --backend pytorch --config ")
                    && serve.contains(" --port 0 --report_addr "),
                "{serve}"
            );
            assert!(
                serve.contains("log_level=INFO pdl=1"),
                "worker_env_var: {serve}"
            );
            assert!(serve.contains("worker model="), "{serve}");
            for rank in 1..world {
                assert!(
                    !records.join(format!("{role}.{rank}.serve")).exists(),
                    "{role} rank {rank} started a server"
                );
            }
        }
        if coordinator == "trtllm" {
            let serve = record("DISAGG_SERVER.0.serve");
            assert!(serve.contains("argv: disaggregated -c "), "{serve}");
            assert!(serve.contains("coordinator t=10800 r=10800"), "{serve}");
            assert!(serve.contains("server_gc=1"), "server_env_var: {serve}");
        } else {
            assert!(!records.join("DISAGG_SERVER.0.serve").exists());
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("results/summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["outcome"], "passed", "{coordinator}: {summary}");
    }
}
