//! Generated protobuf/gRPC code for `proto/embedding_stream.proto`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("embedding");

/// Descriptor set of the canonical `embedding` package (server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("embedding_descriptor");
/// Descriptor set of the same contract under `com.alpha.backend.grpc` (reflection only).
pub const ALIAS_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("embedding_alias_descriptor");

/// Package of the original Batch Server contract.
pub const PACKAGE: &str = "embedding";
/// Package of the Batch Server revision that added `IngestDataStream`.
pub const ALIAS_PACKAGE: &str = "com.alpha.backend.grpc";
/// Service name inside either package.
pub const SERVICE: &str = "EmbeddingStreamService";
