//! Secrets (docs/RELIABILITY.md): a run whose config carries its own
//! `internal_request_auth_key` and whose environment carries an OpenSearch password, followed
//! by everything one does with a run — report, check, push, list, export. Every byte written
//! anywhere (the run directory, the store's directory, stdout and stderr of every command, the
//! documents in OpenSearch) is searched for both: the key is only in the files upstream keeps it
//! in, the password nowhere. The run directory is its owner's only.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use disagg_test_support::{Osmem, osmem_server};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml");

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(p);
            }
        }
    }
    found
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn no_secret_is_in_any_byte_a_run_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let unique = format!("{:x}", std::process::id() as u64 * 0x9e37_79b9);
    let key = format!("cfgkey{unique}0123456789abcdef");
    let password = format!("pw-{unique}-hunter2");
    let config = tmp.path().join("secret-sim.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string(EXAMPLE).unwrap()
            + &format!("internal_request_auth_key: \"{key}\"\n"),
    )
    .unwrap();
    let osmem = osmem_server().map(|bin| Osmem::start(&bin));
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let disagg = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_disagg"));
        c.env("XDG_DATA_HOME", &data)
            .env_remove("DISAGG_DB")
            .env("DISAGG_OPENSEARCH_USER", "ci")
            .env("DISAGG_OPENSEARCH_PASSWORD", &password)
            .env("DISAGG_OPENSEARCH_TIMEOUT", "5");
        match &osmem {
            Some(o) => c.env("DISAGG_OPENSEARCH_URL", &o.url),
            None => c.env_remove("DISAGG_OPENSEARCH_URL"),
        };
        c
    };
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let out = disagg()
        .arg("run")
        .arg(&config)
        .args(["--concurrency", "1,2", "--num-prompts", "2", "--osl", "4"])
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    outputs.push(("run".into(), out));
    for args in [
        vec!["report", "RUN", "--history"],
        vec!["check", "RUN"],
        vec!["results", "list"],
        vec!["results", "export", "--format", "json"],
        vec!["results", "export", "--format", "csv"],
        vec!["results", "show", "1"],
        vec!["results", "push"],
        vec!["status", "RUN"],
    ] {
        let mut c = disagg();
        for a in &args {
            if *a == "RUN" {
                c.arg(&run);
            } else {
                c.arg(a);
            }
        }
        outputs.push((args.join(" "), c.output().unwrap()));
    }
    // What the commands printed.
    for (what, o) in &outputs {
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(&key),
                "the key is in the {stream} of `{what}`"
            );
            assert!(
                !text.contains(&password),
                "the password is in the {stream} of `{what}`"
            );
        }
    }
    // Every file the run and the commands wrote: the key only where upstream keeps it (and in
    // the copy of the config that holds it), the password nowhere.
    let root = std::fs::canonicalize(&run).unwrap();
    let mut with_key = files_containing(tmp.path(), &key);
    with_key.sort();
    let mut allowed = vec![
        config.clone(),
        root.join("internal_request_auth_key.txt"),
        root.join("rendezvous/server_config.yaml"),
        root.join("secret-sim.yaml"),
    ];
    allowed.sort();
    let with_key: Vec<PathBuf> = with_key
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    assert_eq!(with_key, allowed, "files holding the key");
    assert_eq!(
        files_containing(tmp.path(), &password),
        Vec::<PathBuf>::new()
    );
    assert!(
        root.join("results/report.html").exists(),
        "the report was written"
    );
    // Only the owner can enter the run directory; the files with the key are the owner's only.
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("internal_request_auth_key.txt")), 0o600);
    assert_eq!(mode(&root.join("rendezvous/server_config.yaml")), 0o600);
    // What reached OpenSearch.
    if let Some(Osmem { url, .. }) = &osmem {
        let mut resp = ureq::post(&format!("{url}/_search"))
            .header("Content-Type", "application/json")
            .send(r#"{"size": 1000, "query": {"match_all": {}}}"#)
            .unwrap();
        let body = resp.body_mut().read_to_string().unwrap();
        assert!(body.contains("\"hits\""), "{body}");
        assert!(
            body.contains("s_config_name"),
            "the records went out: {body}"
        );
        assert!(!body.contains(&key), "the key went to OpenSearch");
        assert!(!body.contains(&password), "the password went to OpenSearch");
    }
}
