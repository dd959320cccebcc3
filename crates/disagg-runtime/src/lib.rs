//! What the roles of a run share: the run directory and its rendezvous files ([`rundir`]), the
//! contract every `disagg role` process (local child or Slurm step) reads and writes; the run's
//! settings ([`spec`]); and child processes that can always be ended ([`supervise`]).
//!
//! ```
//! use disagg_runtime::rundir::{RoleState, RunDir, State};
//! let dir = tempfile::tempdir().unwrap();
//! let run = RunDir::create(dir.path()).unwrap();
//! run.publish(&RoleState::new("GEN_0", 4242, 1_000).ready("127.0.0.1", 8001, 1_000)).unwrap();
//! assert_eq!(run.roles().unwrap()[0].state, State::Ready);
//! assert_eq!(std::fs::read_to_string(run.hostname_file("GEN_0")).unwrap(), "127.0.0.1:8001");
//! ```

pub mod rundir;
pub mod spec;
pub mod supervise;

/// Milliseconds since the Unix epoch, the clock of every rendezvous file.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
