//! `disagg plan`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use disagg_plan::{Placement, Plan, Role};
use serde::Serialize;

use crate::cli::{Global, PlanArgs};
use crate::job;

/// The JSON document: the plan plus what it was made from.
#[derive(Serialize)]
pub struct PlanDoc<'a> {
    pub config: &'a str,
    pub file: String,
    pub mode: &'static str,
    pub cluster: Option<&'a str>,
    #[serde(flatten)]
    pub plan: &'a Plan,
}

pub fn run(global: &Global, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let config = job::load_config(&args.config, &args.config_dir)?;
    let cluster = match &args.cluster {
        Some(name) => Some(job::load_cluster(global.clusters.as_deref(), name)?),
        None => None,
    };
    let placement = if args.packing {
        Placement::Packed
    } else {
        Placement::Upstream
    };
    let input = job::plan_input(&config, cluster.as_ref(), placement)?;
    let plan = job::make_plan(&config, &input)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = PlanDoc {
            config: config.name(),
            file: config.path().display().to_string(),
            mode: config.benchmark().mode.as_str(),
            cluster: args.cluster.as_deref(),
            plan: &plan,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else if args.sbatch {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let run_dir = match &args.run_dir {
            Some(d) if d.is_absolute() => d.clone(),
            Some(d) => cwd.join(d),
            None => cwd.join("runs").join(config.name()),
        };
        let bin = match &args.disagg_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("cannot locate the disagg binary")?,
        };
        let spec = job::job_spec(&config, cluster.as_ref(), &plan, &run_dir, &bin);
        let script = disagg_launch::sbatch::render(&spec).with_context(|| {
            format!(
                "cannot render the job script of {}",
                config.path().display()
            )
        })?;
        out.write_all(script.as_bytes())?;
    } else {
        write!(out, "{}", table(config.name(), &plan))?;
    }
    Ok(ExitCode::SUCCESS)
}

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
    for role in [Role::Gen, Role::Ctx] {
        for server in plan.servers.iter().filter(|x| x.role == role) {
            rows.push([
                server.role_name(),
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
        ("DISAGG_SERVER", plan.disagg_server),
        ("BENCHMARK", plan.benchmark),
    ] {
        rows.push([
            role.into(),
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
