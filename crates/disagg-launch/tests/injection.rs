//! A generated job script never executes a config value.
//!
//! Hostile strings (quotes, `$(...)`, backticks, newlines, spaces, globs, redirections) are put
//! into every config-derived field of a [`JobSpec`]; the script is run by bash with fake
//! `srun` and `scontrol` on PATH that record their argv and environment. The test checks that
//! no canary file was created, that the script passes `bash -n`, and that every value reached
//! the steps byte for byte.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use disagg_launch::sbatch::{ContainerSpec, JobSpec, RoleEnv, render};
use disagg_plan::{Placement, PlanInput, ServerGroup, plan};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "$(touch CANARY)",
    "`touch CANARY`",
    "'; touch CANARY; '",
    "\"; touch CANARY; \"",
    "\ntouch CANARY\n",
    "' \"",
    " ",
    "\\",
    "$HOME",
    "${PATH}",
    "*",
    "a b",
    "|| touch CANARY",
    "> CANARY",
    "<(touch CANARY)",
    "é",
    "x",
    "%",
    "!!",
    "#",
];

fn hostile() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..FRAGMENTS.len(), 1..6)
}

fn build(ix: &[usize], canary: &Path) -> String {
    ix.iter()
        .map(|&i| FRAGMENTS[i].replace("CANARY", &canary.display().to_string()))
        .collect()
}

const FAKE_SRUN: &str = r#"#!/bin/bash
f="$REC/$$"
printf '%s\0' "$@" > "$f.args"
env -0 > "$f.env"
# The benchmark ends the job once the three other steps have started (as the real one waits
# for the workers); every other step runs until it is told to stop.
for a in "$@"; do
  if [[ "$a" == BENCHMARK ]]; then
    for _ in $(seq 100); do
      (( $(ls "$REC" | grep -c '\.args$') >= 4 )) && exit 0
      sleep 0.05
    done
    exit 0
  fi
done
exec sleep 30
"#;

const FAKE_SCONTROL: &str = "#!/bin/bash\nprintf 'n1\\nn2\\nn3\\n'\n";

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let mut perm = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(path, perm).unwrap();
}

struct Record {
    args: Vec<String>,
    env: HashMap<String, String>,
}

fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "args") {
            let split = |p: PathBuf| -> Vec<String> {
                let bytes = std::fs::read(p).unwrap();
                bytes
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8(s.to_vec()).unwrap())
                    .collect()
            };
            let args = split(path.clone());
            let env = split(path.with_extension("env"))
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            out.push(Record { args, env });
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn config_values_are_data_not_code(
        w in hostile(), c in hostile(), g in hostile(), s in hostile(), b in hostile(),
        image in hostile(), mounts in hostile(), name in hostile(), dir in hostile(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        let bin = tmp.path().join("bin");
        let rec = tmp.path().join("rec");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&rec).unwrap();
        write_exe(&bin.join("srun"), FAKE_SRUN);
        write_exe(&bin.join("scontrol"), FAKE_SCONTROL);

        let p = plan(&PlanInput {
            gpus_per_node: 4,
            ctx: ServerGroup { count: 1, gpus: 4 },
            gen_: ServerGroup { count: 1, gpus: 8 },
            placement: Placement::Upstream,
            ranks: Default::default(),
            ports_from: None,
        }).unwrap();
        let value = |ix: &[usize]| build(ix, &canary);
        // A run directory with hostile characters, but inside the temp dir.
        let run_dir = format!("{}/run {}", tmp.path().display(), value(&dir).replace(['/', '.'], "_"));
        let env = RoleEnv {
            common: vec![],
            worker: vec![("HOSTILE_W".into(), value(&w))],
            ctx: vec![("HOSTILE_C".into(), value(&c))],
            gen_: vec![("HOSTILE_G".into(), value(&g))],
            server: vec![("HOSTILE_S".into(), value(&s))],
            benchmark: vec![("HOSTILE_B".into(), value(&b))],
        };
        let spec = JobSpec {
            test_name: value(&name),
            job_name: "disagg-test".into(),
            run_dir: run_dir.clone(),
            disagg_bin: format!("{}/dis agg", tmp.path().display()),
            plan: &p,
            partition: None,
            account: None,
            time_limit: None,
            gres_gpus: false,
            sbatch_args: vec![],
            container: Some(ContainerSpec {
                image: value(&image),
                mounts: Some(value(&mounts)),
                workdir: None,
            }),
            mpi: Some("pmix".into()),
            install: vec![],
            env: env.clone(),
            step_stagger_s: 0,
            teardown_grace_s: 5,
            settle_s: 0,
            generator: "test".into(),
        };
        let script = render(&spec).unwrap();
        let script_path = tmp.path().join("job.sbatch");
        std::fs::write(&script_path, &script).unwrap();

        let syntax = Command::new("bash").arg("-n").arg(&script_path).output().unwrap();
        prop_assert!(syntax.status.success(), "bash -n: {}", String::from_utf8_lossy(&syntax.stderr));

        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = Command::new("bash")
            .arg(&script_path)
            .env("PATH", path)
            .env("REC", &rec)
            .env("SLURM_JOB_ID", "42")
            .env("SLURM_JOB_NODELIST", "n[1-3]")
            .current_dir(tmp.path())
            .output()
            .unwrap();
        prop_assert!(out.status.success(), "job failed: {}", String::from_utf8_lossy(&out.stderr));
        prop_assert!(!canary.exists(), "a config value was executed:\n{script}");

        let recs = records(&rec);
        prop_assert_eq!(recs.len(), 4, "one srun per role");
        let expect_env = |role: &str| -> Vec<(&str, String)> {
            let mut v = vec![("DISAGG_RUN_DIR", run_dir.clone()), ("DISAGG_SERVING_TYPE", role.to_string())];
            match role {
                "GEN_0" => { v.push(("HOSTILE_W", value(&w))); v.push(("HOSTILE_G", value(&g))); }
                "CTX_0" => { v.push(("HOSTILE_W", value(&w))); v.push(("HOSTILE_C", value(&c))); }
                "DISAGG_SERVER" => v.push(("HOSTILE_S", value(&s))),
                _ => v.push(("HOSTILE_B", value(&b))),
            }
            v
        };
        for r in &recs {
            let n = r.args.len();
            prop_assert!(n >= 5);
            let role = r.args[n - 3].clone();
            prop_assert_eq!(&r.args[n - 5..], &[spec.disagg_bin.clone(), "role".into(), role.clone(), "--run-dir".into(), run_dir.clone()][..]);
            let image_arg = format!("--container-image={}", value(&image));
            let mounts_arg = format!("--container-mounts={}", value(&mounts));
            prop_assert!(r.args.contains(&image_arg), "image of {}", role);
            prop_assert!(r.args.contains(&mounts_arg), "mounts of {}", role);
            for (k, v) in expect_env(&role) {
                prop_assert_eq!(r.env.get(k), Some(&v), "{} of {}", k, role);
            }
            let has_mpi = r.args.iter().any(|a| a == "--mpi=pmix");
            prop_assert_eq!(has_mpi, role.starts_with("GEN") || role.starts_with("CTX"), "MPI only on workers");
        }
    }
}
