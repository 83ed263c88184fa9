//! zvcms — Zvcms CRM open API v3 (HMAC-SHA1 token, timestamp window, nonce replay store).
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::data::{self, ZvNum};
use super::server::{SimReply, SimRequest, Vendor};
use super::{ZVCMS_GRANT_CODE, ZVCMS_OPEN_ID, ZVCMS_SECRET};
use crate::crypto;

pub(crate) const COUPONS_PATH: &str = "/v3/crm/coupon/getCustomerCoupons";

/// How far (s) a request timestamp may be from the simulator's clock.
pub(crate) const MAX_SKEW_SECS: i64 = 300;
/// How long a nonce is remembered.
pub(crate) const NONCE_WINDOW: Duration = Duration::from_secs(300);
/// At most this many nonces are remembered; the oldest go first.
pub(crate) const NONCE_CAPACITY: usize = 100_000;

/// Nonces of verified requests seen in the last [`NONCE_WINDOW`], bounded by [`NONCE_CAPACITY`].
#[derive(Default)]
pub(crate) struct NonceStore {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl NonceStore {
    /// Records `nonce`; false if it was already seen within the window.
    pub fn check_and_insert(&mut self, nonce: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < NONCE_WINDOW && self.order.len() <= NONCE_CAPACITY {
                break;
            }
            if let Some((at, old)) = self.order.pop_front()
                && self.seen.get(&old) == Some(&at)
            {
                self.seen.remove(&old);
            }
        }
        if let Some(at) = self.seen.get(nonce)
            && now.duration_since(*at) < NONCE_WINDOW
        {
            return false;
        }
        self.seen.insert(nonce.to_owned(), now);
        self.order.push_back((now, nonce.to_owned()));
        if self.order.len() > NONCE_CAPACITY
            && let Some((at, old)) = self.order.pop_front()
            && self.seen.get(&old) == Some(&at)
        {
            self.seen.remove(&old);
        }
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

pub(crate) struct ZvcmsSim {
    today: Date,
    nonces: Mutex<NonceStore>,
}

fn error(code: &str, message: &str) -> SimReply {
    SimReply::json(
        200,
        &json!({"status": false, "code": code, "message": message}),
    )
}

fn not_found() -> SimReply {
    SimReply::json(
        200,
        &json!({"status": true, "code": "20004", "message": "查询的信息不存在"}),
    )
}

fn num(n: ZvNum) -> Value {
    match n {
        ZvNum::Str(v) => json!(v.to_string()),
        ZvNum::Num(v) => json!(v),
    }
}

/// A field the kit sends as a string that may also arrive as a JSON number: its text.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The signed message: the four authentication fields sorted by name.
pub(crate) fn token_message(grant_code: &str, nonce: &str, open_id: &str, ts: &str) -> String {
    format!("grantCode={grant_code}&nonce={nonce}&openId={open_id}&timestamp={ts}")
}

fn token_ok(token: &str, message: &str) -> bool {
    let Some(b64) = crypto::percent_decode(token) else {
        return false;
    };
    let Some(tag) = crypto::base64_decode(&b64) else {
        return false;
    };
    crypto::hmac_sha1_verify(ZVCMS_SECRET.as_bytes(), message.as_bytes(), &tag)
}

impl ZvcmsSim {
    pub fn new(today: Date) -> ZvcmsSim {
        ZvcmsSim {
            today,
            nonces: Mutex::new(NonceStore::default()),
        }
    }

    fn coupon_json(&self, c: &data::ZvCoupon) -> Value {
        let day = |n| data::day_from(self.today, n);
        let created = data::ymd_hms(day(c.begin.min(0) - 1), 17, 10, 28);
        let updated = match c.use_status.value() {
            0 => created.clone(),
            6 => data::ymd_hms(day(c.end + 1), 0, 0, 5),
            _ => data::ymd_hms(day(-1), 15, 20, 0),
        };
        json!({
            "beginAt": data::ymd_hms(day(c.begin), 0, 0, 0),
            "cardId": c.card_id,
            "channel": c.channel,
            "couponId": c.coupon_id,
            "couponType": num(c.coupon_type),
            "createdAt": created,
            "customerId": c.customer_id,
            "title": c.title,
            "updatedAt": updated,
            "useStatus": num(c.use_status),
            "templateId": num(c.template_id),
            "endAt": data::ymd_hms(day(c.end), 23, 59, 59),
            "extra": c.extra,
        })
    }

    fn query(&self, params: &serde_json::Map<String, Value>) -> SimReply {
        let Some(customer) = text_of(params.get("customerId")).filter(|s| !s.is_empty()) else {
            return error("40000", "参数错误: customerId");
        };
        let use_status = match params.get("useStatus") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => return error("40000", "参数错误: useStatus"),
            },
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Some(v),
                None => return error("40000", "参数错误: useStatus"),
            },
            Some(_) => return error("40000", "参数错误: useStatus"),
        };
        let card_id = match params.get("cardId") {
            None | Some(Value::Null) => None,
            v @ Some(Value::String(_) | Value::Number(_)) => text_of(v).filter(|s| !s.is_empty()),
            Some(_) => return error("40000", "参数错误: cardId"),
        };
        let matching: Vec<&data::ZvCoupon> = data::ZV_COUPONS
            .iter()
            .filter(|c| c.customer_id == customer)
            .filter(|c| use_status.is_none_or(|s| c.use_status.value() == s))
            .filter(|c| card_id.as_deref().is_none_or(|id| c.card_id == id))
            .collect();
        if matching.is_empty() {
            return not_found();
        }
        let profile = data::ZV_CUSTOMERS.iter().find(|p| p.id == customer);
        let status = if profile.is_some_and(|p| p.status_as_string) {
            json!("true")
        } else {
            json!(true)
        };
        let as_object = card_id.is_some()
            || (matching.len() == 1 && profile.is_some_and(|p| p.single_as_object));
        let data = if as_object {
            self.coupon_json(matching[0])
        } else {
            Value::Array(matching.iter().map(|c| self.coupon_json(c)).collect())
        };
        SimReply::json(
            200,
            &json!({"status": status, "code": "0", "message": "查询成功", "data": data}),
        )
    }
}

impl Vendor for ZvcmsSim {
    fn handle(&self, req: &SimRequest) -> SimReply {
        if req.path != COUPONS_PATH {
            return SimReply::json(
                404,
                &json!({"status": false, "code": "40400", "message": "接口不存在"}),
            );
        }
        if req.method != Method::POST {
            return error("40000", "请使用POST请求");
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return error("40000", "请求参数格式错误");
        };
        let field = |k: &str| text_of(body.get(k)).filter(|s| !s.is_empty());
        let (Some(open_id), Some(grant_code), Some(token), Some(timestamp), Some(nonce)) = (
            field("openId"),
            field("grantCode"),
            field("token"),
            field("timestamp"),
            field("nonce"),
        ) else {
            return error("40000", "缺少必要参数");
        };
        let Some(Value::Object(params)) = body.get("params") else {
            return error("40000", "缺少必要参数: params");
        };
        let Ok(ts) = timestamp.trim().parse::<i64>() else {
            return error("40000", "参数错误: timestamp");
        };
        if open_id != ZVCMS_OPEN_ID || grant_code != ZVCMS_GRANT_CODE {
            return error("40005", "openId或grantCode无效");
        }
        let now = jiff::Timestamp::now().as_second();
        if (now - ts).abs() > MAX_SKEW_SECS {
            return error("40002", "时间戳已过期");
        }
        let message = token_message(&grant_code, &nonce, &open_id, &timestamp);
        if !token_ok(&token, &message) {
            return error("40001", "签名错误");
        }
        let fresh = self
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check_and_insert(&nonce, Instant::now());
        if !fresh {
            return error("40003", "nonce重复");
        }
        self.query(params)
    }

    fn business_error(&self) -> SimReply {
        error("50000", "系统错误")
    }

    fn wrong_types(&self, _req: &SimRequest) -> SimReply {
        SimReply::json(
            200,
            &json!({"status": true, "code": "0", "message": "查询成功", "data": [{
                "beginAt": 1_700_000_000,
                "cardId": {"id": "390913445498200065"},
                "couponType": {"0": true},
                "customerId": ["383933091455959041"],
                "title": 123,
                "useStatus": [0],
                "templateId": {"id": 951},
                "endAt": false,
            }]}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_store_rejects_replays_and_forgets_after_the_window() {
        let mut store = NonceStore::default();
        let t0 = Instant::now();
        assert!(store.check_and_insert("1", t0));
        assert!(!store.check_and_insert("1", t0 + Duration::from_secs(299)));
        assert!(store.check_and_insert("2", t0 + Duration::from_secs(10)));
        // after the window both are pruned and "1" is fresh again
        let later = t0 + Duration::from_secs(400);
        assert!(store.check_and_insert("1", later));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn nonce_store_is_bounded() {
        let mut store = NonceStore::default();
        let t0 = Instant::now();
        for i in 0..NONCE_CAPACITY + 10 {
            assert!(store.check_and_insert(&i.to_string(), t0));
        }
        assert_eq!(store.len(), NONCE_CAPACITY);
        // the oldest were evicted
        assert!(store.check_and_insert("0", t0));
        assert!(!store.check_and_insert(&(NONCE_CAPACITY + 9).to_string(), t0));
    }

    #[test]
    fn token_matches_the_kit_example() {
        let msg = token_message(
            "782c281f62",
            "658979",
            "6dc05b4ac175cf316d226252b05cf685",
            "1547186244",
        );
        assert!(token_ok("m%2Fz8N8ig7rKR8f8gm%2BcZ%2B5DhwMk%3D", &msg));
        assert!(!token_ok("m%2Fz8N8ig7rKR8f8gm%2BcZ%2B5DhwMk%3E", &msg));
        assert!(!token_ok("%%%", &msg));
    }
}
