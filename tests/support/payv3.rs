//! A strict simulator of a pay-v3-style platform (tests/fixtures/payv3.yaml): a GET with a
//! query string, authorised by `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",
//! nonce_str="…",timestamp="…",serial_no="…",signature="…"` where the signature is RSA-SHA256
//! (PKCS#1 v1.5, base64) over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n` (URL = path and query
//! as sent) under the merchant's key, checked with its public half; a nonce is good once, the
//! timestamp within 5 minutes. The coupon list (`{"data": […], "total_count": n}`) is answered
//! AES-256-GCM encrypted under the APIv3 key in a `resource` member (`AEAD_AES_256_GCM`,
//! base64 `ciphertext` = ciphertext‖tag, `nonce` and `associated_data` as text).
use std::sync::Arc;

use bytes::Bytes;
use coupon_gateway::crypto;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

pub const MCHID: &str = "1900009191";
pub const SERIAL_NO: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
pub const APPID: &str = "wxd678efh567hg6787";
pub const STOCK_ID: &str = "9856888";
/// The APIv3 key (32 characters: its UTF-8 bytes are the AES-256 key).
pub const API_V3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzo3iM4Bq4g";
pub const OPENID: &str = "o4GgauInH_RCEdvrrNGrntXDu6D4";
pub const RESOURCE_NONCE: &str = "fdasflkja484";
pub const RESOURCE_AAD: &str = "coupon";

/// A TEST-ONLY 2048-bit RSA key pair made for these tests (`openssl genpkey`); it signs
/// nothing anywhere else. The private half goes to the gateway as a credential.
pub const TEST_PRIVATE_KEY_PEM: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCLIUp1tHQjgXSx
VyL/UmNtJxrfyyMilUgjk1laqXm32Mz+jULd2T8gypIlJqXxBreAtgWlpxCmjUEu
r0AUuNRpQF8yyY44eDQkCxOhvdU1+bE5ZuILuEA6Y1UJYxQ5EAjn0CJWAcD6AN9L
U0KllbSwYE8NOcZCGr5VeUGuuFSChOfZVhhr6LR05+r0DqZJYRNtak5cnjYbEFfT
WvwUUh8vrOef6JyexCYbkDgqdo1hIyGZhjZaKupwj6gHMd0aTfFpjxPMbCiT2em+
jI2E4QRQLcah0eMSHDRJCIO62AnJ6IsBQhSsPiCaj4Ynl2q6ExOM94KNR2wgeDMn
BB4FhN39AgMBAAECgf8+OiWTf6JyPvRyXQbKK49MwrDCZ5jPXvVk9AKDCknmcJE/
SO8fSotxnyi+dQrDQr3QU5ky/gX0eDkvKDMBEanvaVsq2/tARoMLm+ir7rvt6D/b
7KgtlbskYkkmaaoh24ogJHc3AJHPP5SfnB2y8cJfILQ6thx2dH+suw8llkw2E5K0
WHbNSkqbZVoJ+5byCH+b6q8Hfux5psS5/Dy2keieWulysbWmCMoTFfa+Bvy1HPKm
Nf0vyCsm/DSFKfUQJuRckdtRROqF1ZVc4SdYqNTacx0BshB5QrSF0BtISlErQaFs
i81CbbhetV86vFihH8pY2mIoEtg27VngoqOqWjECgYEAwzW6z7iB/asNDrnsqSfN
/3vw6hdBz+hYAx3uviOPZZfN9H6hjrkF8F/sTyCQYiP0Irhvg4bUYbm6alDbl8m/
ZA4KXMCgorKAIP2HXJ9/7T7IfOVQaINMLE8OlIZ+wWfnkG+yU6jP1hLl+3JkHzOA
wDCzUVgBGbcai56OL/ZoJHkCgYEAtnTWJ/Or0LrnP923gBYe8PhfBnza09FLWXQE
W64eHuam/INqeZFa2vB1/YuYhUOqvFYdGMir0YZrW+I6X6MJnza2iFimHCT7pIpT
aElKVaRUmBZdjBDhhIxhnEQ64IJCQ/JsmBXrirNrhCOhzGLdZ4wD9NHglxPMLh5K
S0phPKUCgYEAvyThY3xbbLQM+Rp87bWYNE58O/vB6X6sj4DDwVK4mtXmST2lnEb3
1cNXdLOCLVbfOxA1wShI1dgy/N9n5l0aFzLYWrITmLwIUkVuQfe8H+aWEhXIgk3u
TISs1ipL+71uNTPp/ZkSyZ9/qpL8DsEzlP0a2M+/ZBqy13vN5pD0sKECgYB1KPM3
dlXW052YuiOR4SJ/M825GcVejJ+o0kHWKSl4SD3kGfLuGzNPMWdipxgKQthI1bcb
aghCo+EegFdhgAy2quhtBxerLOhV0OkcJyvPcJVNj9cEEPbvKUGomXuBHMO2Y93t
ju3QA8Q/dq3302g+jH8h3v8ro+/RkWu9iwaDbQKBgQCahMtG1E/FARzfgk0RiPTK
5z/Z2bBo2YLSFJgCXni8OgZ3ebxgxIhEp3gY0oFXFrj0fXaITJCyRXO0UO3v0z2Z
Uf0OTckeDLHRebWhgd91+H8QPbxp96VeQeP+cE5bc2YVVd6Zm5da0j5VZy1YjZNA
mIL2isHqkm49tUhGCY/k6Q==
-----END PRIVATE KEY-----
";
pub const TEST_PUBLIC_KEY_PEM: &str = r"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAiyFKdbR0I4F0sVci/1Jj
bSca38sjIpVII5NZWql5t9jM/o1C3dk/IMqSJSal8Qa3gLYFpacQpo1BLq9AFLjU
aUBfMsmOOHg0JAsTob3VNfmxOWbiC7hAOmNVCWMUORAI59AiVgHA+gDfS1NCpZW0
sGBPDTnGQhq+VXlBrrhUgoTn2VYYa+i0dOfq9A6mSWETbWpOXJ42GxBX01r8FFIf
L6znn+icnsQmG5A4KnaNYSMhmYY2WirqcI+oBzHdGk3xaY8TzGwok9npvoyNhOEE
UC3GodHjEhw0SQiDutgJyeiLAUIUrD4gmo+GJ5dquhMTjPeCjUdsIHgzJwQeBYTd
/QIDAQAB
-----END PUBLIC KEY-----
";

/// Another TEST-ONLY key: "a wrong secret" (signatures made with it do not verify).
pub const OTHER_TEST_PRIVATE_KEY_PEM: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDyJr7R6SXvFqCa
Ob3lkAK1lElMeITbQWKbE0hHfrOv3PXAYjtQXdNLjXSU1z9DD69HZ2us1fLjlBb7
j3uPpZ2kCcp8Kcrt6M4a8fMfY8esIlaaxPE6ohafL9/e0jZpNRLk7PZvpcUGhWip
ODFKjXv1UcXBa1CzHQq9D2YFEMi36HQ2bzLZH90jVYdRruT0KZjXpgWP0V8NhgW3
kJeSaec7tkiE+M3sGExe58+msm7grnbvcdsX5bKzfg11I8Y2eSsB1vytjziDs+ii
XbBLgg+jFeawWSNkoZRPg1S82krJG4jbnlRCFk/jukQo31dRsYrFc924/c+kWltt
L+i1b/HZAgMBAAECggEAb4NpR9ijF/4nGq7xpPiTTtSJhtZPdHshckHIfOg7zoam
g6CZKRL0PaxYXjzbzMG52dumKfNjBevKQ7HZWJcPyB2cKl7CrZoS5DS83h1AtCQi
FucQIgzH9yoAYigTV5LR7yuy90pzN+QTBS60AF20ko5EUCTgBoQe0F75f+axUIMu
QvT4Ws39CsgBNn/QEOMNzlPnA0H59W8OALJLNuVFs2sxs25EMZY/1/7Cj1AsyZn4
OOPg+jmPvAzFd7JLgH499HvuA/nDveuf/JsSowSh3Hf4AMu/TcKKqfcE3ZWM8xDJ
b8OvM5SdvciQ0k291FLQmcoMIEInI4YBducy010uAwKBgQD6TLLOm6MhyJdAZgrK
G1QQWqg/fAVSAP51FEE4ngfW/YghZcdzHf3GrRRo5BUek9so/a6ZCnIpsI12vTdi
ljStcKNEaXx0Jv26dAPBIqy7iRLWgQsJbaH2iwNZFIR76hdOSEP69DQvM0dwar+7
5V26AioGWcyQcckeeNkXyoOn4wKBgQD3qopzCzBD5nRuIT6kr9i84mh7ftBnoL/G
Arqo9x5kDyE++RcwpA2XcRedltOvMYb2BsxHslafpljT2tns/pJYgHrrkmerM7wb
Jz8zQBkU943Xo7j16BIq7yW6hFHvhdTlxxKdRUinnSCkKHhBJlWhnyCM2Rfl/NoZ
5MXRV1xUEwKBgCxLkoE5zd7Wrt24sUQfHfte79N8UTy37FAv63LnlJ+ZcpPmfSuE
LTsRukDtzEcDB4/zhQiUbquuEProdXq+9keTXXFn8ZxkohZzHY76YfM2SN0pLRjY
DAejhk4ncWK0hLdX1p/8w5duzb+5RIEuEC4w39sL3UXavSrlXBX3wuDdAoGBAIKa
bGg+fjVQUhXBckdmc+Unf/Gf7ka3fmntBoITzvL1B5MtyAzedkxmVw3De93nQER9
UTx9zzBhiHYv8rwHgyUom6meiwy9O3UWPT3Jj3B/G02cCO2kc/AwLLUvEgY9jQee
8zH8V1QMiCoJLWEt1fpk78VWtkOSE3GUMr0yVH4BAoGBAKt5xZKmj6QXfmxkYieI
rsgN50WHHJmL+mPIXfEejtiJirb0NRYL1MZ1HXZsZHF02WPl2zGcREjq/6ZJmuSz
LKUaNQ138wMUJNdPAE3w47jg67qKrWyI4qewnlJUFj6XqqybAIi3xZ+7X4NYm5cR
q1vpmzzZymJyu/Qtn5S0tFB9
-----END PRIVATE KEY-----
";

#[derive(Default)]
pub struct State {
    /// Requests, refusals and one-time values seen.
    pub ledger: super::Ledger,
}

pub struct PayV3 {
    pub addr: std::net::SocketAddr,
    pub state: Arc<State>,
}

impl PayV3 {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn requests(&self) -> u64 {
        self.state.ledger.requests()
    }
    pub fn rejected(&self) -> u64 {
        self.state.ledger.rejected()
    }
    pub fn last_refusal(&self) -> Option<String> {
        self.state.ledger.last_refusal()
    }
}

/// The member's coupons of the stock, as the platform lists them (amounts in fen, times RFC
/// 3339 in +08:00).
pub fn coupons() -> Vec<Value> {
    vec![
        json!({"stock_id": STOCK_ID, "coupon_id": "98674556", "coupon_name": "微信支付满100减10",
               "status": "SENDED", "description": "满100减10", "create_time": "2026-03-01T10:00:00+08:00",
               "coupon_type": "NORMAL", "no_cash": false, "singleitem": false,
               "available_begin_time": "2026-03-01T00:00:00+08:00", "available_end_time": "2030-12-31T23:59:59+08:00",
               "normal_coupon_information": {"coupon_amount": 1000, "transaction_minimum": 10000}}),
        json!({"stock_id": STOCK_ID, "coupon_id": "98674557", "coupon_name": "无门槛2元",
               "status": "USED", "description": "无门槛", "create_time": "2026-03-02T10:00:00+08:00",
               "coupon_type": "NORMAL", "no_cash": true, "singleitem": false,
               "available_begin_time": "2026-03-02T00:00:00+08:00", "available_end_time": "2031-03-02T23:59:59+08:00",
               "normal_coupon_information": {"coupon_amount": 200, "transaction_minimum": 0}}),
        json!({"stock_id": STOCK_ID, "coupon_id": "98674558", "coupon_name": "过期券",
               "status": "EXPIRED", "description": "过期", "create_time": "2024-01-01T10:00:00+08:00",
               "coupon_type": "NORMAL", "no_cash": false, "singleitem": false,
               "available_begin_time": "2024-01-01T00:00:00+08:00", "available_end_time": "2024-12-31T23:59:59+08:00",
               "normal_coupon_information": {"coupon_amount": 500, "transaction_minimum": 5000}}),
    ]
}

pub async fn start() -> PayV3 {
    let state = Arc::new(State::default());
    let s = state.clone();
    let addr = super::serve(Arc::new(move |parts, body| {
        s.ledger.arrived();
        let (status, body) = match answer(&s, &parts, &body) {
            Ok(v) => (StatusCode::OK, v),
            Err((status, code, message, why)) => {
                s.ledger.refused(why);
                (status, json!({"code": code, "message": message}))
            }
        };
        let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
        *res.status_mut() = status;
        res.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        res
    }))
    .await;
    PayV3 { addr, state }
}

type Refusal = (StatusCode, &'static str, &'static str, String);

fn sign_error(why: String) -> Refusal {
    (
        StatusCode::UNAUTHORIZED,
        "SIGN_ERROR",
        "签名错误，请检查后再试",
        why,
    )
}

fn param_error(why: String) -> Refusal {
    (StatusCode::BAD_REQUEST, "PARAM_ERROR", "参数错误", why)
}

/// The five `k="v"` members of the Authorization header, each exactly once.
fn authorization(header: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let rest = header.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let mut out = std::collections::BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return None;
        }
    }
    let keys: Vec<&str> = out.keys().map(String::as_str).collect();
    (keys == ["mchid", "nonce_str", "serial_no", "signature", "timestamp"]).then_some(out)
}

fn answer(state: &State, parts: &http::request::Parts, body: &[u8]) -> Result<Value, Refusal> {
    let path = parts.uri.path();
    let want_path = format!(
        "/v3/marketing/favor/users/{}/coupons",
        crypto::percent_encode(OPENID)
    );
    if parts.method != http::Method::GET || path != want_path {
        return Err((
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "资源不存在",
            format!("{} {}", parts.method, parts.uri),
        ));
    }
    if !body.is_empty() || parts.headers.contains_key("content-type") {
        return Err(param_error("a GET with a body".into()));
    }
    let accept = parts.headers.get("accept").and_then(|v| v.to_str().ok());
    if accept != Some("application/json") {
        return Err(param_error(format!("accept {accept:?}")));
    }
    let header = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(auth) = authorization(header) else {
        return Err(sign_error(format!("authorization {header}")));
    };
    if auth["mchid"] != MCHID || auth["serial_no"] != SERIAL_NO {
        return Err(sign_error("mchid / serial_no".into()));
    }
    let ts = &auth["timestamp"];
    let fresh = ts.len() == 10
        && ts.bytes().all(|b| b.is_ascii_digit())
        && ts
            .parse::<i64>()
            .is_ok_and(|t| (jiff::Timestamp::now().as_second() - t).abs() <= 300);
    if !fresh {
        return Err(sign_error(format!("timestamp {ts}")));
    }
    let nonce = &auth["nonce_str"];
    if nonce.is_empty() || nonce.len() > 32 {
        return Err(sign_error(format!("nonce {nonce}")));
    }
    // the URL as sent: path and raw query
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let message = format!("GET\n{target}\n{ts}\n{nonce}\n\n");
    let sig = crypto::base64_decode(&auth["signature"]).unwrap_or_default();
    if !crypto::rsa_sha256_verify(TEST_PUBLIC_KEY_PEM, message.as_bytes(), &sig) {
        return Err(sign_error(format!("signed {message:?}")));
    }
    if !state.ledger.first_use(nonce) {
        return Err(sign_error(format!("nonce {nonce} used before")));
    }
    // exactly these query parameters, RFC 3986-encoded
    let mut query: Vec<(String, String)> = Vec::new();
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| param_error(format!("query {pair}")))?;
        let (k, v) = (crypto::percent_decode(k), crypto::percent_decode(v));
        let (Some(k), Some(v)) = (k, v) else {
            return Err(param_error(format!("query {pair}")));
        };
        if crypto::percent_encode(&k) != pair.split_once('=').unwrap().0
            || crypto::percent_encode(&v) != pair.split_once('=').unwrap().1
        {
            return Err(param_error(format!("encoding of {pair}")));
        }
        query.push((k, v));
    }
    query.sort();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    if names != ["appid", "limit", "offset", "stock_id"] {
        return Err(param_error(format!("query names {names:?}")));
    }
    if get("appid") != Some(APPID) || get("stock_id") != Some(STOCK_ID) {
        return Err(param_error("appid / stock_id".into()));
    }
    let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let offset: usize = get("offset")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    if !(1..=10).contains(&limit) || offset == usize::MAX {
        return Err(param_error("limit 1–10, offset ≥ 0".into()));
    }
    let all = coupons();
    let data: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let list = json!({"data": data, "total_count": all.len(), "limit": limit, "offset": offset});
    let sealed = crypto::aes_gcm_encrypt(
        API_V3_KEY.as_bytes(),
        RESOURCE_NONCE.as_bytes(),
        RESOURCE_AAD.as_bytes(),
        list.to_string().as_bytes(),
    )
    .expect("a 32-byte key and a 12-byte nonce");
    Ok(json!({
        "resource": {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": crypto::base64(&sealed),
            "nonce": RESOURCE_NONCE,
            "associated_data": RESOURCE_AAD,
            "original_type": "coupon_list"
        }
    }))
}
