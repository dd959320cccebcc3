//! A sweep's points: derived from the spec, validated and planned (all problems at once),
//! checked against the constraints, identified by content hash, and looked up in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use disagg_config::{Cluster, EngineKind, Sla, SweepSpec, TestConfig};
use disagg_plan::{Placement, Plan};
use disagg_results::store::{Store, content_hash};
use disagg_results::sweep::{Measurement, PointDoc, PointRun};

use crate::error::InvalidInput;
use crate::prepare::RunOptions;

/// Where a point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Its config breaks a rule: never runs.
    Invalid,
    /// It breaks a constraint: never runs.
    Skipped,
    /// To run.
    Pending,
    /// A run of it is in flight.
    Running,
    /// Stored valid (in this sweep or before).
    Passed,
    /// Its run failed.
    Failed,
    /// Its run was stopped by a signal.
    Interrupted,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Invalid => "invalid",
            State::Skipped => "skipped",
            State::Pending | State::Running => "pending",
            State::Passed => "passed",
            State::Failed => "failed",
            State::Interrupted => "interrupted",
        }
    }
}

/// One point of a sweep.
#[derive(Debug)]
pub(crate) struct Point {
    pub name: String,
    /// `DIR/points/<name>.yaml`.
    pub file: PathBuf,
    pub text: String,
    /// Content hash of the config text, the run's flags and the cluster: the point's identity.
    pub key: String,
    pub assignments: Vec<(String, String)>,
    /// The config with the sweep's overrides applied (`None`: invalid).
    pub config: Option<TestConfig>,
    pub plan: Option<Plan>,
    pub state: State,
    pub reason: Option<String>,
    /// Runs made in this invocation.
    pub runs: Vec<PointRun>,
    /// Latest valid stored record per concurrency.
    pub measurements: Vec<Measurement>,
    /// Was stored valid before this invocation started.
    pub stored_before: bool,
    pub retries_left: u32,
    pub probes_left: u32,
    /// Concurrencies an SLA probe of which failed as a test (counted as missing the SLA).
    pub failed_probes: Vec<u32>,
}

impl Point {
    /// GPUs its servers use.
    pub fn server_gpus(&self) -> u32 {
        self.plan
            .as_ref()
            .map_or(0, |p| p.servers.iter().map(|s| s.gpus).sum())
    }

    /// The concurrencies its run measures.
    pub fn planned(&self) -> Vec<u32> {
        self.config
            .as_ref()
            .map(|c| c.benchmark().concurrency.clone())
            .unwrap_or_default()
    }

    /// Every planned concurrency has a valid stored measurement.
    pub fn covered(&self) -> bool {
        self.planned()
            .iter()
            .all(|c| self.measurements.iter().any(|m| m.concurrency == *c))
    }

    /// Read its measurements back from the store (every valid record tagged with its key; the
    /// latest per concurrency).
    pub fn refresh(&mut self, store: &Store, sla: Option<&Sla>) -> anyhow::Result<()> {
        let mut latest: BTreeMap<u32, Measurement> = BTreeMap::new();
        for r in store.by_job_field("s_sweep_point", &self.key)? {
            if !r.valid {
                continue;
            }
            let gpus = self.server_gpus();
            if let Some(m) =
                Measurement::from_metrics(&self.name, &r.label, gpus, &r.metrics, &r.run_dir, sla)
            {
                latest.insert(m.concurrency, m);
            }
        }
        self.measurements = latest.into_values().collect();
        Ok(())
    }

    /// Whether each measured concurrency meets the SLA (a failed probe does not).
    pub fn sla_known(&self) -> BTreeMap<u32, bool> {
        let mut known: BTreeMap<u32, bool> = self
            .measurements
            .iter()
            .filter_map(|m| Some((m.concurrency, m.meets_sla?)))
            .collect();
        for c in &self.failed_probes {
            known.entry(*c).or_insert(false);
        }
        known
    }

    /// Its entry in `sweep.json`.
    pub fn doc(&self, sla_search: bool) -> PointDoc {
        PointDoc {
            name: self.name.clone(),
            config: self.file.display().to_string(),
            key: self.key.clone(),
            assignments: self.assignments.clone(),
            nodes: self.plan.as_ref().map_or(0, |p| p.total_nodes),
            gpus: self.plan.as_ref().map_or(0, |p| p.total_gpus),
            server_gpus: self.server_gpus(),
            idle_gpus: self.plan.as_ref().map_or(0, |p| p.idle_gpus),
            state: self.state.as_str().to_string(),
            reason: self.reason.clone(),
            runs: self.runs.clone(),
            measurements: self.measurements.clone(),
            sla_concurrency: (sla_search && self.state == State::Passed)
                .then(|| disagg_results::sweep::sla_concurrency(&self.sla_known())),
        }
    }
}

/// What the points are derived and run with.
pub(crate) struct Derivation<'a> {
    pub spec: &'a SweepSpec,
    pub base_path: &'a Path,
    pub base_text: &'a str,
    pub points_dir: &'a Path,
    pub options: &'a RunOptions,
    pub cluster: Option<&'a Cluster>,
    pub cluster_name: Option<&'a str>,
    pub retries: u32,
    pub probes: u32,
}

/// Every point of the spec: validated, planned and checked against the constraints. Every
/// problem of every point is printed at once (stderr); such points are kept, marked invalid or
/// skipped. Errors: the spec's own problems, and a sweep without a single point to run.
pub(crate) fn derive(d: &Derivation<'_>) -> anyhow::Result<Vec<Point>> {
    let (derived, warnings) = match d.spec.points(d.base_path, d.base_text, d.points_dir) {
        Ok(r) => r,
        Err(e) => {
            if let Some(diag) = e.diagnostics() {
                eprint!("{diag}");
                eprintln!();
            }
            return Err(e.into());
        }
    };
    if !warnings.0.is_empty() {
        eprint!("{warnings}");
        eprintln!();
    }
    let flags = d.options.args().join("\0");
    let mut points = Vec::new();
    let mut problems = 0;
    for p in derived {
        let key = content_hash(&format!(
            "{}\0{flags}\0{}",
            p.text,
            d.cluster_name.unwrap_or("local")
        ));
        let mut point = Point {
            name: p.name.clone(),
            file: p.path.clone(),
            text: p.text,
            key,
            assignments: p.assignments,
            config: None,
            plan: None,
            state: State::Pending,
            reason: None,
            runs: Vec::new(),
            measurements: Vec::new(),
            stored_before: false,
            retries_left: d.retries,
            probes_left: d.probes,
            failed_probes: Vec::new(),
        };
        let checked = p.config.map_err(|diag| {
            eprint!("{diag}");
            eprintln!();
            let first = diag.errors().next().map_or_else(
                || "invalid".to_string(),
                |e| format!("{}: {}", e.path, e.message),
            );
            (State::Invalid, first)
        });
        let planned = checked.and_then(|config| {
            let config = config
                .with_overrides(&d.options.overrides)
                .map_err(|e| (State::Invalid, e.to_string()))?;
            let engine = crate::prepare::engine_of(&config, d.options.engine);
            let plan = crate::prepare::make_plan(&config, d.cluster, Placement::Upstream, engine)
                .map_err(|e| (State::Invalid, format!("{e:#}")))?;
            Ok((config, plan))
        });
        match planned {
            Ok((config, plan)) => {
                if let Some(why) = d
                    .spec
                    .constraints
                    .broken_by(plan.total_nodes, plan.total_gpus)
                {
                    point.state = State::Skipped;
                    point.reason = Some(why);
                }
                point.config = Some(config);
                point.plan = Some(plan);
            }
            Err((state, why)) => {
                problems += 1;
                point.state = state;
                point.reason = Some(why);
            }
        }
        points.push(point);
    }
    if problems > 0 {
        eprintln!(
            "warning: {problems} of {} points break a rule and are skipped (problems above)",
            points.len()
        );
    }
    for p in points.iter().filter(|p| p.state == State::Skipped) {
        eprintln!(
            "skipped: {} ({})",
            p.name,
            p.reason.as_deref().unwrap_or_default()
        );
    }
    if !points.iter().any(|p| p.state == State::Pending) {
        return Err(InvalidInput(format!(
            "{}: none of its {} points can run (every one is invalid or breaks a constraint)",
            d.spec.path().display(),
            points.len()
        ))
        .into());
    }
    Ok(points)
}

/// The engine the points run (all share the base's engine section and the flags).
pub(crate) fn engine(points: &[Point], options: &RunOptions) -> EngineKind {
    points
        .iter()
        .find_map(|p| p.config.as_ref())
        .map_or(EngineKind::Sim, |c| {
            crate::prepare::engine_of(c, options.engine)
        })
}

/// Write every point's config file (also those that cannot run: a person reads them).
pub(crate) fn write(points: &[Point], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    for p in points {
        crate::rundir::write_atomic(&p.file, &p.text)?;
    }
    Ok(())
}
