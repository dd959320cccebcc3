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
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if disagg_config::is_sweep_spec(&text) {
            let ok = validate_spec(file, args.deny_warnings, &mut stdout, &mut stderr)?;
            invalid += usize::from(!ok.0);
            warned += usize::from(ok.1);
            continue;
        }
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

/// Validate a sweep spec and its points; `(valid, warned)`.
fn validate_spec(
    file: &Path,
    deny_warnings: bool,
    stdout: &mut impl std::io::Write,
    stderr: &mut impl std::io::Write,
) -> anyhow::Result<(bool, bool)> {
    match disagg_runtime::sweep::check_spec(file, None) {
        Ok(check) => {
            let warned = !check.warnings.0.is_empty();
            if warned {
                write!(stderr, "{}", check.warnings)?;
                writeln!(stderr)?;
            }
            for (name, d) in &check.invalid {
                writeln!(stderr, "point {name}:")?;
                write!(stderr, "{d}")?;
                writeln!(stderr)?;
            }
            let ok = check.invalid.is_empty() && !(deny_warnings && warned);
            let verdict = if ok { "valid" } else { "invalid" };
            let bad = match check.invalid.len() {
                0 => "all valid".to_string(),
                n => format!("{n} invalid"),
            };
            writeln!(
                stdout,
                "{verdict}  {} (sweep spec: {} points, {bad})",
                file.display(),
                check.points
            )?;
            Ok((ok, warned))
        }
        Err(err) => {
            match err
                .downcast_ref::<disagg_config::ConfigError>()
                .and_then(|e| e.diagnostics())
            {
                Some(d) => write!(stderr, "{d}")?,
                None => write!(stderr, "error: {err:#}")?,
            }
            writeln!(stderr)?;
            writeln!(stdout, "invalid  {} (sweep spec)", file.display())?;
            Ok((false, false))
        }
    }
}
