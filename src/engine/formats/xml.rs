//! XML request bodies and answers.
//!
//! Writing: the body mapping becomes child elements of a root (`xml` unless
//! `format: {xml: {root: NAME}}`); nested mappings nest, lists repeat the element, text is
//! escaped, absent values are left out.
//!
//! Reading, so the same JSONPaths work: the root element is `$`; a child element is a member
//! named after it; an element with only text is that text (a string, whitespace trimmed); an
//! element with children or attributes is an object (attributes as `@name`, its own text as
//! `#text`); a repeated element is a list; CDATA is text. Nesting deeper than 64 is refused.
use std::sync::Arc;

use quick_xml::events::Event;
use serde_json::{Map, Value};

use super::{AnswerReader, BodyWriter, FormatKind};
use crate::engine::template::{JsonTemplate, RenderError, Values};

pub struct Xml;

const MAX_DEPTH: usize = 64;

impl FormatKind for Xml {
    fn name(&self) -> &'static str {
        "xml"
    }
    fn summary(&self) -> &'static str {
        "`<xml><a>1</a></xml>`; answers read as JSON: root = `$`, elements = members, repeats = lists, attributes = `@name`"
    }
    fn options(&self) -> &'static str {
        "`root`: the root element (default `xml`)"
    }
    fn writer(
        &self,
        options: &Value,
        body: &JsonTemplate,
    ) -> Option<Result<Arc<dyn BodyWriter>, String>> {
        let root = match options {
            Value::Null => "xml".to_owned(),
            Value::Object(m) => match (m.get("root"), m.len()) {
                (Some(Value::String(r)), 1) if valid_name(r) => r.clone(),
                _ => return Some(Err("`xml` takes `{root: NAME}` (an XML name)".to_owned())),
            },
            _ => return Some(Err("`xml` takes `{root: NAME}`".to_owned())),
        };
        if body.members().is_none() {
            return Some(Err(
                "an XML body is a mapping of element names to values".to_owned()
            ));
        }
        Some(Ok(Arc::new(Writer { root })))
    }
    fn reader(&self) -> Option<Arc<dyn AnswerReader>> {
        Some(Arc::new(Reader))
    }
}

fn valid_name(n: &str) -> bool {
    n.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c))
}

#[derive(Debug)]
struct Writer {
    root: String,
}

impl BodyWriter for Writer {
    fn content_type(&self) -> &'static str {
        "application/xml"
    }
    fn write(
        &self,
        body: &JsonTemplate,
        values: &dyn Values,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        element(&self.root, body, values, out)?;
        Ok(())
    }
}

/// Writes `<name>…</name>` for `t`; false (nothing written) when its value is absent.
fn element(
    name: &str,
    t: &JsonTemplate,
    values: &dyn Values,
    out: &mut Vec<u8>,
) -> Result<bool, RenderError> {
    if let JsonTemplate::Array(items) = t {
        let mut any = false;
        for item in items {
            any |= element(name, item, values, out)?;
        }
        return Ok(any);
    }
    let mark = out.len();
    out.extend_from_slice(format!("<{name}>").as_bytes());
    match t.members() {
        Some(members) => {
            for m in members {
                element(&m.key, &m.value, values, out)?;
            }
        }
        None => match t.text(values)? {
            Some(text) => {
                out.extend_from_slice(quick_xml::escape::escape(text.as_str()).as_bytes())
            }
            None => {
                out.truncate(mark);
                return Ok(false);
            }
        },
    }
    out.extend_from_slice(format!("</{name}>").as_bytes());
    Ok(true)
}

#[derive(Debug)]
struct Reader;

/// An element being read: its members and its text.
struct Frame {
    name: String,
    members: Map<String, Value>,
    text: String,
}

impl Frame {
    fn into_value(self) -> Value {
        let text = self.text.trim();
        if self.members.is_empty() {
            return Value::String(text.to_owned());
        }
        let mut m = self.members;
        if !text.is_empty() {
            m.insert("#text".to_owned(), Value::String(text.to_owned()));
        }
        Value::Object(m)
    }
}

/// Adds a member; a repeated name becomes a list.
fn add(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(list)) => list.push(value),
        Some(first) => {
            let first = first.take();
            map.insert(name, Value::Array(vec![first, value]));
        }
    }
}

impl AnswerReader for Reader {
    fn accept(&self) -> &'static str {
        "application/xml"
    }

    fn read(&self, body: &[u8]) -> Result<Value, String> {
        let text = std::str::from_utf8(body).map_err(|_| "answer is not UTF-8 XML".to_owned())?;
        let mut reader = quick_xml::Reader::from_str(text);
        let bad = |e: &dyn std::fmt::Display| format!("answer is not XML: {e}");
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<Value> = None;
        loop {
            let event = reader.read_event().map_err(|e| bad(&e))?;
            match event {
                Event::Start(e) | Event::Empty(e) if root.is_some() => {
                    let _ = e;
                    return Err("answer is not XML: more than one root element".to_owned());
                }
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(format!("answer nests deeper than {MAX_DEPTH} elements"));
                    }
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    let mut members = Map::new();
                    for a in e.attributes() {
                        let a = a.map_err(|e| bad(&e))?;
                        let key =
                            format!("@{}", String::from_utf8_lossy(a.key.local_name().as_ref()));
                        let value = a.unescape_value().map_err(|e| bad(&e))?;
                        members.insert(key, Value::String(value.into_owned()));
                    }
                    let frame = Frame {
                        name,
                        members,
                        text: String::new(),
                    };
                    if matches!(event, Event::Empty(_)) {
                        close(&mut stack, &mut root, frame);
                    } else {
                        stack.push(frame);
                    }
                }
                Event::End(_) => {
                    let frame = stack.pop().ok_or_else(|| bad(&"unbalanced end tag"))?;
                    close(&mut stack, &mut root, frame);
                }
                Event::Text(t) => {
                    if let Some(f) = stack.last_mut() {
                        f.text.push_str(&t.xml_content().map_err(|e| bad(&e))?);
                    }
                }
                Event::CData(t) => {
                    if let Some(f) = stack.last_mut() {
                        f.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(f) = stack.last_mut() {
                        let resolved = match r.resolve_char_ref().map_err(|e| bad(&e))? {
                            Some(c) => c.to_string(),
                            None => {
                                let name = r.decode().map_err(|e| bad(&e))?;
                                quick_xml::escape::resolve_xml_entity(&name)
                                    .ok_or_else(|| bad(&format!("unknown entity `{name}`")))?
                                    .to_owned()
                            }
                        };
                        f.text.push_str(&resolved);
                    }
                }
                Event::Eof => break,
                // declarations, comments, processing instructions, doctype
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err("answer is not XML: it ends inside an element".to_owned());
        }
        root.ok_or_else(|| "answer is not XML: no root element".to_owned())
    }
}

fn close(stack: &mut [Frame], root: &mut Option<Value>, frame: Frame) {
    let name = frame.name.clone();
    let value = frame.into_value();
    match stack.last_mut() {
        Some(parent) => add(&mut parent.members, name, value),
        None => *root = Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_read_as_json_the_same_paths_can_walk() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <result_code>SUCCESS</result_code>
  <coupon_count>2</coupon_count>
  <coupon id="1" type="CASH"><name>满100减10 &amp; more</name><value>1000</value></coupon>
  <coupon id="2"><name>&#x4F18;惠</name></coupon>
  <empty/>
  <!-- a comment -->
</xml>"#;
        let v = Reader.read(doc.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({
                "return_code": "SUCCESS",
                "result_code": "SUCCESS",
                "coupon_count": "2",
                "coupon": [
                    {"@id": "1", "@type": "CASH", "name": "满100减10 & more", "value": "1000"},
                    {"@id": "2", "name": "优惠"}
                ],
                "empty": ""
            })
        );
    }

    #[test]
    fn bodies_are_written_as_elements_under_the_root() {
        use crate::engine::template::{Ref, Scope};
        use std::borrow::Cow;
        struct S;
        impl Scope for S {
            fn resolve(&self, name: &str) -> Result<Ref, String> {
                match name {
                    "nonce" => Ok(Ref::Nonce),
                    "member.id" => Ok(Ref::MemberId),
                    _ => Err("no".into()),
                }
            }
        }
        struct V;
        impl crate::engine::template::Values for V {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                (r == Ref::Nonce).then(|| "a<b&c".into())
            }
        }
        let mut errors = Vec::new();
        let t = JsonTemplate::compile(
            &json!({"appid": "wx1", "nonce_str": "{{nonce}}", "openid": "{{member.id}}", "n": 3, "list": ["x", "y"], "detail": {"k": "v"}}),
            &S,
            "body",
            &|_, k| k,
            &mut errors,
        );
        let w = Xml
            .writer(&json!({"root": "request"}), &t)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        w.write(&t, &V, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<request><appid>wx1</appid><detail><k>v</k></detail><list>x</list><list>y</list><n>3</n><nonce_str>a&lt;b&amp;c</nonce_str></request>"
        );
        assert!(Xml.writer(&json!({"root": "1bad"}), &t).unwrap().is_err());
    }

    #[test]
    fn broken_or_hostile_xml_is_refused() {
        for bad in [
            "",
            "<a><b></a>",
            "<a></a><b></b>",
            "<a>&unknown;</a>",
            "not xml",
            "<a>",
        ] {
            assert!(Reader.read(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(Reader.read(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
