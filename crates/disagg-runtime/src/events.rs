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
    /// Workers still starting, and how many 10 s steps of it were shown.
    loading: Vec<(Role, u64)>,
}

impl Events {
    /// Events of a run started at `t0`; `terminal`: stderr is one (live progress line).
    pub fn new(t0: Instant, terminal: bool) -> Events {
        Events {
            t0,
            terminal,
            seen: Vec::new(),
            last_label: String::new(),
            loading: Vec::new(),
        }
    }

    /// End the live line before other output.
    pub fn end_line(&self) {
        if self.terminal {
            eprintln!();
        }
    }

    /// Print what changed since the last call, and every 10 s a line for each worker whose
    /// engine is still loading (real engines take minutes).
    pub fn show(&mut self, roles: &[RoleState]) {
        let (t0, terminal) = (self.t0, self.terminal);
        let now = crate::now_ms();
        for r in roles {
            if let Some(line) = loading_line(&mut self.loading, r, now) {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("{} {:<13} {line}", at(t0), r.role.to_string());
            }
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

/// `loading, 40 s` when worker `r` has been starting for another 10 s since the last line.
fn loading_line(shown: &mut Vec<(Role, u64)>, r: &RoleState, now_ms: u64) -> Option<String> {
    if !r.role.is_worker() || r.state != State::Starting {
        return None;
    }
    let steps = now_ms.saturating_sub(r.since_ms) / 10_000;
    let last = match shown.iter_mut().find(|(role, _)| *role == r.role) {
        Some((_, last)) => last,
        None => {
            shown.push((r.role, 0));
            &mut shown.last_mut()?.1
        }
    };
    if steps <= *last {
        return None;
    }
    *last = steps;
    Some(format!("loading, {} s", steps * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_worker_is_shown_loading_every_ten_seconds() {
        let mut shown = Vec::new();
        let gen_ = RoleState::new(Role::Gen(0), 1, 1_000);
        assert_eq!(loading_line(&mut shown, &gen_, 9_000), None);
        assert_eq!(
            loading_line(&mut shown, &gen_, 11_500).as_deref(),
            Some("loading, 10 s")
        );
        assert_eq!(
            loading_line(&mut shown, &gen_, 15_000),
            None,
            "once per step"
        );
        assert_eq!(
            loading_line(&mut shown, &gen_, 41_000).as_deref(),
            Some("loading, 40 s")
        );
        let server = RoleState::new(Role::DisaggServer, 2, 1_000);
        assert_eq!(
            loading_line(&mut shown, &server, 60_000),
            None,
            "only workers load"
        );
        let ready = gen_.ready("h", 1, 50_000);
        assert_eq!(loading_line(&mut shown, &ready, 90_000), None);
    }
}
