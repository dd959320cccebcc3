//! A run directory and the results store: store its records (with their upstream identity),
//! upload them to OpenSearch when one is configured, check them against their baselines.

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::Context as _;
use std::path::{Path, PathBuf};

use disagg_config::TestConfig;
use disagg_results::check::{self, Gate, Row};
use disagg_results::identity::{
    baseline_branch, identity, job_fields, match_key, match_values, post_merge,
};
use disagg_results::opensearch::{self, Target};
use disagg_results::store::{self, NewRun, Store, StoredRun};
use serde_json::Value;

use crate::conclude::StoreTo;
use crate::rundir::{RunDir, write_atomic};
use crate::spec::RunSpec;

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The store: `db`, else `$DISAGG_DB`, else the XDG data location.
pub fn open_store(db: Option<&Path>) -> anyhow::Result<Store> {
    let path = db
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DISAGG_DB").map(PathBuf::from))
        .unwrap_or_else(store::default_path);
    Ok(Store::open(&path)?)
}

/// The store a run of `config` writes to: `flag` (`--db`), else `$DISAGG_DB`, else the config's
/// `results.db` (`~/` expanded), else the default.
pub fn store_path(flag: Option<&Path>, config: Option<&TestConfig>) -> PathBuf {
    let from_config = config
        .and_then(|c| c.extensions().results.as_ref())
        .and_then(|r| r.db.as_deref())
        .map(|p| match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(p),
        });
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DISAGG_DB").map(PathBuf::from))
        .or(from_config)
        .unwrap_or_else(store::default_path)
}

/// The store of the run in `dir` (when it is one): `flag` (`--db`), else `$DISAGG_DB`, else its
/// config's `results.db`, else the default — where `disagg run` stored it.
pub fn run_store_path(flag: Option<&Path>, dir: Option<&Path>) -> PathBuf {
    let config = dir.map(RunDir::open).and_then(|run| {
        let spec = RunSpec::read(&run).ok()?;
        crate::prepare::load_run_config(&run, &spec).ok()
    });
    store_path(flag, config.as_ref())
}

/// A run directory's stored records — stored first when it is a run made by `disagg run` or
/// `submit` — and its config when it has one.
pub fn stored_runs(
    store: &mut Store,
    run: &RunDir,
) -> anyhow::Result<(Vec<StoredRun>, Option<TestConfig>)> {
    if !RunSpec::path(run).exists() {
        return Ok((store.by_run_dir(&run.root().display().to_string())?, None));
    }
    let spec = RunSpec::read(run)?;
    let config = crate::prepare::load_run_config(run, &spec)?;
    let runs = store_run_dir(store, run, &spec, &config)?;
    Ok((runs, Some(config)))
}

/// Store every record of a run directory (idempotent); returns the stored runs.
fn store_run_dir(
    store: &mut Store,
    run: &RunDir,
    spec: &RunSpec,
    config: &TestConfig,
) -> anyhow::Result<Vec<StoredRun>> {
    let config_text = std::fs::read_to_string(run.root().join(&spec.config_file))?;
    let mut job = job_fields(&env);
    // The coordinator and policy that ran: not part of the case, but in every record.
    if let Some(r) = &spec.router {
        job.insert(
            "s_router_implementation".into(),
            r.implementation.clone().into(),
        );
        job.insert("s_router_policy".into(), r.policy.clone().into());
    }
    let post = post_merge(&env);
    let dir = run.root().display().to_string();
    // A run that failed is no baseline, even for the concurrencies that finished.
    let failed: Option<String> = std::fs::read_to_string(run.results_dir().join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<disagg_results::Summary>(&t).ok())
        .filter(|s| s.outcome == disagg_results::Outcome::Failed)
        .map(|s| s.reason.unwrap_or_else(|| "the run failed".to_string()));
    let config_hash = store::content_hash(&config_text);
    let mut records = Vec::new();
    for (_, mut record) in disagg_results::load_records(&run.results_dir())? {
        if let Some(why) = &failed {
            if record.valid {
                record.valid = false;
                record
                    .invalid_reasons
                    .push(format!("the run failed: {why}"));
            }
        }
        let id = identity(config, spec.engine, spec.gpu_type.as_deref(), &record);
        records.push((id, record));
    }
    // One transaction for the whole run: a reader (a sweep deciding what is left, a report)
    // sees every concurrency of it or none.
    let new: Vec<NewRun<'_>> = records
        .iter()
        .map(|(id, record)| NewRun {
            run_dir: &dir,
            config_name: config.name(),
            config_hash: &config_hash,
            identity: id,
            job: &job,
            post_merge: post,
            created_unix_ms: spec.created_unix_ms,
            record,
        })
        .collect();
    store.insert_run(&new)?;
    Ok(store.by_run_dir(&dir)?)
}

/// Upload the store's unsent runs to the configured OpenSearch, if any: how many, and the
/// error when the upload failed (logged in the store and retried by the next push; it never
/// fails the test).
pub fn push(store: &Store) -> anyhow::Result<Option<(usize, Option<String>)>> {
    let Some(target) = Target::from_env(&env) else {
        return Ok(None);
    };
    let unsent = store.unsent(&target.key())?;
    let docs: Vec<_> = unsent.iter().map(opensearch::document).collect();
    let result = target.post(&docs);
    for r in &unsent {
        store.log_upload(
            r.id,
            &target.key(),
            result.as_ref().err().map(String::as_str),
        )?;
    }
    Ok(Some((unsent.len(), result.err())))
}

/// The case whose history a record is checked against: its match values, with the baseline
/// branch for its own in a pre-merge check (upstream keys history on `s_branch`).
fn case_of(run: &StoredRun, pre_merge: bool) -> (BTreeMap<String, Value>, String) {
    let mut values = match_values(&run.identity, &run.job);
    if pre_merge {
        let own = values
            .get("s_branch")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        values.insert("s_branch".into(), baseline_branch(&own, &env).into());
    }
    let key = match_key(&values);
    (values, key)
}

/// With an OpenSearch configured, its history of the case (runs this store does not have), by
/// upstream's query.
fn remote_history(
    case: &BTreeMap<String, Value>,
    since: u64,
    dir: &str,
    local: &[StoredRun],
) -> Result<Vec<StoredRun>, String> {
    let Some(target) = Target::from_env(&env) else {
        return Ok(Vec::new());
    };
    Ok(target
        .history(case, since)
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
        .filter_map(|(i, d)| opensearch::from_document(i, d))
        .filter(|h| h.run_dir != dir)
        .filter(|h| {
            !local
                .iter()
                .any(|l| l.run_dir == h.run_dir && l.label == h.label)
        })
        .collect())
}

/// The history of every stored record of a run (local store, and OpenSearch when configured):
/// the records of its case (for a pre-merge check, on the baseline branch) in the window.
pub fn histories(
    store: &Store,
    run: &RunDir,
    runs: &[StoredRun],
    pre_merge: bool,
) -> anyhow::Result<Vec<Vec<StoredRun>>> {
    let dir = run.root().display().to_string();
    // After one failed search the results server is not asked again for this run: a server that
    // hangs would otherwise cost its timeout once per record.
    let mut remote_ok = true;
    runs.iter()
        .map(|r| {
            let since = disagg_results::baseline::window_start(r.created_unix_ms);
            let (values, key) = case_of(r, pre_merge);
            let mut history = store.history(&key, since, &dir)?;
            if remote_ok {
                match remote_history(&values, since, &dir, &history) {
                    Ok(remote) => history.extend(remote),
                    Err(e) => {
                        eprintln!(
                            "warning: OpenSearch history not read ({e}); using the local store only"
                        );
                        remote_ok = false;
                    }
                }
            }
            history.sort_by_key(|h| h.created_unix_ms);
            Ok(history)
        })
        .collect()
}

/// The gate without flags: pre-merge from the environment, thresholds from the config, the
/// metrics upstream gates for it.
pub fn config_gate(config: Option<&TestConfig>) -> Gate {
    let results = config.and_then(|c| c.extensions().results.as_ref());
    let mut gate = Gate::from_config(results, post_merge(&env));
    if let Some(c) = config {
        gate.metrics = check::upstream_gated(c);
    }
    gate
}

/// Check every stored record of a run; write `results/regression.yaml`; true if one regressed.
pub fn check_stored(
    store: &Store,
    run: &RunDir,
    runs: &[StoredRun],
    gate: &Gate,
    pinned: Option<&BTreeMap<String, f64>>,
) -> anyhow::Result<(Vec<Row>, bool)> {
    let mut rows = Vec::new();
    for (r, history) in runs
        .iter()
        .zip(histories(store, run, runs, gate.pre_merge)?)
    {
        rows.extend(check::check_run(r, &history, pinned, gate));
        // What the record carries when it is exported: b_is_regression, the info, and after
        // merge the inherited baseline fields.
        store.record_verdict(r.id, &check::verdict(r, &history, pinned, gate))?;
    }
    let regressed = rows.iter().any(|r| r.verdict == "regression");
    let name = runs.first().map_or("", |r| r.config_name.as_str());
    write_atomic(
        &run.results_dir().join("regression.yaml"),
        &check::regression_yaml(name, &rows),
    )?;
    Ok((rows, regressed))
}

/// After a run: store, push, and (`check`: when the test itself passed) check. Returns whether
/// the check found a regression. A store that cannot be written is a warning: the results stay
/// in the run directory and `disagg results import RUN` stores them later.
pub fn after_run(
    run: &RunDir,
    spec: &RunSpec,
    to: &StoreTo,
    config: &TestConfig,
    check: bool,
) -> bool {
    match store_and_check(run, spec, to, config, check) {
        Ok(regressed) => regressed,
        Err(e) => {
            eprintln!(
                "warning: results not stored ({e:#}); `disagg results import {}` stores them later",
                run.root().display()
            );
            false
        }
    }
}

fn store_and_check(
    run: &RunDir,
    spec: &RunSpec,
    to: &StoreTo,
    config: &TestConfig,
    check: bool,
) -> anyhow::Result<bool> {
    let flag = match to {
        StoreTo::At(p) => Some(p.as_path()),
        StoreTo::Default | StoreTo::Off => None,
    };
    let mut store = Store::open(&store_path(flag, Some(config)))?;
    let runs = store_run_dir(&mut store, run, spec, config)?;
    // Check before the export, as upstream does, so the documents carry the verdict.
    let regressed = if check {
        let gate = config_gate(Some(config));
        let (rows, regressed) = check_stored(&store, run, &runs, &gate, None)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "check (post-merge {}):", !gate.pre_merge)?;
        write!(out, "{}", check::table(&rows))?;
        // The benchmark already printed an invalid run's diagnosis under its line.
        for d in diagnoses(run, &rows)
            .iter()
            .filter(|d| d.what == "regressed")
        {
            write!(out, "{}", d.text())?;
        }
        regressed
    } else {
        false
    };
    if let Some((n, err)) = push(&store)? {
        match err {
            None => eprintln!("exported {n} record(s) to OpenSearch"),
            Some(e) => eprintln!(
                "warning: OpenSearch export failed ({e}); kept as unsent, `disagg results push` retries"
            ),
        }
    }
    Ok(regressed)
}

/// The telemetry diagnosis of each invalid or regressed run of the run directory; a record
/// file that cannot be read only costs its diagnosis.
fn diagnoses(run: &RunDir, rows: &[Row]) -> Vec<disagg_results::diagnosis::Diagnosis> {
    let records: Vec<disagg_results::RunRecord> = disagg_results::load_records(&run.results_dir())
        .unwrap_or_default()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    disagg_results::diagnosis::Diagnosis::of_all(&records, rows)
}

/// `disagg check`: which run, and how.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    /// The run directory; `None`: the run stored last.
    pub run: Option<PathBuf>,
    /// The database (`--db`).
    pub db: Option<PathBuf>,
    /// A pre-merge check (also `DISAGG_PRE_MERGE=1`).
    pub pre_merge: bool,
    /// A pinned baseline file.
    pub baseline: Option<PathBuf>,
    /// Gated metrics (empty: the config's, else upstream's).
    pub metrics: Vec<String>,
    /// `metric=fraction` thresholds.
    pub thresholds: Vec<String>,
}

/// What a check found.
pub struct Checked {
    /// One row per gated metric and concurrency.
    pub rows: Vec<Row>,
    /// Whether one regressed.
    pub regressed: bool,
    /// Where `regression.yaml` was written.
    pub written: PathBuf,
    /// What the telemetry says of each invalid or regressed run (records of the run directory
    /// that carry telemetry).
    pub diagnoses: Vec<disagg_results::diagnosis::Diagnosis>,
}

/// Store the run's records when they are not yet, and check them against their baselines.
pub fn check(req: &CheckRequest) -> anyhow::Result<Checked> {
    let (mut store, dir) = match &req.run {
        Some(d) => {
            let dir = std::fs::canonicalize(d)
                .with_context(|| format!("no run directory {}", d.display()))?;
            let store = Store::open(&run_store_path(req.db.as_deref(), Some(&dir)))?;
            (store, dir)
        }
        None => {
            let store = open_store(req.db.as_deref())?;
            let latest = store.latest_run_dir()?.ok_or_else(|| {
                crate::error::InvalidInput("--latest: the store holds no run yet".to_string())
            })?;
            (store, PathBuf::from(latest))
        }
    };
    let run = RunDir::open(&dir);
    let (runs, config) = stored_runs(&mut store, &run)?;
    if runs.is_empty() {
        anyhow::bail!(
            "{}: no results to check (no con*.json in results/)",
            dir.display()
        );
    }
    let mut gate = config_gate(config.as_ref())
        .with_metrics(&req.metrics)?
        .with_thresholds(&req.thresholds)?;
    gate.pre_merge |= req.pre_merge;
    let pinned = req
        .baseline
        .as_deref()
        .map(check::read_baseline)
        .transpose()?;
    let (rows, regressed) = check_stored(&store, &run, &runs, &gate, pinned.as_ref())?;
    Ok(Checked {
        diagnoses: diagnoses(&run, &rows),
        rows,
        regressed,
        written: run.results_dir().join("regression.yaml"),
    })
}
