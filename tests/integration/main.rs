//! Integration tests: gRPC to the real server on an ephemeral port, backed by real PostgreSQL.

mod access_groups;
mod assignment;
mod authorization;
mod auto_assign;
mod auto_assign_queue;
mod bad_input;
mod bulk;
mod contract;
mod directory;
mod embedded;
mod feed;
mod fresh_facts;
mod harness;
mod limits;
mod operability;
mod paging;
mod production;
mod protocol;
mod proxy;
mod raw_codec;
mod routing;
mod server;
mod snapshot;
mod tls;
mod traces;
mod waiting;
