//! Built-in sandbox vendors: strict HTTP simulators of the four coupon vendors (`op`, `hkl`,
//! `zvcms`, `wxcard`) exactly as the vendors' integration kit
//! describes them. They verify signatures, decrypt parameters, check timestamps, reject replayed
//! nonces and answer with the kit's envelopes and error codes (HTTP 200 with a business error
//! code, as the real vendors do). They know nothing about the gateway engine: only HTTP, JSON and
//! [`crate::crypto`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use coupon_gateway::sandbox::{Fault, Sandbox};
//! let sandbox = Sandbox::start().await?;
//! println!("op listens on {}", sandbox.op.base_url());
//! sandbox.hkl.set_fault(Fault::Delay(std::time::Duration::from_secs(2)));
//! sandbox.hkl.clear_fault();
//! # Ok(()) }
//! ```
//!
//! # Servers
//!
//! Each simulator is a hyper 1 server (`hyper_util::server::conn::auto::Builder`: HTTP/1.1 with
//! keep-alive, and h2c with prior knowledge) on its own port, one tokio task per connection.
//! Request bodies above 1 MiB are treated as malformed. Unknown paths answer HTTP 404.
//! [`SimHandle::requests`] counts every HTTP request received on any path (control requests to
//! `/__sandbox/fault` and rejected requests included); [`SimHandle::received`] keeps the last
//! ones as they arrived.
//!
//! # Faults
//!
//! [`SimHandle::set_fault`] sets a [`Fault`] that stays in force until
//! [`SimHandle::clear_fault`] (or another `set_fault`). It applies to every route of that
//! simulator (wxcard's `/auth/token` included) except the control route below, from the next
//! request (or, for [`Fault::RefuseConnections`], at once). The vendor logic does not run for
//! `Status`, `Html`, `BusinessError`, `WrongTypes`, `Raw`, `HugeBody` and `DeepNesting`; it does
//! run (and so may e.g. create a wxcard template or consume a zvcms nonce) for `Delay`,
//! `Hold`, `TruncatedJson`, `TrickleBody` and `ResetMidBody`, whose body is the normal answer.
//!
//! * `RefuseConnections`: the listening socket is closed before `set_fault` returns and every
//!   open connection is dropped, so connects get `ECONNREFUSED`; clearing it re-binds the same
//!   port (SO_REUSEADDR). Meanwhile the port stays bound (without listening), so no other
//!   socket can take it.
//! * `TruncatedJson`: the first half of the normal answer, with a Content-Length matching it.
//! * `ResetMidBody`: headers with the full Content-Length and the first half of the body, then
//!   the connection is aborted.
//! * `TrickleBody(d)`: the normal answer 7 bytes at a time, pausing `d` between chunks.
//! * `HugeBody(n)`: about `n` bytes of valid JSON, `{"code":200,"message":"huge","data":["xx…",…]}`,
//!   streamed in 64 KiB chunks without Content-Length (chunked transfer on HTTP/1.1).
//! * `DeepNesting(n)`: `n` × `[` then `n` × `]`, HTTP 200, `application/json`.
//! * `BusinessError`: op `{"code":500,"message":"系统异常",…}`; hkl `{"code":9999,"msg":…}`;
//!   zvcms `{"status":false,"code":"50000","message":"系统错误"}`; wxcard HTTP 500
//!   `{"message":"Server Error"}`.
//! * `StalledBody(n)`: like `HugeBody(n)`, but after about `n` bytes the body neither goes on
//!   nor ends; the connection stays open.
//! * `Hold`: each request waits unanswered until [`SimHandle::release`]`(k)` lets `k` of them
//!   go (first come, first served; a release with nobody waiting lets the next ones through
//!   at once), or until the fault is cleared or replaced, which lets every one go. Then the
//!   vendor answers normally. [`SimHandle::held`] / [`SimHandle::wait_held`] say how many are
//!   waiting, so a test can order events without sleeping.
//! * `FailFirst { times, fault }`: the first `times` requests after `set_fault` get `fault`
//!   (`RefuseConnections` here drops the connection without an answer), the next ones the
//!   normal answer.
//! * `WrongTypes`: the success envelope with data fields of the wrong JSON types (op: ids are
//!   objects, statuses strings/arrays; hkl: `data.list` is a string; zvcms: `cardId` an object,
//!   `useStatus` an array, …; wxcard: `data` a string on lists, ids objects on single templates).
//!
//! # Control route (manual demos)
//!
//! Every simulator also serves `POST /__sandbox/fault` with a JSON body; it answers
//! `{"ok":true,"vendor":"op","fault":"delay"}` (HTTP 400 for an unknown fault):
//!
//! ```text
//! curl -XPOST localhost:PORT/__sandbox/fault -d '{"fault":"delay","ms":2000}'
//! {"fault":"status","status":503}   {"fault":"html"}          {"fault":"business_error"}
//! {"fault":"truncated"}             {"fault":"reset"}         {"fault":"wrong_types"}
//! {"fault":"huge","bytes":10485760} {"fault":"deep","depth":10000}
//! {"fault":"trickle","ms":200}      {"fault":"raw","status":200,"content_type":"text/plain","body":"hi"}
//! {"fault":"stalled","bytes":5242880}  {"fault":"hold"}     {"fault":"release","count":1}
//! {"fault":"fail_first","times":1,"status":503}
//! {"fault":"none"}                  (clears any fault)
//! {"fault":"refuse"}                (takes effect 50 ms after the answer; can then only be
//!                                    cleared from Rust with SimHandle::clear_fault)
//! ```
//!
//! # Vendors
//!
//! * op: POST `/op/v2/getTicketUsersByChatId`, `/op/v2/getTicketPackageById`; query
//!   `apiVersion=01&client=…&version=2.0&sign=…`. Missing parameter / wrong apiVersion or
//!   version / malformed body → code 400; unknown client → 403; bad sign → 401; unknown package
//!   → 404. `OwnerType` 2 answers `[]`. `ProductKinds` filters by kind id or name.
//! * hkl: POST `/htest/openapi/v1/listCpnItemByMember`. Malformed → 1000, unknown channel → 1003,
//!   timestamp more than 300 s off → 1002, undecryptable param → 1001, neither id → 1004.
//!   `memberId` wins when both ids are given.
//! * zvcms: POST `/v3/crm/coupon/getCustomerCoupons`. Checks in this order: malformed → 40000,
//!   unknown openId/grantCode → 40005, timestamp more than 300 s off → 40002, bad token →
//!   40001, nonce seen in the last 5 minutes → 40003 (only nonces of requests whose token
//!   verified are remembered, at most 100 000). No matching coupon → `20004`.
//! * wxcard: see [`wxcard`] (token auth, template create / list / update).
//!
//! # Data
//!
//! See [`data`] for the table of every member, coupon, package and template.
pub mod data;
mod hkl;
mod op;
mod server;
pub mod wxcard;
mod zvcms;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use server::SimInner;

/// op `client` (sandbox).
pub const OP_CLIENT: &str = "70374ddd0f3641368d419b2d93127b8f";
/// op signing secret (sandbox).
pub const OP_SECRET: &str = "op-sandbox-secret";
/// hkl channel (sandbox).
pub const HKL_CHANNEL: &str = "hkl-test";
/// hkl DES key, 8 ASCII bytes (sandbox).
pub const HKL_DES_KEY: &str = "hklkey01";
/// zvcms openId (sandbox).
pub const ZVCMS_OPEN_ID: &str = "6dc05b4ac175cf316d226252b05cf685";
/// zvcms grantCode (sandbox).
pub const ZVCMS_GRANT_CODE: &str = "782c281f62";
/// zvcms HMAC secret (sandbox).
pub const ZVCMS_SECRET: &str = "zv-sandbox-secret";
/// wxcard app_id (sandbox).
pub const WXCARD_APP_ID: &str = "123456";
/// wxcard app_secret (sandbox).
pub const WXCARD_APP_SECRET: &str = "wxcard-sandbox-secret";

/// The sandbox credentials as `(vendor, name, value)`, with the names the gateway's config uses.
pub fn sandbox_credentials() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("op", "client", OP_CLIENT),
        ("op", "secret", OP_SECRET),
        ("hkl", "channel", HKL_CHANNEL),
        ("hkl", "des_key", HKL_DES_KEY),
        ("zvcms", "open_id", ZVCMS_OPEN_ID),
        ("zvcms", "grant_code", ZVCMS_GRANT_CODE),
        ("zvcms", "secret", ZVCMS_SECRET),
        ("wxcard", "app_id", WXCARD_APP_ID),
        ("wxcard", "app_secret", WXCARD_APP_SECRET),
    ]
}

/// A failure a simulator can be told to produce (see the module docs for details).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Stop listening: connects get ECONNREFUSED; `clear_fault` re-binds the same port.
    RefuseConnections,
    /// Wait before the first byte, then answer normally.
    Delay(Duration),
    /// Answer this HTTP status with a short text body (e.g. 500, 503).
    Status(u16),
    /// HTTP 200 with an HTML error page, content-type text/html.
    Html,
    /// HTTP 200 with the vendor's own error envelope (wxcard: HTTP 500 `{"message":…}`).
    BusinessError,
    /// A valid answer cut off in the middle (Content-Length matching the cut body).
    TruncatedJson,
    /// A 200 JSON body of about this many bytes, streamed in chunks.
    HugeBody(usize),
    /// A JSON body nested this many arrays deep: `[[[[…]]]]`.
    DeepNesting(usize),
    /// A valid answer sent a few bytes at a time with this pause between chunks.
    TrickleBody(Duration),
    /// Send headers and part of the body, then drop the connection.
    ResetMidBody,
    /// The normal envelope but with data fields of the wrong JSON types.
    WrongTypes,
    /// Answer exactly this.
    Raw {
        status: u16,
        content_type: String,
        body: bytes::Bytes,
    },
    /// About this many bytes of a JSON body (no Content-Length), then nothing more: the body
    /// never ends and the connection stays open.
    StalledBody(usize),
    /// Keep each request waiting, unanswered, until [`SimHandle::release`] lets it go (or the
    /// fault is cleared or replaced); then answer normally. [`SimHandle::wait_held`] tells when
    /// requests are waiting.
    Hold,
    /// Answer the first `times` requests (from `set_fault` on) with `fault`, then normally.
    FailFirst { times: u32, fault: Box<Fault> },
}

/// How many requests [`SimHandle::received`] keeps.
pub const RECEIVED_KEPT: usize = 256;

/// A request as a simulator received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: http::Method,
    pub path: String,
    /// Raw query string (without `?`), empty when absent.
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// A running simulator. Cheap to clone; dropping the last handle leaves the server running until
/// the runtime shuts down.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<SimInner>,
    wx: Option<Arc<wxcard::WxState>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("vendor", &self.inner.vendor_id)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", server::display_addr(self.inner.addr))
    }

    /// The bound address (stays the same across `RefuseConnections` / `clear_fault`).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The vendor id: `op`, `hkl`, `zvcms` or `wxcard`.
    pub fn vendor_id(&self) -> &'static str {
        self.inner.vendor_id
    }

    /// Sets a fault for the next requests / connections, until cleared.
    pub fn set_fault(&self, fault: Fault) {
        self.inner.set_fault(fault);
    }

    /// Back to normal behaviour (re-binding the same port after `RefuseConnections`).
    pub fn clear_fault(&self) {
        self.inner.clear_fault();
    }

    /// The fault in force, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.inner.fault()
    }

    /// HTTP requests received (all paths, including rejected ones).
    pub fn requests(&self) -> u64 {
        self.inner.requests()
    }

    /// The last requests received (at most [`RECEIVED_KEPT`]), oldest first, as they arrived:
    /// what a test needs to compare two attempts (signatures, nonces, bodies).
    pub fn received(&self) -> Vec<Received> {
        self.inner.received()
    }

    /// Under [`Fault::Hold`]: lets `n` held (or future) requests go on.
    pub fn release(&self, n: usize) {
        self.inner.release(n);
    }

    /// Requests waiting under [`Fault::Hold`] right now.
    pub fn held(&self) -> usize {
        self.inner.held()
    }

    /// Waits until at least `n` requests are waiting under [`Fault::Hold`] (no time limit: wrap
    /// it in a timeout).
    pub async fn wait_held(&self, n: usize) {
        self.inner.wait_held(n).await;
    }

    /// Resets [`requests`](Self::requests), [`received`](Self::received) (and, on wxcard,
    /// `token_requests`) to 0.
    pub fn reset_counters(&self) {
        self.inner.reset_counters();
        if let Some(wx) = &self.wx {
            wx.reset_counters();
        }
    }

    /// wxcard only (no-op elsewhere): revokes every issued access token.
    pub fn revoke_tokens(&self) {
        if let Some(wx) = &self.wx {
            wx.revoke_tokens();
        }
    }

    /// wxcard only (no-op elsewhere): lifetime of tokens issued from now on (default 7200 s).
    pub fn set_token_ttl(&self, ttl: Duration) {
        if let Some(wx) = &self.wx {
            wx.set_token_ttl(ttl);
        }
    }

    /// wxcard only (0 elsewhere): requests received on `/auth/token`.
    pub fn token_requests(&self) -> u64 {
        self.wx.as_ref().map_or(0, |wx| wx.token_requests())
    }
}

/// The four simulators.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub op: SimHandle,
    pub hkl: SimHandle,
    pub zvcms: SimHandle,
    pub wxcard: SimHandle,
}

impl Sandbox {
    /// Starts every simulator on 127.0.0.1 with an OS-assigned port (port 0).
    pub async fn start() -> std::io::Result<Sandbox> {
        Sandbox::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), [0; 4]).await
    }

    /// Same, but binding the given IP (e.g. 127.0.0.1) and, if non-zero, fixed ports in order
    /// op, hkl, zvcms, wxcard.
    pub async fn start_on(ip: IpAddr, ports: [u16; 4]) -> std::io::Result<Sandbox> {
        let today = data::today();
        let vendors: [(&'static str, Arc<dyn server::Vendor>); 3] = [
            ("op", Arc::new(op::OpSim::new(today))),
            ("hkl", Arc::new(hkl::HklSim::new(today))),
            ("zvcms", Arc::new(zvcms::ZvcmsSim::new(today))),
        ];
        let wx_state = Arc::new(wxcard::WxState::new(today));
        let wx_sim: Arc<dyn server::Vendor> =
            Arc::new(wxcard::WxcardSim::new(Arc::clone(&wx_state)));
        let mut started: Vec<Arc<SimInner>> = Vec::with_capacity(4);
        let all = vendors
            .into_iter()
            .chain(std::iter::once(("wxcard", wx_sim)));
        for (i, (id, vendor)) in all.enumerate() {
            match SimInner::start(id, SocketAddr::new(ip, ports[i]), vendor).await {
                Ok(inner) => started.push(inner),
                Err(e) => {
                    // do not leave the ones already started listening
                    for inner in &started {
                        inner.shutdown();
                    }
                    return Err(e);
                }
            }
        }
        let mut it = started.into_iter();
        let mut next = |wx: Option<Arc<wxcard::WxState>>| {
            it.next()
                .map(|inner| SimHandle { inner, wx })
                .ok_or_else(|| std::io::Error::other("sandbox: a simulator did not start"))
        };
        Ok(Sandbox {
            op: next(None)?,
            hkl: next(None)?,
            zvcms: next(None)?,
            wxcard: next(Some(wx_state))?,
        })
    }

    /// (vendor id, handle) pairs in the order op, hkl, zvcms, wxcard.
    pub fn vendors(&self) -> [(&'static str, &SimHandle); 4] {
        [
            ("op", &self.op),
            ("hkl", &self.hkl),
            ("zvcms", &self.zvcms),
            ("wxcard", &self.wxcard),
        ]
    }

    /// Clears the faults of all four simulators.
    pub fn clear_faults(&self) {
        for (_, sim) in self.vendors() {
            sim.clear_fault();
        }
    }

    /// wxcard: revokes every issued access token (calls with them then get HTTP 401).
    pub fn revoke_tokens(&self) {
        self.wxcard.revoke_tokens();
    }

    /// wxcard: lifetime of tokens issued from now on (default 7200 s; `expires_in` reports it
    /// in whole seconds).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.wxcard.set_token_ttl(ttl);
    }

    /// wxcard: requests received on `/auth/token` (successful or not).
    pub fn token_requests(&self) -> u64 {
        self.wxcard.token_requests()
    }
}

/// The `POST /v1/coupons/query` body of the demo: a member known to every coupon simulator.
pub fn demo_query() -> String {
    serde_json::json!({
        "member": {
            "ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER, "zvcms": data::ZVCMS_MEMBER},
            "openid": data::HKL_OPENID,
        }
    })
    .to_string()
}
