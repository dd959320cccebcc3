//! From "how many servers of what size on what nodes" to a [`Plan`]: GPUs per server, whole
//! nodes, the srun geometry of every step, idle GPUs, and each server's node and GPU indices.
//!
//! Two placement rules:
//! - [`Placement::Upstream`] (default) is exactly what upstream CI computes
//!   (`get_hardware_config` in TensorRT-LLM's perf submit script): every server gets whole nodes
//!   of its own, `nodes = ceil(gpus / gpus_per_node)`, `--ntasks-per-node = min(gpus,
//!   gpus_per_node)`, `--ntasks = nodes × that`, total GPUs = nodes × gpus_per_node (idle ones
//!   included). The coordinator and the benchmark run on `--overlap` steps and take no node.
//! - [`Placement::Packed`] (opt-in) keeps servers of a node or more on whole nodes and packs
//!   smaller servers onto shared nodes first-fit-decreasing, never splitting one across nodes.
//!   It never needs more nodes than the upstream rule; when the small sizes divide the node size
//!   (the usual 1, 2, 4 on 4- or 8-GPU nodes) it needs exactly the lower bound.
//!
//! Nodes are assigned generation servers first, then context servers, as the upstream job
//! script slices its node list. Pure: no I/O, no clock.
//!
//! ```
//! use disagg_plan::{PlanInput, Placement, ServerGroup, plan};
//! let p = plan(&PlanInput {
//!     gpus_per_node: 4,
//!     ctx: ServerGroup { count: 1, gpus: 4 },
//!     gen_: ServerGroup { count: 1, gpus: 8 },
//!     placement: Placement::Upstream,
//!     ranks: Default::default(),
//!     ports_from: None,
//! }).unwrap();
//! assert_eq!((p.total_nodes, p.total_gpus), (3, 12));
//! let g = p.servers.iter().find(|s| s.role == disagg_plan::ServerKind::Gen).unwrap();
//! assert_eq!((g.nodes, g.ntasks, g.ntasks_per_node), (2, 8, 4));
//! ```

pub mod role;
mod table;

use serde::Serialize;

pub use role::Role;
pub use table::table;

/// What a server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// Context (prefill) server.
    Ctx,
    /// Generation (decode) server.
    Gen,
}

impl ServerKind {
    /// `ctx` or `gen`, as the upstream config names the worker sections.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Ctx => "ctx",
            ServerKind::Gen => "gen",
        }
    }
}

/// How servers are put on nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Whole nodes per server, as upstream CI.
    #[default]
    Upstream,
    /// Small servers share nodes.
    Packed,
}

/// Servers of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerGroup {
    /// How many.
    pub count: u32,
    /// GPUs each (tp × pp × cp).
    pub gpus: u32,
}

/// How many processes a server's Slurm step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranks {
    /// One per GPU (TensorRT-LLM: every rank runs the launcher, MPI-style).
    #[default]
    PerGpu,
    /// One per node (vLLM, SGLang: one server process drives the node's GPUs).
    PerNode,
}

/// What planning needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanInput {
    /// GPUs on one node.
    pub gpus_per_node: u32,
    /// Context servers (count 0 for generation-only runs).
    pub ctx: ServerGroup,
    /// Generation servers.
    pub gen_: ServerGroup,
    /// Placement rule.
    pub placement: Placement,
    /// Processes per server step.
    pub ranks: Ranks,
    /// First of the ports handed to servers (two each, in server order: the KV-transfer port —
    /// vLLM's NIXL side channel, SGLang's bootstrap — then the multi-node rendezvous port);
    /// `None`: the engine needs none.
    pub ports_from: Option<u16>,
}

/// One server's place in the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerPlan {
    /// Context or generation.
    pub role: ServerKind,
    /// Index within its role.
    pub index: u32,
    /// GPUs it uses (tp × pp × cp).
    pub gpus: u32,
    /// srun `-N`.
    pub nodes: u32,
    /// srun `--ntasks`.
    pub ntasks: u32,
    /// srun `--ntasks-per-node`.
    pub ntasks_per_node: u32,
    /// Indices (into the job's node list) of the nodes it runs on.
    pub node_indices: Vec<u32>,
    /// GPU indices it uses on each of its nodes (`CUDA_VISIBLE_DEVICES`).
    pub gpu_indices: Vec<u32>,
    /// Whether other servers run on the same node (packed placement only).
    pub shares_node: bool,
    /// Its KV-transfer port (vLLM's NIXL side channel, SGLang's bootstrap), when the engine
    /// needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_port: Option<u16>,
    /// Its multi-node rendezvous port (vLLM's `--master-port`, SGLang's `--dist-init-addr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dist_port: Option<u16>,
}

impl ServerPlan {
    /// Its role in the run (`CTX_0`, `GEN_1`).
    pub fn run_role(&self) -> Role {
        Role::worker(self.role, self.index)
    }

    /// `CUDA_VISIBLE_DEVICES` value.
    pub fn cuda_visible_devices(&self) -> String {
        self.gpu_indices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A single-task step that takes no node of its own (`srun --overlap -N 1 --ntasks=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OverlapStep {
    /// srun `-N`.
    pub nodes: u32,
    /// srun `--ntasks`.
    pub ntasks: u32,
    /// srun `--ntasks-per-node`.
    pub ntasks_per_node: u32,
    /// Always true: shares the first node with a worker.
    pub overlap: bool,
    /// Index of the node it runs on.
    pub node_index: u32,
}

const OVERLAP_STEP: OverlapStep = OverlapStep {
    nodes: 1,
    ntasks: 1,
    ntasks_per_node: 1,
    overlap: true,
    node_index: 0,
};

/// The whole job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Nodes to allocate.
    pub total_nodes: u32,
    /// GPUs allocated: total_nodes × gpus_per_node.
    pub total_gpus: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// Allocated GPUs no server uses.
    pub idle_gpus: u32,
    /// Placement rule used.
    pub placement: Placement,
    /// Processes per server step.
    pub ranks: Ranks,
    /// Context servers launched.
    pub num_ctx_servers: u32,
    /// Generation servers launched.
    pub num_gen_servers: u32,
    /// GPUs per context server.
    pub gpus_per_ctx_server: u32,
    /// GPUs per generation server.
    pub gpus_per_gen_server: u32,
    /// Every server: context servers first, then generation servers, each by index.
    pub servers: Vec<ServerPlan>,
    /// The coordinator's step.
    pub disagg_server: OverlapStep,
    /// The benchmark's step.
    pub benchmark: OverlapStep,
}

impl Plan {
    /// Every role of the run in launch order: generation servers, context servers (each by
    /// index, as the job script slices its nodes), then `DISAGG_SERVER` and `BENCHMARK`.
    pub fn roles(&self) -> Vec<Role> {
        let of = |kind: ServerKind| self.servers.iter().filter(move |s| s.role == kind);
        of(ServerKind::Gen)
            .chain(of(ServerKind::Ctx))
            .map(ServerPlan::run_role)
            .chain([Role::DisaggServer, Role::Benchmark])
            .collect()
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `gpus_per_node` is zero.
    #[error("gpus_per_node must be at least 1")]
    NoGpusPerNode,
    /// No generation server.
    #[error("at least one generation server is needed")]
    NoGenServers,
    /// A server of zero GPUs.
    #[error("a {role:?} server needs at least one GPU")]
    EmptyServer {
        /// Which kind.
        role: ServerKind,
    },
    /// The servers' ports do not fit below 65536.
    #[error("{servers} servers need 2 ports each from {from}: past 65535; pick a lower first port")]
    Ports {
        /// The first port.
        from: u16,
        /// Servers.
        servers: usize,
    },
    /// A multi-node server that leaves part of a node unused.
    #[error(
        "a {role:?} server of {gpus} GPUs does not fill {gpus_per_node}-GPU nodes evenly; \
         make its size a multiple of {gpus_per_node}"
    )]
    Uneven {
        /// Which kind.
        role: ServerKind,
        /// Its GPUs.
        gpus: u32,
        /// Node size.
        gpus_per_node: u32,
    },
}

/// Make the plan.
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let gpn = input.gpus_per_node;
    if gpn == 0 {
        return Err(PlanError::NoGpusPerNode);
    }
    if input.gen_.count == 0 {
        return Err(PlanError::NoGenServers);
    }
    for (role, g) in [(ServerKind::Ctx, input.ctx), (ServerKind::Gen, input.gen_)] {
        if g.count > 0 && g.gpus == 0 {
            return Err(PlanError::EmptyServer { role });
        }
        if g.count > 0 && g.gpus > gpn && g.gpus % gpn != 0 {
            return Err(PlanError::Uneven {
                role,
                gpus: g.gpus,
                gpus_per_node: gpn,
            });
        }
    }
    // Generation servers take nodes first, as in the upstream job script.
    let order = [(ServerKind::Gen, input.gen_), (ServerKind::Ctx, input.ctx)];
    let mut servers = Vec::new();
    let mut next_node = 0u32;
    let mut small = Vec::new();
    for (role, group) in order {
        for index in 0..group.count {
            let per_node = group.gpus.min(gpn);
            let nodes = group.gpus.div_ceil(gpn);
            let tasks_per_node = match input.ranks {
                Ranks::PerGpu => per_node,
                Ranks::PerNode => 1,
            };
            let mut server = ServerPlan {
                role,
                index,
                gpus: group.gpus,
                nodes,
                ntasks: nodes * tasks_per_node,
                ntasks_per_node: tasks_per_node,
                node_indices: Vec::new(),
                gpu_indices: (0..per_node).collect(),
                shares_node: false,
                kv_port: None,
                dist_port: None,
            };
            if input.placement == Placement::Packed && group.gpus < gpn {
                small.push(servers.len());
            } else {
                server.node_indices = (next_node..next_node + nodes).collect();
                next_node += nodes;
            }
            servers.push(server);
        }
    }
    pack(&mut servers, &small, gpn, &mut next_node);

    servers.sort_by_key(|s| (s.role == ServerKind::Gen, s.index));
    if let Some(from) = input.ports_from {
        let n = servers.len();
        let too_many = || PlanError::Ports { from, servers: n };
        for (i, s) in servers.iter_mut().enumerate() {
            let kv = u16::try_from(i * 2)
                .ok()
                .and_then(|o| from.checked_add(o))
                .ok_or_else(too_many)?;
            s.kv_port = Some(kv);
            s.dist_port = Some(kv.checked_add(1).ok_or_else(too_many)?);
        }
    }
    let used: u32 = servers.iter().map(|s| s.gpus).sum();
    let total_gpus = next_node * gpn;
    Ok(Plan {
        total_nodes: next_node,
        total_gpus,
        gpus_per_node: gpn,
        idle_gpus: total_gpus - used,
        placement: input.placement,
        ranks: input.ranks,
        num_ctx_servers: input.ctx.count,
        num_gen_servers: input.gen_.count,
        gpus_per_ctx_server: input.ctx.gpus,
        gpus_per_gen_server: input.gen_.gpus,
        servers,
        disagg_server: OVERLAP_STEP,
        benchmark: OVERLAP_STEP,
    })
}

/// First-fit decreasing of the servers at `small` (each smaller than a node) onto shared nodes
/// numbered from `next_node`; each takes the lowest free contiguous GPUs of its node.
fn pack(servers: &mut [ServerPlan], small: &[usize], gpn: u32, next_node: &mut u32) {
    let mut order = small.to_vec();
    // Stable: equal sizes keep generation-then-context, index order.
    order.sort_by_key(|&i| std::cmp::Reverse(servers[i].gpus));
    // (node index, which GPUs are taken)
    let mut shared: Vec<(u32, Vec<bool>)> = Vec::new();
    for i in order {
        let need = servers[i].gpus as usize;
        let slot = shared.iter_mut().find_map(|(node, taken)| {
            let start =
                (0..=taken.len() - need).find(|&s| taken[s..s + need].iter().all(|t| !t))?;
            Some((*node, taken, start))
        });
        let (node, start) = match slot {
            Some((node, taken, start)) => {
                taken[start..start + need]
                    .iter_mut()
                    .for_each(|t| *t = true);
                (node, start)
            }
            None => {
                let node = *next_node;
                *next_node += 1;
                let mut taken = vec![false; gpn as usize];
                taken[..need].iter_mut().for_each(|t| *t = true);
                shared.push((node, taken));
                (node, 0)
            }
        };
        let s = &mut servers[i];
        s.node_indices = vec![node];
        s.gpu_indices = (start as u32..(start + need) as u32).collect();
    }
    for s in servers.iter_mut() {
        if let Some((_, taken)) = shared.iter().find(|(n, _)| s.node_indices == [*n]) {
            s.shares_node = taken.iter().filter(|t| **t).count() > s.gpus as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(gpn: u32, ctx: (u32, u32), gen_: (u32, u32), placement: Placement) -> PlanInput {
        PlanInput {
            gpus_per_node: gpn,
            ctx: ServerGroup {
                count: ctx.0,
                gpus: ctx.1,
            },
            gen_: ServerGroup {
                count: gen_.0,
                gpus: gen_.1,
            },
            placement,
            ranks: Ranks::PerGpu,
            ports_from: None,
        }
    }

    #[test]
    fn seed_example_plans_three_nodes() {
        let p = plan(&input(4, (1, 4), (1, 8), Placement::Upstream)).unwrap();
        assert_eq!((p.total_nodes, p.total_gpus, p.idle_gpus), (3, 12, 0));
        let ctx = &p.servers[0];
        assert_eq!(
            (ctx.role, ctx.nodes, ctx.ntasks, ctx.ntasks_per_node),
            (ServerKind::Ctx, 1, 4, 4)
        );
        assert_eq!(ctx.node_indices, [2]);
        let gen_ = &p.servers[1];
        assert_eq!((gen_.nodes, gen_.ntasks, gen_.ntasks_per_node), (2, 8, 4));
        assert_eq!(gen_.node_indices, [0, 1]);
    }

    #[test]
    fn small_servers_waste_nodes_upstream_but_share_when_packed() {
        let up = plan(&input(4, (2, 1), (1, 2), Placement::Upstream)).unwrap();
        assert_eq!((up.total_nodes, up.idle_gpus), (3, 8));
        assert_eq!(up.servers[0].ntasks_per_node, 1);
        let packed = plan(&input(4, (2, 1), (1, 2), Placement::Packed)).unwrap();
        assert_eq!((packed.total_nodes, packed.idle_gpus), (1, 0));
        let cvd: Vec<String> = packed
            .servers
            .iter()
            .map(ServerPlan::cuda_visible_devices)
            .collect();
        assert_eq!(cvd, ["2", "3", "0,1"]);
        assert!(packed.servers.iter().all(|s| s.shares_node));
    }

    #[test]
    fn generation_only_has_no_context_servers() {
        let p = plan(&input(4, (0, 4), (1, 16), Placement::Upstream)).unwrap();
        assert_eq!(p.total_nodes, 4);
        assert!(p.servers.iter().all(|s| s.role == ServerKind::Gen));
    }

    #[test]
    fn rejects_uneven_multi_node_servers() {
        assert_eq!(
            plan(&input(4, (1, 4), (1, 6), Placement::Upstream)),
            Err(PlanError::Uneven {
                role: ServerKind::Gen,
                gpus: 6,
                gpus_per_node: 4
            })
        );
    }

    #[test]
    fn one_process_per_node_engines_get_one_task_per_node() {
        let mut inp = input(4, (1, 4), (1, 8), Placement::Upstream);
        inp.ranks = Ranks::PerNode;
        let p = plan(&inp).unwrap();
        let g = p
            .servers
            .iter()
            .find(|s| s.role == ServerKind::Gen)
            .unwrap();
        assert_eq!((g.nodes, g.ntasks, g.ntasks_per_node), (2, 2, 1));
        assert_eq!(
            g.cuda_visible_devices(),
            "0,1,2,3",
            "still every GPU of its nodes"
        );
        assert_eq!(p.total_nodes, 3, "placement does not change");
    }

    #[test]
    fn servers_get_two_ports_each_in_server_order() {
        let mut inp = input(4, (2, 1), (1, 2), Placement::Packed);
        inp.ports_from = Some(5600);
        let p = plan(&inp).unwrap();
        let ports: Vec<(String, Option<u16>, Option<u16>)> = p
            .servers
            .iter()
            .map(|s| (s.run_role().to_string(), s.kv_port, s.dist_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("CTX_0".to_string(), Some(5600), Some(5601)),
                ("CTX_1".to_string(), Some(5602), Some(5603)),
                ("GEN_0".to_string(), Some(5604), Some(5605)),
            ]
        );
        inp.ports_from = Some(65532);
        assert_eq!(
            plan(&inp),
            Err(PlanError::Ports {
                from: 65532,
                servers: 3
            })
        );
        assert!(
            plan(&input(4, (1, 4), (1, 4), Placement::Upstream))
                .unwrap()
                .servers[0]
                .kv_port
                .is_none()
        );
    }
}
