//! Domain rules: pure functions, no I/O.

pub mod access_group;
pub mod actor;
pub mod assignment;
pub mod bulk;
pub mod model;
pub mod paging;
pub mod reply;
pub mod rotation;
pub mod validate;
