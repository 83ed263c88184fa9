//! Signing and encryption steps: an input (a template, or sorted name/value pairs) run through
//! a chain of transforms, the result placed in a variable, a query parameter or a header.
//!
//! Transforms are typed while compiling: hashes, HMACs and DES produce bytes, encodings
//! produce text, and a chain must end in text, so a step can never put raw binary into a
//! header. The transforms themselves live in `engine::transforms`, one file per family.
use http::HeaderName;
use serde_json::Value;

use super::template::{JsonTemplate, Scope, Template, Values};
use super::transforms::{self, Accepts, Data, Produces};
use crate::crypto;

/// How sorted name/value pairs are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairStyle {
    /// `aXbY`: each name immediately followed by its value, no separators.
    NameValue,
    /// `a=X&b=Y`
    Pairs,
    /// `a=X&b=Y` with names and values RFC 3986 percent-encoded.
    PairsEncoded,
}

/// The length of `pairs` joined as `k=v&…` before any encoding: what a string that will
/// hold them is sized for.
pub fn pairs_len<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> usize {
    pairs.map(|(k, v)| k.len() + v.len() + 2).sum()
}

impl PairStyle {
    pub fn parse(s: &str) -> Option<PairStyle> {
        match s {
            "namevalue" => Some(PairStyle::NameValue),
            "pairs" => Some(PairStyle::Pairs),
            "pairs_encoded" => Some(PairStyle::PairsEncoded),
            _ => None,
        }
    }

    /// Joins pairs that are already sorted by name.
    pub fn join<'a>(self, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
        let mut out = String::with_capacity(pairs_len(pairs.clone()));
        for (i, (k, v)) in pairs.enumerate() {
            match self {
                PairStyle::NameValue => {
                    out.push_str(k);
                    out.push_str(v);
                }
                PairStyle::Pairs | PairStyle::PairsEncoded => {
                    if i > 0 {
                        out.push('&');
                    }
                    if self == PairStyle::PairsEncoded {
                        crypto::percent_encode_into(&mut out, k);
                        out.push('=');
                        crypto::percent_encode_into(&mut out, v);
                    } else {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub enum StepInput {
    Template(Template),
    /// Compact JSON of an object template (absent whole-placeholder fields left out).
    Json(JsonTemplate),
    /// Pairs sorted by name at compile time.
    Sorted {
        pairs: Vec<(String, Template)>,
        style: PairStyle,
        /// Pairs whose value renders empty are left out too (not only absent ones).
        skip_empty: bool,
    },
}

/// Where a step's result goes.
#[derive(Debug, Clone)]
pub enum Target {
    Var(usize),
    Query(String),
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub input: StepInput,
    pub transforms: Vec<transforms::Compiled>,
    pub target: Target,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("step `{step}`: {reason}")]
    Failed { step: String, reason: String },
}

/// Errors found inside one step: (sub-path such as `apply.1`, message).
pub type SubErrors = Vec<(String, String)>;

impl Step {
    /// Compiles the `input` and `apply` parts of a step; errors are (sub-path, message).
    pub fn compile_parts(
        input: &Value,
        apply: &[Value],
        scope: &dyn Scope,
    ) -> Result<(StepInput, Vec<transforms::Compiled>), SubErrors> {
        let mut errors = Vec::new();
        let input = match compile_input(input, scope) {
            Ok(i) => Some(i),
            Err((p, e)) => {
                errors.push((p, e));
                None
            }
        };
        let mut transforms = Vec::new();
        let mut binary = false;
        for (i, t) in apply.iter().enumerate() {
            match transforms::compile(t, scope) {
                Ok(t) => {
                    if binary && t.accepts == Accepts::Text {
                        errors.push((
                            format!("apply.{i}"),
                            "this transform needs text, but the step has bytes here: encode them first (hex_lower, hex_upper, base64, base64url)".to_owned(),
                        ));
                    }
                    binary = t.produces == Produces::Bytes;
                    transforms.push(t);
                }
                Err(e) => errors.push((format!("apply.{i}"), e)),
            }
        }
        if binary {
            errors.push((
                "apply".to_owned(),
                "the step ends in raw bytes: finish with hex_lower, hex_upper, base64 or base64url"
                    .to_owned(),
            ));
        }
        match input {
            Some(input) if errors.is_empty() => Ok((input, transforms)),
            _ => Err(errors),
        }
    }

    pub fn refs(&self) -> Vec<super::template::Ref> {
        let mut out: Vec<_> = match &self.input {
            StepInput::Template(t) => t.refs().collect(),
            StepInput::Json(t) => t.refs(),
            StepInput::Sorted { pairs, .. } => pairs.iter().flat_map(|(_, t)| t.refs()).collect(),
        };
        for t in &self.transforms {
            out.extend(t.imp.refs());
        }
        out
    }

    pub fn reads_request(&self) -> bool {
        self.refs().into_iter().any(|r| r.reads_request())
    }

    /// Runs the step for one attempt.
    pub fn run(&self, values: &dyn Values) -> Result<String, StepError> {
        self.apply(self.input(values)?, values)
    }

    fn fail(&self, reason: String) -> StepError {
        StepError::Failed {
            step: self.name.clone(),
            reason,
        }
    }

    /// The text the step's chain starts from (what `explain` shows before the transforms).
    pub fn input(&self, values: &dyn Values) -> Result<String, StepError> {
        let fail = |reason: String| self.fail(reason);
        Ok(match &self.input {
            StepInput::Template(t) => t.render(values).unwrap_or_default(),
            StepInput::Json(t) => {
                let mut buf = Vec::new();
                t.render(values, &mut buf)
                    .map_err(|e| fail(e.to_string()))?;
                String::from_utf8(buf).map_err(|e| fail(e.to_string()))?
            }
            StepInput::Sorted {
                pairs,
                style,
                skip_empty,
            } => {
                let rendered: Vec<(&str, String)> = pairs
                    .iter()
                    .filter_map(|(k, t)| t.render(values).map(|v| (k.as_str(), v)))
                    .filter(|(_, v)| !(*skip_empty && v.is_empty()))
                    .collect();
                style.join(rendered.iter().map(|(k, v)| (*k, v.as_str())))
            }
        })
    }

    /// Runs the step's transforms over its `input`.
    pub fn apply(&self, input: String, values: &dyn Values) -> Result<String, StepError> {
        let fail = |reason: String| self.fail(reason);
        let mut data = Data::Text(input);
        for t in &self.transforms {
            data = t.imp.run(data, values).map_err(fail)?;
        }
        match data {
            Data::Text(s) => Ok(s),
            Data::Bytes(_) => Err(fail("the step ended in bytes".to_owned())),
        }
    }
}

fn compile_input(input: &Value, scope: &dyn Scope) -> Result<StepInput, (String, String)> {
    match input {
        Value::String(s) => Template::compile(s, scope)
            .map(StepInput::Template)
            .map_err(|e| ("input".to_owned(), e)),
        Value::Object(map) if map.contains_key("json") => {
            if map.len() != 1 {
                return Err((
                    "input".to_owned(),
                    "`json` stands alone in an input".to_owned(),
                ));
            }
            let mut errors = Vec::new();
            // keys are written in name order (serde maps are sorted)
            let t =
                JsonTemplate::compile(&map["json"], scope, "input.json", &|_, k| k, &mut errors);
            match errors.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(StepInput::Json(t)),
            }
        }
        Value::Object(map) => {
            for key in map.keys() {
                if !["sorted", "style", "skip_empty"].contains(&key.as_str()) {
                    return Err((
                        format!("input.{key}"),
                        "unknown key (an input is a template, `{json: …}`, or `sorted` with `style`, `skip_empty`, `exclude`)".to_owned(),
                    ));
                }
            }
            let style = match map.get("style") {
                Some(Value::String(s)) => PairStyle::parse(s).ok_or_else(|| {
                    (
                        "input.style".to_owned(),
                        format!("unknown style `{s}` (known: namevalue, pairs, pairs_encoded)"),
                    )
                })?,
                Some(_) => return Err(("input.style".to_owned(), "must be a string".to_owned())),
                None => {
                    return Err((
                        "input".to_owned(),
                        "`sorted` needs a `style`: namevalue, pairs or pairs_encoded".to_owned(),
                    ));
                }
            };
            let Some(Value::Object(pairs)) = map.get("sorted") else {
                return Err((
                    "input.sorted".to_owned(),
                    "must be a mapping of name to template, `body` or `query`".to_owned(),
                ));
            };
            // serde_json maps iterate in key order: the pairs come out sorted by name
            let pairs = pairs
                .iter()
                .map(|(k, v)| {
                    let text = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    Template::compile(&text, scope)
                        .map(|t| (k.clone(), t))
                        .map_err(|e| (format!("input.sorted.{k}"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let skip_empty = match map.get("skip_empty") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(("input.skip_empty".to_owned(), "true or false".to_owned()));
                }
            };
            Ok(StepInput::Sorted {
                pairs,
                style,
                skip_empty,
            })
        }
        _ => Err((
            "input".to_owned(),
            "must be a template string, `{json: …}` or a `sorted` mapping".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::template::Ref;
    use serde_json::json;
    use std::borrow::Cow;

    struct S;
    impl Scope for S {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            match name {
                "cred.secret" => Ok(Ref::Cred(0)),
                "cred.des_key" => Ok(Ref::Cred(1)),
                "cred.open_id" => Ok(Ref::Cred(2)),
                "cred.grant_code" => Ok(Ref::Cred(3)),
                "now.s" => Ok(Ref::Now(0)),
                "nonce" => Ok(Ref::Nonce),
                "input.plain" => Ok(Ref::Input(0)),
                "request.body" => Ok(Ref::RequestBody),
                _ => Err(format!("unknown `{name}`")),
            }
        }
    }

    /// The zvcms worked example of the vendor kit.
    struct V;
    impl Values for V {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            Some(match r {
                Ref::Cred(0) => "zv-sandbox-secret".into(),
                Ref::Cred(1) => "hklkey01".into(),
                Ref::Cred(2) => "6dc05b4ac175cf316d226252b05cf685".into(),
                Ref::Cred(3) => "782c281f62".into(),
                Ref::Now(0) => "1547186244".into(),
                Ref::Nonce => "658979".into(),
                Ref::Input(0) => r#"{"memberId":"K1H93QDKI00B7"}"#.into(),
                _ => return None,
            })
        }
    }

    fn step(input: Value, apply: Value) -> Step {
        let (input, transforms) =
            Step::compile_parts(&input, apply.as_array().unwrap(), &S).unwrap();
        Step {
            name: "t".into(),
            input,
            transforms,
            target: Target::Var(0),
        }
    }

    #[test]
    fn sorted_pairs_hmac_sha1_base64_percent_is_the_zvcms_token() {
        let s = step(
            json!({"style": "pairs", "sorted": {
                "timestamp": "{{now.s}}", "openId": "{{cred.open_id}}",
                "nonce": "{{nonce}}", "grantCode": "{{cred.grant_code}}"}}),
            json!([{"hmac_sha1": "{{cred.secret}}"}, "base64", "percent_encode"]),
        );
        assert_eq!(s.run(&V).unwrap(), "m%2Fz8N8ig7rKR8f8gm%2BcZ%2B5DhwMk%3D");
    }

    #[test]
    fn des_then_hex_upper_is_the_hkl_param() {
        let s = step(
            json!("{{input.plain}}"),
            json!([{"des_ecb_pkcs5": "{{cred.des_key}}"}, "hex_upper"]),
        );
        assert_eq!(
            s.run(&V).unwrap(),
            "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E"
        );
    }

    #[test]
    fn json_input_leaves_absent_identities_out() {
        struct Member;
        impl Values for Member {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                match r {
                    Ref::Input(0) => Some("K1H93QDKI00B7".into()),
                    Ref::Cred(1) => Some("hklkey01".into()),
                    _ => None,
                }
            }
        }
        let s = step(
            json!({"json": {"memberId": "{{input.plain}}", "platformId": "{{nonce}}"}}),
            json!([{"des_ecb_pkcs5": "{{cred.des_key}}"}, "hex_upper"]),
        );
        // nonce is absent here, so only memberId is encrypted: the kit's first worked example
        assert_eq!(
            s.run(&Member).unwrap(),
            "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E"
        );
    }

    #[test]
    fn sorted_pairs_can_leave_empty_values_out() {
        struct Empty;
        impl Values for Empty {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                match r {
                    Ref::Input(0) => Some("".into()),
                    Ref::Nonce => Some("n1".into()),
                    _ => None,
                }
            }
        }
        let input = |skip: bool| json!({"style": "pairs", "skip_empty": skip, "sorted": {"b": "{{input.plain}}", "a": "{{nonce}}", "c": "{{cred.secret}}"}});
        assert_eq!(step(input(true), json!([])).run(&Empty).unwrap(), "a=n1");
        assert_eq!(
            step(input(false), json!([])).run(&Empty).unwrap(),
            "a=n1&b="
        );
    }

    #[test]
    fn pair_styles_join_as_documented() {
        let pairs = [("a", "1 2"), ("b", "x/y")];
        assert_eq!(PairStyle::NameValue.join(pairs.into_iter()), "a1 2bx/y");
        assert_eq!(PairStyle::Pairs.join(pairs.into_iter()), "a=1 2&b=x/y");
        assert_eq!(
            PairStyle::PairsEncoded.join(pairs.into_iter()),
            "a=1%202&b=x%2Fy"
        );
    }

    #[test]
    fn chains_are_type_checked() {
        let err = |input: Value, apply: Value| {
            Step::compile_parts(&input, apply.as_array().unwrap(), &S).unwrap_err()
        };
        let e = err(json!("x"), json!(["md5"]));
        assert!(e[0].1.contains("ends in raw bytes"), "{e:?}");
        let e = err(json!("x"), json!(["sha1", "percent_encode", "hex_lower"]));
        assert_eq!(e[0].0, "apply.1");
        let e = err(json!("x"), json!(["hmac_sha1"]));
        assert!(e[0].1.contains("needs a key"), "{e:?}");
        let e = err(json!("x"), json!(["crc32"]));
        assert!(e[0].1.contains("unknown transform `crc32`"), "{e:?}");
        let e = err(
            json!({"sorted": {"a": "1"}, "style": "csv"}),
            json!(["upper"]),
        );
        assert_eq!(e[0].0, "input.style");
    }

    #[test]
    fn des_with_a_bad_key_fails_at_run_time_without_panicking() {
        struct Short;
        impl Values for Short {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                (r == Ref::Cred(1)).then(|| "short".into())
            }
        }
        let s = step(
            json!("x"),
            json!([{"des_ecb_pkcs5": "{{cred.des_key}}"}, "hex_upper"]),
        );
        assert!(s.run(&Short).unwrap_err().to_string().contains("8 bytes"));
    }

    #[test]
    fn each_documented_style_compiles_to_its_join() {
        let input = |style: &str| json!({"style": style, "sorted": {"b": "x/y", "a": "1 2"}});
        for (style, joined) in [
            ("namevalue", "a1 2bx/y"),
            ("pairs", "a=1 2&b=x/y"),
            ("pairs_encoded", "a=1%202&b=x%2Fy"),
        ] {
            assert_eq!(
                step(input(style), json!([])).run(&V).unwrap(),
                joined,
                "{style}"
            );
        }
        assert!(PairStyle::parse("Pairs").is_none());
    }

    #[test]
    fn a_step_names_what_its_input_and_keys_read() {
        let s = step(
            json!({"json": {"m": "{{input.plain}}", "t": "{{now.s}}"}}),
            json!([{"hmac_sha1": "{{cred.secret}}"}, "base64"]),
        );
        assert_eq!(s.refs(), vec![Ref::Input(0), Ref::Now(0), Ref::Cred(0)]);
        assert!(!s.reads_request());
        // a signature over the rendered request can only be made once the request is
        let s = step(
            json!("{{cred.secret}}{{request.body}}"),
            json!(["md5", "hex_lower"]),
        );
        assert!(s.reads_request());
    }
}
