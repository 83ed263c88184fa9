//! op — OP coupon platform API v2 (MD5-signed query, JSON body).
use http::Method;
use jiff::civil::Date;
use serde_json::{Map, Value, json};

use super::data::{self, OpTime};
use super::server::{SimReply, SimRequest, Vendor};
use super::{OP_CLIENT, OP_SECRET};
use crate::crypto;

pub(crate) const COUPONS_PATH: &str = "/op/v2/getTicketUsersByChatId";
pub(crate) const PACKAGE_PATH: &str = "/op/v2/getTicketPackageById";

pub(crate) struct OpSim {
    today: Date,
}

impl OpSim {
    pub fn new(today: Date) -> OpSim {
        OpSim { today }
    }

    fn day(&self, offset: i64) -> Date {
        data::day_from(self.today, offset)
    }

    fn time(&self, t: OpTime, end: bool) -> Value {
        match t {
            OpTime::Millis(n) if end => json!(data::cn_millis(self.day(n), 23, 59, 59)),
            OpTime::Millis(n) => json!(data::cn_millis(self.day(n), 0, 0, 0)),
            OpTime::Date(n) => json!(data::ymd(self.day(n))),
        }
    }

    fn opt_time(&self, t: Option<OpTime>, end: bool) -> Value {
        t.map_or(Value::Null, |t| self.time(t, end))
    }

    fn coupon_json(&self, c: &data::OpCoupon) -> Value {
        let create = data::cn_millis(self.day(c.created), 10, 0, 0);
        let used = c.use_status == 4;
        let kinds: Vec<Value> = c
            .product_kinds
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        let user_id = data::op_user_id(c.chat_id);
        json!({
            "_id": c.id,
            "userTicketCode": c.user_ticket_code,
            "ticketCode": c.ticket_code,
            "ticketName": c.ticket_name,
            "ticketRule": {
                "useStartTime": self.opt_time(c.use_start, false),
                "useEndTime": self.opt_time(c.use_end, true),
                "productKinds": kinds,
                "orderAmount": c.order_amount,
                "maxAmount": c.max_amount,
                "delayDay": c.delay_day,
            },
            "themeId": null,
            "themeName": null,
            "ticketPackageCode": c.ticket_package_code,
            "orderId": if used { json!(format!("O{}", &c.user_ticket_code)) } else { Value::Null },
            "userId": user_id,
            "ownerId": user_id,
            "ownerType": 1,
            "senderId": null,
            "verificationId": if used { json!("v0001a7c3e5f9b1d24e6a8c0b2d4f6e8a0c1") } else { Value::Null },
            "ticketType": c.ticket_type,
            "ticketAmount": amount(c.ticket_amount),
            "useStatus": c.use_status,
            "createCompanyId": "x1111111111",
            "createTime": create,
            "updateTime": create + 3_600_000,
            "sort": 1000,
            "useChannels": channels_objects(),
        })
    }

    fn package_json(&self, p: &data::OpPackage) -> Value {
        let create = data::cn_millis(self.day(p.created), 9, 30, 0);
        let tickets: Vec<Value> = p
            .tickets
            .iter()
            .map(|t| {
                json!({
                    "ticketName": t.ticket_name,
                    "ticketCode": t.ticket_code,
                    "ticketType": t.ticket_type,
                    "useChannels": channel_names(),
                    "count": t.count,
                    "ticketAmount": amount(t.ticket_amount),
                    "themeId": t.theme_id,
                    "themeName": t.ticket_name,
                    "ticketRule": {
                        "useStartTime": self.opt_time(t.use_start, false),
                        "useEndTime": self.opt_time(t.use_end, true),
                        "productKinds": t.product_kinds,
                        "orderAmount": t.order_amount,
                        "maxAmount": t.max_amount,
                        "delayDay": t.delay_day,
                    },
                })
            })
            .collect();
        json!({
            "id": p.id,
            "ticketPackageCode": p.code,
            "ticketPackageName": p.name,
            "ticketPackageAliasCodeType": 2,
            "ticketPackageAlias": p.alias,
            "useCompanyList": null,
            "useChannels": channel_names(),
            "useStatus": p.use_status,
            "isDelete": false,
            "sendStatus": p.send_status,
            "operatorId": null,
            "createUserId": "1234",
            "createCompanyId": "x1111111111",
            "createTime": create,
            "updateTime": create,
            "examinerId": if p.send_status >= 4 { json!("5678") } else { Value::Null },
            "suggestion": null,
            "url": null,
            "remark": null,
            "ticketPackageRule": {
                "receiveStartTime": self.time(p.receive_start, false),
                "receiveEndTime": self.time(p.receive_end, true),
                "totalCountLimit": p.total_count_limit,
                "personalCountLimit": p.personal_count_limit,
                "useChannels": channel_names(),
            },
            "tickets": tickets,
        })
    }

    fn coupons(&self, body: &Map<String, Value>) -> SimReply {
        let owner_type = match body.get("OwnerType") {
            None | Some(Value::Null) => return error(400, "缺少必要参数: OwnerType"),
            Some(v) => match v.as_i64() {
                Some(t @ (1 | 2)) => t,
                _ => return error(400, "参数错误: OwnerType"),
            },
        };
        let chat_id = match body.get("ChatId") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            None | Some(Value::Null) => return error(400, "缺少必要参数: ChatId"),
            Some(_) => return error(400, "参数错误: ChatId"),
        };
        let use_status = match body.get("UseStatus") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(s) => Some(s),
                None => return error(400, "参数错误: UseStatus"),
            },
        };
        let kinds: Vec<&str> = match body.get("ProductKinds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut kinds = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) => kinds.push(s),
                        None => return error(400, "参数错误: ProductKinds"),
                    }
                }
                kinds
            }
            Some(_) => return error(400, "参数错误: ProductKinds"),
        };
        let list: Vec<Value> = data::OP_COUPONS
            .iter()
            .filter(|c| owner_type == 1 && c.chat_id == chat_id)
            .filter(|c| use_status.is_none_or(|s| i64::from(c.use_status) == s))
            .filter(|c| {
                kinds.is_empty()
                    || c.product_kinds
                        .iter()
                        .any(|(id, name)| kinds.iter().any(|k| k == id || k == name))
            })
            .map(|c| self.coupon_json(c))
            .collect();
        success(Value::Array(list))
    }

    fn package(&self, body: &Map<String, Value>) -> SimReply {
        let id = match body.get("TicketPackageId") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            None | Some(Value::Null) => return error(400, "缺少必要参数: TicketPackageId"),
            Some(_) => return error(400, "参数错误: TicketPackageId"),
        };
        match data::OP_PACKAGES.iter().find(|p| p.id == id) {
            Some(p) => success(self.package_json(p)),
            None => error(404, "礼包不存在"),
        }
    }
}

/// `ticketAmount` is a Double: whole values are written without a fraction, like the seed.
fn amount(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn channels_objects() -> Vec<Value> {
    data::OP_CHANNELS
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect()
}

fn channel_names() -> Vec<&'static str> {
    vec!["七煌", "微信公众号1"]
}

fn foot() -> Value {
    let now = jiff::Timestamp::now().to_zoned(data::cn_tz());
    json!({
        "operationTime": now.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        "servicePhone": "400800400",
        "host": "sandbox-op",
    })
}

fn envelope(code: u16, message: &str, data: Value) -> SimReply {
    SimReply::json(
        200,
        &json!({"code": code, "message": message, "data": data, "page": null, "foot": foot()}),
    )
}

fn success(data: Value) -> SimReply {
    envelope(200, "成功", data)
}

/// Business errors are HTTP 200 with the real outcome in `code`.
fn error(code: u16, message: &str) -> SimReply {
    SimReply::json(
        200,
        &json!({"code": code, "message": message, "data": null}),
    )
}

/// The op signature: lowercase hex MD5 of secret + sorted `name value` pairs + body + secret.
pub(crate) fn sign(secret: &str, params: &[(String, String)], body: &[u8]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut signed = Vec::with_capacity(body.len() + 2 * secret.len() + 128);
    signed.extend_from_slice(secret.as_bytes());
    for (k, v) in sorted {
        signed.extend_from_slice(k.as_bytes());
        signed.extend_from_slice(v.as_bytes());
    }
    signed.extend_from_slice(body);
    signed.extend_from_slice(secret.as_bytes());
    crypto::hex_lower(&crypto::md5(&signed))
}

impl Vendor for OpSim {
    fn handle(&self, req: &SimRequest) -> SimReply {
        let path = req.path.as_str();
        if path != COUPONS_PATH && path != PACKAGE_PATH {
            return SimReply::text(404, "Not Found");
        }
        if req.method != Method::POST {
            return SimReply::text(
                405,
                &format!("Request method '{}' not supported", req.method),
            );
        }
        let params = req.query_pairs();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        for name in ["apiVersion", "client", "version", "sign"] {
            if get(name).is_none_or(str::is_empty) {
                return error(400, &format!("缺少必要参数: {name}"));
            }
        }
        if get("apiVersion") != Some("01") || get("version") != Some("2.0") {
            return error(400, "参数错误: apiVersion/version");
        }
        if get("client") != Some(OP_CLIENT) {
            return error(403, "客户端未授权");
        }
        let others: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "sign")
            .cloned()
            .collect();
        let want = sign(OP_SECRET, &others, &req.body);
        let got = get("sign").unwrap_or("");
        if !crypto::constant_time_eq(want.as_bytes(), got.as_bytes()) {
            return error(401, "签名错误");
        }
        let body = match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => map,
            _ => return error(400, "请求参数格式错误"),
        };
        if path == COUPONS_PATH {
            self.coupons(&body)
        } else {
            self.package(&body)
        }
    }

    fn business_error(&self) -> SimReply {
        envelope(500, "系统异常", Value::Null)
    }

    fn wrong_types(&self, req: &SimRequest) -> SimReply {
        let data = if req.path == PACKAGE_PATH {
            json!({
                "id": {"$oid": data::OP_PACKAGE},
                "ticketPackageName": ["新用户礼包"],
                "useStatus": "1",
                "sendStatus": {"value": 5},
                "ticketPackageRule": "none",
                "tickets": {"ticketName": "新用户5元券"},
            })
        } else {
            json!([{
                "_id": {"$oid": "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0001"},
                "ticketName": 12345,
                "ticketRule": "[]",
                "ticketType": "1",
                "ticketAmount": "五元",
                "useStatus": [2],
                "createTime": "yesterday",
                "useChannels": "all",
            }])
        };
        success(data)
    }
}
