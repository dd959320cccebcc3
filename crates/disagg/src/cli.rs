//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use disagg_config::{EngineKind, Overrides};
use disagg_runtime::InvalidInput;
use disagg_runtime::conclude::StoreTo;
use disagg_runtime::prepare::{RunOptions, RunRequest};

/// Run disaggregated LLM-serving performance tests end to end: validate a test config, plan
/// its nodes and GPUs exactly as upstream CI does, run it on this machine or as a Slurm job,
/// benchmark it, judge it against its baselines, report it.
#[derive(Debug, Parser)]
#[command(name = "disagg", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct Global {
    /// Cluster profiles file [default: $XDG_CONFIG_HOME/disagg/clusters.yaml]
    #[arg(long, global = true, env = "DISAGG_CLUSTERS", value_name = "FILE")]
    pub clusters: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check test configs; report every problem in every file at once (exit 2 if any is invalid)
    Validate(ValidateArgs),
    /// Show what a test needs: servers, GPUs, nodes, srun geometry, idle GPUs; or its Slurm script
    Plan(PlanArgs),
    /// Run the simulated engine: an OpenAI-compatible context/generation worker without a GPU
    Sim(SimArgs),
    /// Run the disaggregated router (TensorRT-LLM coordinator protocol) from a server_config.yaml
    Router(RouterArgs),
    /// Benchmark an OpenAI-compatible server: TTFT, TPOT, ITL, E2EL and throughputs, upstream definitions
    Bench(BenchArgs),
    /// Run a whole test on this machine: every role as a local process, supervised, results collected
    Run(RunArgs),
    /// Submit a test as a Slurm job, follow it to its end, collect the results
    Submit(SubmitArgs),
    /// Show a submitted run: the job's state, each role's state, the verdict
    Status(RunDirArgs),
    /// Cancel a submitted run's job (only the job the run directory records)
    Cancel(RunDirArgs),
    /// The Jenkins entry point: every test of a test list through submit, one JUnit file, one exit code
    Ci(CiArgs),
    /// Sweep a config over axes: every derived point an ordinary run (local or Slurm, N in
    /// flight, resumable); the Pareto frontier and the best point under an SLA
    Sweep(SweepArgs),
    /// Check a run's gated metrics against their baselines (exit 1 on a regression)
    Check(CheckArgs),
    /// Browse and manage the results store
    Results(ResultsArgs),
    /// Write a self-contained HTML report of a run (charts, verdict, history, comparison; --pdf),
    /// or of a sweep (its directory: frontier, points, SLA answer)
    Report(ReportArgs),
    /// Run one role of a run (what every Slurm step and every child of `disagg run` executes)
    Role(RoleArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A test config file, or an upstream test id resolved under --config-dir
    #[arg(value_name = "FILE|TEST_ID")]
    pub config: String,
    /// Where test ids are looked up (searched recursively)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub config_dir: PathBuf,
    /// Run directory [default: runs/CONFIG-UTCTIME, or under the cluster's run_root]; never reused
    #[arg(long, alias = "run-dir", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Cluster profile (checks the node size; required by submit)
    #[arg(long, short = 'c', value_name = "NAME")]
    pub cluster: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when the run ends
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub grace: f64,
    /// Results database [default: $DISAGG_DB, else the config's results.db, else
    /// $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Do not store the results nor check them against the baselines
    #[arg(long)]
    pub no_store: bool,
    /// End (SIGTERM) when this process, the launcher of this run (a sweep, ci --parallel), ends
    #[arg(long, value_name = "PID", hide = true)]
    pub parent_pid: Option<u32>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// Changes to a config's run that make any config quick to try.
#[derive(Debug, Args, Clone, Default)]
pub struct OverrideArgs {
    /// Engine of the worker roles: sim, trtllm, vllm, sglang, command [default: the config's
    /// engine.type, else sim]
    #[arg(long)]
    pub engine: Option<String>,
    /// Concurrencies instead of benchmark.concurrency_list
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<u32>,
    /// Prompts per concurrency instead of concurrency × multi_round
    #[arg(long)]
    pub num_prompts: Option<usize>,
    /// Prompts per concurrency = concurrency × K, instead of benchmark.multi_round
    #[arg(long)]
    pub multi_round: Option<u32>,
    /// Serve aggregated: the generation servers take whole requests (no context servers, no
    /// KV hand-off), behind the same router and benchmark — the baseline a disaggregated
    /// layout has to beat
    #[arg(long)]
    pub aggregated: bool,
    /// Send random prompts of the config's lengths instead of its dataset
    /// (`benchmark.dataset_file`, `workload`): a dataset that cannot be found is otherwise an
    /// error
    #[arg(long)]
    pub random_prompts: bool,
    /// Input length instead of benchmark.input_length
    #[arg(long)]
    pub isl: Option<u32>,
    /// Output length instead of benchmark.output_length
    #[arg(long)]
    pub osl: Option<u32>,
    /// How long an engine, the router or the benchmark may wait to be ready, seconds
    /// [default: as upstream, min(timeout, 3600), 3600 overridden by
    /// TRTLLM_TEST_DISAGG_SERVER_READY_TIMEOUT, else TRTLLM_TEST_SERVER_READY_TIMEOUT; the sim
    /// engine: min(timeout, 600), the same variables]
    #[arg(long, value_name = "S")]
    pub ready_timeout: Option<f64>,
    /// Upstream's one timeout: limit of the whole run and of each request, and the coordinator's
    /// -t/-r, seconds [default: slurm.timeout, else 10800, as upstream]
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    /// A cost-model parameter of the sim engine, over the config's engine.sim
    /// (e.g. decode_step_base_ms=16); repeatable
    #[arg(long = "sim", value_name = "NAME=VALUE")]
    pub sim: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Write the run directory and the job script, print the script, do not submit
    #[arg(long)]
    pub dry_run: bool,
    /// Submit and return the job id at once (follow it later with `disagg status RUN`)
    #[arg(long)]
    pub no_wait: bool,
    /// Path of the disagg binary on the compute nodes [default: this binary]
    #[arg(long, value_name = "PATH")]
    pub disagg_bin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunDirArgs {
    /// The run directory of a submitted run
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
}

#[derive(Debug, Args)]
pub struct CiArgs {
    /// The test list: one upstream test id (or config path) per line; blank lines and # comments skipped
    #[arg(long, value_name = "FILE")]
    pub test_list: PathBuf,
    /// Where test ids are looked up (searched recursively)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub config_dir: PathBuf,
    /// Cluster profile
    #[arg(long, short = 'c', value_name = "NAME")]
    pub cluster: String,
    /// Where Jenkins expects the JUnit file [default: $WORKSPACE/results.xml, else ./results.xml]
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Where the run directories go [default: $WORKSPACE/disagg-runs, else ./disagg-runs]
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Submit a test again, up to N times, when its job failed for a reason of the cluster (a
    /// node failed or never booted, the job was preempted or requeued); never after a failure
    /// of the test itself
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry_infra: u32,
    /// Results database [default: $DISAGG_DB, else the config's results.db, else
    /// $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Do not store the results nor check them against the baselines
    #[arg(long)]
    pub no_store: bool,
    /// Tests (Slurm jobs) in flight at once
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub parallel: usize,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The sweep spec: `base`, `axes`, `zip`, `concurrency`, `constraints`, `sla`
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Run every point as a Slurm job on this cluster profile
    #[arg(long, short = 'c', value_name = "NAME", conflicts_with = "local")]
    pub cluster: Option<String>,
    /// Run every point on this machine (the default)
    #[arg(long)]
    pub local: bool,
    /// The sweep's directory: points/, runs/, logs/, sweep.json, frontier.json, report.html
    /// [default: sweeps/SPEC_NAME]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Most points in flight [default: 1 locally, 4 on Slurm]
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Print every point, its plan and the estimated GPU-hours and wall time; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Complete the sweep in --out: points already stored valid are skipped, failed and
    /// missing ones run
    #[arg(long)]
    pub resume: bool,
    /// Retry a point that failed on the infrastructure (node failure, a job that never
    /// started) up to N times; a test failure is never retried
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry_failed: u32,
    /// Latency limits of the SLA answer, over the spec's `sla:` (e.g.
    /// p99_ttft_ms=2000,median_tpot_ms=50)
    #[arg(long, value_name = "KEY=MS,...")]
    pub sla: Option<String>,
    /// Bisect each point's concurrency to the highest that meets the SLA (extra runs)
    #[arg(long)]
    pub sla_search: bool,
    /// Most extra runs per point of --sla-search
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub sla_search_runs: u32,
    /// Where a base given as a test id is looked up [default: the spec's directory]
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Results database [default: $DISAGG_DB, else the base config's results.db, else
    /// $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The run directory to check
    #[arg(value_name = "RUN", required_unless_present = "latest")]
    pub run: Option<PathBuf>,
    /// Check the run stored last
    #[arg(long, conflicts_with = "run")]
    pub latest: bool,
    /// Pre-merge thresholds (default 10 % instead of 5 %); also DISAGG_PRE_MERGE=1
    #[arg(long)]
    pub pre_merge: bool,
    /// A pinned baseline: `metric: value` lines (YAML or JSON)
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Gated metrics [default: token_throughput,total_token_throughput, as upstream]
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Per-metric threshold, e.g. token_throughput=0.07 (repeatable)
    #[arg(long, value_name = "METRIC=FRACTION")]
    pub threshold: Vec<String>,
    /// Results database [default: $DISAGG_DB, else $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// Other runs to compare with (grouped bars per metric, as upstream's comparison report)
    #[arg(long, value_name = "RUN", num_args = 1..)]
    pub compare: Vec<PathBuf>,
    /// Add the history of each gated metric with its baseline and threshold band
    #[arg(long)]
    pub history: bool,
    /// Also print the report to PDF (headless Chromium)
    #[arg(long)]
    pub pdf: bool,
    /// Where to write it [default: RUN/results/report.html]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Results database [default: $DISAGG_DB, else $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Do not read the store (no check table, no history)
    #[arg(long)]
    pub no_store: bool,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[command(subcommand)]
    pub command: ResultsCommand,
    /// Results database [default: $DISAGG_DB, else $XDG_DATA_HOME/disagg/results.sqlite]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ResultsCommand {
    /// Stored runs, newest first
    List {
        /// Only this config
        #[arg(long)]
        config: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One stored run, as JSON
    Show {
        /// Its id (from `list`)
        id: i64,
    },
    /// Export stored runs
    Export {
        /// csv or json
        #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
        format: String,
        /// Only this config
        #[arg(long)]
        config: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
    /// Mark a run invalid: it never counts toward a baseline again
    MarkInvalid {
        /// Its id
        id: i64,
        /// Why
        #[arg(long)]
        note: Option<String>,
    },
    /// Undo mark-invalid
    MarkValid {
        /// Its id
        id: i64,
    },
    /// Pin a run as the baseline of its case
    MarkBaseline {
        /// Its id
        id: i64,
    },
    /// Store the results of a run directory (done automatically by run and submit)
    Import {
        /// The run directory
        run: PathBuf,
    },
    /// Upload unsent runs to OpenSearch (DISAGG_OPENSEARCH_URL, _USER, _PASSWORD, _INDEX)
    Push,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    /// CTX_i, GEN_i, DISAGG_SERVER or BENCHMARK [default: $DISAGG_SERVING_TYPE]
    pub role: Option<String>,
    /// The run directory (made by `disagg run` or `disagg submit`)
    #[arg(long, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// Address to bind and advertise [default: run.json's, else all interfaces + node name]
    #[arg(long)]
    pub host: Option<String>,
    /// End when this process (the launcher) ends
    #[arg(long, value_name = "PID", hide = true)]
    pub parent_pid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server base URL (http://host:port)
    #[arg(long)]
    pub url: String,
    /// Model name to send
    #[arg(long)]
    pub model: String,
    /// Endpoint
    #[arg(long, value_parser = ["completions", "chat"], default_value = "completions")]
    pub endpoint: String,
    /// Concurrency values, one run each (closed loop)
    #[arg(long, value_delimiter = ',', conflicts_with = "request_rate")]
    pub concurrency: Vec<usize>,
    /// Requests per second (open loop, Poisson or gamma arrivals on absolute time)
    #[arg(long)]
    pub request_rate: Option<f64>,
    /// Gamma shape of the arrivals (1 = Poisson, inf = evenly spaced)
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Prompts per run [default: concurrency × multi-round]
    #[arg(long)]
    pub num_prompts: Option<usize>,
    /// Prompts per run = concurrency × K (the upstream rule)
    #[arg(long, default_value_t = 1)]
    pub multi_round: usize,
    /// Input length in tokens
    #[arg(long, default_value_t = 1024)]
    pub isl: u32,
    /// Output length in tokens
    #[arg(long, default_value_t = 1024)]
    pub osl: u32,
    /// Random range ratio for both lengths, in [0, 1)
    #[arg(long, default_value_t = 0.0)]
    pub range_ratio: f64,
    /// Where prompts come from: random token ids; a JSONL file ({"prompt": ..., "output_len": N} per
    /// line); the trtllm_custom file of TensorRT-LLM (`input.messages[1].content`, `input.max_tokens`);
    /// groups of prompts sharing a prefix (shared-prefix); multi-turn chat sessions (multi-turn);
    /// or a Mooncake trace replayed on its timestamps (mooncake, with --trace-speedup)
    #[arg(long, value_parser = ["random", "jsonl", "trtllm-custom", "shared-prefix", "multi-turn", "mooncake"], default_value = "random")]
    pub dataset: String,
    /// The dataset file (jsonl, trtllm-custom, mooncake); jsonl and trtllm-custom requests are
    /// used in order, repeated if short
    #[arg(long, value_name = "FILE")]
    pub dataset_path: Option<PathBuf>,
    /// shared-prefix: distinct prefixes; request i uses prefix i mod N
    #[arg(long, default_value_t = disagg_config::workload::defaults::GROUPS)]
    pub prefix_groups: u32,
    /// shared-prefix: tokens of each prefix
    #[arg(long, default_value_t = disagg_config::workload::defaults::PREFIX_LEN)]
    pub prefix_len: u32,
    /// shared-prefix: tokens each prompt adds after its prefix
    #[arg(long, default_value_t = disagg_config::workload::defaults::SUFFIX_LEN)]
    pub suffix_len: u32,
    /// multi-turn: turns per session (--num-prompts / turns sessions; the first prompt --isl tokens)
    #[arg(long, default_value_t = disagg_config::workload::defaults::TURNS)]
    pub turns: u32,
    /// multi-turn: new user tokens per later turn
    #[arg(long, default_value_t = disagg_config::workload::defaults::TURN_LEN)]
    pub turn_len: u32,
    /// multi-turn: seconds between an answer and the session's next turn
    #[arg(long, default_value_t = disagg_config::workload::defaults::THINK_TIME)]
    pub think_time: f64,
    /// mooncake: replay the trace this many times faster than recorded (1 = as recorded)
    #[arg(long)]
    pub trace_speedup: Option<f64>,
    /// mooncake: tokens per hash_ids block
    #[arg(long, default_value_t = disagg_config::workload::defaults::BLOCK_SIZE)]
    pub trace_block_size: u32,
    /// Ask the server to ignore EOS (exact output lengths; checked by the validity gate)
    #[arg(long)]
    pub ignore_eos: bool,
    /// Do not stream
    #[arg(long)]
    pub no_stream: bool,
    /// Warm-up requests before each run (not measured)
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Seed of prompts and arrivals
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Goodput SLOs, e.g. ttft:300,tpot:50,e2el:2000 (ms)
    #[arg(long)]
    pub goodput: Option<String>,
    /// Percentiles to report
    #[arg(long, value_delimiter = ',', default_value = "99")]
    pub percentiles: Vec<f64>,
    /// Per-request deadline, seconds
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Hard deadline of each run, seconds: what has not finished by then is dropped and the run
    /// is marked interrupted (and invalid)
    #[arg(long, default_value_t = 3600.0)]
    pub max_duration: f64,
    /// Write one JSON record per run (con8.json, rate2.5.json) and results.csv here
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A Hugging Face tokenizer (a directory with tokenizer.json, or the file): text prompts of
    /// exact length, prompt lengths of text datasets, and output counts when the server sends no usage
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Exit 0 even when a run is invalid
    #[arg(long)]
    pub allow_invalid: bool,
    /// Put every request's timeline (due, sent, each chunk, end) into the JSON record
    #[arg(long)]
    pub save_timelines: bool,
    /// Read this Prometheus endpoint during each run, NAME=URL (e.g.
    /// ctx0=http://127.0.0.1:8001/metrics); repeat for several. The series go to
    /// `OUT/telemetry/<run>.jsonl` and a summary into the record; nvidia-smi is read too when present
    #[arg(long, value_name = "NAME=URL")]
    pub scrape: Vec<String>,
    /// Seconds between two reads of the --scrape endpoints
    #[arg(long, default_value_t = 1.0)]
    pub scrape_interval: f64,
    /// Send token-id prompts as text, one word `w<id>` per id, for routers that take only text
    /// (sglang-router); the sim counts one token per word
    #[arg(long)]
    pub prompt_words: bool,
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    /// The upstream coordinator config (server_config.yaml); its internal_request_auth_key, if
    /// any, signs generation requests (x-trtllm-disagg-auth) as upstream's coordinator does
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Bind this host instead of the config's `hostname`
    #[arg(long)]
    pub host: Option<String>,
    /// Bind this port instead of the config's `port` (0 = any free port)
    #[arg(long)]
    pub port: Option<u16>,
    /// Write the bound host:port to this file (atomically) once listening
    #[arg(long, value_name = "FILE")]
    pub report_addr: Option<PathBuf>,
    /// Deadline of one request, seconds (upstream -r)
    #[arg(long, short = 'r', default_value_t = 180.0)]
    pub request_timeout: f64,
    /// How long every worker may take to become healthy, seconds (upstream -t)
    #[arg(long, short = 't', default_value_t = 180.0)]
    pub server_start_timeout: f64,
    /// Seconds between health checks of a worker
    #[arg(long, default_value_t = 1.0)]
    pub health_check_interval: f64,
    /// The workers' hand-off protocol: trtllm (`disaggregated_params`), vllm
    /// (`kv_transfer_params`, NIXL), sglang (bootstrap room, both legs at once) or aggregated
    /// (no context servers; each request whole to one generation server)
    #[arg(long, default_value = "trtllm", value_parser = ["trtllm", "vllm", "sglang", "aggregated"])]
    pub handoff: String,
    /// SGLang: the context servers' KV bootstrap ports, in `context_servers` order (one port:
    /// the same for all) [default: SGLang's 8998]
    #[arg(long = "bootstrap-port", value_delimiter = ',')]
    pub bootstrap_ports: Vec<u16>,
    /// Upstream gen-only benchmark mode: skip the context leg
    #[arg(long, env = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub gen_only: bool,
    /// Worker threads. One thread is the default: next to the workers on a busy node, waking
    /// another thread costs more per request (~150 µs measured) than the routing itself, and one
    /// core relays thousands of requests per second
    /// How a kv_cache_aware pool turns text prompts into token ids: `sim` (the simulated
    /// engine's word tokenizer and chat template) or a Hugging Face model's (a directory with
    /// tokenizer.json and its chat template, or the tokenizer.json file). Without one, text
    /// prompts are routed by load alone
    #[arg(long, value_name = "sim|PATH")]
    pub tokenizer: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Which disaggregation hand-off the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimProtocol {
    /// TensorRT-LLM `disaggregated_params` (trtllm-serve disaggregated, disagg router)
    Trtllm,
    /// vLLM `kv_transfer_params` (vllm-router)
    Vllm,
    /// SGLang `bootstrap_host/port/room` (sglang-router)
    Sglang,
}

/// Which legs the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimRole {
    /// Prefill legs
    Context,
    /// Decode legs
    Generation,
    /// Both, and aggregated requests
    Both,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to bind
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0 = any free port; the real one is printed and written to --report-addr)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Write the bound host:port to this file (atomically) once listening
    #[arg(long, value_name = "FILE")]
    pub report_addr: Option<PathBuf>,
    /// Also serve on this port, as an SGLang prefill server serves its KV bootstrap
    /// (`--disaggregation-bootstrap-port`) [default: the bootstrap is on --port]
    #[arg(long, value_name = "PORT")]
    pub bootstrap_port: Option<u16>,
    /// Which legs this server takes
    #[arg(long, value_enum, default_value = "both")]
    pub role: SimRole,
    /// Hand-off protocol
    #[arg(long, value_enum, default_value = "trtllm")]
    pub protocol: SimProtocol,
    /// Model name served [default: metadata.model_name of --config, else "sim"]
    #[arg(long)]
    pub model: Option<String>,
    /// Take limits and cost parameters from a test config (worker_config.<--worker>, engine.sim);
    /// its internal_request_auth_key, if any, makes generation requests need upstream's
    /// x-trtllm-disagg-auth signature
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which worker section of --config to read
    #[arg(long, value_parser = ["ctx", "gen"], default_value = "gen")]
    pub worker: String,
    /// Set every cost to zero (measure the machinery, not a model)
    #[arg(long)]
    pub zero_cost: bool,
    /// Prefill tokens per second per GPU (0 = free) [default: 20000]
    #[arg(long)]
    pub prefill_tokens_per_s: Option<f64>,
    /// Fixed cost of a step in ms [default: 8]
    #[arg(long)]
    pub decode_step_base_ms: Option<f64>,
    /// Cost per decoding sequence in ms [default: 0.05]
    #[arg(long)]
    pub decode_step_per_seq_ms: Option<f64>,
    /// KV hand-off bandwidth in GB/s (0 = free) [default: 25]
    #[arg(long)]
    pub kv_transfer_gb_per_s: Option<f64>,
    /// KV bytes per token [default: 131072]
    #[arg(long)]
    pub kv_bytes_per_token: Option<f64>,
    /// KV-cache capacity in tokens [default: 1048576]
    #[arg(long)]
    pub kv_capacity_tokens: Option<u64>,
    /// Tokens per KV-cache block [default: from --config kv_cache_config, else 32]
    #[arg(long)]
    pub tokens_per_block: Option<u32>,
    /// Reuse cached prompt blocks across requests (prefix caching) [default: from --config
    /// kv_cache_config, else true]
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_block_reuse: Option<bool>,
    /// KV cache events kept for POST /kv_cache_events (0 = none) [default: from --config
    /// kv_cache_config, else 0]
    #[arg(long)]
    pub event_buffer_max_size: Option<usize>,
    /// Tensor parallel size (scales prefill) [default: from --config, else 1]
    #[arg(long)]
    pub tensor_parallel_size: Option<u32>,
    /// Most sequences at once [default: from --config, else 512]
    #[arg(long)]
    pub max_batch_size: Option<u32>,
    /// Most tokens per step [default: from --config, else 2048]
    #[arg(long)]
    pub max_num_tokens: Option<u32>,
    /// Longest prompt + output [default: from --config, else 131072]
    #[arg(long)]
    pub max_seq_len: Option<u32>,
    /// Tokens per streamed chunk after the first [default: from --config, else 1]
    #[arg(long)]
    pub stream_interval: Option<u32>,
    /// Seed of the generated tokens
    #[arg(long)]
    pub seed: Option<u64>,
    /// Chance that a generated token ends the output (0 = always run to max_tokens) [default: 0]
    #[arg(long)]
    pub eos_probability: Option<f64>,
    /// Key of the hand-off digest; every server of one test must share it
    #[arg(long, env = "DISAGG_SIM_HANDOFF_KEY", hide_env_values = true)]
    pub handoff_key: Option<String>,
    /// Accept generation_only requests without a hand-off (upstream gen-only benchmark mode)
    #[arg(long, env = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub accept_synthetic_handoff: bool,
    /// Worker threads (1 = one core, the default)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Count text prompts with this Hugging Face tokenizer (a directory with tokenizer.json)
    /// instead of one token per word, so prefill times match what a client with it meant
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Config files, or directories searched for *.yaml / *.yml
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also fail (exit 2) on warnings
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A test config file, or an upstream test id resolved under --config-dir
    #[arg(value_name = "FILE|TEST_ID")]
    pub config: String,
    /// Where test ids are looked up (searched recursively)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub config_dir: PathBuf,
    /// Cluster profile to plan for (partition, account, container, MPI, ...)
    #[arg(long, short = 'c', value_name = "NAME")]
    pub cluster: Option<String>,
    /// Pack servers smaller than a node onto shared nodes (not what upstream CI does)
    #[arg(long)]
    pub packing: bool,
    /// Print the plan as JSON
    #[arg(long, conflicts_with = "sbatch")]
    pub json: bool,
    /// Print the Slurm batch script instead of the table
    #[arg(long)]
    pub sbatch: bool,
    /// Run directory the script uses (on the shared filesystem) [default: ./runs/CONFIG_NAME]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Path of the disagg binary on the compute nodes [default: this binary]
    #[arg(long, value_name = "PATH")]
    pub disagg_bin: Option<PathBuf>,
    /// Plan for this engine (its ranks per node and ports) [default: the config's engine.type]
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<String>,
}

/// `--engine NAME`, parsed.
pub fn engine_arg(name: Option<&str>) -> anyhow::Result<Option<EngineKind>> {
    name.map(|e| {
        e.parse::<EngineKind>().map_err(|_| {
            InvalidInput(format!(
                "--engine {e}: use one of {}",
                EngineKind::NAMES.join(", ")
            ))
            .into()
        })
    })
    .transpose()
}

/// Where results go: `--no-store`, else `--db`, else the default store.
fn store(no_store: bool, db: Option<&std::path::Path>) -> StoreTo {
    match (no_store, db) {
        (true, _) => StoreTo::Off,
        (false, Some(db)) => StoreTo::At(db.to_path_buf()),
        (false, None) => StoreTo::Default,
    }
}

impl OverrideArgs {
    /// The run options of these flags (`run`, `submit`, `ci`).
    pub fn options(&self) -> anyhow::Result<RunOptions> {
        let engine = engine_arg(self.engine.as_deref())?;
        Ok(RunOptions {
            engine,
            overrides: Overrides {
                concurrency: (!self.concurrency.is_empty()).then(|| self.concurrency.clone()),
                isl: self.isl,
                osl: self.osl,
                num_prompts: self.num_prompts,
                multi_round: self.multi_round,
                sim: Overrides::parse_sim(&self.sim)?,
                aggregated: self.aggregated,
                random_prompts: self.random_prompts,
            },
            ready_timeout: self.ready_timeout,
            timeout: self.timeout,
        })
    }
}

impl RunArgs {
    /// The run these flags ask for.
    pub fn request(&self, global: &Global) -> anyhow::Result<RunRequest> {
        Ok(RunRequest {
            config: self.config.clone(),
            config_dir: self.config_dir.clone(),
            out: self.out.clone(),
            clusters_file: global.clusters.clone(),
            cluster: self.cluster.clone(),
            options: self.overrides.options()?,
            parent_pid: self.parent_pid,
        })
    }

    /// Where its results go.
    pub fn store(&self) -> StoreTo {
        store(self.no_store, self.db.as_deref())
    }
}

impl CiArgs {
    /// Where the results go.
    pub fn store(&self) -> StoreTo {
        store(self.no_store, self.db.as_deref())
    }
}

impl ReportArgs {
    /// Where the check table and history come from.
    pub fn store(&self) -> StoreTo {
        store(self.no_store, self.db.as_deref())
    }
}
