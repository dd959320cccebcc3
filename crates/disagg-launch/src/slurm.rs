//! The Slurm client: submit a batch script, follow a job's state, cancel it.
//!
//! Two halves, so the part that can be wrong about Slurm is tested without one:
//! - **Commands** ([`Slurm`]): which program runs with which arguments, `SLURM_CONF` set on every
//!   one when the cluster profile names a `slurm.conf`. Nothing here reads Slurm's output.
//! - **Parsers** ([`parse_sbatch_parsable`], [`parse_scontrol_job`], [`parse_scontrol_job_name`],
//!   [`parse_sacct`], [`parse_squeue`], [`parse_scontrol_completing`],
//!   [`parse_sinfo_not_responding`]): plain functions from the text Slurm printed to a value.
//!   They are tested on outputs captured from a real Slurm (`src/slurm/testdata/`, one file per
//!   case, written by `src/slurm/testdata/capture.sh`) and on malformed text; they never panic.
//!
//! Where a job's state comes from ([`Slurm::state`]): `scontrol show job ID -o`, which knows the
//! job from submission until `MinJobAge` after its end; once slurmctld has purged it,
//! `sacct -n -X -P -o State,ExitCode -j ID`, which needs accounting (slurmdbd). Without either the
//! state is [`JobState::Unknown`].
//!
//! `tests/live_slurm.rs` runs the commands against a real Slurm (ignored by default; see there).
//!
//! Following a job:
//! ```no_run
//! use std::path::Path;
//! use disagg_launch::slurm::{JobState, Slurm};
//! let slurm = Slurm::new(Some("/tmp/disagg-local-slurm/etc/slurm.conf".into()));
//! let id = slurm.sbatch(Path::new("job.sbatch"), Path::new("/shared/runs/1"))?;
//! loop {
//!     match slurm.state(id) {
//!         s if s.never_starts() => break slurm.cancel(id)?,
//!         JobState::Pending(_) | JobState::Running => {}
//!         JobState::Ended { .. } | JobState::Unknown => break,
//!     }
//!     std::thread::sleep(std::time::Duration::from_millis(200));
//! }
//! # Ok::<(), disagg_launch::slurm::SlurmError>(())
//! ```
//!
//! Reading Slurm's output:
//! ```
//! use disagg_launch::slurm::{JobState, parse_sacct, parse_sbatch_parsable, parse_scontrol_job};
//! assert_eq!(parse_sbatch_parsable("42;cluster\n").unwrap(), 42);
//! let s = parse_scontrol_job("JobId=42 JobName=t JobState=PENDING Reason=PartitionNodeLimit");
//! assert_eq!(s.to_string(), "pending (PartitionNodeLimit)");
//! assert!(s.never_starts());
//! assert_eq!(
//!     parse_sacct("CANCELLED by 0|0:15\n"),
//!     JobState::Ended { state: "CANCELLED".into(), exit_code: 0 }
//! );
//! ```

use std::num::ParseIntError;
use std::path::Path;
use std::process::{Command, Output};

/// Why a Slurm command failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// `sbatch` could not be started at all.
    #[error("cannot run sbatch (is Slurm installed and on PATH?)")]
    SbatchNotRun(#[source] std::io::Error),
    /// `sbatch` ran and refused the job (bad request, unknown partition, too many nodes...).
    #[error("sbatch rejected the job: {}", or_no_message(.stderr))]
    SbatchRejected {
        /// What sbatch wrote to stderr, trimmed (may be empty).
        stderr: String,
    },
    /// `sbatch --parsable` succeeded but its output is not `ID` or `ID;CLUSTER`.
    #[error("sbatch printed `{text}`, not a job id")]
    NotAJobId {
        /// Its stdout, trimmed.
        text: String,
        /// Why the id part is not a number.
        #[source]
        source: ParseIntError,
    },
    /// `scancel` could not be started at all.
    #[error("cannot run scancel")]
    ScancelNotRun(#[source] std::io::Error),
    /// `scancel` ran and failed.
    #[error("scancel {id}: {stderr}")]
    ScancelFailed {
        /// The job id.
        id: u64,
        /// What scancel wrote to stderr, trimmed.
        stderr: String,
    },
}

fn or_no_message(stderr: &str) -> &str {
    if stderr.is_empty() {
        "no message"
    } else {
        stderr
    }
}

/// A job's state as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting, and why (Slurm's `Reason=`, e.g. `Resources`, `Priority`, `Dependency`; `None`
    /// or empty when Slurm gives none).
    Pending(String),
    /// Running, or in a state that ends in running or ending (completing, configuring,
    /// suspended, requeued).
    Running,
    /// Ended: the Slurm state and the batch script's exit code.
    Ended {
        /// Slurm's state word, e.g. `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`.
        state: String,
        /// The exit code before the `:` of Slurm's `EXIT:SIGNAL`; -1 when Slurm gives none.
        exit_code: i32,
    },
    /// Slurm no longer knows the job (purged) and there is no accounting.
    Unknown,
}

/// Pending reasons that no amount of waiting fixes: the job asks for more than its partition,
/// account or QOS will ever give, or the partition does not take jobs.
const NEVER: &[&str] = &[
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "PartitionConfig",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "PartitionDown",
    "PartitionInactive",
];

impl JobState {
    /// Whether the job is pending for a reason that can never clear by itself (see the list
    /// in the source: partition, account and QOS limits, a partition that is down). Such a job
    /// should be cancelled instead of waited for.
    pub fn never_starts(&self) -> bool {
        match self {
            JobState::Pending(reason) => NEVER.contains(&reason.as_str()),
            _ => false,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobState::Pending(reason) if reason.is_empty() || reason == "None" => {
                f.write_str("pending")
            }
            JobState::Pending(reason) => write!(f, "pending ({reason})"),
            JobState::Running => f.write_str("running"),
            JobState::Ended { state, exit_code } => {
                write!(f, "ended {state}, exit code {exit_code}")
            }
            JobState::Unknown => f.write_str("unknown to Slurm (purged, no accounting)"),
        }
    }
}

/// The Slurm commands, pointed at the cluster's `slurm.conf` when the profile names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slurm {
    conf: Option<String>,
}

/// What a command did: whether it exited 0, and what it printed (lossily decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Slurm {
    /// A client for the cluster whose `slurm.conf` is `conf` (set as `SLURM_CONF` on every
    /// command), or for the one the environment points at when `None`.
    pub fn new(conf: Option<String>) -> Slurm {
        Slurm { conf }
    }

    /// The `slurm.conf` every command is pointed at, if any.
    pub fn conf(&self) -> Option<&str> {
        self.conf.as_deref()
    }

    /// Submit `script` with `sbatch --parsable`, from `cwd` (where Slurm resolves relative
    /// paths and, by default, writes the job's output). Returns the job id.
    pub fn sbatch(&self, script: &Path, cwd: &Path) -> Result<u64, SlurmError> {
        let ran = self
            .sbatch_cmd(script, cwd)
            .output()
            .map_err(SlurmError::SbatchNotRun)?;
        sbatch_outcome(&ran.into())
    }

    /// The job's state: from `scontrol`, or from `sacct` once slurmctld has forgotten the job;
    /// [`JobState::Unknown`] when neither knows it (or neither can be run).
    ///
    /// Any failure of `scontrol` counts as "forgotten", including an unreachable slurmctld
    /// (`Unable to contact slurm controller`): without accounting that is `Unknown` too.
    pub fn state(&self, id: u64) -> JobState {
        let scontrol = self.scontrol_job_cmd(id).output().ok().map(Ran::from);
        state_outcome(scontrol.as_ref(), || {
            self.sacct_cmd(id).output().ok().map(Ran::from)
        })
    }

    /// Cancel the job (`scancel ID`). Cancelling a job that has ended succeeds, and so does (on
    /// Slurm 22.05, silently) cancelling an id slurmctld does not know.
    pub fn cancel(&self, id: u64) -> Result<(), SlurmError> {
        let ran = self
            .scancel_cmd(id)
            .output()
            .map_err(SlurmError::ScancelNotRun)?;
        cancel_outcome(id, &ran.into())
    }

    /// The job's name (`JobName=` of `scontrol show job`); `None` when slurmctld does not know
    /// the job (any more) or `scontrol` cannot be run.
    pub fn job_name(&self, id: u64) -> Option<String> {
        let ran = Ran::from(self.scontrol_job_cmd(id).output().ok()?);
        parse_scontrol_job_name(&ran.stdout)
    }

    /// [`Stuck`] when job `id` is `COMPLETING` on nodes that do not respond (`scontrol show job
    /// ID -o`, then `sinfo -h -N -n NODES -o '%N %t'`); `None` otherwise, or when either command
    /// cannot be run.
    pub fn stuck(&self, id: u64) -> Option<Stuck> {
        let job = Ran::from(self.scontrol_job_cmd(id).output().ok()?);
        let (exit_code, nodes) = parse_scontrol_completing(&job.stdout)?;
        let mut sinfo = self.command("sinfo");
        sinfo.args(["-h", "-N", "-n", &nodes, "-o", "%N %t"]);
        let nodes = parse_sinfo_not_responding(&Ran::from(sinfo.output().ok()?).stdout);
        (!nodes.is_empty()).then_some(Stuck { exit_code, nodes })
    }

    /// Whether the job is still in the queue (pending, running, completing...), from
    /// `squeue -h -j ID -o %i`: `Some(false)` once it has ended or is unknown to slurmctld,
    /// `None` when `squeue` cannot be run or fails otherwise (slurmctld unreachable, an id past
    /// Slurm's maximum).
    pub fn is_queued(&self, id: u64) -> Option<bool> {
        let ran = Ran::from(self.squeue_cmd(id).output().ok()?);
        queued_outcome(id, &ran)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(conf) = &self.conf {
            c.env("SLURM_CONF", conf);
        }
        c
    }

    fn sbatch_cmd(&self, script: &Path, cwd: &Path) -> Command {
        let mut c = self.command("sbatch");
        c.arg("--parsable").arg(script).current_dir(cwd);
        c
    }

    fn scontrol_job_cmd(&self, id: u64) -> Command {
        let mut c = self.command("scontrol");
        c.args(["show", "job", &id.to_string(), "-o"]);
        c
    }

    fn sacct_cmd(&self, id: u64) -> Command {
        let mut c = self.command("sacct");
        let id = id.to_string();
        c.args(["-n", "-X", "-P", "-o", "State,ExitCode", "-j", &id]);
        c
    }

    fn scancel_cmd(&self, id: u64) -> Command {
        let mut c = self.command("scancel");
        c.arg(id.to_string());
        c
    }

    fn squeue_cmd(&self, id: u64) -> Command {
        let mut c = self.command("squeue");
        let id = id.to_string();
        c.args(["-h", "-j", &id, "-o", "%i"]);
        c
    }
}

/// `sbatch --parsable`'s result: its job id, or why there is none.
fn sbatch_outcome(ran: &Ran) -> Result<u64, SlurmError> {
    if !ran.success {
        return Err(SlurmError::SbatchRejected {
            stderr: ran.stderr.trim().to_string(),
        });
    }
    parse_sbatch_parsable(&ran.stdout)
}

/// The state from `scontrol`'s result when it succeeded, else from `sacct`'s (run only then).
fn state_outcome(scontrol: Option<&Ran>, sacct: impl FnOnce() -> Option<Ran>) -> JobState {
    if let Some(ran) = scontrol.filter(|r| r.success) {
        return parse_scontrol_job(&ran.stdout);
    }
    // Purged from slurmctld: accounting, when there is some.
    match sacct() {
        Some(ran) if ran.success => parse_sacct(&ran.stdout),
        _ => JobState::Unknown,
    }
}

fn cancel_outcome(id: u64, ran: &Ran) -> Result<(), SlurmError> {
    if ran.success {
        Ok(())
    } else {
        Err(SlurmError::ScancelFailed {
            id,
            stderr: ran.stderr.trim().to_string(),
        })
    }
}

/// `squeue -j ID` fails with "Invalid job id specified" for a job slurmctld does not know;
/// that is an answer (not queued), any other failure is not.
fn queued_outcome(id: u64, ran: &Ran) -> Option<bool> {
    if ran.success {
        Some(parse_squeue(&ran.stdout, id))
    } else if ran.stderr.contains("Invalid job id specified") {
        Some(false)
    } else {
        None
    }
}

/// The job id in `sbatch --parsable`'s output: `ID`, or `ID;CLUSTER` on a federation or with
/// `--clusters`.
pub fn parse_sbatch_parsable(stdout: &str) -> Result<u64, SlurmError> {
    let text = stdout.trim();
    let id = text.split(';').next().unwrap_or_default();
    id.parse().map_err(|source| SlurmError::NotAJobId {
        text: text.to_string(),
        source,
    })
}

/// The value of the first `KEY=value` word of `scontrol -o` output with this key (`key` ends
/// with `=`). Values with spaces (a job name, a command line) end at the first space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// The exit code in Slurm's `EXIT:SIGNAL`; -1 when it is absent or not a number.
fn exit_code(text: &str) -> i32 {
    text.split(':')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1)
}

/// The state in `scontrol show job ID -o` output (one line of `KEY=value` words):
/// `JobState=PENDING` is [`JobState::Pending`] with its `Reason=`; `RUNNING`, `COMPLETING`,
/// `CONFIGURING`, `SUSPENDED` and `REQUEUED` are [`JobState::Running`]; no `JobState=` at all
/// (empty or garbled output) is [`JobState::Unknown`]; any other state is
/// [`JobState::Ended`] with the exit code of `ExitCode=EXIT:SIGNAL`.
pub fn parse_scontrol_job(text: &str) -> JobState {
    let state = field(text, "JobState=").unwrap_or_default();
    match state {
        "PENDING" => JobState::Pending(field(text, "Reason=").unwrap_or_default().to_string()),
        "RUNNING" | "COMPLETING" | "CONFIGURING" | "SUSPENDED" | "REQUEUED" => JobState::Running,
        "" => JobState::Unknown,
        _ => JobState::Ended {
            state: state.to_string(),
            exit_code: exit_code(field(text, "ExitCode=").unwrap_or_default()),
        },
    }
}

/// The `JobName=` of `scontrol show job ID -o` output (up to the first space); `None` when there
/// is none (slurmctld does not know the job: it printed nothing on stdout).
pub fn parse_scontrol_job_name(text: &str) -> Option<String> {
    field(text, "JobName=").map(str::to_string)
}

/// The state in `sacct -n -X -P -o State,ExitCode` output: its first line, `STATE|EXIT:SIGNAL`,
/// is [`JobState::Ended`] with the state's first word (`CANCELLED by 0` is `CANCELLED`) and the
/// exit code; no line, no `|` or no state is [`JobState::Unknown`].
///
/// It is read only for jobs slurmctld has purged, so every state counts as ended.
pub fn parse_sacct(text: &str) -> JobState {
    let line = text.lines().next().unwrap_or_default();
    let Some((state, code)) = line.split_once('|') else {
        return JobState::Unknown;
    };
    match state.split_whitespace().next() {
        Some(state) => JobState::Ended {
            state: state.to_string(),
            exit_code: exit_code(code),
        },
        None => JobState::Unknown,
    }
}

/// A job whose script has ended but which Slurm cannot finish: it is `COMPLETING` and some of
/// its nodes do not respond (their `slurmd` is down), so Slurm waits for them until they answer
/// or `SlurmdTimeout` marks them DOWN — minutes, and nothing of the job runs meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The batch script's exit code (before the `:` of `ExitCode=`; -1 when absent).
    pub exit_code: i32,
    /// The job's nodes that do not respond.
    pub nodes: Vec<String>,
}

/// The exit code and the `NodeList=` of a `COMPLETING` job in `scontrol show job ID -o`
/// output; `None` in any other state or without a node list.
pub fn parse_scontrol_completing(text: &str) -> Option<(i32, String)> {
    if field(text, "JobState=")? != "COMPLETING" {
        return None;
    }
    let nodes = field(text, "NodeList=").filter(|n| !n.is_empty() && *n != "(null)")?;
    Some((
        exit_code(field(text, "ExitCode=").unwrap_or_default()),
        nodes.to_string(),
    ))
}

/// The nodes of `sinfo -h -N -o '%N %t'` output whose state ends with `*` (Slurm's mark of a
/// node that does not respond), each once (a node in two partitions has two lines).
pub fn parse_sinfo_not_responding(text: &str) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(node), Some(state)) = (words.next(), words.next()) {
            if state.ends_with('*') && !nodes.iter().any(|n| n == node) {
                nodes.push(node.to_string());
            }
        }
    }
    nodes
}

/// Whether `squeue -h -j ID -o %i` output lists job `id`: a line that is the id (or, for an
/// array or heterogeneous job, starts with it followed by `_` or `+`). `squeue -j` lists a job
/// only while it is pending, running or completing.
pub fn parse_squeue(text: &str, id: u64) -> bool {
    let id = id.to_string();
    text.lines().any(|l| {
        l.trim()
            .strip_prefix(id.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '+']))
    })
}

#[cfg(test)]
mod tests;
