//! A real engine through the whole tool: `disagg run examples/local-vllm.yaml` starts two real
//! vLLM servers (the CPU build of `scripts/real-engines.sh setup`, a tiny model), a prefill and a
//! decode server whose KV moves over NIXL, the built-in router speaking vLLM's hand-off, and the
//! benchmark. Needs `source ~/.cache/disagg/engines/env.sh` (DISAGG_VLLM_BIN, DISAGG_MODEL_PATH);
//! without it the test says SKIPPED, and `DISAGG_REQUIRE_VLLM=1` (set by CI) makes that a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo_root;

/// Whether the real engine is set up.
fn vllm() -> bool {
    let ok = std::env::var("DISAGG_VLLM_BIN").is_ok_and(|b| Path::new(&b).exists())
        && std::env::var("DISAGG_MODEL_PATH").is_ok_and(|m| Path::new(&m).exists());
    if !ok {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_VLLM").is_none(),
            "DISAGG_REQUIRE_VLLM is set but DISAGG_VLLM_BIN / DISAGG_MODEL_PATH name no engine: \
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

fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_disaggregated_run_on_real_vllm_moves_the_kv_over_nixl() {
    if !vllm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (stdout_file, stderr_file) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = disagg_test_support::ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_disagg"))
            .current_dir(repo_root())
            .env("XDG_DATA_HOME", dir.path())
            .args(["run", "examples/local-vllm.yaml", "--no-store"])
            .args([
                "--concurrency",
                "1,2",
                "--num-prompts",
                "4",
                "--osl",
                "8",
                "--out",
            ])
            .arg(&run)
            .stdout(Stdio::from(std::fs::File::create(&stdout_file).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr_file).unwrap()))
            .spawn()
            .unwrap(),
    );
    // While the benchmark runs, read the decode server's own counters of where its prompt
    // tokens came from.
    let t0 = Instant::now();
    let (mut external, mut local) = (0.0_f64, 0.0_f64);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the run took over 10 minutes"
        );
        let gen_ = std::fs::read_to_string(run.join("rendezvous/hostnames/GEN_0.txt")).ok();
        if let Some(metrics) = gen_.and_then(|a| get(&a, "/metrics")) {
            let name = "vllm:prompt_tokens_by_source_total";
            external = external.max(counter(&metrics, name, "external_kv_transfer"));
            local = local.max(counter(&metrics, name, "local_compute"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["outcome"], "passed", "{summary}");
    for con in ["con1", "con2"] {
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join(format!("results/{con}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["valid"], true, "{rec}");
        assert_eq!(rec["metrics"]["completed"], 4, "{con}");
        // ignore_eos: exactly the requested output length, counted from the engine's usage.
        assert_eq!(rec["metrics"]["total_output_tokens"], 32, "{con}");
    }
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
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.contains(&run.display().to_string()) || c.contains("vllm serve"))
        .filter(|c| !c.is_empty())
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}
