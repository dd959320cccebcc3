//! `disagg sweep SPEC [--cluster C | --local] [--max-parallel N] [--dry-run] [--resume]`.

use disagg_config::Sla;
use disagg_runtime::ExitStatus;
use disagg_runtime::sweep::SweepRequest;

use crate::cli::{Global, SweepArgs};

pub fn run(global: &Global, args: &SweepArgs) -> anyhow::Result<ExitStatus> {
    let request = SweepRequest {
        spec: args.spec.clone(),
        config_dir: args.config_dir.clone(),
        out: args.out.clone(),
        clusters_file: global.clusters.clone(),
        cluster: args.cluster.clone(),
        max_parallel: args.max_parallel,
        dry_run: args.dry_run,
        resume: args.resume,
        retry_failed: args.retry_failed,
        sla: args.sla.as_deref().map(Sla::parse_flag).transpose()?,
        sla_search: args.sla_search,
        sla_search_runs: args.sla_search_runs,
        db: args.db.clone(),
        options: args.overrides.options()?,
    };
    disagg_runtime::sweep::sweep(&request)
}
