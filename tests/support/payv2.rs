//! A strict simulator of a pay-v2-style platform (tests/fixtures/payv2.yaml): XML request and
//! answer bodies under `<xml>`, `sign` over the sorted `k=v&…` of the non-empty parameters
//! (`sign` left out) followed by `&key=SECRET`, MD5 upper-case hex, or HMAC-SHA256 keyed with
//! the secret when `sign_type` is `HMAC-SHA256`; `nonce_str` never twice; the envelope is
//! `return_code`/`result_code` with `return_msg`/`err_code_des`; coupons are repeated
//! `<coupon>` elements, amounts in fen, times `yyyyMMddHHmmss` in UTC+08:00.
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use coupon_gateway::crypto;
use http::{Response, StatusCode};
use http_body_util::Full;
use quick_xml::events::Event;

pub const APPID: &str = "wx8888888888888888";
pub const MCH_ID: &str = "1900000109";
pub const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
pub const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

#[derive(Default)]
pub struct State {
    /// Requests, refusals and one-time values seen.
    pub ledger: super::Ledger,
    /// The `sign_type` of the last request that carried one.
    pub last_sign_type: Mutex<Option<String>>,
}

pub struct PayV2 {
    pub addr: std::net::SocketAddr,
    pub state: Arc<State>,
}

impl PayV2 {
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

/// The member's coupons as `<coupon>` elements (CDATA text, as the platform writes it).
const COUPONS: &str = "\
<coupon><coupon_id><![CDATA[C2001]]></coupon_id><coupon_name><![CDATA[满50减5]]></coupon_name>\
<coupon_type><![CDATA[CASH]]></coupon_type><coupon_value>500</coupon_value><coupon_minimum>5000</coupon_minimum>\
<coupon_state><![CDATA[SENDED]]></coupon_state><begin_time>20260101000000</begin_time><end_time>20301231235959</end_time></coupon>\
<coupon><coupon_id><![CDATA[C2002]]></coupon_id><coupon_name><![CDATA[无门槛1元]]></coupon_name>\
<coupon_type><![CDATA[NO_THRESHOLD]]></coupon_type><coupon_value>100</coupon_value><coupon_minimum>0</coupon_minimum>\
<coupon_state><![CDATA[USED]]></coupon_state><begin_time>20260301080000</begin_time><end_time>20310301080000</end_time></coupon>\
<coupon><coupon_id><![CDATA[C2003]]></coupon_id><coupon_name>过期券 &amp; 旧</coupon_name>\
<coupon_type><![CDATA[CASH]]></coupon_type><coupon_value>1000</coupon_value><coupon_minimum>20000</coupon_minimum>\
<coupon_state><![CDATA[EXPIRED]]></coupon_state><begin_time>20240101000000</begin_time><end_time>20241231235959</end_time></coupon>";

pub async fn start() -> PayV2 {
    let state = Arc::new(State::default());
    let s = state.clone();
    let addr = super::serve(Arc::new(move |parts, body| {
        s.ledger.arrived();
        let xml = match answer(&s, &parts, &body) {
            Ok(xml) => xml,
            Err(refusal) => {
                let (body, why) = match refusal {
                    Refusal::Return(msg, why) => (
                        format!(
                            "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{msg}]]></return_msg></xml>"
                        ),
                        why,
                    ),
                    Refusal::Result(code, des, why) => (
                        format!(
                            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg>\
                             <result_code><![CDATA[FAIL]]></result_code><err_code><![CDATA[{code}]]></err_code>\
                             <err_code_des><![CDATA[{des}]]></err_code_des></xml>"
                        ),
                        why,
                    ),
                };
                s.ledger.refused(why);
                body
            }
        };
        let mut res = Response::new(Full::new(Bytes::from(xml)));
        *res.status_mut() = StatusCode::OK;
        res.headers_mut()
            .insert("content-type", "text/xml; charset=UTF-8".parse().unwrap());
        res
    }))
    .await;
    PayV2 { addr, state }
}

enum Refusal {
    /// `return_code` FAIL: the request itself is wrong (format, signature).
    Return(&'static str, String),
    /// `result_code` FAIL: a business error.
    Result(&'static str, &'static str, String),
}

/// The children of the root `<xml>` as name → text; None when the body is not flat XML of
/// that shape or names an element twice.
fn read_flat(body: &str) -> Option<Vec<(String, String)>> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current: Option<(String, String)> = None;
    for _ in 0..10_000 {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                depth += 1;
                let name = String::from_utf8(e.name().as_ref().to_vec()).ok()?;
                match depth {
                    1 if name == "xml" => {}
                    2 => current = Some((name, String::new())),
                    _ => return None,
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t.xml_content().ok()?);
                }
            }
            Event::GeneralRef(r) => {
                let (_, text) = current.as_mut()?;
                match r.resolve_char_ref().ok()? {
                    Some(c) => text.push(c),
                    None => {
                        text.push_str(quick_xml::escape::resolve_xml_entity(&r.decode().ok()?)?)
                    }
                }
            }
            Event::CData(c) => {
                let (_, text) = current.as_mut()?;
                text.push_str(&String::from_utf8(c.into_inner().into_owned()).ok()?);
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 1 {
                    out.push(current.take()?);
                }
            }
            Event::Eof => break,
            Event::Decl(_) if depth == 0 => {}
            _ => return None,
        }
    }
    let names: HashSet<&String> = out.iter().map(|(k, _)| k).collect();
    (depth == 0 && names.len() == out.len()).then_some(out)
}

/// The signature of `params` (everything but `sign`, empty values left out).
pub fn sign(params: &BTreeMap<String, String>, sign_type: &str) -> String {
    let mut text = params
        .iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    text.push_str("&key=");
    text.push_str(KEY);
    match sign_type {
        "HMAC-SHA256" => crypto::hex_upper(&crypto::hmac_sha256(KEY.as_bytes(), text.as_bytes())),
        _ => crypto::hex_upper(&crypto::md5(text.as_bytes())),
    }
}

fn answer(state: &State, parts: &http::request::Parts, body: &[u8]) -> Result<String, Refusal> {
    let fail = |msg: &'static str, why: String| Refusal::Return(msg, why);
    if parts.method != http::Method::POST
        || parts.uri.path() != "/mmpaymkttransfers/querycouponsinfo"
    {
        return Err(fail(
            "URL地址错误",
            format!("{} {}", parts.method, parts.uri),
        ));
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/xml" {
        return Err(fail("XML格式错误", format!("content type {ct}")));
    }
    let text = std::str::from_utf8(body).map_err(|_| fail("XML格式错误", "not UTF-8".into()))?;
    let pairs = read_flat(text).ok_or_else(|| fail("XML格式错误", format!("body {text}")))?;
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let want: &[&str] = if names.contains(&"sign_type") {
        &[
            "appid",
            "mch_id",
            "nonce_str",
            "openid",
            "sign_type",
            "sign",
        ]
    } else {
        &["appid", "mch_id", "nonce_str", "openid", "sign"]
    };
    if names != want {
        return Err(fail("参数错误", format!("elements {names:?}")));
    }
    let params: BTreeMap<String, String> = pairs.into_iter().collect();
    let p = |k: &str| params[k].as_str();
    if p("appid") != APPID || p("mch_id") != MCH_ID {
        return Err(fail("appid和mch_id不匹配", "appid / mch_id".into()));
    }
    let sign_type = params.get("sign_type").map_or("MD5", String::as_str);
    if !["MD5", "HMAC-SHA256"].contains(&sign_type) {
        return Err(fail("签名类型错误", format!("sign_type {sign_type}")));
    }
    *state.last_sign_type.lock().unwrap() = params.get("sign_type").cloned();
    let nonce = p("nonce_str");
    if nonce.is_empty() || nonce.len() > 32 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(fail("参数错误", format!("nonce_str {nonce}")));
    }
    let want_sign = sign(&params, sign_type);
    if !crypto::constant_time_eq(want_sign.as_bytes(), p("sign").as_bytes()) {
        return Err(fail(
            "签名错误",
            format!("sign {} wanted {want_sign}", p("sign")),
        ));
    }
    if !state.ledger.first_use(nonce) {
        return Err(Refusal::Result(
            "NONCE_REUSED",
            "nonce_str 重复",
            format!("nonce {nonce}"),
        ));
    }
    if p("openid") != OPENID {
        return Err(Refusal::Result("USER_ERROR", "用户不存在", "openid".into()));
    }
    let mut reply = BTreeMap::new();
    reply.insert("appid".to_owned(), APPID.to_owned());
    reply.insert("mch_id".to_owned(), MCH_ID.to_owned());
    reply.insert("nonce_str".to_owned(), format!("r{nonce}"));
    reply.insert("result_code".to_owned(), "SUCCESS".to_owned());
    reply.insert("return_code".to_owned(), "SUCCESS".to_owned());
    reply.insert("total_count".to_owned(), "3".to_owned());
    let signed = sign(&reply, "MD5");
    Ok(format!(
        "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg>\
         <appid><![CDATA[{APPID}]]></appid><mch_id><![CDATA[{MCH_ID}]]></mch_id>\
         <nonce_str><![CDATA[r{nonce}]]></nonce_str><sign><![CDATA[{signed}]]></sign>\
         <result_code><![CDATA[SUCCESS]]></result_code><total_count>3</total_count>{COUPONS}</xml>"
    ))
}
