//! `dispatch-core`: the domain every dispatch binary shares.
//!
//! - [`plan`]: the seed's plan.md checklist (parse, render, rewrite);
//! - [`task_id`]: task-id rules (kebab-case, ≤ 63 characters, derived from a prompt);
//! - [`prompt`]: the seed's worker prompt template;
//! - [`task`]: task states and how a worker's exit maps to one;
//! - [`backend`]: the built-in backends and the seed's model → backend rules;
//! - [`limits`]: size limits on every input;
//! - [`fs`]: the seed's atomic write, and safe access to a worker's task directory;
//! - [`text`]: text from workers and other users, made safe for a terminal.
//!
//! No network and no async here; file I/O only on paths a caller hands in.

pub mod agent_config;
pub mod backend;
pub mod budget;
pub mod config;
pub mod config_edit;
pub mod drive;
pub mod duration;
pub mod egress;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod limits;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod process;
pub mod prompt;
pub mod repo_url;
pub mod resolve;
pub mod signals;
pub mod signing;
pub mod stream;
pub mod task;
pub mod task_id;
pub mod text;

pub use plan::{Item, ItemStatus, Plan};
pub use task::TaskState;
