//! # jasper-proto
//!
//! The local gRPC API of `jasperd` (package `jasper.v1`, schema in `jasper/v1/jasper.proto`):
//! messages, client stubs and server traits generated at build time, plus the encoded file
//! descriptor set for server reflection, and [`convert`] between these messages and the model
//! (`jasper-model`). Built with `protox`, so no `protoc` is needed.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod convert;

pub mod v1 {
    tonic::include_proto!("jasper.v1");
}

/// `google.rpc.ErrorInfo.domain` of every error the API raises; its `reason` is then the
/// engine's stable code (see `jasper-client`'s `ApiError`).
pub const ERROR_DOMAIN: &str = "jasper";

/// The encoded `FileDescriptorSet` of `jasper.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jasper_descriptor.bin"));
