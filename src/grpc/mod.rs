//! gRPC handlers: decode the request, call one use case (`service`), encode the reply. The call
//! middleware, the decoding of who is calling, and the one mapping from errors to statuses live here too.

mod access_groups;
mod assignment;
mod auto_assign;
mod bulk;
mod call_body;
pub(crate) mod codec;
pub mod context;
pub(crate) mod convert;
mod directory;
mod fair_share;
mod feed;
mod framing;
pub mod middleware;
mod protocol;
pub(crate) mod reflection;
mod replies;
mod request_read;
mod shifts;
mod status;

pub use access_groups::AccessGroupApi;
pub use assignment::AssignmentApi;
pub use directory::DirectoryApi;
pub use status::{ERROR_DOMAIN, refusal};
