//! The generic vendor engine: routes.yaml compiled into an immutable plan, and the request
//! path that runs it (template → steps → HTTP → envelope → paging → field mapping).
//! Nothing here knows a vendor: every vendor is data in the plan.
pub mod cache;
pub mod call;
pub mod call_limit;
pub mod coalesce;
pub mod compile;
pub mod conversions;
pub mod convert;
pub mod decrypt;
pub mod extract;
pub mod fanout;
pub mod formats;
pub mod names;
pub mod observe;
pub mod packed;
pub mod plan;
pub mod projection;
pub mod resilience;
pub mod routes;
mod scan;
#[cfg(test)]
pub(crate) mod scripted;
pub mod steps;
pub mod template;
pub mod time;
pub mod token;
pub mod transforms;
pub mod upstream;
