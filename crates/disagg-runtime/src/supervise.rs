//! Child processes that can always be ended, by one rule: SIGTERM, a deadline, then SIGKILL
//! ([`stop_all`]). A role started by `disagg run` runs in its own process group (so its own
//! children go with it) with its output in a log file ([`spawn`]); an engine or coordinator a
//! role starts stays in the role's group, so ending the role's group ends it too, and writes to
//! the role's log ([`spawn_attached`]). Nothing here blocks for longer than the deadline it is
//! given.

use std::fs::OpenOptions;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A started child.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: std::process::Child,
    log: Option<PathBuf>,
    status: Option<ExitStatus>,
    /// It leads a process group of its own.
    group: bool,
}

/// Start `cmd` as `name` in a new process group, stdin closed, stdout and stderr appended to
/// `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Child> {
    let file = OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0);
    let child = cmd.spawn()?;
    Ok(Child {
        name: name.to_string(),
        child,
        log: Some(log.to_path_buf()),
        status: None,
        group: true,
    })
}

/// Start `cmd` as `name` in a new process group, stdin closed, output inherited: a child that
/// shows its progress on this terminal but is stopped by this process, not by the terminal's
/// Ctrl-C.
pub fn spawn_inherited(name: &str, mut cmd: Command) -> std::io::Result<Child> {
    cmd.stdin(Stdio::null()).process_group(0);
    let child = cmd.spawn()?;
    Ok(Child {
        name: name.to_string(),
        child,
        log: None,
        status: None,
        group: true,
    })
}

/// Start `cmd` as `name` in this process's group, stdin closed, output inherited.
pub fn spawn_attached(name: &str, mut cmd: Command) -> std::io::Result<Child> {
    cmd.stdin(Stdio::null());
    let child = cmd.spawn()?;
    Ok(Child {
        name: name.to_string(),
        child,
        log: None,
        status: None,
        group: false,
    })
}

impl Child {
    /// The name it was started as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file (`None`: it writes where this process does).
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Its exit status once it has ended (reaped at the first call that sees it).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Send `signal` to its whole process group (to it alone when it has none of its own); one
    /// that is gone is not an error.
    pub fn signal_group(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.pid()) {
            let _ = if self.group {
                killpg(Pid::from_raw(pid), signal)
            } else {
                kill(Pid::from_raw(pid), signal)
            };
        }
    }
}

/// Whether `pid` or one of its descendants holds a listening TCP socket on `port` (from
/// `/proc`). A port picked free and handed to an engine can be taken by another process before
/// the engine binds it; this tells the engine's own server from a stranger answering there.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let family = descendants(pid);
    family.iter().any(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .any(|inode| inodes.contains(&inode))
    })
}

/// Inodes of the sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    // local_address, rem_address, st (0A = LISTEN), ..., inode (column 9).
                    let listening = cols.get(3) == Some(&"0A");
                    (listening && cols.get(1)?.ends_with(&suffix))
                        .then(|| cols.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut family = vec![pid];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    family
}

/// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        },
        (None, None) => "ended without a status".to_string(),
    }
}

/// The last `n` lines of a log (from its last 64 KiB); empty if it cannot be read.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_string())
        .collect()
}

/// End every child: SIGTERM to each process group, wait up to `grace` for all to exit, then
/// SIGKILL to every group (also catching grandchildren that outlived their parent) and reap.
/// Returns the names of the children that had to be killed.
pub fn stop_all(children: &mut [Child], grace: Duration) -> Vec<String> {
    for c in children.iter_mut() {
        if c.poll().is_none() {
            c.signal_group(Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && children.iter_mut().any(|c| c.poll().is_none()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = Vec::new();
    for c in children.iter_mut() {
        if c.poll().is_none() {
            killed.push(c.name.clone());
        }
        c.signal_group(Signal::SIGKILL);
    }
    for c in children.iter_mut() {
        if c.status.is_none() {
            c.status = c.child.wait().ok();
        }
    }
    killed
}

/// Ask the kernel to send `signal` to this process when its parent ends, so a role started by
/// `disagg run` never outlives a supervisor that was killed with SIGKILL. Returns false when
/// the parent is already gone (then the caller should end at once).
pub fn die_with_parent(signal: Signal, expected_parent: u32) -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(signal);
    u32::try_from(nix::unistd::getppid().as_raw()).ok() == Some(expected_parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_ended_with_its_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let pidfile = dir.path().join("grandchild.pid");
        let mut cmd = Command::new("bash");
        // The grandchild ignores nothing, but only the group signal can reach it.
        cmd.arg("-c").arg(format!(
            "sleep 30 & echo $! > {}; echo started; wait",
            pidfile.display()
        ));
        let mut children = vec![spawn("holder", cmd, &log).unwrap()];
        let t0 = Instant::now();
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "child never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(children[0].poll().is_none());
        let killed = stop_all(&mut children, Duration::from_secs(5));
        assert!(killed.is_empty(), "bash ends on SIGTERM: {killed:?}");
        let status = children[0].poll().unwrap();
        assert_eq!(describe(status), "was killed by signal 15 (SIGTERM)");
        // The grandchild is gone too (or a zombie about to be reaped by init).
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "grandchild {grandchild} still alive: {stat}"
        );
        assert_eq!(tail(&log, 5), vec!["started".to_string()]);
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("trap '' TERM; echo ready; while :; do sleep 0.05; done");
        let mut children = vec![spawn("stubborn", cmd, &dir.path().join("s.log")).unwrap()];
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let killed = stop_all(&mut children, Duration::from_millis(300));
        assert_eq!(killed, vec!["stubborn".to_string()]);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(
            describe(children[0].poll().unwrap()),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn an_attached_child_is_stopped_by_the_same_rule() {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("trap '' TERM; while :; do sleep 0.05; done");
        let mut children = vec![spawn_attached("engine", cmd).unwrap()];
        assert!(children[0].log().is_none());
        std::thread::sleep(Duration::from_millis(100));
        assert!(children[0].poll().is_none());
        let killed = stop_all(&mut children, Duration::from_millis(200));
        assert_eq!(killed, vec!["engine".to_string()]);
        assert_eq!(
            describe(children[0].poll().unwrap()),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn a_listening_port_is_told_apart_from_a_strangers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port), "our own socket");
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        let mut children = vec![spawn_attached("other", cmd).unwrap()];
        assert!(!listens_on(children[0].pid(), port), "not the child's");
        stop_all(&mut children, Duration::from_secs(1));
        drop(listener);
        assert!(!listens_on(std::process::id(), port), "closed");
    }

    #[test]
    fn tails_skip_blank_lines_and_keep_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        std::fs::write(&p, "a\n\nb\nc\n  \nd").unwrap();
        assert_eq!(tail(&p, 3), vec!["b", "c", "d"]);
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
    }
}
