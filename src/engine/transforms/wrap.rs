//! Text around the chain's text: `prefix` + input + `suffix`, both templates.
//!
//! What it is for: a signing step that reads the request can only send its result as a whole
//! query parameter or header, so a header that carries the signature among other fields (the
//! pay-v3 style `Authorization: SCHEME mchid="…",nonce_str="…",signature="…"`) is built by
//! wrapping the encoded signature. It also puts a secret around a `sorted` input before
//! hashing (`secret + k1v1k2v2… + secret`, or `k=v&…` + `&key=secret`), which the `sorted`
//! input form cannot do by itself. A prefix or suffix made only of credentials is rendered
//! once at start-up; one that names request values (`{{nonce}}`, `{{now.s}}`) per attempt,
//! with the same values the rest of the attempt sees.
use std::sync::Arc;

use super::{
    Accepts, Args, Data, Example, Key, Param, ParamKind, Produces, Transform, TransformKind,
};
use crate::engine::template::{Ref, Values};

pub struct Wrap;

impl TransformKind for Wrap {
    fn name(&self) -> &'static str {
        "wrap"
    }
    fn summary(&self) -> &'static str {
        "`prefix`, then the input, then `suffix` (e.g. a signature inside an `Authorization` header, or a secret around a sorted string)"
    }
    fn params(&self) -> &'static [Param] {
        &[
            Param {
                name: "prefix",
                doc: "a template put before the input",
                kind: ParamKind::OptionalKey,
            },
            Param {
                name: "suffix",
                doc: "a template put after the input",
                kind: ParamKind::OptionalKey,
            },
        ]
    }
    fn accepts(&self) -> Accepts {
        Accepts::Text
    }
    fn produces(&self) -> Produces {
        Produces::Text
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        let (prefix, suffix) = (args.optional_key("prefix"), args.optional_key("suffix"));
        if prefix.is_none() && suffix.is_none() {
            return Err("`wrap` needs a `prefix`, a `suffix` or both".to_owned());
        }
        Ok(Arc::new(Run { prefix, suffix }))
    }
    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                apply: r#"{"wrap": {"prefix": "sec", "suffix": "sec"}}"#,
                input: "a1b2",
                output: "seca1b2sec",
            },
            Example {
                apply: r#"{"wrap": {"suffix": "&key=192006250b4c09247ec02edce69f6a2d"}}"#,
                input: "appid=wxd930ea5d5a258f4f&body=test",
                output: "appid=wxd930ea5d5a258f4f&body=test&key=192006250b4c09247ec02edce69f6a2d",
            },
            Example {
                apply: r#"{"wrap": {"prefix": "SCHEME mchid=\"1900000001\",signature=\"", "suffix": "\""}}"#,
                input: "Zm9vYmFy",
                output: r#"SCHEME mchid="1900000001",signature="Zm9vYmFy""#,
            },
        ]
    }
}

struct Run {
    prefix: Option<Key>,
    suffix: Option<Key>,
}

impl std::fmt::Debug for Run {
    // the prefix and suffix may hold secrets
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrap")
    }
}

impl Transform for Run {
    fn run(&self, data: Data, values: &dyn Values) -> Result<Data, String> {
        let Data::Text(text) = data else {
            // the step compiler refuses a text transform after bytes
            return Err("`wrap` met bytes".to_owned());
        };
        let part = |k: &Option<Key>| {
            k.as_ref()
                .map(|k| String::from_utf8_lossy(&k.bytes(values)).into_owned())
                .unwrap_or_default()
        };
        Ok(Data::Text(format!(
            "{}{text}{}",
            part(&self.prefix),
            part(&self.suffix)
        )))
    }
    fn refs(&self) -> Vec<Ref> {
        [&self.prefix, &self.suffix]
            .into_iter()
            .flatten()
            .flat_map(Key::refs)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;

    use super::super::compile;
    use super::*;
    use crate::engine::template::Scope;

    struct Names;
    impl Scope for Names {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            match name {
                "cred.secret" => Ok(Ref::Cred(0)),
                "nonce" => Ok(Ref::Nonce),
                _ => Err(format!("unknown `{name}`")),
            }
        }
        fn fixed(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::Cred(0)).then_some(Cow::Borrowed("s3cret"))
        }
    }
    struct Attempt;
    impl Values for Attempt {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::Nonce).then_some(Cow::Borrowed("658979"))
        }
    }

    #[test]
    fn credentials_once_request_values_per_attempt_and_nothing_shown() {
        let t = compile(
            &json!({"wrap": {"prefix": "{{cred.secret}}", "suffix": "{{cred.secret}}"}}),
            &Names,
        )
        .unwrap();
        assert!(t.imp.refs().is_empty());
        assert!(!format!("{t:?}").contains("s3cret"));
        let out = t.imp.run(Data::Text("a1b2".into()), &Attempt).unwrap();
        assert_eq!(out, Data::Text("s3creta1b2s3cret".into()));

        let t = compile(
            &json!({"wrap": {"prefix": "n=\"{{nonce}}\",sig=\"", "suffix": "\""}}),
            &Names,
        )
        .unwrap();
        assert_eq!(t.imp.refs(), vec![Ref::Nonce]);
        let out = t.imp.run(Data::Text("Zm9v".into()), &Attempt).unwrap();
        assert_eq!(out, Data::Text(r#"n="658979",sig="Zm9v""#.into()));

        let e = compile(&json!({"wrap": {}}), &Names).unwrap_err();
        assert!(e.contains("needs a `prefix`, a `suffix` or both"), "{e}");
        assert!(compile(&json!({"wrap": {"prefix": 1}}), &Names).is_err());
    }
}
