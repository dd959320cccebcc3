//! A real engine through the whole tool: `disagg run examples/local-vllm.yaml` starts two real
//! vLLM servers (the CPU build of `scripts/real-engines.sh setup`, a tiny model), a prefill and a
//! decode server whose KV moves over NIXL, the built-in router speaking vLLM's hand-off, and the
//! benchmark; the decode server's vLLM killed mid-benchmark ends the run with every vLLM process
//! gone; and the same pair, started here, answers the same through `disagg router` as through
//! vLLM's own router (`vllm-router`, PyPI). Needs `source ~/.cache/disagg/engines/env.sh`
//! (DISAGG_VLLM_BIN, DISAGG_VLLM_MODEL, DISAGG_VLLM_ROUTER_BIN); without it the tests say
//! SKIPPED, and `DISAGG_REQUIRE_VLLM=1` (set by CI) makes that a failure.
//!
//! Its own test binary: each of these tests keeps both cores busy for a minute, so they must not
//! run beside the timing-sensitive tests of `it/` (test binaries run one after the other).

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

#[path = "it/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use disagg_test_support::free_port;
use support::{ask, get, log_file, log_tail, repo_root, spawn_disagg};

/// One of these tests at a time: two vLLM servers already share the machine's two cores, and
/// the test threads would otherwise start a pair per test at once.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the real engine is set up.
fn vllm() -> bool {
    let ok = std::env::var("DISAGG_VLLM_BIN").is_ok_and(|b| Path::new(&b).exists())
        && std::env::var("DISAGG_VLLM_MODEL").is_ok_and(|m| Path::new(&m).exists());
    if !ok {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_VLLM").is_none(),
            "DISAGG_REQUIRE_VLLM is set but DISAGG_VLLM_BIN / DISAGG_VLLM_MODEL name no engine: \
             run scripts/real-engines.sh setup and source its env.sh"
        );
        eprintln!("SKIPPED: no real vLLM (scripts/real-engines.sh setup; source its env.sh)");
    }
    ok
}

/// A counter of vLLM's Prometheus text, summed over its label sets that contain `label`.
fn counter(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The decode server's own counters of where its prompt tokens came from: (loaded over KV
/// transfer, computed).
fn prompt_sources(addr: &str) -> Option<(f64, f64)> {
    let metrics = get(addr, "/metrics")?;
    let name = "vllm:prompt_tokens_by_source_total";
    Some((
        counter(&metrics, name, "external_kv_transfer"),
        counter(&metrics, name, "local_compute"),
    ))
}

/// One process, told apart from a later one that reuses its pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    start: u64,
}

/// `/proc/PID/stat` after the command name: state, ppid, pgid, ..., starttime (field 22).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        let start = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(Proc { pid, start })
    }

    /// Still there and not a zombie (a zombie is dead, only not reaped yet).
    fn running(self) -> bool {
        stat_fields(self.pid).is_some_and(|f| {
            f.first().is_some_and(|s| s != "Z") && f.get(19) == Some(&self.start.to_string())
        })
    }

    /// `pid 123 (ppid 1, pgid 100, state S): CMDLINE`, for a failure message.
    fn describe(self) -> String {
        let f = stat_fields(self.pid).unwrap_or_default();
        let field = |i: usize| f.get(i).map_or("?", String::as_str).to_string();
        format!(
            "pid {} (ppid {}, pgid {}, state {}): {}",
            self.pid,
            field(1),
            field(2),
            field(0),
            cmdline(self.pid)
        )
    }
}

/// A process's command line, its arguments joined by spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Every process now on the machine, with its parent and its process group.
fn processes() -> Vec<(Proc, u32, u32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let f = stat_fields(pid)?;
            let proc_ = Proc {
                pid,
                start: f.get(19)?.parse().ok()?,
            };
            Some((proc_, f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// A process started in a process group of its own, with everything it starts: when dropped
/// (also when the test panics) SIGKILL goes to its group and to every process ever seen below
/// it, so vLLM's API server takes its EngineCore and Worker processes with it, and so do roles
/// that `disagg run` put in groups of their own.
struct Tree {
    child: Child,
    /// Every process seen in it, with its parent then.
    seen: BTreeMap<Proc, u32>,
}

impl Tree {
    fn spawn(cmd: &mut Command) -> Tree {
        let child = cmd.process_group(0).spawn().unwrap();
        let mut tree = Tree {
            child,
            seen: BTreeMap::new(),
        };
        tree.look();
        tree
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Note every process now below it or in its group. Call it while the tree runs: a process
    /// whose parent died is found later only if it was seen before.
    fn look(&mut self) {
        let all = processes();
        let root = self.pid();
        let mut family: BTreeSet<u32> = all
            .iter()
            .filter(|(p, _, pgid)| p.pid == root || *pgid == root)
            .map(|(p, _, _)| p.pid)
            .collect();
        let mut todo: Vec<u32> = family.iter().copied().collect();
        while let Some(parent) = todo.pop() {
            for (p, _, _) in all.iter().filter(|(_, ppid, _)| *ppid == parent) {
                if family.insert(p.pid) {
                    todo.push(p.pid);
                }
            }
        }
        for (p, ppid, _) in all.iter().filter(|(p, _, _)| family.contains(&p.pid)) {
            self.seen.entry(*p).or_insert(*ppid);
        }
    }

    /// Its own exit, once it has ended.
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Every process seen in it that is still running.
    fn left(&self) -> Vec<Proc> {
        self.seen.keys().copied().filter(|p| p.running()).collect()
    }

    /// SIGKILL to its group and to everything seen in it, and reap it.
    fn kill(&mut self) {
        let root = self.pid();
        let reaped = self.try_wait().is_some();
        if !reaped {
            self.look();
        }
        let left = self.left();
        // Once it is reaped its pid may be reused: its group is still its own only while a
        // process seen in it runs.
        let group = !reaped
            || left
                .iter()
                .any(|p| stat_fields(p.pid).and_then(|f| f.get(2)?.parse().ok()) == Some(root));
        let mut targets: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
        if group {
            targets.push(format!("-{root}"));
        }
        if targets.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&targets)
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait up to `limit` for `tree`'s processes to end (a killed vLLM Worker with GBs mapped can
/// take seconds to exit on a busy machine; what its killed parents leave is reaped by init),
/// then fail naming every one still running.
fn assert_all_ended(tree: &Tree, limit: Duration) {
    let t0 = Instant::now();
    while !tree.left().is_empty() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = tree.left().into_iter().map(Proc::describe).collect();
    assert!(left.is_empty(), "left running:\n{}", left.join("\n"));
}

/// `disagg run examples/local-vllm.yaml ARGS --out DIR/run` from the repository root, its
/// output in `DIR/stdout` and `DIR/stderr`.
fn start_run(dir: &Path, args: &[&str]) -> Tree {
    Tree::spawn(
        Command::new(env!("CARGO_BIN_EXE_disagg"))
            .current_dir(repo_root())
            .env("XDG_DATA_HOME", dir)
            // The model the workers' engines load (the setup's tiny model).
            .env(
                "DISAGG_MODEL_PATH",
                std::env::var("DISAGG_VLLM_MODEL").unwrap(),
            )
            .args(["run", "examples/local-vllm.yaml", "--no-store"])
            .args(args)
            .arg("--out")
            .arg(dir.join("run"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap()),
    )
}

/// The engine pids a run's role logs name (`GEN_0: engine pid N: ...`), with their commands.
fn engines(run: &Path) -> Vec<(String, u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(run.join("logs")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Some((role, rest)) = line.split_once(": engine pid ") else {
                continue;
            };
            let Some((pid, command)) = rest.split_once(": ") else {
                continue;
            };
            found.push((role.to_string(), pid.parse().unwrap(), command.to_string()));
        }
    }
    found
}

/// After a run has ended: every process it started is gone (its roles, the vLLM servers and
/// their EngineCore and Worker processes), none names its run directory, and no `vllm serve`
/// with one of its engines' command lines is left.
fn assert_nothing_left(run: &Path, tree: &Tree) {
    let engines = engines(run);
    assert!(engines.len() >= 2, "engines started: {engines:?}");
    // The test saw what each API server started (EngineCore), so it can tell they are gone.
    for (role, pid, _) in &engines {
        assert!(
            tree.seen.values().any(|ppid| ppid == pid),
            "{role}: nothing seen below its vLLM {pid}: {:?}",
            tree.seen
        );
    }
    assert_all_ended(tree, Duration::from_secs(30));
    let run_dir = run.display().to_string();
    let strays: Vec<String> = processes()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.pid != std::process::id())
        .filter(|p| {
            let c = cmdline(p.pid);
            // `python3 .../bin/vllm serve ...`: the interpreter comes first.
            c.contains(&run_dir) || engines.iter().any(|(_, _, command)| c.ends_with(command))
        })
        .filter(|p| p.running())
        .map(Proc::describe)
        .collect();
    assert!(strays.is_empty(), "left running:\n{}", strays.join("\n"));
}

/// Follow a run started by [`start_run`] in `dir` to its end (at most 10 minutes), calling
/// `each` every 100 ms meanwhile; it must exit 0. Its stderr.
fn finish_run(dir: &Path, child: &mut Tree, mut each: impl FnMut()) -> String {
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the run took over 10 minutes"
        );
        child.look();
        each();
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    stderr
}

/// The records of a run of `--concurrency 1,2 --num-prompts 4 --osl 8`: both valid, every
/// request completed, exactly the requested output length (`ignore_eos`) counted.
fn exact_records(run: &Path) -> Vec<serde_json::Value> {
    ["con1", "con2"]
        .iter()
        .map(|con| {
            let rec: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(run.join(format!("results/{con}.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(rec["valid"], true, "{rec}");
            assert_eq!(rec["metrics"]["completed"], 4, "{con}");
            assert_eq!(rec["metrics"]["total_output_tokens"], 32, "{con}");
            rec
        })
        .collect()
}

#[test]
fn a_disaggregated_run_on_real_vllm_moves_the_kv_over_nixl() {
    if !vllm() {
        return;
    }
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = start_run(
        dir.path(),
        &["--concurrency", "1,2", "--num-prompts", "4", "--osl", "8"],
    );
    // While the benchmark runs, read the decode server's own counters of where its prompt
    // tokens came from.
    let (mut external, mut local) = (0.0_f64, 0.0_f64);
    finish_run(dir.path(), &mut child, || {
        let gen_ = std::fs::read_to_string(run.join("rendezvous/hostnames/GEN_0.txt")).ok();
        if let Some((e, l)) = gen_.and_then(|a| prompt_sources(&a)) {
            external = external.max(e);
            local = local.max(l);
        }
    });
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["outcome"], "passed", "{summary}");
    // ignore_eos: exactly the requested output length, counted from the engine's usage.
    exact_records(&run);
    // The decode server loaded the prompts over NIXL and computed none of them.
    assert!(
        external > 0.0,
        "no external_kv_transfer prompt tokens on the decode server"
    );
    assert_eq!(
        local, 0.0,
        "the decode server recomputed {local} prompt tokens"
    );
    // Every vLLM process (API server, EngineCore, Worker) is gone.
    assert_nothing_left(&run, &child);
}

#[test]
fn an_aggregated_run_on_real_vllm_serves_whole_requests() {
    if !vllm() {
        return;
    }
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = start_run(
        dir.path(),
        &[
            "--aggregated",
            "--concurrency",
            "1,2",
            "--num-prompts",
            "4",
            "--osl",
            "8",
        ],
    );
    let stderr = finish_run(dir.path(), &mut child, || {});
    assert!(stderr.contains("engine vllm, aggregated"), "{stderr}");
    // One server, no KV connector, no context server.
    let engines = engines(&run);
    assert_eq!(engines.len(), 1, "{engines:?}");
    assert_eq!(engines[0].0, "GEN_0");
    assert!(!engines[0].2.contains("kv-transfer-config"), "{engines:?}");
    for rec in exact_records(&run) {
        assert_eq!(rec["metrics"]["output_token_source"], "usage", "{rec}");
    }
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        run_json["overrides"]["aggregated"], true,
        "the record says what ran"
    );
    child.look();
    assert_all_ended(&child, Duration::from_secs(30));
}

#[test]
fn killing_the_decode_servers_vllm_mid_benchmark_fails_the_run_and_ends_every_vllm_process() {
    if !vllm() {
        return;
    }
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // ~1 s a request at concurrency 1: the benchmark runs for a minute or so.
    let mut child = start_run(
        dir.path(),
        &["--concurrency", "1", "--num-prompts", "40", "--osl", "32"],
    );
    let t0 = Instant::now();
    loop {
        let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        assert!(
            child.try_wait().is_none(),
            "the run ended before its benchmark was under way:\n{}",
            stderr()
        );
        let bench = std::fs::read_to_string(run.join("rendezvous/BENCHMARK.json")).ok();
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the benchmark was not under way after 10 minutes: {bench:?}\n{}",
            stderr()
        );
        child.look();
        let bench = bench.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if bench.is_some_and(|b| b["state"] == "ready" && b["progress"]["done"].as_u64() >= Some(2))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, pid, _) = engines(&run)
        .into_iter()
        .find(|(role, _, _)| role == "GEN_0")
        .unwrap();
    let engine = Proc::of(pid).unwrap();
    child.look();
    let below = processes()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == pid)
        .count();
    assert!(
        below > 0,
        "the decode server's vLLM {pid} has no EngineCore"
    );
    // The API server's last lines before it dies: the failure message shows the log's tail.
    let log = run.join("logs/GEN_0.log");
    eprintln!(
        "killing GEN_0's vLLM {pid} {:.0?} after the start",
        t0.elapsed()
    );
    let killed = Instant::now();
    let sent = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "disagg run still running 30 s after its decode server's vLLM was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    eprintln!("the run ended {took:?} after the kill");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!engine.running(), "the killed engine {pid} still runs");
    // The role is named, with how its engine ended and the tail of its log, vLLM's last lines.
    assert!(stderr.contains("GEN_0 (pid "), "{stderr}");
    assert!(
        stderr.contains("the vllm engine exited (was killed by signal 9 (SIGKILL))"),
        "{stderr}"
    );
    let heading = format!("last lines of {}:", log.display());
    let tail: Vec<&str> = stderr
        .split(&heading)
        .nth(1)
        .unwrap_or_else(|| panic!("no tail of {}:\n{stderr}", log.display()))
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !tail.is_empty() && tail.iter().all(|l| text.contains(l)),
        "the tail is not GEN_0.log's: {tail:?}"
    );
    assert!(
        tail.iter().any(|l| l.contains(&format!("pid={pid})"))
            || l.contains("EngineCore")
            || l.starts_with("INFO:")),
        "no vLLM line in the tail: {tail:?}"
    );
    let status_file =
        std::fs::read_to_string(run.join("rendezvous/benchmark_status.txt")).unwrap_or_default();
    assert!(
        status_file.starts_with("Failed: ") && status_file.contains("GEN_0"),
        "{status_file}"
    );
    assert_nothing_left(&run, &child);
}

/// Wait until `addr` answers `GET /health` with 200; fail early, with its log, if `tree`
/// ends first.
fn wait_healthy(what: &str, addr: &str, tree: &mut Tree, log: &Path, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if get(addr, "/health").is_some_and(|r| r.split(' ').nth(1) == Some("200")) {
            eprintln!("{what} healthy after {:.0?}", t0.elapsed());
            return;
        }
        if let Some(status) = tree.try_wait() {
            panic!(
                "{what} ended ({status}) before it was healthy:\n{}",
                log_tail(log)
            );
        }
        assert!(
            t0.elapsed() < limit,
            "{what} not healthy after {limit:?}:\n{}",
            log_tail(log)
        );
        tree.look();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One real vLLM server of a prefill/decode pair (`role`: its NIXL `kv_role`; `None`: an
/// aggregated server), started as `disagg run` starts it (see `GEN_0: engine pid N: ...` in a
/// run's logs), its output in `log`.
fn vllm_server(role: Option<&str>, port: u16, core: &str, log: &Path) -> Tree {
    let kv = role.map(|r| {
        [
            "--kv-transfer-config".to_string(),
            format!(r#"{{"kv_connector":"NixlConnector","kv_role":"{r}"}}"#),
        ]
    });
    Tree::spawn(
        Command::new(std::env::var("DISAGG_VLLM_BIN").unwrap())
            .arg("serve")
            .arg(std::env::var("DISAGG_VLLM_MODEL").unwrap())
            .args(["--served-model-name", "tiny-qwen3", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(kv.iter().flatten())
            .args(["--max-num-seqs", "4", "--max-model-len", "2048"])
            .args(["--dtype", "float32", "--enforce-eager"])
            .envs([
                ("VLLM_TARGET_DEVICE", "cpu"),
                ("VLLM_CPU_KVCACHE_SPACE", "1"),
                ("VLLM_CPU_OMP_THREADS_BIND", core),
                ("HF_HUB_OFFLINE", "1"),
                ("TRANSFORMERS_OFFLINE", "1"),
                ("VLLM_NO_USAGE_STATS", "1"),
                ("DO_NOT_TRACK", "1"),
                ("VLLM_NIXL_SIDE_CHANNEL_HOST", "127.0.0.1"),
            ])
            .env("VLLM_NIXL_SIDE_CHANNEL_PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(log_file(log))
            .stderr(log_file(log)),
    )
}

/// vLLM's own router (`vllm-router`, from `scripts/real-engines.sh setup`).
fn vllm_router_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("DISAGG_VLLM_ROUTER_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let vllm = PathBuf::from(std::env::var_os("DISAGG_VLLM_BIN")?);
            Some(vllm.with_file_name("vllm-router"))
        })?;
    bin.exists().then_some(bin)
}

/// The served model name and the tokens asked of each answer.
const MODEL: &str = "tiny-qwen3";
const MAX_TOKENS: u64 = 16;

#[test]
fn disagg_router_and_vllm_router_answer_the_same_in_front_of_a_real_vllm_pair() {
    if !vllm() {
        return;
    }
    let _one = one_at_a_time();
    let Some(vllm_router) = vllm_router_bin() else {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_VLLM").is_none(),
            "DISAGG_REQUIRE_VLLM is set but there is no vllm-router next to DISAGG_VLLM_BIN: \
             run scripts/real-engines.sh setup and source its env.sh"
        );
        eprintln!("SKIPPED: no vllm-router (scripts/real-engines.sh setup; source its env.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ctx_port, gen_port) = (free_port(), free_port());
    let (ctx_addr, gen_addr) = (
        format!("127.0.0.1:{ctx_port}"),
        format!("127.0.0.1:{gen_port}"),
    );
    let (ctx_log, gen_log) = (dir.path().join("ctx.log"), dir.path().join("gen.log"));
    // Each server's model thread on a core of its own, as examples/local-vllm.yaml has it.
    let mut ctx = vllm_server(Some("kv_producer"), ctx_port, "0", &ctx_log);
    let mut gen_ = vllm_server(Some("kv_consumer"), gen_port, "1", &gen_log);
    // And an aggregated server of the same model, the reference for the text.
    let agg_port = free_port();
    let agg_addr = format!("127.0.0.1:{agg_port}");
    let agg_log = dir.path().join("agg.log");
    let mut agg = vllm_server(None, agg_port, "0", &agg_log);
    let limit = Duration::from_secs(600);
    wait_healthy("the prefill vLLM", &ctx_addr, &mut ctx, &ctx_log, limit);
    wait_healthy("the decode vLLM", &gen_addr, &mut gen_, &gen_log, limit);
    wait_healthy("the aggregated vLLM", &agg_addr, &mut agg, &agg_log, limit);
    ctx.look();
    gen_.look();
    agg.look();

    let config = dir.path().join("server_config.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: 127.0.0.1\nport: 0\ncontext_servers:\n  num_instances: 1\n  \
             urls: [\"{ctx_addr}\"]\ngeneration_servers:\n  num_instances: 1\n  \
             urls: [\"{gen_addr}\"]\n"
        ),
    )
    .unwrap();
    let (_ours, _, ours_url) = spawn_disagg(&[
        "router",
        "-c",
        &config.display().to_string(),
        "--handoff",
        "vllm",
    ]);
    let router_port = free_port();
    let router_log = dir.path().join("vllm-router.log");
    let mut theirs = Tree::spawn(
        Command::new(&vllm_router)
            .args(["--vllm-pd-disaggregation", "--kv-connector", "nixl"])
            .args(["--prefill", &format!("http://{ctx_addr}")])
            .args(["--decode", &format!("http://{gen_addr}")])
            .args([
                "--policy",
                "round_robin",
                "--intra-node-data-parallel-size",
                "1",
            ])
            .args(["--host", "127.0.0.1", "--port", &router_port.to_string()])
            .args(["--prometheus-port", &free_port().to_string()])
            .stdin(Stdio::null())
            .stdout(log_file(&router_log))
            .stderr(log_file(&router_log)),
    );
    let theirs_addr = format!("127.0.0.1:{router_port}");
    wait_healthy(
        "vllm-router",
        &theirs_addr,
        &mut theirs,
        &router_log,
        Duration::from_secs(120),
    );

    let before = prompt_sources(&gen_addr).unwrap();
    let ours = ask(&ours_url, MODEL, MAX_TOKENS);
    let middle = prompt_sources(&gen_addr).unwrap();
    let theirs_answers = ask(&format!("http://{theirs_addr}"), MODEL, MAX_TOKENS);
    let after = prompt_sources(&gen_addr).unwrap();
    let whole = ask(&format!("http://{agg_addr}"), MODEL, MAX_TOKENS);
    eprintln!(
        "disagg router: {ours:?}\nvllm-router:   {theirs_answers:?}\naggregated:    {whole:?}"
    );
    eprintln!(
        "decode server's prompt tokens (over NIXL, computed): {before:?} {middle:?} {after:?}"
    );
    for (name, answers) in [("disagg router", &ours), ("vllm-router", &theirs_answers)] {
        for a in answers {
            assert_eq!(a.tokens, MAX_TOKENS, "{name}: {answers:?}");
            assert!(!a.text.is_empty(), "{name}: {answers:?}");
        }
    }
    // Greedy on fp32: the same text whichever router split the request.
    for (what, (a, b)) in ["completion", "streamed completion", "chat"]
        .iter()
        .zip(ours.iter().zip(&theirs_answers))
    {
        assert_eq!(a.text, b.text, "{what}: disagg router vs vllm-router");
    }
    // And the same text as one aggregated server computes it alone: the KV that moved over
    // NIXL is the KV the decode server would have computed.
    for (what, (a, b)) in ["completion", "streamed completion", "chat"]
        .iter()
        .zip(ours.iter().zip(&whole))
    {
        assert_eq!(a, b, "{what}: disagg router vs the aggregated server");
    }
    // Through both, the decode server loaded every prompt over NIXL and computed none.
    assert!(
        middle.0 > before.0,
        "disagg router: {before:?} -> {middle:?}"
    );
    assert!(after.0 > middle.0, "vllm-router: {middle:?} -> {after:?}");
    assert_eq!(after.1, 0.0, "the decode server computed prompt tokens");

    // Everything started here ends with its guard, vLLM's EngineCore and Worker included.
    for t in [&mut ctx, &mut gen_, &mut agg, &mut theirs] {
        t.look();
        t.kill();
        assert_all_ended(t, Duration::from_secs(30));
    }
}

/// The router's tokenizer for a real model makes the ids Hugging Face transformers makes — the
/// library vLLM, SGLang and TensorRT-LLM tokenize with: `tokenizer(prompt)` for completions and
/// `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)` for chat, with the
/// model's own Jinja template (the tiny Qwen3's: namespaces, reversed slices, Python string
/// methods). No server needed: transformers runs in the engine's venv.
#[test]
fn the_routers_model_tokenizer_makes_the_ids_transformers_makes() {
    if !vllm() {
        return;
    }
    let model = PathBuf::from(std::env::var("DISAGG_VLLM_MODEL").unwrap());
    let python = Path::new(&std::env::var("DISAGG_VLLM_BIN").unwrap()).with_file_name("python");
    let chats = serde_json::json!([
        [{"role": "user", "content": "NVIDIA is a great company because"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is KV cache?"}],
        [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "<think>\nthe user greets\n</think>\n\nHi there!"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "parts"}]}
        ]
    ]);
    let prompts = serde_json::json!([
        "NVIDIA is a great company because",
        "  spaces\tand\nlines  "
    ]);
    let script = r#"
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
def ids(r):
    return list(r["input_ids"] if hasattr(r, "keys") else r)
def text(m):
    c = m["content"]
    return c if isinstance(c, str) else "\n".join(p["text"] for p in c)
chats = [ids(tok.apply_chat_template([dict(m, content=text(m)) for m in c], add_generation_prompt=True, tokenize=True)) for c in json.loads(sys.argv[2])]
prompts = [tok(p)["input_ids"] for p in json.loads(sys.argv[3])]
print(json.dumps({"chats": chats, "prompts": prompts}))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&model)
        .arg(chats.to_string())
        .arg(prompts.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transformers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = disagg_bench::dataset::prompt_tokenizer(&model).unwrap();
    for (i, chat) in chats.as_array().unwrap().iter().enumerate() {
        let messages: Vec<disagg_protocol::ChatMessage> =
            serde_json::from_value(chat.clone()).unwrap();
        let got = ours.chat(&messages).unwrap();
        let want: Vec<u32> = serde_json::from_value(want["chats"][i].clone()).unwrap();
        assert!(!want.is_empty());
        assert_eq!(got, want, "chat {i}: {chat}");
    }
    for (i, prompt) in prompts.as_array().unwrap().iter().enumerate() {
        let got = ours.completion(prompt.as_str().unwrap());
        let want: Vec<u32> = serde_json::from_value(want["prompts"][i].clone()).unwrap();
        assert_eq!(got, want, "prompt {i}: {prompt}");
    }
}
