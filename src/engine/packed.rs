//! The compact form the answer store keeps an answer in: its rows as JSON, deflated.
//!
//! Decoded, an answer's rows take ~900 bytes a coupon (a `Value` per field, a `String` per
//! text) and the canonical coupons built from them as much again, so a 64 MiB budget held
//! ~1,400 members of three vendors. Rows of one answer repeat each other (the same
//! templates, names, kinds, dates), and deflate takes the JSON of a sandbox answer from
//! ~270 to ~65 bytes a coupon. The store keeps this form only; the answers read lately are
//! kept decoded too, in a tier of their own (`cache::AnswerStore`), so that a hit on a member
//! asked for often decodes nothing.
use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde_json::Value;

use super::call::CallOutput;

/// A vendor answer as the store keeps it.
#[derive(Debug)]
pub struct Packed {
    /// The rows, a JSON array of arrays, deflated.
    rows: Box<[u8]>,
    /// Length of that JSON, to decode into a buffer of the right size at once.
    json_len: u32,
    row_count: u32,
    dropped: usize,
    pages: u32,
    truncated: bool,
    bytes: usize,
    page_info: Option<[i64; 4]>,
}

/// A packed answer that does not decode: the store holds only what [`Packed::of`] made, so
/// this is a bug (or memory gone bad), and the store treats the entry as absent.
#[derive(Debug, thiserror::Error)]
#[error("a packed answer does not decode: {0}")]
pub struct Undecodable(String);

impl Packed {
    /// Packs `out`. Speed over ratio (`Compression::fast`): this runs on every vendor call
    /// that fills the cache; the next level saves a few percent for twice the time.
    pub fn of(out: &CallOutput) -> Packed {
        let json = serde_json::to_vec(&out.rows).expect("JSON values always serialize");
        let mut z = DeflateEncoder::new(Vec::with_capacity(json.len() / 3), Compression::fast());
        // writing into a Vec cannot fail
        z.write_all(&json).expect("deflate into memory");
        let rows = z.finish().expect("deflate into memory").into_boxed_slice();
        Packed {
            rows,
            json_len: u32::try_from(json.len()).unwrap_or(u32::MAX),
            row_count: u32::try_from(out.rows.len()).unwrap_or(u32::MAX),
            dropped: out.dropped,
            pages: out.pages,
            truncated: out.truncated,
            bytes: out.bytes,
            page_info: out.page_info,
        }
    }

    /// The answer again, as it was packed.
    pub fn unpack(&self) -> Result<CallOutput, Undecodable> {
        let mut json = Vec::with_capacity(self.json_len as usize);
        DeflateDecoder::new(&*self.rows)
            .read_to_end(&mut json)
            .map_err(|e| Undecodable(e.to_string()))?;
        let rows: Vec<Vec<Value>> =
            serde_json::from_slice(&json).map_err(|e| Undecodable(e.to_string()))?;
        Ok(CallOutput {
            rows,
            dropped: self.dropped,
            pages: self.pages,
            truncated: self.truncated,
            bytes: self.bytes,
            page_info: self.page_info,
        })
    }

    /// Whether the vendor found nothing (such answers are kept for `empty_ttl`).
    pub fn is_empty(&self) -> bool {
        self.row_count == 0
    }

    /// The memory it takes: the deflated rows and the record itself.
    pub fn weight(&self) -> u64 {
        (self.rows.len() + size_of::<Packed>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(rows: Vec<Vec<Value>>) -> CallOutput {
        CallOutput {
            rows,
            dropped: 2,
            pages: 3,
            truncated: true,
            bytes: 4_321,
            page_info: Some([2, 20, 41, 3]),
        }
    }

    #[test]
    fn an_answer_unpacks_as_it_was_packed() {
        let rows: Vec<Vec<Value>> = (0..9)
            .map(|i| {
                vec![
                    json!(format!("op:{i:012}")),
                    json!("满100减20"),
                    json!(2_000 + i),
                    Value::Null,
                    json!(0.85),
                    json!([1, 2, 3]),
                    json!({"from": "09:00", "to": "21:00"}),
                    json!(true),
                ]
            })
            .collect();
        let packed = Packed::of(&out(rows.clone()));
        let back = packed.unpack().unwrap();
        assert_eq!(back.rows, rows);
        assert_eq!(
            (
                back.dropped,
                back.pages,
                back.truncated,
                back.bytes,
                back.page_info
            ),
            (2, 3, true, 4_321, Some([2, 20, 41, 3]))
        );
        assert!(!packed.is_empty());
    }

    #[test]
    fn rows_that_repeat_each_other_pack_small() {
        // nine coupons differing in their ids and amounts, as a vendor's list does
        let rows: Vec<Vec<Value>> = (0..9)
            .map(|i| {
                vec![
                    json!(format!("hkl:K1H93QDKI00B7-{i:04}")),
                    json!("周末满200减30元优惠券"),
                    json!("fixed"),
                    json!(3_000 + 100 * i),
                    json!("2026-11-24T00:00:00+08:00"),
                    json!("2026-12-31T23:59:59+08:00"),
                    json!(["mall", "app"]),
                ]
            })
            .collect();
        let json = serde_json::to_vec(&rows).unwrap().len() as u64;
        let packed = Packed::of(&out(rows));
        let deflated = packed.weight() - size_of::<Packed>() as u64;
        assert!(
            deflated * 3 < json,
            "{json} bytes of rows packed into {deflated}"
        );
    }

    #[test]
    fn nothing_found_packs_as_empty() {
        let packed = Packed::of(&out(Vec::new()));
        assert!(packed.is_empty());
        assert!(packed.unpack().unwrap().rows.is_empty());
    }

    #[test]
    fn a_damaged_pack_is_an_error_not_a_panic() {
        let mut packed = Packed::of(&out(vec![vec![json!("a")]]));
        packed.rows = Box::new([0xff, 0x00, 0x13]);
        assert!(packed.unpack().is_err());
    }
}
