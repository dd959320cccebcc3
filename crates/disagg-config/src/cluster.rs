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
//!     sbatch_args: ["--segment=3"]
//!     install: ["pip install tensorrt_llm==1.2"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ConfigError;
use crate::diag::Sink;
use crate::reader::{self, MapRef, Need};
use crate::yaml::{Node, Value};

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
];

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
    }
}
