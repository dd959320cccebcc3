//! The results store: SQLite (bundled), one file, versioned schema, append-only.
//!
//! Rows are never updated or deleted: marking a run invalid or a baseline appends a mark (the
//! latest mark wins), an upload appends to the upload log (a run is unsent for a target until
//! an upload to it succeeded).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

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
    /// Hash of the identity: runs with the same key are the same test.
    pub case_key: String,
    /// When it ran.
    pub created_unix_ms: u64,
    /// Valid, after the marks.
    pub valid: bool,
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
        let ids = self.insert_all(std::slice::from_ref(run))?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Other("nothing stored".to_string()))
    }

    /// Store every record of a run in one transaction: a writer killed half-way leaves none of
    /// them, never some (idempotent per run directory and label, as [`Store::insert`]).
    pub fn insert_all(&mut self, runs: &[NewRun<'_>]) -> Result<Vec<i64>, StoreError> {
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
            ids.push(insert_one(&tx, run).map_err(err)?);
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
                    ORDER BY rowid DESC LIMIT 1)
             FROM runs {filter}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let valid_mark: Option<String> = r.get(12)?;
                let base_mark: Option<String> = r.get(13)?;
                let identity: String = r.get(9)?;
                let job: String = r.get(10)?;
                Ok(StoredRun {
                    id: r.get(0)?,
                    run_dir: r.get(1)?,
                    label: r.get(2)?,
                    config_name: r.get(3)?,
                    config_hash: r.get(4)?,
                    case_key: r.get(5)?,
                    created_unix_ms: r.get::<_, i64>(6)? as u64,
                    valid: match valid_mark.as_deref() {
                        Some("invalid") => false,
                        Some("valid") => true,
                        _ => r.get(7)?,
                    },
                    post_merge: r.get(8)?,
                    baseline: base_mark.as_deref() == Some("baseline"),
                    identity: serde_json::from_str(&identity).unwrap_or_default(),
                    job: serde_json::from_str(&job).unwrap_or_default(),
                    metrics: BTreeMap::new(),
                    tool: r.get(11)?,
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

    /// The history of a case since `since_ms`, oldest first, without the runs of `exclude_dir`.
    pub fn history(
        &self,
        case_key: &str,
        since_ms: u64,
        exclude_dir: &str,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let since = since_ms as i64;
        self.query(
            "WHERE case_key = ?1 AND created_unix_ms >= ?2 AND run_dir != ?3 ORDER BY created_unix_ms, id",
            &[&case_key, &since, &exclude_dir],
        )
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

/// One record inside the caller's transaction; the id it has (already stored) or got.
fn insert_one(tx: &rusqlite::Transaction<'_>, run: &NewRun<'_>) -> rusqlite::Result<i64> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM runs WHERE run_dir = ?1 AND label = ?2",
            params![run.run_dir, run.record.load],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let json = |v: &dyn erased::Ser| v.to_json();
    tx.execute(
        "INSERT INTO runs (run_dir, label, config_name, config_hash, case_key, created_unix_ms,
            valid, post_merge, identity, job, record, tool, metric_definitions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
        ],
    )?;
    let id = tx.last_insert_rowid();
    for (name, value) in run.record.upstream_metrics() {
        tx.execute(
            "INSERT INTO metrics (run_id, name, value) VALUES (?1, ?2, ?3)",
            params![id, name, value],
        )?;
    }
    Ok(id)
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
