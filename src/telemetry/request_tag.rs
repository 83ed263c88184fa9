//! What a JSON log line written inside a request says about the request: its id, its trace
//! id when traces are exported, and the caller once known, under the line's `span` key.
//!
//! A `tracing` span would carry the same (and still does for the text log and for traces),
//! but a span costs a cached answer ~11 % of its instructions: the registry's slot, and the
//! log layer formatting its fields into JSON when it is made — for every request, although
//! almost no request writes a line. The tag is a task-local instead, set by the HTTP stack
//! around the request's future ([`scope`]) and read only when a line is written.
use std::cell::OnceCell;
use std::future::Future;

tokio::task_local! {
    static CURRENT: RequestTag;
}

/// One request's tag.
pub struct RequestTag {
    request_id: String,
    trace_id: Option<String>,
    caller: OnceCell<Box<str>>,
}

/// Runs `fut` with the request's tag current: lines it logs carry it (and so does its drop).
pub fn scope<F: Future>(
    request_id: String,
    trace_id: Option<String>,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<RequestTag, F> {
    CURRENT.scope(
        RequestTag {
            request_id,
            trace_id,
            caller: OnceCell::new(),
        },
        fut,
    )
}

/// Records who the caller is, for the lines logged from now on in this request (the first
/// name recorded stays). Outside a request, nothing happens.
pub fn set_caller(name: &str) {
    let _ = CURRENT.try_with(|t| {
        let _ = t.caller.set(name.into());
    });
}

/// The current request's tag as the log's `span` object: `name` ("request"), `request_id`,
/// and `trace_id` and `caller` when there are; `None` outside a request.
pub fn as_json() -> Option<serde_json::Value> {
    CURRENT
        .try_with(|t| {
            let mut m = serde_json::Map::with_capacity(4);
            m.insert("name".into(), "request".into());
            m.insert("request_id".into(), t.request_id.as_str().into());
            if let Some(id) = &t.trace_id {
                m.insert("trace_id".into(), id.as_str().into());
            }
            if let Some(c) = t.caller.get() {
                m.insert("caller".into(), (**c).into());
            }
            serde_json::Value::Object(m)
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tag_is_current_inside_its_scope_only() {
        assert!(as_json().is_none());
        let inside = scope("r-1".into(), None, async {
            set_caller("billing");
            set_caller("someone-else");
            tokio::task::yield_now().await;
            as_json()
        })
        .await;
        assert_eq!(
            inside,
            Some(serde_json::json!({"name": "request", "request_id": "r-1", "caller": "billing"}))
        );
        assert!(as_json().is_none());
        set_caller("nobody"); // outside a request: ignored, no panic
    }

    #[tokio::test]
    async fn a_trace_id_is_carried_when_there_is_one() {
        let inside = scope(
            "r-2".into(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            async { as_json() },
        )
        .await
        .unwrap();
        assert_eq!(inside["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(inside.get("caller").is_none());
    }
}
