//! Every example in docs/openapi.yaml is answered as documented by the sandbox: each response
//! example is sent (the request body example of the same name, the path from `x-path`), and
//! the status, content type and shape of the answer must match it. A problem's `detail` must
//! match word for word. `/openapi.json` serves the same document.
mod support;

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::http::openapi::OPENAPI_YAML;
use coupon_gateway::sandbox::Sandbox;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

/// `got` has every member `want` has, with values of the same JSON type (null matching
/// anything, since example values are one possible answer); arrays compare first items.
fn same_shape(want: &Value, got: &Value, at: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g
                    .get(k)
                    .ok_or_else(|| format!("{at}.{k} is documented but not answered"))?;
                same_shape(wv, gv, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) => match (w.first(), g.first()) {
            (Some(w0), Some(g0)) => same_shape(w0, g0, &format!("{at}[0]")),
            _ => Ok(()),
        },
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_)) => Ok(()),
        _ => Err(format!("{at}: documented {want}, answered {got}")),
    }
}

#[tokio::test]
async fn every_documented_example_is_answered_as_documented() {
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    let doc: Value = serde_yaml::from_str(OPENAPI_YAML).unwrap();

    let served = support::get(&gw.url("/openapi.json")).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body, doc, "/openapi.json is docs/openapi.yaml");

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let requests = &op["requestBody"]["content"]["application/json"]["examples"];
            let mut answered: Vec<&str> = Vec::new();
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                for (ctype, media) in content {
                    let Some(examples) = media["examples"].as_object() else {
                        continue;
                    };
                    for (name, example) in examples {
                        let case = format!("{method} {path} {status} {name}");
                        let uri = example["x-path"].as_str().unwrap_or(path);
                        assert!(!uri.contains('{'), "{case}: give x-path");
                        let mut req = Request::builder()
                            .method(method.to_uppercase().as_str())
                            .uri(gw.url(uri));
                        let body = match requests.get(name) {
                            Some(r) => {
                                req = req.header("content-type", "application/json");
                                answered.push(name);
                                Bytes::from(r["value"].to_string())
                            }
                            None => {
                                assert!(
                                    requests.is_null(),
                                    "{case}: no request example of that name"
                                );
                                Bytes::new()
                            }
                        };
                        let a = support::send(req.body(Full::new(body)).unwrap()).await;
                        assert_eq!(a.status.as_str(), status, "{case}: {}", a.body);
                        let got_type = a.headers["content-type"].to_str().unwrap();
                        assert!(got_type.starts_with(ctype.as_str()), "{case}: {got_type}");
                        let want = &example["value"];
                        if let Err(e) = same_shape(want, &a.body, "") {
                            panic!("{case}: {e}\nanswered: {}", a.body);
                        }
                        if ctype == "application/problem+json" {
                            assert_eq!(a.body["type"], want["type"], "{case}");
                            assert_eq!(a.body["detail"], want["detail"], "{case}");
                        }
                        checked += 1;
                    }
                }
            }
            if let Some(requests) = requests.as_object() {
                for name in requests.keys() {
                    assert!(
                        answered.contains(&name.as_str()),
                        "{method} {path}: request example {name} has no documented answer"
                    );
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} examples");
}
