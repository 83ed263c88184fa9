//! `coupon-gateway explain`, run as the operator runs it: the built binary as a child process,
//! against the built-in sandbox (`--sandbox`), against each YAML-only fixture vendor's strict
//! test server (started in this process, credentials in CGW_ variables as `serve` takes
//! them), and over a recorded answer (`--answer`). `--json` output for exact assertions, the
//! text output checked once for what a person reads.
mod support;

use std::process::Output;
use std::time::Duration;

use md5::Digest;
use serde_json::Value;
use support::{payv2, payv3, topstyle, utcplatform};

use coupon_gateway::sandbox::{self, data};

/// Only a sanity limit: a debug binary starting the sandbox on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `coupon-gateway explain ARGS` with `env` set; stdout, stderr and the exit status.
async fn explain(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupon-gateway"));
    cmd.arg("explain")
        .args(args)
        .envs(env.iter().cloned())
        .kill_on_drop(true);
    match tokio::time::timeout(PATIENCE, cmd.output()).await {
        Ok(out) => out.expect("the binary runs"),
        Err(_) => panic!("explain {args:?} did not finish within {PATIENCE:?}"),
    }
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Everything the operator sees.
fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(out: &Output, secrets: &[&str]) {
    let all = shown(out);
    for s in secrets {
        assert!(!all.contains(s), "`{s}` was shown:\n{all}");
    }
}

/// The first attempt of the first page.
fn first_attempt(e: &Value) -> &Value {
    &e["pages"][0]["attempts"][0]
}

fn step<'a>(e: &'a Value, name: &str) -> &'a Value {
    first_attempt(e)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {e:#}"))
}

/// The field `name` of item `index` (from 1) of page `page` (from 0).
fn field<'a>(e: &'a Value, page: usize, index: usize, name: &str) -> &'a Value {
    e["pages"][page]["items"][index - 1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == name)
        .unwrap_or_else(|| panic!("no field `{name}`"))
}

fn header<'a>(wire: &'a Value, name: &str) -> Option<&'a str> {
    wire["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

fn md5_hex(s: &str) -> String {
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

#[tokio::test]
async fn sandbox_op_shows_the_md5_signature_its_input_the_wire_request_and_every_field() {
    let out = explain(
        &[
            "--sandbox",
            "op",
            "list_coupons",
            "--input",
            &format!("member.id={}", data::OP_MEMBER),
            "--json",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", shown(&out));
    assert_no_secret(&out, &[sandbox::OP_SECRET, sandbox::OP_CLIENT]);
    let e = json_of(&out);
    assert_eq!(e["mode"], "sandbox");
    assert_eq!(e["inputs"]["member.id"], data::OP_MEMBER);

    // the signing input, secrets masked: secret + sorted query + exact body + secret
    let sign = step(&e, "sign");
    assert_eq!(sign["into"], "query sign");
    assert_eq!(sign["signs_request"], true);
    let input = sign["input"].as_str().unwrap();
    let body = format!(r#"{{"OwnerType":1,"ChatId":"{}"}}"#, data::OP_MEMBER);
    assert_eq!(
        input,
        format!("***apiVersion01client***version2.0{body}***")
    );
    // the output is the MD5 of that input with the secrets in it
    let unmasked = format!(
        "{s}apiVersion01client{c}version2.0{body}{s}",
        s = sandbox::OP_SECRET,
        c = sandbox::OP_CLIENT
    );
    let signature = sign["output"].as_str().unwrap();
    assert_eq!(signature, md5_hex(&unmasked));

    let attempt = first_attempt(&e);
    assert_eq!(
        attempt["rendered"]["target"],
        "/op/v2/getTicketUsersByChatId?apiVersion=01&client=***&version=2.0"
    );
    let wire = &attempt["wire"];
    assert_eq!(wire["method"], "POST");
    let url = wire["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:")
            && url.ends_with(&format!(
                "/op/v2/getTicketUsersByChatId?apiVersion=01&client=***&version=2.0&sign={signature}"
            )),
        "{url}"
    );
    assert_eq!(wire["body"], body);

    let page = &e["pages"][0];
    assert_eq!(page["answer"]["status"], 200);
    let envelope = &page["envelope"];
    assert_eq!(envelope["verdict"], "ok");
    let items = envelope["items"].as_u64().unwrap();
    assert!(items > 0);
    assert_eq!(
        envelope["conditions"][0],
        serde_json::json!({"rule": "success", "path": "$.code", "expects": "in [200]", "found": 200, "holds": true})
    );
    assert_eq!(page["item_count"], items);
    assert_eq!(page["next"]["kind"], "last");

    // field by field: the JSONPath that matched, the raw value, the value after conversion
    let id = field(&e, 0, 1, "id");
    assert_eq!(id["path"], "$._id");
    assert_eq!(id["matched"], id["value"]);
    let kind = field(&e, 0, 1, "kind");
    assert_eq!(kind["path"], "$.ticketType");
    assert_eq!(kind["matched"], 1);
    assert_eq!(kind["value"], "cash");
    let from = field(&e, 0, 1, "valid_from");
    assert_eq!(from["path"], "$.ticketRule.useStartTime");
    assert!(from["matched"].is_i64(), "{from}");
    assert!(
        from["value"].as_str().unwrap().ends_with("+08:00"),
        "{from}"
    );

    assert_eq!(e["outcome"]["ok"], true);
    assert_eq!(e["outcome"]["rows"], items);
    assert_eq!(e["outcome"]["dropped"], 0);
}

#[tokio::test]
async fn the_text_output_reads_stage_by_stage() {
    let out = explain(
        &[
            "--sandbox",
            "op",
            "list_coupons",
            "--input",
            &format!("member.id={}", data::OP_MEMBER),
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", shown(&out));
    assert_no_secret(&out, &[sandbox::OP_SECRET, sandbox::OP_CLIENT]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stages = [
        "explain op list_coupons (sandbox)",
        "== page 1",
        "-- attempt 1",
        "   rendered: POST /op/v2/getTicketUsersByChatId?apiVersion=01&client=***&version=2.0",
        "   step sign -> query sign",
        "     input:  ***apiVersion01client***version2.0",
        "     output: ",
        "   wire: POST http://127.0.0.1:",
        "-- answer: HTTP 200",
        "-- envelope: ok (",
        "   success $.code in [200]: found 200 -> holds",
        "-- item 1: kept",
        "   kind ",
        "-- page done: ",
        "OK: ",
    ];
    let mut at = 0;
    for s in stages {
        match text[at..].find(s) {
            Some(i) => at += i + s.len(),
            None => panic!("`{s}` missing (or out of order) in:\n{text}"),
        }
    }
    assert!(
        text.contains("$.ticketType  1 -> \"cash\""),
        "a field's path, raw value and value:\n{text}"
    );
}

#[tokio::test]
async fn sandbox_wxcard_sends_its_token_masked() {
    let out = explain(&["--sandbox", "wxcard", "list_templates", "--json"], &[]).await;
    assert!(out.status.success(), "{}", shown(&out));
    assert_no_secret(&out, &[sandbox::WXCARD_APP_SECRET]);
    let e = json_of(&out);
    let wire = &first_attempt(&e)["wire"];
    assert_eq!(wire["method"], "GET");
    assert!(
        wire["url"].as_str().unwrap().ends_with("/tickets"),
        "{wire}"
    );
    // the access token the sandbox issued is never shown: not in the token endpoint's
    // answer, not in the header that sends it
    assert_eq!(header(wire, "authorization"), Some("Bearer ***"), "{wire}");
    let fetch = &e["pages"][0]["token_fetches"][0];
    let token_wire = &fetch["attempts"][0]["wire"];
    assert!(token_wire["url"].as_str().unwrap().ends_with("/auth/token"));
    assert_eq!(token_wire["body"], r#"{"app_id":"***","app_secret":"***"}"#);
    assert_eq!(fetch["answer"]["status"], 200);
    let token_answer: Value =
        serde_json::from_str(fetch["answer"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(token_answer["data"]["access_token"], "***");
    let page = &e["pages"][0];
    assert_eq!(page["envelope"]["verdict"], "ok");
    let title = field(&e, 0, 1, "title");
    assert_eq!(title["path"], "$.title");
    assert_eq!(title["matched"], title["value"]);
    let begin = field(&e, 0, 1, "begin_at");
    assert_eq!(begin["path"], "$.begin_at.date");
    assert!(begin["matched"].is_string() && begin["value"].is_string());
    assert_eq!(e["outcome"]["ok"], true);
}

#[tokio::test]
async fn sandbox_hkl_and_zvcms_show_their_des_and_hmac_steps() {
    let hkl = explain(
        &[
            "--sandbox",
            "hkl",
            "list_coupons",
            "--input",
            &format!("member.id={}", data::HKL_MEMBER),
            "--json",
        ],
        &[],
    )
    .await;
    assert!(hkl.status.success(), "{}", shown(&hkl));
    assert_no_secret(&hkl, &[sandbox::HKL_DES_KEY]);
    let e = json_of(&hkl);
    let param = step(&e, "param");
    assert_eq!(
        param["input"],
        format!(r#"{{"memberId":"{}"}}"#, data::HKL_MEMBER)
    );
    let encrypted = param["output"].as_str().unwrap();
    assert!(
        first_attempt(&e)["wire"]["body"]
            .as_str()
            .unwrap()
            .contains(&format!(r#""param":"{encrypted}""#))
    );
    assert_eq!(e["pages"][0]["envelope"]["verdict"], "ok");

    let zvcms = explain(
        &[
            "--sandbox",
            "zvcms",
            "list_coupons",
            "--input",
            &format!("member.id={}", data::ZVCMS_MEMBER),
            "--json",
        ],
        &[],
    )
    .await;
    assert!(zvcms.status.success(), "{}", shown(&zvcms));
    assert_no_secret(&zvcms, &[sandbox::ZVCMS_SECRET, sandbox::ZVCMS_GRANT_CODE]);
    let e = json_of(&zvcms);
    let token = step(&e, "token");
    let input = token["input"].as_str().unwrap();
    assert!(
        input.starts_with("grantCode=***&nonce=") && input.contains("&openId=***&timestamp="),
        "{input}"
    );
    let signed = token["output"].as_str().unwrap();
    assert!(
        first_attempt(&e)["wire"]["body"]
            .as_str()
            .unwrap()
            .contains(&format!(r#""token":"{signed}""#))
    );
    assert_eq!(e["pages"][0]["envelope"]["verdict"], "ok");
    assert_eq!(e["outcome"]["ok"], true);
}

/// Writes a fixture with its base URL in, and the CGW_ variables of its credentials.
fn fixture(
    name: &str,
    yaml: &str,
    placeholder: &str,
    base_url: &str,
    vendor: &str,
    creds: &[(&str, &str)],
) -> (std::path::PathBuf, Vec<(String, String)>) {
    let path = std::env::temp_dir().join(format!(
        "cgw-explain-{}-{name}-{}",
        std::process::id(),
        creds.len() + base_url.len()
    ));
    std::fs::write(&path, yaml.replace(placeholder, base_url)).unwrap();
    let env = creds
        .iter()
        .map(|(k, v)| {
            (
                format!(
                    "CGW_VENDORS__{}__CREDENTIALS__{}",
                    vendor.to_uppercase(),
                    k.to_uppercase()
                ),
                (*v).to_owned(),
            )
        })
        .collect();
    (path, env)
}

/// What every explained fixture call must show: a signing step with an output, the wire
/// request, an `ok` envelope, rows, and no credential.
fn assert_signed_and_read(out: &Output, step_name: &str, secrets: &[&str]) -> Value {
    assert!(out.status.success(), "{}", shown(out));
    assert_no_secret(out, secrets);
    let e = json_of(out);
    let s = step(&e, step_name);
    assert!(
        !s["output"].as_str().unwrap_or("").is_empty(),
        "{step_name}: {s}"
    );
    assert!(first_attempt(&e)["wire"]["url"].is_string());
    assert_eq!(e["pages"][0]["envelope"]["verdict"], "ok", "{e:#}");
    assert_eq!(e["outcome"]["ok"], true);
    assert!(e["outcome"]["rows"].as_u64().unwrap() > 0);
    e
}

#[tokio::test]
async fn topstyle_shows_its_signature_and_both_pages() {
    let vendor = topstyle::start().await;
    let (path, env) = fixture(
        "topstyle.yaml",
        include_str!("fixtures/topstyle.yaml"),
        "TOPSTYLE_BASE_URL",
        &vendor.base_url(),
        "topstyle",
        &[("app_key", topstyle::APP_KEY), ("secret", topstyle::SECRET)],
    );
    let member = format!("member.id={}", topstyle::MEMBER);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "topstyle",
        "list_coupons",
        "--input",
        &member,
        "--json",
    ];
    let out = explain(&args, &env).await;
    let e = assert_signed_and_read(&out, "sign", &[topstyle::SECRET]);
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    let pages = e["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2, "{e:#}");
    assert_eq!(pages[0]["number"], 1);
    assert_eq!(pages[0]["item_count"], 2);
    assert_eq!(pages[0]["next"]["kind"], "page");
    assert_eq!(pages[0]["next"]["number"], 2);
    assert_eq!(pages[1]["number"], 2);
    assert_eq!(pages[1]["item_count"], 1);
    assert_eq!(pages[1]["next"]["kind"], "last");
    // each page is signed afresh
    let sign = |p: &Value| p["attempts"][0]["steps"][0]["output"].clone();
    assert_ne!(sign(&pages[0]), sign(&pages[1]));
    assert_eq!(e["outcome"]["pages"], 2);
    assert_eq!(e["outcome"]["rows"], 3);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_wrong_secret_shows_the_vendor_s_refusal_and_the_envelope_verdict() {
    let vendor = topstyle::start().await;
    let wrong = "not-the-top-secret";
    let (path, env) = fixture(
        "topstyle-wrong.yaml",
        include_str!("fixtures/topstyle.yaml"),
        "TOPSTYLE_BASE_URL",
        &vendor.base_url(),
        "topstyle",
        &[("app_key", topstyle::APP_KEY), ("secret", wrong)],
    );
    let member = format!("member.id={}", topstyle::MEMBER);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "topstyle",
        "list_coupons",
        "--input",
        &member,
        "--json",
    ];
    let out = explain(&args, &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_no_secret(&out, &[wrong, topstyle::SECRET]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed at envelope"),
        "{}",
        shown(&out)
    );
    assert_eq!(vendor.rejected(), 1);
    let e = json_of(&out);
    let page = &e["pages"][0];
    // the signature that was refused is there to compare with the vendor's
    assert!(page["attempts"][0]["steps"][0]["output"].is_string());
    let answer = page["answer"]["body"].as_str().unwrap();
    assert!(answer.contains("error_response"), "{answer}");
    let envelope = &page["envelope"];
    assert_eq!(envelope["verdict"], "error");
    let condition = &envelope["conditions"][0];
    assert_eq!(condition["rule"], "success");
    assert_eq!(condition["holds"], false);
    assert_eq!(e["outcome"]["ok"], false);
    assert_eq!(e["outcome"]["stage"], "envelope");
    let error = e["outcome"]["error"].as_str().unwrap();
    assert!(error.starts_with("vendor error "), "{error}");
    assert_eq!(envelope["error"], error);

    // the text output names the stage too
    let text_args = &args[..args.len() - 1];
    let out = explain(text_args, &env).await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-- envelope: error (vendor error "), "{text}");
    assert!(text.contains("FAILED at envelope: vendor error "), "{text}");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn payv3_shows_its_rsa_authorization_and_the_decrypted_list() {
    let vendor = payv3::start().await;
    let (path, env) = fixture(
        "payv3.yaml",
        include_str!("fixtures/payv3.yaml"),
        "PAYV3_BASE_URL",
        &vendor.base_url(),
        "payv3",
        &[
            ("mchid", payv3::MCHID),
            ("serial_no", payv3::SERIAL_NO),
            ("private_key", payv3::TEST_PRIVATE_KEY_PEM),
            ("appid", payv3::APPID),
            ("api_v3_key", payv3::API_V3_KEY),
        ],
    );
    let openid = format!("member.openid={}", payv3::OPENID);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "payv3",
        "list_coupons",
        "--input",
        &openid,
        "--json",
    ];
    let out = explain(&args, &env).await;
    let name = first_step_name(&out);
    let e = assert_signed_and_read(&out, &name, &[payv3::API_V3_KEY, "PRIVATE KEY"]);
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    let wire = &first_attempt(&e)["wire"];
    assert!(header(wire, "authorization").is_some(), "{wire}");
    // the envelope is read after decryption: the items are plain
    assert_eq!(e["outcome"]["rows"], 3);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn payv2_shows_its_signature_over_the_xml_body() {
    let vendor = payv2::start().await;
    let (path, env) = fixture(
        "payv2.yaml",
        include_str!("fixtures/payv2.yaml"),
        "PAYV2_BASE_URL",
        &vendor.base_url(),
        "payv2",
        &[
            ("appid", payv2::APPID),
            ("mch_id", payv2::MCH_ID),
            ("key", payv2::KEY),
        ],
    );
    let openid = format!("member.openid={}", payv2::OPENID);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "payv2",
        "list_coupons",
        "--input",
        &openid,
        "--json",
    ];
    let out = explain(&args, &env).await;
    let name = first_step_name(&out);
    let e = assert_signed_and_read(&out, &name, &[payv2::KEY]);
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    // the signature travels in the body the vendor checks
    let signed = step(&e, &name)["output"].as_str().unwrap().to_owned();
    let body = first_attempt(&e)["wire"]["body"].as_str().unwrap();
    assert!(body.contains(&signed), "{body}");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn utcplatform_shows_its_signature() {
    let vendor = utcplatform::start().await;
    let (path, env) = fixture(
        "utcplatform.yaml",
        include_str!("fixtures/utcplatform.yaml"),
        "UTCPLATFORM_BASE_URL",
        &vendor.base_url(),
        "utcplatform",
        &[
            ("api_key", utcplatform::API_KEY),
            ("secret", utcplatform::SECRET),
        ],
    );
    let member = format!("member.id={}", utcplatform::MEMBER);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "utcplatform",
        "list_coupons",
        "--input",
        &member,
        "--json",
    ];
    let out = explain(&args, &env).await;
    let name = first_step_name(&out);
    let e = assert_signed_and_read(&out, &name, &[utcplatform::SECRET]);
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    assert!(!e["pages"][0]["items"].as_array().unwrap().is_empty());
    let _ = std::fs::remove_file(path);
}

/// The name of the first step shown (fixtures name their signing steps differently).
fn first_step_name(out: &Output) -> String {
    let e = json_of(out);
    first_attempt(&e)["steps"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no step: {}", shown(out)))
        .to_owned()
}

#[tokio::test]
async fn a_recorded_answer_shows_why_an_item_was_dropped() {
    let answer = serde_json::json!({
        "code": 200,
        "message": "成功",
        "data": [
            {"_id": "c1", "userTicketCode": "T1", "ticketName": "5元券", "ticketType": 1,
             "ticketAmount": 500, "useStatus": 2},
            {"_id": "c2", "userTicketCode": "T2", "ticketName": "坏券", "ticketType": 1,
             "ticketAmount": 500, "useStatus": 99},
        ]
    });
    let path = std::env::temp_dir().join(format!("cgw-explain-{}-answer.json", std::process::id()));
    std::fs::write(&path, answer.to_string()).unwrap();
    let args = [
        "--sandbox",
        "op",
        "list_coupons",
        "--input",
        "member.id=m1",
        "--answer",
        path.to_str().unwrap(),
        "--json",
    ];
    let out = explain(&args, &[]).await;
    assert!(out.status.success(), "{}", shown(&out));
    assert_no_secret(&out, &[sandbox::OP_SECRET, sandbox::OP_CLIENT]);
    let e = json_of(&out);
    assert_eq!(e["mode"], "answer");
    let page = &e["pages"][0];
    // the request is signed for comparison, and not sent
    assert!(page["attempts"][0]["steps"][0]["output"].is_string());
    assert!(page["attempts"][0]["wire"]["url"].is_string());
    assert_eq!(page["answer"]["status"], 200);
    assert_eq!(page["envelope"]["verdict"], "ok");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["kept"], true);
    assert_eq!(items[1]["kept"], false);
    assert_eq!(
        items[1]["dropped"],
        serde_json::json!({"field": "status", "reason": "`99` is not in the field's `map`"})
    );
    let status = field(&e, 0, 2, "status");
    assert_eq!(status["path"], "$.useStatus");
    assert_eq!(status["matched"], 99);
    assert_eq!(status["error"], "`99` is not in the field's `map`");
    assert_eq!(e["outcome"]["rows"], 1);
    assert_eq!(e["outcome"]["dropped"], 1);

    // a recorded refusal: the status is the answer stage's
    let args = [
        "--sandbox",
        "op",
        "list_coupons",
        "--input",
        "member.id=m1",
        "--answer",
        path.to_str().unwrap(),
        "--answer-status",
        "503",
        "--json",
    ];
    let out = explain(&args, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let e = json_of(&out);
    assert_eq!(e["outcome"]["stage"], "answer");
    assert_eq!(e["outcome"]["error"], "HTTP 503");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_wrong_question_names_what_is_known_and_calls_nothing() {
    let out = explain(&["--sandbox", "op", "no_such_op"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("list_coupons"), "{err}");
    let out = explain(
        &["--sandbox", "op", "list_coupons", "--input", "memberid=1"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown input `memberid`") && err.contains("member.id"),
        "{err}"
    );
}
