//! coupon-gateway: one canonical coupon API in front of many vendors, each described in
//! routes.yaml and compiled once into an immutable plan.
pub mod canonical;
pub mod config;
pub mod crypto;
pub mod engine;
