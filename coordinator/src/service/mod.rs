//! gRPC handlers: thin wrappers that check input, call the coordinator and map results.

pub mod agent;
pub mod dispatch;
