//! wxcard — WeChat-card coupon management (bearer tokens; template create / list / update).
//!
//! Placeholder: the routes are not simulated yet; every request answers HTTP 404.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::civil::Date;
use serde_json::json;

use super::server::{SimReply, SimRequest, Vendor};

/// Shared wxcard state (tokens and counters), reachable from [`SimHandle`](super::SimHandle).
pub(crate) struct WxState {
    #[allow(dead_code)]
    today: Date,
    token_ttl: Mutex<Duration>,
    token_requests: AtomicU64,
}

impl WxState {
    pub fn new(today: Date) -> WxState {
        WxState {
            today,
            token_ttl: Mutex::new(Duration::from_secs(7200)),
            token_requests: AtomicU64::new(0),
        }
    }
    pub fn reset_counters(&self) {
        self.token_requests.store(0, Ordering::SeqCst);
    }
    pub fn revoke_tokens(&self) {}
    pub fn set_token_ttl(&self, ttl: Duration) {
        *self.token_ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
    }
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }
}

pub(crate) struct WxcardSim {
    #[allow(dead_code)]
    state: std::sync::Arc<WxState>,
}

impl WxcardSim {
    pub fn new(state: std::sync::Arc<WxState>) -> WxcardSim {
        WxcardSim { state }
    }
}

impl Vendor for WxcardSim {
    fn handle(&self, _req: &SimRequest) -> SimReply {
        SimReply::json(404, &json!({"message": "Not Found"}))
    }
    fn business_error(&self) -> SimReply {
        SimReply::json(500, &json!({"message": "Server Error"}))
    }
    fn wrong_types(&self, _req: &SimRequest) -> SimReply {
        SimReply::json(200, &json!({"data": "not a template"}))
    }
}
