//! `disagg results`, `disagg check`, and what `disagg run`/`submit` do after the benchmark:
//! store the run's records, export them, check them against their baselines.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use disagg_config::TestConfig;
use disagg_results::check::{self, Gate, Row};
use disagg_results::opensearch::{self, Target};
use disagg_results::record::{METRICS, RunRecord};
use disagg_results::store::{self, NewRun, Store, StoredRun};
use disagg_runtime::rundir::{RunDir, write_atomic};
use disagg_runtime::spec::RunSpec;
use serde_json::Value;

use crate::InvalidInput;
use crate::cli::{CheckArgs, ResultsArgs, ResultsCommand};

/// The store: `--db`, else `$DISAGG_DB`, else the XDG data location.
pub fn open_store(db: Option<&Path>) -> anyhow::Result<Store> {
    let path = db
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DISAGG_DB").map(PathBuf::from))
        .unwrap_or_else(store::default_path);
    Ok(Store::open(&path)?)
}

/// The upstream match keys and identity of one record of a run.
pub fn identity(
    config: &TestConfig,
    spec: &RunSpec,
    record: &RunRecord,
) -> BTreeMap<String, Value> {
    let mut id = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        id.insert(k.to_string(), v);
    };
    put(
        "s_gpu_type",
        spec.gpu_type
            .clone()
            .unwrap_or_else(|| "unknown".into())
            .into(),
    );
    put("s_runtime", "multi_node_disagg_server".into());
    put("s_engine", spec.engine.clone().into());
    put("s_benchmark_mode", config.benchmark().mode.as_str().into());
    put("l_num_ctx_servers", config.ctx_servers().into());
    put(
        "l_num_gen_servers",
        config.hardware().num_gen_servers.into(),
    );
    let model = config
        .metadata()
        .model_name
        .clone()
        .unwrap_or_default()
        .to_lowercase();
    for (p, w) in [("ctx", config.ctx()), ("gen", config.gen_())] {
        put(&format!("s_{p}_model_name"), model.clone().into());
        put(&format!("l_{p}_tp"), w.tp().into());
        put(&format!("l_{p}_pp"), w.pp().into());
        put(&format!("l_{p}_cp"), w.cp().into());
        put(&format!("l_{p}_ep"), w.moe_ep().into());
        put(
            &format!("l_{p}_gpus_per_node"),
            config.hardware().gpus_per_node.into(),
        );
        put(&format!("l_{p}_max_batch_size"), w.max_batch_size().into());
        put(&format!("l_{p}_max_num_tokens"), w.max_num_tokens().into());
        put(
            &format!("b_{p}_enable_attention_dp"),
            w.attention_dp().into(),
        );
        put(
            &format!("s_{p}_moe_backend"),
            w.moe_backend().unwrap_or_default().into(),
        );
        put(
            &format!("s_{p}_cache_transceiver_backend"),
            w.cache_transceiver_backend().unwrap_or_default().into(),
        );
        put(
            &format!("s_{p}_spec_decoding_type"),
            w.speculative()
                .map(|s| s.decoding_type.clone())
                .unwrap_or_default()
                .into(),
        );
        put(
            &format!("l_{p}_num_nextn_predict_layers"),
            w.speculative().map_or(0, |s| s.draft_len).into(),
        );
    }
    put(
        "l_concurrency",
        record.concurrency().map_or(Value::Null, Value::from),
    );
    put("l_iterations", config.benchmark().multi_round.into());
    put("l_isl", record.isl.into());
    put("l_osl", record.osl.into());
    put("d_random_range_ratio", record.range_ratio.into());
    put("s_backend", "openai".into());
    put("b_use_chat_template", (record.endpoint == "chat").into());
    put("b_streaming", record.streaming.into());
    id
}

/// Build and job information from the CI environment.
pub fn job_fields(env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, Value> {
    let mut j = BTreeMap::new();
    for (field, vars) in [
        (
            "s_commit",
            &["DISAGG_COMMIT", "gitlabCommit", "GIT_COMMIT", "GITHUB_SHA"][..],
        ),
        (
            "s_branch",
            &[
                "DISAGG_BRANCH",
                "BRANCH_NAME",
                "GIT_BRANCH",
                "GITHUB_REF_NAME",
            ][..],
        ),
        ("s_build_url", &["BUILD_URL"][..]),
        ("s_build_id", &["BUILD_ID"][..]),
        ("s_job_name", &["JOB_NAME"][..]),
        ("s_job_url", &["JOB_URL"][..]),
        ("s_host_node_name", &["HOST_NODE_NAME"][..]),
        ("s_stage_name", &["stageName"][..]),
        ("s_slurm_job_id", &["SLURM_JOB_ID"][..]),
    ] {
        if let Some(v) = vars.iter().find_map(|k| env(k).filter(|v| !v.is_empty())) {
            j.insert(field.to_string(), v.into());
        }
    }
    j
}

/// Post-merge unless told otherwise: `DISAGG_PRE_MERGE=1`; in Jenkins, as upstream, a job URL
/// containing `PostMerge`.
pub fn post_merge(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if env("DISAGG_PRE_MERGE").is_some_and(|v| v == "1" || v == "true") {
        return false;
    }
    match env("JOB_URL").or_else(|| env("BUILD_URL")) {
        Some(url) => url.contains("PostMerge"),
        None => true,
    }
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
    let config = crate::role_cmd::load_run_config(run, &spec)?;
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
    let env = |k: &str| std::env::var(k).ok();
    let job = job_fields(&env);
    let post = post_merge(&env);
    let dir = run.root().display().to_string();
    // A run that failed is no baseline, even for the concurrencies that finished.
    let failed: Option<String> = std::fs::read_to_string(run.results_dir().join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<disagg_results::Summary>(&t).ok())
        .filter(|s| s.outcome == disagg_results::Outcome::Failed)
        .map(|s| s.reason.unwrap_or_else(|| "the run failed".to_string()));
    for (_, mut record) in disagg_results::load_records(&run.results_dir())? {
        if let Some(why) = &failed {
            if record.valid {
                record.valid = false;
                record
                    .invalid_reasons
                    .push(format!("the run failed: {why}"));
            }
        }
        let id = identity(config, spec, &record);
        store.insert(&NewRun {
            run_dir: &dir,
            config_name: config.name(),
            config_hash: &store::content_hash(&config_text),
            identity: &id,
            job: &job,
            post_merge: post,
            created_unix_ms: spec.created_unix_ms,
            record: &record,
        })?;
    }
    Ok(store.by_run_dir(&dir)?)
}

/// Upload the store's unsent runs to the configured OpenSearch, if any. A failed upload is
/// logged in the store and retried by the next push; it never fails the test.
pub fn push(store: &Store) -> anyhow::Result<Option<(usize, Option<String>)>> {
    let Some(target) = Target::from_env(&|k| std::env::var(k).ok()) else {
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

/// With an OpenSearch configured, its history of the same case (runs this store does not have).
fn remote_history(run: &StoredRun, since: u64, dir: &str, local: &[StoredRun]) -> Vec<StoredRun> {
    let Some(target) = Target::from_env(&|k| std::env::var(k).ok()) else {
        return Vec::new();
    };
    let must = BTreeMap::from([("s_case_key".to_string(), Value::from(run.case_key.clone()))]);
    match target.search(&must, since) {
        Ok(docs) => docs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| opensearch::from_document(i, d))
            .filter(|h| h.run_dir != dir && h.case_key == run.case_key)
            .filter(|h| {
                !local
                    .iter()
                    .any(|l| l.run_dir == h.run_dir && l.label == h.label)
            })
            .collect(),
        Err(e) => {
            eprintln!("warning: OpenSearch history not read ({e}); using the local store only");
            Vec::new()
        }
    }
}

fn parse_thresholds(gate: &mut Gate, items: &[String]) -> anyhow::Result<()> {
    for item in items {
        let (m, v) = item.split_once('=').ok_or_else(|| {
            InvalidInput(format!(
                "--threshold `{item}`: write metric=fraction, e.g. token_throughput=0.07"
            ))
        })?;
        let v: f64 = v
            .parse()
            .map_err(|_| InvalidInput(format!("--threshold `{item}`: `{v}` is not a number")))?;
        gate.thresholds.insert(m.to_string(), v);
    }
    Ok(())
}

/// The gate without flags: pre-merge from the environment, thresholds from the config's
/// `results:` section, upstream's gated metrics.
pub fn config_gate(config: Option<&TestConfig>) -> Gate {
    let mut gate = Gate {
        pre_merge: !post_merge(&|k| std::env::var(k).ok()),
        ..Gate::default()
    };
    if let Some(r) = config.and_then(|c| c.extensions().results.as_ref()) {
        if let Some(t) = r.post_merge_threshold {
            gate.post_merge_threshold = t;
        }
        if let Some(t) = r.pre_merge_threshold {
            gate.pre_merge_threshold = t;
        }
    }
    gate
}

/// The gate of `disagg check`: [`config_gate`] with the flags applied.
fn gate_of(args: &CheckArgs, config: Option<&TestConfig>) -> anyhow::Result<Gate> {
    let mut gate = config_gate(config);
    gate.pre_merge |= args.pre_merge;
    if !args.metrics.is_empty() {
        for m in &args.metrics {
            if !METRICS.iter().any(|(n, _)| n == m) {
                return Err(InvalidInput(format!(
                    "--metrics: unknown metric `{m}`; use {}",
                    METRICS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .into());
            }
        }
        gate.metrics.clone_from(&args.metrics);
    }
    parse_thresholds(&mut gate, &args.threshold)?;
    Ok(gate)
}

/// A baseline file: `metric: value` pairs (YAML or JSON).
fn read_baseline(path: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the baseline file {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() || line == "{" || line == "}" {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            InvalidInput(format!(
                "{}:{}: write `metric: value`",
                path.display(),
                n + 1
            ))
        })?;
        let k = k.trim().trim_matches('"').to_string();
        let v = v.trim().trim_end_matches(',');
        let v: f64 = v.parse().map_err(|_| {
            InvalidInput(format!(
                "{}:{}: `{v}` is not a number for {k}",
                path.display(),
                n + 1
            ))
        })?;
        if !METRICS.iter().any(|(m, _)| *m == k) {
            return Err(InvalidInput(format!(
                "{}:{}: unknown metric `{k}`",
                path.display(),
                n + 1
            ))
            .into());
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The history of every stored record of a run (local store, and OpenSearch when configured).
pub fn histories(
    store: &Store,
    run: &RunDir,
    runs: &[StoredRun],
) -> anyhow::Result<Vec<Vec<StoredRun>>> {
    let dir = run.root().display().to_string();
    runs.iter()
        .map(|r| {
            let since = r
                .created_unix_ms
                .saturating_sub(disagg_results::baseline::HISTORY_DAYS * 86_400_000);
            let mut history = store.history(&r.case_key, since, &dir)?;
            history.extend(remote_history(r, since, &dir, &history));
            history.sort_by_key(|h| h.created_unix_ms);
            Ok(history)
        })
        .collect()
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
    for (r, history) in runs.iter().zip(histories(store, run, runs)?) {
        rows.extend(check::check_run(r, &history, pinned, gate));
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
    db: Option<&Path>,
    config: &TestConfig,
    check: bool,
) -> bool {
    match store_and_check(run, spec, db, config, check) {
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
    db: Option<&Path>,
    config: &TestConfig,
    check: bool,
) -> anyhow::Result<bool> {
    // --db, else $DISAGG_DB, else the config's `results.db` (`~/` expanded), else the default.
    let from_config = config
        .extensions()
        .results
        .as_ref()
        .and_then(|r| r.db.as_deref())
        .map(|p| match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(p),
        });
    let env = std::env::var_os("DISAGG_DB").map(PathBuf::from);
    let mut store = open_store(db.or(env.as_deref()).or(from_config.as_deref()))?;
    let runs = store_run_dir(&mut store, run, spec, config)?;
    if let Some((n, err)) = push(&store)? {
        match err {
            None => eprintln!("exported {n} record(s) to OpenSearch"),
            Some(e) => eprintln!(
                "warning: OpenSearch export failed ({e}); kept as unsent, `disagg results push` retries"
            ),
        }
    }
    if !check {
        return Ok(false);
    }
    let gate = config_gate(Some(config));
    let (rows, regressed) = check_stored(&store, run, &runs, &gate, None)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "check (post-merge {}):", !gate.pre_merge)?;
    write!(out, "{}", check::table(&rows))?;
    Ok(regressed)
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_store(args.db.as_deref())?;
    let dir = match (&args.run, args.latest) {
        (Some(d), false) => {
            std::fs::canonicalize(d).with_context(|| format!("no run directory {}", d.display()))?
        }
        (None, true) => PathBuf::from(
            store
                .latest_run_dir()?
                .ok_or_else(|| InvalidInput("--latest: the store holds no run yet".to_string()))?,
        ),
        _ => {
            return Err(InvalidInput("give a run directory or --latest".to_string()).into());
        }
    };
    let run = RunDir::open(&dir);
    let (runs, config) = stored_runs(&mut store, &run)?;
    if runs.is_empty() {
        bail!(
            "{}: no results to check (no con*.json in results/)",
            dir.display()
        );
    }
    let gate = gate_of(args, config.as_ref())?;
    let pinned = args.baseline.as_deref().map(read_baseline).transpose()?;
    let (rows, regressed) = check_stored(&store, &run, &runs, &gate, pinned.as_ref())?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", check::table(&rows))?;
    writeln!(
        out,
        "written: {}",
        run.results_dir().join("regression.yaml").display()
    )?;
    if regressed {
        let names: Vec<String> = rows
            .iter()
            .filter(|r| r.verdict == "regression")
            .map(|r| format!("{} {}", r.run, r.metric))
            .collect();
        eprintln!("error: regression: {}", names.join(", "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn results(args: &ResultsArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_store(args.db.as_deref())?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        ResultsCommand::List { config, limit } => {
            writeln!(
                out,
                "{:>5}  {:<20} {:<7} {:<6} {:>12} {:>10}  {:<5} config / run directory",
                "id", "when (UTC)", "run", "valid", "out tok/s", "TTFT p50", "base"
            )?;
            for r in store.list(config.as_deref(), *limit)? {
                writeln!(
                    out,
                    "{:>5}  {:<20} {:<7} {:<6} {:>12.1} {:>10.2}  {:<5} {} {}",
                    r.id,
                    disagg_results::junit::iso8601(r.created_unix_ms),
                    r.label,
                    r.valid,
                    r.metrics
                        .get("token_throughput")
                        .copied()
                        .unwrap_or(f64::NAN),
                    r.metrics.get("median_ttft").copied().unwrap_or(f64::NAN),
                    if r.baseline { "yes" } else { "" },
                    r.config_name,
                    r.run_dir
                )?;
            }
        }
        ResultsCommand::Show { id } => {
            let r = store.get(*id)?;
            serde_json::to_writer_pretty(&mut out, &r)?;
            writeln!(out)?;
        }
        ResultsCommand::Export {
            format,
            config,
            limit,
        } => {
            let runs = store.list(config.as_deref(), *limit)?;
            if format == "json" {
                serde_json::to_writer_pretty(&mut out, &runs)?;
                writeln!(out)?;
            } else {
                let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
                writeln!(
                    out,
                    "id,created_utc,config,label,valid,post_merge,baseline,case_key,run_dir,{}",
                    names.join(",")
                )?;
                for r in runs {
                    let metrics: Vec<String> = names
                        .iter()
                        .map(|n| r.metrics.get(*n).map_or(String::new(), |v| v.to_string()))
                        .collect();
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{}",
                        r.id,
                        disagg_results::junit::iso8601(r.created_unix_ms),
                        csv_escape(&r.config_name),
                        r.label,
                        r.valid,
                        r.post_merge,
                        r.baseline,
                        r.case_key,
                        csv_escape(&r.run_dir),
                        metrics.join(",")
                    )?;
                }
            }
        }
        ResultsCommand::MarkInvalid { id, note } => {
            store.mark(*id, "invalid", note.as_deref())?;
            writeln!(
                out,
                "run {id} marked invalid: it no longer counts toward any baseline"
            )?;
        }
        ResultsCommand::MarkValid { id } => {
            store.mark(*id, "valid", None)?;
            writeln!(out, "run {id} marked valid")?;
        }
        ResultsCommand::MarkBaseline { id } => {
            store.mark(*id, "baseline", None)?;
            writeln!(out, "run {id} is now the baseline of its case")?;
        }
        ResultsCommand::Import { run } => {
            let dir = std::fs::canonicalize(run)
                .with_context(|| format!("no run directory {}", run.display()))?;
            let (stored, _) = stored_runs(&mut store, &RunDir::open(&dir))?;
            writeln!(
                out,
                "stored {} record(s) of {}",
                stored.len(),
                dir.display()
            )?;
        }
        ResultsCommand::Push => match push(&store)? {
            None => {
                return Err(InvalidInput(
                    "no OpenSearch configured: set DISAGG_OPENSEARCH_URL (and DISAGG_OPENSEARCH_USER/PASSWORD)"
                        .to_string(),
                )
                .into());
            }
            Some((n, None)) => writeln!(out, "pushed {n} record(s)")?,
            Some((n, Some(e))) => {
                eprintln!("error: pushing {n} record(s) failed: {e}; they stay unsent");
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
