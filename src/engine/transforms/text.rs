//! Text to text: RFC 3986 percent-encoding and letter case. They need text, so bytes must be
//! encoded (hex, base64) before them.
use std::sync::Arc;

use super::{Accepts, Args, Data, Example, Produces, Transform, TransformKind};
use crate::crypto;
use crate::engine::template::Values;

pub struct PercentEncode;
pub struct Upper;
pub struct Lower;

/// A text-to-text transform: its name, summary, function and examples.
macro_rules! text_kind {
    ($kind:ident, $name:literal, $summary:literal, $f:expr, [$($ex:expr),*]) => {
        impl TransformKind for $kind {
            fn name(&self) -> &'static str {
                $name
            }
            fn summary(&self) -> &'static str {
                $summary
            }
            fn accepts(&self) -> Accepts {
                Accepts::Text
            }
            fn produces(&self) -> Produces {
                Produces::Text
            }
            fn compile(&self, _: &Args) -> Result<Arc<dyn Transform>, String> {
                Ok(Arc::new(Run($name, $f)))
            }
            fn examples(&self) -> &'static [Example] {
                &[$($ex),*]
            }
        }
    };
}

text_kind!(
    PercentEncode,
    "percent_encode",
    "RFC 3986 percent-encoding: all but `A-Z a-z 0-9 - . _ ~`",
    |s: &str| crypto::percent_encode(s),
    [Example {
        apply: r#""percent_encode""#,
        input: "a b/é~+=",
        output: "a%20b%2F%C3%A9~%2B%3D"
    }]
);
text_kind!(
    Upper,
    "upper",
    "upper case",
    |s: &str| s.to_uppercase(),
    [Example {
        apply: r#""upper""#,
        input: "abé",
        output: "ABÉ"
    }]
);
text_kind!(
    Lower,
    "lower",
    "lower case",
    |s: &str| s.to_lowercase(),
    [Example {
        apply: r#""lower""#,
        input: "ABÉ",
        output: "abé"
    }]
);

struct Run(&'static str, fn(&str) -> String);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Transform for Run {
    fn run(&self, data: Data, _: &dyn Values) -> Result<Data, String> {
        match data {
            Data::Text(s) => Ok(Data::Text((self.1)(&s))),
            // the step compiler refuses a text transform after bytes
            Data::Bytes(_) => Err(format!("`{}` met bytes", self.0)),
        }
    }
}
