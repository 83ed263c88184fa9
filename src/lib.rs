//! coupon-gateway: one canonical coupon API in front of many vendors, each described in
//! routes.yaml and compiled once into an immutable plan.
//!
//! Request path, top to bottom: `http::server` → `http::stack` (tower layers) →
//! `http::router` → `app::coupons` (validate, fan out) → `engine::fanout` →
//! `engine::call` (template → steps → HTTP → envelope → paging → mapping) →
//! `canonical::merge`.
pub mod app;
pub mod canonical;
pub mod config;
pub mod crypto;
pub mod embedded;
pub mod engine;
pub mod explain;
pub mod http;
pub mod idempotency;
mod json_scalars;
mod json_text;
pub mod sandbox;
pub mod shared;
pub mod telemetry;
