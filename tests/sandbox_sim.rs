//! End-to-end tests of the sandbox vendors over real HTTP on loopback. Requests are built by
//! hand with `coupon_gateway::crypto`, exactly as the vendor kit describes the wire protocols.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coupon_gateway::crypto;
use coupon_gateway::sandbox::data::{self, day};
use coupon_gateway::sandbox::{self, Fault, Sandbox, SimHandle};
use http::{HeaderMap, Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    version: http::Version,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    // a fresh client (no pooled connections) per call keeps the fault tests independent
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, BoxError> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into()))?;
    let res = client.request(req).await?;
    let status = res.status().as_u16();
    let version = res.version();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        headers,
        body,
        version,
    })
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, BoxError> {
    send_with(&client(), method, url, headers, body).await
}

async fn post_json(url: &str, body: impl Into<Bytes>) -> Resp {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body,
    )
    .await
    .expect("request failed")
}

// ------------------------------------------------------------------------------------------
// op

fn op_sign(secret: &str, body: &str) -> String {
    let signed = format!(
        "{secret}apiVersion01client{}version2.0{body}{secret}",
        sandbox::OP_CLIENT
    );
    crypto::hex_lower(&crypto::md5(signed.as_bytes()))
}

fn op_url(sim: &SimHandle, path: &str, sign: &str) -> String {
    format!(
        "{}{path}?apiVersion=01&client={}&version=2.0&sign={sign}",
        sim.base_url(),
        sandbox::OP_CLIENT
    )
}

async fn op_call(sim: &SimHandle, path: &str, body: &str) -> Value {
    let url = op_url(sim, path, &op_sign(sandbox::OP_SECRET, body));
    let resp = post_json(&url, body.to_owned()).await;
    assert_eq!(resp.status, 200);
    resp.json()
}

const OP_COUPONS: &str = "/op/v2/getTicketUsersByChatId";
const OP_PACKAGE: &str = "/op/v2/getTicketPackageById";

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|c| c[key].as_str().expect("string id").to_owned())
        .collect()
}

fn op_id(nn: u32) -> String {
    format!("u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f{nn:04}")
}

#[tokio::test]
async fn op_lists_every_status_when_use_status_is_absent() {
    let sb = Sandbox::start().await.unwrap();
    let body = format!(r#"{{"OwnerType":1,"ChatId":"{}"}}"#, data::OP_MEMBER);
    let v = op_call(&sb.op, OP_COUPONS, &body).await;
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "成功");
    assert!(v["page"].is_null());
    assert!(v["foot"].is_object());
    let got = ids(&v["data"], "_id");
    let want: Vec<String> = (1..=11).map(op_id).collect();
    assert_eq!(got, want);
    let statuses: BTreeSet<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["useStatus"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, (1..=6).collect());

    let by_id = |nn: u32| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["_id"] == op_id(nn))
            .unwrap()
            .clone()
    };
    // 01: epoch ms from day -10 00:00 to day +30 23:59:59 (UTC+08:00), 500 fen off
    let c1 = by_id(1);
    assert_eq!(c1["ticketType"], 1);
    assert_eq!(c1["ticketAmount"], 500);
    assert_eq!(
        c1["ticketRule"]["useStartTime"],
        data::cn_millis(day(-10), 0, 0, 0)
    );
    assert_eq!(
        c1["ticketRule"]["useEndTime"],
        data::cn_millis(day(30), 23, 59, 59)
    );
    assert_eq!(c1["ticketRule"]["orderAmount"], 3000);
    assert_eq!(c1["ticketRule"]["maxAmount"], 500);
    assert_eq!(
        c1["ticketRule"]["productKinds"],
        json!([{"id": "aea513510de24ca5aa03193411ef74f9", "name": "咖啡"}])
    );
    assert_eq!(c1["useChannels"][0]["name"], "NewWear微信公共号");
    assert_eq!(c1["createTime"], data::cn_millis(day(-12), 10, 0, 0));
    // 02: discount 8.5 折
    assert_eq!(by_id(2)["ticketAmount"], 8.5);
    assert_eq!(by_id(2)["ticketType"], 2);
    // 04: yyyy-MM-dd strings
    let c4 = by_id(4);
    assert_eq!(c4["ticketRule"]["useStartTime"], data::ymd(day(-7)));
    assert_eq!(c4["ticketRule"]["useEndTime"], data::ymd(day(14)));
    // 05: delayDay only, relying on createTime
    let c5 = by_id(5);
    assert!(c5["ticketRule"]["useStartTime"].is_null());
    assert!(c5["ticketRule"]["useEndTime"].is_null());
    assert_eq!(c5["ticketRule"]["delayDay"], 30);
    assert_eq!(c5["createTime"], data::cn_millis(day(-5), 10, 0, 0));
}

#[tokio::test]
async fn op_matches_the_kit_worked_example_and_filters() {
    let sb = Sandbox::start().await.unwrap();
    let body = r#"{"OwnerType":1,"ChatId":"u00011234567890","UseStatus":2}"#;
    assert_eq!(
        op_sign(sandbox::OP_SECRET, body),
        "6ac64cca456e8f3da7a53a72147ad831"
    );
    let url = op_url(&sb.op, OP_COUPONS, "6ac64cca456e8f3da7a53a72147ad831");
    let v = post_json(&url, body).await.json();
    assert_eq!(v["code"], 200);
    assert_eq!(
        ids(&v["data"], "_id"),
        (1..=6).map(op_id).collect::<Vec<_>>()
    );

    let body = r#"{"OwnerType":1,"ChatId":"u00011234567890","ProductKinds":["打车"]}"#;
    let v = op_call(&sb.op, OP_COUPONS, body).await;
    assert_eq!(
        ids(&v["data"], "_id"),
        [2, 4, 6, 7, 9, 11].map(op_id).to_vec()
    );

    let body = r#"{"OwnerType":1,"ChatId":"u00019876543210"}"#;
    let v = op_call(&sb.op, OP_COUPONS, body).await;
    assert_eq!(ids(&v["data"], "_id"), [12, 13].map(op_id).to_vec());

    let body = r#"{"OwnerType":1,"ChatId":"nobody"}"#;
    let v = op_call(&sb.op, OP_COUPONS, body).await;
    assert_eq!(v["code"], 200);
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn op_gift_packages() {
    let sb = Sandbox::start().await.unwrap();
    let body = r#"{"TicketPackageId":"1bfb390cc3144de3b45c662047693f8e"}"#;
    assert_eq!(
        op_sign(sandbox::OP_SECRET, body),
        "19fbda81ec7c00546ac19ea7c1777818"
    );
    let url = op_url(&sb.op, OP_PACKAGE, "19fbda81ec7c00546ac19ea7c1777818");
    let v = post_json(&url, body).await.json();
    assert_eq!(v["code"], 200);
    let p = &v["data"];
    assert_eq!(p["id"], data::OP_PACKAGE);
    assert_eq!(p["useStatus"], 1);
    assert_eq!(p["sendStatus"], 5);
    assert_eq!(p["useChannels"], json!(["七煌", "微信公众号1"]));
    assert_eq!(
        p["ticketPackageRule"]["receiveStartTime"],
        data::cn_millis(day(-10), 0, 0, 0)
    );
    let tickets = p["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 3);
    assert_eq!(tickets[0]["ticketRule"]["delayDay"], 10);
    assert_eq!(
        tickets[0]["ticketRule"]["productKinds"],
        json!(["打车", "咖啡"])
    );
    assert_eq!(tickets[1]["ticketAmount"], 8.5);

    let dates = format!(r#"{{"TicketPackageId":"{}"}}"#, data::OP_PACKAGE_DATES);
    let v = op_call(&sb.op, OP_PACKAGE, &dates).await;
    assert_eq!(
        v["data"]["ticketPackageRule"]["receiveEndTime"],
        data::ymd(day(27))
    );
    assert_eq!(
        v["data"]["tickets"][0]["ticketRule"]["useStartTime"],
        data::ymd(day(-3))
    );

    let delay = format!(r#"{{"TicketPackageId":"{}"}}"#, data::OP_PACKAGE_DELAY);
    let v = op_call(&sb.op, OP_PACKAGE, &delay).await;
    let rule = &v["data"]["tickets"][0]["ticketRule"];
    assert!(rule["useStartTime"].is_null() && rule["useEndTime"].is_null());
    assert_eq!(rule["delayDay"], 15);

    let expired = format!(r#"{{"TicketPackageId":"{}"}}"#, data::OP_PACKAGE_EXPIRED);
    let v = op_call(&sb.op, OP_PACKAGE, &expired).await;
    assert_eq!(v["data"]["useStatus"], 2);

    let v = op_call(&sb.op, OP_PACKAGE, r#"{"TicketPackageId":"nope"}"#).await;
    assert_eq!(v, json!({"code":404,"message":"礼包不存在","data":null}));
}

#[tokio::test]
async fn op_rejects_bad_signatures_clients_and_bodies() {
    let sb = Sandbox::start().await.unwrap();
    let body = r#"{"OwnerType":1,"ChatId":"u00011234567890","UseStatus":2}"#;
    let signature_error = json!({"code":401,"message":"签名错误","data":null});

    // tampered signature
    let url = op_url(&sb.op, OP_COUPONS, "6ac64cca456e8f3da7a53a72147ad832");
    assert_eq!(post_json(&url, body).await.json(), signature_error);
    // uppercase is not the kit's lowercase hex
    let url = op_url(&sb.op, OP_COUPONS, "6AC64CCA456E8F3DA7A53A72147AD831");
    assert_eq!(post_json(&url, body).await.json(), signature_error);
    // body changed after signing (pretty-printed, as in the seed's test URL)
    let url = op_url(&sb.op, OP_COUPONS, "6ac64cca456e8f3da7a53a72147ad831");
    let pretty =
        "{\n  \"OwnerType\": 1,\n  \"ChatId\": \"u00011234567890\",\n  \"UseStatus\": 2\n}";
    assert_eq!(post_json(&url, pretty).await.json(), signature_error);
    // wrong secret
    let url = op_url(&sb.op, OP_COUPONS, &op_sign("other-secret", body));
    assert_eq!(post_json(&url, body).await.json(), signature_error);

    // unknown client
    let url = format!(
        "{}{OP_COUPONS}?apiVersion=01&client=deadbeef&version=2.0&sign=x",
        sb.op.base_url()
    );
    assert_eq!(post_json(&url, body).await.json()["code"], 403);
    // missing sign / missing apiVersion
    let url = format!(
        "{}{OP_COUPONS}?apiVersion=01&client={}&version=2.0",
        sb.op.base_url(),
        sandbox::OP_CLIENT
    );
    assert_eq!(post_json(&url, body).await.json()["code"], 400);
    let url = format!(
        "{}{OP_COUPONS}?client={}&version=2.0&sign=x",
        sb.op.base_url(),
        sandbox::OP_CLIENT
    );
    assert_eq!(post_json(&url, body).await.json()["code"], 400);
    // correctly signed but malformed / incomplete bodies
    for bad in ["{not json", r#"{"OwnerType":1}"#, r#"[1,2]"#, ""] {
        let v = op_call(&sb.op, OP_COUPONS, bad).await;
        assert_eq!(v["code"], 400, "body {bad:?}");
    }
    // unknown path
    let resp = post_json(&format!("{}/op/v2/nothing", sb.op.base_url()), body).await;
    assert_eq!(resp.status, 404);
}

// ------------------------------------------------------------------------------------------
// hkl

const HKL_PATH: &str = "/htest/openapi/v1/listCpnItemByMember";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn hkl_param(key: &str, plain: &str) -> String {
    crypto::hex_upper(&crypto::des_ecb_encrypt(key.as_bytes(), plain.as_bytes()).unwrap())
}

async fn hkl_call(sim: &SimHandle, channel: &str, ts: i64, param: &str) -> Value {
    let body = json!({"channel": channel, "timestamp": ts.to_string(), "param": param});
    let resp = post_json(&format!("{}{HKL_PATH}", sim.base_url()), body.to_string()).await;
    assert_eq!(resp.status, 200);
    resp.json()
}

const HKL_MEMBER_IDS: [&str; 8] = [
    "K1H93QDM600F0",
    "K1H93QDLQ00E1",
    "K1H93QDLD00D5",
    "K1H93QDO800J7",
    "K1H93QDMO00G0",
    "K1H93QDNN00I9",
    "K1H93QDOM00K9",
    "K1H93QDN400H6",
];

#[tokio::test]
async fn hkl_lists_by_member_id_and_by_platform_id() {
    let sb = Sandbox::start().await.unwrap();
    // the kit's worked ciphertexts
    let member = "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E";
    assert_eq!(
        hkl_param("hklkey01", r#"{"memberId":"K1H93QDKI00B7"}"#),
        member
    );
    let v = hkl_call(&sb.hkl, "hkl-test", now_ms(), member).await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["msg"], "操作成功");
    assert_eq!(ids(&v["data"]["list"], "id"), HKL_MEMBER_IDS.to_vec());
    let list = v["data"]["list"].as_array().unwrap();
    let first = &list[0];
    assert_eq!(first["begDate"], data::ymd(day(-10)));
    assert_eq!(first["endDate"], data::ymd(day(30)));
    assert_eq!(first["cpnType"], "0");
    assert_eq!(first["mmbid"], data::HKL_MEMBER);
    assert_eq!(first["openid"], data::HKL_OPENID);
    assert_eq!(first["status"], 0);
    assert!(
        first["picUrl"]
            .as_str()
            .unwrap()
            .starts_with("/upload_img/")
    );
    assert!(list[3]["picUrl"].as_str().unwrap().starts_with("https://"));
    assert_eq!(list[4]["timeLimit"], "11:00-14:00");
    assert_eq!(list[4]["weekLimit"], "1,2,3,4,5");
    let statuses: BTreeSet<i64> = list.iter().map(|c| c["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [0, 1, 2].into());

    let platform = "CEBBFCDA865572A56EBBD741BF78FFA3E6FBC4C24F0BB5816D774F9001B203D566238237BEF024ECA1FC0DDE5ADF81D4";
    let v = hkl_call(&sb.hkl, "hkl-test", now_ms(), platform).await;
    assert_eq!(ids(&v["data"]["list"], "id"), HKL_MEMBER_IDS.to_vec());

    let p = hkl_param("hklkey01", r#"{"memberId":"K1H93QDKI00C8"}"#);
    let v = hkl_call(&sb.hkl, "hkl-test", now_ms(), &p).await;
    assert_eq!(
        ids(&v["data"]["list"], "id"),
        ["K1H93QDP100L1", "K1H93QDP200L2"]
    );

    let p = hkl_param("hklkey01", r#"{"memberId":"NOBODY"}"#);
    let v = hkl_call(&sb.hkl, "hkl-test", now_ms(), &p).await;
    assert_eq!(v, json!({"msg":"操作成功","code":0,"data":{"list":[]}}));
}

#[tokio::test]
async fn hkl_rejects_stale_timestamps_wrong_keys_and_bad_input() {
    let sb = Sandbox::start().await.unwrap();
    let good = hkl_param("hklkey01", r#"{"memberId":"K1H93QDKI00B7"}"#);
    let expired = json!({"code":1002,"msg":"时间戳过期"});
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms() - 301_000, &good).await,
        expired
    );
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms() + 301_000, &good).await,
        expired
    );
    // within the window is fine
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms() - 200_000, &good).await["code"],
        0
    );

    let undecryptable = json!({"code":1001,"msg":"参数解密失败"});
    let wrong_key = hkl_param("hklkey02", r#"{"memberId":"K1H93QDKI00B7"}"#);
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms(), &wrong_key).await,
        undecryptable
    );
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms(), "not-hex").await,
        undecryptable
    );
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms(), "00112233").await,
        undecryptable
    );

    assert_eq!(
        hkl_call(&sb.hkl, "other-channel", now_ms(), &good).await["code"],
        1003
    );
    let neither = hkl_param("hklkey01", r#"{"memberId":"","other":1}"#);
    assert_eq!(
        hkl_call(&sb.hkl, "hkl-test", now_ms(), &neither).await["code"],
        1004
    );

    let url = format!("{}{HKL_PATH}", sb.hkl.base_url());
    for bad in [
        "not json".to_owned(),
        json!({"channel":"hkl-test","param":good}).to_string(),
        json!({"channel":"hkl-test","timestamp":"soon","param":good}).to_string(),
        String::new(),
    ] {
        assert_eq!(
            post_json(&url, bad.clone()).await.json()["code"],
            1000,
            "{bad}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// zvcms

const ZV_PATH: &str = "/v3/crm/coupon/getCustomerCoupons";

fn now_s() -> i64 {
    now_ms() / 1000
}

fn zv_token(secret: &str, ts: &str, nonce: &str) -> String {
    let msg = format!(
        "grantCode={}&nonce={nonce}&openId={}&timestamp={ts}",
        sandbox::ZVCMS_GRANT_CODE,
        sandbox::ZVCMS_OPEN_ID
    );
    crypto::percent_encode(&crypto::base64(&crypto::hmac_sha1(
        secret.as_bytes(),
        msg.as_bytes(),
    )))
}

fn fresh_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // unique per test process, positive
    (now_ms() as u64 % 1_000_000_000 * 1000 + NEXT.fetch_add(1, Ordering::SeqCst)).to_string()
}

fn zv_body(params: Value, ts: i64, nonce: &str, secret: &str) -> String {
    let ts = ts.to_string();
    json!({
        "openId": sandbox::ZVCMS_OPEN_ID,
        "grantCode": sandbox::ZVCMS_GRANT_CODE,
        "token": zv_token(secret, &ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "params": params,
    })
    .to_string()
}

/// zvcms's answer to a request stamped `offset` seconds from now, asked within one second of
/// the wall clock. The sandbox reads its own clock: had a second ticked over between the
/// stamp and its reading, a timestamp 301 s ahead would arrive 300 s ahead, inside the
/// window (CI saw it). Asked again with a fresh stamp until one request stays in its second.
async fn zv_stamped(sim: &SimHandle, params: &Value, offset: i64) -> Value {
    for _ in 0..10 {
        let stamped = now_s();
        let body = zv_body(
            params.clone(),
            stamped + offset,
            &fresh_nonce(),
            sandbox::ZVCMS_SECRET,
        );
        let v = zv_raw(sim, body).await;
        if now_s() == stamped {
            return v;
        }
    }
    panic!("ten zvcms requests in a row straddled a second");
}

async fn zv_raw(sim: &SimHandle, body: String) -> Value {
    let resp = post_json(&format!("{}{ZV_PATH}", sim.base_url()), body).await;
    assert_eq!(resp.status, 200);
    resp.json()
}

async fn zv_call(sim: &SimHandle, params: Value) -> Value {
    let body = zv_body(params, now_s(), &fresh_nonce(), sandbox::ZVCMS_SECRET);
    zv_raw(sim, body).await
}

#[tokio::test]
async fn zvcms_array_object_and_20004() {
    let sb = Sandbox::start().await.unwrap();
    let v = zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_MEMBER})).await;
    assert_eq!(v["status"], json!(true));
    assert_eq!(v["code"], "0");
    let cards = ids(&v["data"], "cardId");
    let want: Vec<String> = (65..=72).map(|n| format!("3909134454982000{n}")).collect();
    assert_eq!(cards, want);
    let list = v["data"].as_array().unwrap();
    let types: BTreeSet<String> = list
        .iter()
        .map(|c| c["couponType"].to_string().replace('"', ""))
        .collect();
    assert_eq!(
        types,
        ["0", "2", "3", "4", "5", "6", "7", "8"]
            .map(String::from)
            .into()
    );
    assert_eq!(list[0]["useStatus"], "0");
    assert_eq!(list[1]["useStatus"], 0);
    assert_eq!(
        list[0]["beginAt"],
        format!("{} 00:00:00", data::ymd(day(-10)))
    );
    assert_eq!(list[0]["endAt"], format!("{} 23:59:59", data::ymd(day(30))));

    // useStatus filter, as a string and as a number: still an array for this customer
    let v = zv_call(
        &sb.zvcms,
        json!({"customerId": data::ZVCMS_MEMBER, "useStatus": "0"}),
    )
    .await;
    assert_eq!(
        ids(&v["data"], "cardId"),
        [
            "390913445498200065",
            "390913445498200066",
            "390913445498200067",
            "390913445498200072"
        ]
    );
    let v = zv_call(
        &sb.zvcms,
        json!({"customerId": data::ZVCMS_MEMBER, "useStatus": 2}),
    )
    .await;
    assert!(v["data"].is_array());
    assert_eq!(ids(&v["data"], "cardId"), ["390913445498200069"]);
    // empty useStatus means no filter
    let v = zv_call(
        &sb.zvcms,
        json!({"customerId": data::ZVCMS_MEMBER, "useStatus": ""}),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 8);

    // cardId: a single object
    let v = zv_call(
        &sb.zvcms,
        json!({"customerId": data::ZVCMS_MEMBER, "useStatus": "", "cardId": "390913445498200068"}),
    )
    .await;
    assert!(v["data"].is_object());
    assert_eq!(v["data"]["cardId"], "390913445498200068");
    assert_eq!(v["data"]["useStatus"], "1");

    // the single-coupon customer gets an object and a string status
    let v = zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_SINGLE})).await;
    assert_eq!(v["status"], json!("true"));
    assert!(v["data"].is_object());
    assert_eq!(v["data"]["cardId"], "401588390180519937");

    let none = json!({"status":true,"code":"20004","message":"查询的信息不存在"});
    assert_eq!(
        zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_NONE})).await,
        none
    );
    assert_eq!(zv_call(&sb.zvcms, json!({"customerId": "1"})).await, none);
    assert_eq!(
        zv_call(
            &sb.zvcms,
            json!({"customerId": data::ZVCMS_MEMBER, "useStatus": 3})
        )
        .await,
        none
    );
    assert_eq!(
        zv_call(
            &sb.zvcms,
            json!({"customerId": data::ZVCMS_MEMBER, "cardId": "999"})
        )
        .await,
        none
    );
}

#[tokio::test]
async fn zvcms_rejects_bad_tokens_stale_timestamps_and_replays() {
    let sb = Sandbox::start().await.unwrap();
    let params = json!({"customerId": data::ZVCMS_MEMBER});
    let bad_sign = json!({"status":false,"code":"40001","message":"签名错误"});

    // wrong secret
    let body = zv_body(params.clone(), now_s(), &fresh_nonce(), "wrong-secret");
    assert_eq!(zv_raw(&sb.zvcms, body).await, bad_sign);
    // tampered token (one character changed)
    let nonce = fresh_nonce();
    let mut body: Value = serde_json::from_str(&zv_body(
        params.clone(),
        now_s(),
        &nonce,
        sandbox::ZVCMS_SECRET,
    ))
    .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let first = if token.starts_with('A') { "B" } else { "A" };
    body["token"] = json!(format!("{first}{}", &token[1..]));
    assert_eq!(zv_raw(&sb.zvcms, body.to_string()).await, bad_sign);
    // a request whose token failed did not use up its nonce
    let body = zv_body(params.clone(), now_s(), &nonce, sandbox::ZVCMS_SECRET);
    assert_eq!(zv_raw(&sb.zvcms, body).await["code"], "0");
    // replayed nonce, even with a fresh timestamp and token
    let body = zv_body(params.clone(), now_s() + 1, &nonce, sandbox::ZVCMS_SECRET);
    assert_eq!(
        zv_raw(&sb.zvcms, body).await,
        json!({"status":false,"code":"40003","message":"nonce重复"})
    );

    // stale timestamps
    for offset in [-301, 301] {
        let v = zv_stamped(&sb.zvcms, &params, offset).await;
        assert_eq!(v["code"], "40002");
        assert_eq!(v["status"], false);
    }

    // unknown openId / grantCode
    let mut body: Value = serde_json::from_str(&zv_body(
        params.clone(),
        now_s(),
        &fresh_nonce(),
        sandbox::ZVCMS_SECRET,
    ))
    .unwrap();
    body["openId"] = json!("someone-else");
    assert_eq!(zv_raw(&sb.zvcms, body.to_string()).await["code"], "40005");
    let mut body: Value = serde_json::from_str(&zv_body(
        params.clone(),
        now_s(),
        &fresh_nonce(),
        sandbox::ZVCMS_SECRET,
    ))
    .unwrap();
    body["grantCode"] = json!("0000000000");
    assert_eq!(zv_raw(&sb.zvcms, body.to_string()).await["code"], "40005");

    // malformed bodies
    for bad in ["{", "[]", r#"{"openId":"x"}"#, ""] {
        assert_eq!(
            zv_raw(&sb.zvcms, bad.to_owned()).await["code"],
            "40000",
            "{bad}"
        );
    }
    let mut no_params: Value = serde_json::from_str(&zv_body(
        params.clone(),
        now_s(),
        &fresh_nonce(),
        sandbox::ZVCMS_SECRET,
    ))
    .unwrap();
    no_params.as_object_mut().unwrap().remove("params");
    assert_eq!(
        zv_raw(&sb.zvcms, no_params.to_string()).await["code"],
        "40000"
    );

    // timestamp and nonce as JSON numbers are accepted (signed as their decimal text)
    let ts = now_s();
    let nonce = fresh_nonce();
    let body = json!({
        "openId": sandbox::ZVCMS_OPEN_ID,
        "grantCode": sandbox::ZVCMS_GRANT_CODE,
        "token": zv_token(sandbox::ZVCMS_SECRET, &ts.to_string(), &nonce),
        "timestamp": ts,
        "nonce": nonce.parse::<u64>().unwrap(),
        "params": params,
    });
    assert_eq!(zv_raw(&sb.zvcms, body.to_string()).await["code"], "0");
}

// ------------------------------------------------------------------------------------------
// faults (on the vendors whose normal answers are deterministic enough to compare)

fn hkl_member_body() -> String {
    json!({
        "channel": "hkl-test",
        "timestamp": now_ms().to_string(),
        "param": hkl_param("hklkey01", r#"{"memberId":"K1H93QDKI00B7"}"#),
    })
    .to_string()
}

fn hkl_url(sb: &Sandbox) -> String {
    format!("{}{HKL_PATH}", sb.hkl.base_url())
}

#[tokio::test]
async fn fault_refuse_then_clear_rebinds_the_same_port() {
    let sb = Sandbox::start().await.unwrap();
    let addr = sb.hkl.addr();
    // an open keep-alive connection is dropped too
    let pooled = client();
    let ok = send_with(&pooled, Method::POST, &hkl_url(&sb), &[], hkl_member_body())
        .await
        .unwrap();
    assert_eq!(ok.json()["code"], 0);

    sb.hkl.set_fault(Fault::RefuseConnections);
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        send(Method::POST, &hkl_url(&sb), &[], hkl_member_body())
            .await
            .is_err()
    );
    assert!(
        send_with(&pooled, Method::POST, &hkl_url(&sb), &[], hkl_member_body())
            .await
            .is_err()
    );

    sb.hkl.clear_fault();
    assert_eq!(sb.hkl.addr(), addr);
    let v = post_json(&hkl_url(&sb), hkl_member_body()).await.json();
    assert_eq!(v["code"], 0);
    // and again
    sb.hkl.set_fault(Fault::RefuseConnections);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    sb.hkl.set_fault(Fault::Status(503));
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.status,
        503
    );
    // the other simulators were never affected
    assert_eq!(
        zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_SINGLE})).await["code"],
        "0"
    );
}

#[tokio::test]
async fn fault_delay_status_html_and_raw() {
    let sb = Sandbox::start().await.unwrap();
    sb.hkl.set_fault(Fault::Delay(Duration::from_millis(400)));
    let t = Instant::now();
    let v = post_json(&hkl_url(&sb), hkl_member_body()).await.json();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(v["data"]["list"].as_array().unwrap().len(), 8);

    sb.hkl.set_fault(Fault::Status(500));
    let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
    assert_eq!(r.status, 500);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    sb.hkl.set_fault(Fault::Html);
    let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&r.body).contains("<html>"));

    sb.hkl.set_fault(Fault::Raw {
        status: 418,
        content_type: "text/x-teapot".into(),
        body: Bytes::from_static(b"short and stout"),
    });
    let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/x-teapot");
    assert_eq!(&r.body[..], b"short and stout");

    sb.hkl.clear_fault();
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );
}

#[tokio::test]
async fn fault_business_error_is_each_vendors_own_envelope() {
    let sb = Sandbox::start().await.unwrap();
    for (_, sim) in sb.vendors() {
        sim.set_fault(Fault::BusinessError);
    }
    let body = r#"{"OwnerType":1,"ChatId":"u00011234567890"}"#;
    let v = op_call(&sb.op, OP_COUPONS, body).await;
    assert_eq!(v["code"], 500);
    assert_eq!(v["message"], "系统异常");
    let v = post_json(&hkl_url(&sb), hkl_member_body()).await.json();
    assert_eq!(v["code"], 9999);
    let v = zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_MEMBER})).await;
    assert_eq!(v["status"], false);
    assert_eq!(v["code"], "50000");
    let r = post_json(&format!("{}/auth/token", sb.wxcard.base_url()), "{}").await;
    assert_eq!(r.status, 500);
    assert!(r.json()["message"].is_string());
}

#[tokio::test]
async fn fault_truncated_reset_and_trickle_bodies() {
    let sb = Sandbox::start().await.unwrap();
    let normal = post_json(&hkl_url(&sb), hkl_member_body()).await;

    sb.hkl.set_fault(Fault::TruncatedJson);
    let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers[header::CONTENT_LENGTH].to_str().unwrap(),
        r.body.len().to_string()
    );
    assert!(!r.body.is_empty() && r.body.len() < normal.body.len());
    assert!(normal.body.starts_with(&r.body));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    sb.hkl.set_fault(Fault::ResetMidBody);
    let err = send(Method::POST, &hkl_url(&sb), &[], hkl_member_body()).await;
    assert!(err.is_err(), "reading a reset body must fail");

    // trickle: the same answer, in many small chunks, slowly
    sb.hkl
        .set_fault(Fault::TrickleBody(Duration::from_millis(20)));
    let p = hkl_param("hklkey01", r#"{"memberId":"NOBODY"}"#);
    let body = json!({"channel":"hkl-test","timestamp":now_ms().to_string(),"param":p}).to_string();
    let req = Request::post(hkl_url(&sb))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let t = Instant::now();
    let res = client().request(req).await.unwrap();
    let mut incoming = res.into_body();
    let mut frames = 0;
    let mut got = Vec::new();
    while let Some(frame) = incoming.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            got.extend_from_slice(&data);
        }
    }
    let want = json!({"msg":"操作成功","code":0,"data":{"list":[]}});
    assert_eq!(serde_json::from_slice::<Value>(&got).unwrap(), want);
    let chunks = got.len().div_ceil(7);
    assert!(frames >= 2, "only {frames} frames");
    assert!(
        t.elapsed() >= Duration::from_millis(20 * (chunks as u64 - 1)),
        "{:?} for {chunks} chunks",
        t.elapsed()
    );
}

#[tokio::test]
async fn fault_huge_deep_and_wrong_types() {
    let sb = Sandbox::start().await.unwrap();
    let size = 10 * 1024 * 1024;
    sb.zvcms.set_fault(Fault::HugeBody(size));
    let r = post_json(&format!("{}{ZV_PATH}", sb.zvcms.base_url()), "{}").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get(header::CONTENT_LENGTH).is_none());
    assert!(
        r.body.len() >= size && r.body.len() < size + 128 * 1024,
        "{}",
        r.body.len()
    );
    assert!(r.json()["data"].is_array());

    sb.zvcms.set_fault(Fault::DeepNesting(5000));
    let r = post_json(&format!("{}{ZV_PATH}", sb.zvcms.base_url()), "{}").await;
    assert_eq!(r.body.len(), 10_000);
    assert!(r.body.starts_with(b"[[[[") && r.body.ends_with(b"]]]]"));
    assert!(
        serde_json::from_slice::<Value>(&r.body).is_err(),
        "beyond serde's recursion limit"
    );

    sb.zvcms.set_fault(Fault::WrongTypes);
    let v = zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_MEMBER})).await;
    assert_eq!(v["code"], "0");
    assert!(v["data"][0]["cardId"].is_object());
    assert!(v["data"][0]["useStatus"].is_array());

    sb.hkl.set_fault(Fault::WrongTypes);
    let v = post_json(&hkl_url(&sb), hkl_member_body()).await.json();
    assert_eq!(v["code"], 0);
    assert!(v["data"]["list"].is_string());

    sb.op.set_fault(Fault::WrongTypes);
    let v = op_call(&sb.op, OP_COUPONS, r#"{"OwnerType":1,"ChatId":"x"}"#).await;
    assert_eq!(v["code"], 200);
    assert!(v["data"][0]["_id"].is_object());
}

#[tokio::test]
async fn counters_control_route_h2c_and_fixed_ports() {
    let sb = Sandbox::start().await.unwrap();
    sb.hkl.reset_counters();
    post_json(&hkl_url(&sb), hkl_member_body()).await;
    post_json(&hkl_url(&sb), "garbage").await; // rejected, still counted
    post_json(&format!("{}/elsewhere", sb.hkl.base_url()), "").await;
    assert_eq!(sb.hkl.requests(), 3);
    assert_eq!(sb.op.requests(), 0);
    sb.hkl.reset_counters();
    assert_eq!(sb.hkl.requests(), 0);

    // control route
    let control = format!("{}/__sandbox/fault", sb.hkl.base_url());
    let r = post_json(&control, r#"{"fault":"status","status":502}"#).await;
    assert_eq!(r.json()["ok"], true);
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.status,
        502
    );
    post_json(&control, r#"{"fault":"delay","ms":300}"#).await;
    let t = Instant::now();
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    post_json(&control, r#"{"fault":"none"}"#).await;
    assert!(sb.hkl.fault().is_none());
    assert_eq!(
        post_json(&control, r#"{"fault":"bogus"}"#).await.status,
        400
    );
    let r = post_json(&control, r#"{"fault":"refuse"}"#).await;
    assert_eq!(r.status, 200);
    // it takes effect shortly after the answer: wait for it, not for a fixed time
    tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(sb.hkl.addr()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the control route's refuse took effect");
    sb.hkl.clear_fault();
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );

    // h2c with prior knowledge
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let r = send_with(&h2, Method::POST, &hkl_url(&sb), &[], hkl_member_body())
        .await
        .unwrap();
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.json()["data"]["list"].as_array().unwrap().len(), 8);

    // vendors() order and base URLs
    let names: Vec<&str> = sb.vendors().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["op", "hkl", "zvcms", "wxcard"]);
    for (name, sim) in sb.vendors() {
        assert_eq!(sim.vendor_id(), name);
        assert_eq!(
            sim.base_url(),
            format!("http://127.0.0.1:{}", sim.addr().port())
        );
    }

    // fixed ports
    let port = free_fixed_port();
    let fixed = Sandbox::start_on("127.0.0.1".parse().unwrap(), [0, port, 0, 0])
        .await
        .unwrap();
    assert_eq!(fixed.hkl.addr().port(), port);
    assert_eq!(
        post_json(&hkl_url(&fixed), hkl_member_body()).await.json()["code"],
        0
    );
    // the port is taken now
    assert!(
        Sandbox::start_on("127.0.0.1".parse().unwrap(), [0, port, 0, 0])
            .await
            .is_err()
    );
}

#[test]
fn credentials_use_the_config_names() {
    let creds = sandbox::sandbox_credentials();
    let names: Vec<(&str, &str)> = creds.iter().map(|(v, n, _)| (*v, *n)).collect();
    assert_eq!(
        names,
        [
            ("op", "client"),
            ("op", "secret"),
            ("hkl", "channel"),
            ("hkl", "des_key"),
            ("zvcms", "open_id"),
            ("zvcms", "grant_code"),
            ("zvcms", "secret"),
            ("wxcard", "app_id"),
            ("wxcard", "app_secret"),
        ]
    );
    let value = |v: &str, n: &str| creds.iter().find(|c| c.0 == v && c.1 == n).unwrap().2;
    assert_eq!(value("op", "client"), "70374ddd0f3641368d419b2d93127b8f");
    assert_eq!(value("hkl", "des_key"), "hklkey01");
    assert_eq!(value("zvcms", "grant_code"), "782c281f62");
    assert_eq!(value("wxcard", "app_secret"), "wxcard-sandbox-secret");
}

// ------------------------------------------------------------------------------------------
// wxcard

async fn wx(
    sb: &Sandbox,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        method,
        &format!("{}{path_and_query}", sb.wxcard.base_url()),
        &headers,
        body,
    )
    .await
    .expect("wxcard request failed")
}

async fn wx_token(sb: &Sandbox) -> String {
    let body = json!({"app_id": sandbox::WXCARD_APP_ID, "app_secret": sandbox::WXCARD_APP_SECRET});
    let r = wx(sb, Method::POST, "/auth/token", None, body.to_string()).await;
    assert_eq!(r.status, 200);
    r.json()["data"]["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn list_ids(v: &Value) -> Vec<u64> {
    v["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn wxcard_tokens_issue_expire_and_revoke() {
    let sb = Sandbox::start().await.unwrap();
    let unauthenticated = json!({"message": "Unauthenticated."});

    let bad = json!({"app_id": sandbox::WXCARD_APP_ID, "app_secret": "nope"});
    let r = wx(&sb, Method::POST, "/auth/token", None, bad.to_string()).await;
    assert_eq!(r.status, 401);
    let r = wx(&sb, Method::POST, "/auth/token", None, "{}").await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["app_secret"].is_array());

    let r = wx(
        &sb,
        Method::POST,
        "/auth/token",
        None,
        json!({"app_id": "123456", "app_secret": "wxcard-sandbox-secret"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["data"]["expires_in"], 7200);
    let token = v["data"]["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 40);
    assert_eq!(sb.token_requests(), 3);

    // bearer required
    let r = wx(&sb, Method::GET, "/tickets", None, "").await;
    assert_eq!((r.status, r.json()), (401, unauthenticated.clone()));
    let r = wx(&sb, Method::GET, "/tickets", Some("not-a-token"), "").await;
    assert_eq!(r.status, 401);
    let r = send(
        Method::GET,
        &format!("{}/tickets", sb.wxcard.base_url()),
        &[("authorization", &token)], // no "Bearer "
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&token), "")
            .await
            .status,
        200
    );

    // revoked
    sb.revoke_tokens();
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&token), "")
            .await
            .status,
        401
    );
    let fresh = wx_token(&sb).await;
    assert_ne!(fresh, token);
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&fresh), "")
            .await
            .status,
        200
    );

    // expiry
    sb.set_token_ttl(Duration::from_millis(300));
    let short = wx_token(&sb).await;
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&short), "")
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&short), "")
            .await
            .status,
        401
    );
    // the long-lived token is unaffected
    assert_eq!(
        wx(&sb, Method::GET, "/tickets", Some(&fresh), "")
            .await
            .status,
        200
    );
    assert_eq!(sb.token_requests(), 5);
    sb.wxcard.reset_counters();
    assert_eq!(sb.token_requests(), 0);
    assert_eq!(sb.wxcard.requests(), 0);
}

fn discount_body(title: &str, discount: i64, begin: i64, end: i64) -> String {
    json!({
        "ticket_info": {
            "base_info": {"title": title, "color": "Color020", "brand_name": "海底捞",
                "logo_url": "http://mmbiz.qpic.cn/logo.png", "code_type": "CODE_TYPE_QRCODE",
                "sku": {"quantity": 100}},
            "discount": discount,
        },
        "sync": true,
        "begin_at": data::ymd(day(begin)),
        "end_at": data::ymd(day(end)),
    })
    .to_string()
}

#[tokio::test]
async fn wxcard_create_list_search_page_and_update() {
    let sb = Sandbox::start().await.unwrap();
    let token = wx_token(&sb).await;
    let t = Some(token.as_str());

    // create a discount template
    let r = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("七折券", 30, 1, 31),
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    let d = &v["data"];
    assert_eq!(d["id"], 5);
    assert_eq!(d["card_type"], "discount_card");
    assert_eq!(d["ticket_type"], "DISCOUNT");
    assert_eq!(d["discount_info"]["discount"], 30);
    assert_eq!(d["discount_info"]["base_info"]["title"], "七折券");
    assert_eq!(d["app_id"], "123456");
    assert_eq!(d["status"], 0);
    assert_eq!(d["sync"], 1);
    assert!(d["created_at"].is_null() && d["updated_at"].is_null());

    // a cash template in WeChat's full card payload
    let cash = json!({
        "ticket_info": {"card": {"card_type": "CASH", "cash": {
            "base_info": {"title": "满50减10"}, "least_cost": 5000, "reduce_money": 1000}}},
        "sync": 0,
        "begin_at": data::ymd(day(2)),
        "end_at": data::ymd(day(2)),
    });
    let r = wx(&sb, Method::POST, "/coupon/ticket", t, cash.to_string()).await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(v["data"]["id"], 6);
    assert_eq!(v["data"]["cash_info"]["reduce_money"], 1000);
    assert_eq!(v["data"]["sync"], 0);

    // 422s
    let r = wx(&sb, Method::POST, "/groupon/ticket", t, "{}").await;
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(v["message"], "The given data was invalid.");
    for field in ["ticket_info", "sync", "begin_at", "end_at"] {
        assert!(v["errors"][field].is_array(), "errors.{field} in {v}");
    }
    let r = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("x", 150, 1, 2),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["ticket_info.discount"].is_array());
    let r = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("x", 10, 5, 2),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["end_at"].is_array());
    let r = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("", 10, 1, 2),
    )
    .await;
    assert!(r.json()["errors"]["ticket_info.base_info.title"].is_array());
    let mut bad_date: Value = serde_json::from_str(&discount_body("x", 10, 1, 2)).unwrap();
    bad_date["begin_at"] = json!("2026/12/01");
    let r = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        bad_date.to_string(),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["begin_at"].is_array());
    // nothing was created by the invalid calls
    let v = wx(&sb, Method::GET, "/tickets", t, "").await.json();
    assert_eq!(list_ids(&v), [1, 2, 3, 4, 5, 6]);
    let p = &v["meta"]["pagination"];
    assert_eq!(
        (
            p["total"].as_u64(),
            p["count"].as_u64(),
            p["per_page"].as_u64()
        ),
        (Some(6), Some(6), Some(15))
    );
    assert_eq!(p["total_pages"], 1);
    assert_eq!(p["links"], json!([]));

    // list items: UTC date objects (begin D → D-1 16:00:00 UTC, end E → E 15:59:59 UTC)
    let first = &v["data"][0];
    assert_eq!(first["ticket_type"], "DISCOUNT");
    assert_eq!(first["title"], "海底捞8折券");
    assert_eq!(
        first["begin_at"],
        json!({"date": format!("{} 16:00:00.000000", data::ymd(day(-31))),
            "timezone_type": 3, "timezone": "UTC"})
    );
    assert_eq!(
        first["end_at"]["date"],
        format!("{} 15:59:59.000000", data::ymd(day(60)))
    );
    assert_eq!(
        first["created_at"]["date"],
        format!("{} 10:10:10.000000", data::ymd(day(-31)))
    );
    let mine = &v["data"][4];
    assert_eq!(mine["title"], "七折券");
    assert_eq!(
        mine["begin_at"]["date"],
        format!("{} 16:00:00.000000", data::ymd(day(0)))
    );

    // search
    // `<` and `>` are not allowed raw in a URI: percent-encode them as a client would
    let q = |s: &str| format!("/tickets?{}", s.replace('>', "%3E").replace('<', "%3C"));
    let v = wx(
        &sb,
        Method::GET,
        &q("ticket_type=DISCOUNT&search=ticket_type,=;"),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [1, 5]);
    let today = data::ymd(day(0));
    let v = wx(
        &sb,
        Method::GET,
        &q(&format!("begin_at={today}&search=begin_at,>=")),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [3, 5, 6]);
    let v = wx(
        &sb,
        Method::GET,
        &q(&format!("begin_at={today}&search=begin_at,<")),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [1, 2, 4]);
    let v = wx(
        &sb,
        Method::GET,
        &q(&format!(
            "end_at={}&begin_at={today}&search=end_at,=;begin_at,>;",
            data::ymd(day(2))
        )),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [6]);
    let v = wx(
        &sb,
        Method::GET,
        &q(&format!("created_at={today}&search=created_at,=")),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [5, 6]);
    let v = wx(
        &sb,
        Method::GET,
        &q("status=1&sync=1&search=status,=;sync,="),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [4]);
    let v = wx(
        &sb,
        Method::GET,
        &q("title=%E4%B8%83%E6%8A%98%E5%88%B8&search=title,="),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [5]);
    // a stray field parameter without search filters nothing
    let v = wx(&sb, Method::GET, &q("ticket_type=GIFT"), t, "")
        .await
        .json();
    assert_eq!(list_ids(&v).len(), 6);

    // paging
    let v = wx(&sb, Method::GET, &q("per_page=2&page=2"), t, "")
        .await
        .json();
    assert_eq!(list_ids(&v), [3, 4]);
    let p = &v["meta"]["pagination"];
    assert_eq!(p["count"], 2);
    assert_eq!(p["current_page"], 2);
    assert_eq!(p["total_pages"], 3);
    assert!(p["links"]["previous"].as_str().unwrap().contains("page=1"));
    assert!(p["links"]["next"].as_str().unwrap().contains("page=3"));
    let v = wx(&sb, Method::GET, &q("per_page=2&page=9"), t, "")
        .await
        .json();
    assert_eq!(list_ids(&v), Vec::<u64>::new());
    assert_eq!(v["meta"]["pagination"]["count"], 0);

    // malformed paging and search
    for bad in ["per_page=0", "per_page=101", "per_page=x", "page=0"] {
        let r = wx(&sb, Method::GET, &q(bad), t, "").await;
        assert_eq!(r.status, 422, "{bad}");
    }
    for bad in [
        "ticket_type=CASH&search=ticket_type",
        "ticket_type=CASH&search=ticket_type,=;ticket_type,=",
        "status=0&search=status,>",
        "search=ticket_type,=",
        "ticket_type=COUPON&search=ticket_type,=",
        "color=red&search=color,=",
        "begin_at=tomorrow&search=begin_at,>",
        "begin_at=2026-01-01&search=begin_at,=>",
    ] {
        let r = wx(&sb, Method::GET, &q(bad), t, "").await;
        assert_eq!(r.status, 422, "{bad}");
        assert!(r.json()["errors"]["search"].is_array(), "{bad}");
    }

    // update
    let mut gift: Value = serde_json::from_str(&discount_body("改成礼品券", 10, 3, 9)).unwrap();
    gift["ticket_type"] = json!("GIFT");
    gift["ticket_info"]["gift"] = json!("蛋糕一个");
    let r = wx(&sb, Method::PUT, "/ticket/5", t, gift.to_string()).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["data"]["id"], 5);
    assert_eq!(v["data"]["card_type"], "gift_card");
    assert_eq!(v["data"]["gift_info"]["gift"], "蛋糕一个");
    let v = wx(
        &sb,
        Method::GET,
        &q("ticket_type=GIFT&search=ticket_type,="),
        t,
        "",
    )
    .await
    .json();
    assert_eq!(list_ids(&v), [4, 5]);
    assert!(v["data"][1]["updated_at"]["date"].is_string());
    assert_eq!(
        v["data"][1]["end_at"]["date"],
        format!("{} 15:59:59.000000", data::ymd(day(9)))
    );
    assert_eq!(
        wx(&sb, Method::PUT, "/ticket/999", t, gift.to_string())
            .await
            .status,
        404
    );
    assert_eq!(
        wx(&sb, Method::PUT, "/ticket/abc", t, gift.to_string())
            .await
            .status,
        404
    );
    let r = wx(
        &sb,
        Method::PUT,
        "/ticket/5",
        t,
        discount_body("x", 10, 1, 2),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["ticket_type"].is_array());
    assert_eq!(
        wx(&sb, Method::PUT, "/ticket/5", None, gift.to_string())
            .await
            .status,
        401
    );

    // creating is not idempotent
    let a = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("同一张", 10, 1, 2),
    )
    .await
    .json();
    let b = wx(
        &sb,
        Method::POST,
        "/discount/ticket",
        t,
        discount_body("同一张", 10, 1, 2),
    )
    .await
    .json();
    assert_ne!(a["data"]["id"], b["data"]["id"]);

    // routing
    assert_eq!(wx(&sb, Method::GET, "/nowhere", t, "").await.status, 404);
    assert_eq!(
        wx(&sb, Method::GET, "/discount/ticket", t, "").await.status,
        405
    );
}

#[tokio::test]
async fn wxcard_faults() {
    let sb = Sandbox::start().await.unwrap();
    let token = wx_token(&sb).await;
    sb.wxcard.set_fault(Fault::Status(503));
    let body = json!({"app_id": "123456", "app_secret": "wxcard-sandbox-secret"}).to_string();
    assert_eq!(
        wx(&sb, Method::POST, "/auth/token", None, body.clone())
            .await
            .status,
        503
    );
    sb.wxcard.set_fault(Fault::WrongTypes);
    let v = wx(&sb, Method::GET, "/tickets", Some(&token), "")
        .await
        .json();
    assert!(v["data"].is_string());
    sb.wxcard.set_fault(Fault::TruncatedJson);
    let r = wx(&sb, Method::GET, "/tickets", Some(&token), "").await;
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    sb.wxcard.clear_fault();
    let v = wx(&sb, Method::GET, "/tickets", Some(&token), "")
        .await
        .json();
    assert_eq!(list_ids(&v), [1, 2, 3, 4]);
}

#[test]
fn handles_are_send_sync_and_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<Sandbox>();
    assert_send_sync_clone::<SimHandle>();
    assert_send_sync_clone::<Fault>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_releases_the_ports_it_took() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let op_port = free_fixed_port();
    // op starts, hkl cannot bind: the whole start fails and op's port is released again
    let err = Sandbox::start_on("127.0.0.1".parse().unwrap(), [op_port, busy, 0, 0]).await;
    assert!(err.is_err());
    let again = Sandbox::start_on("127.0.0.1".parse().unwrap(), [op_port, 0, 0, 0])
        .await
        .unwrap();
    assert_eq!(again.op.addr().port(), op_port);
    // and faults work on a multi-threaded runtime too
    again.op.set_fault(Fault::RefuseConnections);
    assert!(
        tokio::net::TcpStream::connect(again.op.addr())
            .await
            .is_err()
    );
    again.op.clear_fault();
    let body = r#"{"OwnerType":1,"ChatId":"u00019876543210"}"#;
    assert_eq!(
        op_call(&again.op, OP_COUPONS, body).await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A port that is free now and that no port-0 bind (of this or any parallel test) can take
/// before the sandbox binds it: one below the kernel's ephemeral range, picked at random so
/// that copies of this suite running side by side do not pick the same one.
fn free_fixed_port() -> u16 {
    use rand::RngExt;
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(low..ephemeral_low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_low}");
}

#[tokio::test]
async fn fault_fail_first_fails_that_many_requests_then_answers() {
    let sb = Sandbox::start().await.unwrap();
    sb.hkl.set_fault(Fault::FailFirst {
        times: 2,
        fault: Box::new(Fault::Status(503)),
    });
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.status,
        503
    );
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.status,
        503
    );
    for _ in 0..2 {
        let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
        assert_eq!((r.status, r.json()["code"].clone()), (200, json!(0)));
    }
    // setting it again starts the count again
    sb.hkl.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Html),
    });
    let r = post_json(&hkl_url(&sb), hkl_member_body()).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );
    // and over the control route
    let control = format!("{}/__sandbox/fault", sb.hkl.base_url());
    let r = post_json(&control, r#"{"fault":"fail_first","times":1,"status":502}"#).await;
    assert_eq!(r.json()["ok"], true);
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.status,
        502
    );
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hold_keeps_requests_until_released() {
    let sb = Sandbox::start().await.unwrap();
    sb.hkl.set_fault(Fault::Hold);
    let url = hkl_url(&sb);
    let ask = || {
        let url = url.clone();
        tokio::spawn(async move { post_json(&url, hkl_member_body()).await })
    };
    let (first, second) = (ask(), ask());
    tokio::time::timeout(Duration::from_secs(10), sb.hkl.wait_held(2))
        .await
        .expect("both requests are held");
    assert_eq!(sb.hkl.held(), 2);
    assert!(!first.is_finished() && !second.is_finished());
    sb.hkl.release(1);
    tokio::time::timeout(Duration::from_secs(10), async {
        while sb.hkl.held() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("one request let go");
    // clearing the fault lets every held request go; both get the normal answer
    sb.hkl.clear_fault();
    for r in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(r.json()["code"], 0);
    }
    assert_eq!(sb.hkl.held(), 0);
    // a release before anyone waits lets the next request straight through
    sb.hkl.set_fault(Fault::Hold);
    sb.hkl.release(1);
    assert_eq!(
        post_json(&hkl_url(&sb), hkl_member_body()).await.json()["code"],
        0
    );
    // the control route holds and releases too
    let control = format!("{}/__sandbox/fault", sb.hkl.base_url());
    assert_eq!(
        post_json(&control, r#"{"fault":"hold"}"#).await.json()["ok"],
        true
    );
    let third = ask();
    tokio::time::timeout(Duration::from_secs(10), sb.hkl.wait_held(1))
        .await
        .expect("held");
    let r = post_json(&control, r#"{"fault":"release","count":1}"#).await;
    assert_eq!(r.json()["released"], 1);
    assert_eq!(third.await.unwrap().json()["code"], 0);
}

#[tokio::test]
async fn fault_stalled_body_sends_its_bytes_and_never_ends() {
    let sb = Sandbox::start().await.unwrap();
    sb.op.set_fault(Fault::StalledBody(300_000));
    let res = client()
        .request(
            Request::post(format!("{}/anything", sb.op.base_url()))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
    let mut body = res.into_body();
    let mut got = Vec::new();
    while got.len() < 300_000 {
        let frame = body.frame().await.expect("more body").unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert!(got.starts_with(br#"{"code":200,"message":"stalled","data":["xxx"#));
    // nothing more comes, and the body does not end (a correct simulator never finishes, so
    // this short wait can only fail a broken one)
    let next = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(next.is_err(), "the body went on or ended");
}

#[tokio::test]
async fn received_keeps_each_request_as_it_arrived() {
    let sb = Sandbox::start().await.unwrap();
    let body = hkl_member_body();
    post_json(&format!("{}?x=1", hkl_url(&sb)), body.clone()).await;
    post_json(&format!("{}/elsewhere", sb.hkl.base_url()), "").await;
    let got = sb.hkl.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", HKL_PATH)
    );
    assert_eq!(got[0].query, "x=1");
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(got[0].headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(got[1].path, "/elsewhere");
    sb.hkl.reset_counters();
    assert!(sb.hkl.received().is_empty());
    for _ in 0..(sandbox::RECEIVED_KEPT + 3) {
        post_json(&format!("{}/x", sb.hkl.base_url()), "").await;
    }
    assert_eq!(sb.hkl.received().len(), sandbox::RECEIVED_KEPT);
}

#[tokio::test]
async fn refusing_connections_keeps_the_port_bound() {
    // a simulator nobody connected to: no lingering connection holds its port
    let sb = Sandbox::start().await.unwrap();
    let addr = sb.zvcms.addr();
    sb.zvcms.set_fault(Fault::RefuseConnections);
    // bound, so a port-0 bind of a parallel test never picks it and a plain bind fails
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    assert!(other.bind(addr).is_err(), "the port was free to take");
    drop(other);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    sb.zvcms.clear_fault();
    assert_eq!(
        zv_call(&sb.zvcms, json!({"customerId": data::ZVCMS_SINGLE})).await["code"],
        "0"
    );
}
