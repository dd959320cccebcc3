//! Child processes that never outlive a test: killed and reaped when their guard drops, also
//! when the test panics half-way.

use std::io::{BufRead as _, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, Stdio};

/// A child process killed (SIGKILL) and reaped when dropped.
///
/// It derefs to the [`Child`], so a test can still signal it, wait for it or take its pipes.
#[derive(Debug)]
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Guard a started child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGKILL, not SIGTERM and a deadline: the test is over, and a child that ignores
        // SIGTERM must not hang the test run. Waiting reaps it, so no zombie is left either.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a service whose first stdout line names its address (`... listening on
/// http://127.0.0.1:PORT ...`, as `disagg sim` and `disagg router` print once they serve).
///
/// Returns the guarded child, that line, and the `http://host:port` it names. The child's
/// stderr is discarded.
pub fn spawn_listening(cmd: &mut Command) -> (ChildGuard, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the service starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (guard, line, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_kills_and_reaps_the_child() {
        let (guard, line, url) = spawn_listening(Command::new("sh").args([
            "-c",
            "echo 'fake: listening on http://127.0.0.1:9 (pid '$$')'; exec sleep 30",
        ]));
        assert_eq!(url, "http://127.0.0.1:9");
        assert!(line.starts_with("fake: listening on "), "{line}");
        let proc_dir = format!("/proc/{}", guard.id());
        assert!(std::path::Path::new(&proc_dir).exists());
        drop(guard);
        // Reaped, not merely killed: a zombie would still have its /proc entry.
        assert!(!std::path::Path::new(&proc_dir).exists());
    }
}
