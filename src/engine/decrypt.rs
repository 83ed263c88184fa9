//! `response.decrypt`: members of a vendor's answer that arrive encrypted (a pay-v3-style
//! `resource` with AEAD_AES_256_GCM, a DES-encrypted `param`) are decrypted in place before the
//! envelope and the field mapping read the answer, so they see the plain JSON.
//!
//! ```yaml
//! response:
//!   decrypt:
//!     - at: $.resource                  # the member, replaced by its plaintext
//!       cipher: aes_gcm                 # aes_gcm | aes_cbc | des_ecb
//!       key: "{{cred.api_v3_key}}"
//!       ciphertext: $.ciphertext        # inside the member (default: the member itself)
//!       nonce: $.nonce                  # aes_gcm nonce / aes_cbc IV (JSONPath inside the member)
//!       aad: $.associated_data          # aes_gcm only, optional
//!       encoding: base64                # base64 (default) | hex
//!       plaintext: json                 # json (default) | text
//! ```
use std::borrow::Cow;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::extract::JsonPath;
use super::template::{Ref, Scope, Template, Values};
use super::transforms::Key;
use crate::crypto;

/// One encrypted member.
#[derive(Debug, Clone)]
pub struct Decrypt {
    at: JsonPath,
    cipher: Cipher,
    key: Key,
    ciphertext: Option<JsonPath>,
    nonce: Option<JsonPath>,
    aad: Option<JsonPath>,
    hex: bool,
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    AesGcm,
    AesCbc,
    DesEcb,
}

const KEYS: &[&str] = &[
    "at",
    "cipher",
    "key",
    "ciphertext",
    "nonce",
    "aad",
    "encoding",
    "plaintext",
];

impl Decrypt {
    /// Compiles one entry; errors are (key, message).
    pub fn compile(v: &Value, scope: &dyn Scope) -> Result<Decrypt, (String, String)> {
        let at = |k: &str, e: String| (k.to_owned(), e);
        let Value::Object(m) = v else {
            return Err(at(
                "",
                "a mapping `{at: $.member, cipher: aes_gcm, key: …}`".into(),
            ));
        };
        if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(at(
                k,
                format!("unknown key `{k}` (known: {})", KEYS.join(", ")),
            ));
        }
        let text = |k: &str| -> Result<Option<&str>, (String, String)> {
            match m.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(at(k, "a string".into())),
            }
        };
        let path = |k: &str| -> Result<Option<JsonPath>, (String, String)> {
            text(k)?
                .map(|p| JsonPath::compile(p).map_err(|e| at(k, e)))
                .transpose()
        };
        let target =
            path("at")?.ok_or_else(|| at("at", "the JSONPath of the encrypted member".into()))?;
        if !target.is_plain() {
            return Err(at(
                "at",
                "a plain path of names and indexes (`$.resource`)".into(),
            ));
        }
        let cipher = match text("cipher")? {
            Some("aes_gcm") => Cipher::AesGcm,
            Some("aes_cbc") => Cipher::AesCbc,
            Some("des_ecb") => Cipher::DesEcb,
            _ => return Err(at("cipher", "one of aes_gcm, aes_cbc, des_ecb".into())),
        };
        let key = text("key")?
            .ok_or_else(|| at("key", "a key template, e.g. \"{{cred.key}}\"".into()))?;
        let key = Key::new(
            Template::compile(key, scope).map_err(|e| at("key", e))?,
            scope,
        );
        let nonce = path("nonce")?;
        if cipher != Cipher::DesEcb && nonce.is_none() {
            return Err(at("nonce", "where the member holds the nonce / IV".into()));
        }
        let aad = path("aad")?;
        if aad.is_some() && cipher != Cipher::AesGcm {
            return Err(at("aad", "`aad` is for aes_gcm".into()));
        }
        let hex = match text("encoding")? {
            None | Some("base64") => false,
            Some("hex") => true,
            Some(_) => return Err(at("encoding", "base64 or hex".into())),
        };
        let json = match text("plaintext")? {
            None | Some("json") => true,
            Some("text") => false,
            Some(_) => return Err(at("plaintext", "json or text".into())),
        };
        Ok(Decrypt {
            at: target,
            cipher,
            key,
            ciphertext: path("ciphertext")?,
            nonce,
            aad,
            hex,
            json,
        })
    }

    /// The member this entry decrypts (its ciphertext, nonce and associated data are inside).
    pub fn at(&self) -> &JsonPath {
        &self.at
    }

    /// Replaces the member in `doc` by its plaintext. Nothing happens when the member is
    /// absent; a member that cannot be decrypted is an error naming the path (never the key).
    pub fn apply(&self, doc: &mut Value, credentials: &[SecretString]) -> Result<(), String> {
        let Some(member) = self.at.plain_mut(doc) else {
            return Ok(());
        };
        if member.is_null() {
            return Ok(());
        }
        let fail = |why: &str| format!("cannot decrypt `{}`: {why}", self.at.source());
        let read = |p: &Option<JsonPath>, what: &str| -> Result<Option<String>, String> {
            match p {
                None => Ok(None),
                Some(p) => p
                    .first(member)
                    .and_then(Value::as_str)
                    .map(|s| Some(s.to_owned()))
                    .ok_or_else(|| fail(&format!("no {what} at `{}`", p.source()))),
            }
        };
        let ciphertext = match &self.ciphertext {
            Some(_) => read(&self.ciphertext, "ciphertext")?.unwrap_or_default(),
            None => member
                .as_str()
                .ok_or_else(|| fail("the member is not text"))?
                .to_owned(),
        };
        let nonce = read(&self.nonce, "nonce")?;
        let aad = read(&self.aad, "associated data")?;
        let bytes = if self.hex {
            hex::decode(ciphertext.trim()).ok()
        } else {
            crypto::base64_decode(ciphertext.trim())
        }
        .ok_or_else(|| fail("the ciphertext is not valid encoding"))?;
        let key = self.key.bytes(&Creds(credentials));
        let plain = match self.cipher {
            Cipher::AesGcm => crypto::aes_gcm_decrypt(
                &key,
                nonce.as_deref().unwrap_or_default().as_bytes(),
                aad.as_deref().unwrap_or_default().as_bytes(),
                &bytes,
            ),
            Cipher::AesCbc => crypto::aes_cbc_decrypt(
                &key,
                nonce.as_deref().unwrap_or_default().as_bytes(),
                &bytes,
            ),
            Cipher::DesEcb => crypto::des_ecb_decrypt(&key, &bytes),
        }
        .map_err(|e| fail(&e.to_string()))?;
        let text = String::from_utf8(plain).map_err(|_| fail("the plaintext is not UTF-8"))?;
        *member = if self.json {
            serde_json::from_str(&text).map_err(|_| fail("the plaintext is not JSON"))?
        } else {
            Value::String(text)
        };
        Ok(())
    }
}

/// Credentials as template values (a decrypt key names nothing else).
struct Creds<'a>(&'a [SecretString]);

impl Values for Creds<'_> {
    fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
        match r {
            Ref::Cred(i) => self.0.get(i).map(|c| Cow::Borrowed(c.expose_secret())),
            _ => None,
        }
    }
}

/// Names a decrypt key may use: the vendor's credentials.
pub struct CredScope<'a> {
    pub names: Vec<&'a str>,
    pub values: &'a [SecretString],
}

impl Scope for CredScope<'_> {
    fn resolve(&self, name: &str) -> Result<Ref, String> {
        let c = name
            .strip_prefix("cred.")
            .ok_or_else(|| format!("`{name}`: a decrypt key is made of credentials (`cred.…`)"))?;
        self.names
            .iter()
            .position(|n| *n == c)
            .map(Ref::Cred)
            .ok_or_else(|| format!("`{name}`: the vendor declares no credential `{c}`"))
    }
    fn fixed(&self, r: Ref) -> Option<Cow<'_, str>> {
        match r {
            Ref::Cred(i) => self
                .values
                .get(i)
                .map(|c| c.expose_secret())
                .filter(|c| !c.is_empty())
                .map(Cow::Borrowed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn creds() -> Vec<SecretString> {
        vec![SecretString::from(
            "0123456789abcdef0123456789abcdef".to_owned(),
        )]
    }

    fn compile(v: Value) -> Result<Decrypt, (String, String)> {
        let c = creds();
        Decrypt::compile(
            &v,
            &CredScope {
                names: vec!["api_v3_key"],
                values: &c,
            },
        )
    }

    #[test]
    fn an_aes_gcm_resource_is_replaced_by_its_json_plaintext() {
        let key = b"0123456789abcdef0123456789abcdef";
        let plain = br#"{"data":[{"coupon_id":"c1"}]}"#;
        let sealed = crypto::aes_gcm_encrypt(key, b"nonce1234567", b"coupon", plain).unwrap();
        let mut doc = json!({"resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": crypto::base64(&sealed), "nonce": "nonce1234567", "associated_data": "coupon"}});
        let d = compile(json!({"at": "$.resource", "cipher": "aes_gcm", "key": "{{cred.api_v3_key}}", "ciphertext": "$.ciphertext", "nonce": "$.nonce", "aad": "$.associated_data"})).unwrap();
        d.apply(&mut doc, &creds()).unwrap();
        assert_eq!(doc, json!({"resource": {"data": [{"coupon_id": "c1"}]}}));
        // tampered: an error naming the member, not the key
        let mut bad = json!({"resource": {"ciphertext": crypto::base64(&sealed[1..]), "nonce": "nonce1234567", "associated_data": "coupon"}});
        let e = d.apply(&mut bad, &creds()).unwrap_err();
        assert!(e.starts_with("cannot decrypt `$.resource`"), "{e}");
        assert!(!e.contains("0123456789abcdef"), "{e}");
        // absent member: nothing to do
        let mut none = json!({"code": 0});
        d.apply(&mut none, &creds()).unwrap();
    }

    #[test]
    fn a_des_member_of_text_is_decrypted_in_place() {
        let c = vec![SecretString::from("hklkey01".to_owned())];
        let d = Decrypt::compile(
            &json!({"at": "$.param", "cipher": "des_ecb", "key": "{{cred.k}}", "encoding": "hex"}),
            &CredScope {
                names: vec!["k"],
                values: &c,
            },
        )
        .unwrap();
        let mut doc =
            json!({"param": "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E"});
        d.apply(&mut doc, &c).unwrap();
        assert_eq!(doc, json!({"param": {"memberId": "K1H93QDKI00B7"}}));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            compile(json!({"at": "$..x", "cipher": "aes_gcm", "key": "k", "nonce": "$.n"}))
                .unwrap_err()
                .0,
            "at"
        );
        assert_eq!(
            compile(json!({"at": "$.r", "cipher": "rot13", "key": "k"}))
                .unwrap_err()
                .0,
            "cipher"
        );
        assert_eq!(
            compile(json!({"at": "$.r", "cipher": "aes_gcm", "key": "k"}))
                .unwrap_err()
                .0,
            "nonce"
        );
        assert_eq!(
            compile(json!({"at": "$.r", "cipher": "aes_gcm", "key": "{{nonce}}", "nonce": "$.n"}))
                .unwrap_err()
                .0,
            "key"
        );
        assert_eq!(
            compile(json!({"at": "$.r", "cipher": "des_ecb", "key": "k", "colour": 1}))
                .unwrap_err()
                .0,
            "colour"
        );
    }

    #[test]
    fn an_aes_cbc_member_of_text_is_decrypted_with_its_iv() {
        let key = b"0123456789abcdef0123456789abcdef";
        let iv = "abcdef0123456789";
        let sealed = crypto::aes_cbc_encrypt(key, iv.as_bytes(), b"hello").unwrap();
        let d = compile(json!({"at": "$.r", "cipher": "aes_cbc", "key": "{{cred.api_v3_key}}", "ciphertext": "$.c", "nonce": "$.iv", "encoding": "hex", "plaintext": "text"})).unwrap();
        let mut doc = json!({"r": {"c": hex::encode(sealed), "iv": iv}});
        d.apply(&mut doc, &creds()).unwrap();
        assert_eq!(doc, json!({"r": "hello"}));
    }

    #[test]
    fn a_key_is_prepared_once_when_its_credentials_are_known() {
        // known when compiling: the key is made then, not rendered again for every answer
        let d = compile(json!({"at": "$.r", "cipher": "des_ecb", "key": "{{cred.api_v3_key}}"}))
            .unwrap();
        assert!(matches!(d.key, Key::Fixed(_)));
        // a credential without a value yet (`validate`) leaves the key to each attempt, which
        // reads it from the credentials the call is made with
        let later = vec![SecretString::from("hklkey01".to_owned())];
        let d = Decrypt::compile(
            &json!({"at": "$.param", "cipher": "des_ecb", "key": "{{cred.k}}", "encoding": "hex"}),
            &CredScope {
                names: vec!["k"],
                values: &[SecretString::from(String::new())],
            },
        )
        .unwrap();
        assert!(matches!(d.key, Key::PerAttempt(_)));
        let mut doc =
            json!({"param": "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E"});
        d.apply(&mut doc, &later).unwrap();
        assert_eq!(doc, json!({"param": {"memberId": "K1H93QDKI00B7"}}));
    }
}
