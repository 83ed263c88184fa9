//! Signing and encryption primitives (RustCrypto). No vendor knowledge lives here: the engine's
//! generic steps and the sandbox simulators both build on these few functions, and the
//! known-answer tests pin them to the worked examples of the vendor kit.
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ecb::cipher::block_padding::Pkcs7; // PKCS#5 is PKCS#7 for 8-byte blocks
use ecb::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5}; // the `md-5` crate is imported as `md5`
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use aes::{Aes128, Aes256};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use cbc::cipher::InnerIvInit;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;

type DesEcbEnc = ecb::Encryptor<des::Des>;
type DesEcbDec = ecb::Decryptor<des::Des>;

/// RFC 3986 unreserved characters are kept (`A-Z a-z 0-9 - . _ ~`); everything else is encoded.
pub const RFC3986_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("DES needs a key of exactly 8 bytes")]
    DesKeyLength,
    #[error("ciphertext is not valid hex")]
    Hex,
    #[error("ciphertext has a bad length or padding")]
    Unpad,
    /// Never says more about the key than its form: the PEM is a secret.
    #[error(
        "not an RSA private key in PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`)"
    )]
    RsaPrivateKey,
    #[error(
        "an encrypted private key (`BEGIN ENCRYPTED PRIVATE KEY`) is not supported: give the key unencrypted (openssl pkcs8 -nocrypt)"
    )]
    RsaEncryptedKey,
    #[error("the RSA key is too short: at least 1024 bits (2048 or more recommended)")]
    RsaKeyTooShort,
    #[error("this is a public key: the signature needs the private key")]
    RsaPublicNotPrivate,
    #[error("not an RSA public key in PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`)")]
    RsaPublicKey,
    #[error("the RSA signature could not be made")]
    RsaSign,
    #[error("AES needs a key of 16 bytes (AES-128) or 32 bytes (AES-256), not {0}")]
    AesKeyLength(usize),
    #[error("AES-CBC needs an IV of 16 bytes, not {0}")]
    CbcIvLength(usize),
    #[error("AES-GCM needs a nonce of 12 bytes, not {0}")]
    GcmNonceLength(usize),
    /// Wrong key, nonce or associated data, or a changed ciphertext or tag.
    #[error(
        "AES-GCM decryption failed: the tag does not match (wrong key, nonce or associated data)"
    )]
    GcmTag,
    #[error("the plaintext is too long for AES-GCM")]
    GcmTooLong,
}

pub fn md5(data: &[u8]) -> Vec<u8> {
    Md5::digest(data).to_vec()
}

pub fn sha1(data: &[u8]) -> Vec<u8> {
    Sha1::digest(data).to_vec()
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

pub fn sha512(data: &[u8]) -> Vec<u8> {
    Sha512::digest(data).to_vec()
}

pub fn hmac_sha512(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time check of an HMAC-SHA1 tag (used by simulators verifying callers).
pub fn hmac_sha1_verify(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// Constant-time check of an HMAC-SHA256 tag.
pub fn hmac_sha256_verify(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// DES in ECB mode with PKCS#5 padding (Java's `DES/ECB/PKCS5Padding`).
pub fn des_ecb_encrypt(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let enc = DesEcbEnc::new_from_slice(key).map_err(|_| CryptoError::DesKeyLength)?;
    Ok(enc.encrypt_padded_vec::<Pkcs7>(plaintext))
}

/// A DES key checked and scheduled once, for encrypting many messages.
#[derive(Clone)]
pub struct DesEcbKey(DesEcbEnc);

impl DesEcbKey {
    pub fn new(key: &[u8]) -> Result<DesEcbKey, CryptoError> {
        DesEcbEnc::new_from_slice(key)
            .map(DesEcbKey)
            .map_err(|_| CryptoError::DesKeyLength)
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        self.0.clone().encrypt_padded_vec::<Pkcs7>(plaintext)
    }
}

pub fn des_ecb_decrypt(key: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let dec = DesEcbDec::new_from_slice(key).map_err(|_| CryptoError::DesKeyLength)?;
    dec.decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map_err(|_| CryptoError::Unpad)
}

/// Decrypts hex (either case) ciphertext.
pub fn des_ecb_decrypt_hex(key: &[u8], hex_ciphertext: &str) -> Result<Vec<u8>, CryptoError> {
    let ct = hex::decode(hex_ciphertext).map_err(|_| CryptoError::Hex)?;
    des_ecb_decrypt(key, &ct)
}

pub fn hex_lower(data: &[u8]) -> String {
    hex::encode(data)
}

pub fn hex_upper(data: &[u8]) -> String {
    hex::encode_upper(data)
}

pub fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn base64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// RFC 3986 percent-encoding: only unreserved characters stay as they are.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    percent_encode_into(&mut out, text);
    out
}

/// [`percent_encode`] appended to `out`: a request's URL is written without a string per
/// name and value (and without `Display`'s formatting machinery).
pub fn percent_encode_into(out: &mut String, text: &str) {
    out.extend(utf8_percent_encode(text, RFC3986_UNRESERVED));
}

pub fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The hash of an RSA PKCS#1 v1.5 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    Sha256,
    Sha1,
}

/// Reads the PEM of a key as an environment variable may hold it: with real line breaks
/// (LF or CRLF) or with literal `\n` sequences, surrounding blanks ignored.
fn pem_text(pem: &str) -> String {
    let text = pem
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\r\n", "\n");
    let mut text = text.trim().to_owned();
    text.push('\n');
    text
}

/// An RSA private key, parsed and checked once, for PKCS#1 v1.5 signatures.
///
/// Accepts PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`), and the bare
/// base64 of either DER form as some platforms hand it out. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct RsaSigningKey(rsa::PrivateKey);

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigningKey(..)")
    }
}

impl RsaSigningKey {
    pub fn from_pem(pem: &str) -> Result<RsaSigningKey, CryptoError> {
        let text = pem_text(pem);
        let key = if text.contains("-----BEGIN PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs8_pem(&text).ok()
        } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs1_pem(&text).ok()
        } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(CryptoError::RsaEncryptedKey);
        } else if text.contains("PUBLIC KEY-----") {
            return Err(CryptoError::RsaPublicNotPrivate);
        } else if text.contains("-----") {
            None
        } else {
            // bare base64 of the DER, as some platforms hand keys out
            let compact: String = text.split_whitespace().collect();
            STANDARD.decode(compact).ok().and_then(|der| {
                rsa::PrivateKey::from_pkcs8_der(&der)
                    .or_else(|_| rsa::PrivateKey::from_pkcs1_der(&der))
                    .ok()
            })
        };
        // the parse errors are dropped on purpose: they may quote parts of the key
        let key = key.ok_or(CryptoError::RsaPrivateKey)?;
        if key.size() < 128 {
            return Err(CryptoError::RsaKeyTooShort);
        }
        Ok(RsaSigningKey(key))
    }

    /// RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2) over `msg` hashed with `hash`.
    pub fn sign(&self, hash: RsaHash, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match hash {
            RsaHash::Sha256 => self.0.pkcs1v15_sign::<Sha256>(msg),
            RsaHash::Sha1 => self.0.pkcs1v15_sign::<Sha1>(msg),
        }
        .map_err(|_| CryptoError::RsaSign)
    }

    /// The public half as `BEGIN PUBLIC KEY` PEM (for test servers that verify).
    pub fn public_pem(&self) -> String {
        self.0
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

/// RSA PKCS#1 v1.5 with SHA-256 under a private key in PEM.
pub fn rsa_sha256_sign(private_pem: &str, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
    RsaSigningKey::from_pem(private_pem)?.sign(RsaHash::Sha256, msg)
}

fn rsa_public_key(public_pem: &str) -> Result<rsa::PublicKey, CryptoError> {
    let text = pem_text(public_pem);
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(&text).map_err(|_| CryptoError::RsaPublicKey)
    } else {
        rsa::PublicKey::from_public_key_pem(&text).map_err(|_| CryptoError::RsaPublicKey)
    }
}

/// Checks an RSA PKCS#1 v1.5 SHA-256 signature under a public key in PEM (SPKI
/// `BEGIN PUBLIC KEY` or PKCS#1 `BEGIN RSA PUBLIC KEY`). False for a bad key or signature.
pub fn rsa_sha256_verify(public_pem: &str, msg: &[u8], sig: &[u8]) -> bool {
    rsa_public_key(public_pem)
        .map(|k| k.pkcs1v15_verify::<Sha256>(msg, sig).is_ok())
        .unwrap_or(false)
}

/// An AES key checked and scheduled once: 16 bytes for AES-128, 32 for AES-256.
#[derive(Clone)]
pub struct AesKey(AesCipher);

#[derive(Clone)]
enum AesCipher {
    Aes128(Aes128),
    Aes256(Aes256),
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            AesCipher::Aes128(_) => "AesKey(AES-128)",
            AesCipher::Aes256(_) => "AesKey(AES-256)",
        })
    }
}

impl AesKey {
    pub fn new(key: &[u8]) -> Result<AesKey, CryptoError> {
        let bad = |_| CryptoError::AesKeyLength(key.len());
        match key.len() {
            16 => Aes128::new_from_slice(key)
                .map(|c| AesKey(AesCipher::Aes128(c)))
                .map_err(bad),
            32 => Aes256::new_from_slice(key)
                .map(|c| AesKey(AesCipher::Aes256(c)))
                .map_err(bad),
            n => Err(CryptoError::AesKeyLength(n)),
        }
    }

    /// AES-CBC with PKCS#7 padding under a 16-byte IV.
    pub fn cbc_encrypt(&self, iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let bad = |_| CryptoError::CbcIvLength(iv.len());
        Ok(match &self.0 {
            AesCipher::Aes128(c) => cbc::Encryptor::inner_iv_slice_init(c.clone(), iv)
                .map_err(bad)?
                .encrypt_padded_vec::<Pkcs7>(plaintext),
            AesCipher::Aes256(c) => cbc::Encryptor::inner_iv_slice_init(c.clone(), iv)
                .map_err(bad)?
                .encrypt_padded_vec::<Pkcs7>(plaintext),
        })
    }

    pub fn cbc_decrypt(&self, iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let bad = |_| CryptoError::CbcIvLength(iv.len());
        match &self.0 {
            AesCipher::Aes128(c) => cbc::Decryptor::inner_iv_slice_init(c.clone(), iv)
                .map_err(bad)?
                .decrypt_padded_vec::<Pkcs7>(ciphertext),
            AesCipher::Aes256(c) => cbc::Decryptor::inner_iv_slice_init(c.clone(), iv)
                .map_err(bad)?
                .decrypt_padded_vec::<Pkcs7>(ciphertext),
        }
        .map_err(|_| CryptoError::Unpad)
    }

    /// AES-GCM under a 12-byte nonce: the ciphertext followed by the 16-byte tag.
    pub fn gcm_encrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let n = gcm_nonce(nonce)?;
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        match &self.0 {
            AesCipher::Aes128(c) => Aes128Gcm::from(c.clone()).encrypt(n, payload),
            AesCipher::Aes256(c) => Aes256Gcm::from(c.clone()).encrypt(n, payload),
        }
        // encryption fails only past GCM's length limit (64 GiB)
        .map_err(|_| CryptoError::GcmTooLong)
    }

    /// Opens `ciphertext || tag` (the last 16 bytes are the tag).
    pub fn gcm_decrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let n = gcm_nonce(nonce)?;
        let payload = Payload {
            msg: ciphertext_with_tag,
            aad,
        };
        match &self.0 {
            AesCipher::Aes128(c) => Aes128Gcm::from(c.clone()).decrypt(n, payload),
            AesCipher::Aes256(c) => Aes256Gcm::from(c.clone()).decrypt(n, payload),
        }
        .map_err(|_| CryptoError::GcmTag)
    }
}

fn gcm_nonce(nonce: &[u8]) -> Result<&aes_gcm::Nonce<aes_gcm::aead::consts::U12>, CryptoError> {
    nonce
        .try_into()
        .map_err(|_| CryptoError::GcmNonceLength(nonce.len()))
}

/// AES-128/256-CBC with PKCS#7 padding (the key length picks the variant).
pub fn aes_cbc_encrypt(key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    AesKey::new(key)?.cbc_encrypt(iv, plaintext)
}

pub fn aes_cbc_decrypt(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    AesKey::new(key)?.cbc_decrypt(iv, ciphertext)
}

/// AES-128/256-GCM: the ciphertext followed by the 16-byte tag.
pub fn aes_gcm_encrypt(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    AesKey::new(key)?.gcm_encrypt(nonce, aad, plaintext)
}

/// Opens AES-128/256-GCM `ciphertext || tag`, as in the pay-v3 style
/// `AEAD_AES_256_GCM` member (`ciphertext` base64-decoded, `nonce` and `associated_data` as
/// their UTF-8 bytes, the APIv3 key as the 32-byte key).
pub fn aes_gcm_decrypt(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext_with_tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    AesKey::new(key)?.gcm_decrypt(nonce, aad, ciphertext_with_tag)
}

/// Constant-time byte comparison for signatures compared as text.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    //! Known answers from the vendor integration kit's worked examples and
    //! from published RFC test vectors for the primitives the kit does not exercise.
    use super::*;

    #[test]
    fn md5_matches_the_op_worked_example() {
        let signed = r#"op-sandbox-secretapiVersion01client70374ddd0f3641368d419b2d93127b8fversion2.0{"OwnerType":1,"ChatId":"u00011234567890","UseStatus":2}op-sandbox-secret"#;
        assert_eq!(
            hex_lower(&md5(signed.as_bytes())),
            "6ac64cca456e8f3da7a53a72147ad831"
        );
        let package = r#"op-sandbox-secretapiVersion01client70374ddd0f3641368d419b2d93127b8fversion2.0{"TicketPackageId":"1bfb390cc3144de3b45c662047693f8e"}op-sandbox-secret"#;
        assert_eq!(
            hex_lower(&md5(package.as_bytes())),
            "19fbda81ec7c00546ac19ea7c1777818"
        );
    }

    #[test]
    fn des_ecb_pkcs5_matches_the_hkl_worked_examples() {
        let key = b"hklkey01";
        let cases = [
            (
                r#"{"memberId":"K1H93QDKI00B7"}"#,
                "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E",
            ),
            (
                r#"{"platformId":"oEv-It_aoh7mzEinzyPhnR0-uVc41"}"#,
                "CEBBFCDA865572A56EBBD741BF78FFA3E6FBC4C24F0BB5816D774F9001B203D566238237BEF024ECA1FC0DDE5ADF81D4",
            ),
        ];
        for (plain, want) in cases {
            let got = hex_upper(&des_ecb_encrypt(key, plain.as_bytes()).unwrap());
            assert_eq!(got, want, "encrypting {plain}");
            assert_eq!(des_ecb_decrypt_hex(key, want).unwrap(), plain.as_bytes());
            assert_eq!(
                des_ecb_decrypt_hex(key, &want.to_lowercase()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn des_rejects_bad_keys_and_ciphertexts() {
        assert_eq!(
            des_ecb_encrypt(b"short", b"x"),
            Err(CryptoError::DesKeyLength)
        );
        assert_eq!(
            des_ecb_decrypt_hex(b"hklkey01", "00112233"),
            Err(CryptoError::Unpad)
        );
        assert_eq!(
            des_ecb_decrypt_hex(b"hklkey01", "zz"),
            Err(CryptoError::Hex)
        );
        // the right ciphertext under the wrong key does not decrypt to the plaintext
        let ct = "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E";
        assert_ne!(
            des_ecb_decrypt_hex(b"hklkey02", ct).ok(),
            Some(br#"{"memberId":"K1H93QDKI00B7"}"#.to_vec())
        );
    }

    #[test]
    fn hmac_sha1_base64_percent_matches_the_zvcms_worked_example() {
        let msg = "grantCode=782c281f62&nonce=658979&openId=6dc05b4ac175cf316d226252b05cf685&timestamp=1547186244";
        let tag = hmac_sha1(b"zv-sandbox-secret", msg.as_bytes());
        let b64 = base64(&tag);
        assert_eq!(b64, "m/z8N8ig7rKR8f8gm+cZ+5DhwMk=");
        assert_eq!(percent_encode(&b64), "m%2Fz8N8ig7rKR8f8gm%2BcZ%2B5DhwMk%3D");
        assert!(hmac_sha1_verify(b"zv-sandbox-secret", msg.as_bytes(), &tag));
        assert!(!hmac_sha1_verify(b"zv-wrong-secret", msg.as_bytes(), &tag));
        assert_eq!(
            percent_decode("m%2Fz8N8ig7rKR8f8gm%2BcZ%2B5DhwMk%3D").unwrap(),
            b64
        );
    }

    #[test]
    fn sha_and_hmac_sha256_match_rfc_vectors() {
        // FIPS 180 "abc"
        assert_eq!(
            hex_lower(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex_lower(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex_lower(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"jefe",
            b"what do ya want for nothing?",
            &tag
        ));
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b/c+d=é"), "a%20b%2Fc%2Bd%3D%C3%A9");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    /// A TEST-ONLY 2048-bit RSA key made for these tests with `openssl genrsa 2048` (never used
    /// anywhere else). The same key is in `engine/transforms/rsa.rs`'s examples.
    const TEST_RSA_PKCS8: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCvaPKYyl5fSgnM
vwXlc93JAw6WbFU6vovdWLVJKQdoqm59CrcOMqqtqQoBFUaSEuZLQEVkEp7gK4Zq
L7eq9T6Dp5WatdjIPz/McInqZ3RnCxBWh4atkNCPqCFGA7arQn6519iKuaoYSVHZ
OBbcnPg/TF0c2Z+vjJIBtU9YxbTZ4uE++7UAjqZQ2zKNyYyyouTviT+6F2QHtzZc
AL0JWe+oLoC3UcNaGIrHVevqb72b1dR9y7Pfgw+ncBpc7mn99mSyfnrxlNmFGBSl
YXwG4+unkAQJ5zS5cO9l4hKSGJeyipq1UDDfseHp7kA2kSpffFk39qyjmon86YkJ
E/p1EnwXAgMBAAECggEACsbIKL+TaV1IxC3JifLtYZ0bd1MJMBu8HLQyJwrV7AXp
1dV5BkPx8nYGfvyJ97gg3TysnAenf8mMxNdQ/GLRcrsyrheVTZrSgO06Zo6b5dIV
2zW7qMwofrrrQxGVVmjhFOqANj2j3UFxPYbRo2oit5jUcPekdN+OVNEzzRYQagEJ
ItoF+IRVJ9RfMwKeXlxGt2M9d1Xp/8h77VtKRHS/CkjqHpbuAiChPcvp1i87w3In
N4Vbl/p4bODRi16zncP8b7GhbGjQdwe8Z/eVCgV5JLoEEw9RgluiwkxmXg0gFizA
bq+8IDfne6YxvAD1Npf74ivQf/hLSBszVGPjgSj76QKBgQDsjFGg1FF5xXdWEs9P
PTxG/hu+0R7CnmvgwlTe+mN0FaOGS/COR12AoMhv1Gvsxb3slQuz/P79h59oWE9q
vENFcNhp8SeLJqZkOnuYLsJguaYyK2OfxRZv0kQqVlHAvykK6yb/OhYDEYsyyYvh
FX8HygY61+v4Q1dXhbdTUmh49QKBgQC91ZTlctD1Qr8etTrLI/nCvFcMI1CVsG6u
0K05/fxX0QZteEMuGMXNyOMsZBwQliLB4xNuqihRfieQKNjLIe8sKaHBsSA2BvF7
MpY420x4iqcSa7QO7JvJ/gVVPzie1OS74yiyfK6E0jgGnCzcziQ98UZ4S24aVf47
oJ3fdydpWwKBgC6Os6ZHA75G6mULkLgU4l9KtmVJPZeqnKsBNLkqaRa5B5VwLumi
DDo76xdvpMpWZTpCX6pOWlXGMs7TytXENi1dt4qqh1DxC4DgreDXGzT0dUyck6An
p3Hc3cPDd5XLSiW3ANbtNNXnxxD48Eod9AGxdqZwRyZ3AqLcU6fXqW5dAoGBAKRS
77K2cr77aikQw7X4jEjPc6JkJ2uL8COPK4QZoYf6vk+gXLbYZtE9ZbiVZ93LuIaR
I88VqBTy2Rhm41LjKv/VgdoCk1lxJTN5lKPe4REvJHRDmveYRTrSkpc6RK7opp8l
gaMPXppGxoyiQAtavfCInHGhCcvuSEYhQMehgxIlAoGAM/UcVeXfWMSlFaSdvOSd
7qCQU22iFM2uptwczkMcL7Z+M8IK3uDuLKTCkx24EATOPv5RC71asopqzYENUzfE
NgE3EzDH39R1s8wD48pWXVj+uDkUyURFClA8df28QjnlQ5enkAgNFN7h5FtaM/Um
TlwhwrM9/GlF+dH8TDTPjI4=
-----END PRIVATE KEY-----
";
    /// TEST-ONLY, refused for its size: `openssl genrsa 512`
    const TEST_RSA_512_BITS: &str = r"-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAzf6tQcK4ac7HRh54
QrEaJ1md/SkOWVZy4O3YXD7b+PNwyzrn178hc8XxiUpfXu62ehDKZwU8XHkjTgBj
jAB+nQIDAQABAkBt5SdjRNGDSRhQlSLNWZQ9V/cMPyHzkUYaL2lU1QgfiDJ+l6Jk
9gOOP2dvON5Vno7hFLCn2tyhu9mlitlfNAOhAiEA9yFTHWq1tWyrwPtKMRWJTw+R
mOW/qEB/+v/Yf5f+mfkCIQDVY2S0X/xoLogeGT3QRLBXXIeSW1NEZbeZvhlBHGSS
xQIhAIfvc7l9pf/qi7s2PoQrVYEAjlTtI3RYLk2Rh7P/llN5AiEA0IHslyvrkUlW
jEKR2f4kaVjqyCIgvQa/XqUYPD0oMRkCIBkYmeJIjPRu11luRiE73XRObIFpFUsi
ZCHlDqEeUX02
-----END PRIVATE KEY-----
";
    /// `openssl pkey -in key.pem -pubout`
    const TEST_RSA_PUBLIC: &str = r"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr2jymMpeX0oJzL8F5XPd
yQMOlmxVOr6L3Vi1SSkHaKpufQq3DjKqrakKARVGkhLmS0BFZBKe4CuGai+3qvU+
g6eVmrXYyD8/zHCJ6md0ZwsQVoeGrZDQj6ghRgO2q0J+udfYirmqGElR2TgW3Jz4
P0xdHNmfr4ySAbVPWMW02eLhPvu1AI6mUNsyjcmMsqLk74k/uhdkB7c2XAC9CVnv
qC6At1HDWhiKx1Xr6m+9m9XUfcuz34MPp3AaXO5p/fZksn568ZTZhRgUpWF8BuPr
p5AECec0uXDvZeISkhiXsoqatVAw37Hh6e5ANpEqX3xZN/aso5qJ/OmJCRP6dRJ8
FwIDAQAB
-----END PUBLIC KEY-----
";
    /// `openssl rsa -in key.pem -RSAPublicKey_out`
    const TEST_RSA_PUBLIC_PKCS1: &str = r"-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAr2jymMpeX0oJzL8F5XPdyQMOlmxVOr6L3Vi1SSkHaKpufQq3DjKq
rakKARVGkhLmS0BFZBKe4CuGai+3qvU+g6eVmrXYyD8/zHCJ6md0ZwsQVoeGrZDQ
j6ghRgO2q0J+udfYirmqGElR2TgW3Jz4P0xdHNmfr4ySAbVPWMW02eLhPvu1AI6m
UNsyjcmMsqLk74k/uhdkB7c2XAC9CVnvqC6At1HDWhiKx1Xr6m+9m9XUfcuz34MP
p3AaXO5p/fZksn568ZTZhRgUpWF8BuPrp5AECec0uXDvZeISkhiXsoqatVAw37Hh
6e5ANpEqX3xZN/aso5qJ/OmJCRP6dRJ8FwIDAQAB
-----END RSA PUBLIC KEY-----
";
    /// The pay-v3 style string to sign: METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n (empty body).
    const PAYV3_MESSAGE: &str =
        "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n";

    fn unhex(parts: &[&str]) -> Vec<u8> {
        hex::decode(parts.concat()).unwrap()
    }

    #[test]
    fn rsa_pkcs1v15_matches_openssl() {
        // printf 'GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n' > msg
        // openssl dgst -sha256 -sign key.pem msg | xxd -p
        let want256 = unhex(&[
            "6aa72f6e23913f8e8b2dea644dab9c83f7de1529502199408cafa22d2541acc4",
            "b01f3451f82f266c0e0c11d7c922f7aa1402f064b3d7f5aecc86365d23948ae1",
            "bd010dc1c12f46c444310bcd288b89362f14a2e93903b6e4dcb1527ef1e9473d",
            "3f6aed9a3776c2b020beb2fb168c9fb10c54f2899982fef96293aa1169d8c95d",
            "cd2c96e4842fac0f415e11a872189206b2ec7f1e0a777d6aa0266b454fe81bae",
            "fc82490cf86048c03d873b601b59fca50be4dc5f8727ff6be22afcb004e08c0e",
            "9c3758edf422898bd198154a6668ba40621e6841dcf1a534f0671d9e6590a636",
            "502a4ae09ccc77f2b2216b5a0484e2defc02238ffa5353c05d572e929840161f",
        ]);
        // openssl dgst -sha1 -sign key.pem msg | xxd -p
        let want1 = unhex(&[
            "93506c01fad125f5af6ed6e848c75bc156d1c6f6be04c35cc03277a5cff1faab",
            "98a6c1ad93acb1b3621d50c196f07eef5e7227cc51d039e98d94c931ae9d466d",
            "f68348e54e4ea85ba3da363b705a3fb1c6314fc80f7ac8a09c2dcd7366ce7194",
            "8697b9977ed90a8697e8e1b5eab5e1c0fd0653347445def21f088ff8da0340ae",
            "eafe200955f1e6fb01e3fa63f0c467335fdf43a7e798048f78bd825f54d74974",
            "fc4fb46c060431e956634e8d711cd3d81477a9decfee622b186ef42e059deca3",
            "766edcf3341b64f446b4b8879bd3d833285fc3af250be1439e913669636986c6",
            "63ee23c8d08d08f6834294ec308995f84d42c1b05f8bc44f907fcf2b36afa99f",
        ]);
        let key = RsaSigningKey::from_pem(TEST_RSA_PKCS8).unwrap();
        let msg = PAYV3_MESSAGE.as_bytes();
        assert_eq!(key.sign(RsaHash::Sha256, msg).unwrap(), want256);
        assert_eq!(key.sign(RsaHash::Sha1, msg).unwrap(), want1);
        assert_eq!(rsa_sha256_sign(TEST_RSA_PKCS8, msg).unwrap(), want256);
        assert!(rsa_sha256_verify(TEST_RSA_PUBLIC, msg, &want256));
        assert!(rsa_sha256_verify(TEST_RSA_PUBLIC_PKCS1, msg, &want256));
        assert_eq!(key.public_pem(), TEST_RSA_PUBLIC);
        // a changed message, signature, or key does not verify; nothing panics
        assert!(!rsa_sha256_verify(
            TEST_RSA_PUBLIC,
            b"GET\n/v3/other\n",
            &want256
        ));
        assert!(!rsa_sha256_verify(TEST_RSA_PUBLIC, msg, &want1));
        assert!(!rsa_sha256_verify(TEST_RSA_PUBLIC, msg, &want256[1..]));
        assert!(!rsa_sha256_verify(TEST_RSA_PUBLIC, msg, b""));
        assert!(!rsa_sha256_verify("not a key", msg, &want256));
        assert!(!rsa_sha256_verify(TEST_RSA_PKCS8, msg, &want256));
    }

    #[test]
    fn rsa_keys_are_read_in_every_form_an_environment_gives() {
        let msg = PAYV3_MESSAGE.as_bytes();
        let want = rsa_sha256_sign(TEST_RSA_PKCS8, msg).unwrap();
        let body: String = TEST_RSA_PKCS8
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let forms = [
            // literal `\n`, as `CGW_…=$(awk …)` or a one-line secret store gives it
            TEST_RSA_PKCS8.replace('\n', "\\n"),
            TEST_RSA_PKCS8.replace('\n', "\r\n"),
            format!("  \n{TEST_RSA_PKCS8}\n\n"),
            // the bare base64 of the DER
            body.clone(),
        ];
        for (i, form) in forms.iter().enumerate() {
            let key = RsaSigningKey::from_pem(form).unwrap_or_else(|e| panic!("form {i}: {e}"));
            assert_eq!(key.sign(RsaHash::Sha256, msg).unwrap(), want);
        }
    }

    #[test]
    fn bad_rsa_keys_are_refused_without_quoting_them() {
        let cut = &TEST_RSA_PKCS8[..TEST_RSA_PKCS8.len() / 2];
        let body_line = TEST_RSA_PKCS8.lines().nth(3).unwrap();
        let cases = [
            ("", CryptoError::RsaPrivateKey),
            ("secret", CryptoError::RsaPrivateKey),
            (cut, CryptoError::RsaPrivateKey),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----",
                CryptoError::RsaEncryptedKey,
            ),
            (TEST_RSA_PUBLIC, CryptoError::RsaPublicNotPrivate),
            (
                "-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----",
                CryptoError::RsaPrivateKey,
            ),
        ];
        for (pem, want) in cases {
            let e = RsaSigningKey::from_pem(pem).unwrap_err();
            assert_eq!(e, want);
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(&body_line[..20]), "{shown}");
                assert!(!shown.contains("MII"), "{shown}");
            }
        }
        let key = RsaSigningKey::from_pem(TEST_RSA_PKCS8).unwrap();
        assert_eq!(format!("{key:?}"), "RsaSigningKey(..)");
        assert_eq!(
            RsaSigningKey::from_pem(TEST_RSA_512_BITS).unwrap_err(),
            CryptoError::RsaKeyTooShort
        );
    }

    /// NIST SP 800-38A appendix F.2.1 (CBC-AES128.Encrypt) and F.2.5 (CBC-AES256.Encrypt): the
    /// four blocks are the published ciphertext; PKCS#7 then adds one block of padding (its
    /// ciphertext from `openssl enc -aes-128-cbc -K 2b7e… -iv 0001…` on the same plaintext).
    #[test]
    fn aes_cbc_matches_nist_sp800_38a() {
        let iv = unhex(&["000102030405060708090a0b0c0d0e0f"]);
        let plain = unhex(&[
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ]);
        let cases = [
            (
                "2b7e151628aed2a6abf7158809cf4f3c",
                [
                    "7649abac8119b246cee98e9b12e9197d",
                    "5086cb9b507219ee95db113a917678b2",
                    "73bed6b8e3c1743b7116e69e22229516",
                    "3ff1caa1681fac09120eca307586e1a7",
                ],
                Some("8cb82807230e1321d3fae00d18cc2012"),
            ),
            (
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                [
                    "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
                    "9cfc4e967edb808d679f777bc6702c7d",
                    "39f23369a9d9bacfa530e26304231461",
                    "b2eb05e2c39be9fcda6c19078c6a9d1b",
                ],
                None,
            ),
        ];
        for (key, blocks, pad_block) in cases {
            let key = unhex(&[key]);
            let got = aes_cbc_encrypt(&key, &iv, &plain).unwrap();
            assert_eq!(got.len(), plain.len() + 16);
            assert_eq!(&got[..64], unhex(&blocks).as_slice());
            if let Some(p) = pad_block {
                assert_eq!(&got[64..], unhex(&[p]).as_slice());
            }
            assert_eq!(aes_cbc_decrypt(&key, &iv, &got).unwrap(), plain);
        }
    }

    /// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 4 (AES-128) and
    /// 16 (AES-256): 60 bytes of plaintext with 20 bytes of associated data.
    #[test]
    fn aes_gcm_matches_the_gcm_spec_vectors() {
        let nonce = unhex(&["cafebabefacedbaddecaf888"]);
        let aad = unhex(&["feedfacedeadbeeffeedfacedeadbeefabaddad2"]);
        let plain = unhex(&[
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ]);
        let cases = [
            (
                "feffe9928665731c6d6a8f9467308308",
                [
                    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
                    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                ],
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                [
                    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
                    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                ],
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (key, ct, tag) in cases {
            let key = unhex(&[key]);
            let want = unhex(&[ct[0], ct[1], tag]);
            assert_eq!(aes_gcm_encrypt(&key, &nonce, &aad, &plain).unwrap(), want);
            assert_eq!(aes_gcm_decrypt(&key, &nonce, &aad, &want).unwrap(), plain);
            // any change to the tag, ciphertext, associated data or nonce is refused
            let mut bad = want.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(
                aes_gcm_decrypt(&key, &nonce, &aad, &bad),
                Err(CryptoError::GcmTag)
            );
            bad = want.clone();
            bad[0] ^= 1;
            assert_eq!(
                aes_gcm_decrypt(&key, &nonce, &aad, &bad),
                Err(CryptoError::GcmTag)
            );
            assert_eq!(
                aes_gcm_decrypt(&key, &nonce, b"", &want),
                Err(CryptoError::GcmTag)
            );
            let mut other = nonce.clone();
            other[0] ^= 1;
            assert_eq!(
                aes_gcm_decrypt(&key, &other, &aad, &want),
                Err(CryptoError::GcmTag)
            );
            assert_eq!(
                aes_gcm_decrypt(&key, &nonce, &aad, &want[..15]),
                Err(CryptoError::GcmTag)
            );
        }
    }

    /// The pay-v3 way: a 32-character APIv3 key, text nonce and associated data, base64 of
    /// ciphertext||tag in the answer (made with Python's `cryptography` AESGCM).
    #[test]
    fn aes_gcm_opens_a_pay_v3_style_member() {
        let key = b"0123456789abcdef0123456789abcdef";
        let ct = base64_decode("Eu6q0L6VAr1BJtBSO7slWhnmfFzaYlMuUDsf9jbrXQ==").unwrap();
        assert_eq!(
            aes_gcm_decrypt(key, b"abcdefghijkl", b"certificate", &ct).unwrap(),
            br#"{"coupon":"C1"}"#
        );
    }

    #[test]
    fn aes_refuses_bad_lengths_without_panicking() {
        let k16 = [7u8; 16];
        assert_eq!(
            aes_cbc_encrypt(&[0; 24], &[0; 16], b"x"),
            Err(CryptoError::AesKeyLength(24))
        );
        assert_eq!(
            aes_gcm_encrypt(b"", b"abcdefghijkl", b"", b"x"),
            Err(CryptoError::AesKeyLength(0))
        );
        assert_eq!(
            aes_cbc_encrypt(&k16, &[0; 12], b"x"),
            Err(CryptoError::CbcIvLength(12))
        );
        assert_eq!(
            aes_cbc_decrypt(&k16, &[0; 15], &[0; 16]),
            Err(CryptoError::CbcIvLength(15))
        );
        assert_eq!(
            aes_gcm_encrypt(&k16, &[0; 16], b"", b"x"),
            Err(CryptoError::GcmNonceLength(16))
        );
        assert_eq!(
            aes_gcm_decrypt(&k16, &[0; 11], b"", &[0; 32]),
            Err(CryptoError::GcmNonceLength(11))
        );
        assert_eq!(
            aes_cbc_decrypt(&k16, &[0; 16], &[0; 17]),
            Err(CryptoError::Unpad)
        );
        assert_eq!(
            aes_cbc_decrypt(&k16, &[0; 16], b""),
            Err(CryptoError::Unpad)
        );
        let key = AesKey::new(&k16).unwrap();
        assert_eq!(format!("{key:?}"), "AesKey(AES-128)");
        // empty plaintexts work in both modes
        assert_eq!(key.cbc_encrypt(&[0; 16], b"").unwrap().len(), 16);
        assert_eq!(key.gcm_encrypt(&[0; 12], b"", b"").unwrap().len(), 16);
    }
}
