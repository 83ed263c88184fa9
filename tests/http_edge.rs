//! The HTTP edge over real sockets: request ids, problem+json on every error, body limits,
//! media types, routing, load shedding and the request deadline.
mod support;

use bytes::Bytes;
use coupon_gateway::config::load_str;
use coupon_gateway::embedded;
use coupon_gateway::engine::plan::{Credentials, Plan};
use http::Request;
use http_body_util::{Full, StreamBody};
use serde_json::json;

const ACME_YAML: &str = include_str!("fixtures/acme.yaml");

/// A vendor that accepts connections and never answers.
async fn silent_vendor() -> String {
    silent_vendor_counting().await.0
}

/// A silent vendor, and a channel saying how many connections it has accepted so far.
async fn silent_vendor_counting() -> (String, tokio::sync::watch::Receiver<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
            tx.send_replace(held.len());
        }
    });
    (format!("http://{addr}"), rx)
}

/// The acme fixture with extra `server:` settings, pointed at `vendor_url`.
async fn gateway(server: &str, vendor_url: &str) -> embedded::Running {
    let text = ACME_YAML
        .replace(
            "server:\n  listen: 127.0.0.1:0",
            &format!("server:\n  listen: 127.0.0.1:0\n{server}"),
        )
        .replace("ACME_BASE_URL", vendor_url)
        .replace("MAX_PAGES", "3");
    let mut loaded = load_str("acme.yaml", &text, false).unwrap();
    let creds = &mut loaded.config.vendors.get_mut("acme").unwrap().credentials;
    creds.insert("app_key".into(), Some("k".into()));
    creds.insert("secret".into(), Some("s".into()));
    let (plan, _) = Plan::compile(&loaded, Credentials::Required).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    embedded::start(plan, listener)
}

fn assert_problem(a: &support::Answer, status: u16) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(a.body["status"], status);
    for key in ["type", "title", "detail", "instance"] {
        assert!(a.body[key].is_string(), "problem without {key}: {}", a.body);
    }
    assert_eq!(
        a.body["instance"].as_str().unwrap(),
        a.headers["x-request-id"].to_str().unwrap(),
        "instance is the request id"
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_echoed() {
    let gw = gateway("", &silent_vendor().await).await;
    let a = support::send(
        Request::get(gw.url("/healthz"))
            .header("x-request-id", "caller-42")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-request-id"], "caller-42");
    let b = support::get(&gw.url("/healthz")).await;
    let made = b.headers["x-request-id"].to_str().unwrap();
    assert_eq!(made.len(), 36, "a UUID: {made}");
}

#[tokio::test]
async fn routing_errors_are_problems() {
    let gw = gateway("", &silent_vendor().await).await;
    let a = support::get(&gw.url("/v1/nothing")).await;
    assert_problem(&a, 404);
    let a = support::get(&gw.url("/v1/coupons/query")).await;
    assert_problem(&a, 405);
    assert_eq!(a.headers["allow"], "POST");
}

#[tokio::test]
async fn bodies_must_be_json_and_within_the_limit() {
    let gw = gateway("  body_limit_bytes: 64\n", &silent_vendor().await).await;
    let url = gw.url("/v1/coupons/query");
    // not JSON
    let a = support::send(
        Request::post(&url)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap(),
    )
    .await;
    assert_problem(&a, 415);
    // malformed JSON
    let a = support::send(
        Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"member\":")))
            .unwrap(),
    )
    .await;
    assert_problem(&a, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("not a valid query")
    );
    // unknown filter value
    let a = support::post_json(&url, &json!({"member": {}, "status": ["valid"]})).await;
    assert_problem(&a, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown value `valid`")
    );
    // declared length over the limit
    let big = json!({"member": {"ids": {"acme": "x".repeat(100)}}});
    let a = support::post_json(&url, &big).await;
    assert_problem(&a, 413);
    // chunked body that grows past the limit
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from_static(b"          "))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let res = client
        .request(
            Request::post(&url)
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let gw = gateway("", &silent_vendor().await).await;
    let a = support::get(&gw.url("/readyz")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["status"], "ready");
    let a = support::get(&gw.url("/v1/vendors")).await;
    assert_eq!(a.body["vendors"][0]["id"], "acme");
    assert_eq!(a.body["vendors"][0]["operations"], json!(["list_coupons"]));
    assert_eq!(a.body["vendors"][0]["circuit"], "closed");
    let text = String::from_utf8(support::get(&gw.url("/metrics")).await.raw.to_vec()).unwrap();
    assert!(text.contains("cgw_http_requests_total"), "{text}");
    assert!(text.contains("route=\"vendors\""), "{text}");
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_with_503() {
    let (vendor, mut accepted) = silent_vendor_counting().await;
    let gw = gateway(
        "  max_concurrency: 1\n  request_timeout_ms: 5000\n",
        &vendor,
    )
    .await;
    let url = gw.url("/v1/coupons/query");
    let body = json!({"member": {"ids": {"acme": "m"}}});
    // the first request holds the only slot while the vendor stays silent (2 s deadline)
    let first = {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move { support::post_json(&url, &body).await })
    };
    support::within(
        "the first request reaches the vendor",
        accepted.wait_for(|n| *n >= 1),
    )
    .await
    .unwrap();
    let shed = support::post_json(&url, &body).await;
    assert_problem(&shed, 503);
    assert_eq!(shed.headers["retry-after"], "1");
    let first = first.await.unwrap();
    assert_eq!(
        first.status, 504,
        "the silent vendor timed out: {}",
        first.body
    );
    assert_eq!(first.body["sources"][0]["outcome"], "timeout");
}

#[tokio::test]
async fn the_request_deadline_answers_504() {
    // the vendor's own deadline (2 s) is longer: this 504 is the request deadline's
    let gw = gateway("  request_timeout_ms: 300\n", &silent_vendor().await).await;
    let a = support::post_json(
        &gw.url("/v1/coupons/query"),
        &json!({"member": {"ids": {"acme": "m"}}}),
    )
    .await;
    assert_problem(&a, 504);
    assert!(
        a.body.get("sources").is_none(),
        "not a vendor timeout: {}",
        a.body
    );
}

#[tokio::test]
async fn readyz_answers_503_once_the_gateway_shuts_down() {
    let gw = gateway("", &silent_vendor().await).await;
    assert_eq!(support::get(&gw.url("/readyz")).await.status, 200);
    let state = gw.state.clone();
    gw.stop().await;
    // the stopped server no longer listens: ask the drained state through a fresh listener
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(coupon_gateway::http::server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let a = support::get(&format!("http://{addr}/readyz")).await;
    assert_problem(&a, 503);
    // still alive, just not ready
    assert_eq!(
        support::get(&format!("http://{addr}/healthz")).await.status,
        200
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway("  header_read_timeout_ms: 300\n", &silent_vendor().await).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/coupons/query HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // the gateway answers 408 or just closes; either way the read ends (long before the
    // sanity limit, which only stands for "left open")
    let read = tokio::time::timeout(support::SANITY, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was left open");
}

/// A repeat of a create whose first request is still at the vendor waits for its answer, but
/// only within its own deadline: past it, the caller hears 409 "still in progress" rather than
/// a bare 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_still_waiting_for_the_first_create_at_its_deadline_is_409_not_504() {
    use coupon_gateway::sandbox::{Fault, Sandbox};
    let sb = Sandbox::start().await.unwrap();
    // a vendor patient enough that the caller's 2 s deadline ends first
    let yaml = embedded::ROUTES_YAML
        .replacen("timeout_ms: 2000", "timeout_ms: 60000", 1)
        .replacen("attempt_timeout_ms: 900", "attempt_timeout_ms: 30000", 1)
        .replacen("request_timeout_ms: 5000", "request_timeout_ms: 2000", 1);
    assert!(yaml.contains("request_timeout_ms: 2000") && yaml.contains("timeout_ms: 60000"));
    let plan = embedded::sandbox_plan("routes.yaml", &yaml, &sb, false).unwrap();
    let gw = std::sync::Arc::new(embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ));
    // the token first, so that the hold below meets the create
    let list = support::send(
        Request::get(gw.url("/v1/templates?vendor=wxcard"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.body);
    sb.wxcard.set_fault(Fault::Hold);
    let body = json!({"vendor": "wxcard", "kind": "gift", "begin_at": "2030-01-01", "end_at": "2030-02-01",
        "sync": true, "card": {"base_info": {"title": "在途券", "color": "Color010", "brand_name": "海底捞"}, "gift": "蛋糕"}})
    .to_string();
    let post = |body: String| {
        let gw = gw.clone();
        async move {
            support::send(
                Request::post(gw.url("/v1/templates"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", "slow-create")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await
        }
    };
    let first = tokio::spawn(post(body.clone()));
    support::within("the create reaches the vendor", sb.wxcard.wait_held(1)).await;
    let repeat = post(body).await;
    assert_eq!(repeat.status, 409, "{}", repeat.body);
    assert_problem(&repeat, 409);
    assert!(
        repeat.body["detail"]
            .as_str()
            .unwrap()
            .contains("still in progress"),
        "{}",
        repeat.body
    );
    // the first is cut by its own deadline
    assert_eq!(first.await.unwrap().status, 504);
    sb.wxcard.release(1);
}

/// Headers up to the router's limit (64 KiB in all) are served; beyond it the answer is the
/// router's problem+json 431 (the parser's own limit is far higher, `server.rs`).
#[tokio::test]
async fn headers_are_served_up_to_64_kib_and_answered_431_beyond() {
    let gw = gateway("", &silent_vendor().await).await;
    let padded = |bytes: usize| {
        Request::get(gw.url("/healthz"))
            .header("x-padding", "a".repeat(bytes))
            .body(Full::default())
            .unwrap()
    };
    // a large token or a few cookies: several KiB
    let a = support::send(padded(16 * 1024)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = support::send(padded(65 * 1024)).await;
    assert_problem(&a, 431);
}

/// Query parameters are checked per route, after routing: an unknown path is 404 whatever its
/// query, only `GET /v1/templates` takes the list's parameters, and a POST's query string is
/// checked too.
#[tokio::test]
async fn query_parameters_are_refused_per_route_and_only_on_routed_paths() {
    let gw = gateway("", &silent_vendor().await).await;
    assert_problem(&support::get(&gw.url("/v1/nothing?x=1")).await, 404);
    let a = support::get(&gw.url("/v1/vendors?vendor=acme")).await;
    assert_problem(&a, 400);
    let a = support::post_json(
        &gw.url("/v1/coupons/query?vendor=acme"),
        &json!({"member": {"ids": {"acme": "m"}}}),
    )
    .await;
    assert_problem(&a, 400);
}

/// Each route takes only its own methods: any other is a 405 naming the route's, even where
/// another route shares the path's prefix; and `HEAD` is answered wherever `GET` is. The
/// route is picked by method and path (`route_name`), so a method check lost there would
/// serve `POST /healthz` or send every `PUT` to the template update.
#[tokio::test]
async fn every_route_answers_only_its_methods() {
    let gw = gateway("", &silent_vendor().await).await;
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/v1/vendors", "GET, HEAD"),
        ("POST", "/v1/config", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("PUT", "/v1/templates", "GET, HEAD, POST"),
        ("DELETE", "/v1/templates", "GET, HEAD, POST"),
        ("GET", "/v1/templates/acme/t1", "PUT"),
        ("POST", "/v1/packages/acme/p1", "GET, HEAD"),
        ("PUT", "/v1/packages/acme/p1", "GET, HEAD"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(gw.url(path))
            .body(Full::default())
            .unwrap();
        let a = support::send(req).await;
        assert_problem(&a, 405);
        assert_eq!(a.headers["allow"], allow, "{method} {path}");
    }
    // an unknown path is the router's own 404, not a route's (`/v1/packages/` answers its own)
    let a = support::get(&gw.url("/v1/nothing")).await;
    assert_problem(&a, 404);
    assert_eq!(a.body["detail"], "no such route", "{}", a.body);
    for path in ["/v1/config", "/openapi.json", "/v1/packages/acme/p1"] {
        let get = support::get(&gw.url(path)).await;
        assert_ne!(get.status, 405, "{path}: {}", get.body);
        let head = support::send(Request::head(gw.url(path)).body(Full::default()).unwrap()).await;
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.raw.is_empty(), "{path}: HEAD has no body");
    }
}

/// The header limit counts each field as its name, its value and 4 bytes (`: ` and CRLF), as
/// it would be written over HTTP/1: a request of exactly 64 KiB by that count is served, one
/// byte more is a 431; and 100 fields are served.
#[tokio::test]
async fn the_header_limit_is_exact_to_the_byte() {
    let gw = gateway("", &silent_vendor().await).await;
    // the fields the router sees: `host` and `x-request-id` given, so that the client and the
    // request-id layer add none, and the padding
    let fixed = ("host".len() + 1 + 4) + ("x-request-id".len() + 1 + 4) + ("x-padding".len() + 4);
    let padded = |total: usize| {
        Request::get(gw.url("/healthz"))
            .header("host", "h")
            .header("x-request-id", "r")
            .header("x-padding", "a".repeat(total - fixed))
            .body(Full::default())
            .unwrap()
    };
    let a = support::send(padded(64 * 1024)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = support::send(padded(64 * 1024 + 1)).await;
    assert_problem(&a, 431);
    // exactly 100 fields (HTTP/1's parser limit, the router's too) are served
    let mut req = Request::get(gw.url("/healthz"))
        .header("host", "h")
        .header("x-request-id", "r");
    for i in 0..98 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let a = support::send(req.body(Full::default()).unwrap()).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// `/v1/packages/{vendor}/{package_id}` needs both parts, non-empty, and nothing after the
/// id: anything else is the route's own 404 naming the path it takes, never a lookup of an
/// empty vendor or of an id with a slash in it.
#[tokio::test]
async fn a_package_path_without_both_its_parts_is_the_routes_404() {
    let gw = gateway("", &silent_vendor().await).await;
    for path in [
        "/v1/packages/acme",
        "/v1/packages//p1",
        "/v1/packages/acme/",
        "/v1/packages/acme/p1/more",
        "/v1/packages/acme//p1",
    ] {
        let a = support::get(&gw.url(path)).await;
        assert_problem(&a, 404);
        assert_eq!(
            a.body["detail"], "no such route: use /v1/packages/{vendor}/{package_id}",
            "{path}: {}",
            a.body
        );
    }
    // a whole path is looked up: acme offers no packages
    let a = support::get(&gw.url("/v1/packages/acme/p1")).await;
    assert_problem(&a, 404);
    assert_eq!(
        a.body["detail"], "no configured vendor of that id offers gift packages",
        "{}",
        a.body
    );
}

/// Request bodies are `application/json` or any `application/*+json` (docs/api.md), with
/// parameters and in any case; every other type is 415, even one ending in `+json` outside
/// `application/`. The body here is cut short, so a type read as JSON answers 400.
#[tokio::test]
async fn bodies_are_read_as_json_only_under_json_media_types() {
    let gw = gateway("", &silent_vendor().await).await;
    let url = gw.url("/v1/coupons/query");
    let send = |content_type: &'static str| {
        support::send(
            Request::post(&url)
                .header("content-type", content_type)
                .body(Full::new(Bytes::from_static(b"{\"member\":")))
                .unwrap(),
        )
    };
    for json_type in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.acme.query+json",
    ] {
        let a = send(json_type).await;
        assert_problem(&a, 400);
        assert!(
            a.body["detail"]
                .as_str()
                .unwrap()
                .contains("not a valid query"),
            "{json_type}: {}",
            a.body
        );
    }
    for other in [
        "application/xml",
        "application/json-seq",
        "text/json",
        "text/vnd.acme+json",
    ] {
        let a = send(other).await;
        assert_problem(&a, 415);
    }
}

/// A body that cannot be read (here a chunk whose size is not hexadecimal) is a 400 that says
/// so: 413 is kept for bodies over the limit, which a caller fixes differently.
#[tokio::test]
async fn a_body_that_cannot_be_read_is_400_not_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway("", &silent_vendor().await).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /v1/coupons/query HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\n2\r\n{\"\r\nzz\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    support::within("the gateway answers and closes", s.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(
        text.contains("the request body could not be read"),
        "{text}"
    );
}

/// A failed query's status and detail say which rule failed it: every vendor asked failed
/// (502), or a vendor the request `require`s did not answer while others did (502, with a
/// detail that does not claim every vendor failed).
#[tokio::test]
async fn a_failed_query_says_which_vendors_failed_it() {
    use coupon_gateway::sandbox::{Fault, Sandbox, data};
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", embedded::ROUTES_YAML, &sb, false).unwrap();
    let gw = embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let url = gw.url("/v1/coupons/query");
    let member = json!({"ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER}});
    // both down first, so that no answer of op is cached to be served stale
    sb.op.set_fault(Fault::Status(500));
    sb.hkl.set_fault(Fault::Status(500));
    let a = support::post_json(&url, &json!({"member": member})).await;
    assert_problem(&a, 502);
    assert_eq!(a.body["detail"], "every vendor asked failed", "{}", a.body);
    assert_eq!(a.body["complete"], false);
    sb.op.clear_fault();
    let a = support::post_json(&url, &json!({"member": member, "require": ["hkl"]})).await;
    assert_problem(&a, 502);
    assert_eq!(a.body["sources"][0]["outcome"], "ok", "{}", a.body);
    assert_eq!(
        a.body["detail"], "a vendor the request requires did not answer",
        "{}",
        a.body
    );
}
