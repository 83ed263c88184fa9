//! Message digests: MD5 (RFC 1321), SHA-1, SHA-256, SHA-512 (FIPS 180-4).
use std::sync::Arc;

use super::{Alias, Args, Data, Example, Param, ParamKind, Produces, Transform, TransformKind};
use crate::crypto;
use crate::engine::template::Values;

pub struct Digest;

const ALGS: &[&str] = &["md5", "sha1", "sha256", "sha512"];

impl TransformKind for Digest {
    fn name(&self) -> &'static str {
        "digest"
    }
    fn summary(&self) -> &'static str {
        "the hash of the input"
    }
    fn params(&self) -> &'static [Param] {
        &[Param {
            name: "alg",
            doc: "the hash",
            kind: ParamKind::Choice(ALGS),
        }]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[
            Alias {
                name: "md5",
                args: &[("alg", "md5")],
            },
            Alias {
                name: "sha1",
                args: &[("alg", "sha1")],
            },
            Alias {
                name: "sha256",
                args: &[("alg", "sha256")],
            },
            Alias {
                name: "sha512",
                args: &[("alg", "sha512")],
            },
        ]
    }
    fn produces(&self) -> Produces {
        Produces::Bytes
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        let f: fn(&[u8]) -> Vec<u8> = match args.word("alg") {
            "md5" => crypto::md5,
            "sha1" => crypto::sha1,
            "sha256" => crypto::sha256,
            _ => crypto::sha512,
        };
        Ok(Arc::new(Run(f)))
    }
    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                apply: r#""md5""#,
                input: "abc",
                output: "900150983cd24fb0d6963f7d28e17f72",
            },
            Example {
                apply: r#""sha1""#,
                input: "abc",
                output: "a9993e364706816aba3e25717850c26c9cd0d89d",
            },
            Example {
                apply: r#"{"digest": {"alg": "sha256"}}"#,
                input: "abc",
                output: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            },
            Example {
                apply: r#""sha512""#,
                input: "abc",
                output: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            },
        ]
    }
}

struct Run(fn(&[u8]) -> Vec<u8>);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("digest")
    }
}

impl Transform for Run {
    fn run(&self, data: Data, _: &dyn Values) -> Result<Data, String> {
        Ok(Data::Bytes((self.0)(data.bytes())))
    }
}
