//! Result records of a run and what is made of them.
//!
//! - [`record`]: the versioned JSON record `disagg bench` writes per concurrency (`con8.json`),
//!   read back here by everything downstream. It is defined next to what writes it, in
//!   [`disagg_bench::record`], and re-exported here under its old path.
//! - [`summary`]: the run's `summary.json` and the table printed at the end of `disagg run`.
//! - [`junit`]: `results.xml`, one test case per concurrency, for Jenkins' JUnit plugin.

pub mod baseline;
pub mod check;
pub mod junit;
pub mod opensearch;
pub mod report;
pub mod store;
pub mod summary;
pub mod svg;

pub use disagg_bench::record;
pub use record::{RECORD_VERSION, RunRecord, load_records};
pub use summary::{Outcome, RunSummary, Summary};

/// What [`load_records`] fails with (`Io`, `Corrupt`): the record moved to
/// [`disagg_bench::record`] and its errors with it.
pub use disagg_bench::BenchError as ResultsError;
