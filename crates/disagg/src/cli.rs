//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run disaggregated LLM-serving performance tests end to end: validate a test config, plan
/// its nodes and GPUs exactly as upstream CI does, render its Slurm job.
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
}
