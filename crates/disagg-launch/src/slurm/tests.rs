//! The parsers on every file of `testdata/` (outputs captured from a real Slurm by
//! `testdata/capture.sh`, and `hand-made-*` malformed ones), the command lines, the messages.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/slurm/testdata")
}

/// One file of `testdata/`: the command, its exit code and what it printed.
#[derive(Debug)]
struct Capture {
    command: String,
    exit: i32,
    stdout: String,
    stderr: String,
}

impl Capture {
    /// The command line without a leading `env VAR=value ...`.
    fn program(&self) -> &str {
        let mut rest = self.command.as_str();
        if let Some(r) = rest.strip_prefix("env ") {
            rest = r;
            while let Some((word, r)) = rest.split_once(' ') {
                if !word.contains('=') {
                    break;
                }
                rest = r;
            }
        }
        rest
    }

    fn ran(&self) -> Ran {
        Ran {
            success: self.exit == 0,
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
        }
    }
}

/// Reads `NAME.txt`: `#` comments, `$ COMMAND`, `exit: CODE`, `--- stdout`, lines,
/// `--- stderr`, lines (every line ends with a newline).
fn load(name: &str) -> Capture {
    let path = testdata().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.starts_with('#'));
    let command = lines
        .next()
        .and_then(|l| l.strip_prefix("$ "))
        .expect("a `$ COMMAND` line")
        .to_string();
    let exit = lines
        .next()
        .and_then(|l| l.strip_prefix("exit: "))
        .and_then(|c| c.parse().ok())
        .expect("an `exit: CODE` line");
    assert_eq!(lines.next(), Some("--- stdout"), "{name}");
    let (mut stdout, mut stderr, mut in_stderr) = (String::new(), String::new(), false);
    for l in lines {
        if l == "--- stderr" && !in_stderr {
            in_stderr = true;
            continue;
        }
        let out = if in_stderr { &mut stderr } else { &mut stdout };
        out.push_str(l);
        out.push('\n');
    }
    assert!(in_stderr, "{name}: no `--- stderr` line");
    Capture {
        command,
        exit,
        stdout,
        stderr,
    }
}

/// Every case in `testdata/`, by name (without `.txt`).
fn all_cases() -> BTreeSet<String> {
    std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".txt").map(str::to_string))
        .collect()
}

fn ended(state: &str, exit_code: i32) -> JobState {
    JobState::Ended {
        state: state.to_string(),
        exit_code,
    }
}

fn pending(reason: &str) -> JobState {
    JobState::Pending(reason.to_string())
}

/// `scontrol show job ID -o` files: the state, whether it never starts, the job name.
fn scontrol_cases() -> Vec<(&'static str, JobState, bool, Option<&'static str>)> {
    let sleep = Some("sleep.sh");
    vec![
        ("scontrol-running", JobState::Running, false, sleep),
        // Right after scancel the job is COMPLETING until its processes are gone.
        ("scontrol-cancelling", JobState::Running, false, sleep),
        ("scontrol-cancelled", ended("CANCELLED", 0), false, sleep),
        ("scontrol-completed", ended("COMPLETED", 0), false, sleep),
        (
            "scontrol-failed-exit-3",
            ended("FAILED", 3),
            false,
            Some("exit3.sh"),
        ),
        // Killed by a signal: exit code 0, the signal (9) after the colon.
        (
            "scontrol-failed-killed",
            ended("FAILED", 0),
            false,
            Some("killed.sh"),
        ),
        ("scontrol-node-fail", ended("NODE_FAIL", 0), false, sleep),
        ("scontrol-timeout", ended("TIMEOUT", 0), false, sleep),
        (
            "scontrol-pending-resources",
            pending("Resources"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-priority",
            pending("Priority"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-begin-time",
            pending("BeginTime"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-dependency",
            pending("Dependency"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-held-admin",
            pending("JobHeldAdmin"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-held-user",
            pending("JobHeldUser"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-submitted-held",
            pending("JobHeldUser"),
            false,
            sleep,
        ),
        (
            "scontrol-pending-node-limit",
            pending("PartitionNodeLimit"),
            true,
            sleep,
        ),
        // scontrol fails (exit 1, nothing on stdout): `Slurm::state` asks sacct.
        ("scontrol-unknown-id", JobState::Unknown, false, None),
        ("scontrol-purged", JobState::Unknown, false, None),
        (
            "scontrol-controller-unreachable",
            JobState::Unknown,
            false,
            None,
        ),
        ("hand-made-scontrol-empty", JobState::Unknown, false, None),
        ("hand-made-scontrol-garbage", JobState::Unknown, false, None),
        (
            "hand-made-scontrol-truncated-before-state",
            JobState::Unknown,
            false,
            Some("sleep.sh"),
        ),
        (
            "hand-made-scontrol-truncated-in-state",
            JobState::Unknown,
            false,
            Some("sleep.sh"),
        ),
        (
            "hand-made-scontrol-truncated-in-exit-code",
            ended("FAILED", 3),
            false,
            Some("exit3.sh"),
        ),
        (
            "hand-made-scontrol-truncated-empty-exit-code",
            ended("FAILED", -1),
            false,
            Some("exit3.sh"),
        ),
        (
            "hand-made-scontrol-pending-no-reason",
            pending(""),
            false,
            Some("sleep.sh"),
        ),
    ]
}

/// `sacct -n -X -P -o State,ExitCode -j ID` files that succeeded: the state.
fn sacct_cases() -> Vec<(&'static str, JobState)> {
    vec![
        // Exit 1, "Slurm accounting storage is disabled" on stderr.
        ("sacct-no-accounting", JobState::Unknown),
        ("sacct-purged-no-accounting", JobState::Unknown),
        ("hand-made-sacct-empty", JobState::Unknown),
        ("hand-made-sacct-cancelled-by", ended("CANCELLED", 0)),
        ("hand-made-sacct-two-records", ended("TIMEOUT", 0)),
        ("hand-made-sacct-garbage", JobState::Unknown),
        ("hand-made-sacct-no-exit-code", ended("FAILED", -1)),
        ("hand-made-sacct-no-state", JobState::Unknown),
    ]
}

/// `sbatch --parsable` files: the job id, or the error message.
fn sbatch_cases() -> Vec<(&'static str, Result<u64, &'static str>)> {
    vec![
        ("sbatch-parsable", Ok(15)),
        (
            "sbatch-rejected-too-many-nodes",
            Err(
                "sbatch rejected the job: sbatch: error: Batch job submission failed: Node count specification invalid",
            ),
        ),
        (
            "hand-made-sbatch-empty",
            Err("sbatch printed ``, not a job id"),
        ),
        (
            "hand-made-sbatch-not-parsable",
            Err("sbatch printed `Submitted batch job 12`, not a job id"),
        ),
        ("hand-made-sbatch-cluster", Ok(12)),
        (
            "hand-made-sbatch-rejected-silent",
            Err("sbatch rejected the job: no message"),
        ),
    ]
}

/// `squeue -h -j ID -o %i` files: whether the job is queued (`None`: squeue failed).
fn squeue_cases() -> Vec<(&'static str, Option<bool>)> {
    vec![
        ("squeue-running", Some(true)),
        ("squeue-pending", Some(true)),
        // Ended but still known to slurmctld: exit 0, nothing printed.
        ("squeue-ended", Some(false)),
        ("squeue-cancelled", Some(false)),
        // Exit 1, "Invalid job id specified".
        ("squeue-unknown-id", Some(false)),
        ("squeue-controller-unreachable", None),
        ("hand-made-squeue-garbage", Some(false)),
    ]
}

/// `scancel ID` files: `Ok`, or the error message.
fn scancel_cases() -> Vec<(&'static str, Result<(), &'static str>)> {
    vec![
        ("scancel-running", Ok(())),
        ("scancel-ended", Ok(())),
        // Slurm 22.05 exits 0 without a word for an id it does not know.
        ("scancel-unknown-id", Ok(())),
        ("scancel-purged", Ok(())),
        ("hand-made-scancel-failed-silent", Err("scancel 7: ")),
    ]
}

/// The job id on a captured command line (its last number).
fn id_of(c: &Capture) -> u64 {
    c.command
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("jobid=").unwrap_or(w).parse().ok())
        .next_back()
        .expect("a job id on the command line")
}

#[test]
fn every_file_has_an_expectation() {
    let mut covered = BTreeSet::new();
    covered.extend(scontrol_cases().into_iter().map(|c| c.0.to_string()));
    covered.extend(sacct_cases().into_iter().map(|c| c.0.to_string()));
    covered.extend(sbatch_cases().into_iter().map(|c| c.0.to_string()));
    covered.extend(squeue_cases().into_iter().map(|c| c.0.to_string()));
    covered.extend(scancel_cases().into_iter().map(|c| c.0.to_string()));
    assert_eq!(all_cases(), covered);
}

#[test]
fn scontrol_outputs() {
    for (name, want, never, job_name) in scontrol_cases() {
        let c = load(name);
        assert!(c.program().starts_with("scontrol show job"), "{name}");
        assert_eq!(parse_scontrol_job(&c.stdout), want, "{name}");
        assert_eq!(want.never_starts(), never, "{name}");
        assert_eq!(
            parse_scontrol_job_name(&c.stdout).as_deref(),
            job_name,
            "{name}"
        );
        // What `Slurm::state` makes of it: sacct is asked only when scontrol failed.
        let via_sacct = std::cell::Cell::new(false);
        let state = state_outcome(Some(&c.ran()), || {
            via_sacct.set(true);
            None
        });
        assert_eq!(via_sacct.get(), c.exit != 0, "{name}");
        if c.exit == 0 {
            assert_eq!(state, want, "{name}");
        } else {
            assert_eq!(state, JobState::Unknown, "{name}");
        }
    }
}

#[test]
fn sacct_outputs() {
    for (name, want) in sacct_cases() {
        let c = load(name);
        assert!(c.program().starts_with("sacct "), "{name}");
        assert_eq!(parse_sacct(&c.stdout), want, "{name}");
        if c.exit == 0 {
            assert_eq!(state_outcome(None, || Some(c.ran())), want, "{name}");
        } else {
            assert_eq!(state_outcome(None, || Some(c.ran())), JobState::Unknown);
        }
    }
}

#[test]
fn sbatch_outputs() {
    for (name, want) in sbatch_cases() {
        let c = load(name);
        assert!(c.program().starts_with("sbatch --parsable"), "{name}");
        let got = sbatch_outcome(&c.ran()).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_string), "{name}");
        if c.exit == 0 {
            assert_eq!(
                parse_sbatch_parsable(&c.stdout).map_err(|e| e.to_string()),
                want.map_err(str::to_string),
                "{name}"
            );
        }
    }
}

#[test]
fn squeue_outputs() {
    for (name, want) in squeue_cases() {
        let c = load(name);
        assert!(c.program().starts_with("squeue -h -j"), "{name}");
        let id = id_of(&c);
        assert_eq!(queued_outcome(id, &c.ran()), want, "{name}");
    }
}

#[test]
fn scancel_outputs() {
    for (name, want) in scancel_cases() {
        let c = load(name);
        assert!(c.program().starts_with("scancel "), "{name}");
        let got = cancel_outcome(id_of(&c), &c.ran()).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_string), "{name}");
    }
}

/// Every parser takes every file, stdout and stderr, without panicking; text that is not its
/// command's output yields nothing (no state, no id, not queued).
#[test]
fn every_parser_takes_every_file() {
    for name in all_cases() {
        let c = load(&name);
        for text in [&c.stdout, &c.stderr] {
            let scontrol = parse_scontrol_job(text);
            let sacct = parse_sacct(text);
            let sbatch = parse_sbatch_parsable(text);
            let job_name = parse_scontrol_job_name(text);
            let _ = parse_squeue(text, 1);
            if !c.program().starts_with("scontrol show job") {
                assert_eq!(scontrol, JobState::Unknown, "{name}");
                assert_eq!(job_name, None, "{name}");
            }
            if !c.program().starts_with("sacct ") {
                assert_eq!(sacct, JobState::Unknown, "{name}");
            }
            if !c.program().starts_with("sbatch ") && !c.program().starts_with("squeue ") {
                assert!(sbatch.is_err(), "{name}");
            }
        }
    }
}

#[test]
fn malformed_text_never_panics() {
    let samples = [
        "",
        "\n",
        " ",
        "=",
        "JobState",
        "JobState==",
        "JobState=PENDING Reason=",
        "ExitCode=:",
        "ExitCode=-:-",
        "ExitCode=99999999999999999999:0 JobState=FAILED",
        "|",
        "||",
        ";",
        ";;;",
        "é;ü|ß:",
        "\u{0}\u{1}",
        "18446744073709551616",
    ];
    for s in samples {
        let _ = parse_scontrol_job(s);
        let _ = parse_scontrol_job_name(s);
        let _ = parse_sacct(s);
        let _ = parse_sbatch_parsable(s);
        let _ = parse_squeue(s, 18446744073709551615);
    }
    assert_eq!(
        parse_scontrol_job("JobState=FAILED ExitCode=99999999999999999999:0"),
        ended("FAILED", -1)
    );
    assert!(parse_sbatch_parsable("18446744073709551616").is_err());
}

#[test]
fn the_first_key_wins_and_only_whole_keys_count() {
    // `DerivedExitCode=` is not `ExitCode=`; the batch script's exit code is.
    assert_eq!(
        parse_scontrol_job("JobState=FAILED DerivedExitCode=9:0 ExitCode=3:0"),
        ended("FAILED", 3)
    );
    assert_eq!(
        parse_scontrol_job("JobState=PENDING Reason=Priority Reason=Resources"),
        pending("Priority")
    );
}

#[test]
fn squeue_lists_the_job_itself() {
    assert!(parse_squeue("7\n", 7));
    assert!(parse_squeue("  7  \n", 7));
    assert!(parse_squeue("7_3\n7_[4-9]\n", 7));
    assert!(parse_squeue("7+0\n7+1\n", 7));
    assert!(!parse_squeue("17\n", 7));
    assert!(!parse_squeue("70\n", 7));
    assert!(!parse_squeue("", 7));
}

#[test]
fn never_starts_only_for_reasons_that_cannot_clear() {
    for reason in NEVER {
        assert!(pending(reason).never_starts(), "{reason}");
    }
    for reason in [
        "",
        "None",
        "Resources",
        "Priority",
        "Dependency",
        "BeginTime",
        "JobHeldUser",
    ] {
        assert!(!pending(reason).never_starts(), "{reason}");
    }
    assert!(!JobState::Running.never_starts());
    assert!(!ended("PartitionNodeLimit", 1).never_starts());
    assert!(!JobState::Unknown.never_starts());
}

#[test]
fn states_in_words() {
    assert_eq!(pending("").to_string(), "pending");
    assert_eq!(pending("None").to_string(), "pending");
    assert_eq!(pending("Resources").to_string(), "pending (Resources)");
    assert_eq!(JobState::Running.to_string(), "running");
    assert_eq!(ended("FAILED", 3).to_string(), "ended FAILED, exit code 3");
    assert_eq!(
        JobState::Unknown.to_string(),
        "unknown to Slurm (purged, no accounting)"
    );
}

#[test]
fn error_messages() {
    let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
    assert_eq!(
        SlurmError::SbatchNotRun(io()).to_string(),
        "cannot run sbatch (is Slurm installed and on PATH?)"
    );
    assert_eq!(
        SlurmError::ScancelNotRun(io()).to_string(),
        "cannot run scancel"
    );
    assert_eq!(
        SlurmError::SbatchRejected {
            stderr: String::new()
        }
        .to_string(),
        "sbatch rejected the job: no message"
    );
    assert_eq!(
        SlurmError::ScancelFailed {
            id: 7,
            stderr: "scancel: error: x".into()
        }
        .to_string(),
        "scancel 7: scancel: error: x"
    );
    // The cause stays attached, as `anyhow`'s `.context()` kept it before.
    let e = parse_sbatch_parsable("x\n").unwrap_err();
    assert_eq!(e.to_string(), "sbatch printed `x`, not a job id");
    let source = std::error::Error::source(&e).expect("a cause");
    assert_eq!(source.to_string(), "invalid digit found in string");
}

/// The program, arguments, `SLURM_CONF` and working directory a command would run with.
fn describe(c: &Command) -> (String, Vec<String>, Option<String>, Option<String>) {
    let s = |o: &OsStr| o.to_string_lossy().into_owned();
    let conf = c
        .get_envs()
        .find(|(k, _)| *k == "SLURM_CONF")
        .and_then(|(_, v)| v.map(s));
    (
        s(c.get_program()),
        c.get_args().map(s).collect(),
        conf,
        c.get_current_dir().map(|d| d.display().to_string()),
    )
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn commands() {
    let conf = Some("/c/slurm.conf".to_string());
    let slurm = Slurm::new(conf.clone());
    assert_eq!(slurm.conf(), Some("/c/slurm.conf"));
    assert_eq!(
        describe(&slurm.sbatch_cmd(Path::new("/run/job.sbatch"), Path::new("/run"))),
        (
            "sbatch".into(),
            strings(&["--parsable", "/run/job.sbatch"]),
            conf.clone(),
            Some("/run".into())
        )
    );
    assert_eq!(
        describe(&slurm.scontrol_job_cmd(42)),
        (
            "scontrol".into(),
            strings(&["show", "job", "42", "-o"]),
            conf.clone(),
            None
        )
    );
    assert_eq!(
        describe(&slurm.sacct_cmd(42)),
        (
            "sacct".into(),
            strings(&["-n", "-X", "-P", "-o", "State,ExitCode", "-j", "42"]),
            conf.clone(),
            None
        )
    );
    assert_eq!(
        describe(&slurm.scancel_cmd(42)),
        ("scancel".into(), strings(&["42"]), conf.clone(), None)
    );
    assert_eq!(
        describe(&slurm.squeue_cmd(42)),
        (
            "squeue".into(),
            strings(&["-h", "-j", "42", "-o", "%i"]),
            conf,
            None
        )
    );
}

#[test]
fn without_a_conf_the_environment_decides() {
    let slurm = Slurm::new(None);
    assert_eq!(slurm.conf(), None);
    for c in [
        slurm.sbatch_cmd(Path::new("j"), Path::new(".")),
        slurm.scontrol_job_cmd(1),
        slurm.sacct_cmd(1),
        slurm.scancel_cmd(1),
        slurm.squeue_cmd(1),
    ] {
        assert_eq!(c.get_envs().count(), 0);
    }
}

/// The real pair `Slurm::state` meets for a job slurmctld has purged, on a cluster without
/// accounting: scontrol fails, sacct fails, the state is unknown.
#[test]
fn purged_without_accounting_is_unknown() {
    let sacct = load("sacct-purged-no-accounting");
    for scontrol in ["scontrol-purged", "scontrol-unknown-id"] {
        let state = state_outcome(Some(&load(scontrol).ran()), || Some(sacct.ran()));
        assert_eq!(state, JobState::Unknown, "{scontrol}");
    }
}

/// Kept from the binary's behaviour: scontrol failing for any reason, even an unreachable
/// slurmctld, counts as "purged" and falls back to sacct.
#[test]
fn an_unreachable_controller_reads_as_unknown() {
    let scontrol = load("scontrol-controller-unreachable");
    let sacct = load("sacct-no-accounting");
    assert_eq!(
        state_outcome(Some(&scontrol.ran()), || Some(sacct.ran())),
        JobState::Unknown
    );
}

/// Neither scontrol nor sacct could be run: nothing is known.
#[test]
fn no_slurm_commands() {
    assert_eq!(state_outcome(None, || None), JobState::Unknown);
}

/// A `COMPLETING` job's exit code and nodes (captured right after `scancel`), nothing in any
/// other state; the nodes that do not respond in `sinfo` output (as the local Slurm printed it
/// with `n1`'s slurmd killed: `comp*`).
#[test]
fn a_completing_job_on_nodes_that_do_not_respond_is_stuck() {
    let cancelling = load("scontrol-cancelling").stdout;
    assert_eq!(
        parse_scontrol_completing(&cancelling),
        Some((0, "n2".to_string()))
    );
    for case in [
        "scontrol-running",
        "scontrol-completed",
        "scontrol-node-fail",
    ] {
        assert_eq!(
            parse_scontrol_completing(&load(case).stdout),
            None,
            "{case}"
        );
    }
    assert_eq!(
        parse_scontrol_completing("JobState=COMPLETING NodeList=(null)"),
        None
    );
    assert_eq!(parse_scontrol_completing(""), None);
    let sinfo = "n1 comp*\nn1 comp*\nn2 comp\nn3 idle*\nn4 down*\ngarbage\n\n";
    assert_eq!(parse_sinfo_not_responding(sinfo), ["n1", "n3", "n4"]);
    assert!(parse_sinfo_not_responding("n1 comp\nn2 alloc\n").is_empty());
}
