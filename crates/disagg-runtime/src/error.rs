//! The two error types the orchestration adds to the library crates' own: input the user must
//! change ([`InvalidInput`], exit status 2) and advice printed after the error chain ([`Hint`]).

/// An error caused by what the user gave us (a flag, a file, a run directory); exit status 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// What to do about an error, printed after its chain as `hint: ...`.
#[derive(Debug)]
pub struct Hint(pub String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}
