//! wxcard — WeChat-card coupon management: bearer tokens and coupon templates.
//!
//! * `POST /auth/token` `{"app_id","app_secret"}` → `{"data":{"access_token":"<40 chars>",
//!   "expires_in":7200}}`; wrong app id or secret → HTTP 401 `{"message":"Unauthenticated."}`;
//!   missing fields / malformed body → HTTP 422.
//! * Every other route first has to match (else HTTP 404 `{"message":"Not Found"}`, or 405 for
//!   a known path with another method), then needs `Authorization: Bearer <token>` with an
//!   issued, unexpired, unrevoked token, else HTTP 401 `{"message":"Unauthenticated."}`.
//! * `POST /discount/ticket`, `/coupon/ticket`, `/groupon/ticket`, `/gift/ticket` with
//!   `{"ticket_info":{…},"sync":bool,"begin_at":"yyyy-MM-dd","end_at":"yyyy-MM-dd"}` → HTTP 201
//!   `{"data":{"id":N,"card_type":"discount_card","discount_info":{…ticket_info…},
//!   "ticket_type":"DISCOUNT","title":…,"app_id":"123456","wechat_app_id":…,"status":0,
//!   "sync":0|1,"created_at":null,"updated_at":null}}` (cash: `cash_card`/`cash_info`,
//!   groupon: `groupon_card`/`groupon_info`, gift: `gift_card`/`gift_info`).
//!   `ticket_info` is WeChat's card payload: either the inner object (`base_info`, …) or the full
//!   `{"card":{"card_type":"DISCOUNT","discount":{…}}}`, which is unwrapped. Required:
//!   `base_info.title` (non-empty string); DISCOUNT `discount` (integer percent off, 1–99);
//!   CASH `reduce_money` (integer fen ≥ 1) and, if present, `least_cost` (integer fen ≥ 0);
//!   GROUPON `deal_detail`; GIFT `gift` (non-empty strings). `sync` is a boolean (`true`,
//!   `false`, `1`, `0`, `"1"`, `"0"` as Laravel accepts); `end_at` must not be before
//!   `begin_at`. Errors → HTTP 422 `{"message":"The given data was invalid.","errors":{field:[…]}}`
//!   with Laravel-style dotted field names (`ticket_info.base_info.title`).
//! * `GET /tickets?search=field,op;…&<field>=<value>…&page=&per_page=` → `{"data":[…],"meta":
//!   {"pagination":{"total","count","per_page","current_page","total_pages","links"}}}`, ids
//!   ascending, `per_page` 1–100 (default 15), `page` ≥ 1 (default 1). `total_pages` is at
//!   least 1. `links` is `[]` when there is neither a previous nor a next page, else an object
//!   with `previous` and/or `next` URLs (PHP's empty-array quirk). Searchable: `ticket_type`,
//!   `title`, `status`, `sync` (`=` only) and `begin_at`, `end_at`, `created_at` (`=`, `>=`,
//!   `<=`, `>`, `<`, compared as UTC+08:00 calendar days), each at most once, each needing its
//!   own query parameter. Anything else in `search` → HTTP 422 with `errors.search`; a bad
//!   `page`/`per_page` → HTTP 422 with `errors.page`/`errors.per_page`. Without `search` nothing
//!   is filtered (stray field parameters are ignored).
//! * `PUT /ticket/{id}` with the create body plus `ticket_type` → HTTP 200 `{"data":{…}}` (same
//!   shape as create); unknown id → HTTP 404 (checked before validation); invalid → HTTP 422.
//!
//! `token_requests` counts the requests the token endpoint answered (requests answered by a
//! [`Fault`](super::Fault) never reach it).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Method, header};
use jiff::Timestamp;
use jiff::civil::Date;
use rand::RngExt as _;
use serde_json::{Map, Value, json};

use super::data;
use super::server::{SimReply, SimRequest, Vendor};
use super::{WXCARD_APP_ID, WXCARD_APP_SECRET};

const WECHAT_APP_ID: &str = "wx581a7ad7ca810da6";
const DEFAULT_TTL: Duration = Duration::from_secs(7200);
/// Expired tokens are pruned when more than this many are stored.
const MAX_TOKENS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketType {
    Discount,
    Cash,
    Groupon,
    Gift,
}

impl TicketType {
    pub const ALL: [TicketType; 4] = [
        TicketType::Discount,
        TicketType::Cash,
        TicketType::Groupon,
        TicketType::Gift,
    ];

    /// `DISCOUNT`, `CASH`, `GROUPON`, `GIFT`
    pub fn name(self) -> &'static str {
        match self {
            TicketType::Discount => "DISCOUNT",
            TicketType::Cash => "CASH",
            TicketType::Groupon => "GROUPON",
            TicketType::Gift => "GIFT",
        }
    }

    pub fn from_name(name: &str) -> Option<TicketType> {
        TicketType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The create route.
    pub fn path(self) -> &'static str {
        match self {
            TicketType::Discount => "/discount/ticket",
            TicketType::Cash => "/coupon/ticket",
            TicketType::Groupon => "/groupon/ticket",
            TicketType::Gift => "/gift/ticket",
        }
    }

    fn card_type(self) -> &'static str {
        match self {
            TicketType::Discount => "discount_card",
            TicketType::Cash => "cash_card",
            TicketType::Groupon => "groupon_card",
            TicketType::Gift => "gift_card",
        }
    }

    fn info_key(self) -> &'static str {
        match self {
            TicketType::Discount => "discount_info",
            TicketType::Cash => "cash_info",
            TicketType::Groupon => "groupon_info",
            TicketType::Gift => "gift_info",
        }
    }

    /// The key of WeChat's `{"card":{"card_type":…,"<key>":{…}}}` wrapper.
    fn wechat_key(self) -> &'static str {
        match self {
            TicketType::Discount => "discount",
            TicketType::Cash => "cash",
            TicketType::Groupon => "groupon",
            TicketType::Gift => "gift",
        }
    }
}

#[derive(Debug, Clone)]
struct Template {
    id: u64,
    ticket_type: TicketType,
    ticket_info: Map<String, Value>,
    sync: bool,
    status: i64,
    begin: Date,
    end: Date,
    created_at: Timestamp,
    updated_at: Option<Timestamp>,
}

impl Template {
    fn title(&self) -> Value {
        self.ticket_info
            .get("base_info")
            .and_then(|b| b.get("title"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn base(&self, key: &str) -> Value {
        self.ticket_info
            .get("base_info")
            .and_then(|b| b.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The create / update answer (seed shape).
    fn stored_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("card_type".into(), json!(self.ticket_type.card_type()));
        m.insert(
            self.ticket_type.info_key().into(),
            Value::Object(self.ticket_info.clone()),
        );
        m.insert("ticket_type".into(), json!(self.ticket_type.name()));
        m.insert("title".into(), self.title());
        m.insert("app_id".into(), json!(WXCARD_APP_ID));
        m.insert("wechat_app_id".into(), json!(WECHAT_APP_ID));
        m.insert("status".into(), json!(self.status));
        m.insert("sync".into(), json!(i64::from(self.sync)));
        m.insert("created_at".into(), Value::Null);
        m.insert("updated_at".into(), Value::Null);
        Value::Object(m)
    }

    /// A `GET /tickets` item.
    fn list_json(&self) -> Value {
        json!({
            "id": self.id,
            "color": self.base("color"),
            "background_pic_url": self.ticket_info.get("background_pic_url").cloned().unwrap_or(Value::Null),
            "logo_url": self.base("logo_url"),
            "card_type": self.ticket_type.card_type(),
            "ticket_type": self.ticket_type.name(),
            "brand_name": self.base("brand_name"),
            "code_type": self.base("code_type"),
            "title": self.title(),
            "sku": self.base("sku"),
            "app_id": WXCARD_APP_ID,
            "wechat_app_id": WECHAT_APP_ID,
            "ali_app_id": null,
            "status": self.status,
            "sync": i64::from(self.sync),
            "begin_at": php_date(cn_instant(self.begin, 0, 0, 0)),
            "end_at": php_date(cn_instant(self.end, 23, 59, 59)),
            "created_at": php_date(self.created_at),
            "updated_at": self.updated_at.map_or(Value::Null, php_date),
        })
    }

    fn created_day(&self) -> Date {
        self.created_at.to_zoned(data::cn_tz()).date()
    }
}

fn cn_instant(d: Date, h: i8, m: i8, s: i8) -> Timestamp {
    Timestamp::from_millisecond(data::cn_millis(d, h, m, s)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Laravel's serialised Carbon date: `{"date":"… .000000","timezone_type":3,"timezone":"UTC"}`.
fn php_date(t: Timestamp) -> Value {
    let utc = t.to_zoned(jiff::tz::TimeZone::UTC);
    json!({
        "date": format!("{}.000000", utc.strftime("%Y-%m-%d %H:%M:%S")),
        "timezone_type": 3,
        "timezone": "UTC",
    })
}

struct WxData {
    tokens: HashMap<String, Instant>,
    ttl: Duration,
    templates: BTreeMap<u64, Template>,
    next_id: u64,
}

/// Shared wxcard state (tokens, templates, counters), reachable from
/// [`SimHandle`](super::SimHandle).
pub(crate) struct WxState {
    data: Mutex<WxData>,
    token_requests: AtomicU64,
}

impl WxState {
    pub fn new(today: Date) -> WxState {
        let mut templates = BTreeMap::new();
        for (i, seed) in data::WX_SEEDS.iter().enumerate() {
            let id = i as u64 + 1;
            let ticket_type = TicketType::from_name(seed.ticket_type).unwrap_or(TicketType::Gift);
            let created = data::day_from(today, seed.created);
            let created_at = created
                .at(10, 10, 10, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::UNIX_EPOCH);
            templates.insert(
                id,
                Template {
                    id,
                    ticket_type,
                    ticket_info: seed_info(ticket_type, seed.title),
                    sync: seed.sync,
                    status: seed.status,
                    begin: data::day_from(today, seed.begin),
                    end: data::day_from(today, seed.end),
                    created_at,
                    updated_at: None,
                },
            );
        }
        let next_id = templates.len() as u64 + 1;
        WxState {
            data: Mutex::new(WxData {
                tokens: HashMap::new(),
                ttl: DEFAULT_TTL,
                templates,
                next_id,
            }),
            token_requests: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WxData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reset_counters(&self) {
        self.token_requests.store(0, Ordering::SeqCst);
    }

    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }

    fn issue_token(&self) -> (String, Duration) {
        let mut rng = rand::rng();
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let token: String = (0..40)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        let mut d = self.lock();
        let now = Instant::now();
        if d.tokens.len() >= MAX_TOKENS {
            d.tokens.retain(|_, exp| *exp > now);
        }
        let ttl = d.ttl;
        d.tokens.insert(token.clone(), now + ttl);
        (token, ttl)
    }

    fn token_valid(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }
}

fn seed_info(t: TicketType, title: &str) -> Map<String, Value> {
    let mut info = json!({
        "base_info": {
            "logo_url": "http://mmbiz.qpic.cn/mmbiz/iaL1LJM1mF9aRKPZ/0",
            "brand_name": "海底捞",
            "code_type": "CODE_TYPE_TEXT",
            "title": title,
            "color": "Color010",
            "notice": "使用时向服务员出示此券",
            "description": "不可与其他优惠同享",
            "sku": {"quantity": 500000},
            "get_limit": 3,
            "can_give_friend": true,
        },
        "advanced_info": {
            "use_condition": {"can_use_with_other_discount": false},
        },
        "background_pic_url": "https://mmbiz.qlogo.cn/mmbiz/",
    });
    let extra = match t {
        TicketType::Discount => ("discount", json!(20)),
        TicketType::Cash => ("reduce_money", json!(2000)),
        TicketType::Groupon => (
            "deal_detail",
            json!("双人套餐\n-进口红酒一支。\n孜然牛肉一份。"),
        ),
        TicketType::Gift => ("gift", json!("可兑换生日蛋糕一个")),
    };
    if let Some(m) = info.as_object_mut() {
        m.insert(extra.0.into(), extra.1);
        if t == TicketType::Cash {
            m.insert("least_cost".into(), json!(10000));
        }
    }
    match info {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn unauthenticated() -> SimReply {
    SimReply::json(401, &json!({"message": "Unauthenticated."}))
}

fn invalid(errors: BTreeMap<String, Vec<String>>) -> SimReply {
    SimReply::json(
        422,
        &json!({"message": "The given data was invalid.", "errors": errors}),
    )
}

fn one_error(field: &str, msg: impl Into<String>) -> SimReply {
    invalid(BTreeMap::from([(field.to_owned(), vec![msg.into()])]))
}

fn parse_ymd(s: &str) -> Option<Date> {
    // strict `yyyy-MM-dd`
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    s.parse::<Date>().ok()
}

/// Laravel's `boolean` rule.
fn laravel_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

struct ValidTicket {
    ticket_type: TicketType,
    ticket_info: Map<String, Value>,
    sync: bool,
    begin: Date,
    end: Date,
}

/// Validates a create (`fixed_type` given by the route) or update (`ticket_type` in the body).
fn validate(body: &[u8], fixed_type: Option<TicketType>) -> Result<ValidTicket, SimReply> {
    let input = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(), // like Laravel: an unreadable body is an empty input
    };
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut err = |field: &str, msg: &str| {
        errors
            .entry(field.to_owned())
            .or_default()
            .push(msg.to_owned())
    };

    let ticket_type = match fixed_type {
        Some(t) => Some(t),
        None => match input.get("ticket_type") {
            None | Some(Value::Null) => {
                err("ticket_type", "The ticket type field is required.");
                None
            }
            Some(v) => {
                let t = v.as_str().and_then(TicketType::from_name);
                if t.is_none() {
                    err("ticket_type", "The selected ticket type is invalid.");
                }
                t
            }
        },
    };

    let mut info: Option<Map<String, Value>> = None;
    match input.get("ticket_info") {
        None | Some(Value::Null) => err("ticket_info", "The ticket info field is required."),
        Some(Value::Object(m)) => {
            // WeChat's full payload {"card":{"card_type":"DISCOUNT","discount":{…}}} is unwrapped
            let inner = m
                .get("card")
                .and_then(Value::as_object)
                .and_then(|card| {
                    let key = card
                        .get("card_type")
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .or_else(|| ticket_type.map(|t| t.wechat_key().to_owned()))?;
                    card.get(&key).and_then(Value::as_object).cloned()
                })
                .unwrap_or_else(|| m.clone());
            info = Some(inner);
        }
        Some(_) => err("ticket_info", "The ticket info must be an array."),
    }
    if let Some(info) = &info {
        match info.get("base_info") {
            Some(Value::Object(base)) => match base.get("title") {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                None | Some(Value::Null) => err(
                    "ticket_info.base_info.title",
                    "The ticket info.base info.title field is required.",
                ),
                Some(_) => err(
                    "ticket_info.base_info.title",
                    "The ticket info.base info.title must be a non-empty string.",
                ),
            },
            _ => err(
                "ticket_info.base_info",
                "The ticket info.base info field is required.",
            ),
        }
        let int = |k: &str| info.get(k).and_then(Value::as_i64);
        let text_ok = |k: &str| {
            info.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty())
        };
        let checks: Vec<(bool, &str, &str)> = match ticket_type {
            Some(TicketType::Discount) => vec![(
                int("discount").is_none_or(|d| !(1..=99).contains(&d)),
                "ticket_info.discount",
                "The ticket info.discount must be an integer between 1 and 99.",
            )],
            Some(TicketType::Cash) => vec![
                (
                    int("reduce_money").is_none_or(|d| d < 1),
                    "ticket_info.reduce_money",
                    "The ticket info.reduce money must be an integer of at least 1.",
                ),
                (
                    info.get("least_cost").is_some_and(|v| !v.is_null())
                        && int("least_cost").is_none_or(|d| d < 0),
                    "ticket_info.least_cost",
                    "The ticket info.least cost must be an integer of at least 0.",
                ),
            ],
            Some(TicketType::Groupon) => vec![(
                !text_ok("deal_detail"),
                "ticket_info.deal_detail",
                "The ticket info.deal detail field is required.",
            )],
            Some(TicketType::Gift) => vec![(
                !text_ok("gift"),
                "ticket_info.gift",
                "The ticket info.gift field is required.",
            )],
            None => Vec::new(),
        };
        for (failed, field, msg) in checks {
            if failed {
                err(field, msg);
            }
        }
    }

    let sync = match input.get("sync") {
        None | Some(Value::Null) => {
            err("sync", "The sync field is required.");
            None
        }
        Some(v) => {
            let b = laravel_bool(v);
            if b.is_none() {
                err("sync", "The sync field must be true or false.");
            }
            b
        }
    };

    let mut date = |field: &str| match input.get(field) {
        None | Some(Value::Null) => {
            err(
                field,
                &format!("The {} field is required.", field.replace('_', " ")),
            );
            None
        }
        Some(v) => {
            let d = v.as_str().and_then(parse_ymd);
            if d.is_none() {
                err(
                    field,
                    &format!(
                        "The {} does not match the format Y-m-d.",
                        field.replace('_', " ")
                    ),
                );
            }
            d
        }
    };
    let begin = date("begin_at");
    let end = date("end_at");
    if let (Some(b), Some(e)) = (begin, end)
        && e < b
    {
        err(
            "end_at",
            "The end at must be a date after or equal to begin at.",
        );
    }

    match (ticket_type, info, sync, begin, end) {
        (Some(ticket_type), Some(ticket_info), Some(sync), Some(begin), Some(end))
            if errors.is_empty() =>
        {
            Ok(ValidTicket {
                ticket_type,
                ticket_info,
                sync,
                begin,
                end,
            })
        }
        _ => Err(invalid(errors)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ge,
    Le,
    Gt,
    Lt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" => Op::Eq,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            ">" => Op::Gt,
            "<" => Op::Lt,
            _ => return None,
        })
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => ord == Equal,
            Op::Ge => ord != Less,
            Op::Le => ord != Greater,
            Op::Gt => ord == Greater,
            Op::Lt => ord == Less,
        }
    }
}

enum Filter {
    TicketType(TicketType),
    Title(String),
    Status(i64),
    Sync(bool),
    BeginAt(Op, Date),
    EndAt(Op, Date),
    CreatedAt(Op, Date),
}

impl Filter {
    fn matches(&self, t: &Template) -> bool {
        match self {
            Filter::TicketType(tt) => t.ticket_type == *tt,
            Filter::Title(s) => t.title().as_str() == Some(s.as_str()),
            Filter::Status(s) => t.status == *s,
            Filter::Sync(b) => t.sync == *b,
            Filter::BeginAt(op, d) => op.holds(t.begin.cmp(d)),
            Filter::EndAt(op, d) => op.holds(t.end.cmp(d)),
            Filter::CreatedAt(op, d) => op.holds(t.created_day().cmp(d)),
        }
    }
}

fn parse_search(search: &str, params: &HashMap<String, String>) -> Result<Vec<Filter>, String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut filters = Vec::new();
    for segment in search.split(';') {
        if segment.trim().is_empty() {
            continue;
        }
        let Some((field, op)) = segment.split_once(',') else {
            return Err(format!(
                "Malformed search segment \"{segment}\": expected field,operator."
            ));
        };
        let (field, op_text) = (field.trim(), op.trim());
        let Some(op) = Op::parse(op_text) else {
            return Err(format!(
                "Unknown search operator \"{op_text}\" for {field}."
            ));
        };
        let date_field = matches!(field, "begin_at" | "end_at" | "created_at");
        let eq_field = matches!(field, "ticket_type" | "title" | "status" | "sync");
        if !date_field && !eq_field {
            return Err(format!("The field \"{field}\" is not searchable."));
        }
        if eq_field && op != Op::Eq {
            return Err(format!("The field \"{field}\" only supports \"=\"."));
        }
        if seen.contains(&field) {
            return Err(format!(
                "The field \"{field}\" appears more than once in search."
            ));
        }
        seen.push(field);
        let Some(value) = params.get(field).filter(|v| !v.is_empty()) else {
            return Err(format!(
                "The search field \"{field}\" has no value: add {field}=… to the query."
            ));
        };
        let bad_value = || format!("Invalid value \"{value}\" for search field \"{field}\".");
        let filter = match field {
            "ticket_type" => {
                Filter::TicketType(TicketType::from_name(value).ok_or_else(bad_value)?)
            }
            "title" => Filter::Title(value.clone()),
            "status" => Filter::Status(value.parse().map_err(|_| bad_value())?),
            "sync" => Filter::Sync(match value.as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => return Err(bad_value()),
            }),
            _ => {
                let d = parse_ymd(value).ok_or_else(bad_value)?;
                match field {
                    "begin_at" => Filter::BeginAt(op, d),
                    "end_at" => Filter::EndAt(op, d),
                    _ => Filter::CreatedAt(op, d),
                }
            }
        };
        filters.push(filter);
    }
    Ok(filters)
}

pub(crate) struct WxcardSim {
    state: Arc<WxState>,
}

enum Route {
    Token,
    Create(TicketType),
    List,
    Update(String),
}

fn route(path: &str) -> Option<(Route, Method)> {
    if path == "/auth/token" {
        return Some((Route::Token, Method::POST));
    }
    if path == "/tickets" {
        return Some((Route::List, Method::GET));
    }
    if let Some(id) = path.strip_prefix("/ticket/")
        && !id.is_empty()
        && !id.contains('/')
    {
        return Some((Route::Update(id.to_owned()), Method::PUT));
    }
    TicketType::ALL
        .into_iter()
        .find(|t| t.path() == path)
        .map(|t| (Route::Create(t), Method::POST))
}

impl WxcardSim {
    pub fn new(state: Arc<WxState>) -> WxcardSim {
        WxcardSim { state }
    }

    fn token(&self, req: &SimRequest) -> SimReply {
        self.state.token_requests.fetch_add(1, Ordering::SeqCst);
        let input = match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let mut errors = BTreeMap::new();
        for field in ["app_id", "app_secret"] {
            if !input
                .get(field)
                .is_some_and(|v| v.is_string() || v.is_number())
            {
                errors.insert(
                    field.to_owned(),
                    vec![format!(
                        "The {} field is required.",
                        field.replace('_', " ")
                    )],
                );
            }
        }
        if !errors.is_empty() {
            return invalid(errors);
        }
        let text = |k: &str| match input.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let app_ok = text("app_id") == WXCARD_APP_ID;
        let secret_ok = crate::crypto::constant_time_eq(
            text("app_secret").as_bytes(),
            WXCARD_APP_SECRET.as_bytes(),
        );
        if !(app_ok && secret_ok) {
            return unauthenticated();
        }
        let (token, ttl) = self.state.issue_token();
        SimReply::json(
            200,
            &json!({"data": {"access_token": token, "expires_in": ttl.as_secs()}}),
        )
    }

    fn authorized(&self, req: &SimRequest) -> bool {
        req.headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .is_some_and(|t| !t.is_empty() && self.state.token_valid(t))
    }

    fn create(&self, t: TicketType, req: &SimRequest) -> SimReply {
        let v = match validate(&req.body, Some(t)) {
            Ok(v) => v,
            Err(reply) => return reply,
        };
        let mut d = self.state.lock();
        let id = d.next_id;
        d.next_id += 1;
        let template = Template {
            id,
            ticket_type: v.ticket_type,
            ticket_info: v.ticket_info,
            sync: v.sync,
            status: 0,
            begin: v.begin,
            end: v.end,
            created_at: Timestamp::now(),
            updated_at: None,
        };
        let answer = template.stored_json();
        d.templates.insert(id, template);
        SimReply::json(201, &json!({"data": answer}))
    }

    fn update(&self, id: &str, req: &SimRequest) -> SimReply {
        let not_found = || {
            SimReply::json(
                404,
                &json!({"message": format!("No query results for model [App\\Models\\Ticket] {id}")}),
            )
        };
        let Ok(num) = id.parse::<u64>() else {
            return not_found();
        };
        if !self.state.lock().templates.contains_key(&num) {
            return not_found();
        }
        let v = match validate(&req.body, None) {
            Ok(v) => v,
            Err(reply) => return reply,
        };
        let mut d = self.state.lock();
        let Some(template) = d.templates.get_mut(&num) else {
            return not_found();
        };
        template.ticket_type = v.ticket_type;
        template.ticket_info = v.ticket_info;
        template.sync = v.sync;
        template.begin = v.begin;
        template.end = v.end;
        template.updated_at = Some(Timestamp::now());
        SimReply::json(200, &json!({"data": template.stored_json()}))
    }

    fn list(&self, req: &SimRequest) -> SimReply {
        let pairs = req.query_pairs();
        let params: HashMap<String, String> = pairs.iter().cloned().collect();
        let filters = match params.get("search") {
            Some(s) => match parse_search(s, &params) {
                Ok(f) => f,
                Err(msg) => return one_error("search", msg),
            },
            None => Vec::new(),
        };
        let page = match params.get("page").map(|p| p.parse::<u64>()) {
            None => 1,
            Some(Ok(p)) if p >= 1 => p,
            Some(_) => return one_error("page", "The page must be an integer of at least 1."),
        };
        let per_page = match params.get("per_page").map(|p| p.parse::<u64>()) {
            None => 15,
            Some(Ok(p)) if (1..=100).contains(&p) => p,
            Some(_) => {
                return one_error("per_page", "The per page must be between 1 and 100.");
            }
        };
        let d = self.state.lock();
        let matching: Vec<&Template> = d
            .templates
            .values()
            .filter(|t| filters.iter().all(|f| f.matches(t)))
            .collect();
        let total = matching.len() as u64;
        let total_pages = total.div_ceil(per_page).max(1);
        let items: Vec<Value> = matching
            .iter()
            .skip(usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX))
            .take(per_page as usize)
            .map(|t| t.list_json())
            .collect();
        drop(d);
        let link = |p: u64| {
            let mut q: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k != "page")
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        crate::crypto::percent_encode(k),
                        crate::crypto::percent_encode(v)
                    )
                })
                .collect();
            q.push(format!("page={p}"));
            format!("{}/tickets?{}", req.base_url, q.join("&"))
        };
        let mut links = Map::new();
        if page > 1 {
            links.insert("previous".into(), json!(link((page - 1).min(total_pages))));
        }
        if page < total_pages {
            links.insert("next".into(), json!(link(page + 1)));
        }
        let links = if links.is_empty() {
            json!([])
        } else {
            Value::Object(links)
        };
        SimReply::json(
            200,
            &json!({
                "data": items,
                "meta": {"pagination": {
                    "total": total,
                    "count": items.len(),
                    "per_page": per_page,
                    "current_page": page,
                    "total_pages": total_pages,
                    "links": links,
                }},
            }),
        )
    }
}

impl Vendor for WxcardSim {
    fn handle(&self, req: &SimRequest) -> SimReply {
        let Some((route, method)) = route(&req.path) else {
            return SimReply::json(404, &json!({"message": "Not Found"}));
        };
        if req.method != method {
            return SimReply::json(
                405,
                &json!({"message": format!(
                    "The {} method is not supported for this route. Supported methods: {}.",
                    req.method, method
                )}),
            );
        }
        if let Route::Token = route {
            return self.token(req);
        }
        if !self.authorized(req) {
            return unauthenticated();
        }
        match route {
            Route::Token => unauthenticated(),
            Route::Create(t) => self.create(t, req),
            Route::List => self.list(req),
            Route::Update(id) => self.update(&id, req),
        }
    }

    fn business_error(&self) -> SimReply {
        SimReply::json(500, &json!({"message": "Server Error"}))
    }

    fn wrong_types(&self, req: &SimRequest) -> SimReply {
        match route(&req.path) {
            Some((Route::Token, _)) => SimReply::json(
                200,
                &json!({"data": {"access_token": 12345, "expires_in": "7200"}}),
            ),
            Some((Route::List, _)) => {
                SimReply::json(200, &json!({"data": "[]", "meta": {"pagination": "none"}}))
            }
            Some((Route::Create(_), _)) => SimReply::json(
                201,
                &json!({"data": {"id": {"value": 5}, "card_type": 5, "status": "0", "sync": [0]}}),
            ),
            _ => SimReply::json(
                200,
                &json!({"data": {"id": {"value": 1}, "card_type": 5, "status": "0", "sync": [0]}}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parsing() {
        let params: HashMap<String, String> = [
            ("ticket_type", "DISCOUNT"),
            ("begin_at", "2026-01-01"),
            ("title", "x"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(
            parse_search("ticket_type,=;begin_at,>=;", &params)
                .unwrap()
                .len(),
            2
        );
        assert!(parse_search("", &params).unwrap().is_empty());
        for bad in [
            "ticket_type",
            "ticket_type,>=",
            "ticket_type,=;ticket_type,=",
            "color,=",
            "begin_at,=>",
            "end_at,<",
            "ticket_type,=;title,=;status,=",
        ] {
            assert!(parse_search(bad, &params).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_strict() {
        assert!(parse_ymd("2026-12-01").is_some());
        assert!(parse_ymd("2026-12-1").is_none());
        assert!(parse_ymd("2026-02-30").is_none());
        assert!(parse_ymd("20261201").is_none());
    }
}
