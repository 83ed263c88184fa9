//! Body formats: how a request body template is written (`request.format`) and how a vendor's
//! answer is read into the JSON that envelopes and field mappings walk (`response.format`).
//!
//! Each format lives in a file of its own and implements [`FormatKind`]; [`REGISTRY`] lists
//! them once. A format may write requests, read answers, or both.
mod form;
mod json;
mod xml;

use std::sync::Arc;

use serde_json::Value;

use super::projection::{Projected, Projection};
use super::template::{JsonTemplate, RenderError, Values};

/// A body format.
pub trait FormatKind: Sync {
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    /// Options written as `format: {NAME: {…}}`, for the docs.
    fn options(&self) -> &'static str {
        "—"
    }
    /// A writer of request bodies from `options` (`Value::Null` when none were given), after
    /// checking the body template fits; None when this format cannot be sent.
    fn writer(
        &self,
        _options: &Value,
        _body: &JsonTemplate,
    ) -> Option<Result<Arc<dyn BodyWriter>, String>> {
        None
    }
    /// A reader of answers; None when answers never come in this format.
    fn reader(&self) -> Option<Arc<dyn AnswerReader>> {
        None
    }
}

/// Writes a request body.
pub trait BodyWriter: std::fmt::Debug + Send + Sync {
    fn content_type(&self) -> &'static str;
    fn write(
        &self,
        body: &JsonTemplate,
        values: &dyn Values,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError>;
}

/// Reads an answer body into JSON.
pub trait AnswerReader: std::fmt::Debug + Send + Sync {
    /// The `Accept` a request sends unless its headers say otherwise.
    fn accept(&self) -> &'static str;
    fn read(&self, body: &[u8]) -> Result<Value, String>;
    /// Reads only the members `projection` keeps (items into slots where it says so), where
    /// the format can skip the others while parsing; reads everything otherwise.
    fn read_projected(&self, body: &[u8], _projection: &Projection) -> Result<Projected, String> {
        Ok(Projected {
            doc: self.read(body)?,
            items: None,
        })
    }
}

/// Every format, in documentation order.
pub static REGISTRY: &[&dyn FormatKind] = &[&json::Json, &form::Form, &xml::Xml];

fn known(f: impl Fn(&dyn FormatKind) -> bool) -> String {
    let names: Vec<&str> = REGISTRY
        .iter()
        .filter(|k| f(**k))
        .map(|k| k.name())
        .collect();
    names.join(", ")
}

/// `request.format`: a name, or `{NAME: {options}}`; absent = JSON.
pub fn writer(format: Option<&Value>, body: &JsonTemplate) -> Result<Arc<dyn BodyWriter>, String> {
    let (name, options) = match format {
        None => ("json", &Value::Null),
        Some(Value::String(n)) => (n.as_str(), &Value::Null),
        Some(Value::Object(m)) if m.len() == 1 => {
            let (n, o) = m.iter().next().expect("one entry");
            (n.as_str(), o)
        }
        Some(_) => return Err("`format` is a name or `{name: {options}}`".to_owned()),
    };
    let known = || {
        known(|k| {
            k.writer(&Value::Null, &JsonTemplate::Object(Vec::new()))
                .is_some()
        })
    };
    let kind = REGISTRY
        .iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| format!("unknown body format `{name}` (known: {})", known()))?;
    kind.writer(options, body).unwrap_or_else(|| {
        Err(format!(
            "`{name}` is not a request body format (known: {})",
            known()
        ))
    })
}

/// `response.format`; absent = JSON.
pub fn reader(format: Option<&str>) -> Result<Arc<dyn AnswerReader>, String> {
    let name = format.unwrap_or("json");
    REGISTRY
        .iter()
        .find(|k| k.name() == name)
        .and_then(|k| k.reader())
        .ok_or_else(|| {
            format!(
                "unknown answer format `{name}` (known: {})",
                known(|k| k.reader().is_some())
            )
        })
}

/// The reference table of docs/routes.md, made from the registry.
pub fn reference_table() -> String {
    let mut out = String::from(
        "| format | request body | answer | options | what it is |\n| --- | --- | --- | --- | --- |\n",
    );
    for k in REGISTRY {
        let w = k
            .writer(&Value::Null, &JsonTemplate::Object(Vec::new()))
            .and_then(Result::ok)
            .map_or("—".to_owned(), |w| format!("`{}`", w.content_type()));
        let r = k
            .reader()
            .map_or("—".to_owned(), |r| format!("`{}`", r.accept()));
        out.push_str(&format!(
            "| `{}` | {w} | {r} | {} | {} |\n",
            k.name(),
            k.options(),
            k.summary()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_error(format: Value) -> String {
        writer(Some(&format), &JsonTemplate::Object(Vec::new())).unwrap_err()
    }

    #[test]
    fn formats_are_named_once_and_unknown_ones_list_the_known() {
        let body = JsonTemplate::Object(Vec::new());
        assert_eq!(
            writer(None, &body).unwrap().content_type(),
            "application/json"
        );
        assert_eq!(
            writer(Some(&serde_json::json!({"json": {}})), &body)
                .unwrap()
                .content_type(),
            "application/json"
        );
        assert_eq!(
            writer_error(serde_json::json!({"json": {}, "form": {}})),
            "`format` is a name or `{name: {options}}`"
        );
        assert_eq!(
            writer_error(serde_json::json!({})),
            "`format` is a name or `{name: {options}}`"
        );
        assert_eq!(
            writer_error(serde_json::json!("yaml")),
            "unknown body format `yaml` (known: json, form, xml)"
        );
        assert_eq!(reader(None).unwrap().accept(), "application/json");
        // form is written, never read
        assert_eq!(
            reader(Some("form")).unwrap_err(),
            "unknown answer format `form` (known: json, xml)"
        );
    }
    #[test]
    fn a_format_that_cannot_skip_members_reads_a_projected_answer_whole() {
        let op = r#"
        identity: [member_id]
        request: {method: GET, path: /c}
        response:
          format: xml
          success: [{path: $.code, in: ["0"]}]
          items: $.coupon
        fields: {id: $.id, status: {value: usable}}
"#;
        let plan = crate::engine::plan::one_operation(op).unwrap();
        let projection = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let xml = reader(Some("xml")).unwrap();
        let body = b"<xml><code>0</code><coupon><id>a</id></coupon><junk>1</junk></xml>";
        let whole = xml.read(body).unwrap();
        assert_eq!(whole["coupon"]["id"], "a", "{whole}");
        let read = xml.read_projected(body, projection).unwrap();
        assert_eq!(read.doc, whole);
        assert!(read.items.is_none());
    }
}
