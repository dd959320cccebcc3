//! The exit status of every `disagg` command, in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command failed: the test failed or regressed, a run or an I/O step went wrong |
//! | 2 | invalid input: a config, a cluster profile, a test id, a flag |
//! | 3 | `disagg role` only: this role ended because another role failed |
//! | 130 | interrupted (SIGINT/SIGTERM); what finished is kept |

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0.
    Success,
    /// 1.
    Failure,
    /// 2.
    InvalidInput,
    /// 3.
    PeerFailed,
    /// 130.
    Interrupted,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::InvalidInput => 2,
            ExitStatus::PeerFailed => 3,
            ExitStatus::Interrupted => 130,
        }
    }

    /// The status of an exit code; codes we never use count as a failure.
    pub fn from_code(code: i32) -> ExitStatus {
        match code {
            0 => ExitStatus::Success,
            2 => ExitStatus::InvalidInput,
            3 => ExitStatus::PeerFailed,
            130 => ExitStatus::Interrupted,
            _ => ExitStatus::Failure,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> std::process::ExitCode {
        std::process::ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in [
            ExitStatus::Success,
            ExitStatus::Failure,
            ExitStatus::InvalidInput,
            ExitStatus::PeerFailed,
            ExitStatus::Interrupted,
        ] {
            assert_eq!(ExitStatus::from_code(i32::from(s.code())), s);
        }
        assert_eq!(ExitStatus::from_code(137), ExitStatus::Failure);
    }
}
