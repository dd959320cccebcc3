//! What the CLI tests share: `disagg` started as a service that never outlives its test.

use std::process::Command;

use disagg_test_support::{ChildGuard, spawn_listening};

/// Start `disagg ARGS...` and return it with its first stdout line and the `http://host:port`
/// that line names.
pub fn spawn_disagg(args: &[&str]) -> (ChildGuard, String, String) {
    spawn_listening(Command::new(env!("CARGO_BIN_EXE_disagg")).args(args))
}
