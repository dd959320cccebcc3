//! Launchers: how the roles of a planned test are started.
//!
//! - [`sbatch`]: the pure renderer of the Slurm batch script (GEN/CTX worker steps, the
//!   coordinator and benchmark on `--overlap` steps, node slices, teardown);
//! - [`shell`]: the quoting every rendered value goes through;
//! - [`slurm`]: the Slurm client that submits the script, follows the job and cancels it
//!   ([`slurm::Slurm`], [`slurm::JobState`]), its command lines kept apart from the pure parsers
//!   of Slurm's output, which are tested on outputs captured from a real Slurm.
//!
//! ```
//! use disagg_plan::{plan, Placement, PlanInput, ServerGroup};
//! use disagg_launch::sbatch::{render, JobSpec, RoleEnv, Ucx};
//! let p = plan(&PlanInput {
//!     gpus_per_node: 4,
//!     ctx: ServerGroup { count: 1, gpus: 4 },
//!     gen_: ServerGroup { count: 1, gpus: 8 },
//!     placement: Placement::Upstream,
//!     ranks: Default::default(),
//!     ports_from: None,
//! }).unwrap();
//! let script = render(&JobSpec {
//!     test_name: "example".into(), job_name: "disagg-example".into(),
//!     run_dir: "/shared/runs/1".into(), disagg_bin: "/shared/bin/disagg".into(), plan: &p,
//!     partition: Some("batch".into()), account: None, time_limit: None, gres_gpus: false,
//!     sbatch_args: vec![], extra_args: vec![], segment: false, ucx: Ucx::Clear, numa_bind: false,
//!     notes: vec![], container: None, mpi: Some("pmix".into()), install: vec![],
//!     env: RoleEnv::default(), step_stagger_s: 0, teardown_grace_s: 30, settle_s: 5, generator: "disagg".into(),
//! }).unwrap();
//! assert!(script.contains("#SBATCH --nodes=3"));
//! assert!(script.contains("-N 2 --ntasks=8 --ntasks-per-node=4"));
//! ```

pub mod sbatch;
pub mod shell;
pub mod slurm;
