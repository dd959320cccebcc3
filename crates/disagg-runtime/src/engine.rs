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
    /// Flags mapped from the worker options ([`vllm_flags`]).
    pub option_flags: &'a [String],
    /// `engine.args`, appended as they are.
    pub extra_args: &'a [String],
    /// The `vllm` program (`$DISAGG_VLLM_BIN`, else `vllm` on `PATH`).
    pub vllm_program: &'a str,
}

/// vLLM flags for the upstream worker options that have an equivalent, and the keys that have
/// none (to be named in a warning, never silently dropped). Parallelism is passed apart.
pub fn vllm_flags(w: &disagg_config::WorkerOptions) -> (Vec<String>, Vec<String>) {
    let mut flags = vec![
        "--max-num-seqs".to_string(),
        w.max_batch_size().to_string(),
        "--max-num-batched-tokens".to_string(),
        w.max_num_tokens().to_string(),
    ];
    if let Some(l) = w.max_seq_len() {
        flags.extend(["--max-model-len".to_string(), l.to_string()]);
    }
    let mapped = [
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "max_batch_size",
        "max_num_tokens",
        "max_seq_len",
        // The KV transfer is configured from the role (NIXL producer/consumer).
        "cache_transceiver_config",
    ];
    let unmapped = w
        .engine_options()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !mapped.contains(k))
        .map(str::to_string)
        .collect();
    (flags, unmapped)
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
                s("--kv-transfer-config"),
                format!(r#"{{"kv_connector":"NixlConnector","kv_role":"{role}"}}"#),
            ];
            argv.extend(p.option_flags.iter().cloned());
            argv
        }
        EngineKind::Sglang => vec![
            s("python3"),
            s("-m"),
            s("sglang.launch_server"),
            s("--model-path"),
            s(p.model),
            s("--host"),
            s(p.host),
            s("--port"),
            p.port.to_string(),
            s("--tp-size"),
            p.tp.to_string(),
            s("--disaggregation-mode"),
            s(if p.is_context() { "prefill" } else { "decode" }),
        ],
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let sg = command_line(EngineKind::Sglang, None, &params(4)).unwrap();
        assert_eq!(sg.last().map(String::as_str), Some("prefill"));
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
}
