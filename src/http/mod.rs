//! The HTTP edge: server, the tower stack, routing and problem+json errors.
pub mod problem;
pub mod router;
pub mod server;
pub mod stack;
