//! What `coupon-gateway explain` found, stage by stage: the document `--json` prints and the
//! text output renders. Field names are part of the tool's interface (docs/routes.md,
//! "Debugging a vendor with explain"): add fields, do not rename them.
//!
//! Every text here was masked by the engine before it was recorded (credentials and the
//! access token read `***`).
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One explained call.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub vendor: String,
    pub operation: String,
    /// `live` (the configured vendor), `sandbox` (the built-in simulators) or `answer` (a
    /// recorded answer, nothing sent).
    pub mode: &'static str,
    /// The inputs as given (`member.id`, `member.openid`, the route's inputs).
    pub inputs: BTreeMap<String, Value>,
    pub pages: Vec<PageRecord>,
    pub outcome: Outcome,
}

/// One page: the attempts that asked for it, the answer, the verdict and the items.
#[derive(Debug, Default, Serialize)]
pub struct PageRecord {
    /// The page asked for (`None` for a page whose call failed before it was read).
    pub number: Option<u64>,
    pub cursor: Option<String>,
    /// The vendor's access token fetched for this page (`auth.token`), before its requests.
    pub token_fetches: Vec<TokenRecord>,
    /// Every request built for this page: retries are built and signed afresh.
    pub attempts: Vec<AttemptRecord>,
    pub answer: Option<AnswerRecord>,
    pub envelope: Option<EnvelopeRecord>,
    pub items: Vec<ItemRecord>,
    /// How many items the page held.
    pub item_count: Option<usize>,
    /// Where paging goes after this page.
    pub next: Option<NextRecord>,
}

/// One fetch of the vendor's access token: the token endpoint's requests and its answer
/// (the token in it masked).
#[derive(Debug, Default, Serialize)]
pub struct TokenRecord {
    pub attempts: Vec<AttemptRecord>,
    pub answer: Option<AnswerRecord>,
}

#[derive(Debug, Default, Serialize)]
pub struct AttemptRecord {
    /// Steps in the order they ran: those the request's templates read, then those that
    /// sign the rendered request.
    pub steps: Vec<StepRecord>,
    /// The request as the signing steps see it (`{{request.*}}`); only when a step reads it.
    pub rendered: Option<RenderedRecord>,
    /// The request as sent (`None`: it could not be built).
    pub wire: Option<WireRecord>,
}

#[derive(Debug, Serialize)]
pub struct StepRecord {
    pub name: String,
    /// The step ran after the request was rendered (it reads `{{request.*}}`, it signs it).
    pub signs_request: bool,
    /// Where the result goes: `var`, `query NAME` or `header NAME`.
    pub into: String,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RenderedRecord {
    pub method: String,
    /// Path and query as sent (what `{{request.target}}` signs).
    pub target: String,
    pub body: String,
}

#[derive(Debug, Serialize)]
pub struct WireRecord {
    pub method: String,
    pub url: String,
    /// `[name, value]` in the order sent.
    pub headers: Vec<[String; 2]>,
    pub body: String,
}

#[derive(Debug, Serialize)]
pub struct AnswerRecord {
    pub status: u16,
    pub headers: Vec<[String; 2]>,
    /// The body as text (bytes that are not UTF-8 shown as U+FFFD).
    pub body: String,
}

/// What the envelope rules made of the answer.
#[derive(Debug, Serialize)]
pub struct EnvelopeRecord {
    /// `ok`, `empty`, `not_found`, `error` (a business error), `rate_limited`, or
    /// `unexpected` (the envelope is not what routes.yaml describes).
    pub verdict: &'static str,
    /// Items on the page (`ok` only).
    pub items: Option<usize>,
    /// The error the verdict stands for (`not_found`, `error`, …).
    pub error: Option<String>,
    /// Every configured rule, evaluated on the answer.
    pub conditions: Vec<ConditionRecord>,
    /// The answer as read (and decrypted) in the operation's format.
    pub document: Value,
}

#[derive(Debug, Serialize)]
pub struct ConditionRecord {
    /// `not_found`, `empty`, `success` or `rate_limited`.
    pub rule: &'static str,
    pub path: String,
    /// `in [..]`, `present` or `absent`.
    pub expects: String,
    pub found: Option<Value>,
    pub holds: bool,
}

#[derive(Debug, Serialize)]
pub struct ItemRecord {
    /// Position on its page, from 1.
    pub index: usize,
    pub kept: bool,
    pub dropped: Option<DropRecord>,
    pub fields: Vec<FieldRecord>,
    /// The vendor's item.
    pub raw: Value,
}

#[derive(Debug, Serialize)]
pub struct DropRecord {
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct FieldRecord {
    pub field: String,
    pub required: bool,
    /// The JSONPath that matched (`value` for a constant), or those tried, joined by ` | `.
    /// `None`: the operation does not map this field.
    pub path: Option<String>,
    /// What the path selected, before `map` and conversion.
    pub matched: Option<Value>,
    /// The canonical value.
    pub value: Option<Value>,
    /// Why the vendor's value cannot be read (the item is dropped).
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NextRecord {
    /// `last`, `page` (another page follows) or `truncated` (`max_pages` reached).
    pub kind: &'static str,
    pub number: Option<u64>,
    pub cursor: Option<String>,
}

/// How the call ended.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub ok: bool,
    /// The stage that failed: `request`, `token`, `exchange`, `answer`, `read`, `envelope`,
    /// `items` or `limits`.
    pub stage: Option<&'static str>,
    pub error: Option<String>,
    /// Canonical rows produced.
    pub rows: usize,
    pub dropped: usize,
    pub pages: u32,
    pub truncated: bool,
}
