//! Integration tests: gRPC to the real server on an ephemeral port, backed by real PostgreSQL.

mod access_groups;
mod assignment;
mod authorization;
mod auto_assign;
mod bad_input;
mod bulk;
mod directory;
mod embedded;
mod harness;
mod production;
mod proxy;
mod server;
mod snapshot;
