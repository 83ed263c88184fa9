//! A JSON scanner for the projection: walks an answer's bytes, hands each object member's name
//! to the caller, which reads the value, skips it, or descends into it; checks the syntax of
//! everything, kept or not.
//!
//! The projection used to drive sonic-rs (or serde_json) through serde's visitor protocol: a
//! `MapAccess` call, a name decoded and a seed or `IgnoredAny` per member, ~360 instructions a
//! member of a vendor's answer and a third of a vendor call's CPU, most of it serde's plumbing
//! rather than reading bytes. Here a member nobody reads costs a scan to its end: strings eight
//! bytes at a time (a word checked for a quote, a backslash or a control byte at once), the
//! rest byte by byte. Skipping is a loop with its own stack, not recursion, so no answer can
//! overflow the thread's stack however deep it nests; only values that are kept whole are
//! built by serde_json (its 128-level limit applies to them) or, for the scalars that make up
//! nearly all of them, directly.
//!
//! What it accepts is RFC 8259 JSON, as serde_json's parser does: no trailing commas, no
//! comments, no leading zeros, control characters escaped in strings, one value and
//! whitespace, in UTF-8 (all of the answer is checked, kept or not).
use std::borrow::Cow;

use serde_json::Value;

use super::projection::NotJson;

/// A position in an answer.
pub struct Scan<'a> {
    /// The answer, checked for UTF-8 once: names and strings are slices of it (at quotes,
    /// so always at character boundaries), not checked again one by one.
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// The open containers of the value being skipped (`true`: an object), kept between
    /// skips so that skipping does not allocate.
    open: Vec<bool>,
}

type Result<T> = std::result::Result<T, NotJson>;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` that end or interrupt the plain run of a string: a quote, a backslash or a
/// control character, as the high bit of each; the lowest set bit is always a true one (the
/// borrows that make false ones only run upwards).
#[inline]
fn specials(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH
}

impl<'a> Scan<'a> {
    /// A scanner at the start of `b`, which must be UTF-8 (as JSON text is).
    pub fn new(b: &'a [u8]) -> Result<Scan<'a>> {
        // SIMD: std's check of a vendor's Chinese text byte by byte, or of each string on its
        // own (~90 instructions a call), cost more than the scanning
        let text = simdutf8::basic::from_utf8(b).map_err(|_| NotJson("invalid UTF-8".into()))?;
        Ok(Scan {
            text,
            b,
            i: 0,
            open: Vec::new(),
        })
    }

    #[cold]
    #[inline(never)]
    fn error(&self, what: &str) -> NotJson {
        NotJson(format!("{what} at byte {}", self.i))
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The first byte of the next value, after whitespace.
    #[inline(always)]
    pub fn peek(&mut self) -> Result<u8> {
        self.ws();
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| self.error("unexpected end"))
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.expected(c))
        }
    }

    #[cold]
    fn expected(&self, c: u8) -> NotJson {
        self.error(&format!("expected `{}`", c as char))
    }

    /// Nothing but whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.error("trailing characters"))
        }
    }

    /// A string at the position (its opening quote): its text between the quotes, and whether
    /// it holds escapes. Inlined, with the index in a register: a name costs a few words'
    /// checks; escapes, control characters and the last bytes of the answer go the slow way.
    #[inline(always)]
    fn string(&mut self) -> Result<(&'a str, bool)> {
        let b = self.b;
        if b.get(self.i) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        let start = self.i + 1;
        let mut i = start;
        // eight bytes at a time while they are plain
        while let Some(word) = b.get(i..i + 8) {
            let found = specials(u64::from_le_bytes(word.try_into().expect("eight bytes")));
            if found != 0 {
                i += (found.trailing_zeros() / 8) as usize;
                if b[i] == b'"' {
                    self.i = i + 1;
                    return Ok((&self.text[start..i], false));
                }
                break;
            }
            i += 8;
        }
        self.string_rest(start, i)
    }

    /// The rest of a string from `i` on, byte by byte: escapes checked, control characters
    /// refused.
    #[inline(never)]
    fn string_rest(&mut self, start: usize, mut i: usize) -> Result<(&'a str, bool)> {
        let b = self.b;
        let mut escaped = false;
        loop {
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok((&self.text[start..i], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u')
                            if b.get(i + 2..i + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            i += 6
                        }
                        _ => {
                            self.i = i;
                            return Err(self.error("invalid escape"));
                        }
                    }
                }
                Some(c) if *c < 0x20 => {
                    self.i = i;
                    return Err(self.error("control character in a string"));
                }
                Some(_) => i += 1,
                None => {
                    self.i = i;
                    return Err(self.error("unterminated string"));
                }
            }
        }
    }

    /// A number at the position, checked against JSON's grammar; its value when it is a
    /// plain non-negative integer (digits only) that fits a u64, read on the way.
    fn number(&mut self) -> Result<Option<u64>> {
        let b = self.b;
        let mut i = self.i;
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(negative);
        let first = i;
        // the integer part's digits are checked and added up in one pass (a pass to check
        // and another to add, each with its closure, were ~120 instructions for the 13
        // digits of an epoch in milliseconds); wrapping, since only 19 digits always fit
        let mut n: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let int = first..i;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        let mut plain = !negative;
        let valid = match int.len() {
            0 => false,
            len => len == 1 || b[first] != b'0',
        } && {
            if b.get(i) == Some(&b'.') {
                i += 1;
                plain = false;
                digits(&mut i) > 0
            } else {
                true
            }
        } && {
            if let Some(b'e' | b'E') = b.get(i) {
                i += 1;
                plain = false;
                if let Some(b'+' | b'-') = b.get(i) {
                    i += 1;
                }
                digits(&mut i) > 0
            } else {
                true
            }
        };
        self.i = i;
        if !valid {
            return Err(self.error("invalid number"));
        }
        Ok(match int.len() {
            _ if !plain => None,
            ..=19 => Some(n),
            // more digits than always fit: added up again, checked
            _ => b[int].iter().try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            }),
        })
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// A scalar at the position (after [`Scan::peek`]), skipped.
    fn skip_scalar(&mut self, first: u8) -> Result<()> {
        match first {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => Err(self.error("expected a value")),
        }
    }

    /// A member's name and its colon.
    #[inline(always)]
    fn name(&mut self) -> Result<Cow<'a, str>> {
        self.ws();
        let start = self.i;
        let (inner, escaped) = self.string()?;
        let name = if escaped {
            Cow::Owned(
                serde_json::from_slice::<String>(&self.b[start..self.i])
                    .map_err(|e| self.error(&e.to_string()))?,
            )
        } else {
            Cow::Borrowed(inner)
        };
        self.expect(b':')?;
        Ok(name)
    }

    /// Skips the next value, checking its syntax.
    pub fn skip(&mut self) -> Result<()> {
        self.open.clear();
        loop {
            // a value
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        self.open.push(c == b'{');
                        if c == b'{' {
                            self.name()?;
                        }
                        continue;
                    }
                }
                c => self.skip_scalar(c)?,
            }
            // what follows it: a comma and the next member or element, or closing brackets
            loop {
                let Some(&object) = self.open.last() else {
                    return Ok(());
                };
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.name()?;
                        }
                        break;
                    }
                    b'}' if object => {
                        self.i += 1;
                        self.open.pop();
                    }
                    b']' if !object => {
                        self.i += 1;
                        self.open.pop();
                    }
                    _ => return Err(self.error("expected `,` or a closing bracket")),
                }
            }
        }
    }

    /// Reads the next value whole, as `serde_json::from_slice` would.
    pub fn value(&mut self) -> Result<Value> {
        let first = self.peek()?;
        let start = self.i;
        match first {
            b'"' => {
                let (inner, escaped) = self.string()?;
                if !escaped {
                    return Ok(Value::String(inner.to_owned()));
                }
            }
            b'0'..=b'9' => {
                // digits only: a u64 unless it overflows (then serde_json's float)
                if let Some(n) = self.number()? {
                    return Ok(Value::from(n));
                }
            }
            b't' => return self.literal(b"true").map(|()| Value::Bool(true)),
            b'f' => return self.literal(b"false").map(|()| Value::Bool(false)),
            b'n' => return self.literal(b"null").map(|()| Value::Null),
            _ => self.skip()?,
        }
        // the rest (escaped strings, negative numbers and fractions, lists and objects):
        // serde_json's own reading of the checked text
        serde_json::from_slice(&self.b[start..self.i]).map_err(|e| self.error(&e.to_string()))
    }

    /// The members of the object at the position (after [`Scan::peek`] saw `{`): `each` is
    /// given each name and must read or skip its value.
    #[inline(always)]
    pub fn members(
        &mut self,
        mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        self.sequence(b'}', |s| {
            let name = s.name()?;
            each(s, name)
        })
    }

    /// The elements of the list at the position (after [`Scan::peek`] saw `[`): `each` must
    /// read or skip each.
    #[inline(always)]
    pub fn elements(&mut self, each: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence(b']', each)
    }

    /// The opening bracket at the position, then `each` until `close`, with commas between.
    /// (One loop for both: callgrind put it at ~1k instructions of op's 161k parse more than
    /// two copies, within the spread of a whole call.)
    #[inline(always)]
    fn sequence(&mut self, close: u8, mut each: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.i += 1;
        if self.peek()? == close {
            self.i += 1;
            return Ok(());
        }
        loop {
            each(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.expected_after_element(close)),
            }
        }
    }

    #[cold]
    fn expected_after_element(&self, close: u8) -> NotJson {
        self.error(&format!("expected `,` or `{}`", close as char))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn skipped(text: &str) -> bool {
        Scan::new(text.as_bytes()).is_ok_and(|mut s| s.skip().and_then(|()| s.end()).is_ok())
    }

    fn read(text: &str) -> Option<Value> {
        let mut s = Scan::new(text.as_bytes()).ok()?;
        let v = s.value().ok()?;
        s.end().ok().map(|()| v)
    }

    /// What serde_json accepts, the scanner accepts, and it reads the same value.
    #[test]
    fn accepts_and_reads_what_serde_json_does() {
        let cases = [
            r#"{"a":[1,-2,3.5,1e3,-0,0.25E-2,18446744073709551615,18446744073709551616],"b":{}}"#,
            r#" [ true , false , null , "x" , [] , {} , [[]] ] "#,
            r#""plain ascii and 中文 text, long enough for several words""#,
            r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00 end""#,
            r#"{"dup":1,"dup":2}"#,
            r#"{"k\"ey":"v","ü":"ß"}"#,
            "0",
            "-1",
            "123456789012",
            r#""""#,
            r#""1234567""#,
            r#""12345678""#,
            r#""123456789""#,
        ];
        for text in cases {
            let want: Value = serde_json::from_str(text).unwrap();
            assert!(skipped(text), "{text}");
            assert_eq!(read(text), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            "[1 2]",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "[}",
            "{]",
            r#""unterminated"#,
            "\"a\tb\"",
            "\"a\nb more than eight bytes\"",
            r#""bad \x escape""#,
            r#""bad \u12G4""#,
            "[1] 2",
            "[[[]]",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            assert!(!skipped(text), "skipped {text:?}");
            assert!(read(text).is_none(), "read {text:?}");
        }
    }

    #[test]
    fn a_quote_or_backslash_is_found_in_every_place_of_a_word() {
        for at in 0..20 {
            let mut text = "a".repeat(20);
            text.insert(at, '"');
            let quoted = format!("\"{}", &text[..=at]);
            let mut s = Scan::new(quoted.as_bytes()).unwrap();
            assert_eq!(s.string().unwrap().0, "a".repeat(at));
            let mut with_control = "b".repeat(20).into_bytes();
            with_control[at] = 0x1f;
            let mut text = vec![b'"'];
            text.extend(&with_control);
            text.push(b'"');
            assert!(
                Scan::new(&text).unwrap().string().is_err(),
                "control byte at {at}"
            );
        }
    }

    #[test]
    fn skipping_deep_nesting_needs_no_stack() {
        let n = 200_000;
        let deep = format!("{}1{}", "[{\"a\":".repeat(n), "}]".repeat(n));
        assert!(skipped(&deep));
        assert!(!skipped(&deep[..deep.len() - 1]));
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "[a-z\"\\\\\u{1}\u{e9}\u{4e2d} ]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON text is skipped and read as serde_json reads it.
        #[test]
        fn any_json_is_read_as_serde_json_reads_it(v in json(), pretty in proptest::bool::ANY) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            proptest::prop_assert!(skipped(&text));
            // (serde_json's own: its float parsing does not always give back the float written)
            let want = serde_json::from_str::<Value>(&text).unwrap();
            proptest::prop_assert_eq!(read(&text), Some(want));
        }

        /// Text with one byte changed, inserted or removed is accepted exactly when serde_json
        /// accepts it, and read alike.
        #[test]
        fn changed_text_is_accepted_as_serde_json_accepts_it(
            v in json(),
            at in proptest::num::usize::ANY,
            how in 0..3u8,
            byte in proptest::sample::select(b"{}[]\",:\\ 0123456789.eE+-tfnaulrsx\t\n\x01\xe4".to_vec()),
        ) {
            let mut text = serde_json::to_vec(&v).unwrap();
            let at = at % (text.len() + 1);
            match how {
                0 if at < text.len() => text[at] = byte,
                1 => text.insert(at, byte),
                _ if at < text.len() => { text.remove(at); }
                _ => text.push(byte),
            }
            let want = serde_json::from_slice::<Value>(&text).ok();
            let got = Scan::new(&text).ok().and_then(|mut s| s.value().ok().filter(|_| s.end().is_ok()));
            proptest::prop_assert_eq!(&got, &want, "{}", String::from_utf8_lossy(&text));
            if want.is_some() {
                let mut s = Scan::new(&text).unwrap();
                proptest::prop_assert!(s.skip().and_then(|()| s.end()).is_ok());
            }
        }
    }
}
