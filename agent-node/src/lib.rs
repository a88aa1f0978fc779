//! The dispatch agent node: connects out to a coordinator, reports what this machine can run,
//! and runs a worker (an agent CLI) for each task it is assigned, streaming the checklist,
//! questions, logs and exit back over one bidirectional gRPC stream.

pub mod backends;
pub mod changes;
pub mod channel;
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

pub use node::{AgentConfig, EXIT_REFUSED, NODE_TOKEN_FILE, OnSigterm, RefusedForGood, run};

/// Version reported in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
