//! Hexadecimal encoding (RFC 4648 section 8), lower or upper case.
use std::sync::Arc;

use super::{Alias, Args, Data, Example, Param, ParamKind, Produces, Transform, TransformKind};
use crate::crypto;
use crate::engine::template::Values;

pub struct Hex;

impl TransformKind for Hex {
    fn name(&self) -> &'static str {
        "hex"
    }
    fn summary(&self) -> &'static str {
        "hexadecimal text of the bytes"
    }
    fn params(&self) -> &'static [Param] {
        &[Param {
            name: "case",
            doc: "letter case",
            kind: ParamKind::Choice(&["lower", "upper"]),
        }]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[
            Alias {
                name: "hex_lower",
                args: &[("case", "lower")],
            },
            Alias {
                name: "hex_upper",
                args: &[("case", "upper")],
            },
        ]
    }
    fn produces(&self) -> Produces {
        Produces::Text
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        Ok(Arc::new(Run(args.word("case") == "upper")))
    }
    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                apply: r#""hex_lower""#,
                input: "?>~ûÿ",
                output: "3f3e7ec3bbc3bf",
            },
            Example {
                apply: r#"{"hex": {"case": "upper"}}"#,
                input: "?>~ûÿ",
                output: "3F3E7EC3BBC3BF",
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
            crypto::hex_upper(b)
        } else {
            crypto::hex_lower(b)
        }))
    }
}
