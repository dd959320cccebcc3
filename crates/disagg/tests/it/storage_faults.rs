//! Storage faults (docs/RELIABILITY.md): the run directory on a filesystem that fills up
//! mid-run, the results store's writer killed with SIGKILL while it writes, the same run
//! imported twice. Nothing is truncated, nothing is half-stored, nothing is stored twice, and a
//! full disk is named as the cause.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use disagg_test_support::ChildGuard;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

fn disagg(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
    c.env("DISAGG_DB", db)
        .env_remove("DISAGG_OPENSEARCH_URL")
        .env_remove("DISAGG_PRE_MERGE");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `PRAGMA integrity_check` of a store, and how many records each run directory has in it.
fn integrity_and_counts(db: &Path) -> (String, std::collections::BTreeMap<String, i64>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let has_runs: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'runs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut counts = std::collections::BTreeMap::new();
    if has_runs {
        let mut stmt = conn
            .prepare("SELECT run_dir, count(*) FROM runs GROUP BY run_dir")
            .unwrap();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
        {
            let (dir, n) = row.unwrap();
            counts.insert(dir, n);
        }
    }
    (check, counts)
}

/// A finished run of three concurrencies, not stored (`--no-store`): what the store tests import.
fn finished_run(dir: &Path) -> PathBuf {
    let run = dir.join("base");
    let out = disagg(&dir.join("unused.sqlite"))
        .args([
            "run",
            EXAMPLE,
            "--concurrency",
            "1,2,3",
            "--num-prompts",
            "3",
        ])
        .args(["--isl", "16", "--osl", "4", "--no-store", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::canonicalize(run).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The store's writer (`disagg results import`) killed with SIGKILL at 100 points spread over
/// its life: after each kill the database passes `PRAGMA integrity_check`, every import that
/// finished is there whole, and no run is there in part (all its records are one transaction).
#[test]
fn the_store_writer_killed_100_times_leaves_no_partial_run() {
    let tmp = tempfile::tempdir().unwrap();
    let base = finished_run(tmp.path());
    let db = tmp.path().join("results.sqlite");
    let runs: Vec<PathBuf> = (0..100)
        .map(|i| {
            let d = tmp.path().join(format!("r{i:03}"));
            copy_dir(&base, &d);
            d
        })
        .collect();
    // How long an import takes here, so the kills land all over it.
    let t0 = Instant::now();
    let warm = disagg(&db)
        .args(["results", "import"])
        .arg(&base)
        .output()
        .unwrap();
    assert_eq!(warm.status.code(), Some(0), "{}", text(&warm));
    let span = t0.elapsed().max(Duration::from_millis(5));
    let mut finished = Vec::new();
    let mut killed = 0;
    for (i, run) in runs.iter().enumerate() {
        let mut child = ChildGuard::new(
            disagg(&db)
                .args(["results", "import"])
                .arg(run)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // A spread of points from the start to a little past the usual end (Knuth's
        // multiplicative hash of i, so the points are scattered but the same every run).
        let frac = f64::from((i as u32).wrapping_mul(2_654_435_761) % 1000) / 1000.0;
        std::thread::sleep(span.mul_f64(frac * 1.2));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            finished.push(run.display().to_string());
        } else {
            killed += 1;
        }
        let (check, counts) = integrity_and_counts(&db);
        assert_eq!(check, "ok", "after kill {i}");
        for (dir, n) in &counts {
            assert_eq!(*n, 3, "after kill {i}: {dir} stored in part");
        }
        for dir in &finished {
            assert_eq!(counts.get(dir), Some(&3), "after kill {i}: {dir} lost");
        }
    }
    assert!(killed >= 10, "only {killed} of 100 imports were killed");
    eprintln!(
        "{killed} of 100 imports killed mid-way, {} finished",
        finished.len()
    );
    // Importing everything again afterwards stores each run once, whole.
    for run in &runs {
        let out = disagg(&db)
            .args(["results", "import"])
            .arg(run)
            .output()
            .unwrap();
        assert!(text(&out).contains("stored 3 record(s)"), "{}", text(&out));
    }
    let (check, counts) = integrity_and_counts(&db);
    assert_eq!(check, "ok");
    assert_eq!(counts.len(), 101);
    assert!(counts.values().all(|&n| n == 3), "{counts:?}");
}

/// The same run directory imported twice (and once more through a symlink): stored once.
#[test]
fn importing_a_run_twice_stores_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let base = finished_run(tmp.path());
    let db = tmp.path().join("results.sqlite");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&base, &link).unwrap();
    for dir in [&base, &base, &link] {
        let out = disagg(&db)
            .args(["results", "import"])
            .arg(dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("stored 3 record(s)"), "{}", text(&out));
    }
    let (check, counts) = integrity_and_counts(&db);
    assert_eq!(check, "ok");
    assert_eq!(
        counts,
        [(base.display().to_string(), 3)].into_iter().collect()
    );
}

/// A tmpfs this test mounts and unmounts itself (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason) when this process cannot mount one.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let uid = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root".to_string());
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so a process still holding a file cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem of `dir` with one file until the kernel says no more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // The last partial block.
    while f.write_all(&block[..512]).is_ok() {}
    path
}

/// The run directory and the store on a 4 MB tmpfs that fills up while the benchmark runs: the
/// run ends within seconds naming the full filesystem and the file it could not write, every
/// JSON file left is whole, no temporary is left behind, the store passes its integrity check,
/// and once space is freed `disagg results import` stores what was written.
#[test]
fn a_run_directory_whose_disk_fills_mid_run_fails_fast_and_truncates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = match Tmpfs::mount(&tmp.path().join("mnt"), "4m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: a tmpfs is needed to fill a disk ({why})");
            return;
        }
    };
    let run = mnt.0.join("run");
    let db = mnt.0.join("results.sqlite");
    let err = std::fs::File::create(tmp.path().join("stderr")).unwrap();
    let mut p = ChildGuard::new(
        disagg(&db)
            .args([
                "run",
                EXAMPLE,
                "--concurrency",
                "2,4",
                "--num-prompts",
                "40",
            ])
            .args(["--osl", "256", "--out"])
            .arg(&run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let bench_running = || {
        std::fs::read_to_string(run.join("rendezvous/BENCHMARK.json"))
            .is_ok_and(|t| t.contains("\"ready\""))
    };
    while !bench_running() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no benchmark");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let filler = fill(&mnt.0);
    let filled = Instant::now();
    let code = loop {
        if let Some(s) = p.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            filled.elapsed() < Duration::from_secs(30),
            "the run went on for 30 s on a full disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = filled.elapsed();
    let stderr = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the cause is named: {stderr}"
    );
    assert!(
        stderr.contains(&format!("the filesystem of {} is full", run.display())),
        "the path is named: {stderr}"
    );
    for f in files(&run) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "a temporary was left: {name}");
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "{} is not whole JSON: {text:?}",
                f.display()
            );
        }
    }
    if db.exists() {
        assert_eq!(integrity_and_counts(&db).0, "ok");
    }
    // Space again: what was written is stored.
    std::fs::remove_file(filler).unwrap();
    let written = files(&run.join("results"))
        .iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy();
            n.starts_with("con") && n.ends_with(".json")
        })
        .count();
    let import = disagg(&db)
        .args(["results", "import"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(import.status.code(), Some(0), "{}", text(&import));
    assert!(
        text(&import).contains(&format!("stored {written} record(s)")),
        "{}",
        text(&import)
    );
    assert_eq!(integrity_and_counts(&db).0, "ok");
    eprintln!("full disk noticed {took:?} after the fill");
}
