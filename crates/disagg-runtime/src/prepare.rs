//! From a config (a file or an upstream test id) and the launcher's options to a run directory
//! laid out and ready for its roles: the config (its own file name: the name is the test's
//! identity), `run.json` and `plan.json`. Runs are never overwritten.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use disagg_config::{AuthKey, Cluster, EngineKind, Overrides, TestConfig};
use disagg_plan::{Placement, Plan, PlanInput, ServerGroup};
use serde::Serialize;

use crate::error::InvalidInput;
use crate::now_ms;
use crate::rundir::{RunDir, write_atomic};
use crate::spec::{RunSpec, SPEC_VERSION, Timeouts};

/// Load a config given as a path, or as an upstream test id looked up under `config_dir`.
/// Warnings go to stderr; errors come back with every problem listed (also on stderr).
pub fn load_config(arg: &str, config_dir: &Path) -> anyhow::Result<TestConfig> {
    let path = disagg_config::config_path(arg, config_dir)?;
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

/// The cluster profile `name` from the clusters file (`flag`, else `$DISAGG_CLUSTERS`, else the
/// XDG location) and its `clusters.d/`, with the CI environment overrides applied.
pub fn load_cluster(flag: Option<&Path>, name: &str) -> anyhow::Result<Cluster> {
    let env = |k: &str| std::env::var(k).ok();
    let main = disagg_config::clusters_path(flag, &env);
    disagg_config::load_cluster(&main, name, &env).map_err(|e| {
        if let Some(d) = e.diagnostics() {
            eprint!("{d}");
        }
        e.into()
    })
}

/// A run's config: the copy in its run directory, with the launcher's overrides.
pub fn load_run_config(run: &RunDir, spec: &RunSpec) -> anyhow::Result<TestConfig> {
    let path = run.root().join(&spec.config_file);
    let config = load_config(&path.display().to_string(), Path::new("."))?;
    Ok(config.with_overrides(&spec.overrides)?)
}

/// Planning settings from the config; checked against the cluster's node size.
pub fn plan_input(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    placement: Placement,
    engine: EngineKind,
) -> anyhow::Result<PlanInput> {
    let gpn = config.hardware().gpus_per_node;
    if let Some((c, cluster_gpn)) = cluster.and_then(|c| Some((c, c.gpus_per_node?))) {
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
        ranks: ranks_of(engine),
        // vLLM and SGLang servers need a KV port (and a rendezvous port across nodes); so do
        // servers that speak their hand-off (the sim with router.protocol vllm|sglang).
        ports_from: match (engine, crate::roles::handoff_of(engine, config)) {
            (EngineKind::Vllm | EngineKind::Sglang, _)
            | (_, Ok(disagg_router::HandOff::Vllm | disagg_router::HandOff::Sglang)) => Some(
                config
                    .extensions()
                    .engine
                    .as_ref()
                    .and_then(|e| e.ports_from)
                    .unwrap_or(default_ports_from(engine)),
            ),
            _ => None,
        },
    })
}

/// The engine a run starts: the one asked for, else the config's `engine.type`, else the sim.
pub fn engine_of(config: &TestConfig, asked: Option<EngineKind>) -> EngineKind {
    asked.unwrap_or_else(|| {
        config
            .extensions()
            .engine
            .as_ref()
            .map_or(EngineKind::Sim, |e| e.kind)
    })
}

/// Processes per server step: TensorRT-LLM runs one rank per GPU (its MPI launcher), vLLM and
/// SGLang one server process per node.
pub fn ranks_of(engine: EngineKind) -> disagg_plan::Ranks {
    match engine {
        EngineKind::Vllm | EngineKind::Sglang => disagg_plan::Ranks::PerNode,
        EngineKind::Sim | EngineKind::Trtllm | EngineKind::Command => disagg_plan::Ranks::PerGpu,
    }
}

/// The engine's own default KV port, where the plan's ports start unless `engine.ports_from`
/// says otherwise: vLLM's `VLLM_NIXL_SIDE_CHANNEL_PORT` (5600), SGLang's
/// `--disaggregation-bootstrap-port` (8998).
fn default_ports_from(engine: EngineKind) -> u16 {
    match engine {
        EngineKind::Sglang => 8998,
        _ => 5600,
    }
}

/// The plan of `config`, naming the config in any error.
pub fn make_plan(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    placement: Placement,
    engine: EngineKind,
) -> anyhow::Result<Plan> {
    let input = plan_input(config, cluster, placement, engine)?;
    disagg_plan::plan(&input).with_context(|| format!("cannot plan {}", config.path().display()))
}

/// `plan.json` and `disagg plan --json`: the plan and what it was made from.
#[derive(Serialize)]
pub struct PlanDoc<'a> {
    /// The config's name.
    pub config: &'a str,
    /// Its file.
    pub file: String,
    /// The benchmark mode.
    pub mode: &'static str,
    /// The cluster profile, when one was named.
    pub cluster: Option<&'a str>,
    /// The plan.
    #[serde(flatten)]
    pub plan: &'a Plan,
}

impl<'a> PlanDoc<'a> {
    /// The document of `plan`, made of `config`.
    pub fn new(config: &'a TestConfig, cluster: Option<&'a str>, plan: &'a Plan) -> PlanDoc<'a> {
        PlanDoc {
            config: config.name(),
            file: config.path().display().to_string(),
            mode: config.benchmark().mode.as_str(),
            cluster,
            plan,
        }
    }
}

/// How to run a test: what `disagg run`, `submit` and `ci` share.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Engine of the worker roles [default: the config's `engine.type`, else sim].
    pub engine: Option<EngineKind>,
    /// Changes to the config's benchmark and the sim.
    pub overrides: Overrides,
    /// How long an engine, the router or the benchmark may wait to be ready, s [default:
    /// upstream's `min(timeout, 3600)`, the sim's `min(timeout, 600)`; see [`Timeouts::upstream`]].
    pub ready_timeout: Option<f64>,
    /// Upstream's one `timeout`: the whole run, each request and the coordinator's `-t`/`-r`, s
    /// [default: `slurm.timeout`, else 10800].
    pub timeout: Option<f64>,
}

impl RunOptions {
    /// These options as `disagg run`/`submit` flags, for a launcher that starts runs as child
    /// processes (`disagg sweep`, `disagg ci --parallel`). The flags parse back into the same
    /// options; the order is fixed, so equal options give equal flags.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut flag = |name: &str, value: String| {
            a.push(name.to_string());
            a.push(value);
        };
        if let Some(e) = self.engine {
            flag("--engine", e.to_string());
        }
        let o = &self.overrides;
        if let Some(c) = &o.concurrency {
            let list: Vec<String> = c.iter().map(u32::to_string).collect();
            flag("--concurrency", list.join(","));
        }
        if let Some(n) = o.num_prompts {
            flag("--num-prompts", n.to_string());
        }
        if let Some(k) = o.multi_round {
            flag("--multi-round", k.to_string());
        }
        if let Some(v) = o.isl {
            flag("--isl", v.to_string());
        }
        if let Some(v) = o.osl {
            flag("--osl", v.to_string());
        }
        for (name, v) in &o.sim {
            flag("--sim", format!("{name}={v}"));
        }
        if let Some(t) = self.ready_timeout {
            flag("--ready-timeout", t.to_string());
        }
        if let Some(t) = self.timeout {
            flag("--timeout", t.to_string());
        }
        if o.aggregated {
            a.push("--aggregated".to_string());
        }
        a
    }
}

/// A run directory laid out and ready for its roles.
pub struct Prepared {
    /// The run directory.
    pub run: RunDir,
    /// Its `run.json`.
    pub spec: RunSpec,
    /// The config, overrides applied.
    pub config: TestConfig,
    /// The plan.
    pub plan: Plan,
    /// The cluster profile, when one was named.
    pub cluster: Option<Cluster>,
}

/// A run directory's default name: `<config>-<UTC time>`, under `root`.
pub fn default_run_dir(root: &Path, config: &TestConfig) -> PathBuf {
    let stamp = disagg_results::junit::iso8601(now_ms()).replace([':', '-'], "");
    root.join(format!("{}-{stamp}", config.name()))
}

/// A test to run, as the command line names it.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// A config file, or an upstream test id.
    pub config: String,
    /// Where test ids are looked up.
    pub config_dir: PathBuf,
    /// The run directory [default: `runs/CONFIG-UTCTIME`, or under the cluster's `run_root`].
    pub out: Option<PathBuf>,
    /// The clusters file (`--clusters`).
    pub clusters_file: Option<PathBuf>,
    /// The cluster profile.
    pub cluster: Option<String>,
    /// How to run it.
    pub options: RunOptions,
    /// The launcher this run is a child of (`disagg sweep`, `disagg ci --parallel`): when it
    /// dies, this process gets SIGTERM (a local run stops its roles, a submitted one cancels
    /// its job), so a killed launcher leaves nothing running.
    pub parent_pid: Option<u32>,
}

impl RunRequest {
    /// Load the config and the cluster, and lay out the run directory.
    pub fn prepare(&self, host: Option<String>) -> anyhow::Result<Prepared> {
        if let Some(parent) = self.parent_pid {
            if !crate::supervise::die_with_parent(nix::sys::signal::Signal::SIGTERM, parent) {
                anyhow::bail!("the launcher (pid {parent}) is gone; not starting the run");
            }
        }
        let config = load_config(&self.config, &self.config_dir)?;
        let cluster = match &self.cluster {
            Some(name) => Some((
                name.as_str(),
                load_cluster(self.clusters_file.as_deref(), name)?,
            )),
            None => None,
        };
        let dir = match (
            &self.out,
            cluster.as_ref().and_then(|(_, c)| c.run_root.as_ref()),
        ) {
            (Some(d), _) => d.clone(),
            (None, Some(root)) => default_run_dir(Path::new(root), &config),
            (None, None) => default_run_dir(Path::new("runs"), &config),
        };
        prepare(config, &self.options, cluster, &dir, host)
    }
}

/// Check the options, plan the config and lay out the run directory `dir`; `host`: the address
/// every role binds and advertises (`None`: all interfaces, found by node name, as on Slurm).
pub fn prepare(
    config: TestConfig,
    options: &RunOptions,
    cluster: Option<(&str, Cluster)>,
    dir: &Path,
    host: Option<String>,
) -> anyhow::Result<Prepared> {
    let env = |k: &str| std::env::var(k).ok();
    prepare_with_env(config, options, cluster, dir, host, &env)
}

/// [`prepare`], reading the launcher's environment through `env` (the readiness variables).
fn prepare_with_env(
    config: TestConfig,
    options: &RunOptions,
    cluster: Option<(&str, Cluster)>,
    dir: &Path,
    host: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Prepared> {
    let (cluster_name, cluster) = match cluster {
        Some((n, c)) => (Some(n), Some(c)),
        None => (None, None),
    };
    let engine = engine_of(&config, options.engine);
    let config = config.with_overrides(&options.overrides)?;
    // A local run (every role on this machine) needs its tools here, found before anything is
    // created; on Slurm every role checks its own on its node.
    if host.is_some() {
        let tools = crate::preflight::needed(&config, engine, true, true);
        crate::preflight::check_here(&config, &tools)?;
    }
    if config.profiling().nsys_on && !crate::preflight::profiles(engine) {
        eprintln!(
            "warning: {}: profiling.nsys_on is ignored with engine {engine}: only TensorRT-LLM \
             (and engine.command) workers answer TLLM_PROFILE_START_STOP",
            config.path().display()
        );
    }
    let router = config.extensions().router.clone().unwrap_or_default();
    if engine == EngineKind::Sglang && router.implementation == Some("trtllm") {
        return Err(InvalidInput(format!(
            "{}: router.implementation trtllm with engine sglang: trtllm-serve disaggregated speaks \
             only TensorRT-LLM's hand-off; drop router.implementation to use the built-in router",
            config.path().display()
        ))
        .into());
    }
    let handoff = crate::roles::handoff_of(engine, &config)
        .map_err(|e| InvalidInput(format!("{}: {e}", config.path().display())))?;
    let plan = make_plan(&config, cluster.as_ref(), Placement::Upstream, engine)?;
    let models_root = cluster.as_ref().and_then(|c| c.models_root.clone());
    let llm_root = cluster.as_ref().and_then(|c| c.llm_root.clone());
    check_worker_options(&config, engine, models_root.as_deref(), llm_root.as_deref())?;
    if dir.join("run.json").exists() {
        return Err(InvalidInput(format!(
            "{} already holds a run; give another --out (runs are never overwritten)",
            dir.display()
        ))
        .into());
    }
    let (dataset_path, workload) = datasets(&config, cluster.as_ref(), host.is_some())?;
    RunDir::create(dir)?;
    // Roles get absolute paths: they may run elsewhere (Slurm) or change directory.
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let run = RunDir::open(&dir);
    let file_name = config.path().file_name().map_or_else(
        || "config.yaml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = std::fs::read_to_string(config.path())
        .with_context(|| format!("cannot read {}", config.path().display()))?;
    write_atomic(&dir.join(&file_name), &text)?;
    // One internal-auth key per run, as upstream's harness makes one per test; the config's own
    // wins. Only the files upstream puts it in hold it: never run.json, a log or a record.
    let auth_key = match config.auth_key() {
        Some(own) => own.clone(),
        None => generate_auth_key()?,
    };
    run.write_auth_key(&auth_key)?;
    let (timeouts, warnings) = Timeouts::upstream(
        engine,
        config.slurm().timeout_s,
        options.ready_timeout,
        options.timeout,
        env,
    );
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let spec = RunSpec {
        spec_version: SPEC_VERSION,
        config_file: file_name,
        engine,
        host,
        overrides: options.overrides.clone(),
        timeouts,
        roles: plan.roles(),
        created_unix_ms: now_ms(),
        model_path: cluster.as_ref().and_then(|c| {
            let name = config.metadata().model_name.as_deref()?;
            Some(c.model_path(name))
        }),
        models_root,
        llm_root,
        dataset_path,
        workload,
        gpu_type: if engine == EngineKind::Sim {
            Some("sim".to_string())
        } else {
            cluster.as_ref().and_then(|c| c.gpu_type.clone())
        },
        router: Some(crate::spec::RouterRun {
            implementation: router.implementation.unwrap_or("disagg").to_string(),
            // Either coordinator runs what server_config.yaml says: the config's policy.
            policy: crate::roles::router_policy(&config, disagg_plan::ServerKind::Gen)
                .name()
                .to_string(),
            handoff: handoff.name().to_string(),
        }),
        servers: crate::spec::ServerRun::of(&plan),
    };
    spec.write(&run)?;
    let doc = PlanDoc::new(&config, cluster_name, &plan);
    write_atomic(
        &dir.join("plan.json"),
        &(serde_json::to_string_pretty(&doc)? + "\n"),
    )?;
    Ok(Prepared {
        run,
        spec,
        config,
        plan,
        cluster,
    })
}

/// A fresh key as upstream's `secrets.token_hex(32)` makes one: 32 bytes from the operating
/// system's random source, as 64 lower-case hex digits.
pub fn generate_auth_key() -> anyhow::Result<AuthKey> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot draw an internal_request_auth_key: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    AuthKey::new(hex).context("an empty key")
}

/// The options files the engines will read resolve (every relative path has its root), checked
/// before anything is created: a run never fails minutes in for a path it could have named now.
/// The simulator and the engines that take flags (vLLM, SGLang) read no options file.
fn check_worker_options(
    config: &TestConfig,
    engine: EngineKind,
    models: Option<&str>,
    llm: Option<&str>,
) -> anyhow::Result<()> {
    if !matches!(engine, EngineKind::Trtllm | EngineKind::Command) {
        return Ok(());
    }
    let roots = crate::options::Roots { models, llm };
    let mut kinds = vec![("gen", config.gen_())];
    if config.ctx_servers() > 0 {
        kinds.insert(0, ("ctx", config.ctx()));
    }
    for (kind, w) in kinds {
        crate::options::options_file(w, config.aggregated(), roots).map_err(|e| {
            InvalidInput(format!(
                "{}: worker_config.{kind}.{e}",
                config.path().display()
            ))
        })?;
    }
    Ok(())
}

/// The run's prompts, with their files where every role finds them: `benchmark.dataset_file`
/// under the models root, a `workload` trace relative to the config's folder. A file that
/// cannot be resolved, or (`local`: every role runs here) does not exist, is an input error:
/// upstream's client fails on it too, and random prompts would measure another test.
/// `--random-prompts` drops both before this point.
fn datasets(
    config: &TestConfig,
    cluster: Option<&Cluster>,
    local: bool,
) -> anyhow::Result<(Option<String>, Option<disagg_config::Workload>)> {
    let file = config.path().display();
    let dataset = match config.benchmark().dataset_file.as_deref() {
        None => None,
        Some(f) => Some(dataset_path(config, cluster).ok_or_else(|| {
            InvalidInput(format!(
                "{file}: benchmark.dataset_file `{f}` is relative to the models root, and no \
                 cluster gives one: pass --cluster with a models_root, write an absolute path, \
                 or pass --random-prompts to send random prompts of the config's lengths"
            ))
        })?),
    };
    let dir = std::path::absolute(config.path())
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let workload = config
        .extensions()
        .workload
        .as_ref()
        .map(|w| w.resolved(&dir));
    if local {
        let missing = |key: &str, path: &Path| {
            InvalidInput(format!(
                "{file}: {key} `{}` does not exist: fix the path, or pass --random-prompts to \
                 send random prompts of the config's lengths",
                path.display()
            ))
        };
        if let Some(p) = dataset.as_deref().map(Path::new).filter(|p| !p.exists()) {
            return Err(missing("benchmark.dataset_file", p).into());
        }
        if let Some(disagg_config::Dataset::Mooncake { path, .. }) =
            workload.as_ref().map(|w| &w.dataset)
        {
            if !path.exists() {
                return Err(missing("workload.mooncake.path", path).into());
            }
        }
    }
    Ok((dataset, workload))
}

/// `benchmark.dataset_file` under the cluster's models root (`CLUSTER_LLM_DATA`), as upstream
/// resolves it; an absolute path stays as is; without a models root only an absolute path works.
fn dataset_path(config: &TestConfig, cluster: Option<&Cluster>) -> Option<String> {
    let file = config.benchmark().dataset_file.as_deref()?;
    if file.starts_with('/') {
        return Some(file.to_string());
    }
    let root = cluster.and_then(|c| c.models_root.as_deref())?;
    Some(format!("{}/{file}", root.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(extra: &str) -> TestConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap()
        .replace(
            "  streaming: true\n",
            &format!("  streaming: true\n{extra}"),
        );
        TestConfig::parse(Path::new("x.yaml"), &text).unwrap()
    }

    #[test]
    fn datasets_resolve_under_the_models_root_as_upstream() {
        let config = example("  dataset_file: datasets/sharegpt.json\n");
        assert_eq!(
            dataset_path(&config, None),
            None,
            "no models root, no dataset"
        );
        let mut cluster = disagg_config::ClusterFile::parse(
            Path::new("c.yaml"),
            "clusters:\n  c:\n    models_root: /lustre/models/\n",
        )
        .unwrap()
        .clusters["c"]
            .clone();
        assert_eq!(
            dataset_path(&config, Some(&cluster)).as_deref(),
            Some("/lustre/models/datasets/sharegpt.json")
        );
        cluster = cluster.with_env(&|k| (k == "CLUSTER_LLM_DATA").then(|| "/data".to_string()));
        assert_eq!(
            dataset_path(&config, Some(&cluster)).as_deref(),
            Some("/data/datasets/sharegpt.json")
        );
    }

    #[test]
    fn an_unresolvable_worker_path_stops_the_run_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap()
        .replace(
            "    stream_interval: 1\n",
            "    stream_interval: 1\n    speculative_config: {decoding_type: Eagle3, max_draft_len: 3, speculative_model: EAGLE3-8B}\n",
        );
        let src = dir.path().join("x.yaml");
        std::fs::write(&src, text).unwrap();
        let config = TestConfig::load(&src).unwrap();
        let trtllm = RunOptions {
            engine: Some(EngineKind::Trtllm),
            ..RunOptions::default()
        };
        let out = dir.path().join("run");
        let e = prepare(config.clone(), &trtllm, None, &out, None)
            .err()
            .unwrap();
        assert!(e.downcast_ref::<InvalidInput>().is_some(), "{e:#}");
        assert!(
            e.to_string().starts_with(&format!(
                "{}: worker_config.gen.speculative_config.speculative_model `EAGLE3-8B` is relative to the models root",
                src.display()
            )),
            "{e}"
        );
        assert!(!out.exists(), "nothing was created");
        // With a models root it runs, and run.json carries the root for the workers.
        let cluster = disagg_config::ClusterFile::parse(
            Path::new("c.yaml"),
            "clusters:\n  c:\n    models_root: /lustre/models\n    llm_root: /src/trtllm\n",
        )
        .unwrap()
        .clusters["c"]
            .clone();
        let p = prepare(config.clone(), &trtllm, Some(("c", cluster)), &out, None).unwrap();
        assert_eq!(p.spec.models_root.as_deref(), Some("/lustre/models"));
        assert_eq!(p.spec.llm_root.as_deref(), Some("/src/trtllm"));
        // The simulator reads no options file: nothing to resolve.
        let sim = dir.path().join("sim");
        prepare(config, &RunOptions::default(), None, &sim, None).unwrap();
    }

    #[test]
    fn run_options_give_the_flags_that_ask_for_them() {
        let options = RunOptions {
            engine: Some(EngineKind::Sim),
            overrides: Overrides {
                concurrency: Some(vec![1, 8]),
                num_prompts: Some(4),
                isl: Some(16),
                sim: vec![("decode_step_base_ms".into(), 2.5)],
                aggregated: true,
                ..Overrides::default()
            },
            ready_timeout: None,
            timeout: Some(60.0),
        };
        assert_eq!(
            options.args().join(" "),
            "--engine sim --concurrency 1,8 --num-prompts 4 --isl 16 --sim decode_step_base_ms=2.5 --timeout 60 --aggregated"
        );
        assert!(RunOptions::default().args().is_empty());
    }

    #[test]
    fn a_prepared_run_records_what_will_run_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("local-sim.yaml");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/local-sim.yaml"),
            &src,
        )
        .unwrap();
        let config = TestConfig::load(&src).unwrap();
        let options = RunOptions {
            overrides: Overrides {
                concurrency: Some(vec![2]),
                ..Overrides::default()
            },
            ..RunOptions::default()
        };
        let out = dir.path().join("run");
        let p = prepare(
            config.clone(),
            &options,
            None,
            &out,
            Some("127.0.0.1".into()),
        )
        .unwrap();
        assert_eq!(p.spec.engine, EngineKind::Sim);
        assert_eq!(p.config.benchmark().concurrency, [2]);
        assert_eq!(p.spec.roles.last(), Some(&disagg_plan::Role::Benchmark));
        let router = p.spec.router.clone().unwrap();
        assert_eq!(
            (router.implementation.as_str(), router.policy.as_str()),
            ("disagg", "round_robin")
        );
        let back = RunSpec::read(&p.run).unwrap();
        assert_eq!(back, p.spec);
        assert!(out.join("local-sim.yaml").exists() && out.join("plan.json").exists());
        let again = prepare(config, &options, None, &out, None).err().unwrap();
        assert!(again.to_string().contains("already holds a run"), "{again}");
    }

    #[test]
    fn a_run_gets_a_fresh_key_unless_its_config_brings_one() {
        let dir = tempfile::tempdir().unwrap();
        let keyed = dir.path().join("keyed.yaml");
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap();
        std::fs::write(
            &keyed,
            format!("{text}\ninternal_request_auth_key: \"own-key\"\n"),
        )
        .unwrap();
        let p = prepare(
            TestConfig::load(&keyed).unwrap(),
            &RunOptions::default(),
            None,
            &dir.path().join("a"),
            None,
        )
        .unwrap();
        assert_eq!(p.run.auth_key().unwrap().expose_secret(), "own-key");
        let (k1, k2) = (generate_auth_key().unwrap(), generate_auth_key().unwrap());
        assert_ne!(k1, k2);
        assert_eq!(k1.expose_secret().len(), 64);
    }

    /// A DeepSeek-R1 GB200 config without `slurm.timeout`, on TensorRT-LLM: upstream's values
    /// in run.json and on the coordinator's command line, not our old local defaults (600 s
    /// ready, 3600 s overall), which would end the run where upstream still waits.
    #[test]
    fn a_gb200_deepseek_r1_config_gets_upstreams_timeouts() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/trtllm-configs/disaggregated/",
            "gb200_deepseek-r1-fp4_1k1k_con1024_ctx1_dep4_gen1_dep8_eplb0_mtp0_ccb-NIXL.yaml"
        );
        let config = TestConfig::load(Path::new(fixture)).unwrap();
        assert_eq!(config.slurm().timeout_s, None, "upstream's default applies");
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            engine: Some(EngineKind::Trtllm),
            // Its dataset lives under a cluster's models root.
            overrides: Overrides {
                random_prompts: true,
                ..Overrides::default()
            },
            ..RunOptions::default()
        };
        let no_env = |_: &str| None;
        let p = prepare_with_env(
            config.clone(),
            &options,
            None,
            &dir.path().join("a"),
            None,
            &no_env,
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.run.root().join("run.json")).unwrap())
                .unwrap();
        assert_eq!(json["timeouts"]["ready_s"], 3600.0);
        assert_eq!(json["timeouts"]["request_s"], 10800.0);
        assert_eq!(json["timeouts"]["run_s"], 10800.0);
        let ext = p.config.extensions().router.clone().unwrap_or_default();
        let argv = crate::roles::coordinator_argv(
            &p.run.server_config_file(),
            crate::roles::coordinator_timeouts(&p.spec, &ext),
        );
        assert_eq!(argv[4..], ["-t", "10800", "-r", "10800"]);
        // The readiness variables, as upstream reads them.
        let env = |k: &str| (k == "TRTLLM_TEST_SERVER_READY_TIMEOUT").then(|| "5400".to_string());
        let p =
            prepare_with_env(config, &options, None, &dir.path().join("b"), None, &env).unwrap();
        assert_eq!(p.spec.timeouts.ready_s, 5400.0);
    }
}
