//! A run of a test, from a laid-out run directory to its verdict — the library behind `disagg
//! run`, `role`, `submit`, `status`, `cancel` and `ci`.
//!
//! - [`rundir`], [`spec`]: the run directory, the one place the roles of a run meet (rendezvous
//!   files, `run.json`), the contract every `disagg role` process reads and writes.
//! - [`lifecycle`]: one role's life (publish, heartbeat, watch the others, wait, finish) and
//!   [`roles`]: the bodies of the workers, the coordinator and the benchmark; [`Role`] names
//!   them all; [`engine`]: the command lines of external engines; [`options`]: the options file
//!   an engine reads; [`preflight`]: the other programs a run needs, found before it starts;
//!   [`accuracy`]: the lm_eval step after the benchmark.
//! - [`prepare`]: config + options → a run directory and its plan; [`local`]: every role as a
//!   supervised child of this machine ([`supervise`]); [`job`]: the same run as a Slurm job.
//! - [`queue`]: many runs as child processes, at most N at once — what [`sweep`] (a search over
//!   derived configs with a Pareto frontier and an SLA answer) and [`ci`] (a test list, in
//!   parallel) are made of.
//! - [`conclude`], [`store`]: the ending of every run — summary, JUnit, store, check.
//! - [`exit`]: the [`ExitStatus`] of every command; [`error`]: input the user must change.
//!
//! ```
//! use disagg_runtime::Role;
//! use disagg_runtime::rundir::{RoleState, RunDir, State};
//! let dir = tempfile::tempdir().unwrap();
//! let run = RunDir::create(dir.path()).unwrap();
//! run.publish(&RoleState::new(Role::Gen(0), 4242, 1_000).ready("127.0.0.1", 8001, 1_000)).unwrap();
//! assert_eq!(run.roles().unwrap()[0].state, State::Ready);
//! assert_eq!(std::fs::read_to_string(run.hostname_file(Role::Gen(0))).unwrap(), "127.0.0.1:8001");
//! ```

pub mod accuracy;
pub mod ci;
pub mod conclude;
pub mod engine;
pub mod environment;
pub mod error;
pub mod events;
pub mod exit;
pub mod job;
pub mod lifecycle;
pub mod local;
pub mod options;
pub mod preflight;
pub mod prepare;
pub mod probe;
pub mod queue;
pub mod report;
pub mod roles;
pub mod rundir;
pub mod serving;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod sweep;

pub use disagg_plan::Role;
pub use error::{Hint, InvalidInput};
pub use exit::ExitStatus;

/// Milliseconds since the Unix epoch, the clock of every rendezvous file.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
