//! Maps a validated [`TestConfig`] and a [`Cluster`] onto the settings the other crates take:
//! a [`PlanInput`] for planning, a [`JobSpec`] for the batch script.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use disagg_config::{Cluster, ClusterFile, ContainerRuntime, Mode, TestConfig, TestId};
use disagg_launch::sbatch::{ContainerSpec, JobSpec, RoleEnv};
use disagg_plan::{Placement, Plan, PlanInput, ServerGroup};

use crate::{Hint, InvalidInput};

/// Load a config given as a path, or as an upstream test id looked up under `config_dir`.
/// Warnings go to stderr; errors come back with every problem listed.
pub fn load_config(arg: &str, config_dir: &Path) -> anyhow::Result<TestConfig> {
    let as_path = Path::new(arg);
    let path = if as_path.exists() || !(arg.contains('[') || arg.starts_with("disagg")) {
        as_path.to_path_buf()
    } else {
        TestId::parse(arg)?.resolve(config_dir)?
    };
    let config = match TestConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            if let Some(d) = e.diagnostics() {
                eprint!("{d}");
                eprintln!();
            }
            return Err(e.into());
        }
    };
    if !config.warnings().0.is_empty() {
        eprint!("{}", config.warnings());
        eprintln!();
    }
    Ok(config)
}

/// The cluster file: `--clusters`, `$DISAGG_CLUSTERS`, else the XDG config location.
pub fn clusters_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("disagg").join("clusters.yaml")
}

/// Every cluster file: the main one (if it exists) and `clusters.d/*.yaml` beside it, in name
/// order (tools such as `scripts/local-slurm.sh` drop their profile there).
fn cluster_files(main: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if main.exists() {
        files.push(main.to_path_buf());
    }
    let dropins = main.parent().unwrap_or(Path::new(".")).join("clusters.d");
    if let Ok(entries) = std::fs::read_dir(&dropins) {
        let mut more: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// Load the named cluster, with the CI environment overrides applied.
pub fn load_cluster(flag: Option<&Path>, name: &str) -> anyhow::Result<Cluster> {
    let path = clusters_path(flag);
    let files = cluster_files(&path);
    if files.is_empty() {
        return Err(anyhow::Error::new(Hint(
            "write a cluster profile file there, pass --clusters FILE, or run scripts/local-slurm.sh up for a local one"
                .to_string(),
        ))
        .context(InvalidInput(format!(
            "cluster `{name}` requested but there is no cluster file at {} (nor a clusters.d/ beside it)",
            path.display()
        ))));
    }
    let mut found: Option<(PathBuf, ClusterFile)> = None;
    let mut known = Vec::new();
    for f in files {
        let file = match ClusterFile::load(&f) {
            Ok(file) => file,
            Err(e) => {
                if let Some(d) = e.diagnostics() {
                    eprint!("{d}");
                }
                return Err(e.into());
            }
        };
        known.extend(file.clusters.keys().cloned());
        if file.clusters.contains_key(name) {
            if let Some((first, _)) = &found {
                return Err(InvalidInput(format!(
                    "cluster `{name}` is defined twice: in {} and in {}; keep one",
                    first.display(),
                    f.display()
                ))
                .into());
            }
            found = Some((f, file));
        }
    }
    match found {
        Some((_, file)) => Ok(file.get(name, &|k| std::env::var(k).ok())?),
        None => Err(InvalidInput(format!(
            "no cluster `{name}` in {} or its clusters.d/; known: {}",
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
        .into()),
    }
}

/// Planning settings from the config; checked against the cluster's node size.
pub fn plan_input(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    placement: Placement,
) -> anyhow::Result<PlanInput> {
    let gpn = config.hardware().gpus_per_node;
    if let Some(c) = cluster {
        if let Some(cluster_gpn) = c.gpus_per_node {
            if gpn > cluster_gpn {
                return Err(InvalidInput(format!(
                    "{}: hardware.gpus_per_node is {gpn} but cluster `{}` has {cluster_gpn} GPUs per node",
                    config.path().display(),
                    c.name
                ))
                .into());
            }
            if gpn < cluster_gpn {
                eprintln!(
                    "warning: {}: hardware.gpus_per_node is {gpn}, cluster `{}` has {cluster_gpn}; planning with {gpn} as upstream CI does",
                    config.path().display(),
                    c.name
                );
            }
        }
    }
    Ok(PlanInput {
        gpus_per_node: gpn,
        ctx: ServerGroup {
            count: config.ctx_servers(),
            gpus: config.ctx().gpus(),
        },
        gen_: ServerGroup {
            count: config.hardware().num_gen_servers,
            gpus: config.gen_().gpus(),
        },
        placement,
    })
}

/// Make the plan, naming the config in any error.
pub fn make_plan(config: &TestConfig, input: &PlanInput) -> anyhow::Result<Plan> {
    disagg_plan::plan(input).with_context(|| format!("cannot plan {}", config.path().display()))
}

/// A Slurm job name: the config name (only characters sbatch takes unquoted) and a short hash
/// of the run directory, so two runs of one config never share a name.
pub fn job_name(config: &TestConfig, run_dir: &Path) -> String {
    let cleaned: String = config
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = run_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("disagg-{cleaned}-{hash:08x}")
}

/// The environment of each role: the config's strings, plus upstream's gen-only switches.
pub fn role_env(config: &TestConfig) -> RoleEnv {
    let env = config.environment();
    let mut role = RoleEnv {
        common: Vec::new(),
        worker: env.worker.clone(),
        ctx: env.ctx_worker.clone(),
        gen_: env.gen_worker.clone(),
        server: env.server.clone(),
        benchmark: env.benchmark.clone(),
    };
    let b = config.benchmark();
    if matches!(b.mode, Mode::GenOnly | Mode::GenOnlyNoContext) {
        // Upstream (submit.py, gen_only): the generation executor's fill gate opens at
        // `concurrency` queued requests; the coordinator skips the context phase.
        let first = b.concurrency.first().copied().unwrap_or(1);
        let gen_only = [
            ("TRTLLM_DISAGG_BENCHMARK_GEN_ONLY", "1".to_string()),
            ("TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP", "1".to_string()),
            ("TLLM_BENCHMARK_REQ_QUEUES_SIZE", first.to_string()),
        ];
        role.worker.splice(
            0..0,
            gen_only.iter().map(|(k, v)| ((*k).to_string(), v.clone())),
        );
        role.server
            .insert(0, ("TRTLLM_DISAGG_BENCHMARK_GEN_ONLY".into(), "1".into()));
    }
    role
}

/// Everything the batch script needs.
pub fn job_spec<'p>(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    plan: &'p Plan,
    run_dir: &Path,
    disagg_bin: &Path,
) -> JobSpec<'p> {
    let slurm = config.slurm();
    let container = cluster.and_then(|c| match (c.container.runtime, &c.container.image) {
        (ContainerRuntime::Pyxis, Some(image)) => Some(ContainerSpec {
            image: image.clone(),
            mounts: c.container.mounts.clone(),
            workdir: c.container.workdir.clone(),
        }),
        _ => None,
    });
    let stagger = if container.is_some() { 5 } else { 0 };
    JobSpec {
        test_name: config.name().to_string(),
        job_name: job_name(config, run_dir),
        run_dir: run_dir.display().to_string(),
        disagg_bin: disagg_bin.display().to_string(),
        plan,
        partition: cluster
            .and_then(|c| c.partition.clone())
            .or_else(|| slurm.partition.clone()),
        account: cluster
            .and_then(|c| c.account.clone())
            .or_else(|| slurm.account.clone()),
        time_limit: cluster
            .and_then(|c| c.time_limit.clone())
            .or_else(|| slurm.job_time.clone()),
        gres_gpus: cluster.is_some_and(|c| c.gres_gpus),
        sbatch_args: cluster.map(|c| c.sbatch_args.clone()).unwrap_or_default(),
        container,
        mpi: cluster.and_then(|c| c.mpi.clone()),
        install: cluster.map(|c| c.install.clone()).unwrap_or_default(),
        env: role_env(config),
        step_stagger_s: stagger,
        teardown_grace_s: 30,
        settle_s: 5,
        generator: format!("disagg {}", env!("CARGO_PKG_VERSION")),
    }
}
