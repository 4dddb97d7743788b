//! gRPC handlers: decode the request, apply the domain rules through the store, encode the reply.

mod access_groups;
mod assignment;
mod bulk;
pub mod context;
mod convert;
mod directory;
mod inbox;
pub mod middleware;
mod status;

pub use access_groups::AccessGroupApi;
pub use assignment::AssignmentApi;
pub use directory::DirectoryApi;
pub use status::ERROR_DOMAIN;
