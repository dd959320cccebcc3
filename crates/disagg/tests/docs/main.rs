//! The documentation's tests: the CLI reference in `docs/cli/` is exactly what `--help` prints
//! (`reference`), and the shell snippets of `README.md` and `docs/**/*.md` name commands and
//! flags that exist and, where marked runnable, succeed (`snippets`).
//!
//! Both read the clap definitions themselves: `src/cli.rs` is compiled into this test as
//! well (the binary crate has no library to import it from), so the command tree the tests walk
//! is the one the binary parses with. The help text on the pages comes from the built binary
//! (`CARGO_BIN_EXE_disagg`), so a page is what a user's `--help` prints, byte for byte.
//!
//! Regenerate the reference: `DISAGG_UPDATE_CLI_DOCS=1 cargo test -p disagg --test docs`.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

#[expect(
    dead_code,
    reason = "only the command tree is used here; the binary uses the rest"
)]
#[path = "../../src/cli.rs"]
mod cli;

mod reference;
mod shell;
mod snippets;

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("the repository root: {e}"))
}

/// The whole command tree, built: global flags propagated to every subcommand, `--help`,
/// `--version` and the `help` subcommand added, bin names set.
fn command() -> clap::Command {
    let mut cmd = cli::Cli::command();
    cmd.build();
    cmd
}
