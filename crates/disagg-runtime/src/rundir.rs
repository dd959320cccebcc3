//! The run directory, the one place the roles of a test meet (a shared filesystem under Slurm):
//!
//! ```text
//! RUN/
//!   config.yaml  plan.json
//!   internal_request_auth_key.txt       the run's internal-auth key (0600; upstream's file name)
//!   rendezvous/  <ROLE>.json            {role, pid, host, port, state, since_ms, heartbeat_ms, reason}
//!                hostnames/<ROLE>.txt   host:port, no newline (upstream-compatible)
//!                server_config.yaml     the coordinator config (upstream format)
//!                benchmark_status.txt   "Done" | "Failed: <reason>"
//!   logs/  results/
//! ```
//!
//! Every write is a temporary file renamed into place, and readers only look at `*.json` /
//! `*.txt`, so nobody reads half a file (upstream once counted `.tmp` files as hostnames).
//! Time is passed in (milliseconds since the Unix epoch), so staleness rules are plain functions.

use std::path::{Path, PathBuf};

use disagg_config::AuthKey;
use disagg_plan::Role;
use serde::{Deserialize, Serialize};

/// A role's lifecycle: `starting → ready → exited | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started, not serving yet.
    Starting,
    /// Serving (workers, router) or running (benchmark).
    Ready,
    /// Ended normally.
    Exited,
    /// Ended with an error.
    Failed,
}

/// What a role says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleState {
    /// `CTX_0`, `GEN_1`, `DISAGG_SERVER`, `BENCHMARK`.
    pub role: Role,
    /// Its process id.
    pub pid: u32,
    /// Host it serves on, once ready.
    pub host: Option<String>,
    /// Port it serves on, once ready.
    pub port: Option<u16>,
    /// Lifecycle state.
    pub state: State,
    /// When it entered this state.
    pub since_ms: u64,
    /// When it last said it is alive.
    pub heartbeat_ms: u64,
    /// Why it failed or exited.
    pub reason: Option<String>,
    /// The benchmark's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far the benchmark is (published with its heartbeat).
pub use disagg_bench::progress::Progress;

impl RoleState {
    /// A role that has just started.
    pub fn new(role: Role, pid: u32, now_ms: u64) -> RoleState {
        RoleState {
            role,
            pid,
            host: None,
            port: None,
            state: State::Starting,
            since_ms: now_ms,
            heartbeat_ms: now_ms,
            reason: None,
            progress: None,
        }
    }

    /// Now serving at `host:port`.
    pub fn ready(mut self, host: &str, port: u16, now_ms: u64) -> RoleState {
        self.host = Some(host.to_string());
        self.port = Some(port);
        self.state = State::Ready;
        self.since_ms = now_ms;
        self.heartbeat_ms = now_ms;
        self
    }

    /// Ended, with a reason when it failed.
    pub fn ended(mut self, failure: Option<&str>, now_ms: u64) -> RoleState {
        self.state = if failure.is_some() {
            State::Failed
        } else {
            State::Exited
        };
        self.reason = failure.map(str::to_string);
        self.since_ms = now_ms;
        self.heartbeat_ms = now_ms;
        self
    }

    /// Running without an address (the benchmark).
    pub fn running(mut self, now_ms: u64) -> RoleState {
        self.state = State::Ready;
        self.since_ms = now_ms;
        self.heartbeat_ms = now_ms;
        self
    }

    /// `host:port`, once ready.
    pub fn address(&self) -> Option<String> {
        Some(format!("{}:{}", self.host.as_ref()?, self.port?))
    }
}

/// The benchmark's verdict, written in every outcome so no role waits forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The benchmark finished.
    Done,
    /// The run failed, and why.
    Failed(String),
}

/// Why the run directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A rendezvous file is not what a role writes.
    #[error("{path}: not a role state ({why})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `text` to `path` through a temporary file in the same directory and a rename
/// ([`disagg_bench::record::write_atomic`]).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), RunDirError> {
    disagg_bench::record::write_atomic(path, text).map_err(io(path))
}

/// [`write_atomic`] for a file that holds a secret: readable and writable by its owner only
/// (0600), from the moment it exists.
pub fn write_private(path: &Path, text: &str) -> Result<(), RunDirError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let written = file.write_all(text.as_bytes()).map_err(io(&tmp));
    drop(file);
    let written = written.and_then(|()| std::fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Create (or reuse) the directory tree. The root is its owner's only (0700): it holds the
    /// run's internal-auth key and the coordinator config with it, and its logs may quote
    /// requests.
    pub fn create(root: &Path) -> Result<RunDir, RunDirError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(root))?;
            }
            Err(e) => return Err(io(root)(e)),
        }
        for sub in ["rendezvous/hostnames", "logs", "results"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    /// Open an existing run directory.
    pub fn open(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rendezvous/<ROLE>.json`.
    pub fn state_file(&self, role: Role) -> PathBuf {
        self.root.join("rendezvous").join(format!("{role}.json"))
    }

    /// `rendezvous/hostnames/<ROLE>.txt`.
    pub fn hostname_file(&self, role: Role) -> PathBuf {
        self.root
            .join("rendezvous/hostnames")
            .join(format!("{role}.txt"))
    }

    /// `rendezvous/benchmark_status.txt`.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("rendezvous/benchmark_status.txt")
    }

    /// `rendezvous/server_config.yaml`.
    pub fn server_config_file(&self) -> PathBuf {
        self.root.join("rendezvous/server_config.yaml")
    }

    /// `internal_request_auth_key.txt`: the run's key, as upstream's harness keeps it beside a
    /// test's output (`<output_dir>/<test>/internal_request_auth_key.txt`).
    pub fn auth_key_file(&self) -> PathBuf {
        self.root.join("internal_request_auth_key.txt")
    }

    /// Keep the run's internal-auth key (0600, the key and a newline, as upstream writes it).
    pub fn write_auth_key(&self, key: &AuthKey) -> Result<(), RunDirError> {
        write_private(&self.auth_key_file(), &format!("{}\n", key.expose_secret()))
    }

    /// The run's internal-auth key; every run `disagg` prepares has one.
    pub fn auth_key(&self) -> Result<AuthKey, RunDirError> {
        let path = self.auth_key_file();
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        AuthKey::new(text.trim()).ok_or_else(|| RunDirError::Corrupt {
            path,
            why: "empty; the run's internal_request_auth_key is missing".to_string(),
        })
    }

    /// `logs/<name>.log`.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    /// `results/`.
    pub fn results_dir(&self) -> PathBuf {
        self.root.join("results")
    }

    /// Publish a role's state; a ready role also gets its upstream hostname file.
    pub fn publish(&self, s: &RoleState) -> Result<(), RunDirError> {
        let text = serde_json::to_string_pretty(s).map_err(|e| RunDirError::Corrupt {
            path: self.state_file(s.role),
            why: e.to_string(),
        })?;
        write_atomic(&self.state_file(s.role), &text)?;
        if let (State::Ready, Some(addr)) = (s.state, s.address()) {
            write_atomic(&self.hostname_file(s.role), &addr)?;
        }
        Ok(())
    }

    /// Every published role state, by role name.
    pub fn roles(&self) -> Result<Vec<RoleState>, RunDirError> {
        let dir = self.root.join("rendezvous");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = entry.path();
            // Only finished files: temporaries start with a dot and end in .tmp.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let s: RoleState = serde_json::from_str(&text).map_err(|e| RunDirError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?;
            out.push(s);
        }
        // By name, as the files list: the order event lines are printed in.
        out.sort_by_key(|s| s.role.to_string());
        Ok(out)
    }

    /// Write the benchmark's verdict (upstream text: `Done`, or ours: `Failed: <reason>`).
    pub fn write_status(&self, status: &Status) -> Result<(), RunDirError> {
        let text = match status {
            Status::Done => "Done".to_string(),
            Status::Failed(why) => format!("Failed: {}", why.replace('\n', " ")),
        };
        write_atomic(&self.status_file(), &text)
    }

    /// Write the verdict unless one is there already: the first verdict wins, so a role that
    /// finishes late never overwrites a failure another role or the launcher recorded.
    /// Returns whether this call wrote it.
    pub fn write_status_once(&self, status: &Status) -> Result<bool, RunDirError> {
        let path = self.status_file();
        let tmp = path.with_file_name(format!(".benchmark_status.{}.tmp", std::process::id()));
        let text = match status {
            Status::Done => "Done".to_string(),
            Status::Failed(why) => format!("Failed: {}", why.replace('\n', " ")),
        };
        if let Err(e) = std::fs::write(&tmp, text) {
            let _ = std::fs::remove_file(&tmp);
            return Err(RunDirError::Io {
                path: tmp,
                source: e,
            });
        }
        // link(2) fails if the target exists: an atomic "create if absent", also on NFS.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(RunDirError::Io { path, source: e }),
        }
    }

    /// The verdict, once written.
    pub fn status(&self) -> Option<Status> {
        let text = std::fs::read_to_string(self.status_file()).ok()?;
        Some(match text.strip_prefix("Failed: ") {
            Some(why) => Status::Failed(why.to_string()),
            None => Status::Done,
        })
    }

    /// Write the coordinator config in the upstream format (keys sorted as `yaml.dump` does).
    ///
    /// `auth_key` goes in as the top-level `internal_request_auth_key`, as upstream's harness
    /// writes it; the file is then readable by its owner only.
    pub fn write_server_config(
        &self,
        hostname: &str,
        port: u16,
        ctx_urls: &[String],
        gen_urls: &[String],
        auth_key: Option<&AuthKey>,
        routing: &Routing,
    ) -> Result<(), RunDirError> {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| format!("  - {}\n", serde_json::Value::from(u.as_str())))
                .collect::<String>()
        };
        // A JSON string is a YAML string: quoted, so a key of digits stays a string.
        let key = auth_key.map_or_else(String::new, |k| {
            format!(
                "internal_request_auth_key: {}\n",
                serde_json::Value::from(k.expose_secret())
            )
        });
        let conditional = routing
            .max_local_prefill_length
            .map_or_else(String::new, |n| {
                format!("conditional_disagg_config:\n  max_local_prefill_length: {n}\n")
            });
        let text = format!(
            "backend: pytorch\n{conditional}context_servers:\n  num_instances: {}\n  router: {}\n  urls:\n{}generation_servers:\n  num_instances: {}\n  router: {}\n  urls:\n{}hostname: {}\n{key}port: {port}\n",
            ctx_urls.len(),
            routing.context.to_yaml(),
            list(ctx_urls),
            gen_urls.len(),
            routing.generation.to_yaml(),
            list(gen_urls),
            serde_json::Value::from(hostname),
        );
        write_private(&self.server_config_file(), &text)
    }
}

/// How the coordinator routes: each pool's policy and conditional disaggregation, written into
/// `server_config.yaml` as upstream's coordinator reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    /// Context pool.
    pub context: disagg_config::RouterPolicy,
    /// Generation pool.
    pub generation: disagg_config::RouterPolicy,
    /// `conditional_disagg_config.max_local_prefill_length`.
    pub max_local_prefill_length: Option<u32>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            context: disagg_config::RouterPolicy::RoundRobin,
            generation: disagg_config::RouterPolicy::RoundRobin,
            max_local_prefill_length: None,
        }
    }
}

/// The first role that has failed, or gone silent for longer than `stale_after_ms` while it
/// should be alive: `(role, reason)`. This is what every waiting role checks, so one death ends
/// the whole run within seconds.
pub fn first_failure(
    roles: &[RoleState],
    now_ms: u64,
    stale_after_ms: u64,
) -> Option<(Role, String)> {
    roles.iter().find_map(|r| match r.state {
        State::Failed => Some((
            r.role,
            r.reason.clone().unwrap_or_else(|| "failed".to_string()),
        )),
        State::Starting | State::Ready
            if now_ms.saturating_sub(r.heartbeat_ms) > stale_after_ms =>
        {
            Some((
                r.role,
                format!(
                    "no heartbeat for {} ms (pid {}; presumed dead)",
                    now_ms - r.heartbeat_ms,
                    r.pid
                ),
            ))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_temporaries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        run.publish(&RoleState::new(Role::Ctx(0), 11, 100)).unwrap();
        run.publish(&RoleState::new(Role::Gen(0), 12, 100).ready("n1", 8002, 150))
            .unwrap();
        std::fs::write(dir.path().join("rendezvous/.GEN_1.json.99.tmp"), "{half").unwrap();
        let roles = run.roles().unwrap();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].state, State::Starting);
        assert_eq!(roles[1].address().as_deref(), Some("n1:8002"));
        assert!(
            !run.hostname_file(Role::Ctx(0)).exists(),
            "only ready roles get a hostname file"
        );
        assert_eq!(
            std::fs::read_to_string(run.hostname_file(Role::Gen(0))).unwrap(),
            "n1:8002"
        );
    }

    #[test]
    fn failures_and_stale_heartbeats_are_found() {
        let alive = RoleState::new(Role::Gen(0), 1, 1_000).ready("h", 1, 1_000);
        let done = RoleState::new(Role::Benchmark, 2, 1_000).ended(None, 2_000);
        assert_eq!(
            first_failure(&[alive.clone(), done.clone()], 3_000, 5_000),
            None
        );
        let (role, why) = first_failure(&[alive.clone(), done.clone()], 7_000, 5_000).unwrap();
        assert_eq!(role, Role::Gen(0));
        assert!(why.contains("no heartbeat for 6000 ms"), "{why}");
        let dead = RoleState::new(Role::Ctx(0), 3, 1_000)
            .ended(Some("engine exited with status 9"), 1_500);
        assert_eq!(
            first_failure(&[done, dead], 1_600, 5_000),
            Some((Role::Ctx(0), "engine exited with status 9".into()))
        );
    }

    #[test]
    fn status_and_server_config_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        assert_eq!(run.status(), None);
        run.write_status(&Status::Failed("GEN_0 died\nbadly".into()))
            .unwrap();
        assert_eq!(
            run.status(),
            Some(Status::Failed("GEN_0 died badly".into()))
        );
        assert!(
            !run.write_status_once(&Status::Done).unwrap(),
            "the first verdict wins"
        );
        assert_eq!(
            run.status(),
            Some(Status::Failed("GEN_0 died badly".into()))
        );
        run.write_status(&Status::Done).unwrap();
        assert_eq!(run.status(), Some(Status::Done));
        run.write_server_config(
            "n1",
            0,
            &["n1:8001".into()],
            &["n2:8002".into(), "n3:8002".into()],
            AuthKey::new("0123456789").as_ref(),
            &Routing {
                generation: disagg_config::RouterPolicy::KvCacheAware(disagg_config::KvAwareArgs {
                    max_batch_size: 8,
                    ..disagg_config::KvAwareArgs::default()
                }),
                max_local_prefill_length: Some(128),
                ..Routing::default()
            },
        )
        .unwrap();
        // What the router reads back is what was written.
        let c = disagg_config::CoordinatorConfig::load(&run.server_config_file()).unwrap();
        assert_eq!((c.hostname.as_str(), c.port), ("n1", 0));
        assert_eq!(
            c.auth_key,
            AuthKey::new("0123456789"),
            "a string, not a number"
        );
        assert_eq!(c.generation.urls, ["n2:8002", "n3:8002"]);
        assert_eq!(
            c.generation.policy,
            disagg_config::RouterPolicy::KvCacheAware(disagg_config::KvAwareArgs {
                max_batch_size: 8,
                ..disagg_config::KvAwareArgs::default()
            })
        );
        assert_eq!(c.context.policy, disagg_config::RouterPolicy::RoundRobin);
        assert_eq!(c.max_local_prefill_length, Some(128));
        assert!(c.warnings.0.is_empty(), "{}", c.warnings);
        let text = std::fs::read_to_string(run.server_config_file()).unwrap();
        assert_eq!(
            text,
            "backend: pytorch\nconditional_disagg_config:\n  max_local_prefill_length: 128\ncontext_servers:\n  num_instances: 1\n  router: {type: round_robin}\n  urls:\n  - \"n1:8001\"\ngeneration_servers:\n  num_instances: 2\n  router: {type: kv_cache_aware, max_batch_size: 8, tokens_per_block: 32, backfill_block_hashes_on_finish: false}\n  urls:\n  - \"n2:8002\"\n  - \"n3:8002\"\nhostname: \"n1\"\ninternal_request_auth_key: \"0123456789\"\nport: 0\n"
        );
        assert_eq!(mode(&run.server_config_file()), 0o600, "it holds the key");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_auth_key_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        assert!(run.auth_key().is_err(), "no key yet");
        let key = AuthKey::new("a1b2").unwrap();
        run.write_auth_key(&key).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.auth_key_file()).unwrap(),
            "a1b2\n"
        );
        assert_eq!(mode(&run.auth_key_file()), 0o600);
        assert_eq!(run.auth_key().unwrap(), key);
    }
}
