//! `application/x-www-form-urlencoded` request bodies: a flat mapping of names to text, each
//! pair encoded as HTML forms do (space as `+`), members left out when their value is absent.
use std::sync::Arc;

use serde_json::Value;

use super::{BodyWriter, FormatKind};
use crate::engine::template::{JsonTemplate, RenderError, Values};

pub struct Form;

impl FormatKind for Form {
    fn name(&self) -> &'static str {
        "form"
    }
    fn summary(&self) -> &'static str {
        "`a=1&b=x+y`: a flat mapping of names to text; absent values are left out"
    }
    fn writer(
        &self,
        options: &Value,
        body: &JsonTemplate,
    ) -> Option<Result<Arc<dyn BodyWriter>, String>> {
        if !options.is_null() {
            return Some(Err("`form` takes no options".to_owned()));
        }
        Some(match body.members() {
            Some(members) if members.iter().all(|m| m.value.is_scalar()) => Ok(Arc::new(Run)),
            _ => Err(
                "a form body is a mapping of names to text (no nested objects or lists)".to_owned(),
            ),
        })
    }
}

#[derive(Debug)]
struct Run;

impl BodyWriter for Run {
    fn content_type(&self) -> &'static str {
        "application/x-www-form-urlencoded"
    }
    fn write(
        &self,
        body: &JsonTemplate,
        values: &dyn Values,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for m in body.members().unwrap_or_default() {
            if let Some(v) = m.value.text(values)? {
                form.append_pair(&m.key, &v);
            }
        }
        out.extend_from_slice(form.finish().as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::template::{Ref, Scope};
    use serde_json::json;
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
    impl Values for V {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::Nonce).then(|| "a b&c=d/é".into())
        }
    }

    #[test]
    fn pairs_are_form_encoded_in_file_order_and_absent_ones_left_out() {
        let mut errors = Vec::new();
        let t = JsonTemplate::compile(
            &json!({"method": "taobao.coupon.get", "n": "{{nonce}}", "who": "{{member.id}}", "v": 2}),
            &S,
            "body",
            &|_, k| k,
            &mut errors,
        );
        let w = Form.writer(&Value::Null, &t).unwrap().unwrap();
        let mut out = Vec::new();
        w.write(&t, &V, &mut out).unwrap();
        // serde maps are sorted here (no file order in this test)
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "method=taobao.coupon.get&n=a+b%26c%3Dd%2F%C3%A9&v=2"
        );
        let nested =
            JsonTemplate::compile(&json!({"a": {"b": 1}}), &S, "b", &|_, k| k, &mut errors);
        assert!(Form.writer(&Value::Null, &nested).unwrap().is_err());
    }
}
