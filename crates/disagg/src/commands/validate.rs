//! `disagg validate`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use disagg_config::TestConfig;
use disagg_runtime::ExitStatus;

use crate::cli::ValidateArgs;

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitStatus> {
    let mut files = Vec::new();
    for f in &args.files {
        collect(f, &mut files);
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let (mut invalid, mut warned) = (0usize, 0usize);
    for file in &files {
        match TestConfig::load(file) {
            Ok(config) => {
                let warnings = config.warnings().0.len();
                if warnings > 0 {
                    warned += 1;
                    write!(stderr, "{}", config.warnings())?;
                    writeln!(stderr)?;
                }
                let bad = args.deny_warnings && warnings > 0;
                invalid += usize::from(bad);
                let verdict = if bad { "invalid" } else { "valid" };
                let note = match warnings {
                    0 => String::new(),
                    1 => " (1 warning)".to_string(),
                    n => format!(" ({n} warnings)"),
                };
                writeln!(stdout, "{verdict}  {}{note}", file.display())?;
            }
            Err(err) => {
                invalid += 1;
                match err.diagnostics() {
                    Some(d) => {
                        write!(stderr, "{d}")?;
                        writeln!(stderr)?;
                        let n = d.error_count();
                        let noun = if n == 1 { "error" } else { "errors" };
                        writeln!(stdout, "invalid  {} ({n} {noun})", file.display())?;
                    }
                    None => {
                        let cause = std::error::Error::source(&err)
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default();
                        writeln!(stderr, "error: {err}{cause}")?;
                        writeln!(stdout, "invalid  {} (cannot read it)", file.display())?;
                    }
                }
            }
        }
    }
    writeln!(
        stdout,
        "{} file(s): {} valid, {} invalid, {} with warnings",
        files.len(),
        files.len() - invalid,
        invalid,
        warned
    )?;
    Ok(if invalid > 0 {
        ExitStatus::InvalidInput
    } else {
        ExitStatus::Success
    })
}
