//! The compact form the answer store keeps an answer in: its rows as MessagePack, compressed
//! (LZ4).
//!
//! Decoded, an answer's rows take ~900 bytes a coupon (a `Value` per field, a `String` per
//! text) and the canonical coupons built from them as much again, so a 64 MiB budget held
//! ~1,400 members of three vendors. Rows of one answer repeat each other (the same
//! templates, names, kinds, dates), and LZ4 shrinks them about threefold. The store keeps this
//! form only; the answers hits read lately are kept decoded too, in a tier of their own
//! (`cache::AnswerStore`), so that a hit on a member asked for often decodes nothing.
//!
//! MessagePack rather than JSON: every vendor call that fills the cache writes it, and it is
//! written without escaping text or formatting numbers (and read back without parsing them).
//! The form never leaves this process (the shared tier stores its own), so it is nobody
//! else's contract.
use serde_json::Value;

use super::call::CallOutput;

/// A vendor answer as the store keeps it.
#[derive(Debug)]
pub struct Packed {
    /// The rows, a MessagePack array of arrays, compressed (an LZ4 block).
    rows: Box<[u8]>,
    /// Length of that MessagePack, to decode into a buffer of the right size at once.
    raw_len: u32,
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

/// The MessagePack of `rows` compressed. LZ4 rather than zstd: every vendor call that fills
/// the cache pays this, and for the few KB of an answer zstd's fastest level (`--fast=1`, no
/// Huffman tables) spent ~49k instructions an answer where LZ4 spends ~21k, for ~10 % more heap
/// a cached member (docs/benchmarks.md, "seventh session": 10,000 members take 41 MiB of the
/// 64 MiB budget, `tests/cache_fit.rs`). (deflate, tried before zstd, zeroed ~300 KB of tables
/// for every answer.)
///
/// `raw` is compressed into `out` with `table`, then copied out at the size it compressed
/// to. Answers of 64 KB and more (rare) are compressed on their own: the table only reaches
/// that far, and the output buffer a thread keeps stays under 72 KB.
fn compress(
    raw: &[u8],
    table: &mut lz4_flex::block::CompressTable,
    out: &mut Vec<u8>,
) -> Box<[u8]> {
    use lz4_flex::block::{compress_into_with_table, get_maximum_output_size};
    if raw.len() >= usize::from(u16::MAX) {
        return lz4_flex::block::compress(raw).into_boxed_slice();
    }
    out.resize(get_maximum_output_size(raw.len()), 0);
    match compress_into_with_table(raw, out, table) {
        Ok(n) => Box::from(&out[..n]),
        // the buffer is of the largest size LZ4 writes, so this does not happen
        Err(_) => lz4_flex::block::compress(raw).into_boxed_slice(),
    }
}

/// What packing needs besides the answer, the thread's own and reused: a fresh LZ4 hash table
/// is an 8 KB zeroed allocation, its output buffer one of the largest size LZ4 could write,
/// and the MessagePack one of about the size of the vendor's answer, all three for every
/// answer, where the answer itself needs one allocation of the size it compresses to.
struct Scratch {
    table: lz4_flex::block::CompressTable,
    out: Vec<u8>,
    raw: Vec<u8>,
}

/// The MessagePack a thread keeps its buffer for: a larger one (a long answer) is let go.
const RAW_KEPT: usize = 256 << 10;

/// `rows` as MessagePack compressed (an LZ4 block), and the MessagePack's length.
fn pack(rows: &[Vec<Value>]) -> (Box<[u8]>, u32) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
            table: lz4_flex::block::CompressTable::small(),
            out: Vec::new(),
            raw: Vec::new(),
        });
    }
    SCRATCH.with_borrow_mut(|s| {
        s.raw.clear();
        write_rows(&mut s.raw, rows);
        let raw_len = u32::try_from(s.raw.len()).unwrap_or(u32::MAX);
        let packed = compress(&s.raw, &mut s.table, &mut s.out);
        if s.raw.capacity() > RAW_KEPT {
            s.raw = Vec::new();
        }
        (packed, raw_len)
    })
}

/// The MessagePack of `rows`, decompressed into `len` bytes.
fn decompress(rows: &[u8], len: usize) -> Result<Vec<u8>, Undecodable> {
    let raw = lz4_flex::block::decompress(rows, len).map_err(|e| Undecodable(e.to_string()))?;
    if raw.len() == len {
        Ok(raw)
    } else {
        Err(Undecodable(format!("{} of {len} bytes", raw.len())))
    }
}

/// Writes `rows` as MessagePack, byte for byte what `rmp_serde` writes for them (the test
/// `rows_are_written_as_rmp_serde_writes_them` holds that), so `rmp_serde` reads them back.
/// By hand rather than through serde: every vendor call that fills the cache writes its rows,
/// and serde's visitor per value cost about twice the writing itself.
fn write_rows(raw: &mut Vec<u8>, rows: &[Vec<Value>]) {
    // writing into a Vec cannot fail: each `Result` below is always `Ok`
    let _ = rmp::encode::write_array_len(raw, rows.len() as u32);
    for row in rows {
        let _ = rmp::encode::write_array_len(raw, row.len() as u32);
        for v in row {
            write_value(raw, v);
        }
    }
}

/// One value as `rmp_serde` writes it: integers in their smallest form, floats as f64.
fn write_value(raw: &mut Vec<u8>, v: &Value) {
    use rmp::encode;
    match v {
        Value::Null => {
            let _ = encode::write_nil(raw);
        }
        Value::Bool(b) => {
            let _ = encode::write_bool(raw, *b);
        }
        Value::Number(n) => {
            // a number is always written, so the rows' structure stays whole
            let _ = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => encode::write_uint(raw, u).map(drop),
                (None, Some(i)) => encode::write_sint(raw, i).map(drop),
                (None, None) => encode::write_f64(raw, n.as_f64().unwrap_or(f64::NAN)),
            };
        }
        Value::String(s) => {
            let _ = encode::write_str(raw, s);
        }
        Value::Array(items) => {
            let _ = encode::write_array_len(raw, items.len() as u32);
            for item in items {
                write_value(raw, item);
            }
        }
        Value::Object(members) => {
            let _ = encode::write_map_len(raw, members.len() as u32);
            for (name, item) in members {
                let _ = encode::write_str(raw, name);
                write_value(raw, item);
            }
        }
    }
}

impl Packed {
    /// Packs `out`. Speed over ratio: this runs on every vendor call that fills the cache.
    pub fn of(out: &CallOutput) -> Packed {
        let (rows, raw_len) = pack(&out.rows);
        Packed {
            rows,
            raw_len,
            dropped: out.dropped,
            pages: out.pages,
            truncated: out.truncated,
            bytes: out.bytes,
            page_info: out.page_info,
        }
    }

    /// The answer again, as it was packed.
    pub fn unpack(&self) -> Result<CallOutput, Undecodable> {
        let raw = decompress(&self.rows, self.raw_len as usize)?;
        let rows: Vec<Vec<Value>> =
            rmp_serde::from_slice(&raw).map_err(|e| Undecodable(e.to_string()))?;
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
        // random text, some of it longer than LZ4's 64 KB window, and once longer than the
        // MessagePack buffer a thread keeps
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
        let answers: Vec<Vec<Vec<Value>>> = [200, 70_000, 300_000, 3]
            .into_iter()
            .map(|n| vec![vec![json!(text(n))], vec![json!(n)]])
            .collect();
        // packed one after the other on this thread
        let packed: Vec<Packed> = answers
            .iter()
            .map(|r| Packed::of(&out(r.clone())))
            .collect();
        for (p, rows) in packed.iter().zip(&answers) {
            assert_eq!(&p.unpack().unwrap().rows, rows);
        }
    }

    #[test]
    fn rows_are_written_as_rmp_serde_writes_them() {
        let rows: Vec<Vec<Value>> = vec![
            vec![
                json!(0),
                json!(127),
                json!(128),
                json!(65_536),
                json!(u64::MAX),
                json!(-1),
                json!(-33),
                json!(-129),
                json!(-40_000),
                json!(i64::MIN),
                json!(0.85),
                json!(-2.5e300),
                json!(1.0),
            ],
            vec![
                json!(""),
                json!("满100减20"),
                json!("x".repeat(40)),
                json!("y".repeat(300)),
                json!("z".repeat(70_000)),
                Value::Null,
                json!(true),
                json!(false),
            ],
            vec![
                json!([]),
                json!({}),
                json!([1, [2, [3, null]], {"a": {"b": [true]}}]),
                json!({"from": "09:00", "to": "21:00", "days": [1, 2, 3]}),
                Value::Array((0..20).map(Value::from).collect()),
                Value::Object((0..20).map(|i| (format!("k{i}"), json!(i))).collect()),
            ],
            Vec::new(),
        ];
        let mut raw = Vec::new();
        write_rows(&mut raw, &rows);
        assert_eq!(raw, rmp_serde::to_vec(&rows).unwrap());
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
