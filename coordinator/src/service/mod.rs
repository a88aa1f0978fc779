//! gRPC handlers: thin wrappers that check the caller and the input, call the domain and map
//! the result. The only place, with `convert.rs`, that names `v1::` types.

pub mod agent;
pub mod auth;
pub mod dispatch;
mod views;
