//! hkl — Houcaller CRM open API (DES-ECB encrypted `param`, timestamp window).
use http::Method;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::data;
use super::server::{SimReply, SimRequest, Vendor};
use super::{HKL_CHANNEL, HKL_DES_KEY};
use crate::crypto;

pub(crate) const LIST_PATH: &str = "/htest/openapi/v1/listCpnItemByMember";

/// How far (ms) a request timestamp may be from the simulator's clock.
pub(crate) const MAX_SKEW_MS: i64 = 300_000;

pub(crate) struct HklSim {
    today: Date,
}

fn error(code: u16, msg: &str) -> SimReply {
    SimReply::json(200, &json!({"code": code, "msg": msg}))
}

fn non_empty_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl HklSim {
    pub fn new(today: Date) -> HklSim {
        HklSim { today }
    }

    fn coupon_json(&self, c: &data::HklCoupon) -> Value {
        let day = |n| data::day_from(self.today, n);
        let use_time = c
            .used
            .map(|n| data::ymd_hms(day(n), 12, 15, 0))
            .unwrap_or_default();
        json!({
            "begDate": data::ymd(day(c.beg)),
            "cacStatus": c.cac_status,
            "content": "",
            "cpnCode": c.cpn_code,
            "cpnId": "",
            "cpnName": c.cpn_name,
            "cpnType": "0",
            "cpnid": c.cpnid,
            "cpnids": [],
            "endDate": data::ymd(day(c.end)),
            "id": c.id,
            "mmbid": c.mmbid,
            "openid": c.openid,
            "orgName": "",
            "orgUse": 0,
            "orgcode": "",
            "picUrl": c.pic_url,
            "sellScene": c.sell_scene,
            "status": c.status,
            "timeLimit": c.time_limit,
            "useTime": use_time,
            "weekLimit": c.week_limit,
        })
    }
}

impl Vendor for HklSim {
    fn handle(&self, req: &SimRequest) -> SimReply {
        if req.path != LIST_PATH {
            return SimReply::json(
                404,
                &json!({"timestamp": jiff::Timestamp::now().as_millisecond(), "status": 404,
                    "error": "Not Found", "path": req.path}),
            );
        }
        if req.method != Method::POST {
            return error(1000, &format!("不支持的请求方法: {}", req.method));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return error(1000, "请求参数格式错误");
        };
        let (Some(channel), Some(param)) = (
            body.get("channel").and_then(Value::as_str),
            body.get("param").and_then(Value::as_str),
        ) else {
            return error(1000, "请求参数格式错误");
        };
        // the kit sends the timestamp as a string; a JSON number is accepted too
        let timestamp = match body.get("timestamp") {
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        let Some(timestamp) = timestamp else {
            return error(1000, "请求参数格式错误");
        };
        if channel != HKL_CHANNEL {
            return error(1003, "渠道不存在");
        }
        let now = jiff::Timestamp::now().as_millisecond();
        if (now - timestamp).abs() > MAX_SKEW_MS {
            return error(1002, "时间戳过期");
        }
        let plain = crypto::des_ecb_decrypt_hex(HKL_DES_KEY.as_bytes(), param.trim()).ok();
        let Some(Value::Object(params)) = plain.and_then(|p| serde_json::from_slice(&p).ok())
        else {
            return error(1001, "参数解密失败");
        };
        let params = Value::Object(params);
        let list: Vec<Value> = if let Some(member) = non_empty_str(&params, "memberId") {
            data::HKL_COUPONS
                .iter()
                .filter(|c| c.mmbid == member)
                .map(|c| self.coupon_json(c))
                .collect()
        } else if let Some(platform) = non_empty_str(&params, "platformId") {
            data::HKL_COUPONS
                .iter()
                .filter(|c| c.openid == platform)
                .map(|c| self.coupon_json(c))
                .collect()
        } else {
            return error(1004, "会员ID和平台ID不可同时为空");
        };
        SimReply::json(
            200,
            &json!({"msg": "操作成功", "code": 0, "data": {"list": list}}),
        )
    }

    fn business_error(&self) -> SimReply {
        error(9999, "系统繁忙，请稍后再试")
    }

    fn wrong_types(&self, _req: &SimRequest) -> SimReply {
        SimReply::json(
            200,
            &json!({"msg": "操作成功", "code": 0, "data": {"list": "K1H93QDM600F0,K1H93QDLQ00E1"}}),
        )
    }
}
