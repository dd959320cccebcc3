//! `disagg report RUN [--compare RUN...] [--history] [--pdf]`: what a run directory and the
//! store hold of a run, rendered by [`disagg_results::report`] as one self-contained HTML file
//! (and a PDF through headless Chromium).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use disagg_results::check::maximizes;
use disagg_results::report::{self, History, RunData};
use disagg_results::store::Store;
use disagg_results::summary::Summary;

use crate::conclude::StoreTo;
use crate::error::Hint;
use crate::rundir::{RunDir, write_atomic};
use crate::spec::RunSpec;

/// What the report shows of one run directory.
fn run_data(dir: &Path, name: Option<String>) -> anyhow::Result<RunData> {
    let run = RunDir::open(dir);
    let summary_path = run.results_dir().join("summary.json");
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).with_context(|| {
            format!(
                "{}: no summary; is this a finished run directory?",
                summary_path.display()
            )
        })?)
        .with_context(|| format!("{}: not a disagg summary", summary_path.display()))?;
    let records = disagg_results::load_records(&run.results_dir())?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let spec = RunSpec::read(&run).ok();
    let plan: serde_json::Value = std::fs::read_to_string(dir.join("plan.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // GPUs the servers use (idle GPUs of a node do not produce tokens).
    let gpus = plan["servers"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["gpus"].as_u64()).sum::<u64>() as u32)
        .unwrap_or(1);
    let mut config_text = spec
        .as_ref()
        .and_then(|s| std::fs::read_to_string(dir.join(&s.config_file)).ok())
        .unwrap_or_default();
    // A config may carry its own internal_request_auth_key: the report shows the config, never
    // the key (a report is made to be passed around).
    if let Ok(key) = run.auth_key() {
        config_text = config_text.replace(key.expose_secret(), "<redacted>");
    }
    let mut meta = vec![
        ("config".to_string(), summary.config.clone()),
        ("run directory".to_string(), summary.run_dir.clone()),
        (
            "outcome".to_string(),
            format!("{:?}", summary.outcome).to_lowercase(),
        ),
        (
            "plan".to_string(),
            format!(
                "{} nodes, {} GPUs ({} used by servers), mode {}",
                plan["total_nodes"], plan["total_gpus"], gpus, plan["mode"]
            ),
        ),
    ];
    if let Some(s) = &spec {
        meta.push(("engine".into(), s.engine.to_string()));
        let roles: Vec<String> = s.roles.iter().map(ToString::to_string).collect();
        meta.push(("roles".into(), roles.join(", ")));
        meta.push(("overrides".into(), serde_json::to_string(&s.overrides)?));
    }
    if let Some(r) = summary.first_request_s {
        meta.push(("first request after".into(), format!("{r:.2} s")));
    }
    if let Ok(job) = std::fs::read_to_string(dir.join("job.json")) {
        meta.push((
            "Slurm job".into(),
            job.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    meta.push((
        "report by".into(),
        format!("disagg {}", env!("CARGO_PKG_VERSION")),
    ));
    Ok(RunData {
        name: name.unwrap_or_else(|| summary.config.clone()),
        summary,
        records,
        gpus,
        meta,
        config_text,
    })
}

/// The checks and histories of a run from the store (empty when it holds nothing of it).
fn checks_and_history(
    dir: &Path,
    db: Option<&Path>,
    with_history: bool,
) -> anyhow::Result<(Vec<disagg_results::check::Row>, Vec<History>)> {
    let mut store = Store::open(&crate::store::run_store_path(db, Some(dir)))?;
    let run = RunDir::open(dir);
    let (runs, config) = crate::store::stored_runs(&mut store, &run)?;
    let gate = crate::store::config_gate(config.as_ref());
    let histories = crate::store::histories(&store, &run, &runs, gate.pre_merge)?;
    let mut rows = Vec::new();
    let mut charts = Vec::new();
    for (r, history) in runs.iter().zip(&histories) {
        let checked = disagg_results::check::check_run(r, history, None, &gate);
        if with_history {
            for row in &checked {
                let mut points: Vec<(u64, f64)> = history
                    .iter()
                    .filter(|h| h.valid)
                    .filter_map(|h| Some((h.created_unix_ms, *h.metrics.get(&row.metric)?)))
                    .collect();
                points.push((r.created_unix_ms, row.value));
                charts.push(History {
                    label: r.label.clone(),
                    metric: row.metric.clone(),
                    points,
                    baseline: row.baseline,
                    threshold: row.threshold,
                    maximize: maximizes(&row.metric).unwrap_or(true),
                });
            }
        }
        rows.extend(checked);
    }
    Ok((rows, charts))
}

/// Print `html` to PDF with headless Chromium (Debian's `chromium`).
fn print_pdf(html: &Path, pdf: &Path) -> anyhow::Result<()> {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| {
            anyhow::Error::new(Hint(
                "install it: apt-get install chromium (the HTML report is complete without it)"
                    .into(),
            ))
            .context("--pdf needs headless Chromium (chromium) on PATH")
        })?;
    let profile = tempfile_dir()?;
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .context("cannot run chromium")?;
    let _ = std::fs::remove_dir_all(&profile);
    if !pdf.exists() {
        bail!(
            "chromium wrote no PDF: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("disagg-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// What to put in a report.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    /// The run directory.
    pub run: PathBuf,
    /// Runs to compare with (grouped bars per metric, as upstream's comparison report).
    pub compare: Vec<PathBuf>,
    /// The history of each gated metric with its baseline band.
    pub history: bool,
    /// Where to write it [default: RUN/results/report.html].
    pub out: Option<PathBuf>,
    /// The store the check table and history come from (`Off`: none).
    pub store: StoreTo,
}

/// Write the report's HTML file; returns its path. A sweep's directory (`sweep.json`) gets its
/// sweep page (`DIR/report.html`).
pub fn write(req: &ReportRequest) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(&req.run)
        .with_context(|| format!("no run directory {}", req.run.display()))?;
    if dir.join("sweep.json").exists() && !dir.join("run.json").exists() {
        return crate::sweep::report(&dir);
    }
    let main = run_data(&dir, None)?;
    let (checks, history) = match &req.store {
        StoreTo::Off => (Vec::new(), Vec::new()),
        StoreTo::Default => checks_and_history(&dir, None, req.history)?,
        StoreTo::At(db) => checks_and_history(&dir, Some(db), req.history)?,
    };
    let mut compare = Vec::new();
    if !req.compare.is_empty() {
        compare.push(run_data(&dir, None)?);
        for c in &req.compare {
            let d = std::fs::canonicalize(c)
                .with_context(|| format!("--compare: no run directory {}", c.display()))?;
            compare.push(run_data(&d, None)?);
        }
    }
    let html = report::render(&main, &checks, &history, &compare);
    let path = req
        .out
        .clone()
        .unwrap_or_else(|| dir.join("results").join("report.html"));
    write_atomic(&path, &html)?;
    Ok(path)
}

/// Print the report at `html` to a PDF beside it; returns the PDF's path.
pub fn pdf(html: &Path) -> anyhow::Result<PathBuf> {
    let pdf = html.with_extension("pdf");
    print_pdf(html, &pdf)?;
    Ok(pdf)
}
