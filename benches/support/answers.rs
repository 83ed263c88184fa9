//! Vendor answers shaped like the shipped vendors' (op, hkl, zvcms), and the engine's own
//! compiled pieces to map them: shared by the micro-benchmarks and the cache-weight test.
#![allow(dead_code)]
use std::sync::Arc;

use coupon_gateway::config::load_str;
use coupon_gateway::embedded::ROUTES_YAML;
use coupon_gateway::engine::call::CallOutput;
use coupon_gateway::engine::plan::{Credentials, OperationPlan, Plan};
use coupon_gateway::engine::routes::RouteId;
use serde_json::{Value, json};

pub fn plan() -> Plan {
    let loaded = load_str("routes.yaml", ROUTES_YAML, false).expect("routes.yaml loads");
    Plan::compile(&loaded, Credentials::Optional)
        .expect("routes.yaml compiles")
        .0
}

pub fn list_op<'a>(plan: &'a Plan, vendor: &str) -> &'a Arc<OperationPlan> {
    plan.route(RouteId::CouponsQuery)
        .of(vendor)
        .unwrap_or_else(|| panic!("routes.yaml has no list_coupons for {vendor}"))
}

// ------------------------------------------------------------------ vendor answers

/// Midnight in UTC+08:00, `offset` days from a fixed day, as epoch ms.
pub fn cn_ms(offset: i64) -> i64 {
    1_795_968_000_000 + offset * 86_400_000
}

pub fn cn_date(offset: i64) -> String {
    let d = jiff::civil::date(2026, 12, 1)
        .checked_add(jiff::Span::new().days(offset))
        .expect("in range");
    d.to_string()
}

pub fn op_answer(n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n as i64)
        .map(|i| {
            let discount = i % 3 == 1;
            json!({
                "_id": format!("c0ffee5a4d8b4e2f9a7c3e1b0d6f{i:04}"),
                "userTicketCode": format!("74202651{i:04}"),
                "ticketCode": format!("04687043{i:04}"),
                "ticketName": if discount { "全品类5折券".to_owned() } else { format!("满{}减{}元券", 50 + i, 5 + i) },
                "ticketRule": {
                    "useStartTime": cn_ms(-3 - i % 20),
                    "useEndTime": cn_ms(7 + i % 30) + 86_399_000,
                    "productKinds": [{"id": "pk01", "name": "咖啡"}, {"id": "pk02", "name": "打车"}],
                    "orderAmount": if discount { 0 } else { 5000 + 100 * i },
                    "maxAmount": 3000,
                    "delayDay": null,
                },
                "themeId": null, "themeName": null, "ticketPackageCode": "P20261101",
                "orderId": null, "userId": "u0001", "ownerId": "u0001", "ownerType": 1,
                "senderId": null, "verificationId": null,
                "ticketType": if discount { 2 } else { 1 },
                "ticketAmount": if discount { 5 } else { 500 + 100 * i },
                "useStatus": ([2, 2, 1, 4, 5][(i % 5) as usize]),
                "createCompanyId": "x1111111111",
                "createTime": cn_ms(-3 - i % 20),
                "updateTime": cn_ms(-3 - i % 20) + 3_600_000,
                "sort": 1000,
                "useChannels": [{"id": "ch01", "name": "NewWear微信公共号"}, {"id": "ch02", "name": "找我 微信公众号"}],
            })
        })
        .collect();
    serde_json::to_vec(
        &json!({"code": 200, "message": "成功", "data": items, "page": null, "foot": null}),
    )
    .expect("serializes")
}

pub fn hkl_answer(n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n as i64)
        .map(|i| {
            json!({
                "begDate": cn_date(-5 - i % 20), "cacStatus": 0, "content": "",
                "cpnCode": format!("72807000{i:05}"), "cpnId": "", "cpnName": format!("新会员{}元午餐欢聚券", 20 + i),
                "cpnType": "0", "cpnid": format!("H3UA24SI{i:04}"), "cpnids": [],
                "endDate": cn_date(1 + i % 30), "id": format!("K1H93QDN{i:05}"),
                "mmbid": "K1H93QDKI00B7", "openid": "oEv-It_aoh7mzEinzyPhnR0", "orgName": "", "orgUse": 0,
                "orgcode": "", "picUrl": format!("/upload_img/20170718/170718{i:06}.jpg"), "sellScene": "",
                "status": (["0", "0", "1", "2"][(i % 4) as usize]),
                "timeLimit": if i % 2 == 1 { "11:00-14:00" } else { "" }, "useTime": "",
                "weekLimit": if i % 2 == 1 { "6,7" } else { "" },
            })
        })
        .collect();
    serde_json::to_vec(&json!({"code": 0, "msg": "成功", "data": {"list": items, "total": n}}))
        .expect("serializes")
}

pub fn zvcms_answer(n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n as i64)
        .map(|i| {
            json!({
                "beginAt": format!("{} 00:00:00", cn_date(-2 - i % 20)),
                "cardId": format!("38393309145595{i:04}"), "channel": "zvcms-shop",
                "couponId": format!("90{i:04}"), "couponType": (["0", "2", "3", "6"][(i % 4) as usize]),
                "createdAt": format!("{} 10:00:00", cn_date(-10)), "customerId": "383933091455959041",
                "title": format!("免费停车{}小时券", i + 1), "updatedAt": format!("{} 10:00:00", cn_date(-9)),
                "useStatus": (["0", "0", "1", "6"][(i % 4) as usize]), "templateId": (7000 + i).to_string(),
                "endAt": format!("{} 23:59:59", cn_date(5 + i % 30)),
            })
        })
        .collect();
    serde_json::to_vec(&json!({"status": true, "code": "0", "message": "成功", "data": items}))
        .expect("serializes")
}

/// What the pipeline does with one page of a vendor's answer, after the HTTP exchange:
/// parse what the operation reads, take the items, map each one into a canonical row.
pub fn map_answer(op: &OperationPlan, body: &[u8]) -> CallOutput {
    let doc: Value = match &op.projection {
        Some(p) => p.read(body).expect("JSON"),
        None => serde_json::from_slice(body).expect("JSON"),
    };
    let items = op.response.items.first(&doc).expect("items");
    let items: Vec<&Value> = match items {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let mut out = CallOutput {
        pages: 1,
        bytes: body.len(),
        ..CallOutput::default()
    };
    for item in items {
        match op.mapper.map(item) {
            Ok(row) => out.rows.push(row),
            Err(_) => out.dropped += 1,
        }
    }
    out
}
