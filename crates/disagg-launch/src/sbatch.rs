//! The Slurm batch script of one test, rendered from a [`Plan`] and the cluster's settings.
//!
//! Pure: the same [`JobSpec`] always renders the same text. Every value that comes from a
//! config goes through [`quote`], or must pass [`is_sbatch_safe`] to appear on an `#SBATCH` line,
//! so the script never executes a config value. Install commands from the cluster profile are
//! the one exception by design: they are commands, run with `bash -c` on each node.
//!
//! The script's shape:
//! 1. `#SBATCH` header from the plan (nodes, tasks, GPUs) and the cluster (partition, account, time).
//! 2. Node slices: `scontrol show hostnames` into an array; each step is pinned with `-w`, so the
//!    plan's placement is what runs (upstream left it to Slurm until era E).
//! 3. Optional install step, once per node.
//! 4. `GEN_i`, then `CTX_i` worker steps in the background (`--kill-on-bad-exit=1`, the MPI flag
//!    only here), then `DISAGG_SERVER` and `BENCHMARK` on `--overlap` steps. Each step runs
//!    `disagg role <ROLE> --run-dir <DIR>` with its role's environment exported, through a
//!    short prelude inside the task ([`Ucx`], the workers' per-rank caches; see [`render`]) and,
//!    for workers with [`JobSpec::numa_bind`], under `numactl -m 0,1`.
//! 5. Wait for the first step to end. The benchmark ending first is the normal end and its exit
//!    code is the job's; any other step ending first fails the job at once. Then every step is
//!    sent SIGTERM, given a grace period, and killed.

use std::fmt::Write as _;

use disagg_plan::{Plan, Ranks, Role, ServerKind, ServerPlan};

use crate::shell::{is_sbatch_safe, quote};

/// An environment variable for a step.
pub type EnvVar = (String, String);

/// Container settings for pyxis (`srun --container-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `--container-image`.
    pub image: String,
    /// `--container-mounts`.
    pub mounts: Option<String>,
    /// `--container-workdir`.
    pub workdir: Option<String>,
}

/// What every task does with UCX's transport variables before `disagg role` starts, by GPU type
/// (upstream's `jenkins/scripts/perf/submit.py`). Done inside the task, so it also overrides what
/// a container image sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ucx {
    /// `unset UCX_TLS UCX_NET_DEVICES`: UCX picks its transports itself.
    #[default]
    Clear,
    /// `export UCX_TLS=<value>`.
    Transports(String),
}

/// Workers' defaults set inside each task unless the step's environment sets them (upstream's
/// submit.py puts them in front of the config's worker variables): a FlashInfer JIT cache per
/// local rank, so the ranks of a node never compile into one directory, and a node-local
/// Hugging Face home. The cache path is expanded by the task's shell, per rank.
const WORKER_DEFAULTS: &[(&str, &str)] = &[
    (
        "FLASHINFER_JIT_DIR",
        "/tmp/flashinfer_jit_cache_\"$SLURM_LOCALID\"",
    ),
    ("HF_HOME", "/tmp/hf_home"),
];

/// NUMA nodes whose memory the workers may use with [`JobSpec::numa_bind`]: the CPU's nodes
/// on GB200/GB300 NVL72, where the GPUs' memory shows up as NUMA nodes too (upstream's
/// `start_worker.sh`).
const NUMA_NODES: &str = "0,1";

/// Environment per role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleEnv {
    /// Every step.
    pub common: Vec<EnvVar>,
    /// Every worker step.
    pub worker: Vec<EnvVar>,
    /// Context worker steps, after `worker`.
    pub ctx: Vec<EnvVar>,
    /// Generation worker steps, after `worker`.
    pub gen_: Vec<EnvVar>,
    /// The coordinator step.
    pub server: Vec<EnvVar>,
    /// The benchmark step.
    pub benchmark: Vec<EnvVar>,
}

impl RoleEnv {
    /// The variables of one role's step (after [`RoleEnv::common`]): a worker gets `worker` then
    /// its kind's, the coordinator `server`, the benchmark `benchmark`. A name set twice keeps
    /// its last value, in the place of its last setting.
    pub fn of(&self, role: Role) -> Vec<EnvVar> {
        let vars: Vec<&EnvVar> = match role {
            Role::Ctx(_) => self.worker.iter().chain(&self.ctx).collect(),
            Role::Gen(_) => self.worker.iter().chain(&self.gen_).collect(),
            Role::DisaggServer => self.server.iter().collect(),
            Role::Benchmark => self.benchmark.iter().collect(),
        };
        vars.iter()
            .enumerate()
            .filter(|(i, (k, _))| !vars[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, v)| (*v).clone())
            .collect()
    }
}

/// Everything the script needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec<'a> {
    /// The test's name (for comments).
    pub test_name: String,
    /// `--job-name`; made unique by the caller.
    pub job_name: String,
    /// The run directory on the shared filesystem.
    pub run_dir: String,
    /// Path of the `disagg` binary on the nodes.
    pub disagg_bin: String,
    /// The plan.
    pub plan: &'a Plan,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time`.
    pub time_limit: Option<String>,
    /// Add `--gpus-per-node` (clusters with GPU GRES).
    pub gres_gpus: bool,
    /// Extra `#SBATCH` arguments (the cluster profile's).
    pub sbatch_args: Vec<String>,
    /// More `#SBATCH` arguments (the test config's `slurm.extra_args`), after `sbatch_args`.
    pub extra_args: Vec<String>,
    /// `--segment=<nodes>`: every node of the job in one segment (one NVLink domain).
    pub segment: bool,
    /// UCX's transports in every task.
    pub ucx: Ucx,
    /// Workers run under `numactl -m 0,1`.
    pub numa_bind: bool,
    /// Lines for the header comment (why a setting was or was not applied).
    pub notes: Vec<String>,
    /// pyxis container, if any.
    pub container: Option<ContainerSpec>,
    /// `--mpi=` on worker steps.
    pub mpi: Option<String>,
    /// Commands run once per node before the roles.
    pub install: Vec<String>,
    /// Per-role environment.
    pub env: RoleEnv,
    /// Seconds between two step launches (pyxis needs a few).
    pub step_stagger_s: u32,
    /// Seconds steps get between SIGTERM and SIGKILL at the end.
    pub teardown_grace_s: u32,
    /// Seconds the roles get to end by themselves (they watch the status file) before teardown.
    pub settle_s: u32,
    /// The version line for the header.
    pub generator: String,
}

/// Why a script cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A value that must go on an `#SBATCH` line has characters sbatch would misread.
    #[error(
        "{field} `{value}` cannot go on an #SBATCH line: use only letters, digits and _-./:=@%+,"
    )]
    UnsafeSbatchValue {
        /// Which setting.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// An environment variable name that is not a shell identifier.
    #[error(
        "environment variable name `{0}` is not valid: use letters, digits and _, not starting with a digit"
    )]
    BadEnvName(String),
}

fn sbatch_line(
    out: &mut String,
    flag: &str,
    field: &'static str,
    value: &str,
) -> Result<(), RenderError> {
    if !is_sbatch_safe(value) {
        return Err(RenderError::UnsafeSbatchValue {
            field,
            value: value.to_string(),
        });
    }
    let _ = writeln!(out, "#SBATCH {flag}={value}");
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Render the script.
pub fn render(spec: &JobSpec<'_>) -> Result<String, RenderError> {
    let plan = spec.plan;
    let mut s = String::new();
    let ctx_servers = plan
        .servers
        .iter()
        .filter(|x| x.role == ServerKind::Ctx)
        .count();
    let gen_servers = plan.servers.len() - ctx_servers;

    // Header.
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# Slurm job for test {} — generated by {}.",
        spec.test_name.replace('\n', " "),
        spec.generator
    );
    let _ = writeln!(
        s,
        "# Edit the test config or the cluster profile, not this file."
    );
    let _ = writeln!(
        s,
        "# Plan: {} node(s) x {} GPUs = {} GPUs ({} idle); {} ctx x {} GPUs, {} gen x {} GPUs; placement {:?}.",
        plan.total_nodes,
        plan.gpus_per_node,
        plan.total_gpus,
        plan.idle_gpus,
        ctx_servers,
        plan.gpus_per_ctx_server,
        gen_servers,
        plan.gpus_per_gen_server,
        plan.placement
    );
    for note in &spec.notes {
        let _ = writeln!(s, "# {}", note.replace(['\n', '\r'], " "));
    }
    sbatch_line(&mut s, "--job-name", "job name", &spec.job_name)?;
    let _ = writeln!(s, "#SBATCH --nodes={}", plan.total_nodes);
    // One task per GPU (TensorRT-LLM's MPI ranks) or one per node (vLLM, SGLang).
    let tasks_per_node = match plan.ranks {
        Ranks::PerGpu => plan.gpus_per_node,
        Ranks::PerNode => 1,
    };
    let _ = writeln!(s, "#SBATCH --ntasks={}", plan.total_nodes * tasks_per_node);
    let _ = writeln!(s, "#SBATCH --ntasks-per-node={tasks_per_node}");
    if spec.gres_gpus {
        let _ = writeln!(s, "#SBATCH --gpus-per-node={}", plan.gpus_per_node);
    }
    if let Some(p) = &spec.partition {
        sbatch_line(&mut s, "--partition", "partition", p)?;
    }
    if let Some(a) = &spec.account {
        sbatch_line(&mut s, "--account", "account", a)?;
    }
    if let Some(t) = &spec.time_limit {
        sbatch_line(&mut s, "--time", "time limit", t)?;
    }
    let log = format!("{}/logs/job.log", spec.run_dir);
    if is_sbatch_safe(&log) {
        let _ = writeln!(s, "#SBATCH --output={log}");
    } else {
        let _ = writeln!(
            s,
            "# (no #SBATCH --output: the run directory needs quoting; `disagg submit` passes it to sbatch)"
        );
    }
    if spec.segment {
        let _ = writeln!(s, "#SBATCH --segment={}", plan.total_nodes);
    }
    let args = (spec.sbatch_args.iter().map(|a| ("sbatch argument", a)))
        .chain(spec.extra_args.iter().map(|a| ("slurm.extra_args", a)));
    for (field, arg) in args {
        if !is_sbatch_safe(arg) {
            return Err(RenderError::UnsafeSbatchValue {
                field,
                value: arg.clone(),
            });
        }
        let _ = writeln!(s, "#SBATCH {arg}");
    }

    // Settings.
    s.push_str("\nset -uo pipefail\n\n");
    let _ = writeln!(s, "RUN_DIR={}", quote(&spec.run_dir));
    let _ = writeln!(s, "DISAGG={}", quote(&spec.disagg_bin));
    let _ = writeln!(s, "GRACE={}", spec.teardown_grace_s);
    let _ = writeln!(s, "SETTLE={}", spec.settle_s);
    s.push_str(concat!(
        "LOGS=\"$RUN_DIR/logs\"\n",
        "mkdir -p \"$LOGS\"\n",
        "export DISAGG_RUN_DIR=\"$RUN_DIR\"\n",
        "echo \"disagg: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}\"\n",
    ));
    for (k, v) in &spec.env.common {
        export(&mut s, "", k, v)?;
    }

    // Node slices.
    let n = plan.total_nodes;
    let _ = write!(
        s,
        concat!(
            "\n# The plan pins every step to its nodes (generation servers first, then context servers).\n",
            "mapfile -t NODES < <(scontrol show hostnames \"$SLURM_JOB_NODELIST\")\n",
            "if (( ${{#NODES[@]}} < {n} )); then\n",
            "  echo \"disagg: the job got ${{#NODES[@]}} nodes, the plan needs {n}\" >&2\n",
            "  exit 1\n",
            "fi\n",
        ),
        n = n
    );

    // Container flags.
    if let Some(c) = &spec.container {
        s.push_str("\n# pyxis container for every step.\nCONTAINER=()\n");
        let _ = writeln!(s, "CONTAINER+=(--container-image={})", quote(&c.image));
        if let Some(m) = &c.mounts {
            let _ = writeln!(s, "CONTAINER+=(--container-mounts={})", quote(m));
        }
        if let Some(w) = &c.workdir {
            let _ = writeln!(s, "CONTAINER+=(--container-workdir={})", quote(w));
        }
        s.push_str("CONTAINER+=(--container-name=\"disagg-${SLURM_JOB_ID:-0}\")\n");
    }

    // Install.
    if !spec.install.is_empty() {
        let script = spec.install.join("\n");
        let _ = write!(
            s,
            concat!(
                "\n# Install: once per node, before any role starts.\n",
                "if ! srun -N {n} --ntasks={n} --ntasks-per-node=1{container} bash -c {script} &> \"$LOGS/install.log\"; then\n",
                "  echo \"disagg: the install step failed; see $LOGS/install.log\" >&2\n",
                "  exit 1\n",
                "fi\n",
            ),
            n = n,
            container = if spec.container.is_some() {
                " \"${CONTAINER[@]}\""
            } else {
                ""
            },
            script = quote(&script)
        );
    }

    // Steps.
    s.push_str(TEARDOWN);
    s.push_str("\n# Steps, each running `disagg role` under srun, in the background.\n");
    s.push_str(
        "# Each task starts through a bash prelude: UCX's transports for the GPU type and, for workers,\n\
         # per-rank caches (as upstream's submit.py); a variable the step's environment sets is left alone.\n",
    );
    if spec.numa_bind {
        let _ = writeln!(
            s,
            "# Workers allocate host memory only on NUMA nodes {NUMA_NODES} (slurm.numa_bind), as upstream's start_worker.sh."
        );
    }
    let stagger = spec.step_stagger_s;
    let mut first = true;
    let workers = plan
        .servers
        .iter()
        .filter(|x| x.role == ServerKind::Gen)
        .chain(plan.servers.iter().filter(|x| x.role == ServerKind::Ctx));
    for server in workers {
        if !first && stagger > 0 {
            let _ = writeln!(s, "sleep {stagger}");
        }
        first = false;
        worker_step(&mut s, spec, server)?;
    }
    for (role, env, step) in [
        (Role::DisaggServer, &spec.env.server, plan.disagg_server),
        (Role::Benchmark, &spec.env.benchmark, plan.benchmark),
    ] {
        if stagger > 0 {
            let _ = writeln!(s, "sleep {stagger}");
        }
        let _ = writeln!(
            s,
            "\n# {role}: one task on node {}, overlapping a worker.",
            step.node_index
        );
        s.push_str("(\n");
        for (k, v) in env {
            export(&mut s, "  ", k, v)?;
        }
        let _ = writeln!(s, "  export DISAGG_SERVING_TYPE={role}");
        let _ = writeln!(
            s,
            "  exec srun --kill-on-bad-exit=1 --job-name={role} --overlap -N {} --ntasks={} --ntasks-per-node={} -w \"${{NODES[{}]}}\" \\",
            step.nodes, step.ntasks, step.ntasks_per_node, step.node_index
        );
        container_env(&mut s, spec, env, &[])?;
        task(&mut s, spec, role, env, false);
        let _ = writeln!(s, ") &> \"$LOGS/slurm-{role}.log\" &");
        let _ = writeln!(s, "pids+=($!); names+=({role})");
    }

    // Wait and tear down.
    s.push_str(WAIT);
    Ok(s)
}

fn export(s: &mut String, indent: &str, k: &str, v: &str) -> Result<(), RenderError> {
    if !valid_name(k) {
        return Err(RenderError::BadEnvName(k.to_string()));
    }
    let _ = writeln!(s, "{indent}export {k}={}", quote(v));
    Ok(())
}

/// pyxis only forwards the variables it is told about into the container.
fn container_env(
    s: &mut String,
    spec: &JobSpec<'_>,
    env: &[EnvVar],
    extra: &[&str],
) -> Result<(), RenderError> {
    if spec.container.is_none() {
        return Ok(());
    }
    let mut names: Vec<&str> = vec!["DISAGG_SERVING_TYPE", "DISAGG_RUN_DIR"];
    names.extend(extra);
    for (k, _) in spec.env.common.iter().chain(env) {
        if !valid_name(k) {
            return Err(RenderError::BadEnvName(k.clone()));
        }
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    let _ = writeln!(
        s,
        "    \"${{CONTAINER[@]}}\" --container-env={} \\",
        names.join(",")
    );
    Ok(())
}

/// The command a step's tasks run: the prelude (when it has anything to do), `numactl` for
/// workers with [`JobSpec::numa_bind`], then `disagg role`. The prelude is our own text with
/// constant values, quoted twice (for the task's shell inside, for this script outside).
fn task(s: &mut String, spec: &JobSpec<'_>, role: Role, env: &[EnvVar], worker: bool) {
    let set = |name: &str| spec.env.common.iter().chain(env).any(|(k, _)| k == name);
    let mut program: Vec<String> = Vec::new();
    match &spec.ucx {
        Ucx::Clear => {
            let names: Vec<&str> = ["UCX_TLS", "UCX_NET_DEVICES"]
                .into_iter()
                .filter(|n| !set(n))
                .collect();
            if !names.is_empty() {
                program.push(format!("unset {}", names.join(" ")));
            }
        }
        Ucx::Transports(tls) if !set("UCX_TLS") => {
            program.push(format!("export UCX_TLS={}", quote(tls)));
        }
        Ucx::Transports(_) => {}
    }
    if worker {
        for (name, value) in WORKER_DEFAULTS {
            if !set(name) {
                program.push(format!("export {name}={value}"));
            }
        }
    }
    if worker && spec.numa_bind {
        // Upstream's NUMA binding needs numactl in the task's environment: say so, not just 127.
        program.push(
            "command -v numactl >/dev/null || { echo \"$0: slurm.numa_bind is set but numactl is not \
             installed on $(hostname); install it (Debian: apt-get install numactl) or set \
             slurm.numa_bind: false\" >&2; exit 127; }"
                .to_string(),
        );
    }
    if !program.is_empty() {
        // One statement a line; `$0` is the role, so the shell's own errors name it.
        program.push("exec \"$@\"".to_string());
        let _ = writeln!(
            s,
            "    bash -c {} {role} \\",
            quote(&program.join("\n      "))
        );
    }
    // numactl's policy is inherited by everything the role starts (the engine and its ranks).
    let numa = if worker && spec.numa_bind {
        format!("numactl -m {NUMA_NODES} ")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "    {numa}\"$DISAGG\" role {role} --run-dir \"$RUN_DIR\""
    );
}

fn worker_step(s: &mut String, spec: &JobSpec<'_>, server: &ServerPlan) -> Result<(), RenderError> {
    let role = server.run_role();
    let nodes = server
        .node_indices
        .iter()
        .map(|i| format!("${{NODES[{i}]}}"))
        .collect::<Vec<_>>()
        .join(",");
    let _ = writeln!(
        s,
        "\n# {role}: {} GPU(s) on node(s) {}, GPUs {}{}.",
        server.gpus,
        server
            .node_indices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        server.cuda_visible_devices(),
        if server.shares_node {
            ", sharing its node"
        } else {
            ""
        }
    );
    s.push_str("(\n");
    let env = spec.env.of(role);
    for (k, v) in &env {
        export(s, "  ", k, v)?;
    }
    let _ = writeln!(s, "  export DISAGG_SERVING_TYPE={role}");
    let mut forwarded = Vec::new();
    let per_node = spec.plan.ranks == Ranks::PerNode;
    if let (true, true, Some(first)) = (per_node, server.nodes > 1, server.node_indices.first()) {
        // A multi-node vLLM/SGLang server meets on its first node.
        let _ = writeln!(s, "  export DISAGG_HEAD_NODE=\"${{NODES[{first}]}}\"");
        forwarded.push("DISAGG_HEAD_NODE");
    }
    if server.shares_node {
        let _ = writeln!(
            s,
            "  export CUDA_VISIBLE_DEVICES={}",
            server.cuda_visible_devices()
        );
        forwarded.push("CUDA_VISIBLE_DEVICES");
    }
    // The MPI plugin is for TensorRT-LLM's ranks; vLLM and SGLang start their own workers.
    let mpi = match (&spec.mpi, per_node) {
        (Some(m), false) => format!(" --mpi={}", quote(m)),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "  exec srun --kill-on-bad-exit=1 --job-name={role} -N {} --ntasks={} --ntasks-per-node={} -w \"{nodes}\"{mpi} \\",
        server.nodes, server.ntasks, server.ntasks_per_node
    );
    container_env(s, spec, &env, &forwarded)?;
    task(s, spec, role, &env, true);
    let _ = writeln!(s, ") &> \"$LOGS/slurm-{role}.log\" &");
    let _ = writeln!(s, "pids+=($!); names+=({role})");
    Ok(())
}

/// Defined before any step starts, so a signal during the launch still ends every step.
const TEARDOWN: &str = r#"
# End every step: SIGTERM (srun forwards it to the tasks), a grace period, then SIGKILL.
pids=()
names=()
teardown() {
  local pid deadline alive
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  deadline=$((SECONDS + GRACE))
  while (( SECONDS < deadline )); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  return 0
}
trap 'echo "disagg: job interrupted" >&2; teardown; exit 143' TERM INT
"#;

/// After the steps: the first to end decides. Polls once a second with `kill -0` and reads the
/// exit code with `wait PID`, which works from bash 4 on (`wait -n -p` needs 5.1).
const WAIT: &str = r#"
# The first step to end decides: the benchmark is the normal end, anything else is a failure.
STATUS="$RUN_DIR/rendezvous/benchmark_status.txt"
ended=""
rc=0
while [[ -z "$ended" ]]; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      ended="${names[$i]}"
      wait "${pids[$i]}"
      rc=$?
      break
    fi
  done
  [[ -n "$ended" ]] || sleep 0.2
done
# A worker that saw the benchmark's "Done" may end a moment before the benchmark itself.
if [[ "$ended" != BENCHMARK && "$(cat "$STATUS" 2>/dev/null)" == Done ]]; then
  for i in "${!names[@]}"; do
    [[ "${names[$i]}" == BENCHMARK ]] || continue
    deadline=$((SECONDS + GRACE))
    while kill -0 "${pids[$i]}" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      wait "${pids[$i]}"
      rc=$?
      ended=BENCHMARK
    fi
  done
fi
if [[ "$ended" == BENCHMARK ]]; then
  outcome=$rc
  echo "disagg: BENCHMARK ended with exit code $rc"
else
  outcome=$(( rc == 0 ? 1 : rc ))
  echo "disagg: step $ended ended before the benchmark (exit code $rc); failing the job" >&2
  # Tell every role (the first verdict wins: link fails if one is there already).
  tmp="$STATUS.$$.tmp"
  printf 'Failed: step %s ended before the benchmark (exit code %s)' "$ended" "$rc" > "$tmp" \
    && ln "$tmp" "$STATUS" 2>/dev/null
  rm -f "$tmp"
fi
# The roles watch the status file and end by themselves; give them a moment, then end the rest.
deadline=$((SECONDS + SETTLE))
while (( SECONDS < deadline )); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  (( alive )) || break
  sleep 0.1
done
teardown
echo "disagg: job finished with exit code $outcome after $SECONDS s"
exit "$outcome"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use disagg_plan::{Placement, PlanInput, ServerGroup, plan};

    fn one_by_one() -> Plan {
        plan(&PlanInput {
            gpus_per_node: 4,
            ctx: ServerGroup { count: 1, gpus: 1 },
            gen_: ServerGroup { count: 1, gpus: 2 },
            placement: Placement::Upstream,
            ranks: Default::default(),
            ports_from: None,
        })
        .unwrap()
    }

    fn spec(p: &Plan) -> JobSpec<'_> {
        JobSpec {
            test_name: "t".into(),
            job_name: "disagg-t".into(),
            run_dir: "/runs/t".into(),
            disagg_bin: "/bin/disagg".into(),
            plan: p,
            partition: None,
            account: None,
            time_limit: None,
            gres_gpus: false,
            sbatch_args: vec!["--exclusive".into()],
            extra_args: vec![],
            segment: false,
            ucx: Ucx::Clear,
            numa_bind: false,
            notes: vec![],
            container: None,
            mpi: None,
            install: vec![],
            env: RoleEnv::default(),
            step_stagger_s: 0,
            teardown_grace_s: 1,
            settle_s: 0,
            generator: "test".into(),
        }
    }

    /// The command a step's tasks run: the lines from `exec srun` to the step's end.
    fn task_of(script: &str, role: &str) -> String {
        let start = script
            .find(&format!(
                "exec srun --kill-on-bad-exit=1 --job-name={role} "
            ))
            .unwrap();
        let end = start + script[start..].find(") &>").unwrap();
        script[start..end]
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_task_clears_ucx_and_workers_get_per_rank_caches() {
        let p = one_by_one();
        let script = render(&spec(&p)).unwrap();
        let gen_ = task_of(&script, "GEN_0");
        assert_eq!(
            gen_,
            "    bash -c 'unset UCX_TLS UCX_NET_DEVICES\n      export FLASHINFER_JIT_DIR=/tmp/flashinfer_jit_cache_\"$SLURM_LOCALID\"\n      export HF_HOME=/tmp/hf_home\n      exec \"$@\"' GEN_0 \\\n    \"$DISAGG\" role GEN_0 --run-dir \"$RUN_DIR\""
        );
        let server = task_of(&script, "DISAGG_SERVER");
        assert_eq!(
            server,
            "    bash -c 'unset UCX_TLS UCX_NET_DEVICES\n      exec \"$@\"' DISAGG_SERVER \\\n    \"$DISAGG\" role DISAGG_SERVER --run-dir \"$RUN_DIR\""
        );
        assert!(!script.contains("--segment") && !script.contains("numactl"));
    }

    #[test]
    fn what_the_steps_environment_sets_is_left_to_it() {
        let p = one_by_one();
        let mut s = spec(&p);
        s.ucx = Ucx::Transports("^ib".into());
        s.env.common = vec![("HF_HOME".into(), "/shared/hf".into())];
        s.env.ctx = vec![("UCX_TLS".into(), "rc".into())];
        let script = render(&s).unwrap();
        let ctx = task_of(&script, "CTX_0");
        assert!(
            ctx.starts_with("    bash -c 'export FLASHINFER_JIT_DIR="),
            "{ctx}"
        );
        assert!(
            !ctx.contains("UCX_TLS") && !ctx.contains("HF_HOME"),
            "{ctx}"
        );
        let gen_ = task_of(&script, "GEN_0");
        assert!(
            gen_.starts_with("    bash -c 'export UCX_TLS='\\''^ib'\\''\n"),
            "{gen_}"
        );
        assert!(!gen_.contains("HF_HOME"), "set job-wide: {gen_}");
        let mut all = spec(&p);
        all.env.common = [
            "UCX_TLS",
            "UCX_NET_DEVICES",
            "FLASHINFER_JIT_DIR",
            "HF_HOME",
        ]
        .map(|k| (k.to_string(), "x".to_string()))
        .to_vec();
        let script = render(&all).unwrap();
        assert_eq!(
            task_of(&script, "GEN_0"),
            "    \"$DISAGG\" role GEN_0 --run-dir \"$RUN_DIR\"",
            "nothing left for a prelude"
        );
    }

    #[test]
    fn numa_binding_segments_and_extra_arguments() {
        let p = one_by_one();
        let mut s = spec(&p);
        s.numa_bind = true;
        s.segment = true;
        s.extra_args = vec!["--gres=gpu:4".into()];
        s.notes = vec!["why\nnot".into()];
        let script = render(&s).unwrap();
        assert!(
            task_of(&script, "CTX_0").ends_with(
                "CTX_0 \\\n    numactl -m 0,1 \"$DISAGG\" role CTX_0 --run-dir \"$RUN_DIR\""
            ),
            "{script}"
        );
        assert!(!task_of(&script, "BENCHMARK").contains("numactl"));
        let header: Vec<&str> = script
            .lines()
            .filter(|l| {
                l.starts_with("#SBATCH") && !l.contains("--job-name") && !l.contains("--output")
            })
            .collect();
        assert_eq!(
            header,
            [
                "#SBATCH --nodes=2",
                "#SBATCH --ntasks=8",
                "#SBATCH --ntasks-per-node=4",
                "#SBATCH --segment=2",
                "#SBATCH --exclusive",
                "#SBATCH --gres=gpu:4"
            ]
        );
        assert!(
            script.contains("\n# why not\n"),
            "a note stays one comment line"
        );
        s.extra_args = vec!["--comment=$(x)".into()];
        assert_eq!(
            render(&s).unwrap_err().to_string(),
            "slurm.extra_args `--comment=$(x)` cannot go on an #SBATCH line: use only letters, digits and _-./:=@%+,"
        );
    }
}
