//! `disagg ci --test-list FILE --cluster C [--parallel N]`: the Jenkins entry point.

use std::path::PathBuf;

use disagg_runtime::ExitStatus;
use disagg_runtime::ci::CiRequest;

use crate::cli::{CiArgs, Global};

pub fn run(global: &Global, args: &CiArgs) -> anyhow::Result<ExitStatus> {
    // Jenkins' workspace, when there is one, holds what Jenkins picks up.
    let workspace = std::env::var_os("WORKSPACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let request = CiRequest {
        test_list: args.test_list.clone(),
        config_dir: args.config_dir.clone(),
        clusters_file: global.clusters.clone(),
        cluster: args.cluster.clone(),
        junit: args
            .junit
            .clone()
            .unwrap_or_else(|| workspace.join("results.xml")),
        runs_dir: args
            .runs_dir
            .clone()
            .unwrap_or_else(|| workspace.join("disagg-runs")),
        options: args.overrides.options()?,
        parallel: args.parallel,
        retry_infra: args.retry_infra,
    };
    disagg_runtime::ci::ci(&request, &args.store())
}
