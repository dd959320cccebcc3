//! The upstream coordinator config (`server_config.yaml`, read by `trtllm-serve disaggregated
//! -c` and by `disagg router --config`).
//!
//! ```yaml
//! hostname: localhost
//! port: 8000                 # 0 = any free port
//! max_retries: 1
//! context_servers:
//!   num_instances: 1
//!   urls: ["localhost:8001"]
//!   router: {type: round_robin}
//! generation_servers:
//!   num_instances: 1
//!   urls: ["localhost:8002"]
//!   router: {type: load_balancing, use_tokens: false}
//! ```
//!
//! Keys upstream accepts but `disagg router` does not act on are kept as warnings, never errors;
//! engine options inside a server section (`tensor_parallel_size`, ...) are ignored, as upstream
//! only copies them into its router arguments.

use std::path::{Path, PathBuf};

use crate::ConfigError;
use crate::auth_key::AuthKey;
use crate::diag::{Diagnostics, Sink};
use crate::reader::{self, MapRef, Need};
use crate::yaml::Value;

/// How a pool picks a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterPolicy {
    /// In turn.
    RoundRobin,
    /// Fewest requests in flight (or prompt tokens with `use_tokens`), ties in turn.
    LoadBalancing {
        /// Balance prompt tokens instead of requests.
        use_tokens: bool,
    },
    /// Upstream's `KvCacheAwareRouter`: the worker with the best `matched prompt tokens /
    /// prompt tokens − requests in flight / max_batch_size`, ties in turn; it learns each
    /// worker's blocks from the worker's KV cache events.
    KvCacheAware(KvAwareArgs),
}

/// The `kv_cache_aware` router's arguments (upstream's router args: the `router` section's keys,
/// plus `max_batch_size` and `kv_cache_config.tokens_per_block` of the server section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvAwareArgs {
    /// Requests in flight that weigh as much as a full prefix match (upstream default 64).
    pub max_batch_size: u32,
    /// Block size the hashes are computed with: the workers' (upstream default 32).
    pub tokens_per_block: u32,
    /// Count a request's blocks as held by its worker once it finished, for workers that do not
    /// publish events (upstream's `backfill_block_hashes_on_finish`, default false).
    pub backfill_block_hashes_on_finish: bool,
}

impl Default for KvAwareArgs {
    fn default() -> Self {
        KvAwareArgs {
            max_batch_size: 64,
            tokens_per_block: 32,
            backfill_block_hashes_on_finish: false,
        }
    }
}

impl RouterPolicy {
    /// Its upstream name (`round_robin`, `load_balancing`, `load_balancing+tokens`,
    /// `kv_cache_aware`), as records store the policy that ran.
    pub fn name(self) -> &'static str {
        match self {
            RouterPolicy::RoundRobin => "round_robin",
            RouterPolicy::LoadBalancing { use_tokens: false } => "load_balancing",
            RouterPolicy::LoadBalancing { use_tokens: true } => "load_balancing+tokens",
            RouterPolicy::KvCacheAware(_) => "kv_cache_aware",
        }
    }

    /// The `router:` section upstream's coordinator config takes for this policy (YAML flow
    /// mapping).
    pub fn to_yaml(self) -> String {
        match self {
            RouterPolicy::RoundRobin => "{type: round_robin}".into(),
            RouterPolicy::LoadBalancing { use_tokens } => {
                format!("{{type: load_balancing, use_tokens: {use_tokens}}}")
            }
            RouterPolicy::KvCacheAware(a) => format!(
                "{{type: kv_cache_aware, max_batch_size: {}, tokens_per_block: {}, backfill_block_hashes_on_finish: {}}}",
                a.max_batch_size, a.tokens_per_block, a.backfill_block_hashes_on_finish
            ),
        }
    }
}

/// One pool of workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPool {
    /// `host:port` of each worker (no scheme).
    pub urls: Vec<String>,
    /// Policy.
    pub policy: RouterPolicy,
}

/// A validated coordinator config.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// Bind host.
    pub hostname: String,
    /// Bind port (0 = any).
    pub port: u16,
    /// Retries per leg (upstream default 1).
    pub max_retries: u32,
    /// Context pool (empty in generation-only runs).
    pub context: ServerPool,
    /// Generation pool.
    pub generation: ServerPool,
    /// `internal_request_auth_key`: the router signs generation requests with it
    /// (`x-trtllm-disagg-auth`), as upstream's coordinator does.
    pub auth_key: Option<AuthKey>,
    /// `conditional_disagg_config.max_local_prefill_length`: with a `kv_cache_aware`
    /// generation pool, a request whose uncached part is at most this long (and some of it
    /// cached) skips the context leg and is prefilled on its generation server.
    pub max_local_prefill_length: Option<u32>,
    /// Warnings: keys read but not acted on.
    pub warnings: Diagnostics,
}

/// Keys we read.
const ACTED_ON: &[&str] = &[
    "hostname",
    "port",
    "max_retries",
    "context_servers",
    "generation_servers",
    "backend",
    "model",
    "perf_metrics_max_requests",
    "schedule_style",
    "conditional_disagg_config",
    crate::AUTH_KEY_FIELD,
];

/// Keys upstream accepts that we do not act on: accepted with a warning.
const NOT_ACTED_ON: &[&str] = &[
    "return_perf_metrics",
    "perf_metrics_output_dir",
    "node_id",
    "num_workers",
    "disagg_coordinator_url",
    "allow_request_chat_template",
    "gen_strip_message_history",
    "gen_tokids_ctxbytes",
    "otlp_config",
    "disagg_cluster",
];

impl CoordinatorConfig {
    /// Read and validate a coordinator config file.
    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let text = reader::read_file(path)?;
        CoordinatorConfig::parse(path, &text)
    }

    /// Validate coordinator-config text.
    pub fn parse(path: &Path, text: &str) -> Result<CoordinatorConfig, ConfigError> {
        let (mut sink, root) = reader::load_yaml(Sink::new(path), text)?;
        let top = MapRef {
            node: &root,
            path: "",
        };
        reader::check_keys(&mut sink, top, &[ACTED_ON, NOT_ACTED_ON].concat(), false);
        for (key, node) in root.as_map().unwrap_or_default() {
            if NOT_ACTED_ON.contains(&key.text.as_str()) {
                sink.warning(
                    Some(key.pos),
                    &key.text,
                    Some(node.display()),
                    "accepted but not used by disagg router",
                    "remove it, or use trtllm-serve disaggregated if you need it",
                );
            }
        }
        if let Some(style) = reader::string(&mut sink, top, "schedule_style", Need::Optional, "") {
            if style != "context_first" {
                sink.error(
                    root.get("schedule_style").map(|n| n.pos),
                    "schedule_style",
                    Some(style),
                    "disagg router schedules context first",
                    "remove schedule_style or set it to context_first",
                );
            }
        }
        let hostname = reader::string(
            &mut sink,
            top,
            "hostname",
            Need::Optional,
            "a host name or IP to bind",
        )
        .unwrap_or_else(|| "localhost".to_string());
        let port = reader::int(
            &mut sink,
            top,
            "port",
            Need::Optional,
            0,
            65_535,
            "a TCP port; 0 picks a free one",
        )
        .unwrap_or(8000) as u16;
        let max_retries = reader::int(
            &mut sink,
            top,
            "max_retries",
            Need::Optional,
            0,
            100,
            "retries per leg before any byte reached the client",
        )
        .unwrap_or(1) as u32;
        let auth_key = crate::auth_key::read(&mut sink, top);
        let context = read_pool(&mut sink, top, "context_servers", false);
        let generation = read_pool(&mut sink, top, "generation_servers", true);
        let max_local_prefill_length = reader::section(
            &mut sink,
            top,
            "conditional_disagg_config",
            "conditional_disagg_config",
        )
        .map(|c| {
            reader::int(
                &mut sink,
                c,
                "max_local_prefill_length",
                Need::Optional,
                0,
                i64::from(u32::MAX),
                "uncached prompt tokens a generation server may prefill itself",
            )
            .unwrap_or(0) as u32
        });
        if max_local_prefill_length.is_some()
            && !matches!(generation.policy, RouterPolicy::KvCacheAware(_))
        {
            sink.error(
                root.get("conditional_disagg_config").map(|n| n.pos),
                "conditional_disagg_config",
                None,
                "conditional disaggregation needs a kv_cache_aware generation router (upstream asserts it)",
                "set generation_servers.router.type: kv_cache_aware, or remove conditional_disagg_config",
            );
        }
        let diagnostics = sink.finish();
        if diagnostics.has_errors() {
            return Err(ConfigError::Invalid(diagnostics));
        }
        Ok(CoordinatorConfig {
            path: path.to_path_buf(),
            hostname,
            port,
            max_retries,
            context,
            generation,
            auth_key,
            max_local_prefill_length,
            warnings: diagnostics,
        })
    }
}

fn read_pool(sink: &mut Sink, top: MapRef<'_>, key: &str, required: bool) -> ServerPool {
    let empty = ServerPool {
        urls: Vec::new(),
        policy: RouterPolicy::RoundRobin,
    };
    let Some(pool) = reader::section(sink, top, key, key) else {
        if required {
            sink.error(
                Some(top.pos()),
                key,
                None,
                format!("required section `{key}` is missing"),
                format!("add `{key}: {{num_instances: 1, urls: [\"host:port\"]}}`"),
            );
        }
        return empty;
    };
    // Engine options may sit in a server section upstream; they do not concern the router.
    let urls_path = format!("{key}.urls");
    let urls: Vec<String> = match pool.get("urls").map(|n| (&n.value, n)) {
        None => Vec::new(),
        Some((Value::Seq(items), _)) => items
            .iter()
            .filter_map(|n| match &n.value {
                Value::Scalar { text, .. } => {
                    let url = text
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_string();
                    if url
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    {
                        Some(url)
                    } else {
                        sink.error(
                            Some(n.pos),
                            &urls_path,
                            Some(text.clone()),
                            "not a host:port address",
                            "write each worker as \"host:port\", e.g. \"localhost:8001\"",
                        );
                        None
                    }
                }
                _ => {
                    sink.error(
                        Some(n.pos),
                        &urls_path,
                        Some(n.display()),
                        "expected a string",
                        "write \"host:port\"",
                    );
                    None
                }
            })
            .collect(),
        Some((_, n)) => {
            sink.error(
                Some(n.pos),
                &urls_path,
                Some(n.display()),
                "expected a list",
                "write urls: [\"host:port\", ...]",
            );
            Vec::new()
        }
    };
    let num = reader::int(
        sink,
        pool,
        "num_instances",
        Need::Optional,
        0,
        4096,
        "how many workers the pool has",
    );
    if let Some(n) = num {
        if pool.get("urls").is_some() && n as usize != urls.len() {
            sink.error(
                pool.get("num_instances").map(|n| n.pos),
                &format!("{key}.num_instances"),
                Some(n.to_string()),
                format!("num_instances is {n} but {} urls are listed", urls.len()),
                "make num_instances equal the number of urls",
            );
        }
    }
    if required && urls.is_empty() {
        sink.error(
            Some(pool.pos()),
            &urls_path,
            None,
            "no workers listed",
            "list the workers as urls: [\"host:port\", ...]",
        );
    }
    let router_path = format!("{key}.router");
    let policy = match reader::section(sink, pool, "router", &router_path) {
        None => RouterPolicy::RoundRobin,
        Some(r) => {
            let kind = reader::choice(
                sink,
                r,
                "type",
                &["round_robin", "load_balancing", "kv_cache_aware"],
                "the pool's routing policy",
            );
            let use_tokens = reader::bool(sink, r, "use_tokens", Need::Optional, "true or false")
                .unwrap_or(false);
            match kind {
                Some("load_balancing") => RouterPolicy::LoadBalancing { use_tokens },
                Some("kv_cache_aware") => RouterPolicy::KvCacheAware(kv_aware_args(sink, pool, r)),
                _ => RouterPolicy::RoundRobin,
            }
        }
    };
    ServerPool { urls, policy }
}

/// The `kv_cache_aware` router's args as upstream's `extract_router_config` gathers them: the
/// router section's own keys, else the server section's `max_batch_size` and
/// `kv_cache_config.tokens_per_block`, else the router's defaults.
fn kv_aware_args(sink: &mut Sink, pool: MapRef<'_>, router: MapRef<'_>) -> KvAwareArgs {
    let d = KvAwareArgs::default();
    let int = |sink: &mut Sink, map: MapRef<'_>, key: &str, hint: &str| {
        reader::int(sink, map, key, Need::Optional, 1, i64::from(u32::MAX), hint).map(|v| v as u32)
    };
    let batch_hint = "requests in flight that outweigh a full prefix match";
    let block_hint = "the workers' kv_cache_config.tokens_per_block";
    let kv_path = format!("{}.kv_cache_config", pool.path);
    let server_block = reader::section(sink, pool, "kv_cache_config", &kv_path)
        .and_then(|kv| int(sink, kv, "tokens_per_block", block_hint));
    KvAwareArgs {
        max_batch_size: int(sink, router, "max_batch_size", batch_hint)
            .or_else(|| int(sink, pool, "max_batch_size", batch_hint))
            .unwrap_or(d.max_batch_size),
        tokens_per_block: int(sink, router, "tokens_per_block", block_hint)
            .or(server_block)
            .unwrap_or(d.tokens_per_block),
        backfill_block_hashes_on_finish: reader::bool(
            sink,
            router,
            "backfill_block_hashes_on_finish",
            Need::Optional,
            "true for workers that publish no KV cache events",
        )
        .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_aware_takes_upstreams_args_and_conditional_disagg() {
        let text = "context_servers:\n  urls: [\"n1:8001\"]\n  max_batch_size: 16\n  kv_cache_config:\n    tokens_per_block: 64\n  router:\n    type: kv_cache_aware\ngeneration_servers:\n  urls: [\"n3:8002\"]\n  max_batch_size: 16\n  router:\n    type: kv_cache_aware\n    max_batch_size: 8\n    tokens_per_block: 16\n    backfill_block_hashes_on_finish: true\nconditional_disagg_config:\n  max_local_prefill_length: 256\n";
        let c = CoordinatorConfig::parse(Path::new("s.yaml"), text).unwrap();
        assert_eq!(
            c.context.policy,
            RouterPolicy::KvCacheAware(KvAwareArgs {
                max_batch_size: 16,
                tokens_per_block: 64,
                backfill_block_hashes_on_finish: false
            }),
            "the server section's values"
        );
        assert_eq!(
            c.generation.policy,
            RouterPolicy::KvCacheAware(KvAwareArgs {
                max_batch_size: 8,
                tokens_per_block: 16,
                backfill_block_hashes_on_finish: true
            }),
            "the router section's own win"
        );
        assert_eq!(c.max_local_prefill_length, Some(256));
        assert_eq!(c.generation.policy.name(), "kv_cache_aware");
        assert!(c.warnings.0.is_empty(), "{}", c.warnings);
        let defaults = "context_servers:\n  urls: [\"n1:8001\"]\ngeneration_servers:\n  urls: [\"n3:8002\"]\n  router: {type: kv_cache_aware}\n";
        let c = CoordinatorConfig::parse(Path::new("s.yaml"), defaults).unwrap();
        assert_eq!(
            c.generation.policy,
            RouterPolicy::KvCacheAware(KvAwareArgs::default())
        );
        assert_eq!(
            RouterPolicy::KvCacheAware(KvAwareArgs::default()).to_yaml(),
            "{type: kv_cache_aware, max_batch_size: 64, tokens_per_block: 32, backfill_block_hashes_on_finish: false}"
        );
    }

    #[test]
    fn conditional_disagg_needs_a_kv_cache_aware_generation_router() {
        let text = "context_servers:\n  urls: [\"n1:8001\"]\ngeneration_servers:\n  urls: [\"n3:8002\"]\nconditional_disagg_config:\n  max_local_prefill_length: 0\n";
        let err = CoordinatorConfig::parse(Path::new("s.yaml"), text).unwrap_err();
        let text = err.diagnostics().unwrap().to_string();
        assert!(
            text.contains("needs a kv_cache_aware generation router"),
            "{text}"
        );
        assert_eq!(
            RouterPolicy::LoadBalancing { use_tokens: true }.name(),
            "load_balancing+tokens"
        );
    }

    #[test]
    fn the_ci_generated_config_parses() {
        let text = "backend: pytorch\ncontext_servers:\n  num_instances: 2\n  urls: [\"n1:8001\", \"n2:8001\"]\ngeneration_servers:\n  num_instances: 1\n  urls: [\"n3:8002\"]\nhostname: n1\nport: 8333\n";
        let c = CoordinatorConfig::parse(Path::new("server_config.yaml"), text).unwrap();
        assert_eq!(
            (c.hostname.as_str(), c.port, c.max_retries),
            ("n1", 8333, 1)
        );
        assert_eq!(c.context.urls, ["n1:8001", "n2:8001"]);
        assert_eq!(c.generation.policy, RouterPolicy::RoundRobin);
        assert!(c.warnings.0.is_empty());
    }

    #[test]
    fn the_reference_example_parses_with_warnings_for_unused_keys() {
        let text = r#"
hostname: localhost
port: 8000
max_retries: 1
perf_metrics_max_requests: 0
return_perf_metrics: false
schedule_style: context_first
node_id: 3
context_servers:
  num_instances: 2
  urls: ["localhost:8001", "localhost:8002"]
  router:
    type: round_robin
    use_tokens: false
  tensor_parallel_size: 4
generation_servers:
  num_instances: 1
  urls: ["localhost:8003"]
  router: {type: load_balancing, use_tokens: true}
otlp_config: {otlp_traces_endpoint: null}
"#;
        let c = CoordinatorConfig::parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(
            c.generation.policy,
            RouterPolicy::LoadBalancing { use_tokens: true }
        );
        let warned: Vec<&str> = c.warnings.0.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(warned, ["return_perf_metrics", "node_id", "otlp_config"]);
    }

    #[test]
    fn the_internal_auth_key_is_read_and_never_echoed() {
        let base = "context_servers: {urls: [\"a:1\"]}\ngeneration_servers: {urls: [\"b:2\"]}\n";
        let c = CoordinatorConfig::parse(
            Path::new("c.yaml"),
            &format!("{base}internal_request_auth_key: \"k-0123\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.auth_key.as_ref().map(AuthKey::expose_secret),
            Some("k-0123")
        );
        assert!(c.warnings.0.is_empty(), "{}", c.warnings);
        assert!(!format!("{c:?}").contains("k-0123"));
        let none = CoordinatorConfig::parse(
            Path::new("c.yaml"),
            &format!("{base}internal_request_auth_key: null\n"),
        )
        .unwrap();
        assert_eq!(none.auth_key, None);
        for bad in ["\"\"", "[\"s3cret-in-a-list\"]"] {
            let err = CoordinatorConfig::parse(
                Path::new("c.yaml"),
                &format!("{base}internal_request_auth_key: {bad}\n"),
            )
            .unwrap_err();
            let text = err.diagnostics().unwrap().to_string();
            assert!(
                text.contains("internal_request_auth_key: must be a non-empty string"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn mismatched_counts_and_bad_urls_are_errors() {
        let text = "context_servers: {num_instances: 2, urls: [\"a:1\"]}\ngeneration_servers: {urls: [\"nope\"]}\n";
        let err = CoordinatorConfig::parse(Path::new("c.yaml"), text).unwrap_err();
        let d = err.diagnostics().unwrap();
        assert_eq!(d.error_count(), 3, "{d}");
    }
}
