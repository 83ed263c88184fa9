//! `server.max_vendor_calls`: vendor calls in progress at once, every vendor together. A call
//! beyond it waits for a slot (it is not refused), and its deadline runs while it waits. Over
//! real sockets against the strict sandbox vendors, held until the test lets them answer.
mod support;

use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::{Fault, Sandbox, demo_query};
use serde_json::{Value, json};

/// The shipped routes with `max_vendor_calls` set to `slots`, and the vendors' deadlines made
/// long enough that none runs out while the test holds and releases answers on a busy machine.
async fn gateway(slots: usize, sb: &Sandbox) -> embedded::Running {
    let routes = ROUTES_YAML
        .replace(
            "max_vendor_calls: 512",
            &format!("max_vendor_calls: {slots}"),
        )
        .replace("timeout_ms: 800", "timeout_ms: 4500")
        .replace("attempt_timeout_ms: 450", "attempt_timeout_ms: 4000");
    assert!(routes.contains(&format!("max_vendor_calls: {slots}")));
    let plan = embedded::sandbox_plan("routes.yaml", &routes, sb, false).unwrap();
    embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

/// Holds every vendor's answers until the test lets them go, and sends the demo query.
fn hold_all_and_ask(
    sb: &Sandbox,
    gw: &embedded::Running,
) -> tokio::task::JoinHandle<support::Answer> {
    for v in [&sb.op, &sb.hkl, &sb.zvcms] {
        v.set_fault(Fault::Hold);
    }
    let url = gw.url("/v1/coupons/query");
    let body: Value = serde_json::from_str(&demo_query()).unwrap();
    tokio::spawn(async move { support::post_json(&url, &body).await })
}

fn held(sb: &Sandbox) -> usize {
    [&sb.op, &sb.hkl, &sb.zvcms].iter().map(|v| v.held()).sum()
}

fn outcomes(body: &Value) -> Vec<(String, String)> {
    body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["vendor"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_slots_wait_for_one_and_then_answer() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(2, &sb).await;
    let asked = hold_all_and_ask(&sb, &gw);

    // two of the three vendors are asked; the third call waits for a slot
    support::until("two calls reach their vendors", || async { held(&sb) == 2 }).await;
    let reached = [&sb.op, &sb.hkl, &sb.zvcms]
        .iter()
        .filter(|v| v.requests() > 0)
        .count();
    assert_eq!(reached, 2, "only two calls may be in progress at once");
    let (waiting, first) = {
        let v = [&sb.op, &sb.hkl, &sb.zvcms];
        let waiting = v.iter().position(|v| v.requests() == 0).unwrap();
        let first = v.iter().position(|v| v.held() == 1).unwrap();
        (waiting, first)
    };
    let sims = [&sb.op, &sb.hkl, &sb.zvcms];

    // one call ends: its slot goes to the waiting call, which now reaches its vendor
    sims[first].release(1);
    support::until("the waiting call gets the freed slot", || async {
        sims[waiting].held() == 1
    })
    .await;
    assert_eq!(held(&sb), 2, "still two in progress");

    for v in sims {
        v.release(1);
    }
    let a = support::within("the query answers", asked).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let mut got = outcomes(&a.body);
    got.sort();
    let ok = |v: &str| (v.to_owned(), "ok".to_owned());
    assert_eq!(got, vec![ok("hkl"), ok("op"), ok("zvcms")]);
    // each vendor was asked once: waiting for a slot is not a failed attempt
    for v in sims {
        assert_eq!(v.requests(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_waits_for_a_slot_past_its_deadline_is_a_timeout_that_never_reached_the_vendor()
{
    let sb = Sandbox::start().await.unwrap();
    // one slot; op (the first vendor of the file) with a deadline far beyond the others' 800 ms
    let routes = ROUTES_YAML
        .replace("max_vendor_calls: 512", "max_vendor_calls: 1")
        .replacen("timeout_ms: 800", "timeout_ms: 4500", 1)
        .replacen("attempt_timeout_ms: 450", "attempt_timeout_ms: 4000", 1);
    let plan = embedded::sandbox_plan("routes.yaml", &routes, &sb, false).unwrap();
    let gw = embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let url = gw.url("/v1/coupons/query");
    let mut query: Value = serde_json::from_str(&demo_query()).unwrap();
    // a first caller's call to op takes the slot and is held there
    sb.op.set_fault(Fault::Hold);
    query["vendors"] = json!(["op"]);
    let first = tokio::spawn({
        let (url, query) = (url.clone(), query.clone());
        async move { support::post_json(&url, &query).await }
    });
    support::until("op's call holds the slot", || async { sb.op.held() == 1 }).await;

    // a second caller's calls to hkl and zvcms wait for it until their deadlines
    query["vendors"] = json!(["hkl", "zvcms"]);
    let a = support::post_json(&url, &query).await;
    assert_eq!(a.status, 504, "{}", a.body);
    let mut got = outcomes(&a.body);
    got.sort();
    let timeout = |v: &str| (v.to_owned(), "timeout".to_owned());
    assert_eq!(got, vec![timeout("hkl"), timeout("zvcms")]);
    assert_eq!(sb.hkl.requests(), 0, "hkl was never asked");
    assert_eq!(sb.zvcms.requests(), 0, "zvcms was never asked");

    // op's answer, released, still comes within op's own deadline
    sb.op.release(1);
    let a = support::within("the first caller's answer", first)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(outcomes(&a.body), vec![("op".to_owned(), "ok".to_owned())]);
}
