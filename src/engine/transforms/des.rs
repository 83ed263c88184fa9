//! DES in ECB mode with PKCS#5 padding (Java's `DES/ECB/PKCS5Padding`).
//!
//! A key made only of credentials is checked (8 bytes) and its key schedule built once when
//! serving; a key that depends on the request is prepared per attempt.
use std::sync::Arc;

use super::{Args, Data, Example, Key, Param, ParamKind, Produces, Transform, TransformKind};
use crate::crypto::{self, DesEcbKey};
use crate::engine::template::{Ref, Values};

pub struct DesEcb;

impl TransformKind for DesEcb {
    fn name(&self) -> &'static str {
        "des_ecb_pkcs5"
    }
    fn summary(&self) -> &'static str {
        "DES-ECB encryption with PKCS#5 padding under an 8-byte `key`"
    }
    fn params(&self) -> &'static [Param] {
        &[Param {
            name: "key",
            doc: "8 bytes, usually `{{cred.…}}`",
            kind: ParamKind::Key,
        }]
    }
    fn produces(&self) -> Produces {
        Produces::Bytes
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        let key = match args.key("key") {
            Key::Fixed(k) => Prepared::Ready(DesEcbKey::new(&k).map_err(|e| e.to_string())?),
            Key::PerAttempt(t) => Prepared::PerAttempt(Key::PerAttempt(t)),
        };
        Ok(Arc::new(Run(key)))
    }
    fn examples(&self) -> &'static [Example] {
        // the vendor kit's worked example (member query of a DES vendor)
        &[Example {
            apply: r#"{"des_ecb_pkcs5": "hklkey01"}"#,
            input: r#"{"memberId":"K1H93QDKI00B7"}"#,
            output: "6b177edf396081b2fe204c2b2db191452417852a0235a46bef363ae847e2ab1e",
        }]
    }
}

enum Prepared {
    Ready(DesEcbKey),
    PerAttempt(Key),
}

struct Run(Prepared);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("des_ecb_pkcs5")
    }
}

impl Transform for Run {
    fn run(&self, data: Data, values: &dyn Values) -> Result<Data, String> {
        let out = match &self.0 {
            Prepared::Ready(k) => k.encrypt(data.bytes()),
            Prepared::PerAttempt(k) => crypto::des_ecb_encrypt(&k.bytes(values), data.bytes())
                .map_err(|e| e.to_string())?,
        };
        Ok(Data::Bytes(out))
    }
    fn refs(&self) -> Vec<Ref> {
        match &self.0 {
            Prepared::Ready(_) => Vec::new(),
            Prepared::PerAttempt(k) => k.refs(),
        }
    }
}
