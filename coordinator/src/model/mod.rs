//! The coordinator's own types: what a task, a node, an agent event and a node command are, and
//! the changes a committed write produced. Wire types (`dispatch_proto::v1`) appear only in
//! `service/` and `convert.rs`.

mod access;
mod changes;
mod commands;
mod events;
mod records;

pub use access::*;
pub use changes::*;
pub use commands::*;
pub use events::*;
pub use records::*;
