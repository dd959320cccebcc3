//! A generated job script never executes a config value.
//!
//! Hostile strings (quotes, `$(...)`, backticks, newlines, spaces, globs, redirections) are put
//! into every config-derived field of a [`JobSpec`]; the script is run by bash with fake
//! `srun` and `scontrol` on PATH that record their argv and environment, and the fake `srun`
//! then runs each step's task (its prelude, `numactl`, a fake `disagg`) as a task would. The test
//! checks that no canary file was created, that the script passes `bash -n`, and that every value
//! reached the steps and the `disagg role` processes byte for byte, with upstream's UCX, cache
//! and NUMA settings applied. Values that must stand unquoted on an `#SBATCH` line are refused.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use disagg_launch::sbatch::{ContainerSpec, JobSpec, RenderError, RoleEnv, Ucx, render};
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
# Run the task as srun would on local rank 0: from the prelude, numactl or disagg on.
task=()
for a in "$@"; do
  if (( ${#task[@]} )) || [[ "$a" == bash || "$a" == numactl || "$a" == "$FAKE_DISAGG" ]]; then
    task+=("$a")
  fi
done
SLURM_LOCALID=0 "${task[@]}" || exit 99
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

/// `numactl -m NODES CMD...`: noted in the environment, then CMD.
const FAKE_NUMACTL: &str = "#!/bin/bash\nexport FAKE_NUMACTL=\"$1 $2\"\nshift 2\nexec \"$@\"\n";

/// `disagg role ROLE --run-dir DIR`: its arguments and environment, by role.
const FAKE_DISAGG: &str =
    "#!/bin/bash\nprintf '%s\\0' \"$@\" > \"$TASKS/$2.args\"\nenv -0 > \"$TASKS/$2.env\"\n";

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

fn split0(p: PathBuf) -> Vec<String> {
    let bytes = std::fs::read(p).unwrap();
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn env_map(kvs: Vec<String>) -> HashMap<String, String> {
    kvs.into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "args") {
            let args = split0(path.clone());
            let env = env_map(split0(path.with_extension("env")));
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
        j in hostile(), image in hostile(), mounts in hostile(), name in hostile(),
        dir in hostile(), note in hostile(), ucx in prop::option::of(hostile()),
        numa_bind in any::<bool>(), segment in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        let bin = tmp.path().join("bin");
        let rec = tmp.path().join("rec");
        let tasks = tmp.path().join("tasks");
        for d in [&bin, &rec, &tasks] {
            std::fs::create_dir_all(d).unwrap();
        }
        write_exe(&bin.join("srun"), FAKE_SRUN);
        write_exe(&bin.join("scontrol"), FAKE_SCONTROL);
        write_exe(&bin.join("numactl"), FAKE_NUMACTL);
        let disagg_bin = format!("{}/dis agg", tmp.path().display());
        write_exe(Path::new(&disagg_bin), FAKE_DISAGG);

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
            common: vec![("HOSTILE_J".into(), value(&j))],
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
            disagg_bin: disagg_bin.clone(),
            plan: &p,
            partition: None,
            account: None,
            time_limit: None,
            gres_gpus: false,
            sbatch_args: vec![],
            extra_args: vec!["--gres=gpu:4".into()],
            segment,
            ucx: ucx.as_ref().map_or(Ucx::Clear, |ix| Ucx::Transports(value(ix))),
            numa_bind,
            notes: vec![value(&note)],
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
            .env("TASKS", &tasks)
            .env("FAKE_DISAGG", &disagg_bin)
            // What a container image may set: cleared or replaced in every task.
            .env("UCX_TLS", "from-the-image")
            .env("UCX_NET_DEVICES", "mlx5_0:1")
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
            let mut v = vec![
                ("DISAGG_RUN_DIR", run_dir.clone()),
                ("DISAGG_SERVING_TYPE", role.to_string()),
                ("HOSTILE_J", value(&j)),
            ];
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
            let worker = role.starts_with("GEN") || role.starts_with("CTX");
            let has_mpi = r.args.iter().any(|a| a == "--mpi=pmix");
            prop_assert_eq!(has_mpi, worker, "MPI only on workers");

            // What the task ran: `disagg role ROLE --run-dir DIR`, with every value intact and
            // upstream's settings applied inside the task.
            let args = split0(tasks.join(format!("{role}.args")));
            prop_assert_eq!(&args, &["role".to_string(), role.clone(), "--run-dir".into(), run_dir.clone()]);
            let task = env_map(split0(tasks.join(format!("{role}.env"))));
            for (k, v) in expect_env(&role) {
                prop_assert_eq!(task.get(k), Some(&v), "{} in the task of {}", k, role);
            }
            match &ucx {
                None => {
                    prop_assert_eq!(task.get("UCX_TLS"), None);
                    prop_assert_eq!(task.get("UCX_NET_DEVICES"), None);
                }
                Some(ix) => {
                    prop_assert_eq!(task.get("UCX_TLS"), Some(&value(ix)));
                    prop_assert_eq!(task.get("UCX_NET_DEVICES").map(String::as_str), Some("mlx5_0:1"));
                }
            }
            let (jit, hf) = if worker {
                (Some("/tmp/flashinfer_jit_cache_0"), Some("/tmp/hf_home"))
            } else {
                (None, None)
            };
            prop_assert_eq!(task.get("FLASHINFER_JIT_DIR").map(String::as_str), jit);
            prop_assert_eq!(task.get("HF_HOME").map(String::as_str), hf);
            let numa = (worker && numa_bind).then_some("-m 0,1");
            prop_assert_eq!(task.get("FAKE_NUMACTL").map(String::as_str), numa, "numactl of {}", role);
        }
        prop_assert_eq!(script.contains("#SBATCH --segment=3\n"), segment);
    }

    /// `#SBATCH` lines are read by sbatch, not a shell: a value that would need quoting is
    /// refused, naming the setting, never written.
    #[test]
    fn sbatch_arguments_that_need_quoting_are_refused(arg in hostile()) {
        let p = plan(&PlanInput {
            gpus_per_node: 4,
            ctx: ServerGroup { count: 1, gpus: 4 },
            gen_: ServerGroup { count: 1, gpus: 4 },
            placement: Placement::Upstream,
            ranks: Default::default(),
            ports_from: None,
        }).unwrap();
        let value = build(&arg, Path::new("/tmp/canary"));
        let spec = JobSpec {
            test_name: "t".into(),
            job_name: "disagg-t".into(),
            run_dir: "/runs/t".into(),
            disagg_bin: "/bin/disagg".into(),
            plan: &p,
            partition: None,
            account: None,
            time_limit: None,
            gres_gpus: false,
            sbatch_args: vec![],
            extra_args: vec![value.clone()],
            segment: false,
            ucx: Ucx::Clear,
            numa_bind: false,
            notes: vec![],
            container: None,
            mpi: None,
            install: vec![],
            env: RoleEnv::default(),
            step_stagger_s: 0,
            teardown_grace_s: 1,
            settle_s: 0,
            generator: "test".into(),
        };
        let plain = value.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
        match render(&spec) {
            Ok(script) => {
                prop_assert!(plain, "{value:?} was written");
                let line = format!("\n#SBATCH {value}\n");
                prop_assert!(script.contains(&line));
            }
            Err(e) => {
                prop_assert!(!plain, "{value:?} was refused");
                prop_assert_eq!(e, RenderError::UnsafeSbatchValue { field: "slurm.extra_args", value });
            }
        }
    }
}
