//! The HTTP edge: server, the tower stack, routing and problem+json errors.
pub mod auth;
pub mod jwt;
pub mod openapi;
pub mod problem;
pub mod router;
pub mod server;
pub mod stack;

/// The header that carries a request's id. A `HeaderName` made once: looking a header up by
/// a `&str` parses and hashes the name again on every request.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The request id `SetRequestId` gave the request (the caller's own, or a new UUID).
pub fn request_id<B>(req: &http::Request<B>) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}
