//! The protobuf codec every service and client uses: prost, with small starting buffers.
//!
//! tonic starts each RPC's encode and decode buffers at 8 KiB. Nearly every message here
//! (heartbeats, acks, commands, events) is far smaller, and a coordinator holds one long-lived
//! `Session` per connected node, so at 10,000 nodes those two buffers alone are ~160 MiB of
//! mostly unused memory. They start at 1 KiB and grow for the rare large message (a plan is at
//! most 256 KiB).

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Starting size of an RPC's encode and decode buffers.
const BUFFER_SIZE: usize = 1024;
/// Encoded bytes a stream gathers before it yields them to the transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost encoding with [`BUFFER_SIZE`] starting buffers (named by `build.rs` as the codec of
/// every generated service and client).
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
