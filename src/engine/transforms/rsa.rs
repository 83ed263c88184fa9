//! RSA signatures: RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2) with SHA-256 or SHA-1, the
//! pay-v3 style `Authorization` signature and many "RSA2" platforms.
//!
//! The key is a PEM private key (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE
//! KEY`; line breaks real or written as `\n`, as an environment variable may hold them; the
//! bare base64 of the DER also works). A key made only of credentials is parsed once at
//! start-up, so a bad PEM stops `serve` with the step's location; messages never quote it.
use std::sync::Arc;

use super::{
    Alias, Args, Data, Example, Key, Param, ParamKind, Produces, Transform, TransformKind,
};
use crate::crypto::{RsaHash, RsaSigningKey};
use crate::engine::template::{Ref, Values};

pub struct RsaSign;

/// A TEST-ONLY 2048-bit key (`openssl genrsa 2048`, made for these examples and used nowhere
/// else), PKCS#8, as the inside of a JSON string (`\n` escapes, i.e. real line breaks).
macro_rules! test_key_pkcs8_json {
    () => {
        concat!(
            "-----BEGIN PRIVATE KEY-----\\n",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCvaPKYyl5fSgnM\\n",
            "vwXlc93JAw6WbFU6vovdWLVJKQdoqm59CrcOMqqtqQoBFUaSEuZLQEVkEp7gK4Zq\\n",
            "L7eq9T6Dp5WatdjIPz/McInqZ3RnCxBWh4atkNCPqCFGA7arQn6519iKuaoYSVHZ\\n",
            "OBbcnPg/TF0c2Z+vjJIBtU9YxbTZ4uE++7UAjqZQ2zKNyYyyouTviT+6F2QHtzZc\\n",
            "AL0JWe+oLoC3UcNaGIrHVevqb72b1dR9y7Pfgw+ncBpc7mn99mSyfnrxlNmFGBSl\\n",
            "YXwG4+unkAQJ5zS5cO9l4hKSGJeyipq1UDDfseHp7kA2kSpffFk39qyjmon86YkJ\\n",
            "E/p1EnwXAgMBAAECggEACsbIKL+TaV1IxC3JifLtYZ0bd1MJMBu8HLQyJwrV7AXp\\n",
            "1dV5BkPx8nYGfvyJ97gg3TysnAenf8mMxNdQ/GLRcrsyrheVTZrSgO06Zo6b5dIV\\n",
            "2zW7qMwofrrrQxGVVmjhFOqANj2j3UFxPYbRo2oit5jUcPekdN+OVNEzzRYQagEJ\\n",
            "ItoF+IRVJ9RfMwKeXlxGt2M9d1Xp/8h77VtKRHS/CkjqHpbuAiChPcvp1i87w3In\\n",
            "N4Vbl/p4bODRi16zncP8b7GhbGjQdwe8Z/eVCgV5JLoEEw9RgluiwkxmXg0gFizA\\n",
            "bq+8IDfne6YxvAD1Npf74ivQf/hLSBszVGPjgSj76QKBgQDsjFGg1FF5xXdWEs9P\\n",
            "PTxG/hu+0R7CnmvgwlTe+mN0FaOGS/COR12AoMhv1Gvsxb3slQuz/P79h59oWE9q\\n",
            "vENFcNhp8SeLJqZkOnuYLsJguaYyK2OfxRZv0kQqVlHAvykK6yb/OhYDEYsyyYvh\\n",
            "FX8HygY61+v4Q1dXhbdTUmh49QKBgQC91ZTlctD1Qr8etTrLI/nCvFcMI1CVsG6u\\n",
            "0K05/fxX0QZteEMuGMXNyOMsZBwQliLB4xNuqihRfieQKNjLIe8sKaHBsSA2BvF7\\n",
            "MpY420x4iqcSa7QO7JvJ/gVVPzie1OS74yiyfK6E0jgGnCzcziQ98UZ4S24aVf47\\n",
            "oJ3fdydpWwKBgC6Os6ZHA75G6mULkLgU4l9KtmVJPZeqnKsBNLkqaRa5B5VwLumi\\n",
            "DDo76xdvpMpWZTpCX6pOWlXGMs7TytXENi1dt4qqh1DxC4DgreDXGzT0dUyck6An\\n",
            "p3Hc3cPDd5XLSiW3ANbtNNXnxxD48Eod9AGxdqZwRyZ3AqLcU6fXqW5dAoGBAKRS\\n",
            "77K2cr77aikQw7X4jEjPc6JkJ2uL8COPK4QZoYf6vk+gXLbYZtE9ZbiVZ93LuIaR\\n",
            "I88VqBTy2Rhm41LjKv/VgdoCk1lxJTN5lKPe4REvJHRDmveYRTrSkpc6RK7opp8l\\n",
            "gaMPXppGxoyiQAtavfCInHGhCcvuSEYhQMehgxIlAoGAM/UcVeXfWMSlFaSdvOSd\\n",
            "7qCQU22iFM2uptwczkMcL7Z+M8IK3uDuLKTCkx24EATOPv5RC71asopqzYENUzfE\\n",
            "NgE3EzDH39R1s8wD48pWXVj+uDkUyURFClA8df28QjnlQ5enkAgNFN7h5FtaM/Um\\n",
            "TlwhwrM9/GlF+dH8TDTPjI4=\\n",
            "-----END PRIVATE KEY-----\\n",
        )
    };
}

/// The same TEST-ONLY key as PKCS#1 (`openssl rsa -in key.pem -traditional`), with literal
/// `\n` sequences instead of line breaks (as a one-line environment variable gives it).
macro_rules! test_key_pkcs1_env_json {
    () => {
        concat!(
            "-----BEGIN RSA PRIVATE KEY-----\\\\n",
            "MIIEowIBAAKCAQEAr2jymMpeX0oJzL8F5XPdyQMOlmxVOr6L3Vi1SSkHaKpufQq3\\\\n",
            "DjKqrakKARVGkhLmS0BFZBKe4CuGai+3qvU+g6eVmrXYyD8/zHCJ6md0ZwsQVoeG\\\\n",
            "rZDQj6ghRgO2q0J+udfYirmqGElR2TgW3Jz4P0xdHNmfr4ySAbVPWMW02eLhPvu1\\\\n",
            "AI6mUNsyjcmMsqLk74k/uhdkB7c2XAC9CVnvqC6At1HDWhiKx1Xr6m+9m9XUfcuz\\\\n",
            "34MPp3AaXO5p/fZksn568ZTZhRgUpWF8BuPrp5AECec0uXDvZeISkhiXsoqatVAw\\\\n",
            "37Hh6e5ANpEqX3xZN/aso5qJ/OmJCRP6dRJ8FwIDAQABAoIBAArGyCi/k2ldSMQt\\\\n",
            "yYny7WGdG3dTCTAbvBy0MicK1ewF6dXVeQZD8fJ2Bn78ife4IN08rJwHp3/JjMTX\\\\n",
            "UPxi0XK7Mq4XlU2a0oDtOmaOm+XSFds1u6jMKH6660MRlVZo4RTqgDY9o91BcT2G\\\\n",
            "0aNqIreY1HD3pHTfjlTRM80WEGoBCSLaBfiEVSfUXzMCnl5cRrdjPXdV6f/Ie+1b\\\\n",
            "SkR0vwpI6h6W7gIgoT3L6dYvO8NyJzeFW5f6eGzg0Ytes53D/G+xoWxo0HcHvGf3\\\\n",
            "lQoFeSS6BBMPUYJbosJMZl4NIBYswG6vvCA353umMbwA9TaX++Ir0H/4S0gbM1Rj\\\\n",
            "44Eo++kCgYEA7IxRoNRRecV3VhLPTz08Rv4bvtEewp5r4MJU3vpjdBWjhkvwjkdd\\\\n",
            "gKDIb9Rr7MW97JULs/z+/YefaFhParxDRXDYafEniyamZDp7mC7CYLmmMitjn8UW\\\\n",
            "b9JEKlZRwL8pCusm/zoWAxGLMsmL4RV/B8oGOtfr+ENXV4W3U1JoePUCgYEAvdWU\\\\n",
            "5XLQ9UK/HrU6yyP5wrxXDCNQlbBurtCtOf38V9EGbXhDLhjFzcjjLGQcEJYiweMT\\\\n",
            "bqooUX4nkCjYyyHvLCmhwbEgNgbxezKWONtMeIqnEmu0Duybyf4FVT84ntTku+Mo\\\\n",
            "snyuhNI4Bpws3M4kPfFGeEtuGlX+O6Cd33cnaVsCgYAujrOmRwO+RuplC5C4FOJf\\\\n",
            "SrZlST2XqpyrATS5KmkWuQeVcC7pogw6O+sXb6TKVmU6Ql+qTlpVxjLO08rVxDYt\\\\n",
            "XbeKqodQ8QuA4K3g1xs09HVMnJOgJ6dx3N3Dw3eVy0oltwDW7TTV58cQ+PBKHfQB\\\\n",
            "sXamcEcmdwKi3FOn16luXQKBgQCkUu+ytnK++2opEMO1+IxIz3OiZCdri/AjjyuE\\\\n",
            "GaGH+r5PoFy22GbRPWW4lWfdy7iGkSPPFagU8tkYZuNS4yr/1YHaApNZcSUzeZSj\\\\n",
            "3uERLyR0Q5r3mEU60pKXOkSu6KafJYGjD16aRsaMokALWr3wiJxxoQnL7khGIUDH\\\\n",
            "oYMSJQKBgDP1HFXl31jEpRWknbzkne6gkFNtohTNrqbcHM5DHC+2fjPCCt7g7iyk\\\\n",
            "wpMduBAEzj7+UQu9WrKKas2BDVM3xDYBNxMwx9/UdbPMA+PKVl1Y/rg5FMlERQpQ\\\\n",
            "PHX9vEI55UOXp5AIDRTe4eRbWjP1Jk5cIcKzPfxpRfnR/Ew0z4yO\\\\n",
            "-----END RSA PRIVATE KEY-----\\\\n",
        )
    };
}

impl TransformKind for RsaSign {
    fn name(&self) -> &'static str {
        "rsa_sign"
    }
    fn summary(&self) -> &'static str {
        "RSA signature (PKCS#1 v1.5) of the input under the private `key`"
    }
    fn params(&self) -> &'static [Param] {
        &[
            Param {
                name: "key",
                doc: "the private key in PEM (PKCS#8 or PKCS#1; line breaks real or `\\n`), usually `{{cred.private_key}}`",
                kind: ParamKind::Key,
            },
            Param {
                name: "alg",
                doc: "the hash",
                kind: ParamKind::Choice(&["sha256", "sha1"]),
            },
        ]
    }
    fn aliases(&self) -> &'static [Alias] {
        &[
            Alias {
                name: "rsa_sha256",
                args: &[("alg", "sha256")],
            },
            Alias {
                name: "rsa_sha1",
                args: &[("alg", "sha1")],
            },
        ]
    }
    fn produces(&self) -> Produces {
        Produces::Bytes
    }
    fn compile(&self, args: &Args) -> Result<Arc<dyn Transform>, String> {
        let hash = match args.word("alg") {
            "sha1" => RsaHash::Sha1,
            _ => RsaHash::Sha256,
        };
        let key = match args.key("key") {
            Key::Fixed(pem) => {
                Prepared::Ready(Box::new(parse(&pem).map_err(|e| format!("`key`: {e}"))?))
            }
            per_attempt => Prepared::PerAttempt(per_attempt),
        };
        Ok(Arc::new(Run { key, hash }))
    }
    fn examples(&self) -> &'static [Example] {
        // The pay-v3 style string to sign (METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n, empty body).
        // Expected outputs from `openssl dgst -sha256 -sign key.pem msg | xxd -p` and
        // `openssl dgst -sha1 -sign key.pem msg | xxd -p`.
        &[
            Example {
                apply: concat!(r#"{"rsa_sha256": ""#, test_key_pkcs8_json!(), r#""}"#),
                input: "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n",
                output: "6aa72f6e23913f8e8b2dea644dab9c83f7de1529502199408cafa22d2541acc4b01f3451f82f266c0e0c11d7c922f7aa1402f064b3d7f5aecc86365d23948ae1bd010dc1c12f46c444310bcd288b89362f14a2e93903b6e4dcb1527ef1e9473d3f6aed9a3776c2b020beb2fb168c9fb10c54f2899982fef96293aa1169d8c95dcd2c96e4842fac0f415e11a872189206b2ec7f1e0a777d6aa0266b454fe81baefc82490cf86048c03d873b601b59fca50be4dc5f8727ff6be22afcb004e08c0e9c3758edf422898bd198154a6668ba40621e6841dcf1a534f0671d9e6590a636502a4ae09ccc77f2b2216b5a0484e2defc02238ffa5353c05d572e929840161f",
            },
            Example {
                apply: concat!(
                    r#"{"rsa_sign": {"alg": "sha1", "key": ""#,
                    test_key_pkcs1_env_json!(),
                    r#""}}"#
                ),
                input: "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n",
                output: "93506c01fad125f5af6ed6e848c75bc156d1c6f6be04c35cc03277a5cff1faab98a6c1ad93acb1b3621d50c196f07eef5e7227cc51d039e98d94c931ae9d466df68348e54e4ea85ba3da363b705a3fb1c6314fc80f7ac8a09c2dcd7366ce71948697b9977ed90a8697e8e1b5eab5e1c0fd0653347445def21f088ff8da0340aeeafe200955f1e6fb01e3fa63f0c467335fdf43a7e798048f78bd825f54d74974fc4fb46c060431e956634e8d711cd3d81477a9decfee622b186ef42e059deca3766edcf3341b64f446b4b8879bd3d833285fc3af250be1439e913669636986c663ee23c8d08d08f6834294ec308995f84d42c1b05f8bc44f907fcf2b36afa99f",
            },
        ]
    }
}

fn parse(pem: &[u8]) -> Result<RsaSigningKey, crate::crypto::CryptoError> {
    let text = std::str::from_utf8(pem).map_err(|_| crate::crypto::CryptoError::RsaPrivateKey)?;
    RsaSigningKey::from_pem(text)
}

enum Prepared {
    Ready(Box<RsaSigningKey>),
    PerAttempt(Key),
}

struct Run {
    key: Prepared,
    hash: RsaHash,
}

impl std::fmt::Debug for Run {
    // never the key
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.hash {
            RsaHash::Sha256 => "rsa_sign(sha256)",
            RsaHash::Sha1 => "rsa_sign(sha1)",
        })
    }
}

impl Transform for Run {
    fn run(&self, data: Data, values: &dyn Values) -> Result<Data, String> {
        let sig = match &self.key {
            Prepared::Ready(k) => k.sign(self.hash, data.bytes()),
            Prepared::PerAttempt(k) => {
                parse(&k.bytes(values)).and_then(|k| k.sign(self.hash, data.bytes()))
            }
        };
        sig.map(Data::Bytes).map_err(|e| e.to_string())
    }
    fn refs(&self) -> Vec<Ref> {
        match &self.key {
            Prepared::Ready(_) => Vec::new(),
            Prepared::PerAttempt(k) => k.refs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;

    use super::super::compile;
    use super::*;
    use crate::engine::template::Scope;

    /// `cred.pem` is a credential known at start-up; `var.pem` is known only per attempt.
    struct Creds(String);
    impl Scope for Creds {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            match name {
                "cred.pem" => Ok(Ref::Cred(0)),
                "var.pem" => Ok(Ref::Var(0)),
                _ => Err(format!("unknown `{name}`")),
            }
        }
        fn fixed(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::Cred(0)).then_some(Cow::Borrowed(self.0.as_str()))
        }
    }
    struct PerAttempt(String);
    impl Values for PerAttempt {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::Var(0)).then_some(Cow::Borrowed(self.0.as_str()))
        }
    }

    fn test_pem() -> String {
        serde_json::from_str(concat!("\"", test_key_pkcs8_json!(), "\"")).unwrap()
    }

    const MSG: &str = "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n";

    fn hex_of(d: Data) -> String {
        match d {
            Data::Bytes(b) => crate::crypto::hex_lower(&b),
            Data::Text(t) => panic!("text {t}"),
        }
    }

    #[test]
    fn a_credential_key_is_parsed_once_and_never_shown() {
        let pem = test_pem();
        let t = compile(&json!({"rsa_sha256": "{{cred.pem}}"}), &Creds(pem.clone())).unwrap();
        assert!(t.imp.refs().is_empty(), "prepared at compile");
        let shown = format!("{t:?}");
        assert!(shown.contains("rsa_sign(sha256)"), "{shown}");
        for line in pem.lines() {
            assert!(!shown.contains(line), "{shown}");
        }
        let out = t
            .imp
            .run(Data::Text(MSG.into()), &PerAttempt(String::new()));
        assert_eq!(hex_of(out.unwrap()), RsaSign.examples()[0].output);
    }

    #[test]
    fn a_bad_credential_key_is_a_compile_error_that_does_not_quote_it() {
        let pem = test_pem();
        let cut = pem[..pem.len() - 200].to_owned();
        let err = compile(&json!({"rsa_sha256": "{{cred.pem}}"}), &Creds(cut.clone())).unwrap_err();
        assert!(
            err.starts_with("`key`: not an RSA private key in PEM"),
            "{err}"
        );
        for line in cut.lines().skip(1) {
            assert!(!err.contains(line), "{err}");
        }
        let err = compile(
            &json!({"rsa_sign": {"key": "hunter2-secret"}}),
            &Creds(String::new()),
        )
        .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            compile(
                &json!({"rsa_sign": {"alg": "md5", "key": "k"}}),
                &Creds(String::new())
            )
            .unwrap_err()
            .contains("`alg` is one of sha256, sha1")
        );
    }

    #[test]
    fn a_per_attempt_key_is_parsed_per_attempt() {
        let t = compile(&json!({"rsa_sha256": "{{var.pem}}"}), &Creds(String::new())).unwrap();
        assert_eq!(t.imp.refs(), vec![Ref::Var(0)]);
        let out = t.imp.run(Data::Text(MSG.into()), &PerAttempt(test_pem()));
        assert_eq!(hex_of(out.unwrap()), RsaSign.examples()[0].output);
        let err = t
            .imp
            .run(
                Data::Text(MSG.into()),
                &PerAttempt("-----BEGIN PRIVATE KEY-----\nMIIBsecret".into()),
            )
            .unwrap_err();
        assert!(
            err.contains("not an RSA private key") && !err.contains("MIIBsecret"),
            "{err}"
        );
        let err = t
            .imp
            .run(Data::Text(MSG.into()), &PerAttempt(String::new()))
            .unwrap_err();
        assert!(err.contains("not an RSA private key"), "{err}");
    }

    #[test]
    fn the_signature_verifies_under_the_public_key() {
        let key = RsaSigningKey::from_pem(&test_pem()).unwrap();
        let t = compile(&json!({"rsa_sha256": test_pem()}), &Creds(String::new())).unwrap();
        let Data::Bytes(sig) = t
            .imp
            .run(Data::Text(MSG.into()), &PerAttempt(String::new()))
            .unwrap()
        else {
            panic!("bytes")
        };
        assert!(crate::crypto::rsa_sha256_verify(
            &key.public_pem(),
            MSG.as_bytes(),
            &sig
        ));
    }
}
