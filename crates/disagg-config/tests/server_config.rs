//! The coordinator config the run directory writes is the one the router reads.

use disagg_config::{CoordinatorConfig, RouterPolicy};
use disagg_runtime::rundir::RunDir;

#[test]
fn the_written_server_config_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(dir.path()).unwrap();
    let ctx = vec!["n1:8001".to_string()];
    let gen_ = vec!["n2:8002".to_string(), "n3:8002".to_string()];
    run.write_server_config("n1", 0, &ctx, &gen_).unwrap();
    let c = CoordinatorConfig::load(&run.server_config_file()).unwrap();
    assert_eq!((c.hostname.as_str(), c.port), ("n1", 0));
    assert_eq!(c.context.urls, ctx);
    assert_eq!(c.generation.urls, gen_);
    assert_eq!(c.generation.policy, RouterPolicy::RoundRobin);
    assert!(c.warnings.0.is_empty(), "{}", c.warnings);
}
