//! coupon-gateway: one canonical coupon API in front of many vendors.
pub mod crypto;
pub mod sandbox;
