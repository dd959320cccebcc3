//! The results store: SQLite (bundled), one file, versioned schema, append-only.
//!
//! Rows are never updated or deleted: marking a run invalid or a baseline appends a mark (the
//! latest mark wins), an upload appends to the upload log (a run is unsent for a target until
//! an upload to it succeeded), a check appends its verdict (`b_is_regression`, the regression
//! info and the inherited `d_baseline_*`/`d_threshold_*` fields; the latest wins). The one
//! exception is the migration to version 3, which fills the new `match_key` column of the runs
//! stored before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use crate::check::Verdict;
use crate::identity;
use crate::record::RunRecord;

/// Each entry moves the schema from version `i` to `i + 1`; never edit one, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: runs, their metrics, marks.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_dir TEXT NOT NULL,
        label TEXT NOT NULL,
        config_name TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        case_key TEXT NOT NULL,
        created_unix_ms INTEGER NOT NULL,
        valid INTEGER NOT NULL,
        post_merge INTEGER NOT NULL,
        identity TEXT NOT NULL,
        job TEXT NOT NULL,
        record TEXT NOT NULL,
        tool TEXT NOT NULL,
        metric_definitions TEXT NOT NULL,
        UNIQUE (run_dir, label)
    );
    CREATE INDEX runs_by_case ON runs (case_key, created_unix_ms);
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE marks (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        kind TEXT NOT NULL,
        at_unix_ms INTEGER NOT NULL,
        note TEXT
    );",
    // 2: the upload log (OpenSearch export), so a failed upload is retried later.
    "CREATE TABLE uploads (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        target TEXT NOT NULL,
        at_unix_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT
    );
    CREATE INDEX uploads_by_run ON uploads (run_id, target);",
    // 3: upstream's case identity (a hash of the match keys' values; filled for older rows by
    // `backfill_match_keys`), and each check's verdict.
    "ALTER TABLE runs ADD COLUMN match_key TEXT;
    CREATE INDEX runs_by_match ON runs (match_key, created_unix_ms);
    CREATE TABLE verdicts (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        at_unix_ms INTEGER NOT NULL,
        regression INTEGER NOT NULL,
        info TEXT NOT NULL,
        embedded TEXT NOT NULL
    );
    CREATE INDEX verdicts_by_run ON verdicts (run_id);",
    // 4: the runs of a sweep point (`disagg sweep` looks a point up before and after each run).
    "CREATE INDEX runs_by_sweep_point ON runs (json_extract(job, '$.s_sweep_point'));",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer `disagg`.
    #[error(
        "{path}: schema version {found} is newer than this disagg's {SCHEMA_VERSION}; use a newer disagg"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: usize,
    },
    /// No such run.
    #[error("no stored run {0}; `disagg results list` shows what is stored")]
    NoRun(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A run to store: one record (one concurrency) of a test run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The run directory.
    pub run_dir: &'a str,
    /// Config name.
    pub config_name: &'a str,
    /// Hash of the config text.
    pub config_hash: &'a str,
    /// The upstream match keys and identity fields (`s_gpu_type`, `l_ctx_tp`, ...).
    pub identity: &'a BTreeMap<String, serde_json::Value>,
    /// Build and job information (`s_commit`, `s_branch`, `s_build_url`, `s_job_id`, ...).
    pub job: &'a BTreeMap<String, serde_json::Value>,
    /// A post-merge run (its history counts toward baselines).
    pub post_merge: bool,
    /// When the run started.
    pub created_unix_ms: u64,
    /// The benchmark's record.
    pub record: &'a RunRecord,
}

/// A stored run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRun {
    /// Row id.
    pub id: i64,
    /// Run directory.
    pub run_dir: String,
    /// `con8`.
    pub label: String,
    /// Config name.
    pub config_name: String,
    /// Config hash.
    pub config_hash: String,
    /// Hash of the whole identity (every config and workload field).
    pub case_key: String,
    /// Upstream's case: a hash of the match keys' values ([`identity::match_key`]); runs with
    /// the same key share a history.
    #[serde(default)]
    pub match_key: String,
    /// When it ran.
    pub created_unix_ms: u64,
    /// Valid, after the marks.
    pub valid: bool,
    /// Valid as the run stored it, before any mark (its document's `_id` is hashed with it).
    #[serde(default)]
    pub stored_valid: bool,
    /// Post-merge.
    pub post_merge: bool,
    /// Marked as a baseline.
    pub baseline: bool,
    /// Identity fields.
    pub identity: BTreeMap<String, serde_json::Value>,
    /// Job fields.
    pub job: BTreeMap<String, serde_json::Value>,
    /// Metrics by upstream name.
    pub metrics: BTreeMap<String, f64>,
    /// `disagg x.y.z`.
    pub tool: String,
    /// The latest check found a regression (upstream's `b_is_regression`).
    #[serde(default)]
    pub regression: bool,
    /// The latest check's lines (upstream's `s_regression_info`; empty before any check).
    #[serde(default)]
    pub regression_info: String,
    /// `d_baseline_*` and `d_threshold_*` fields the run carries (inherited by a post-merge
    /// check, or read from a history document).
    #[serde(default)]
    pub embedded: BTreeMap<String, f64>,
}

/// The case key: a stable hash (FNV-1a, 64 bit) of the identity's canonical JSON.
pub fn case_key(identity: &BTreeMap<String, serde_json::Value>) -> String {
    content_hash(&serde_json::to_string(identity).unwrap_or_default())
}

/// A stable hash of text (FNV-1a, 64 bit, hex): the same on every run and platform, unlike the
/// std hasher. Identifies cases and config texts.
pub fn content_hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// The default database: `$XDG_DATA_HOME/disagg/results.sqlite` (else `~/.local/share/...`).
pub fn default_path() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("disagg")
        .join("results.sqlite")
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Switch a store to write-ahead logging. Changing the journal mode does not wait on the busy
/// timeout: when another process holds the file (two commands opening a new store at once), try
/// again for up to 10 s.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut tries = 0;
    loop {
        let mode: rusqlite::Result<String> =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
        match mode {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Store {
    /// Open (creating it and its directory if needed) and migrate to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_at(path, SCHEMA_VERSION)
    }

    /// Open and migrate up to `version` only (tests of the migrations use this).
    pub fn open_at(path: &Path, version: usize) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        // The busy timeout first: two processes opening a new store at once (a run's roles, two
        // commands) wait for each other instead of failing with "database is locked".
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        set_wal(&conn).map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        // In WAL mode NORMAL syncs at checkpoints instead of at every commit: a commit survives
        // any crash of the program, only an OS crash or power loss can take the last ones
        // (SQLite's recommendation for WAL). Many writers at once (parallel sweep points and CI
        // tests) then wait milliseconds, not fsyncs, for each other.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Migrate under a write lock taken up front, reading the version inside it: whoever
        // migrates first does it, the other sees the new version.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let found: usize = tx
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(err)? as usize;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().take(version).skip(found) {
            tx.execute_batch(sql).map_err(err)?;
            if i + 1 == 3 {
                backfill_match_keys(&tx).map_err(err)?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The schema version of the open file.
    pub fn version(&self) -> Result<usize, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| v as usize)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Store a run (idempotent: the same run directory and label is stored once).
    pub fn insert(&mut self, run: &NewRun<'_>) -> Result<i64, StoreError> {
        let ids = self.insert_run(std::slice::from_ref(run))?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// Store every record of one run in one transaction (idempotent per run directory and
    /// label): another process reading sees all of them or none. The transaction takes the
    /// write lock up front (`BEGIN IMMEDIATE`): a transaction that reads first and then writes
    /// cannot wait for the lock in WAL mode once another writer has committed since its read,
    /// and fails with "database is locked" at once, whatever the busy timeout.
    pub fn insert_run(&mut self, runs: &[NewRun<'_>]) -> Result<Vec<i64>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut ids = Vec::with_capacity(runs.len());
        for run in runs {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM runs WHERE run_dir = ?1 AND label = ?2",
                    params![run.run_dir, run.record.load],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            if let Some(id) = existing {
                ids.push(id);
                continue;
            }
            let json = |v: &dyn erased::Ser| v.to_json();
            tx.execute(
                "INSERT INTO runs (run_dir, label, config_name, config_hash, case_key, created_unix_ms,
                    valid, post_merge, identity, job, record, tool, metric_definitions, match_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    run.run_dir,
                    run.record.load,
                    run.config_name,
                    run.config_hash,
                    case_key(run.identity),
                    run.created_unix_ms as i64,
                    run.record.valid,
                    run.post_merge,
                    json(run.identity),
                    json(run.job),
                    json(run.record),
                    run.record.tool,
                    run.record.metric_definitions,
                    identity::match_key(&identity::match_values(run.identity, run.job)),
                ],
            )
            .map_err(err)?;
            let id = tx.last_insert_rowid();
            for (name, value) in run.record.upstream_metrics() {
                tx.execute(
                    "INSERT INTO metrics (run_id, name, value) VALUES (?1, ?2, ?3)",
                    params![id, name, value],
                )
                .map_err(err)?;
            }
            ids.push(id);
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Append a mark: `invalid`, `valid`, `baseline`, `not_baseline`.
    pub fn mark(&self, id: i64, kind: &str, note: Option<&str>) -> Result<(), StoreError> {
        if !matches!(kind, "invalid" | "valid" | "baseline" | "not_baseline") {
            return Err(StoreError::Other(format!(
                "unknown mark `{kind}`: use invalid, valid, baseline or not_baseline"
            )));
        }
        self.get(id)?;
        self.conn
            .execute(
                "INSERT INTO marks (run_id, kind, at_unix_ms, note) VALUES (?1, ?2, ?3, ?4)",
                params![id, kind, now_ms() as i64, note],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn query(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredRun>, StoreError> {
        let sql = format!(
            "SELECT id, run_dir, label, config_name, config_hash, case_key, created_unix_ms, valid,
                post_merge, identity, job, tool,
                (SELECT kind FROM marks m WHERE m.run_id = runs.id AND kind IN ('invalid', 'valid')
                    ORDER BY rowid DESC LIMIT 1),
                (SELECT kind FROM marks m WHERE m.run_id = runs.id AND kind IN ('baseline', 'not_baseline')
                    ORDER BY rowid DESC LIMIT 1),
                match_key,
                (SELECT json_array(regression, info, embedded) FROM verdicts v
                    WHERE v.run_id = runs.id ORDER BY rowid DESC LIMIT 1)
             FROM runs {filter}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let valid_mark: Option<String> = r.get(12)?;
                let base_mark: Option<String> = r.get(13)?;
                let identity: String = r.get(9)?;
                let job: String = r.get(10)?;
                let verdict: Option<String> = r.get(15)?;
                let (regression, regression_info, embedded) = verdict
                    .and_then(|v| serde_json::from_str::<(i64, String, String)>(&v).ok())
                    .map(|(reg, info, emb)| {
                        (
                            reg != 0,
                            info,
                            serde_json::from_str(&emb).unwrap_or_default(),
                        )
                    })
                    .unwrap_or_default();
                Ok(StoredRun {
                    id: r.get(0)?,
                    run_dir: r.get(1)?,
                    label: r.get(2)?,
                    config_name: r.get(3)?,
                    config_hash: r.get(4)?,
                    case_key: r.get(5)?,
                    match_key: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
                    created_unix_ms: r.get::<_, i64>(6)? as u64,
                    valid: match valid_mark.as_deref() {
                        Some("invalid") => false,
                        Some("valid") => true,
                        _ => r.get(7)?,
                    },
                    stored_valid: r.get(7)?,
                    post_merge: r.get(8)?,
                    baseline: base_mark.as_deref() == Some("baseline"),
                    identity: serde_json::from_str(&identity).unwrap_or_default(),
                    job: serde_json::from_str(&job).unwrap_or_default(),
                    metrics: BTreeMap::new(),
                    tool: r.get(11)?,
                    regression,
                    regression_info,
                    embedded,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let mut run = row.map_err(|e| self.err(e))?;
            let mut m = self
                .conn
                .prepare_cached("SELECT name, value FROM metrics WHERE run_id = ?1")
                .map_err(|e| self.err(e))?;
            let metrics = m
                .query_map([run.id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
                })
                .map_err(|e| self.err(e))?;
            for kv in metrics {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                run.metrics.insert(k, v);
            }
            out.push(run);
        }
        Ok(out)
    }

    /// One run by id.
    pub fn get(&self, id: i64) -> Result<StoredRun, StoreError> {
        self.query("WHERE id = ?1", &[&id])?
            .pop()
            .ok_or_else(|| StoreError::NoRun(id.to_string()))
    }

    /// The most recent runs, newest first (optionally of one config).
    pub fn list(&self, config: Option<&str>, limit: usize) -> Result<Vec<StoredRun>, StoreError> {
        let limit = limit as i64;
        match config {
            Some(c) => self.query(
                "WHERE config_name = ?1 ORDER BY created_unix_ms DESC, id DESC LIMIT ?2",
                &[&c, &limit],
            ),
            None => self.query("ORDER BY created_unix_ms DESC, id DESC LIMIT ?1", &[&limit]),
        }
    }

    /// Every record of one run directory, in the order stored.
    pub fn by_run_dir(&self, run_dir: &str) -> Result<Vec<StoredRun>, StoreError> {
        self.query("WHERE run_dir = ?1 ORDER BY id", &[&run_dir])
    }

    /// The run directory stored last.
    pub fn latest_run_dir(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT run_dir FROM runs ORDER BY created_unix_ms DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every run whose job field `key` (`s_sweep_point`, ...) is `value`, in the order stored.
    pub fn by_job_field(&self, key: &str, value: &str) -> Result<Vec<StoredRun>, StoreError> {
        if key == "s_sweep_point" {
            // The indexed expression, written as the index has it.
            return self.query(
                "WHERE json_extract(job, '$.s_sweep_point') = ?1 ORDER BY id",
                &[&value],
            );
        }
        let json_path = format!("$.{key}");
        self.query(
            "WHERE json_extract(job, ?1) = ?2 ORDER BY id",
            &[&json_path, &value],
        )
    }

    /// Every run of a config text (its [`content_hash`]), in the order stored.
    pub fn by_config_hash(&self, hash: &str) -> Result<Vec<StoredRun>, StoreError> {
        self.query("WHERE config_hash = ?1 ORDER BY id", &[&hash])
    }

    /// The history of a case (its [`StoredRun::match_key`]) since `since_ms`, oldest first,
    /// without the runs of `exclude_dir`.
    pub fn history(
        &self,
        match_key: &str,
        since_ms: u64,
        exclude_dir: &str,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let since = since_ms as i64;
        self.query(
            "WHERE match_key = ?1 AND created_unix_ms >= ?2 AND run_dir != ?3 ORDER BY created_unix_ms, id",
            &[&match_key, &since, &exclude_dir],
        )
    }

    /// Append a check's verdict for a run (the latest wins).
    pub fn record_verdict(&self, id: i64, verdict: &Verdict) -> Result<(), StoreError> {
        let embedded = serde_json::to_string(&verdict.embedded).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO verdicts (run_id, at_unix_ms, regression, info, embedded)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    now_ms() as i64,
                    verdict.regression,
                    verdict.info,
                    embedded
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs without a successful upload to `target`, oldest first.
    pub fn unsent(&self, target: &str) -> Result<Vec<StoredRun>, StoreError> {
        self.query(
            "WHERE NOT EXISTS (SELECT 1 FROM uploads u WHERE u.run_id = runs.id AND u.target = ?1 AND u.ok = 1)
             ORDER BY created_unix_ms, id",
            &[&target],
        )
    }

    /// Log an upload attempt.
    pub fn log_upload(&self, id: i64, target: &str, error: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO uploads (run_id, target, at_unix_ms, ok, error) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, target, now_ms() as i64, error.is_none(), error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The stored record of a run, as written by the benchmark.
    pub fn record(&self, id: i64) -> Result<RunRecord, StoreError> {
        let text: String = self
            .conn
            .query_row("SELECT record FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoRun(id.to_string()))?;
        serde_json::from_str(&text).map_err(|e| StoreError::Other(format!("run {id}: {e}")))
    }
}

/// Fill `match_key` for the runs stored before version 3. Their identity predates
/// `s_test_case_name`, so the case name is rebuilt from what it held the way upstream builds it
/// (`{mode}-{config}-con{C}_iter{I}_isl{ISL}_osl{OSL}`), the GPU type is lower-cased as upstream
/// records it, and TensorRT-LLM's engine name is dropped (upstream never writes one).
fn backfill_match_keys(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(i64, String, String, String)> = tx
        .prepare("SELECT id, config_name, identity, job FROM runs WHERE match_key IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, config, ident, job) in rows {
        let mut ident: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&ident).unwrap_or_default();
        let job: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&job).unwrap_or_default();
        if !ident.contains_key("s_test_case_name") {
            let n = |k: &str| {
                ident
                    .get(k)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            let mode = match ident.get("s_benchmark_mode").and_then(|m| m.as_str()) {
                Some("e2e") | None => "e2e",
                Some(_) => "gen_only",
            };
            let client = identity::client_name(
                n("l_concurrency"),
                n("l_iterations"),
                n("l_isl"),
                n("l_osl"),
            );
            let gpu = ident
                .get("s_gpu_type")
                .and_then(|g| g.as_str())
                .filter(|g| *g != "unknown")
                .map(str::to_string);
            ident.insert(
                "s_test_case_name".into(),
                format!("{mode}-{config}-{client}").into(),
            );
            ident.insert(
                "s_gpu_type".into(),
                identity::gpu_type(gpu.as_deref()).into(),
            );
            if ident.get("s_engine").and_then(|e| e.as_str()) == Some("trtllm") {
                ident.remove("s_engine");
            }
        }
        let key = identity::match_key(&identity::match_values(&ident, &job));
        tx.execute(
            "UPDATE runs SET match_key = ?1 WHERE id = ?2",
            params![key, id],
        )?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

mod erased {
    /// Serialize anything to a JSON string (for the TEXT columns).
    pub trait Ser {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
