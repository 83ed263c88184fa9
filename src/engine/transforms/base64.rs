//! Base64 (RFC 4648 section 4, padded) and base64url (section 5, unpadded).
use std::sync::Arc;

use super::{Alias, Args, Data, Example, Param, ParamKind, Produces, Transform, TransformKind};
use crate::crypto;
use crate::engine::template::Values;

pub struct Base64;

impl TransformKind for Base64 {
    fn name(&self) -> &'static str {
        "base64"
    }
    fn summary(&self) -> &'static str {
        "base64 text of the bytes (`url`: the URL-safe alphabet, no padding)"
    }
    fn params(&self) -> &'static [Param] {
        &[Param {
            name: "alphabet",
            doc: "the alphabet",
            kind: ParamKind::Choice(&["standard", "url"]),
        }]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[Alias {
            name: "base64url",
            args: &[("alphabet", "url")],
        }]
    }
    fn produces(&self) -> Produces {
        Produces::Text
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        Ok(Arc::new(Run(args.word("alphabet") == "url")))
    }
    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                apply: r#""base64""#,
                input: "foobar",
                output: "Zm9vYmFy",
            },
            Example {
                apply: r#""base64""#,
                input: "?>~ûÿ",
                output: "Pz5+w7vDvw==",
            },
            Example {
                apply: r#""base64url""#,
                input: "?>~ûÿ",
                output: "Pz5-w7vDvw",
            },
        ]
    }
}

#[derive(Debug)]
struct Run(bool);

impl Transform for Run {
    fn run(&self, data: Data, _: &dyn Values) -> Result<Data, String> {
        let b = data.bytes();
        Ok(Data::Text(if self.0 {
            crypto::base64url(b)
        } else {
            crypto::base64(b)
        }))
    }
}
