//! The command line of an external engine (`trtllm`, `vllm`, `sglang`, `command`) for one
//! worker role. Pure: the caller picks the port, writes the options file and starts it.

use disagg_config::EngineKind;
use disagg_launch::shell::quote;
use disagg_plan::{Role, ServerKind};

/// What a worker's engine is started with.
#[derive(Debug, Clone)]
pub struct EngineParams<'a> {
    /// `CTX_0`, `GEN_1`.
    pub role: Role,
    /// Model path or hub id.
    pub model: &'a str,
    /// Address to bind.
    pub host: &'a str,
    /// Port to bind (0: any free one, reported through `report_addr`).
    pub port: u16,
    /// Where the engine writes the `host:port` it bound (TensorRT-LLM's `--report_addr`).
    pub report_addr: Option<&'a str>,
    /// The worker's options (`worker_config.ctx|gen`), written for the engine.
    pub options_file: &'a str,
    /// Tensor parallel size.
    pub tp: u32,
    /// Pipeline parallel size.
    pub pp: u32,
    /// GPUs of the server (several ranks → an MPI launcher for TensorRT-LLM).
    pub gpus: u32,
    /// The run directory.
    pub run_dir: &'a str,
    /// The model name requests carry (`--served-model-name`).
    pub served_name: &'a str,
    /// Flags mapped from the worker options ([`map_options`]).
    pub option_flags: &'a [String],
    /// `engine.args`, appended as they are.
    pub extra_args: &'a [String],
    /// The `vllm` program (`$DISAGG_VLLM_BIN`, else `vllm` on `PATH`).
    pub vllm_program: &'a str,
    /// Served aggregated: whole requests, no KV hand-off configured.
    pub aggregated: bool,
    /// The plan's KV-transfer port (SGLang's bootstrap port; vLLM's NIXL side channel goes in
    /// the environment).
    pub kv_port: Option<u16>,
    /// SGLang's `--disaggregation-transfer-backend`.
    pub transfer_backend: &'a str,
    /// Nodes the server spans, this process's node rank and the first node's host and
    /// rendezvous port (multi-node vLLM/SGLang).
    pub multi_node: Option<MultiNode<'a>>,
}

/// A server spanning several nodes, one engine process per node.
#[derive(Debug, Clone, Copy)]
pub struct MultiNode<'a> {
    /// Nodes.
    pub nodes: u32,
    /// This node's rank (0 serves HTTP).
    pub rank: u32,
    /// Rank 0's host.
    pub head: &'a str,
    /// The rendezvous port on rank 0's host.
    pub port: u16,
}

/// Flags mapped from the upstream worker options, and the options that have no flag (to be
/// named in a warning, never silently dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedOptions {
    /// Flags for the engine's command line.
    pub flags: Vec<String>,
    /// Option paths (`kv_cache_config.event_buffer_max_size`) with no equivalent.
    pub unmapped: Vec<String>,
}

/// The mapping of TensorRT-LLM's LLM-API options (`worker_config.ctx|gen`, upstream names) to
/// vLLM's and SGLang's flags; see docs/engines.md for the table with its sources. Parallelism
/// is passed apart (from the plan); `cache_transceiver_config` is the KV transfer, configured
/// from the role. Values keep upstream's meaning where the engines share it; where they do not
/// (the KV memory fraction: of free memory after weights in TensorRT-LLM, of all memory in
/// vLLM) the nearest flag is used and the table says so.
pub fn map_options(kind: EngineKind, w: &disagg_config::WorkerOptions) -> MappedOptions {
    // In the config's order, so the warning reads like the file.
    let options: Vec<(&str, serde_json::Value)> = w
        .engine_options()
        .into_iter()
        .map(|(k, v)| (k, v.to_json()))
        .collect();
    let mut out = MappedOptions::default();
    let sglang = kind == EngineKind::Sglang;
    let mut flag = |name: &str, value: Option<String>| {
        out.flags.push(name.to_string());
        out.flags.extend(value);
    };
    // Always given: upstream's defaults apply when the config leaves them out.
    if sglang {
        flag(
            "--max-running-requests",
            Some(w.max_batch_size().to_string()),
        );
        flag("--max-prefill-tokens", Some(w.max_num_tokens().to_string()));
    } else {
        flag("--max-num-seqs", Some(w.max_batch_size().to_string()));
        flag(
            "--max-num-batched-tokens",
            Some(w.max_num_tokens().to_string()),
        );
    }
    if let Some(l) = w.max_seq_len() {
        let name = if sglang {
            "--context-length"
        } else {
            "--max-model-len"
        };
        flag(name, Some(l.to_string()));
    }
    let mut unmapped = Vec::new();
    for (key, value) in &options {
        match (*key, value) {
            (
                "tensor_parallel_size"
                | "pipeline_parallel_size"
                | "max_batch_size"
                | "max_num_tokens"
                | "max_seq_len"
                | "cache_transceiver_config",
                _,
            ) => {}
            ("dtype", serde_json::Value::String(d)) => flag("--dtype", Some(d.clone())),
            ("enable_chunked_prefill", serde_json::Value::Bool(on)) => match (sglang, on) {
                (true, true) => flag(
                    "--chunked-prefill-size",
                    Some(w.max_num_tokens().to_string()),
                ),
                (true, false) => flag("--chunked-prefill-size", Some("-1".to_string())),
                (false, true) => flag("--enable-chunked-prefill", None),
                (false, false) => flag("--no-enable-chunked-prefill", None),
            },
            // `cuda_graph_config: null` turns CUDA graphs off.
            ("cuda_graph_config", serde_json::Value::Null) => {
                flag(
                    if sglang {
                        "--disable-cuda-graph"
                    } else {
                        "--enforce-eager"
                    },
                    None,
                );
            }
            ("kv_cache_config", serde_json::Value::Object(kv)) => {
                for (k, v) in kv {
                    match (k.as_str(), v) {
                        ("free_gpu_memory_fraction", serde_json::Value::Number(f)) => {
                            let name = if sglang {
                                "--mem-fraction-static"
                            } else {
                                "--gpu-memory-utilization"
                            };
                            flag(name, Some(f.to_string()));
                        }
                        ("dtype", serde_json::Value::String(d)) => {
                            // TensorRT-LLM's `fp8` is e4m3; SGLang names the variant.
                            let d = if sglang && d == "fp8" {
                                "fp8_e4m3"
                            } else {
                                d.as_str()
                            };
                            flag("--kv-cache-dtype", Some(d.to_string()));
                        }
                        ("tokens_per_block", serde_json::Value::Number(n)) => {
                            flag(
                                if sglang {
                                    "--page-size"
                                } else {
                                    "--block-size"
                                },
                                Some(n.to_string()),
                            );
                        }
                        ("enable_block_reuse", serde_json::Value::Bool(on)) => match (sglang, on) {
                            (true, true) => {}
                            (true, false) => flag("--disable-radix-cache", None),
                            (false, true) => flag("--enable-prefix-caching", None),
                            (false, false) => flag("--no-enable-prefix-caching", None),
                        },
                        _ => unmapped.push(format!("kv_cache_config.{k}")),
                    }
                }
            }
            _ => unmapped.push((*key).to_string()),
        }
    }
    out.unmapped = unmapped;
    out
}

impl EngineParams<'_> {
    fn is_context(&self) -> bool {
        self.role.server_kind() == Some(ServerKind::Ctx)
    }
}

pub use disagg_config::extensions::COMMAND_PLACEHOLDERS as PLACEHOLDERS;

/// Fill a `command` template: every `{name}` becomes the shell-quoted value, so a value from a
/// config is always one word of data; `{{` and `}}` are literal braces.
pub fn render_template(template: &str, p: &EngineParams<'_>) -> Result<String, String> {
    let value = |name: &str| -> Option<String> {
        Some(match name {
            "host" => p.host.to_string(),
            "port" => p.port.to_string(),
            "model" => p.model.to_string(),
            "options_file" => p.options_file.to_string(),
            "role" => p.role.to_string(),
            "worker" => if p.is_context() { "ctx" } else { "gen" }.to_string(),
            "tp" => p.tp.to_string(),
            "pp" => p.pp.to_string(),
            "run_dir" => p.run_dir.to_string(),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!(
                "a lone `}}` at byte {i} of engine.command; write `}}}}` for a literal brace"
            ));
        }
        let Some(end) = tail.find('}') else {
            return Err("an unclosed `{` in engine.command".to_string());
        };
        let name = &tail[1..end];
        let v = value(name).ok_or_else(|| {
            format!(
                "engine.command uses `{{{name}}}`, which is not a placeholder; use one of {}",
                PLACEHOLDERS
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        out.push_str(&quote(&v));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The program and arguments of the engine.
pub fn command_line(
    kind: EngineKind,
    template: Option<&str>,
    p: &EngineParams<'_>,
) -> Result<Vec<String>, String> {
    let s = |v: &str| v.to_string();
    let argv: Vec<String> = match kind {
        EngineKind::Sim => return Err("the sim engine runs inside the role".to_string()),
        EngineKind::Trtllm => {
            // As upstream: several ranks run under the LLM-API MPI launcher.
            let mut argv = if p.gpus > 1 {
                vec![s("trtllm-llmapi-launch")]
            } else {
                Vec::new()
            };
            argv.extend([
                s("trtllm-serve"),
                s(p.model),
                s("--backend"),
                s("pytorch"),
                s("--config"),
                s(p.options_file),
                s("--host"),
                s(p.host),
                s("--port"),
                p.port.to_string(),
            ]);
            // As upstream's era-E harness: port 0 and the bound address reported in a file,
            // so no port is reserved by one process and bound by another.
            if let Some(file) = p.report_addr {
                argv.extend([s("--report_addr"), s(file)]);
            }
            argv
        }
        EngineKind::Vllm => {
            // The prefill server produces KV for NIXL, the decode server consumes it.
            let role = if p.is_context() {
                "kv_producer"
            } else {
                "kv_consumer"
            };
            let mut argv = vec![
                s(p.vllm_program),
                s("serve"),
                s(p.model),
                s("--served-model-name"),
                s(p.served_name),
                s("--host"),
                s(p.host),
                s("--port"),
                p.port.to_string(),
                s("--tensor-parallel-size"),
                p.tp.to_string(),
                s("--pipeline-parallel-size"),
                p.pp.to_string(),
            ];
            if !p.aggregated {
                argv.extend([
                    s("--kv-transfer-config"),
                    format!(r#"{{"kv_connector":"NixlConnector","kv_role":"{role}"}}"#),
                ]);
            }
            // Multi-node without Ray (vLLM's `mp` executor): every node runs the same command
            // with its node rank; the others run headless (no API server).
            if let Some(m) = p.multi_node {
                argv.extend([
                    s("--distributed-executor-backend"),
                    s("mp"),
                    s("--nnodes"),
                    m.nodes.to_string(),
                    s("--node-rank"),
                    m.rank.to_string(),
                    s("--master-addr"),
                    s(m.head),
                    s("--master-port"),
                    m.port.to_string(),
                ]);
                if m.rank > 0 {
                    argv.push(s("--headless"));
                }
            }
            argv.extend(p.option_flags.iter().cloned());
            argv
        }
        EngineKind::Sglang => {
            let mut argv = vec![
                s("python3"),
                s("-m"),
                s("sglang.launch_server"),
                s("--model-path"),
                s(p.model),
                s("--served-model-name"),
                s(p.served_name),
                s("--host"),
                s(p.host),
                s("--port"),
                p.port.to_string(),
                s("--tp-size"),
                p.tp.to_string(),
                s("--pp-size"),
                p.pp.to_string(),
            ];
            if !p.aggregated {
                argv.extend([
                    s("--disaggregation-mode"),
                    s(if p.is_context() { "prefill" } else { "decode" }),
                    s("--disaggregation-transfer-backend"),
                    s(p.transfer_backend),
                ]);
                // Only the prefill server runs the bootstrap server (the router hands its
                // port to the decode server in every request).
                if let (true, Some(port)) = (p.is_context(), p.kv_port) {
                    argv.extend([s("--disaggregation-bootstrap-port"), port.to_string()]);
                }
            }
            if let Some(m) = p.multi_node {
                argv.extend([
                    s("--nnodes"),
                    m.nodes.to_string(),
                    s("--node-rank"),
                    m.rank.to_string(),
                    s("--dist-init-addr"),
                    format!("{}:{}", m.head, m.port),
                ]);
            }
            argv.extend(p.option_flags.iter().cloned());
            argv
        }
        EngineKind::Command => {
            let t = template.ok_or("engine type `command` needs engine.command")?;
            return Ok(vec![s("bash"), s("-c"), render_template(t, p)?]);
        }
    };
    Ok(argv
        .into_iter()
        .chain(p.extra_args.iter().cloned())
        .collect())
}

/// Nsight Systems around one worker's engine (`profiling.nsys_on`), as upstream's
/// `examples/disaggregated/slurm/benchmark/start_worker.sh` and `submit.py`
/// (`build_worker_environment`) do it: every rank's process under `nsys profile`, capture between
/// the `cudaProfilerStart/Stop` calls TensorRT-LLM makes at the iterations of
/// `TLLM_PROFILE_START_STOP`.
#[derive(Debug, Clone, Copy)]
pub struct Nsys<'a> {
    /// The report's path without its `.nsys-rep` extension.
    pub output: &'a str,
    /// The iterations to capture (`profiling.ctx_profile_range` or `gen_profile_range`).
    pub range: &'a str,
}

/// `argv` under `nsys profile`, and the environment the engine then needs.
pub fn nsys_wrap(argv: Vec<String>, n: Nsys<'_>) -> (Vec<String>, Vec<(String, String)>) {
    let prefix = [
        "nsys",
        "profile",
        "-o",
        n.output,
        "-f",
        "true",
        "-t",
        "cuda,nvtx,python-gil",
        "-c",
        "cudaProfilerApi",
        "--cuda-graph-trace",
        "node",
        "--capture-range-end=stop",
        "--gpu-metrics-devices=none",
    ];
    let env = [
        ("TLLM_PROFILE_RECORD_GC", "1"),
        ("TLLM_NVTX_DEBUG", "1"),
        ("NSYS_MPI_STORE_TEAMS_PER_RANK", "1"),
        ("TLLM_PROFILE_START_STOP", n.range),
    ];
    (
        prefix
            .iter()
            .map(|s| (*s).to_string())
            .chain(argv)
            .collect(),
        env.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    )
}

/// Where a worker rank's report goes: upstream's `nsys_worker_proc_<ROLE>_<instance>_<procid>`
/// under `dir`.
pub fn nsys_output(dir: &str, role: Role, rank: u32) -> String {
    let (kind, index) = match role {
        Role::Ctx(i) => ("CTX", i),
        Role::Gen(i) => ("GEN", i),
        _ => ("SERVER", 0),
    };
    format!("{dir}/nsys_worker_proc_{kind}_{index}_{rank}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsys_wraps_the_whole_launch_as_upstream() {
        let argv = command_line(EngineKind::Trtllm, None, &params(4)).unwrap();
        let out = nsys_output("/runs/x/profiles", Role::Gen(1), 3);
        assert_eq!(out, "/runs/x/profiles/nsys_worker_proc_GEN_1_3");
        let (wrapped, env) = nsys_wrap(
            argv,
            Nsys {
                output: &out,
                range: "200-250",
            },
        );
        assert_eq!(
            wrapped.join(" "),
            "nsys profile -o /runs/x/profiles/nsys_worker_proc_GEN_1_3 -f true -t cuda,nvtx,python-gil \
             -c cudaProfilerApi --cuda-graph-trace node --capture-range-end=stop \
             --gpu-metrics-devices=none trtllm-llmapi-launch trtllm-serve /models/ds r1 --backend \
             pytorch --config /runs/x/engines/CTX_0.yaml --host node1 --port 8336"
        );
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            [
                "TLLM_PROFILE_RECORD_GC=1",
                "TLLM_NVTX_DEBUG=1",
                "NSYS_MPI_STORE_TEAMS_PER_RANK=1",
                "TLLM_PROFILE_START_STOP=200-250"
            ]
        );
        assert_eq!(
            nsys_output("/p", Role::Ctx(0), 0),
            "/p/nsys_worker_proc_CTX_0_0"
        );
    }

    fn params(gpus: u32) -> EngineParams<'static> {
        EngineParams {
            role: Role::Ctx(0),
            model: "/models/ds r1",
            host: "node1",
            port: 8336,
            options_file: "/runs/x/engines/CTX_0.yaml",
            report_addr: None,
            tp: 4,
            pp: 1,
            gpus,
            run_dir: "/runs/x",
            served_name: "ds-r1",
            option_flags: &[],
            extra_args: &[],
            vllm_program: "vllm",
            aggregated: false,
            kv_port: Some(8998),
            transfer_backend: "nixl",
            multi_node: None,
        }
    }

    #[test]
    fn trtllm_runs_under_the_mpi_launcher_only_with_several_ranks() {
        let one = command_line(EngineKind::Trtllm, None, &params(1)).unwrap();
        assert_eq!(
            one.join(" "),
            "trtllm-serve /models/ds r1 --backend pytorch --config /runs/x/engines/CTX_0.yaml --host node1 --port 8336"
        );
        let four = command_line(EngineKind::Trtllm, None, &params(4)).unwrap();
        assert_eq!(four[0], "trtllm-llmapi-launch");
        let mut reported = params(1);
        reported.port = 0;
        reported.report_addr = Some("/runs/x/engines/CTX_0.addr");
        let line = command_line(EngineKind::Trtllm, None, &reported)
            .unwrap()
            .join(" ");
        assert!(
            line.ends_with("--port 0 --report_addr /runs/x/engines/CTX_0.addr"),
            "{line}"
        );
        let mut extra = params(1);
        let args = ["--dtype".to_string(), "float32".to_string()];
        extra.extra_args = &args;
        let vllm = command_line(EngineKind::Vllm, None, &extra)
            .unwrap()
            .join(" ");
        assert!(vllm.contains("--served-model-name ds-r1"), "{vllm}");
        assert!(vllm.contains(r#""kv_role":"kv_producer""#), "{vllm}");
        assert!(vllm.ends_with("--dtype float32"), "{vllm}");
        let mut whole = params(1);
        whole.aggregated = true;
        let agg = command_line(EngineKind::Vllm, None, &whole)
            .unwrap()
            .join(" ");
        assert!(!agg.contains("--kv-transfer-config"), "{agg}");
        let sg = command_line(EngineKind::Sglang, None, &params(4))
            .unwrap()
            .join(" ");
        assert!(
            sg.contains("--disaggregation-mode prefill --disaggregation-transfer-backend nixl --disaggregation-bootstrap-port 8998"),
            "{sg}"
        );
    }

    #[test]
    fn templates_quote_every_value_and_reject_unknown_names() {
        let mut p = params(1);
        p.model = "m'; rm -rf / #";
        let line = render_template("serve {model} --port {port} --tp {tp} {{x}}", &p).unwrap();
        assert_eq!(line, r"serve 'm'\''; rm -rf / #' --port 8336 --tp 4 {x}");
        let err = render_template("serve {modle}", &p).unwrap_err();
        assert!(
            err.contains("`{modle}`") && err.contains("{model}"),
            "{err}"
        );
        assert!(render_template("serve {model", &p).is_err());
        assert!(render_template("serve }", &p).is_err());
    }

    #[test]
    fn multi_node_servers_run_one_process_per_node() {
        let mut p = params(16);
        p.multi_node = Some(MultiNode {
            nodes: 2,
            rank: 1,
            head: "node7",
            port: 5601,
        });
        let vllm = command_line(EngineKind::Vllm, None, &p).unwrap().join(" ");
        assert!(
            vllm.contains("--distributed-executor-backend mp --nnodes 2 --node-rank 1 --master-addr node7 --master-port 5601 --headless"),
            "{vllm}"
        );
        p.multi_node = p.multi_node.map(|m| MultiNode { rank: 0, ..m });
        let head = command_line(EngineKind::Vllm, None, &p).unwrap().join(" ");
        assert!(!head.contains("--headless"), "rank 0 serves HTTP: {head}");
        let sg = command_line(EngineKind::Sglang, None, &p)
            .unwrap()
            .join(" ");
        assert!(
            sg.contains("--nnodes 2 --node-rank 0 --dist-init-addr node7:5601"),
            "{sg}"
        );
        let mut decode = params(1);
        decode.role = Role::Gen(0);
        let sg = command_line(EngineKind::Sglang, None, &decode)
            .unwrap()
            .join(" ");
        assert!(
            sg.contains("--disaggregation-mode decode") && !sg.contains("bootstrap-port"),
            "{sg}"
        );
    }

    fn worker(yaml: &str) -> disagg_config::WorkerOptions {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-vllm.yaml"
        ))
        .unwrap();
        let (head, rest) = text.split_once("  ctx:\n").unwrap();
        let (_, tail) = rest.split_once("  gen:\n").unwrap();
        let text = format!("{head}  ctx:\n    tensor_parallel_size: 1\n{yaml}  gen:\n{tail}");
        let config =
            disagg_config::TestConfig::parse(std::path::Path::new("t.yaml"), &text).unwrap();
        config.ctx().clone()
    }

    #[test]
    fn worker_options_map_to_each_engines_flags_and_the_rest_is_named() {
        let w = worker(
            "    max_batch_size: 8\n    max_num_tokens: 512\n    enable_chunked_prefill: false\n    cuda_graph_config: null\n    print_iter_log: true\n    kv_cache_config:\n      free_gpu_memory_fraction: 0.5\n      dtype: fp8\n      tokens_per_block: 32\n      enable_block_reuse: false\n      event_buffer_max_size: 1024\n",
        );
        let v = map_options(EngineKind::Vllm, &w);
        let line = v.flags.join(" ");
        for f in [
            "--max-num-seqs 8",
            "--max-num-batched-tokens 512",
            "--no-enable-chunked-prefill",
            "--enforce-eager",
            "--gpu-memory-utilization 0.5",
            "--kv-cache-dtype fp8",
            "--block-size 32",
            "--no-enable-prefix-caching",
        ] {
            assert!(line.contains(f), "{f} missing from {line}");
        }
        assert_eq!(
            v.unmapped,
            ["print_iter_log", "kv_cache_config.event_buffer_max_size"]
        );
        let s = map_options(EngineKind::Sglang, &w).flags.join(" ");
        for f in [
            "--max-running-requests 8",
            "--max-prefill-tokens 512",
            "--chunked-prefill-size -1",
            "--disable-cuda-graph",
            "--mem-fraction-static 0.5",
            "--kv-cache-dtype fp8_e4m3",
            "--page-size 32",
            "--disable-radix-cache",
        ] {
            assert!(s.contains(f), "{f} missing from {s}");
        }
    }
}
