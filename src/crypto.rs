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
    utf8_percent_encode(text, RFC3986_UNRESERVED).to_string()
}

pub fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
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
    //! Known answers from `shared/vendors/README.md` (the vendor kit's worked examples) and
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
}
