//! What the CLI tests share: `disagg` child processes that never outlive a test.

#![expect(
    clippy::expect_used,
    reason = "a test harness that cannot start must fail the test loudly"
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed and reaped when dropped, even when the test panics.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `disagg ARGS...` and return it with its first stdout line and the `http://host:port`
/// that line names.
pub fn spawn_disagg(args: &[&str]) -> (Proc, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("disagg starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc_ = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (proc_, line, url)
}
