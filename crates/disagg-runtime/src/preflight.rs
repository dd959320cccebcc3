//! The programs a run needs besides the engines, found before anything starts: `nsys` when the
//! config profiles its workers, `lm_eval` when it runs the accuracy step. A local run checks them
//! all before it creates the run directory; on Slurm (where the tools live on the nodes, often in
//! a container) every role checks what it runs itself before it starts anything.

use std::path::{Path, PathBuf};

use disagg_config::{EngineKind, TestConfig};

use crate::error::InvalidInput;

/// A program a run may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Nsight Systems, for `profiling.nsys_on`.
    Nsys,
    /// lm-evaluation-harness, for `accuracy.enable_accuracy_test`.
    LmEval,
}

impl Tool {
    /// The program looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Nsys => "nsys",
            Tool::LmEval => "lm_eval",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Tool::Nsys => "profiling.nsys_on is true: every worker runs under `nsys profile`",
            Tool::LmEval => {
                "accuracy.enable_accuracy_test is true: the benchmark runs lm_eval against the \
                 router afterwards"
            }
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Tool::Nsys => {
                "install Nsight Systems (its `nsys` on PATH), or set profiling.nsys_on: false"
            }
            Tool::LmEval => {
                "install it (`pip install \"lm_eval[api]\"`, as upstream's accuracy_eval.sh does) \
                 so that `lm_eval` is on PATH, or set accuracy.enable_accuracy_test: false"
            }
        }
    }
}

/// Whether profiling applies to `engine`: the TensorRT-LLM engine (whose executor answers
/// `TLLM_PROFILE_START_STOP`) and command templates. The simulator has no GPU work; vLLM and
/// SGLang never call `cudaProfilerStart` at those iterations, so the capture would stay empty.
pub fn profiles(engine: EngineKind) -> bool {
    matches!(engine, EngineKind::Trtllm | EngineKind::Command)
}

/// The tools `config` needs with `engine`, for the worker roles (`workers`) and the benchmark.
pub fn needed(
    config: &TestConfig,
    engine: EngineKind,
    workers: bool,
    benchmark: bool,
) -> Vec<Tool> {
    let mut tools = Vec::new();
    if workers && config.profiling().nsys_on && profiles(engine) {
        tools.push(Tool::Nsys);
    }
    if benchmark && config.accuracy().is_some() {
        tools.push(Tool::LmEval);
    }
    tools
}

/// `program` on the search path `path` (`$PATH`'s value): the first executable file.
pub fn find_on(program: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// An error naming every tool of `tools` that `find` does not find, why it is needed and how to
/// get it.
pub fn check(
    config: &Path,
    tools: &[Tool],
    find: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(), InvalidInput> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| find(t.program()).is_none())
        .map(|t| {
            format!(
                "`{}` is not on PATH; {}; {}",
                t.program(),
                t.why(),
                t.hint()
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(InvalidInput(format!(
        "{}: {}",
        config.display(),
        missing.join("\n  ")
    )))
}

/// [`check`] against this process's `PATH`.
pub fn check_here(config: &TestConfig, tools: &[Tool]) -> Result<(), InvalidInput> {
    let path = std::env::var("PATH").ok();
    check(config.path(), tools, &|p| find_on(p, path.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> TestConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap()
            + extra;
        TestConfig::parse(Path::new("x.yaml"), &text).unwrap()
    }

    const BOTH: &str = "profiling: {nsys_on: true}\naccuracy:\n  enable_accuracy_test: true\n  tasks: {gsm8k: {model_args_extra: num_concurrent=8}}\n";

    #[test]
    fn the_tools_follow_the_config_the_engine_and_the_role() {
        let c = config(BOTH);
        assert_eq!(
            needed(&c, EngineKind::Trtllm, true, true),
            [Tool::Nsys, Tool::LmEval]
        );
        assert_eq!(needed(&c, EngineKind::Sim, true, true), [Tool::LmEval]);
        assert_eq!(needed(&c, EngineKind::Vllm, true, false), []);
        assert_eq!(needed(&c, EngineKind::Trtllm, false, true), [Tool::LmEval]);
        assert_eq!(needed(&config(""), EngineKind::Trtllm, true, true), []);
    }

    #[test]
    fn a_missing_tool_is_named_with_why_and_how() {
        let c = config(BOTH);
        let tools = needed(&c, EngineKind::Trtllm, true, true);
        let none = |_: &str| None;
        let e = check(c.path(), &tools, &none).unwrap_err().to_string();
        assert!(
            e.starts_with("x.yaml: `nsys` is not on PATH; profiling.nsys_on is true"),
            "{e}"
        );
        assert!(
            e.contains("\n  `lm_eval` is not on PATH; accuracy.enable_accuracy_test is true"),
            "{e}"
        );
        assert!(e.contains("pip install \"lm_eval[api]\""), "{e}");
        let all = |p: &str| Some(PathBuf::from(format!("/bin/{p}")));
        assert!(check(c.path(), &tools, &all).is_ok());
    }

    #[test]
    fn only_executable_files_on_the_path_count() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("lm_eval");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_on("lm_eval", Some(&path)), None, "not executable");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on("lm_eval", Some(&path)), Some(tool));
        assert_eq!(find_on("lm_eval", None), None);
        std::fs::create_dir(dir.path().join("nsys")).unwrap();
        assert_eq!(find_on("nsys", Some(&path)), None, "a directory");
    }
}
