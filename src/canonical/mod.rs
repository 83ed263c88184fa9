//! The canonical API of docs/api.md: its records, validation of requests, and the merge of
//! vendor answers. No HTTP and no vendors here.
pub mod coupon;
pub mod cursor;
pub mod merge;
pub mod query;
pub mod schema;
pub mod strict;
