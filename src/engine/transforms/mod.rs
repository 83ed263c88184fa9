//! The `apply:` language of a signing step: transforms that turn text into bytes (hashes,
//! HMACs, ciphers) and bytes into text (encodings).
//!
//! Each family lives in a file of its own and implements [`TransformKind`]: its name, its
//! parameters, what it accepts and produces (the chain check of a step), how it compiles and
//! its known-answer examples. [`REGISTRY`] lists every kind once, in the order the docs and
//! the "known: …" messages show them. Adding a family is one file and one line here.
//!
//! In routes.yaml a transform is written as its name (`md5`), as its name with its first
//! parameter (`{hmac_sha1: "{{cred.secret}}"}`), or with named parameters
//! (`{hmac: {alg: sha256, key: "{{cred.secret}}"}}`). Aliases such as `hmac_sha256` are a
//! kind with some parameters already given.
mod aes;
mod base64;
mod des;
mod digest;
mod hex;
mod hmac;
mod rsa;
mod text;
mod wrap;

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::template::{Ref, Scope, Template, Values};

/// What flows through a step's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Text(String),
    Bytes(Vec<u8>),
}

impl Data {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Data::Text(s) => s.as_bytes(),
            Data::Bytes(b) => b,
        }
    }
}

/// What a transform takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Text or bytes (as bytes).
    Any,
    /// Text only: raw bytes must be encoded first.
    Text,
}

/// What a transform gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produces {
    Bytes,
    Text,
}

/// One parameter of a transform kind.
pub struct Param {
    pub name: &'static str,
    pub doc: &'static str,
    pub kind: ParamKind,
}

pub enum ParamKind {
    /// A template (`{{cred.…}}`), rendered once at start-up when it names only credentials.
    Key,
    /// Like `Key`, but may be left out.
    OptionalKey,
    /// One of a fixed set of words; the first is the default.
    Choice(&'static [&'static str]),
}

/// Another name for a kind with some parameters given.
pub struct Alias {
    pub name: &'static str,
    pub args: &'static [(&'static str, &'static str)],
}

/// A known answer: `apply` (one transform as JSON) run on `input` gives `output` (bytes shown
/// as lowercase hex). Each kind keeps its published test vectors here.
pub struct Example {
    pub apply: &'static str,
    pub input: &'static str,
    pub output: &'static str,
}

/// A family of transforms.
pub trait TransformKind: Sync {
    fn name(&self) -> &'static str;
    /// One line for the reference table.
    fn summary(&self) -> &'static str;
    fn params(&self) -> &'static [Param] {
        &[]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[]
    }
    fn accepts(&self) -> Accepts {
        Accepts::Any
    }
    fn produces(&self) -> Produces;
    /// Builds the transform from checked arguments.
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String>;
    fn examples(&self) -> &'static [Example] {
        &[]
    }
}

/// A compiled transform, run once per attempt.
pub trait Transform: std::fmt::Debug + Send + Sync {
    fn run(&self, data: Data, values: &dyn Values) -> Result<Data, String>;
    /// The names it reads at request time (its key template).
    fn refs(&self) -> Vec<Ref> {
        Vec::new()
    }
}

/// Every transform kind, in documentation order.
pub const REGISTRY: &[&dyn TransformKind] = &[
    &digest::Digest,
    &hmac::Hmac,
    &des::DesEcb,
    &rsa::RsaSign,
    &aes::Aes,
    &hex::Hex,
    &base64::Base64,
    &text::PercentEncode,
    &text::Upper,
    &text::Lower,
    &wrap::Wrap,
];

/// A compiled transform with the kind it came from (for the chain check).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub accepts: Accepts,
    pub produces: Produces,
    pub imp: Arc<dyn Transform>,
}

/// The arguments of one transform, checked against its kind's parameters.
pub struct Args<'a> {
    values: Vec<(&'static str, Arg)>,
    scope: &'a dyn Scope,
}

enum Arg {
    Key(Template),
    Word(String),
}

impl Args<'_> {
    /// A `Key` parameter, prepared once when it names only values known at start-up.
    pub fn key(&self, name: &str) -> Key {
        let t = self
            .values
            .iter()
            .find_map(|(n, a)| match a {
                Arg::Key(t) if *n == name => Some(t.clone()),
                _ => None,
            })
            .expect("required keys are checked by `compile`");
        Key::new(t, self.scope)
    }

    /// An `OptionalKey` parameter, `None` when not given.
    pub fn optional_key(&self, name: &str) -> Option<Key> {
        self.values.iter().find_map(|(n, a)| match a {
            Arg::Key(t) if *n == name => Some(Key::new(t.clone(), self.scope)),
            _ => None,
        })
    }

    /// A `Choice` parameter (its default when not given).
    pub fn word(&self, name: &str) -> &str {
        self.values
            .iter()
            .find_map(|(n, a)| match a {
                Arg::Word(w) if *n == name => Some(w.as_str()),
                _ => None,
            })
            .expect("choices always have a value")
    }
}

/// A key: fixed bytes when it is made only of credentials known at start-up, otherwise a
/// template rendered per attempt.
#[derive(Debug, Clone)]
pub enum Key {
    Fixed(Vec<u8>),
    PerAttempt(Template),
}

impl Key {
    pub fn new(t: Template, scope: &dyn Scope) -> Key {
        struct Fixed<'a>(&'a dyn Scope);
        impl Values for Fixed<'_> {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                self.0.fixed(r)
            }
        }
        let only_fixed = t.refs().all(|r| scope.fixed(r).is_some());
        match only_fixed.then(|| t.render(&Fixed(scope))).flatten() {
            Some(k) => Key::Fixed(k.into_bytes()),
            None => Key::PerAttempt(t),
        }
    }

    pub fn bytes<'a>(&'a self, values: &dyn Values) -> Cow<'a, [u8]> {
        match self {
            Key::Fixed(k) => Cow::Borrowed(k),
            Key::PerAttempt(t) => Cow::Owned(t.render(values).unwrap_or_default().into_bytes()),
        }
    }

    pub fn refs(&self) -> Vec<Ref> {
        match self {
            Key::Fixed(_) => Vec::new(),
            Key::PerAttempt(t) => t.refs().collect(),
        }
    }
}

/// The names the registry knows, aliases included, for "known: …" messages.
pub fn known() -> String {
    let mut names = Vec::new();
    for k in REGISTRY {
        names.push(k.name());
        names.extend(k.aliases().iter().map(|a| a.name));
    }
    names.join(", ")
}

/// Parameters an alias gives.
type Preset = &'static [(&'static str, &'static str)];

fn find(name: &str) -> Option<(&'static dyn TransformKind, Preset)> {
    REGISTRY.iter().find_map(|k| {
        if k.name() == name {
            Some((*k, &[][..]))
        } else {
            k.aliases()
                .iter()
                .find(|a| a.name == name)
                .map(|a| (*k, a.args))
        }
    })
}

/// Compiles one entry of `apply:`.
pub fn compile(t: &Value, scope: &dyn Scope) -> Result<Compiled, String> {
    let (name, given) = match t {
        Value::String(name) => (name.as_str(), None),
        Value::Object(map) if map.len() == 1 => {
            let (name, v) = map.iter().next().expect("one entry");
            (name.as_str(), Some(v))
        }
        _ => {
            return Err(format!(
                "a transform is a name or a one-key mapping (known: {})",
                known()
            ));
        }
    };
    let (kind, preset) =
        find(name).ok_or_else(|| format!("unknown transform `{name}` (known: {})", known()))?;
    // the parameters the alias leaves open, in order
    let open: Vec<&Param> = kind
        .params()
        .iter()
        .filter(|p| !preset.iter().any(|(n, _)| *n == p.name))
        .collect();
    let mut raw: Vec<(&'static str, &Value)> = Vec::new();
    match given {
        None => {}
        Some(Value::Object(named)) => {
            for (k, v) in named {
                let Some(p) = open.iter().find(|p| p.name == k) else {
                    let names: Vec<&str> = open.iter().map(|p| p.name).collect();
                    return Err(format!(
                        "`{name}` has no parameter `{k}` (parameters: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ));
                };
                raw.push((p.name, v));
            }
        }
        Some(v) => match open.first() {
            Some(p) => raw.push((p.name, v)),
            None => return Err(format!("`{name}` takes no parameters: write just `{name}`")),
        },
    }
    let mut values = Vec::new();
    for p in kind.params() {
        let preset = preset.iter().find(|(n, _)| *n == p.name).map(|(_, v)| *v);
        let given = raw.iter().find(|(n, _)| *n == p.name).map(|(_, v)| *v);
        let arg = match (&p.kind, preset, given) {
            (ParamKind::Choice(_), Some(w), _) => Arg::Word(w.to_owned()),
            (ParamKind::Choice(words), None, None) => Arg::Word(words[0].to_owned()),
            (ParamKind::Choice(words), None, Some(v)) => match v.as_str() {
                Some(w) if words.contains(&w) => Arg::Word(w.to_owned()),
                _ => {
                    return Err(format!(
                        "`{name}`: `{}` is one of {}",
                        p.name,
                        words.join(", ")
                    ));
                }
            },
            (ParamKind::OptionalKey, _, None) => continue,
            (ParamKind::Key | ParamKind::OptionalKey, _, Some(Value::String(k))) => {
                Arg::Key(Template::compile(k, scope)?)
            }
            (ParamKind::Key | ParamKind::OptionalKey, _, Some(_)) => {
                return Err(format!(
                    "`{name}`: `{}` is a template, e.g. \"{{{{cred.secret}}}}\"",
                    p.name
                ));
            }
            (ParamKind::Key, _, None) => {
                return Err(format!(
                    "`{name}` needs a {}: write `{{{name}: \"{{{{cred.…}}}}\"}}`",
                    p.name
                ));
            }
        };
        values.push((p.name, arg));
    }
    let imp = kind.compile(&Args { values, scope })?;
    Ok(Compiled {
        accepts: kind.accepts(),
        produces: kind.produces(),
        imp,
    })
}

/// The reference table of docs/routes.md, made from the registry.
pub fn reference_table() -> String {
    let mut out = String::from(
        "| transform | takes → gives | parameters | what it does |\n| --- | --- | --- | --- |\n",
    );
    for k in REGISTRY {
        let mut names = format!("`{}`", k.name());
        for a in k.aliases() {
            let args: Vec<String> = a.args.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            names.push_str(&format!(
                "<br>`{}` = `{}` with {}",
                a.name,
                k.name(),
                args.join(", ")
            ));
        }
        let io = format!(
            "{} → {}",
            match k.accepts() {
                Accepts::Any => "text or bytes",
                Accepts::Text => "text",
            },
            match k.produces() {
                Produces::Bytes => "bytes",
                Produces::Text => "text",
            }
        );
        let params: Vec<String> = k
            .params()
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Key => format!("`{}`: {}", p.name, p.doc),
                ParamKind::OptionalKey => format!("`{}` (optional): {}", p.name, p.doc),
                ParamKind::Choice(w) => {
                    format!(
                        "`{}`: {} ({}; default {})",
                        p.name,
                        p.doc,
                        w.join(", "),
                        w[0]
                    )
                }
            })
            .collect();
        out.push_str(&format!(
            "| {names} | {io} | {} | {} |\n",
            if params.is_empty() {
                "—".to_owned()
            } else {
                params.join("<br>")
            },
            k.summary()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoNames;
    impl Scope for NoNames {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            Err(format!("unknown `{name}`"))
        }
    }

    struct Nothing;
    impl Values for Nothing {
        fn text(&self, _: Ref) -> Option<Cow<'_, str>> {
            None
        }
    }

    /// Every kind's published vectors, through the same compile path as routes.yaml.
    #[test]
    fn every_kind_meets_its_known_answers() {
        let mut count = 0;
        for kind in REGISTRY {
            assert!(
                !kind.examples().is_empty(),
                "`{}` has no examples",
                kind.name()
            );
            for ex in kind.examples() {
                let apply: Value = serde_json::from_str(ex.apply).unwrap();
                let t = compile(&apply, &NoNames).unwrap_or_else(|e| panic!("{}: {e}", ex.apply));
                let out = t
                    .imp
                    .run(Data::Text(ex.input.to_owned()), &Nothing)
                    .unwrap_or_else(|e| panic!("{}: {e}", ex.apply));
                let shown = match out {
                    Data::Text(s) => s,
                    Data::Bytes(b) => crate::crypto::hex_lower(&b),
                };
                assert_eq!(shown, ex.output, "{} on {:?}", ex.apply, ex.input);
                count += 1;
            }
        }
        assert!(count >= REGISTRY.len());
    }

    #[test]
    fn names_aliases_and_parameters_are_checked() {
        let err = |v: Value| compile(&v, &NoNames).unwrap_err();
        assert!(
            err(serde_json::json!("crc32"))
                .contains("unknown transform `crc32` (known: digest, md5,")
        );
        assert!(err(serde_json::json!("hmac_sha1")).contains("needs a key"));
        assert!(
            err(serde_json::json!({"hmac": {"alg": "md4", "key": "k"}}))
                .contains("`alg` is one of sha1, sha256, sha512")
        );
        assert!(
            err(serde_json::json!({"hmac_sha1": {"alg": "sha256", "key": "k"}}))
                .contains("has no parameter `alg`")
        );
        assert!(err(serde_json::json!({"md5": "x"})).contains("takes no parameters"));
        let known = known();
        let mut names: Vec<&str> = known.split(", ").collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before, "a name is listed twice");
    }

    #[test]
    fn a_transform_is_one_name_or_a_one_key_mapping() {
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"md5": null, "sha1": null}),
            serde_json::json!(["md5"]),
        ] {
            let e = compile(&bad, &NoNames).unwrap_err();
            assert!(
                e.starts_with("a transform is a name or a one-key mapping (known: digest, md5,"),
                "{bad}: {e}"
            );
        }
    }

    /// `Debug` (logs, `explain`) names the kind and never a key, prefix or suffix.
    #[test]
    fn compiled_transforms_show_their_kind_and_never_their_key() {
        let cases = [
            (serde_json::json!("md5"), "digest"),
            (serde_json::json!({"hmac_sha256": "s3cret-key"}), "hmac"),
            (
                serde_json::json!({"des_ecb_pkcs5": "s3cretk8"}),
                "des_ecb_pkcs5",
            ),
            (serde_json::json!("percent_encode"), "percent_encode"),
            (serde_json::json!({"wrap": {"prefix": "s3cret"}}), "wrap"),
        ];
        for (apply, shown) in cases {
            let t = compile(&apply, &NoNames).unwrap();
            assert_eq!(format!("{:?}", t.imp), shown, "{apply}");
        }
    }

    /// A key that names request values is rendered per attempt, and the names it reads are
    /// reported so the step has them rendered first.
    #[test]
    fn per_attempt_keys_report_the_names_they_read() {
        struct Vars;
        impl Scope for Vars {
            fn resolve(&self, name: &str) -> Result<Ref, String> {
                match name {
                    "var.k" => Ok(Ref::Var(0)),
                    _ => Err(format!("unknown `{name}`")),
                }
            }
        }
        struct Attempt(&'static str);
        impl Values for Attempt {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                (r == Ref::Var(0)).then_some(Cow::Borrowed(self.0))
            }
        }
        let hmac = compile(&serde_json::json!({"hmac_sha1": "{{var.k}}"}), &Vars).unwrap();
        assert_eq!(hmac.imp.refs(), vec![Ref::Var(0)]);
        let out = hmac
            .imp
            .run(
                Data::Text("what do ya want for nothing?".into()),
                &Attempt("Jefe"),
            )
            .unwrap();
        // RFC 2202 test case 2
        assert_eq!(
            crate::crypto::hex_lower(out.bytes()),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );

        let des = compile(&serde_json::json!({"des_ecb_pkcs5": "{{var.k}}"}), &Vars).unwrap();
        assert_eq!(des.imp.refs(), vec![Ref::Var(0)]);
        // the vendor kit's worked example, with its key given per attempt
        let out = des
            .imp
            .run(
                Data::Text(r#"{"memberId":"K1H93QDKI00B7"}"#.into()),
                &Attempt("hklkey01"),
            )
            .unwrap();
        assert_eq!(
            crate::crypto::hex_lower(out.bytes()),
            "6b177edf396081b2fe204c2b2db191452417852a0235a46bef363ae847e2ab1e"
        );
        let e = des
            .imp
            .run(Data::Text("x".into()), &Attempt("short"))
            .unwrap_err();
        assert_eq!(e, "DES needs a key of exactly 8 bytes");
    }

    #[test]
    fn keys_made_of_known_credentials_are_prepared_once() {
        struct Creds;
        impl Scope for Creds {
            fn resolve(&self, name: &str) -> Result<Ref, String> {
                match name {
                    "cred.k" => Ok(Ref::Cred(0)),
                    "nonce" => Ok(Ref::Nonce),
                    _ => Err("no".into()),
                }
            }
            fn fixed(&self, r: Ref) -> Option<Cow<'_, str>> {
                (r == Ref::Cred(0)).then(|| "Jefe".into())
            }
        }
        let t = |k: &str| Template::compile(k, &Creds).unwrap();
        assert!(matches!(Key::new(t("{{cred.k}}"), &Creds), Key::Fixed(k) if k == b"Jefe"));
        assert!(matches!(
            Key::new(t("x{{cred.k}}{{nonce}}"), &Creds),
            Key::PerAttempt(_)
        ));
    }
}
