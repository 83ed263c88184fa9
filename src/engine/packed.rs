//! The compact form the answer store keeps an answer in: its rows as JSON, compressed (zstd).
//!
//! Decoded, an answer's rows take ~900 bytes a coupon (a `Value` per field, a `String` per
//! text) and the canonical coupons built from them as much again, so a 64 MiB budget held
//! ~1,400 members of three vendors. Rows of one answer repeat each other (the same
//! templates, names, kinds, dates), and zstd takes the JSON of a sandbox answer from
//! ~270 to ~80 bytes a coupon. The store keeps this form only; the answers read lately are
//! kept decoded too, in a tier of their own (`cache::AnswerStore`), so that a hit on a member
//! asked for often decodes nothing.
use std::cell::RefCell;

use serde_json::Value;
use zstd::bulk::{Compressor, Decompressor};

use super::call::CallOutput;

/// A vendor answer as the store keeps it.
#[derive(Debug)]
pub struct Packed {
    /// The rows, a JSON array of arrays, compressed (a zstd frame) unless `raw`.
    rows: Box<[u8]>,
    /// The rows are the JSON itself: zstd could not make its context (out of memory).
    raw: bool,
    /// Length of that JSON, to decode into a buffer of the right size at once.
    json_len: u32,
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

/// zstd's first "fast" level (`--fast=1`): no Huffman coding of literals, whose tables cost
/// more than the rest of compressing a few KB. It compresses an answer's rows ~2.5× faster
/// than level 1 for ~23 % more bytes (~80 instead of ~65 bytes a coupon, measured on the
/// sandbox's answers with random ids): a miss pays the compression, while 10,000 members still
/// fit in half the default budget (`tests/cache_fit.rs`).
const LEVEL: i32 = -1;

thread_local! {
    // One context per thread, reused: zstd sizes its tables to the input (a few KB here) and
    // does not clear them between inputs. (deflate, tried first, zeroed ~300 KB of tables
    // for every answer, which cost more than compressing it: +58 % instructions a miss.)
    static PACK: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static UNPACK: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `json` compressed.
fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    PACK.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(Compressor::new(LEVEL)?),
        };
        c.compress(json)
    })
}

/// The JSON of `rows`, decompressed into `len` bytes.
fn decompress(rows: &[u8], len: usize) -> Result<Vec<u8>, Undecodable> {
    let undecodable = |e: std::io::Error| Undecodable(e.to_string());
    UNPACK.with_borrow_mut(|d| {
        let d = match d {
            Some(d) => d,
            None => d.insert(Decompressor::new().map_err(undecodable)?),
        };
        let json = d.decompress(rows, len).map_err(undecodable)?;
        if json.len() == len {
            Ok(json)
        } else {
            Err(Undecodable(format!("{} of {len} bytes", json.len())))
        }
    })
}

impl Packed {
    /// Packs `out`. Speed over ratio: this runs on every vendor call that fills the cache.
    pub fn of(out: &CallOutput) -> Packed {
        let json = serde_json::to_vec(&out.rows).expect("JSON values always serialize");
        let json_len = u32::try_from(json.len()).unwrap_or(u32::MAX);
        // zstd fails only when it cannot allocate its context: keep the JSON as it is then
        let (rows, raw) = match compress(&json) {
            Ok(z) => (z, false),
            Err(_) => (json, true),
        };
        Packed {
            rows: rows.into_boxed_slice(),
            raw,
            json_len,
            dropped: out.dropped,
            pages: out.pages,
            truncated: out.truncated,
            bytes: out.bytes,
            page_info: out.page_info,
        }
    }

    /// The answer again, as it was packed.
    pub fn unpack(&self) -> Result<CallOutput, Undecodable> {
        let json = if self.raw {
            std::borrow::Cow::Borrowed(&*self.rows)
        } else {
            std::borrow::Cow::Owned(decompress(&self.rows, self.json_len as usize)?)
        };
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

    /// The memory it takes: the compressed rows and the record itself.
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
        let packed = packed.weight() - size_of::<Packed>() as u64;
        assert!(
            packed * 3 < json,
            "{json} bytes of rows packed into {packed}"
        );
    }

    #[test]
    fn answers_that_do_not_shrink_and_one_after_another_pack_whole() {
        // random text, some of it larger than zstd's block (128 KB after escaping: no)
        let mut x = 88_172_645_463_325_252_u64;
        let mut text = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'!' + (x % 90) as u8)
                })
                .collect()
        };
        let answers: Vec<Vec<Vec<Value>>> = [200, 70_000, 3]
            .into_iter()
            .map(|n| vec![vec![json!(text(n))], vec![json!(n)]])
            .collect();
        // packed one after the other on this thread, with one zstd context
        let packed: Vec<Packed> = answers
            .iter()
            .map(|r| Packed::of(&out(r.clone())))
            .collect();
        for (p, rows) in packed.iter().zip(&answers) {
            assert_eq!(&p.unpack().unwrap().rows, rows);
        }
    }

    #[test]
    fn nothing_found_packs_as_empty() {
        let packed = Packed::of(&out(Vec::new()));
        assert!(packed.unpack().unwrap().rows.is_empty());
    }

    #[test]
    fn a_damaged_pack_is_an_error_not_a_panic() {
        let mut packed = Packed::of(&out(vec![vec![json!("a")]]));
        packed.rows = Box::new([0xff, 0x00, 0x13]);
        assert!(packed.unpack().is_err());
    }
}
