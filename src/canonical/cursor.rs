//! The paging cursor: the sort key of the last coupon a page showed (keyset paging), the
//! query it belongs to, and when it expires, signed with HMAC-SHA256 so that a caller can
//! neither forge nor alter one. A page after a cursor starts strictly after that key in the
//! list as it is *now*, so a coupon that stayed is never skipped or shown twice, however the
//! vendors' answers change between pages.
//!
//! Wire form: `base64url(payload JSON) "." base64url(first 16 bytes of the MAC)`.
use std::cmp::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto;

/// How long a cursor may be used after its page was answered.
pub const CURSOR_TTL: Duration = Duration::from_secs(15 * 60);
/// Bytes of the HMAC kept in a cursor (128 bits).
const TAG_LEN: usize = 16;
/// A cursor longer than this is refused before decoding.
const MAX_CURSOR_LEN: usize = 2048;

/// Where a coupon sits in the merged order: status group (usable, pending, the rest),
/// `valid_until` (null last), vendor, id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// 0 usable, 1 pending, 2 the rest.
    pub r: u8,
    /// `valid_until` in Unix milliseconds; null sorts last within the group.
    pub u: Option<i64>,
    /// vendor id
    pub v: String,
    /// canonical coupon id
    pub i: String,
}

impl SortKey {
    pub(crate) fn tuple(&self) -> (u8, bool, i64, &str, &str) {
        (
            self.r,
            self.u.is_none(),
            self.u.unwrap_or(0),
            &self.v,
            &self.i,
        )
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Signs and checks cursors with one key: per process by default (cursors then do not
/// survive a restart), or configured so that every instance behind a balancer shares it.
#[derive(Clone)]
pub struct CursorSigner {
    key: [u8; 32],
    ttl: Duration,
}

impl std::fmt::Debug for CursorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorSigner")
            .field("key", &"[redacted]")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Why a cursor was refused; each a 400 with its own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "`cursor` is not a cursor this gateway issued (or it was altered); start again without one"
    )]
    Invalid,
    #[error("`cursor` has expired (cursors last {0} minutes); start again without one")]
    Expired(u64),
    #[error(
        "`cursor` belongs to another query (its member, filters or vendors differ); start again without one"
    )]
    OtherQuery,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// format version
    n: u8,
    /// fingerprint of the query
    q: String,
    /// expiry, Unix seconds
    e: i64,
    /// the last sort key shown
    k: SortKey,
}

impl CursorSigner {
    /// A signer with a fresh random key.
    pub fn random() -> CursorSigner {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        CursorSigner::with_key(key)
    }

    /// A signer with a configured secret (any length; hashed to the key).
    pub fn from_secret(secret: &[u8]) -> CursorSigner {
        let mut key = [0u8; 32];
        key.copy_from_slice(&crypto::sha256(secret));
        CursorSigner::with_key(key)
    }

    fn with_key(key: [u8; 32]) -> CursorSigner {
        CursorSigner {
            key,
            ttl: CURSOR_TTL,
        }
    }

    /// A cursor continuing `query` after `last`, valid for the TTL from `now`.
    pub fn issue(&self, query: &str, last: &SortKey, now: jiff::Timestamp) -> String {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let payload = Payload {
            n: 1,
            q: query.to_owned(),
            e: now.as_second().saturating_add(ttl),
            k: last.clone(),
        };
        let json = serde_json::to_vec(&payload).expect("cursors serialize");
        let tag = crypto::hmac_sha256(&self.key, &json);
        format!(
            "{}.{}",
            crypto::base64url(&json),
            crypto::base64url(&tag[..TAG_LEN])
        )
    }

    /// The last sort key of a cursor issued for `query` that has not expired at `now`.
    pub fn check(
        &self,
        cursor: &str,
        query: &str,
        now: jiff::Timestamp,
    ) -> Result<SortKey, CursorError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Invalid);
        }
        let (body, tag) = cursor.split_once('.').ok_or(CursorError::Invalid)?;
        let json = b64.decode(body).map_err(|_| CursorError::Invalid)?;
        let tag = b64.decode(tag).map_err(|_| CursorError::Invalid)?;
        let want = crypto::hmac_sha256(&self.key, &json);
        if tag.len() != TAG_LEN || !crypto::constant_time_eq(&tag, &want[..TAG_LEN]) {
            return Err(CursorError::Invalid);
        }
        let payload: Payload = serde_json::from_slice(&json).map_err(|_| CursorError::Invalid)?;
        if payload.n != 1 {
            return Err(CursorError::Invalid);
        }
        if payload.e < now.as_second() {
            return Err(CursorError::Expired(self.ttl.as_secs() / 60));
        }
        if payload.q != query {
            return Err(CursorError::OtherQuery);
        }
        Ok(payload.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: &str) -> SortKey {
        SortKey {
            r: 0,
            u: Some(1_700_000_000_000),
            v: "a".into(),
            i: i.into(),
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_cursor_round_trips_for_its_own_query_only() {
        let s = CursorSigner::random();
        let c = s.issue("q1", &key("a:1"), now());
        assert_eq!(s.check(&c, "q1", now()), Ok(key("a:1")));
        assert_eq!(s.check(&c, "q2", now()), Err(CursorError::OtherQuery));
        let later = now() + jiff::SignedDuration::from_secs(16 * 60);
        assert_eq!(s.check(&c, "q1", later), Err(CursorError::Expired(15)));
    }

    #[test]
    fn a_cursor_is_valid_through_the_last_second_of_its_ttl() {
        let s = CursorSigner::random();
        let c = s.issue("q", &key("a:1"), now());
        let at = |secs| now() + jiff::SignedDuration::from_secs(secs);
        assert_eq!(s.check(&c, "q", at(15 * 60)), Ok(key("a:1")));
        assert_eq!(
            s.check(&c, "q", at(15 * 60 + 1)),
            Err(CursorError::Expired(15))
        );
    }

    #[test]
    fn a_cursor_over_the_length_cap_is_refused_even_when_signed() {
        let s = CursorSigner::random();
        let long = SortKey {
            v: "v".repeat(MAX_CURSOR_LEN),
            ..key("a:1")
        };
        let c = s.issue("q", &long, now());
        assert!(c.len() > MAX_CURSOR_LEN);
        assert_eq!(s.check(&c, "q", now()), Err(CursorError::Invalid));
    }

    #[test]
    fn debug_redacts_the_key() {
        let text = format!("{:?}", CursorSigner::from_secret(b"s3cret"));
        assert_eq!(text, "CursorSigner { key: \"[redacted]\", ttl: 900s }");
    }

    #[test]
    fn a_forged_or_altered_cursor_is_refused() {
        let s = CursorSigner::from_secret(b"one");
        let c = s.issue("q", &key("a:1"), now());
        let other = CursorSigner::from_secret(b"two");
        assert_eq!(other.check(&c, "q", now()), Err(CursorError::Invalid));
        // change one character of the payload, then of the tag
        for at in [3, c.len() - 2] {
            let mut bytes = c.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            assert_eq!(
                s.check(&altered, "q", now()),
                Err(CursorError::Invalid),
                "{at}"
            );
        }
        for junk in ["", ".", "garbage", "a.b.c", &"x".repeat(5000)] {
            assert_eq!(
                s.check(junk, "q", now()),
                Err(CursorError::Invalid),
                "{junk}"
            );
        }
        assert!(!format!("{s:?}").contains("one"));
    }

    #[test]
    fn sort_keys_order_groups_then_dates_with_null_last() {
        let k = |r, u: Option<i64>, i: &str| SortKey {
            r,
            u,
            v: "a".into(),
            i: i.into(),
        };
        let mut keys = vec![
            k(2, Some(1), "x"),
            k(0, None, "x"),
            k(0, Some(5), "x"),
            k(1, Some(0), "x"),
            k(0, Some(5), "w"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                k(0, Some(5), "w"),
                k(0, Some(5), "x"),
                k(0, None, "x"),
                k(1, Some(0), "x"),
                k(2, Some(1), "x")
            ]
        );
    }
}
