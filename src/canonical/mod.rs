//! The canonical API of `shared/API.md`: its records, validation of requests, and the merge of
//! vendor answers. No HTTP and no vendors here.
pub mod schema;
