//! The plan as a person reads it (`disagg plan`): nodes, GPUs, and one row per step.

use crate::{Placement, Plan, Role, ServerKind};

fn node_range(nodes: &[u32]) -> String {
    match nodes {
        [] => "-".to_string(),
        [one] => one.to_string(),
        [first, .., last] if (last - first) as usize + 1 == nodes.len() => {
            format!("{first}-{last}")
        }
        many => many
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The human-readable plan.
pub fn table(name: &str, plan: &Plan) -> String {
    let mut s = String::new();
    let placement = match plan.placement {
        Placement::Upstream => "upstream CI placement: whole nodes per server",
        Placement::Packed => "packed placement: small servers share nodes",
    };
    s.push_str(&format!("Plan for {name} ({placement})\n"));
    s.push_str(&format!(
        "  {} node{} x {} GPUs = {} GPUs, {} used, {} idle\n\n",
        plan.total_nodes,
        if plan.total_nodes == 1 { "" } else { "s" },
        plan.gpus_per_node,
        plan.total_gpus,
        plan.total_gpus - plan.idle_gpus,
        plan.idle_gpus
    ));
    let mut rows: Vec<[String; 5]> = vec![[
        "role".into(),
        "GPUs".into(),
        "srun".into(),
        "nodes".into(),
        "CUDA_VISIBLE_DEVICES".into(),
    ]];
    for kind in [ServerKind::Gen, ServerKind::Ctx] {
        for server in plan.servers.iter().filter(|x| x.role == kind) {
            rows.push([
                server.run_role().to_string(),
                server.gpus.to_string(),
                format!(
                    "-N {} --ntasks={} --ntasks-per-node={}",
                    server.nodes, server.ntasks, server.ntasks_per_node
                ),
                node_range(&server.node_indices),
                server.cuda_visible_devices(),
            ]);
        }
    }
    for (role, step) in [
        (Role::DisaggServer, plan.disagg_server),
        (Role::Benchmark, plan.benchmark),
    ] {
        rows.push([
            role.to_string(),
            "-".into(),
            format!(
                "--overlap -N {} --ntasks={} --ntasks-per-node={}",
                step.nodes, step.ntasks, step.ntasks_per_node
            ),
            step.node_index.to_string(),
            "-".into(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line = format!(
            "  {:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}
