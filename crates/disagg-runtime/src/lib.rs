//! What the roles of a run share. Today: the run directory and its rendezvous files
//! ([`rundir`]), the contract every `disagg role` process (local child or Slurm step) reads and
//! writes; the roles themselves come with the local-run issue.
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
