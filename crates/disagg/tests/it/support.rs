//! What the CLI tests share: the repository root, and `disagg` started as a service that never
//! outlives its test.

use std::path::{Path, PathBuf};
use std::process::Command;

use disagg_test_support::{ChildGuard, spawn_listening};

/// Start `disagg ARGS...` and return it with its first stdout line and the `http://host:port`
/// that line names.
pub fn spawn_disagg(args: &[&str]) -> (ChildGuard, String, String) {
    spawn_listening(Command::new(env!("CARGO_BIN_EXE_disagg")).args(args))
}

/// The repository root: where the examples, fixtures and scripts are, and the working directory of
/// the tests that name them by relative path.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
