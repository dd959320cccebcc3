//! The `disagg` binary's integration tests, run against the built binary
//! (`CARGO_BIN_EXE_disagg`), one module per area of the CLI.
//!
//! One test binary rather than one per file: each binary links the whole dependency tree again,
//! which dominated the build of these tests (uv's `crates/uv/tests/it/` does the same). Test
//! data is in `../data/`; snapshots are in `snapshots/`, named `it__MODULE__NAME.snap`.

mod support;

mod bench_cli;
mod churn;
mod cli;
mod config_reference;
mod plan_fixtures;
mod results_cli;
mod results_server_faults;
mod router_cli;
mod run_cli;
mod secrets;
mod sim_cli;
mod slurm_cli;
mod slurm_faults;
mod storage_faults;
mod sweep_cli;
mod workload_cli;
