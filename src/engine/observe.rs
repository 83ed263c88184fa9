//! The one observation hook of the request path: what `engine::call` shows an observer
//! (`coupon-gateway explain`) at each stage of one vendor operation.
//!
//! The serving path passes no observer, and every event is built inside `if let Some(…)`, so
//! it costs a branch and nothing else. Everything an event carries is masked by the engine
//! before the observer sees it: credential values and the access token read `***`, so no
//! observer can leak them.
use serde_json::Value;

use super::call::CallError;
use super::extract::Dropped;

/// Receives the stages of a call, in order: the token endpoint's exchange when a token is
/// fetched; per attempt its steps, the rendered request and the wire request; per page the
/// answer, the envelope, each item and the paging decision.
pub trait Observer: Send {
    fn observe(&mut self, event: Event<'_>);
}

/// One stage of a call. Texts are masked (see the module docs).
#[derive(Debug)]
pub enum Event<'a> {
    /// The vendor's access token is fetched: the steps and requests up to `TokenAnswer` are
    /// the token endpoint's.
    TokenRequested,
    /// The token endpoint's answer (the token in it masked too).
    TokenAnswer {
        status: u16,
        headers: &'a [(String, String)],
        body: &'a str,
    },
    /// The request as the signing steps see it (`{{request.*}}`), before they add to it.
    Rendered {
        method: &'a str,
        target: &'a str,
        body: &'a str,
    },
    /// A step's input (rendered template or joined pairs), and its output or why it failed.
    Step {
        name: &'a str,
        input: &'a str,
        output: Result<&'a str, &'a str>,
        into: String,
    },
    /// The request as sent: method, URL, headers and body.
    Wire {
        method: &'a str,
        url: &'a str,
        headers: &'a [(String, String)],
        body: &'a str,
    },
    /// The vendor's answer as received (the body as text, lossily for non-UTF-8 bytes).
    Answer {
        status: u16,
        headers: &'a [(String, String)],
        body: &'a str,
    },
    /// The answer read (and decrypted), and what the envelope rules made of it.
    Envelope {
        doc: &'a Value,
        verdict: Verdict<'a>,
    },
    /// One item of the page: its canonical row, or why it was dropped.
    Item {
        item: &'a Value,
        mapped: Result<&'a [Value], &'a Dropped>,
    },
    /// A page done: which one, its item count, and where paging goes next.
    Page {
        number: u64,
        cursor: Option<&'a str>,
        items: usize,
        next: Next<'a>,
    },
}

/// What the envelope rules said of an answer.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// Success with this many items.
    Items(usize),
    /// The `empty` rules hold: nothing to list.
    Empty,
    /// `not_found`, a business error, throttling or a changed envelope.
    Failed(&'a CallError),
}

/// The paging decision after a page.
#[derive(Debug)]
pub enum Next<'a> {
    /// The operation does not page, or the answer says this was the last page.
    Last,
    Page {
        number: u64,
        cursor: Option<&'a str>,
    },
    /// The vendor has more, but `max_pages` was reached.
    Truncated,
}
