//! `docs/config.md` (with `docs/workloads.md` for `workload:`) names every key our own config sections and cluster profiles accept: the
//! keys are read from what `disagg` itself says it knows (the `known keys:` hint of an unknown
//! key), so a key added to the code and not to the reference fails here.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::process::Command;

use crate::support::repo_root;

/// The keys `disagg` lists as known for each unknown key it reports in `stderr`, by YAML path of
/// the section (`engine`, `clusters.x.container`, ...).
fn known_keys(stderr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut section = None;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("error: ")
            && let Some(path) = rest.strip_suffix(".bogus: unknown key")
        {
            section = Some(path.to_string());
        }
        if let Some(keys) = line.trim().strip_prefix("hint: known keys: ")
            && let Some(s) = section.take()
        {
            out.push((s, keys.split(", ").map(str::to_string).collect()));
        }
    }
    out
}

fn stderr_of(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_disagg"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("DISAGG_CLUSTERS")
        .output()
        .unwrap();
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn the_config_reference_names_every_key_of_our_sections_and_of_cluster_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    let base = std::fs::read_to_string(repo_root().join("examples/local-sim.yaml")).unwrap();
    // Drop the example's own `engine:` section so that ours is the only one.
    let base: String = {
        let mut keep = Vec::new();
        let mut skipping = false;
        for line in base.lines() {
            if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
                skipping = line.starts_with("engine:");
            }
            if !skipping {
                keep.push(line);
            }
        }
        keep.join("\n")
    };
    std::fs::write(
        &config,
        format!(
            "{base}\nengine: {{bogus: 1, sim: {{bogus: 1}}}}\nrouter: {{bogus: 1}}\nresults: {{bogus: 1}}\n"
        ),
    )
    .unwrap();
    let mut sections = known_keys(&stderr_of(&["validate", "c.yaml"], dir.path()));
    // `workload:` takes one workload at a time: each is probed in a file of its own.
    for workload in ["", "shared_prefix", "multi_turn", "mooncake"] {
        let section = match workload {
            "" => "{bogus: 1}".to_string(),
            w => format!("{{{w}: {{bogus: 1}}}}"),
        };
        std::fs::write(&config, format!("{base}\nworkload: {section}\n")).unwrap();
        sections.extend(known_keys(&stderr_of(&["validate", "c.yaml"], dir.path())));
    }
    std::fs::write(
        dir.path().join("clusters.yaml"),
        "clusters:\n  x: {bogus: 1, container: {bogus: 1}}\n",
    )
    .unwrap();
    sections.extend(known_keys(&stderr_of(
        &[
            "--clusters",
            "clusters.yaml",
            "plan",
            repo_root()
                .join("examples/local-sim.yaml")
                .to_str()
                .unwrap(),
            "--cluster",
            "x",
        ],
        dir.path(),
    )));
    let names: Vec<&str> = sections.iter().map(|(s, _)| s.as_str()).collect();
    for want in [
        "engine",
        "engine.sim",
        "router",
        "results",
        "workload",
        "workload.shared_prefix",
        "workload.multi_turn",
        "workload.mooncake",
        "clusters.x",
        "clusters.x.container",
    ] {
        assert!(
            names.contains(&want),
            "no known-keys hint for {want}: {names:?}"
        );
    }
    // The reference, and the workloads page it sends `workload:`'s keys to.
    let reference = ["docs/config.md", "docs/workloads.md"]
        .map(|f| std::fs::read_to_string(repo_root().join(f)).unwrap())
        .join("\n");
    let mut missing = Vec::new();
    for (section, keys) in &sections {
        for key in keys {
            // Written as `key`, `section.key`, or inside a backticked list/mapping of keys.
            let quoted = [format!("`{key}`"), format!(".{key}`"), format!("{key}: ")];
            if !quoted.iter().any(|q| reference.contains(q.as_str())) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/config.md does not name these keys: {missing:?}"
    );
}
