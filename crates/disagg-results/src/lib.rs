//! Result records of a run and what is made of them.
//!
//! - [`record`]: the versioned JSON record `disagg bench` writes per concurrency (`con8.json`),
//!   read back here by everything downstream. It is defined next to what writes it, in
//!   [`disagg_bench::record`], and re-exported here under its old path.
//! - [`summary`]: the run's `summary.json` and the table printed at the end of `disagg run`.
//! - [`junit`]: `results.xml`, one test case per concurrency, for Jenkins' JUnit plugin.
//! - [`identity`]: a record's upstream identity (every config and workload field, the match
//!   keys) and job fields; [`store`]: the SQLite history; [`baseline`] and [`check`]: the
//!   upstream baseline rule, the regression gate and a record's verdict; [`opensearch`] and
//!   [`doc_id`]: the upstream document format, its `_id`, and the client; [`listing`]: stored
//!   runs as a table or CSV; [`svg`] and [`report`]: charts and the HTML report (also a sweep's
//!   page); [`sweep`]: a sweep's measurements, its Pareto frontier, its SLA answer and SLA search.

pub mod baseline;
pub mod check;
pub mod diagnosis;
pub mod doc_id;
pub mod identity;
pub mod junit;
pub mod listing;
pub mod opensearch;
pub mod report;
pub mod store;
pub mod summary;
pub mod svg;
pub mod sweep;

pub use disagg_bench::record;
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
    /// A value given by the user (a flag, a baseline file) that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The benchmark's records could not be read.
    #[error(transparent)]
    Records(#[from] disagg_bench::BenchError),
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
