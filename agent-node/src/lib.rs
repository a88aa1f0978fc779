//! The dispatch agent node: connects out to a coordinator, reports what this machine can run,
//! and runs a worker (an agent CLI) for each task it is assigned, streaming the checklist,
//! questions, logs and exit back over one bidirectional gRPC stream.

pub mod approvals;
pub mod assignment;
pub mod backends;
pub mod changes;
pub mod config;
pub mod egress;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod node;
pub mod process_tree;
pub mod runner;
pub mod signed_runs;
pub mod sim;
pub mod spool;
pub mod watched;
pub mod worker_record;
pub mod worktree;

pub use config::{
    AgentConfig, EXIT_REFUSED, MIN_REFUSALS, NODE_TOKEN_FILE, OnSigterm, RefusedForGood,
};
pub use node::run;

/// Version reported in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
