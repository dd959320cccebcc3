//! `osmem-server` (PyPI), an in-memory server speaking the OpenSearch API, for the tests of the
//! OpenSearch export and history: `$OSMEM_SERVER`, else installed once into a venv under the
//! temporary directory. Without it (no network, no `python3 -m venv`) the tests skip, unless
//! `DISAGG_REQUIRE_OSMEM` is set (CI sets it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port};

/// The osmem-server binary, or `None` (with a `SKIPPED` line) when it cannot be had.
pub fn osmem_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OSMEM_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return Some(p);
    }
    let venv = std::env::temp_dir().join("disagg-osmem-venv");
    let find = || {
        std::fs::read_dir(venv.join("lib"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("site-packages/osmem_server/bin/osmem-server"))
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "osmem-server"])
            .status()
            .is_ok_and(|s| s.success());
    let found = if ok { find() } else { None };
    if found.is_none() {
        assert!(
            std::env::var_os("DISAGG_REQUIRE_OSMEM").is_none(),
            "DISAGG_REQUIRE_OSMEM is set but osmem-server could not be installed"
        );
        eprintln!("SKIPPED: osmem-server not available (pip install osmem-server failed)");
    }
    found
}

/// A running osmem-server, killed when dropped.
#[derive(Debug)]
pub struct Osmem {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: ChildGuard,
}

impl Osmem {
    /// Start `bin` on a free loopback port and wait until it accepts connections (10 s).
    pub fn start(bin: &std::path::Path) -> Osmem {
        let port = free_port();
        let child = ChildGuard::new(
            Command::new(bin)
                .args([
                    "-addr",
                    &format!("127.0.0.1:{port}"),
                    "-no-stdin-watch",
                    "-no-ja",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("osmem-server starts"),
        );
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "osmem-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Osmem {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// Its process id (a test stops and continues it to play a server that hangs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
