//! osmem-server, the OpenSearch-API-compatible server from PyPI the export tests run against:
//! found (`$OSMEM_SERVER`) or installed into a venv, and started on a free port.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use disagg_test_support::ChildGuard;

/// The osmem-server binary: `$OSMEM_SERVER`, else installed from PyPI into a venv once.
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

/// osmem-server started on a free port of 127.0.0.1: the guard and `http://127.0.0.1:PORT`.
pub fn start_osmem(bin: &Path) -> (ChildGuard, String) {
    let port = disagg_test_support::free_port();
    let server = ChildGuard::new(
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
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "osmem-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, format!("http://127.0.0.1:{port}"))
}
