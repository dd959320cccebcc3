//! `disagg plan FILE [--cluster C] [--packing] [--json | --sbatch]`.

use std::io::Write as _;

use anyhow::Context as _;
use disagg_plan::Placement;
use disagg_runtime::ExitStatus;
use disagg_runtime::prepare::{PlanDoc, engine_of, load_cluster, load_config, make_plan};

use crate::cli::{Global, PlanArgs};

pub fn run(global: &Global, args: &PlanArgs) -> anyhow::Result<ExitStatus> {
    let config = load_config(&args.config, &args.config_dir)?;
    let cluster = match &args.cluster {
        Some(name) => Some(load_cluster(global.clusters.as_deref(), name)?),
        None => None,
    };
    let placement = if args.packing {
        Placement::Packed
    } else {
        Placement::Upstream
    };
    let engine = engine_of(&config, crate::cli::engine_arg(args.engine.as_deref())?);
    let plan = make_plan(&config, cluster.as_ref(), placement, engine)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = PlanDoc::new(&config, args.cluster.as_deref(), &plan);
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else if args.sbatch {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let run_dir = match &args.run_dir {
            Some(d) => cwd.join(d),
            None => cwd.join("runs").join(config.name()),
        };
        let script = disagg_runtime::job::render_script(
            &config,
            cluster.as_ref(),
            engine,
            &plan,
            &run_dir,
            args.disagg_bin.as_deref(),
        )?;
        out.write_all(script.as_bytes())?;
    } else {
        write!(out, "{}", disagg_plan::table(config.name(), &plan))?;
    }
    Ok(ExitStatus::Success)
}
