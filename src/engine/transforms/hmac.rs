//! HMAC (RFC 2104) over SHA-1, SHA-256 or SHA-512; vectors from RFC 2202 and RFC 4231.
use std::sync::Arc;

use super::{
    Alias, Args, Data, Example, Key, Param, ParamKind, Produces, Transform, TransformKind,
};
use crate::crypto;
use crate::engine::template::{Ref, Values};

pub struct Hmac;

impl TransformKind for Hmac {
    fn name(&self) -> &'static str {
        "hmac"
    }
    fn summary(&self) -> &'static str {
        "the HMAC of the input under `key`"
    }
    fn params(&self) -> &'static [Param] {
        &[
            Param {
                name: "key",
                doc: "the secret, usually `{{cred.…}}`",
                kind: ParamKind::Key,
            },
            Param {
                name: "alg",
                doc: "the hash",
                kind: ParamKind::Choice(&["sha1", "sha256", "sha512"]),
            },
        ]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[
            Alias {
                name: "hmac_sha1",
                args: &[("alg", "sha1")],
            },
            Alias {
                name: "hmac_sha256",
                args: &[("alg", "sha256")],
            },
            Alias {
                name: "hmac_sha512",
                args: &[("alg", "sha512")],
            },
        ]
    }
    fn produces(&self) -> Produces {
        Produces::Bytes
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        let f: fn(&[u8], &[u8]) -> Vec<u8> = match args.word("alg") {
            "sha1" => crypto::hmac_sha1,
            "sha256" => crypto::hmac_sha256,
            _ => crypto::hmac_sha512,
        };
        Ok(Arc::new(Run {
            key: args.key("key"),
            f,
        }))
    }
    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                apply: r#"{"hmac_sha1": "Jefe"}"#,
                input: "what do ya want for nothing?",
                output: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            },
            Example {
                apply: r#"{"hmac": {"key": "Jefe", "alg": "sha256"}}"#,
                input: "what do ya want for nothing?",
                output: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            },
            Example {
                apply: r#"{"hmac_sha512": "Jefe"}"#,
                input: "what do ya want for nothing?",
                output: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            },
        ]
    }
}

struct Run {
    key: Key,
    f: fn(&[u8], &[u8]) -> Vec<u8>,
}

impl std::fmt::Debug for Run {
    // never the key
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hmac")
    }
}

impl Transform for Run {
    fn run(&self, data: Data, values: &dyn Values) -> Result<Data, String> {
        Ok(Data::Bytes((self.f)(&self.key.bytes(values), data.bytes())))
    }
    fn refs(&self) -> Vec<Ref> {
        self.key.refs()
    }
}
