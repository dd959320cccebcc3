//! Cluster profiles: a file of named clusters, with the upstream CI's environment overrides.
//!
//! ```yaml
//! clusters:
//!   gb200:
//!     partition: batch
//!     account: my_account
//!     gpus_per_node: 4
//!     gpu_type: GB200
//!     time_limit: "02:00:00"
//!     container: {runtime: pyxis, image: nvcr.io/nvidia/tensorrt-llm:1.2, mounts: /lustre:/lustre}
//!     mpi: pmix
//!     models_root: /lustre/models
//!     models: {deepseek_r1_0528_fp4_v2: DeepSeek-R1/DeepSeek-R1-0528-FP4-v2}
//!     segment: true
//!     sbatch_args: ["--exclusive"]
//!     install: ["pip install tensorrt_llm==1.2"]
//!     env: {NCCL_DEBUG: WARN}
//!     gen_env: {TLLM_LOG_LEVEL: INFO}
//! ```
//!
//! Environment: `env` goes to every step of the job, `worker_env` to every worker (context and
//! generation), `ctx_env`/`gen_env`/`server_env`/`benchmark_env` to the one kind of step. Within
//! a level a profile's variable comes after the test config's, so the profile wins where both
//! set one; a step's own variables come after the job-wide ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ConfigError;
use crate::diag::Sink;
use crate::envvars::is_env_name;
use crate::reader::{self, MapRef, Need};
use crate::yaml::{Node, Scalar, Value};

/// How steps run their command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRuntime {
    /// On the node as is.
    #[default]
    None,
    /// In a container through the pyxis SPANK plugin (`srun --container-image ...`).
    Pyxis,
}

/// Container settings of a cluster.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Container {
    /// Runtime.
    pub runtime: ContainerRuntime,
    /// Image (`DOCKER_IMAGE` overrides).
    pub image: Option<String>,
    /// `src:dst[,src:dst]`.
    pub mounts: Option<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
}

/// One cluster.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Cluster {
    /// Profile name.
    pub name: String,
    /// Slurm partition (`CLUSTER_PARTITION` overrides).
    pub partition: Option<String>,
    /// Slurm account (`CLUSTER_ACCOUNT` overrides).
    pub account: Option<String>,
    /// GPUs per node, if the profile pins it.
    pub gpus_per_node: Option<u32>,
    /// GPU type reported with results.
    pub gpu_type: Option<String>,
    /// Job time limit.
    pub time_limit: Option<String>,
    /// Request GPUs with `--gpus-per-node` (clusters with GPU GRES).
    pub gres_gpus: bool,
    /// Containers.
    pub container: Container,
    /// `--mpi=` value for worker steps (`MPI_TYPE` overrides); `None` for no flag.
    pub mpi: Option<String>,
    /// Models root (`CLUSTER_LLM_DATA` overrides).
    pub models_root: Option<String>,
    /// Model key → path under the models root.
    pub models: BTreeMap<String, String>,
    /// The TensorRT-LLM source tree on the nodes (`LLM_ROOT` overrides): relative offline-EPLB
    /// files (`moe_config.load_balancer`) resolve under it, as upstream's `get_llm_root()`.
    pub llm_root: Option<String>,
    /// Extra `#SBATCH` arguments.
    pub sbatch_args: Vec<String>,
    /// Commands run once per node before the roles start.
    pub install: Vec<String>,
    /// Directory on the shared filesystem where run directories are created.
    pub run_root: Option<String>,
    /// `SLURM_CONF` for the Slurm commands (a local or a second cluster); `None` = the default.
    pub slurm_conf: Option<String>,
    /// The cluster has a block topology (GB200/GB300 NVL72 racks): jobs may ask for
    /// `--segment`, which the test config's `slurm.set_segment` turns on as upstream does.
    pub segment: bool,
    /// Environment of every step, in file order.
    pub env: Vec<(String, String)>,
    /// Environment of every worker step (context and generation), after `env`.
    pub worker_env: Vec<(String, String)>,
    /// Environment of context worker steps, after `worker_env`.
    pub ctx_env: Vec<(String, String)>,
    /// Environment of generation worker steps, after `worker_env`.
    pub gen_env: Vec<(String, String)>,
    /// Environment of the coordinator step.
    pub server_env: Vec<(String, String)>,
    /// Environment of the benchmark step.
    pub benchmark_env: Vec<(String, String)>,
}

const CLUSTER_KEYS: &[&str] = &[
    "partition",
    "account",
    "gpus_per_node",
    "gpu_type",
    "time_limit",
    "gres_gpus",
    "container",
    "mpi",
    "models_root",
    "models",
    "llm_root",
    "sbatch_args",
    "install",
    "run_root",
    "slurm_conf",
    "segment",
    "env",
    "worker_env",
    "ctx_env",
    "gen_env",
    "server_env",
    "benchmark_env",
];

/// Variables every step gets from the job itself; a profile may not set them.
const RESERVED_ENV: &[&str] = &["DISAGG_SERVING_TYPE", "DISAGG_RUN_DIR"];

/// A file of clusters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// By name.
    pub clusters: BTreeMap<String, Cluster>,
}

impl ClusterFile {
    /// Read and validate a cluster file.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let text = reader::read_file(path)?;
        ClusterFile::parse(path, &text)
    }

    /// Validate cluster-file text.
    pub fn parse(path: &Path, text: &str) -> Result<ClusterFile, ConfigError> {
        let (mut sink, root) = reader::load_yaml(Sink::new(path), text)?;
        let top = MapRef {
            node: &root,
            path: "",
        };
        reader::check_keys(&mut sink, top, &["clusters"], true);
        let mut clusters = BTreeMap::new();
        match reader::section(&mut sink, top, "clusters", "clusters") {
            Some(cs) => {
                for (key, node) in cs.node.as_map().unwrap_or_default() {
                    let path = format!("clusters.{}", key.text);
                    if node.as_map().is_none() {
                        sink.error(
                            Some(node.pos),
                            &path,
                            Some(node.display()),
                            "a cluster must be a mapping",
                            "write the cluster's settings as indented key: value lines",
                        );
                        continue;
                    }
                    let cluster = read_cluster(&mut sink, MapRef { node, path: &path }, &key.text);
                    clusters.insert(key.text.clone(), cluster);
                }
            }
            None => sink.error(
                Some(root.pos),
                "clusters",
                None,
                "required section `clusters` is missing",
                "start the file with `clusters:` and one named cluster under it",
            ),
        }
        let diagnostics = sink.finish();
        if diagnostics.has_errors() {
            return Err(ConfigError::Invalid(diagnostics));
        }
        Ok(ClusterFile {
            path: path.to_path_buf(),
            clusters,
        })
    }

    /// The cluster called `name`, with the environment overrides applied.
    pub fn get(
        &self,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Cluster, ConfigError> {
        let cluster = self
            .clusters
            .get(name)
            .ok_or_else(|| ConfigError::UnknownCluster {
                name: name.to_string(),
                file: self.path.clone(),
                known: self.clusters.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        Ok(cluster.clone().with_env(env))
    }
}

/// The main cluster file: `flag` (`--clusters`, `$DISAGG_CLUSTERS`), else
/// `$XDG_CONFIG_HOME/disagg/clusters.yaml` (`~/.config` when unset).
pub fn clusters_path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("disagg").join("clusters.yaml")
}

/// Every cluster file: the main one (if it exists) and `clusters.d/*.yaml` beside it, in name
/// order (tools such as `scripts/local-slurm.sh` drop their profile there).
pub fn cluster_files(main: &Path) -> Vec<PathBuf> {
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

/// The cluster `name` from the main file `main` and its `clusters.d/`, with the CI
/// environment overrides applied. A name defined in two files is an error.
pub fn load_cluster(
    main: &Path,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Cluster, ConfigError> {
    let files = cluster_files(main);
    if files.is_empty() {
        return Err(ConfigError::NoClusterFile {
            name: name.to_string(),
            path: main.to_path_buf(),
        });
    }
    let mut found: Option<(PathBuf, ClusterFile)> = None;
    let mut known = Vec::new();
    for f in files {
        let file = ClusterFile::load(&f)?;
        known.extend(file.clusters.keys().cloned());
        if file.clusters.contains_key(name) {
            if let Some((first, _)) = &found {
                return Err(ConfigError::DuplicateCluster {
                    name: name.to_string(),
                    first: first.clone(),
                    second: f,
                });
            }
            found = Some((f, file));
        }
    }
    match found {
        Some((_, file)) => file.get(name, env),
        None => Err(ConfigError::UnknownCluster {
            name: name.to_string(),
            file: main.to_path_buf(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        }),
    }
}

impl Cluster {
    /// Apply the upstream CI's environment overrides: `CLUSTER_PARTITION`, `CLUSTER_ACCOUNT`,
    /// `CLUSTER_LLM_DATA`, `LLM_ROOT`, `DOCKER_IMAGE`, `MPI_TYPE`. Empty values are ignored.
    pub fn with_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Cluster {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(v) = get("CLUSTER_PARTITION") {
            self.partition = Some(v);
        }
        if let Some(v) = get("CLUSTER_ACCOUNT") {
            self.account = Some(v);
        }
        if let Some(v) = get("CLUSTER_LLM_DATA") {
            self.models_root = Some(v);
        }
        if let Some(v) = get("LLM_ROOT") {
            self.llm_root = Some(v);
        }
        if let Some(v) = get("DOCKER_IMAGE") {
            self.container.image = Some(v);
        }
        if let Some(v) = get("MPI_TYPE") {
            self.mpi = if v == "none" { None } else { Some(v) };
        }
        self
    }

    /// Where a model key resolves: `models_root/models[key]`, else the key itself (a path or a
    /// hub id), as upstream does.
    pub fn model_path(&self, model_name: &str) -> String {
        match (self.models.get(model_name), &self.models_root) {
            (Some(rel), Some(root)) => format!("{}/{}", root.trim_end_matches('/'), rel),
            (Some(rel), None) => rel.clone(),
            (None, _) => model_name.to_string(),
        }
    }
}

fn string_list(sink: &mut Sink, map: MapRef<'_>, key: &str) -> Vec<String> {
    let Some(node) = map.get(key) else {
        return Vec::new();
    };
    let path = reader::join(map.path, key);
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Scalar { .. } => vec![node],
        Value::Map(_) => {
            sink.error(
                Some(node.pos),
                &path,
                Some(node.display()),
                "expected a list of strings",
                "write one item per line, each starting with `- `",
            );
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter_map(|n| match &n.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                sink.error(
                    Some(n.pos),
                    &path,
                    Some(n.display()),
                    "expected a string",
                    "each item is one string",
                );
                None
            }
        })
        .collect()
}

/// An environment section: `NAME: value` lines, scalar values kept as written.
fn env_section(sink: &mut Sink, c: MapRef<'_>, key: &str) -> Vec<(String, String)> {
    let path = reader::join(c.path, key);
    let Some(map) = reader::section(sink, c, key, &path) else {
        return Vec::new();
    };
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, node) in map.node.as_map().unwrap_or_default() {
        let var_path = reader::join(&path, &k.text);
        if !is_env_name(&k.text) {
            sink.error(
                Some(k.pos),
                &var_path,
                None,
                "not an environment variable name",
                "use letters, digits and _, not starting with a digit",
            );
            continue;
        }
        if RESERVED_ENV.contains(&k.text.as_str()) {
            sink.error(
                Some(k.pos),
                &var_path,
                None,
                "set by disagg for every step",
                "remove it: the job sets it to the step's role and run directory",
            );
            continue;
        }
        let value = match &node.value {
            Value::Scalar { text, .. } if node.scalar() != Some(Scalar::Null) => text.clone(),
            Value::Scalar { .. } => String::new(),
            _ => {
                sink.error(
                    Some(node.pos),
                    &var_path,
                    Some(node.display()),
                    format!("expected a value, found {}", node.kind()),
                    "write the variable's value on the same line, quoted if it has spaces",
                );
                continue;
            }
        };
        // A repeated key: the later value wins, as in the YAML loaders (a warning says so).
        vars.retain(|(name, _)| *name != k.text);
        vars.push((k.text.clone(), value));
    }
    vars
}

fn read_cluster(sink: &mut Sink, c: MapRef<'_>, name: &str) -> Cluster {
    reader::check_keys(sink, c, CLUSTER_KEYS, true);
    let s =
        |sink: &mut Sink, key: &str, hint: &str| reader::string(sink, c, key, Need::Optional, hint);
    let container_path = format!("{}.container", c.path);
    let container = match reader::section(sink, c, "container", &container_path) {
        None => Container::default(),
        Some(k) => {
            reader::check_keys(sink, k, &["runtime", "image", "mounts", "workdir"], true);
            let runtime =
                match reader::choice(sink, k, "runtime", &["none", "pyxis"], "none or pyxis") {
                    Some("pyxis") => ContainerRuntime::Pyxis,
                    _ => ContainerRuntime::None,
                };
            Container {
                runtime,
                image: reader::string(sink, k, "image", Need::Optional, "an image or .sqsh path"),
                mounts: reader::string(sink, k, "mounts", Need::Optional, "src:dst[,src:dst]"),
                workdir: reader::string(
                    sink,
                    k,
                    "workdir",
                    Need::Optional,
                    "a path in the container",
                ),
            }
        }
    };
    let mut models = BTreeMap::new();
    let models_path = format!("{}.models", c.path);
    if let Some(m) = reader::section(sink, c, "models", &models_path) {
        for (k, _) in m.node.as_map().unwrap_or_default() {
            if let Some(v) =
                reader::string(sink, m, &k.text, Need::Optional, "a path under models_root")
            {
                models.insert(k.text.clone(), v);
            }
        }
    }
    let mpi = s(sink, "mpi", "pmix, pmi2 or none").filter(|m| m != "none");
    Cluster {
        name: name.to_string(),
        partition: s(sink, "partition", "a Slurm partition"),
        account: s(sink, "account", "a Slurm account"),
        gpus_per_node: reader::int(
            sink,
            c,
            "gpus_per_node",
            Need::Optional,
            1,
            64,
            "GPUs on one node",
        )
        .map(|v| v as u32),
        gpu_type: s(sink, "gpu_type", "GB200, B200, H100, ..."),
        time_limit: s(sink, "time_limit", "a Slurm time limit such as 02:00:00"),
        gres_gpus: reader::bool(
            sink,
            c,
            "gres_gpus",
            Need::Optional,
            "true when nodes have GPU GRES",
        )
        .unwrap_or(false),
        container,
        mpi,
        models_root: s(sink, "models_root", "the directory holding the models"),
        models,
        llm_root: s(
            sink,
            "llm_root",
            "the TensorRT-LLM source tree on the nodes",
        ),
        sbatch_args: string_list(sink, c, "sbatch_args"),
        install: string_list(sink, c, "install"),
        run_root: s(sink, "run_root", "a directory on the shared filesystem"),
        slurm_conf: s(
            sink,
            "slurm_conf",
            "the slurm.conf the Slurm commands should use",
        ),
        segment: reader::bool(
            sink,
            c,
            "segment",
            Need::Optional,
            "true when the cluster's topology/block plugin takes sbatch --segment",
        )
        .unwrap_or(false),
        env: env_section(sink, c, "env"),
        worker_env: env_section(sink, c, "worker_env"),
        ctx_env: env_section(sink, c, "ctx_env"),
        gen_env: env_section(sink, c, "gen_env"),
        server_env: env_section(sink, c, "server_env"),
        benchmark_env: env_section(sink, c, "benchmark_env"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterFile, ConfigError> {
        ClusterFile::parse(Path::new("clusters.yaml"), text)
    }

    #[test]
    fn profiles_carry_environment_per_role_in_file_order() {
        let file = parse(concat!(
            "clusters:\n",
            "  gb200:\n",
            "    segment: true\n",
            "    env: {ZED: 1, ALPHA: \"a b\", EMPTY: }\n",
            "    worker_env: {W: 'x'}\n",
            "    ctx_env: {C: c}\n",
            "    gen_env: {G: g}\n",
            "    server_env: {S: s}\n",
            "    benchmark_env: {B: \"$(not run)\"}\n",
        ))
        .unwrap();
        let c = &file.clusters["gb200"];
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(c.segment);
        assert_eq!(
            c.env,
            pairs(&[("ZED", "1"), ("ALPHA", "a b"), ("EMPTY", "")])
        );
        assert_eq!(c.worker_env, pairs(&[("W", "x")]));
        assert_eq!(c.ctx_env, pairs(&[("C", "c")]));
        assert_eq!(c.gen_env, pairs(&[("G", "g")]));
        assert_eq!(c.server_env, pairs(&[("S", "s")]));
        assert_eq!(c.benchmark_env, pairs(&[("B", "$(not run)")]));
        let plain = parse("clusters:\n  p: {partition: x}\n").unwrap();
        assert!(!plain.clusters["p"].segment && plain.clusters["p"].env.is_empty());
    }

    #[test]
    fn bad_environment_entries_are_all_reported_with_their_paths() {
        let err = parse(concat!(
            "clusters:\n",
            "  c:\n",
            "    env: {1BAD: x, DISAGG_RUN_DIR: /x, LIST: [a]}\n",
            "    gen_env: [A=1]\n",
            "    role_env: {}\n",
        ))
        .unwrap_err();
        let d = err.diagnostics().unwrap();
        let paths: Vec<&str> = d.errors().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "clusters.c.env.1BAD",
                "clusters.c.env.DISAGG_RUN_DIR",
                "clusters.c.env.LIST",
                "clusters.c.gen_env",
                "clusters.c.role_env",
            ],
            "{d}"
        );
    }
}
