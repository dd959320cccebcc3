//! The environment of a test's roles, as upstream's CI gives it (`jenkins/scripts/perf/
//! submit.py`, see `docs/upstream.md`): the test config's variables, the cluster profile's,
//! and upstream's switches (the IMEX channel, the gen-only ones with the capped queue size), as
//! a [`RoleEnv`] both launchers apply; and UCX's transports by GPU type ([`ucx_for`]), which the
//! batch script sets inside each task.

use disagg_config::{Cluster, Mode, TestConfig};
use disagg_launch::sbatch::{EnvVar, RoleEnv, Ucx};

/// The environment of each role: the test config's variables, then the cluster profile's (so
/// the profile wins within a level: job-wide, workers, one kind of step), then upstream's
/// switches where neither sets them: `NVIDIA_IMEX_CHANNELS=0` on GB200/GB300 and the gen-only
/// ones (upstream's `jenkins/scripts/perf/submit.py` puts its switches first, so a config's own
/// value wins there too).
pub fn role_env(config: &TestConfig, cluster: Option<&Cluster>) -> RoleEnv {
    let env = config.environment();
    let join = |a: &[EnvVar], b: Option<&[EnvVar]>| -> Vec<EnvVar> {
        a.iter().chain(b.unwrap_or_default()).cloned().collect()
    };
    let mut role = RoleEnv {
        common: cluster.map(|c| c.env.clone()).unwrap_or_default(),
        worker: join(&env.worker, cluster.map(|c| c.worker_env.as_slice())),
        ctx: join(&env.ctx_worker, cluster.map(|c| c.ctx_env.as_slice())),
        gen_: join(&env.gen_worker, cluster.map(|c| c.gen_env.as_slice())),
        server: join(&env.server, cluster.map(|c| c.server_env.as_slice())),
        benchmark: join(&env.benchmark, cluster.map(|c| c.benchmark_env.as_slice())),
    };
    if nvlink_domain(cluster.and_then(|c| c.gpu_type.as_deref())) {
        // Multi-node NVLink needs the IMEX channel in the container (upstream's
        // disaggregated/slurm_launch.sh exports 0 and forwards it to every step).
        default_var(&mut role.common, &[], "NVIDIA_IMEX_CHANNELS", "0");
    }
    let b = config.benchmark();
    let one = "1".to_string();
    match b.mode {
        Mode::E2e => {}
        Mode::GenOnlyNoContext => {
            // The coordinator and the generation servers skip the context phase.
            default_var(
                &mut role.gen_,
                &role.worker,
                "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY",
                &one,
            );
            default_var(
                &mut role.server,
                &[],
                "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY",
                &one,
            );
        }
        Mode::GenOnly => {
            // The generation executor's fill gate opens at this many queued requests.
            let queue = gen_only_queue_size(config).to_string();
            default_var(
                &mut role.gen_,
                &role.worker,
                "TLLM_BENCHMARK_REQ_QUEUES_SIZE",
                &queue,
            );
            for own in [&mut role.ctx, &mut role.gen_] {
                default_var(
                    own,
                    &role.worker,
                    "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP",
                    &one,
                );
            }
        }
    }
    role
}

/// Put `name=value` first in `list`, unless `list` or `also` sets `name`.
fn default_var(list: &mut Vec<EnvVar>, also: &[EnvVar], name: &str, value: &str) {
    if !list.iter().chain(also).any(|(k, _)| k == name) {
        list.insert(0, (name.to_string(), value.to_string()));
    }
}

/// GB200/GB300: nodes in one NVLink domain, reached through IMEX channels.
fn nvlink_domain(gpu_type: Option<&str>) -> bool {
    let g = gpu_type.unwrap_or_default().to_ascii_uppercase();
    g.contains("GB200") || g.contains("GB300")
}

/// UCX's transports by GPU type, as upstream's `jenkins/scripts/perf/submit.py` picks them from
/// its stage name: GB300 a fixed list, B200 (not GB200) everything but InfiniBand, every other
/// type the container's setting cleared.
pub fn ucx_for(gpu_type: Option<&str>) -> Ucx {
    let g = gpu_type.unwrap_or_default().to_ascii_uppercase();
    if g.contains("GB300") {
        Ucx::Transports("cuda_copy,cuda_ipc,sm,self,tcp".to_string())
    } else if g.contains("B200") && !g.contains("GB200") {
        Ucx::Transports("^ib".to_string())
    } else {
        Ucx::Clear
    }
}

/// The gen-only fill target (`TLLM_BENCHMARK_REQ_QUEUES_SIZE`), capped as upstream's submit.py
/// does at what the generation executor can hold: `min(max_batch_size × tp with attention DP,
/// else max_batch_size; concurrency)`, `max_batch_size` defaulting to the concurrency.
pub fn gen_only_queue_size(config: &TestConfig) -> u32 {
    let concurrency = config.benchmark().concurrency.first().copied().unwrap_or(1);
    let gen_ = config.gen_();
    let batch = gen_.max_batch_size_written().unwrap_or(concurrency);
    let capacity = if gen_.attention_dp() {
        batch.saturating_mul(gen_.tp())
    } else {
        batch
    };
    capacity.min(concurrency)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn example(edit: impl Fn(String) -> String) -> TestConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/local-sim.yaml"
        ))
        .unwrap();
        TestConfig::parse(Path::new("x.yaml"), &edit(text)).unwrap()
    }

    fn names(vars: &[EnvVar]) -> Vec<&str> {
        vars.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get<'a>(vars: &'a [EnvVar], name: &str) -> Option<&'a str> {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn gen_only_runs_get_upstreams_switches_per_kind_of_worker() {
        use disagg_plan::Role;
        let e2e = role_env(&example(|t| t), None);
        for role in [Role::Ctx(0), Role::Gen(0), Role::DisaggServer] {
            assert_eq!(
                names(&e2e.of(role)),
                ["TLLM_LOG_LEVEL"][..(role != Role::DisaggServer) as usize]
            );
        }
        // gen_only: both kinds stop overlapping KV transfer, the generation servers fill their
        // queue to the (capped) concurrency; the coordinator is left alone.
        let env = role_env(
            &example(|t| t.replace("  mode: e2e", "  mode: gen_only")),
            None,
        );
        assert_eq!(
            names(&env.of(Role::Ctx(0))),
            ["TLLM_LOG_LEVEL", "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP"]
        );
        assert_eq!(
            names(&env.of(Role::Gen(0))),
            [
                "TLLM_LOG_LEVEL",
                "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP",
                "TLLM_BENCHMARK_REQ_QUEUES_SIZE"
            ]
        );
        assert_eq!(
            get(&env.of(Role::Gen(0)), "TLLM_BENCHMARK_REQ_QUEUES_SIZE"),
            Some("1")
        );
        assert!(env.of(Role::DisaggServer).is_empty());
        // gen_only_no_context: the generation servers and the coordinator skip the context phase.
        let env = role_env(
            &example(|t| {
                t.replace("  mode: e2e", "  mode: gen_only_no_context")
                    .replace("num_ctx_servers: 1", "num_ctx_servers: 0")
            }),
            None,
        );
        assert_eq!(
            names(&env.of(Role::Gen(0))),
            ["TLLM_LOG_LEVEL", "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY"]
        );
        assert_eq!(
            names(&env.of(Role::DisaggServer)),
            ["TRTLLM_DISAGG_BENCHMARK_GEN_ONLY"]
        );
        assert!(env.of(Role::Benchmark).is_empty());
        // A config that sets a switch itself keeps its value, as upstream's order gives it.
        let env = role_env(
            &example(|t| {
                t.replace("  mode: e2e", "  mode: gen_only").replace(
                    "TLLM_LOG_LEVEL=INFO",
                    "TLLM_LOG_LEVEL=INFO TLLM_BENCHMARK_REQ_QUEUES_SIZE=7",
                )
            }),
            None,
        );
        let gen_env = env.of(Role::Gen(0));
        assert_eq!(get(&gen_env, "TLLM_BENCHMARK_REQ_QUEUES_SIZE"), Some("7"));
        assert_eq!(
            gen_env
                .iter()
                .filter(|(k, _)| k == "TLLM_BENCHMARK_REQ_QUEUES_SIZE")
                .count(),
            1
        );
    }

    #[test]
    fn the_gen_only_queue_is_capped_at_what_the_generation_servers_hold() {
        let config = |concurrency: &str, gen_: &str| {
            example(|t| {
                let start = t.find("  gen:\n").unwrap();
                let end = t.find("\nengine:").unwrap() + 1;
                format!("{}  gen:\n{gen_}{}", &t[..start], &t[end..])
                    .replace("  mode: e2e", "  mode: gen_only")
                    .replace("\"1 4 16\"", concurrency)
            })
        };
        let dep =
            "    tensor_parallel_size: 4\n    enable_attention_dp: true\n    max_batch_size: 8\n";
        let tep = "    tensor_parallel_size: 4\n    max_batch_size: 8\n";
        let unset = "    tensor_parallel_size: 4\n";
        assert_eq!(gen_only_queue_size(&config("\"64\"", dep)), 32, "8 × tp 4");
        assert_eq!(
            gen_only_queue_size(&config("\"16\"", dep)),
            16,
            "the concurrency"
        );
        assert_eq!(
            gen_only_queue_size(&config("\"64\"", tep)),
            8,
            "no attention DP"
        );
        assert_eq!(
            gen_only_queue_size(&config("\"1024\"", unset)),
            1024,
            "no max_batch_size: the concurrency, not the engine's 512"
        );
    }

    #[test]
    fn cluster_profiles_add_their_environment_after_the_configs() {
        use disagg_plan::Role;
        let file = disagg_config::ClusterFile::parse(
            Path::new("c.yaml"),
            concat!(
                "clusters:\n",
                "  gb200:\n",
                "    gpu_type: GB200\n",
                "    env: {NCCL_DEBUG: WARN}\n",
                "    worker_env: {TLLM_LOG_LEVEL: DEBUG}\n",
                "    gen_env: {G: '1'}\n",
                "    server_env: {S: '1'}\n",
                "    benchmark_env: {B: '1'}\n",
                "  b200:\n",
                "    gpu_type: B200\n",
                "    env: {NVIDIA_IMEX_CHANNELS: '3'}\n",
            ),
        )
        .unwrap();
        let config = example(|t| t);
        let env = role_env(&config, Some(&file.clusters["gb200"]));
        assert_eq!(names(&env.common), ["NVIDIA_IMEX_CHANNELS", "NCCL_DEBUG"]);
        let gen_env = env.of(Role::Gen(0));
        assert_eq!(names(&gen_env), ["TLLM_LOG_LEVEL", "G"]);
        assert_eq!(
            get(&gen_env, "TLLM_LOG_LEVEL"),
            Some("DEBUG"),
            "the profile's comes last"
        );
        assert_eq!(names(&env.of(Role::Ctx(0))), ["TLLM_LOG_LEVEL"]);
        assert_eq!(names(&env.of(Role::DisaggServer)), ["S"]);
        assert_eq!(names(&env.of(Role::Benchmark)), ["B"]);
        // No IMEX channel off an NVLink domain, and never over the profile's own value.
        let b200 = role_env(&config, Some(&file.clusters["b200"]));
        assert_eq!(b200.common, [("NVIDIA_IMEX_CHANNELS".into(), "3".into())]);
    }

    #[test]
    fn ucx_transports_follow_the_gpu_type_as_upstream() {
        let tls = |g: Option<&str>| match ucx_for(g) {
            Ucx::Clear => None,
            Ucx::Transports(t) => Some(t),
        };
        assert_eq!(
            tls(Some("GB300")).as_deref(),
            Some("cuda_copy,cuda_ipc,sm,self,tcp")
        );
        assert_eq!(tls(Some("b200")).as_deref(), Some("^ib"));
        assert_eq!(tls(Some("GB200")), None);
        assert_eq!(tls(Some("H100")), None);
        assert_eq!(tls(None), None);
    }
}
