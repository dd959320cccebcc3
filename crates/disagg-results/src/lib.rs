//! Result records of a run and what is made of them.
//!
//! - [`record`]: the versioned JSON record `disagg bench` writes per concurrency (`con8.json`),
//!   read back here by everything downstream.
//! - [`summary`]: the run's `summary.json` and the table printed at the end of `disagg run`.
//! - [`junit`]: `results.xml`, one test case per concurrency, for Jenkins' JUnit plugin.

pub mod baseline;
pub mod check;
pub mod junit;
pub mod opensearch;
pub mod record;
pub mod report;
pub mod store;
pub mod summary;
pub mod svg;

pub use record::{RECORD_VERSION, RunRecord, load_records};
pub use summary::{Outcome, RunSummary, Summary};

/// Why results could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record is not what `disagg bench` writes.
    #[error(
        "{path}: not a disagg result record ({why}); it was written by another tool or version, or truncated"
    )]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error.
        why: String,
    },
}
