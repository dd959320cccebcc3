//! Problems found in a config file, each with the file, position, YAML path, value and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::yaml::Pos;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The config is still usable; something deserves a look.
    Warning,
    /// The config cannot be used.
    Error,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file (absent when the key is missing altogether and its parent has no position).
    pub pos: Option<Pos>,
    /// The YAML path (`worker_config.gen.tensor_parallel_size`).
    pub path: String,
    /// The offending value as written, if there is one.
    pub value: Option<String>,
    /// What is wrong (the rule that was broken).
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            writeln!(f, "{label}: {}", self.message)?;
        } else {
            writeln!(f, "{label}: {}: {}", self.path, self.message)?;
        }
        match self.pos {
            Some(pos) => writeln!(f, "  --> {}:{pos}", self.file.display())?,
            None => writeln!(f, "  --> {}", self.file.display())?,
        }
        if let Some(value) = &self.value {
            writeln!(f, "  value: {value}")?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one or more files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// Only the warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.errors().count()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Sink {
    /// A sink for `file`.
    pub fn new(file: &Path) -> Self {
        Sink {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    /// Record a problem.
    pub fn push(
        &mut self,
        severity: Severity,
        pos: Option<Pos>,
        path: &str,
        value: Option<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            pos,
            path: path.to_string(),
            value,
            message: message.into(),
            hint,
        });
    }

    /// Record an error.
    pub fn error(
        &mut self,
        pos: Option<Pos>,
        path: &str,
        value: Option<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            pos,
            path,
            value,
            message,
            Some(hint.into()),
        );
    }

    /// Record a warning.
    pub fn warning(
        &mut self,
        pos: Option<Pos>,
        path: &str,
        value: Option<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            pos,
            path,
            value,
            message,
            Some(hint.into()),
        );
    }

    /// Everything recorded.
    pub fn finish(mut self) -> Diagnostics {
        // Reading order: problems without a position first, then by line and column.
        self.items
            .sort_by_key(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or_default());
        Diagnostics(self.items)
    }
}
