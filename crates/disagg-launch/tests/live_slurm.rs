//! The Slurm client against a real Slurm: submit, follow, cancel, and the answers for a job that
//! does not exist. Needs a running cluster named by `SLURM_CONF`
//! (`bash scripts/local-slurm.sh up && source /tmp/disagg-local-slurm/env.sh`); without one the
//! tests say SKIPPED, and `DISAGG_REQUIRE_SLURM=1` (set by CI) makes that a failure.

use std::time::{Duration, Instant};

use disagg_launch::slurm::{JobState, Slurm, SlurmError};

/// Cancels the job when the test ends, whatever happened.
struct CancelOnDrop<'a>(&'a Slurm, u64);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.cancel(self.1);
    }
}

/// Polls the job's state until `done` holds (30 s at most); returns the last state.
fn wait_for(slurm: &Slurm, id: u64, done: impl Fn(&JobState) -> bool) -> JobState {
    let t0 = Instant::now();
    loop {
        let state = slurm.state(id);
        if done(&state) || t0.elapsed() > Duration::from_secs(30) {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster `SLURM_CONF` names, when it answers.
fn live() -> Option<Slurm> {
    let conf = std::env::var("SLURM_CONF").ok().filter(|c| {
        std::process::Command::new("scontrol")
            .arg("ping")
            .env("SLURM_CONF", c)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if conf.is_none() {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_SLURM").is_none(),
            "DISAGG_REQUIRE_SLURM is set but SLURM_CONF names no running Slurm"
        );
        eprintln!("SKIPPED: no running Slurm (SLURM_CONF)");
    }
    conf.map(|c| Slurm::new(Some(c)))
}

#[test]
fn submit_follow_cancel() {
    let Some(slurm) = live() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sbatch");
    std::fs::write(
        &script,
        "#!/bin/bash\n#SBATCH --job-name=disagg-launch-live\nsleep 300\n",
    )
    .unwrap();

    let id = slurm.sbatch(&script, dir.path()).unwrap();
    let _cancel = CancelOnDrop(&slurm, id);
    assert_eq!(slurm.job_name(id).as_deref(), Some("disagg-launch-live"));
    assert_eq!(slurm.is_queued(id), Some(true));
    let state = wait_for(&slurm, id, |s| *s == JobState::Running);
    assert_eq!(
        state,
        JobState::Running,
        "an idle cluster starts it at once"
    );

    slurm.cancel(id).unwrap();
    let state = wait_for(&slurm, id, |s| matches!(s, JobState::Ended { .. }));
    assert_eq!(
        state,
        JobState::Ended {
            state: "CANCELLED".into(),
            exit_code: 0
        }
    );
    assert_eq!(slurm.is_queued(id), Some(false));
    // Cancelling an ended job is not an error.
    slurm.cancel(id).unwrap();
}

#[test]
fn rejected_and_unknown_jobs() {
    let Some(slurm) = live() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sbatch");
    std::fs::write(&script, "#!/bin/bash\n#SBATCH --nodes=9999\ntrue\n").unwrap();
    let e = slurm.sbatch(&script, dir.path()).unwrap_err();
    assert!(matches!(e, SlurmError::SbatchRejected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("sbatch rejected the job: sbatch: error: Batch job submission failed"),
        "{e}"
    );

    // The local cluster's ids restart at 1. (An id past Slurm's maximum, such as 4000000000, is
    // refused by squeue itself: `squeue: error: Invalid job id: 4000000000`.)
    let never = 999_999;
    assert_eq!(slurm.state(never), JobState::Unknown);
    assert_eq!(slurm.job_name(never), None);
    assert_eq!(slurm.is_queued(never), Some(false));
}
