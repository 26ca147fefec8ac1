//! What the edge and the control plane share: the wire contract, the config-file format and its
//! validation, key hashing, pricing, and telemetry setup.

pub mod configfile;
pub mod keys;
pub mod ops;
pub mod period;
pub mod pricing;
pub mod telemetry;

/// Generated protobuf and gRPC code for `proto/llmgw/v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("llmgw.v1");

    /// Encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("llmgw_descriptor");
}
