//! What a launcher shows while a run goes on: one event line per role state change, and the
//! benchmark's progress (a live line on a terminal).

use std::time::Instant;

use disagg_plan::Role;

use crate::rundir::{RoleState, State};

/// Seconds since `t0`, the prefix of every event line.
pub fn at(t0: Instant) -> String {
    format!("[{:>6.2}s]", t0.elapsed().as_secs_f64())
}

/// The events shown so far.
#[derive(Debug)]
pub struct Events {
    t0: Instant,
    terminal: bool,
    seen: Vec<(Role, State)>,
    last_label: String,
}

impl Events {
    /// Events of a run started at `t0`; `terminal`: stderr is one (live progress line).
    pub fn new(t0: Instant, terminal: bool) -> Events {
        Events {
            t0,
            terminal,
            seen: Vec::new(),
            last_label: String::new(),
        }
    }

    /// End the live line before other output.
    pub fn end_line(&self) {
        if self.terminal {
            eprintln!();
        }
    }

    /// Print what changed since the last call.
    pub fn show(&mut self, roles: &[RoleState]) {
        let (t0, terminal) = (self.t0, self.terminal);
        for r in roles {
            let known = self.seen.iter_mut().find(|(n, _)| *n == r.role);
            let changed = match known {
                Some((_, s)) if *s == r.state => false,
                Some((_, s)) => {
                    *s = r.state;
                    true
                }
                None => {
                    self.seen.push((r.role, r.state));
                    true
                }
            };
            if changed && r.state != State::Starting {
                let what = match (r.state, r.address()) {
                    (State::Ready, Some(a)) => format!("ready at {a}"),
                    (State::Ready, None) => "running".to_string(),
                    (State::Exited, _) => "exited".to_string(),
                    (State::Failed, _) => {
                        format!("FAILED: {}", r.reason.as_deref().unwrap_or(""))
                    }
                    (State::Starting, _) => "starting".to_string(),
                };
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("{} {:<13} {what}", at(t0), r.role.to_string());
            }
            let Some(pr) = &r.progress else { continue };
            if !pr.label.is_empty() && pr.label != self.last_label {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!(
                    "{} BENCHMARK     {} ({}/{}): {} requests",
                    at(t0),
                    pr.label,
                    pr.runs_done + 1,
                    pr.runs_total,
                    pr.total
                );
                self.last_label.clone_from(&pr.label);
            }
            if terminal {
                eprint!(
                    "\r\x1b[2K{} BENCHMARK     {}: {}/{} requests",
                    at(t0),
                    pr.label,
                    pr.done,
                    pr.total
                );
            }
        }
    }
}
