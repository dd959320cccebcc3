//! Sweep specs (`disagg sweep SPEC.yaml`): a base test config and the axes to vary, expanded
//! into derived upstream-schema configs, the points of the sweep.
//!
//! ```yaml
//! base: perf/deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX.yaml  # file or test id
//! axes:                                   # dotted paths into the upstream schema; cartesian product
//!   hardware.num_ctx_servers: [1, 2]
//!   worker_config.gen.tensor_parallel_size: [4, 8]
//! zip:                                    # axes that move together
//!   - {benchmark.input_length: [1024, 8192], benchmark.output_length: [1024, 1024]}
//! concurrency: [1, 4, 16, 64]             # every point's benchmark.concurrency_list
//! constraints: {max_gpus: 32, max_nodes: 8}
//! sla: {p99_ttft_ms: 2000, median_tpot_ms: 50}
//! ```
//!
//! The product runs over the axes in the order written, then the zip groups (each group is one
//! axis whose steps set several paths); the first axis varies slowest, as `itertools.product`
//! in upstream's `disagg_profiler/sweeper.py`. [`SweepSpec::points`] applies each combination to
//! the base's YAML tree, writes it back as YAML, names it after upstream's naming convention
//! ([`crate::name::rename`]) and validates it; every problem of every point is reported.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostics, Sink};
use crate::reader::{self, MapRef, Need, join};
use crate::yaml::{self, Node, Pos, Scalar, Value};
use crate::{ConfigError, TestConfig};

const SPEC_KEYS: &[&str] = &["base", "axes", "zip", "concurrency", "constraints", "sla"];
const CONSTRAINT_KEYS: &[&str] = &["max_gpus", "max_nodes"];

/// The latency limits an SLA may set: `<statistic>_<metric>_ms`, each read from the stored
/// metric of the same upstream name without `_ms` (`p99_ttft_ms` → `p99_ttft`).
pub const SLA_KEYS: &[&str] = &[
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
];

/// One limit of an SLA.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaLimit {
    /// The key as written (`p99_ttft_ms`).
    pub key: &'static str,
    /// The upstream metric it bounds (`p99_ttft`).
    pub metric: &'static str,
    /// The largest value that meets it, ms.
    pub max_ms: f64,
}

/// Latency limits a measurement must all meet. In JSON: `{"p99_ttft_ms": 2000, ...}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sla {
    /// The limits, in the order given.
    pub limits: Vec<SlaLimit>,
}

impl Sla {
    /// Parse `--sla p99_ttft_ms=2000,median_tpot_ms=50`.
    pub fn parse_flag(text: &str) -> Result<Sla, ConfigError> {
        let mut limits = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |rule: String| ConfigError::Override {
                flag: "--sla".to_string(),
                key: "sla".to_string(),
                value: item.to_string(),
                rule,
            };
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| bad("write KEY=MS, e.g. p99_ttft_ms=2000".to_string()))?;
            let key = sla_key(key.trim())
                .ok_or_else(|| bad(format!("unknown limit; use one of {}", SLA_KEYS.join(", "))))?;
            let max_ms = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| bad("the limit must be a positive number of ms".to_string()))?;
            limits.push(SlaLimit {
                key,
                metric: metric_of(key),
                max_ms,
            });
        }
        if limits.is_empty() {
            return Err(ConfigError::Override {
                flag: "--sla".to_string(),
                key: "sla".to_string(),
                value: text.to_string(),
                rule: "give at least one KEY=MS".to_string(),
            });
        }
        Ok(Sla { limits })
    }

    /// The limits `metrics` (upstream names) break, as `p99_ttft 2310.0 ms > 2000 ms`; a
    /// missing metric breaks its limit.
    pub fn violations(&self, metrics: &dyn Fn(&str) -> Option<f64>) -> Vec<String> {
        self.limits
            .iter()
            .filter_map(|l| match metrics(l.metric) {
                Some(v) if v <= l.max_ms => None,
                Some(v) => Some(format!("{} {v:.1} ms > {} ms", l.metric, l.max_ms)),
                None => Some(format!("{} not measured", l.metric)),
            })
            .collect()
    }
}

impl serde::Serialize for Sla {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(self.limits.len()))?;
        for l in &self.limits {
            map.serialize_entry(l.key, &l.max_ms)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Sla {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sla, D::Error> {
        let map = <std::collections::BTreeMap<String, f64>>::deserialize(d)?;
        let limits = map
            .into_iter()
            .map(|(k, max_ms)| {
                let key = sla_key(&k)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown SLA limit `{k}`")))?;
                Ok(SlaLimit {
                    key,
                    metric: metric_of(key),
                    max_ms,
                })
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(Sla { limits })
    }
}

impl std::fmt::Display for Sla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .limits
            .iter()
            .map(|l| format!("{} ≤ {} ms", l.metric, l.max_ms))
            .collect();
        f.write_str(&items.join(", "))
    }
}

fn sla_key(key: &str) -> Option<&'static str> {
    SLA_KEYS.iter().copied().find(|k| *k == key)
}

fn metric_of(key: &'static str) -> &'static str {
    key.strip_suffix("_ms").unwrap_or(key)
}

/// Limits on the points a sweep may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Constraints {
    /// Most GPUs one point may allocate (whole nodes, as planned).
    pub max_gpus: Option<u32>,
    /// Most nodes one point may allocate.
    pub max_nodes: Option<u32>,
}

impl Constraints {
    /// Why a point of `nodes` nodes and `gpus` GPUs may not run, if it may not.
    pub fn broken_by(&self, nodes: u32, gpus: u32) -> Option<String> {
        match (self.max_gpus, self.max_nodes) {
            (Some(max), _) if gpus > max => {
                Some(format!("needs {gpus} GPUs, constraints.max_gpus is {max}"))
            }
            (_, Some(max)) if nodes > max => Some(format!(
                "needs {nodes} nodes, constraints.max_nodes is {max}"
            )),
            _ => None,
        }
    }
}

/// One axis of the product: the paths it sets (one, or several for a zip group) and its steps,
/// each giving one value per path.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted paths into the config.
    pub paths: Vec<String>,
    /// Where the axis is written in the spec.
    pub pos: Pos,
    /// `steps[i][j]`: the value of `paths[j]` at step `i`.
    pub steps: Vec<Vec<Node>>,
}

/// A validated sweep spec.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    path: PathBuf,
    /// The base config: a file (relative to the spec's directory) or an upstream test id.
    pub base: String,
    /// The axes, zip groups last.
    pub axes: Vec<Axis>,
    /// Every point's concurrency list (`benchmark.concurrency_list`), when given.
    pub concurrency: Option<Vec<u32>>,
    /// Limits on the points.
    pub constraints: Constraints,
    /// The latency target of the SLA answer.
    pub sla: Option<Sla>,
}

/// One point of a sweep: a derived config, validated.
#[derive(Debug, Clone)]
pub struct DerivedPoint {
    /// Its name (upstream's naming convention, made unique among the points).
    pub name: String,
    /// Where it is to be written: `DIR/<name>.yaml`.
    pub path: PathBuf,
    /// Its YAML text.
    pub text: String,
    /// `(path, value)` for every axis, in axis order.
    pub assignments: Vec<(String, String)>,
    /// The validated config, or every problem it has.
    pub config: Result<TestConfig, Diagnostics>,
}

/// Whether `text` is a sweep spec rather than a test config: a mapping with `base` and no
/// `hardware` section (what `disagg validate` uses to pick the checks of a file).
pub fn is_sweep_spec(text: &str) -> bool {
    reader::load_yaml(Sink::new(Path::new("")), text)
        .map(|(_, root)| root.get("base").is_some() && root.get("hardware").is_none())
        .unwrap_or(false)
}

impl SweepSpec {
    /// Read and validate a spec file.
    pub fn load(path: &Path) -> Result<SweepSpec, ConfigError> {
        let text = reader::read_file(path)?;
        SweepSpec::parse(path, &text)
    }

    /// The spec file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validate spec text; every problem at once.
    pub fn parse(path: &Path, text: &str) -> Result<SweepSpec, ConfigError> {
        let (mut sink, root) = reader::load_yaml(Sink::new(path), text)?;
        let top = MapRef {
            node: &root,
            path: "",
        };
        if root.as_map().is_none() {
            sink.error(
                Some(root.pos),
                "",
                Some(root.display()),
                format!("a sweep spec must be a mapping, found {}", root.kind()),
                "start from examples/sweep-sim.yaml",
            );
            return Err(ConfigError::Invalid(sink.finish()));
        }
        reader::check_keys(&mut sink, top, SPEC_KEYS, true);
        let base = reader::string(
            &mut sink,
            top,
            "base",
            Need::Required("add `base: FILE.yaml` (or an upstream test id), the config to vary"),
            "a config file, relative to the spec, or an upstream test id",
        );
        let mut axes = Vec::new();
        if let Some(section) = reader::section(&mut sink, top, "axes", "axes") {
            for (key, node) in section.node.as_map().unwrap_or_default() {
                if let Some(values) = axis_values(&mut sink, &join("axes", &key.text), node) {
                    axes.push(Axis {
                        paths: vec![key.text.clone()],
                        pos: key.pos,
                        steps: values.into_iter().map(|v| vec![v]).collect(),
                    });
                }
            }
        }
        if let Some(zip) = root.get("zip") {
            read_zip(&mut sink, zip, &mut axes);
        }
        check_paths(&mut sink, &axes);
        let concurrency = crate::test_config::read_concurrency_at(&mut sink, top, "concurrency");
        let mut constraints = Constraints::default();
        if let Some(c) = reader::section(&mut sink, top, "constraints", "constraints") {
            reader::check_keys(&mut sink, c, CONSTRAINT_KEYS, true);
            let limit = |sink: &mut Sink, key| {
                reader::int(
                    sink,
                    c,
                    key,
                    Need::Optional,
                    1,
                    1 << 20,
                    "the most a point may allocate",
                )
                .map(|v| v as u32)
            };
            constraints.max_gpus = limit(&mut sink, "max_gpus");
            constraints.max_nodes = limit(&mut sink, "max_nodes");
        }
        let sla = reader::section(&mut sink, top, "sla", "sla").map(|s| read_sla(&mut sink, s));
        let diagnostics = sink.finish();
        if diagnostics.has_errors() {
            return Err(ConfigError::Invalid(diagnostics));
        }
        Ok(SweepSpec {
            path: path.to_path_buf(),
            base: base.unwrap_or_default(),
            axes,
            concurrency,
            constraints,
            sla: sla.filter(|s| !s.limits.is_empty()),
        })
    }

    /// How many points the product has.
    pub fn size(&self) -> usize {
        self.axes.iter().map(|a| a.steps.len()).product()
    }

    /// Every point of the sweep of `base_text` (the base config, read from `base_path`), each
    /// named for `dir/<name>.yaml` and validated. Errors are the spec's own (a path that runs
    /// through a value of the base); a point's problems are in its [`DerivedPoint::config`].
    /// Warnings: axis paths the base does not have (the points add them).
    pub fn points(
        &self,
        base_path: &Path,
        base_text: &str,
        dir: &Path,
    ) -> Result<(Vec<DerivedPoint>, Diagnostics), ConfigError> {
        let (_, base) = reader::load_yaml(Sink::new(base_path), base_text)?;
        let base_name = base_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "point".to_string());
        let mut sink = Sink::new(&self.path);
        for axis in &self.axes {
            for path in &axis.paths {
                let segments: Vec<&str> = path.split('.').collect();
                if base.lookup(&segments).is_none() {
                    sink.warning(
                        Some(axis.pos),
                        path,
                        None,
                        format!(
                            "{} has no `{path}`; every point adds it",
                            base_path.display()
                        ),
                        "check the spelling against the base config",
                    );
                }
            }
        }
        let mut made: Vec<Made> = Vec::new();
        for combo in product(&self.axes) {
            let mut node = base.clone();
            let mut assignments = Vec::new();
            for (axis, step) in self.axes.iter().zip(&combo) {
                for (path, value) in axis.paths.iter().zip(&axis.steps[*step]) {
                    let segments: Vec<&str> = path.split('.').collect();
                    if let Err(at) = node.set(&segments, value.clone()) {
                        sink.error(
                            Some(axis.pos),
                            path,
                            Some(value.display()),
                            format!("`{at}` of the base config is not a mapping, so `{path}` cannot be set"),
                            "point the axis at a key inside a mapping of the base config",
                        );
                    }
                    assignments.push((path.clone(), value.display()));
                }
            }
            if let Some(c) = &self.concurrency {
                let list: Vec<String> = c.iter().map(u32::to_string).collect();
                // Upstream writes the list as one string of numbers.
                let _ = node.set(
                    &["benchmark", "concurrency_list"],
                    Node::scalar_text(&list.join(" "), true),
                );
            }
            let provisional = dir.join(format!("{base_name}.yaml"));
            let config = TestConfig::parse(&provisional, &yaml::emit(&node)).ok();
            made.push((assignments, node, config));
        }
        let diagnostics = sink.finish();
        if diagnostics.has_errors() {
            return Err(ConfigError::Invalid(diagnostics));
        }
        let names: Vec<String> = made
            .iter()
            .map(|(_, _, c)| match c {
                Some(c) => crate::name::rename(&base_name, c),
                None => base_name.clone(),
            })
            .collect();
        let assignments: Vec<&[(String, String)]> =
            made.iter().map(|(a, _, _)| a.as_slice()).collect();
        let names = unique_names(names, &assignments);
        let points = made
            .into_iter()
            .zip(names)
            .map(|((assignments, node, _), name)| {
                let path = dir.join(format!("{name}.yaml"));
                let header = header(base_path, &assignments);
                let text = format!("{header}{}", yaml::emit(&node));
                let config = TestConfig::parse(&path, &text).map_err(|e| match e {
                    ConfigError::Invalid(d) => d,
                    other => Diagnostics(vec![crate::Diagnostic {
                        severity: crate::Severity::Error,
                        file: path.clone(),
                        pos: None,
                        path: String::new(),
                        value: None,
                        message: other.to_string(),
                        hint: None,
                    }]),
                });
                DerivedPoint {
                    name,
                    path,
                    text,
                    assignments,
                    config,
                }
            })
            .collect();
        Ok((points, diagnostics))
    }
}

/// A combination applied to the base: its assignments, its tree, its config when it parses.
type Made = (Vec<(String, String)>, Node, Option<TestConfig>);

/// The comment a point's file opens with: where it comes from.
fn header(base: &Path, assignments: &[(String, String)]) -> String {
    let mut out = format!(
        "# A point of a `disagg sweep`: {} with\n",
        base.file_name().map_or_else(
            || base.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    for (path, value) in assignments {
        out.push_str(&format!("#   {path}: {}\n", value.replace('\n', " ")));
    }
    out
}

/// Every combination of axis steps, first axis slowest.
fn product(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut combos = vec![Vec::new()];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                (0..axis.steps.len()).map(move |i| {
                    let mut next = c.clone();
                    next.push(i);
                    next
                })
            })
            .collect();
    }
    combos
}

/// Names made unique: points that share a name get the axes that tell them apart appended
/// (`_<key without underscores><value>`, the last segment of the path), then a counter if
/// they still collide.
fn unique_names(names: Vec<String>, assignments: &[&[(String, String)]]) -> Vec<String> {
    let mut out = names.clone();
    for (i, name) in names.iter().enumerate() {
        let group: Vec<usize> = (0..names.len()).filter(|&j| names[j] == *name).collect();
        if group.len() < 2 {
            continue;
        }
        let mut suffix = String::new();
        for (a, (path, value)) in assignments[i].iter().enumerate() {
            let differs = group.iter().any(|&j| assignments[j][a].1 != *value);
            if differs {
                let key: String = path
                    .rsplit('.')
                    .next()
                    .unwrap_or(path)
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect();
                let value: String = value
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                suffix.push_str(&format!("_{key}{value}"));
            }
        }
        out[i] = format!("{name}{suffix}");
    }
    let mut seen: Vec<String> = Vec::new();
    for name in &mut out {
        let base = name.clone();
        let mut n = 2;
        while seen.contains(name) {
            *name = format!("{base}_{n}");
            n += 1;
        }
        seen.push(name.clone());
    }
    out
}

/// The values of one axis: a non-empty list.
fn axis_values(sink: &mut Sink, path: &str, node: &Node) -> Option<Vec<Node>> {
    match &node.value {
        Value::Seq(items) if !items.is_empty() => Some(items.clone()),
        _ => {
            sink.error(
                Some(node.pos),
                path,
                Some(node.display()),
                format!(
                    "an axis needs a non-empty list of values, found {}",
                    node.kind()
                ),
                "write the values as a YAML list, e.g. [1, 2]",
            );
            None
        }
    }
}

/// `zip:` — a list of mappings; in each, every path's list has the same length.
fn read_zip(sink: &mut Sink, zip: &Node, axes: &mut Vec<Axis>) {
    let Value::Seq(groups) = &zip.value else {
        if zip.scalar() != Some(Scalar::Null) {
            sink.error(
                Some(zip.pos),
                "zip",
                Some(zip.display()),
                format!("expected a list of mappings, found {}", zip.kind()),
                "write `zip:` then `- {a.b: [1, 2], c.d: [3, 4]}` per group",
            );
        }
        return;
    };
    for (g, group) in groups.iter().enumerate() {
        let gpath = format!("zip[{g}]");
        let Some(entries) = group.as_map() else {
            sink.error(
                Some(group.pos),
                &gpath,
                Some(group.display()),
                format!(
                    "a zip group is a mapping of paths to lists, found {}",
                    group.kind()
                ),
                "write `- {a.b: [1, 2], c.d: [3, 4]}`",
            );
            continue;
        };
        let mut paths = Vec::new();
        let mut lists = Vec::new();
        for (key, node) in entries {
            if let Some(values) = axis_values(sink, &format!("{gpath}.{}", key.text), node) {
                paths.push(key.text.clone());
                lists.push((key.pos, values));
            }
        }
        let Some(len) = lists.first().map(|(_, v)| v.len()) else {
            continue;
        };
        if let Some((pos, other)) = lists.iter().find(|(_, v)| v.len() != len) {
            sink.error(
                Some(*pos),
                &gpath,
                None,
                format!(
                    "the lists of a zip group move together and need one length: {} has {len} values, another {}",
                    paths[0],
                    other.len()
                ),
                "give every path of the group as many values",
            );
            continue;
        }
        axes.push(Axis {
            paths,
            pos: group.pos,
            steps: (0..len)
                .map(|i| lists.iter().map(|(_, v)| v[i].clone()).collect())
                .collect(),
        });
    }
}

/// Paths are dotted keys under a top-level section of the config, each set by one axis.
fn check_paths(sink: &mut Sink, axes: &[Axis]) {
    let mut seen: Vec<&str> = Vec::new();
    for axis in axes {
        for path in &axis.paths {
            let segments: Vec<&str> = path.split('.').collect();
            if segments.iter().any(|s| s.is_empty()) {
                sink.error(
                    Some(axis.pos),
                    path,
                    None,
                    "not a dotted path",
                    "write keys separated by dots, e.g. worker_config.gen.max_batch_size",
                );
                continue;
            }
            if !crate::test_config::TOP_KEYS.contains(&segments[0]) {
                let hint = match reader::closest(segments[0], crate::test_config::TOP_KEYS) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!(
                        "start at one of {}",
                        crate::test_config::TOP_KEYS.join(", ")
                    ),
                };
                sink.error(
                    Some(axis.pos),
                    path,
                    None,
                    format!("`{}` is no section of a test config", segments[0]),
                    hint,
                );
            }
            if seen.contains(&path.as_str()) {
                sink.error(
                    Some(axis.pos),
                    path,
                    None,
                    "this path is already set by another axis",
                    "keep one axis per path (use zip to move paths together)",
                );
            }
            seen.push(path);
        }
    }
}

/// `sla:` — latency limits in ms.
fn read_sla(sink: &mut Sink, s: MapRef<'_>) -> Sla {
    reader::check_keys(sink, s, SLA_KEYS, true);
    let mut limits = Vec::new();
    for (key, _) in s.node.as_map().unwrap_or_default() {
        let Some(known) = sla_key(&key.text) else {
            continue;
        };
        if let Some(v) = reader::float(sink, s, known, Need::Optional, 0.0, "a limit in ms") {
            limits.push(SlaLimit {
                key: known,
                metric: metric_of(known),
                max_ms: v,
            });
        }
    }
    Sla { limits }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_spec_is_told_from_a_test_config() {
        assert!(is_sweep_spec(
            "base: a.yaml\naxes: {hardware.num_gen_servers: [1, 2]}\n"
        ));
        assert!(!is_sweep_spec(
            "hardware: {gpus_per_node: 4}\nbenchmark: {}\n"
        ));
        assert!(!is_sweep_spec(
            "base: a.yaml\nhardware: {gpus_per_node: 4}\n"
        ));
        assert!(!is_sweep_spec("- not a mapping\n"));
        assert!(!is_sweep_spec("base: [unclosed\n"));
    }

    use super::*;

    const BASE: &str = "metadata: {model_name: m}\nbenchmark:\n  concurrency_list: '1'\n  input_length: 1024\n  output_length: 1024\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nworker_config:\n  ctx: {tensor_parallel_size: 1}\n  gen: {tensor_parallel_size: 4, max_batch_size: 8}\n";

    fn spec(text: &str) -> SweepSpec {
        SweepSpec::parse(Path::new("s.yaml"), text).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.diagnostics().map(|d| d.to_string()).unwrap_or_default()
            )
        })
    }

    fn errors(text: &str) -> String {
        match SweepSpec::parse(Path::new("s.yaml"), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.diagnostics().unwrap().to_string(),
        }
    }

    #[test]
    fn axes_multiply_and_zips_move_together() {
        let s = spec(
            "base: b.yaml\naxes:\n  hardware.num_ctx_servers: [1, 2]\n  worker_config.gen.tensor_parallel_size: [4, 8]\nzip:\n  - {benchmark.input_length: [1024, 8192], benchmark.output_length: [1024, 2048]}\nconcurrency: [1, 4]\n",
        );
        assert_eq!(s.size(), 8);
        let (points, warnings) = s
            .points(
                Path::new("b_1k1k_ctx1_gen1_tep4.yaml"),
                BASE,
                Path::new("/d"),
            )
            .unwrap();
        assert_eq!(warnings.0.len(), 0, "{warnings}");
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "b_1k1k_ctx1_gen1_tep4",
                "b_8k2k_ctx1_gen1_tep4",
                "b_1k1k_ctx1_gen1_tep8",
                "b_8k2k_ctx1_gen1_tep8",
                "b_1k1k_ctx2_gen1_tep4",
                "b_8k2k_ctx2_gen1_tep4",
                "b_1k1k_ctx2_gen1_tep8",
                "b_8k2k_ctx2_gen1_tep8",
            ]
        );
        let last = points[7].config.as_ref().unwrap();
        assert_eq!(last.hardware().num_ctx_servers, 2);
        assert_eq!(last.gen_().tp(), 8);
        assert_eq!((last.benchmark().isl, last.benchmark().osl), (8192, 2048));
        assert_eq!(last.benchmark().concurrency, [1, 4]);
        assert_eq!(points[7].path, Path::new("/d/b_8k2k_ctx2_gen1_tep8.yaml"));
        assert!(points[7].text.starts_with("# A point of a `disagg sweep`"));
        assert!(
            last.warnings()
                .warnings()
                .all(|w| !w.message.contains("file name")),
            "{}",
            last.warnings()
        );
    }

    #[test]
    fn points_the_name_cannot_tell_apart_get_their_axes_appended() {
        let s = spec(
            "base: b.yaml\naxes:\n  worker_config.gen.max_batch_size: [8, 64]\n  engine.sim.decode_step_base_ms: [2, 4.5]\n",
        );
        let (points, warnings) = s
            .points(Path::new("base.yaml"), BASE, Path::new("d"))
            .unwrap();
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "base_maxbatchsize8_decodestepbasems2",
                "base_maxbatchsize8_decodestepbasems4.5",
                "base_maxbatchsize64_decodestepbasems2",
                "base_maxbatchsize64_decodestepbasems4.5",
            ]
        );
        assert!(
            warnings
                .to_string()
                .contains("has no `engine.sim.decode_step_base_ms`")
        );
        assert!(points.iter().all(|p| p.config.is_ok()));
    }

    #[test]
    fn a_point_that_breaks_a_rule_carries_its_problems() {
        let s = spec("base: b.yaml\naxes:\n  worker_config.gen.tensor_parallel_size: [4, 6]\n");
        let (points, _) = s.points(Path::new("b.yaml"), BASE, Path::new("d")).unwrap();
        assert!(points[0].config.is_ok());
        let problems = points[1].config.as_ref().err().unwrap().to_string();
        assert!(problems.contains("does not fill"), "{problems}");
    }

    #[test]
    fn every_spec_problem_is_reported_at_once() {
        let e = errors(
            "axes:\n  hardwre.num_ctx_servers: [1]\n  benchmark.input_length: 5\nzip:\n  - {benchmark.output_length: [1, 2], benchmark.multi_round: [1]}\nconstraints: {max_gpu: 3}\nsla: {p95_ttft_ms: 10}\nextra: 1\n",
        );
        for needle in [
            "required key `base` is missing",
            "did you mean `hardware`?",
            "non-empty list",
            "need one length",
            "constraints.max_gpu",
            "sla.p95_ttft_ms",
            "extra: unknown key",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn an_axis_through_a_value_is_an_error_of_the_spec() {
        let s = spec("base: b.yaml\naxes:\n  benchmark.input_length.x: [1]\n");
        let e = s
            .points(Path::new("b.yaml"), BASE, Path::new("d"))
            .unwrap_err();
        let text = e.diagnostics().unwrap().to_string();
        assert!(
            text.contains("`benchmark.input_length` of the base config is not a mapping"),
            "{text}"
        );
    }

    #[test]
    fn slas_read_from_the_spec_and_the_flag_agree() {
        let s = spec("base: b.yaml\nsla: {p99_ttft_ms: 2000, median_tpot_ms: 50}\n");
        let flag = Sla::parse_flag("p99_ttft_ms=2000, median_tpot_ms=50").unwrap();
        assert_eq!(s.sla.as_ref(), Some(&flag));
        let metrics = |m: &str| match m {
            "p99_ttft" => Some(1999.0),
            "median_tpot" => Some(50.5),
            _ => None,
        };
        assert_eq!(flag.violations(&metrics), ["median_tpot 50.5 ms > 50 ms"]);
        assert!(Sla::parse_flag("p95_ttft_ms=1").is_err());
        let json = serde_json::to_string(&flag).unwrap();
        assert_eq!(json, r#"{"p99_ttft_ms":2000.0,"median_tpot_ms":50.0}"#);
        let mut back: Sla = serde_json::from_str(&json).unwrap();
        back.limits.sort_by_key(|l| l.key != "p99_ttft_ms");
        assert_eq!(back, flag);
        assert!(Sla::parse_flag("p99_ttft_ms=-1").is_err());
    }

    #[test]
    fn constraints_name_the_limit_a_point_breaks() {
        let c = Constraints {
            max_gpus: Some(8),
            max_nodes: Some(1),
        };
        assert_eq!(c.broken_by(1, 4), None);
        assert_eq!(
            c.broken_by(3, 12).as_deref(),
            Some("needs 12 GPUs, constraints.max_gpus is 8")
        );
        assert_eq!(
            c.broken_by(2, 8).as_deref(),
            Some("needs 2 nodes, constraints.max_nodes is 1")
        );
    }
}
