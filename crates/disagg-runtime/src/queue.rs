//! Many runs, each an ordinary `disagg run` or `disagg submit` child process, at most N at
//! once: what `disagg sweep` and `disagg ci --parallel` share. A child runs in a process group
//! of its own, with its output in a log file (or on this process's terminal when it runs alone);
//! it is started with `--parent-pid`, so it ends if this process is killed. The [`Driver`] hears
//! of every start and end and may queue more jobs (a retry, an SLA probe). On SIGINT or SIGTERM
//! nothing new starts, every child gets SIGTERM (a local run stops its roles, a submitted one
//! cancels its Slurm job and collects what finished), and the queue waits for them (then
//! SIGKILL after a deadline): finished runs are kept.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::supervise::{self, Child};

/// One run to start.
#[derive(Debug)]
pub struct Job {
    /// What the driver calls it (a point's index, a test's index).
    pub tag: usize,
    /// Its name in messages.
    pub name: String,
    /// The `disagg run|submit` command.
    pub command: Command,
    /// Its run directory (`--out`).
    pub run_dir: PathBuf,
    /// Where its output goes; `None`: this process's stdout and stderr.
    pub log: Option<PathBuf>,
}

/// A job that is running.
#[derive(Debug)]
pub struct Running {
    /// The job.
    pub job: Job,
    /// When it started.
    pub started: Instant,
    child: Child,
}

/// What the queue tells about its jobs.
pub trait Driver {
    /// `job` started.
    fn started(&mut self, job: &Job);
    /// `job` ended with `status` after `elapsed`; `interrupted`: it was stopped because this
    /// process was. Returns jobs to queue (first in front).
    fn ended(
        &mut self,
        job: Job,
        status: ExitStatus,
        elapsed: Duration,
        interrupted: bool,
    ) -> Vec<Job>;
    /// About once a second, and after every start and end: the running jobs and how many wait.
    fn tick(&mut self, running: &[Running], waiting: usize);
}

/// How long children get to stop after SIGTERM (a submit cancels its job and collects the
/// results) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// Run `jobs`, at most `max` at a time (at least 1), until none is left or a signal came;
/// returns whether a signal came.
pub fn run(jobs: Vec<Job>, max: usize, driver: &mut dyn Driver) -> anyhow::Result<bool> {
    let max = max.max(1);
    let runtime = crate::serving::runtime(1)?;
    let (signal, mut child_ended) = {
        let _g = runtime.enter();
        // SIGCHLD wakes the loop the moment a child ends, so the next run starts at once (the
        // sweep's overhead is the gaps between its runs).
        let child = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        (crate::serving::cancel_on_signal(), child)
    };
    let mut waiting: VecDeque<Job> = jobs.into();
    let mut running: Vec<Running> = Vec::new();
    let mut last_tick = Instant::now();
    loop {
        let mut changed = false;
        if signal.is_cancelled() {
            stop(&mut running, driver);
            driver.tick(&[], waiting.len());
            return Ok(true);
        }
        while running.len() < max {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            match spawn(&job) {
                Ok(child) => {
                    driver.started(&job);
                    running.push(Running {
                        job,
                        started: Instant::now(),
                        child,
                    });
                }
                Err(e) => {
                    // Not a run that failed but one that could not start: say so and go on
                    // (the driver records it as failed).
                    eprintln!("error: cannot start {}: {e}", job.name);
                    let more = driver.ended(job, failed_to_start(), Duration::ZERO, false);
                    waiting.extend(more);
                }
            }
            changed = true;
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].child.poll() {
                let r = running.swap_remove(i);
                let more = driver.ended(r.job, status, r.started.elapsed(), false);
                for (n, job) in more.into_iter().enumerate() {
                    waiting.insert(n, job);
                }
                changed = true;
            } else {
                i += 1;
            }
        }
        if running.is_empty() && waiting.is_empty() {
            driver.tick(&running, 0);
            return Ok(false);
        }
        if changed || last_tick.elapsed() >= Duration::from_secs(1) {
            driver.tick(&running, waiting.len());
            last_tick = Instant::now();
        }
        if changed {
            continue;
        }
        runtime.block_on(async {
            let child = async {
                match child_ended.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signal.cancelled() => {}
                _ = child => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        });
    }
}

/// Start `job`'s command with `--parent-pid` of this process appended.
fn spawn(job: &Job) -> std::io::Result<Child> {
    let mut cmd = Command::new(job.command.get_program());
    cmd.args(job.command.get_args());
    for (k, v) in job.command.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = job.command.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd.arg("--parent-pid").arg(std::process::id().to_string());
    match &job.log {
        Some(log) => {
            if let Some(dir) = log.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            supervise::spawn(&job.name, cmd, log)
        }
        // Its own group all the same: a Ctrl-C reaches this process only, which stops the
        // child in order.
        None => supervise::spawn_inherited(&job.name, cmd),
    }
}

/// SIGTERM to every running child, wait for them, SIGKILL what is left; each is reported ended.
fn stop(running: &mut Vec<Running>, driver: &mut dyn Driver) {
    if running.is_empty() {
        return;
    }
    eprintln!(
        "interrupted: stopping {} run(s) in flight (SIGTERM; SIGKILL after {} s)",
        running.len(),
        STOP_GRACE.as_secs()
    );
    let mut children: Vec<Child> = Vec::new();
    let mut jobs = Vec::new();
    for r in running.drain(..) {
        children.push(r.child);
        jobs.push((r.job, r.started));
    }
    supervise::stop_all(&mut children, STOP_GRACE);
    for ((job, started), mut child) in jobs.into_iter().zip(children) {
        let status = child.poll().unwrap_or_else(failed_to_start);
        let _ = driver.ended(job, status, started.elapsed(), true);
    }
}

/// The status of a child that never ran: exit code 1.
fn failed_to_start() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(1 << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record {
        events: Vec<String>,
        most_running: usize,
        retried: bool,
    }

    impl Driver for Record {
        fn started(&mut self, job: &Job) {
            self.events.push(format!("start {}", job.name));
        }
        fn ended(&mut self, job: Job, status: ExitStatus, _: Duration, _: bool) -> Vec<Job> {
            self.events
                .push(format!("end {} {}", job.name, status.code().unwrap_or(-1)));
            if job.name == "b" && !self.retried {
                self.retried = true;
                return vec![sh(9, "b-again", "exit 0", &job.run_dir)];
            }
            Vec::new()
        }
        fn tick(&mut self, running: &[Running], _: usize) {
            self.most_running = self.most_running.max(running.len());
        }
    }

    /// A job running `script`; the queue appends `--parent-pid PID`, which `sh -c` takes as $0.
    fn sh(tag: usize, name: &str, script: &str, dir: &std::path::Path) -> Job {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        Job {
            tag,
            name: name.to_string(),
            command,
            run_dir: dir.to_path_buf(),
            log: Some(dir.join(format!("{name}.log"))),
        }
    }

    #[test]
    fn at_most_n_run_at_once_and_the_driver_can_queue_more() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = vec![
            sh(0, "a", "sleep 0.3", dir.path()),
            sh(1, "b", "sleep 0.3; exit 3", dir.path()),
            sh(2, "c", "sleep 0.3", dir.path()),
        ];
        let mut record = Record::default();
        let interrupted = run(jobs, 2, &mut record).unwrap();
        assert!(!interrupted);
        assert_eq!(record.most_running, 2);
        assert_eq!(record.events[..2], ["start a", "start b"]);
        assert!(record.events.contains(&"end b 3".to_string()));
        let retry = record.events.iter().position(|e| e == "start b-again");
        let c = record.events.iter().position(|e| e == "start c");
        assert!(retry.is_some() && c.is_some(), "{:?}", record.events);
        assert_eq!(record.events.len(), 8, "{:?}", record.events);
        assert!(
            std::fs::read_to_string(dir.path().join("b-again.log"))
                .unwrap()
                .is_empty()
        );
    }
}
