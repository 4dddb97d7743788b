//! assignment-service: who on a campaign's team owns each member conversation in a shared inbox.
//!
//! Layers, one way down: [`grpc`] handlers decode requests, call one use case of [`service`] and encode
//! replies; a use case opens the transaction and calls the [`store`] (SQL) and the [`domain`] (the rules as
//! pure functions) in turn. [`app`] assembles the server; `main.rs` only parses the configuration.
//! ARCHITECTURE.md walks through it.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod grpc;
pub mod listener;
pub mod observability;
pub mod probe;
pub mod relay;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Generated protobuf and gRPC code for package `assignment.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("assignment.v1");

    /// The encoded descriptors of every `assignment.v1` proto, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("assignment_descriptor");
}
