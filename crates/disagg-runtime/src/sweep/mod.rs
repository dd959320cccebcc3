//! `disagg sweep SPEC`: a search over configs. The spec's axes are expanded into derived
//! upstream-schema configs (`DIR/points/`, named as upstream names configs), all validated and
//! planned before anything runs; points that break a rule or a constraint are listed and
//! skipped. Each point then runs as an ordinary run — `disagg run` locally, `disagg submit` on
//! a Slurm cluster — at most `--max-parallel` at once ([`crate::queue`]), its records stored as
//! usual and tagged with the sweep id and the point's key (the content hash of its config, its
//! flags and the cluster). A re-run with `--resume` skips the points already stored valid, so a
//! sweep that was stopped completes only what is missing. The answer: `sweep.json` (every point,
//! its state, runs and measurements), `frontier.json` (the Pareto set of output tok/s per GPU
//! versus tok/s per user), `report.html`, and the best point under the SLA — optionally after
//! bisecting each point's concurrency to the highest that meets it (`--sla-search`).
//!
//! Module map: `points` (derive, validate, plan, identify), `estimate` (`--dry-run`'s cost
//! figures), `exec` (the runs, the live table, retries and SLA probes).

mod estimate;
pub(crate) mod exec;
mod points;

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use disagg_config::{Sla, SweepSpec};
use disagg_results::store::Store;
use disagg_results::sweep::{SWEEP_VERSION, SweepDoc, best_under_sla};

use crate::error::InvalidInput;
use crate::events::at;
use crate::exit::ExitStatus;
use crate::now_ms;
use crate::prepare::{RunOptions, load_cluster};
use crate::rundir::write_atomic;
use points::State;

/// A sweep, as the command line asks for it.
#[derive(Debug, Clone, Default)]
pub struct SweepRequest {
    /// The spec file.
    pub spec: PathBuf,
    /// Where a base given as a test id is looked up [default: the spec's directory].
    pub config_dir: Option<PathBuf>,
    /// The sweep's directory (default: `sweeps/<spec name>`).
    pub out: Option<PathBuf>,
    /// The clusters file (`--clusters`).
    pub clusters_file: Option<PathBuf>,
    /// The cluster profile; `None`: every point runs on this machine.
    pub cluster: Option<String>,
    /// Most points in flight [default: 1 locally, 4 on Slurm].
    pub max_parallel: Option<usize>,
    /// Print the points, their plans and the estimated cost; run nothing.
    pub dry_run: bool,
    /// Complete the sweep in `out`: skip the points already stored valid.
    pub resume: bool,
    /// Retries of a point that failed on the infrastructure (never of a test failure).
    pub retry_failed: u32,
    /// The SLA, over the spec's.
    pub sla: Option<Sla>,
    /// Bisect each point's concurrency to the highest that meets the SLA.
    pub sla_search: bool,
    /// Most extra runs per point of the SLA search.
    pub sla_search_runs: u32,
    /// The results store (`--db`).
    pub db: Option<PathBuf>,
    /// The run flags every point runs with.
    pub options: RunOptions,
}

/// The spec's base config: a file next to the spec (or as given), else a test id under
/// `config_dir` (default: the spec's directory).
fn base_path(spec: &SweepSpec, config_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let spec_dir = spec
        .path()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let beside = spec_dir.join(&spec.base);
    if beside.is_file() {
        return Ok(beside);
    }
    if Path::new(&spec.base).is_file() {
        return Ok(PathBuf::from(&spec.base));
    }
    let dir = config_dir.unwrap_or(spec_dir);
    disagg_config::config_path(&spec.base, dir)
        .with_context(|| format!("{}: base `{}`", spec.path().display(), spec.base))
}

/// What `disagg validate` finds in a sweep spec: the spec's own problems are the error (with
/// diagnostics); otherwise every derived point, validated, and the spec's warnings.
pub struct SpecCheck {
    /// How many points the spec derives.
    pub points: usize,
    /// The points that are not valid configs, by name, with every problem.
    pub invalid: Vec<(String, disagg_config::Diagnostics)>,
    /// The spec's warnings (axis paths the base does not have).
    pub warnings: disagg_config::Diagnostics,
}

/// Validate a sweep spec and every point it derives, without writing or running anything.
/// `config_dir`: where a base given as a test id is looked up (default: the spec's directory).
pub fn check_spec(path: &Path, config_dir: Option<&Path>) -> anyhow::Result<SpecCheck> {
    let spec = SweepSpec::load(path)?;
    let (base, base_text) = read_base(&spec, config_dir)?;
    let (derived, warnings) = spec.points(&base, &base_text, Path::new("points"))?;
    let points = derived.len();
    let invalid = derived
        .into_iter()
        .filter_map(|p| p.config.err().map(|d| (p.name, d)))
        .collect();
    Ok(SpecCheck {
        points,
        invalid,
        warnings,
    })
}

/// The spec's base config ([`base_path`]) and its text.
fn read_base(spec: &SweepSpec, config_dir: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let base = base_path(spec, config_dir)?;
    let text = std::fs::read_to_string(&base).with_context(|| {
        format!(
            "{}: cannot read its base {}",
            spec.path().display(),
            base.display()
        )
    })?;
    Ok((base, text))
}

/// Run (or with `dry_run` only price) the sweep; the exit status: 130 when interrupted, 1 when a
/// point failed, else 0.
pub fn sweep(req: &SweepRequest) -> anyhow::Result<ExitStatus> {
    let t0 = Instant::now();
    let spec = SweepSpec::load(&req.spec).map_err(|e| {
        if let Some(d) = e.diagnostics() {
            eprint!("{d}");
            eprintln!();
        }
        anyhow::Error::new(e)
    })?;
    let (base, base_text) = read_base(&spec, req.config_dir.as_deref())?;
    let stem = req
        .spec
        .file_stem()
        .map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().into_owned());
    let dir = req
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("sweeps").join(&stem));
    let doc_path = dir.join("sweep.json");
    if doc_path.exists() && !req.resume && !req.dry_run {
        return Err(InvalidInput(format!(
            "{} already holds a sweep; --resume completes it (points stored valid are skipped), or give another --out",
            dir.display()
        ))
        .into());
    }
    let previous: Option<SweepDoc> = std::fs::read_to_string(&doc_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let cluster = req
        .cluster
        .as_deref()
        .map(|name| load_cluster(req.clusters_file.as_deref(), name))
        .transpose()?;
    let sla = req.sla.clone().or_else(|| spec.sla.clone());
    if req.sla_search && sla.is_none() {
        return Err(InvalidInput(
            "--sla-search needs an SLA: `sla:` in the spec or --sla KEY=MS,...".to_string(),
        )
        .into());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let points_dir = dir.join("points");
    let mut points = points::derive(&points::Derivation {
        spec: &spec,
        base_path: &base,
        base_text: &base_text,
        points_dir: &points_dir,
        options: &req.options,
        cluster: cluster.as_ref(),
        cluster_name: req.cluster.as_deref(),
        retries: req.retry_failed,
        probes: if req.sla_search {
            req.sla_search_runs
        } else {
            0
        },
    })?;
    points::write(&points, &points_dir)?;
    let base_config = points.iter().find_map(|p| p.config.as_ref());
    let db = crate::store::store_path(req.db.as_deref(), base_config);
    let store = Store::open(&db)?;
    for p in points.iter_mut().filter(|p| p.state == State::Pending) {
        p.refresh(&store, sla.as_ref())?;
        if p.covered() {
            p.state = State::Passed;
            p.stored_before = true;
        }
    }
    let max_parallel = req
        .max_parallel
        .unwrap_or(if req.cluster.is_some() { 4 } else { 1 })
        .max(1);
    if req.dry_run {
        dry_run(&points, &store, req, max_parallel)?;
        return Ok(ExitStatus::Success);
    }
    let sweep_id = previous
        .as_ref()
        .map(|d| d.sweep_id.clone())
        .unwrap_or_else(|| {
            let stamp = disagg_results::junit::iso8601(now_ms()).replace([':', '-'], "");
            format!("{stem}-{stamp}")
        });
    let started_unix_ms = previous.as_ref().map_or_else(now_ms, |d| d.started_unix_ms);
    let launch = exec::Launch {
        exe: std::env::current_exe().context("cannot locate the disagg binary")?,
        clusters_file: req.clusters_file.clone(),
        cluster: req.cluster.clone(),
        db: db.clone(),
        options: req.options.clone(),
        dir: dir.clone(),
        sweep_id: sweep_id.clone(),
    };
    let stored = points.iter().filter(|p| p.stored_before).count();
    let to_run = points.iter().filter(|p| p.state == State::Pending).count();
    eprintln!(
        "{} sweep {sweep_id}: {} points ({to_run} to run, {stored} stored valid, {} invalid, {} skipped), at most {max_parallel} in flight, {}",
        at(t0),
        points.len(),
        points.iter().filter(|p| p.state == State::Invalid).count(),
        points.iter().filter(|p| p.state == State::Skipped).count(),
        req.cluster
            .as_deref()
            .map_or_else(|| "local".to_string(), |c| format!("Slurm cluster `{c}`"))
    );
    let (interrupted, runs_made) = {
        let mut driver = exec::SweepDriver {
            points: &mut points,
            launch: &launch,
            store: &store,
            sla: sla.as_ref(),
            sla_search: req.sla_search,
            t0,
            terminal: std::io::stderr().is_terminal(),
            inflight: Default::default(),
            shown: 0,
            runs_made: 0,
        };
        let jobs = driver.first_jobs();
        let interrupted = crate::queue::run(jobs, max_parallel, &mut driver)?;
        (interrupted, driver.runs_made)
    };
    let doc = SweepDoc {
        sweep_version: SWEEP_VERSION,
        sweep_id,
        spec: std::fs::canonicalize(&req.spec)
            .unwrap_or_else(|_| req.spec.clone())
            .display()
            .to_string(),
        base: base.display().to_string(),
        launcher: req
            .cluster
            .as_deref()
            .map_or_else(|| "local".to_string(), |c| format!("slurm:{c}")),
        max_parallel,
        sla: sla.clone(),
        started_unix_ms,
        updated_unix_ms: now_ms(),
        elapsed_s: t0.elapsed().as_secs_f64(),
        points: points.iter().map(|p| p.doc(req.sla_search)).collect(),
        best: None,
    };
    let best = best_under_sla(&doc.measurements()).map(|i| doc.measurements()[i].clone());
    let doc = SweepDoc { best, ..doc };
    write_outputs(&dir, &doc)?;
    print_answer(&doc, &dir, runs_made, stored)?;
    Ok(if interrupted {
        ExitStatus::Interrupted
    } else if points
        .iter()
        .any(|p| matches!(p.state, State::Failed | State::Interrupted))
    {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// `sweep.json`, `frontier.json`, `report.html`.
fn write_outputs(dir: &Path, doc: &SweepDoc) -> anyhow::Result<()> {
    write_atomic(
        &dir.join("sweep.json"),
        &(serde_json::to_string_pretty(doc)? + "\n"),
    )?;
    write_atomic(
        &dir.join("frontier.json"),
        &(serde_json::to_string_pretty(&doc.frontier())? + "\n"),
    )?;
    write_atomic(
        &dir.join("report.html"),
        &disagg_results::report::render_sweep(doc),
    )?;
    Ok(())
}

/// `disagg report DIR` of a sweep's directory: its page again, from `sweep.json`.
pub fn report(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(dir.join("sweep.json"))
        .with_context(|| format!("{}: no sweep.json", dir.display()))?;
    let doc: SweepDoc = serde_json::from_str(&text)
        .with_context(|| format!("{}/sweep.json: not a disagg sweep", dir.display()))?;
    let path = dir.join("report.html");
    write_atomic(&path, &disagg_results::report::render_sweep(&doc))?;
    Ok(path)
}

/// The frontier and the SLA answer on stdout.
fn print_answer(doc: &SweepDoc, dir: &Path, runs_made: usize, stored: usize) -> anyhow::Result<()> {
    let all = doc.measurements();
    let frontier = doc.frontier();
    let mut out = std::io::stdout().lock();
    let count = |s: &str| doc.points.iter().filter(|p| p.state == s).count();
    writeln!(
        out,
        "sweep {}: {} points — {} passed ({stored} already stored), {} failed, {} interrupted, {} invalid, {} skipped, {} pending; {runs_made} runs made",
        doc.sweep_id,
        doc.points.len(),
        count("passed"),
        count("failed"),
        count("interrupted"),
        count("invalid"),
        count("skipped"),
        count("pending"),
    )?;
    writeln!(
        out,
        "frontier ({} of {} measurements):",
        frontier.points.len(),
        all.len()
    )?;
    let w = frontier
        .points
        .iter()
        .map(|m| m.point.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<w$} {:>5} {:>13} {:>10} {:>10} {:>10}  SLA",
        "point", "con", "out tok/s/GPU", "tok/s/usr", "TTFT p99", "TPOT p50"
    )?;
    for m in &frontier.points {
        let lat = |k: &str| {
            m.latency_ms
                .get(k)
                .map_or("-".to_string(), |v| format!("{v:.1}ms"))
        };
        writeln!(
            out,
            "{:<w$} {:>5} {:>13.1} {:>10.1} {:>10} {:>10}  {}",
            m.point,
            m.concurrency,
            m.output_tok_s_per_gpu,
            m.user_tok_s,
            lat("p99_ttft"),
            lat("median_tpot"),
            match m.meets_sla {
                None => "",
                Some(true) => "meets",
                Some(false) => "misses",
            }
        )?;
    }
    for p in doc
        .points
        .iter()
        .filter(|p| p.state == "failed" || p.state == "interrupted")
    {
        writeln!(
            out,
            "{} {}: {}",
            p.state,
            p.name,
            p.reason.as_deref().unwrap_or_default()
        )?;
    }
    match (&doc.sla, &doc.best) {
        (Some(sla), Some(b)) => {
            let config = doc
                .points
                .iter()
                .find(|p| p.name == b.point)
                .map_or(String::new(), |p| p.config.clone());
            writeln!(
                out,
                "best under the SLA ({sla}): {} at concurrency {}: {:.1} output tok/s per GPU, {:.1} tok/s per user\n  config: {config}",
                b.point, b.concurrency, b.output_tok_s_per_gpu, b.user_tok_s
            )?;
        }
        (Some(sla), None) => writeln!(out, "no measurement meets the SLA ({sla})")?,
        (None, _) => {}
    }
    for p in doc
        .points
        .iter()
        .filter_map(|p| Some((p, p.sla_concurrency?)))
    {
        writeln!(
            out,
            "SLA concurrency of {}: {}",
            p.0.name,
            if p.1 == 0 {
                "none meets it".to_string()
            } else {
                p.1.to_string()
            }
        )?;
    }
    writeln!(
        out,
        "results: {}/sweep.json, frontier.json, report.html",
        dir.display()
    )?;
    Ok(())
}

/// Every point, its plan and its estimated cost; the totals.
fn dry_run(
    points: &[points::Point],
    store: &Store,
    req: &SweepRequest,
    max_parallel: usize,
) -> anyhow::Result<()> {
    let slurm = req.cluster.is_some();
    let engine = points::engine(points, &req.options);
    let mut out = std::io::stdout().lock();
    let w = points
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<w$} {:>5} {:>5} {:>5} {:<9} {:>16} {:>8}  axes",
        "point", "nodes", "GPUs", "idle", "state", "estimate", "GPU-h"
    )?;
    let mut durations = Vec::new();
    let (mut gpu_hours, mut bounded) = (0.0, false);
    for p in points {
        let plan = p.plan.as_ref();
        let state = match p.state {
            State::Pending => "run",
            State::Passed => "stored",
            State::Invalid => "invalid",
            State::Skipped => "skipped",
            _ => "-",
        };
        let est = (p.state == State::Pending)
            .then(|| estimate::estimate(p, Some(store), &req.options, slurm))
            .flatten();
        let (est_text, gh) = match est {
            Some(e) => {
                durations.push(e.seconds);
                bounded |= e.source == "limit";
                let gh = e.seconds * f64::from(plan.map_or(0, |p| p.total_gpus)) / 3600.0;
                gpu_hours += gh;
                let prefix = if e.source == "limit" { "≤" } else { "" };
                (
                    format!("{prefix}{} ({})", duration(e.seconds), e.source),
                    format!("{gh:.3}"),
                )
            }
            None => ("-".to_string(), "-".to_string()),
        };
        let axes: Vec<String> = p
            .assignments
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            out,
            "{:<w$} {:>5} {:>5} {:>5} {:<9} {:>16} {:>8}  {}",
            p.name,
            plan.map_or("-".to_string(), |p| p.total_nodes.to_string()),
            plan.map_or("-".to_string(), |p| p.total_gpus.to_string()),
            plan.map_or("-".to_string(), |p| p.idle_gpus.to_string()),
            state,
            est_text,
            gh,
            axes.join(" ")
        )?;
        if let Some(why) = &p.reason {
            writeln!(out, "    {state}: {why}")?;
        }
    }
    let wall = estimate::makespan(&durations, max_parallel);
    let bound = if bounded { "at most " } else { "" };
    writeln!(
        out,
        "{} to run on {} ({engine} engine): {bound}{gpu_hours:.3} GPU-hours, wall time {bound}{} at --max-parallel {max_parallel} (sequentially {})",
        durations.len(),
        req.cluster
            .as_deref()
            .map_or_else(|| "this machine".to_string(), |c| format!("cluster `{c}`")),
        duration(wall),
        duration(durations.iter().sum())
    )?;
    writeln!(
        out,
        "points written to {}",
        points
            .first()
            .and_then(|p| p.file.parent())
            .map_or(String::new(), |d| d.display().to_string())
    )?;
    Ok(())
}

/// `42 s`, `12 min`, `3.5 h`.
fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}
