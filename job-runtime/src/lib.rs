//! The Tributary job runtime: typed events, the event-time join, and (next) the Kinesis sources,
//! the RocksDB state and the S3 / OpenSearch sinks.
//!
//! The binary (`main.rs`) only wires configuration to these modules; everything here is pure
//! and unit-tested without a network.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod app;
pub use tributary_aws as aws;
pub mod engine;
pub mod events;
pub mod r#gen; // `gen` is a reserved keyword in edition 2024
pub mod join;
pub mod metrics;
pub mod objects;
pub mod output;
pub mod reference;
pub mod report;
pub mod s3uri;
pub mod savepoint;
pub mod sink;
pub mod source;
pub mod state;

/// The allocator the runtime's binaries install (`#[global_allocator]`): the engine allocates
/// many small strings and buffers per record, which glibc's malloc handles poorly (a fifth of
/// the engine benchmark went to malloc, free and consolidation).
pub use mimalloc::MiMalloc as Allocator;

#[cfg(test)]
pub(crate) mod test_fixtures;
