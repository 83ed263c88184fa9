//! The HTTP edge: server, the tower stack, routing and problem+json errors.
pub mod auth;
pub mod jwt;
pub mod openapi;
pub mod problem;
pub mod router;
pub mod server;
pub mod stack;

/// The request id `SetRequestId` gave the request (the caller's own, or a new UUID).
pub fn request_id<B>(req: &http::Request<B>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}
