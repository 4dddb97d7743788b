//! Integration tests: gRPC to the real server on an ephemeral port, backed by real PostgreSQL.

mod access_groups;
mod assignment;
mod auto_assign;
mod auto_assign_queue;
mod bulk;
mod directory;
mod embedded;
mod harness;
mod limits;
mod production;
mod proxy;
mod server;
mod tls;
