//! The `dispatch.v1` wire protocol shared by the coordinator, agent nodes and the CLI.
//!
//! Code is generated at build time from `dispatch/v1/dispatch.proto` (see `build.rs`);
//! conversions between wire and domain types live in [`convert`].

#[allow(unreachable_pub, clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("dispatch.v1");
}

/// The encoded `FileDescriptorSet` of `dispatch.v1` (what server reflection serves).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dispatch_descriptor.bin"));

pub mod codec;
pub mod convert;

pub use v1::*;
