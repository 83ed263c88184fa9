//! The canonical coupon record of API.md, read from a mapped vendor row.
//!
//! A coupon keeps the row it was mapped to and reads its fields out of it when asked. It used
//! to copy the row into a field per member: every text moved into a `String` of its own,
//! each list collected again (and shrunk, a reallocation), the weekdays into a new `Vec`,
//! and the row dropped slot by slot after. On a miss that was ~2.4k instructions a coupon
//! and four heap blocks (docs/benchmarks.md, twenty-first session), for coupons most of which
//! are read once, to be ordered and written. What is read often stays a field: the id
//! callers see (`vendor:id`, also the order's last key) and the validity window's instants.
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::schema::{COUPON, slot};

/// One coupon instance, as API.md defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct Coupon {
    /// `vendor:id`: the id callers see.
    pub id: String,
    /// Shared by the coupons of one answer: one allocation an answer, not one a coupon.
    pub vendor: Arc<str>,
    /// The mapped row, in the coupon schema's slot order (`schema::COUPON`).
    row: Box<[Value]>,
    /// Instants of the validity window, for judging and ordering (not serialized).
    pub from_ts: Option<jiff::Timestamp>,
    pub until_ts: Option<jiff::Timestamp>,
}

/// Slots of the coupon schema, resolved once.
struct Slots {
    id: usize,
    code: usize,
    template_id: usize,
    name: usize,
    kind: usize,
    amount_off: usize,
    percent_off: usize,
    min_order: usize,
    max_discount: usize,
    status: usize,
    valid_from: usize,
    valid_until: usize,
    usable_weekdays: usize,
    usable_hours: usize,
    channels: usize,
    product_kinds: usize,
    image_url: usize,
    vendor_status: usize,
}

static SLOTS: std::sync::LazyLock<Slots> = std::sync::LazyLock::new(|| {
    let s = |n: &str| slot(COUPON, n).expect("coupon schema field");
    Slots {
        id: s("id"),
        code: s("code"),
        template_id: s("template_id"),
        name: s("name"),
        kind: s("kind"),
        amount_off: s("amount_off"),
        percent_off: s("percent_off"),
        min_order: s("min_order"),
        max_discount: s("max_discount"),
        status: s("status"),
        valid_from: s("valid_from"),
        valid_until: s("valid_until"),
        usable_weekdays: s("usable_weekdays"),
        usable_hours: s("usable_hours"),
        channels: s("channels"),
        product_kinds: s("product_kinds"),
        image_url: s("image_url"),
        vendor_status: s("vendor_status"),
    }
});

/// The coupon as API.md shows it, borrowed from the coupon: what `Serialize` writes (and
/// what [`Coupon::write_json_as`], which writes the same by hand, is tested against).
#[derive(Serialize)]
struct Shown<'a> {
    id: &'a str,
    vendor: &'a str,
    code: Option<&'a str>,
    template_id: Option<&'a str>,
    name: &'a str,
    kind: &'a str,
    amount_off: Option<i64>,
    percent_off: Option<f64>,
    min_order: Option<i64>,
    max_discount: Option<i64>,
    status: &'a str,
    valid_from: Option<&'a str>,
    valid_until: Option<&'a str>,
    usable_weekdays: Option<Vec<u8>>,
    usable_hours: Option<&'a Value>,
    channels: Vec<&'a str>,
    product_kinds: Vec<&'a str>,
    image_url: Option<&'a str>,
    vendor_status: Option<&'a str>,
}

impl Serialize for Coupon {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Shown {
            id: &self.id,
            vendor: &self.vendor,
            code: self.code(),
            template_id: self.template_id(),
            name: self.name(),
            kind: self.kind(),
            amount_off: self.amount_off(),
            percent_off: self.percent_off(),
            min_order: self.min_order(),
            max_discount: self.max_discount(),
            status: self.status(),
            valid_from: self.valid_from(),
            valid_until: self.valid_until(),
            usable_weekdays: self.usable_weekdays().map(Iterator::collect),
            usable_hours: self.usable_hours(),
            channels: self.channels().collect(),
            product_kinds: self.product_kinds().collect(),
            image_url: self.image_url(),
            vendor_status: self.vendor_status(),
        }
        .serialize(s)
    }
}

/// The texts of a list value (anything else in it is left out, and a value that is not a
/// list is an empty one: lists are never null).
fn texts(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(Value::as_str)
}

impl Coupon {
    /// The coupon of a mapped row (slots in `schema::COUPON` order), copied.
    pub fn from_row(vendor: &Arc<str>, row: &[Value]) -> Coupon {
        Coupon::from_owned_row(vendor, row.to_vec())
    }

    /// [`Coupon::from_row`] of a row it uses up: the row becomes the coupon's (an answer's
    /// rows, once its coupons are built, are not kept).
    pub fn from_owned_row(vendor: &Arc<str>, mut row: Vec<Value>) -> Coupon {
        let s = &*SLOTS;
        if row.len() < COUPON.len() {
            // rows are made to the schema; a short one reads as nulls past its end
            row.resize(COUPON.len(), Value::Null);
        }
        let row = row.into_boxed_slice();
        let instant = |slot: usize| {
            row[slot]
                .as_str()
                .and_then(crate::engine::time::canonical_instant)
        };
        let own = row[s.id].as_str().unwrap_or_default();
        let mut id = String::with_capacity(vendor.len() + 1 + own.len());
        id.push_str(vendor);
        id.push(':');
        id.push_str(own);
        Coupon {
            id,
            vendor: Arc::clone(vendor),
            from_ts: instant(s.valid_from),
            until_ts: instant(s.valid_until),
            row,
        }
    }

    fn text(&self, slot: usize) -> Option<&str> {
        self.row[slot].as_str()
    }

    pub fn code(&self) -> Option<&str> {
        self.text(SLOTS.code)
    }

    pub fn template_id(&self) -> Option<&str> {
        self.text(SLOTS.template_id)
    }

    pub fn name(&self) -> &str {
        self.text(SLOTS.name).unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.text(SLOTS.kind).unwrap_or("other")
    }

    pub fn amount_off(&self) -> Option<i64> {
        self.row[SLOTS.amount_off].as_i64()
    }

    pub fn percent_off(&self) -> Option<f64> {
        self.row[SLOTS.percent_off].as_f64()
    }

    pub fn min_order(&self) -> Option<i64> {
        self.row[SLOTS.min_order].as_i64()
    }

    pub fn max_discount(&self) -> Option<i64> {
        self.row[SLOTS.max_discount].as_i64()
    }

    /// The vendor's status as mapped (not judged by the dates: [`Coupon::effective_status`]).
    pub fn status(&self) -> &str {
        self.text(SLOTS.status).unwrap_or("usable")
    }

    /// Shows the coupon with `status` (its effective status) from now on.
    pub fn set_status(&mut self, status: &str) {
        if self.status() != status {
            self.row[SLOTS.status] = Value::String(status.to_owned());
        }
    }

    pub fn valid_from(&self) -> Option<&str> {
        self.text(SLOTS.valid_from)
    }

    pub fn valid_until(&self) -> Option<&str> {
        self.text(SLOTS.valid_until)
    }

    /// ISO weekdays (1–7), when the row has a list of them.
    pub fn usable_weekdays(&self) -> Option<impl Iterator<Item = u8> + '_> {
        self.row[SLOTS.usable_weekdays]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as u8)))
    }

    pub fn usable_hours(&self) -> Option<&Value> {
        Some(&self.row[SLOTS.usable_hours]).filter(|v| !v.is_null())
    }

    pub fn channels(&self) -> impl Iterator<Item = &str> {
        texts(&self.row[SLOTS.channels])
    }

    pub fn product_kinds(&self) -> impl Iterator<Item = &str> {
        texts(&self.row[SLOTS.product_kinds])
    }

    pub fn image_url(&self) -> Option<&str> {
        self.text(SLOTS.image_url)
    }

    pub fn vendor_status(&self) -> Option<&str> {
        self.text(SLOTS.vendor_status)
    }

    /// The coupon as JSON, exactly as `serde_json` writes its `Serialize` (a test holds them
    /// equal), written directly: the field names are constants, and text that needs no
    /// escaping (nearly all of it) is copied as it is. serde_json escaped every name and
    /// value byte by byte through its serializer, ~6.5k instructions a coupon: a tenth of a
    /// miss was serializing the merged page.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_as(self.status(), out);
    }

    /// [`Coupon::write_json`] with `status` written in place of the coupon's own: its effective
    /// status, without copying the coupon to change it.
    pub fn write_json_as(&self, status: &str, out: &mut Vec<u8>) {
        use crate::json_text::write_str as text;
        fn some_text(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => text(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn value(out: &mut Vec<u8>, v: &impl Serialize) {
            serde_json::to_writer(&mut *out, v).expect("a value serializes");
        }
        fn texts<'t>(out: &mut Vec<u8>, list: impl Iterator<Item = &'t str>) {
            out.push(b'[');
            for (i, s) in list.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                text(out, s);
            }
            out.push(b']');
        }
        out.extend_from_slice(b"{\"id\":");
        text(out, &self.id);
        out.extend_from_slice(b",\"vendor\":");
        text(out, &self.vendor);
        out.extend_from_slice(b",\"code\":");
        some_text(out, self.code());
        out.extend_from_slice(b",\"template_id\":");
        some_text(out, self.template_id());
        out.extend_from_slice(b",\"name\":");
        text(out, self.name());
        out.extend_from_slice(b",\"kind\":");
        text(out, self.kind());
        out.extend_from_slice(b",\"amount_off\":");
        value(out, &self.amount_off());
        out.extend_from_slice(b",\"percent_off\":");
        value(out, &self.percent_off());
        out.extend_from_slice(b",\"min_order\":");
        value(out, &self.min_order());
        out.extend_from_slice(b",\"max_discount\":");
        value(out, &self.max_discount());
        out.extend_from_slice(b",\"status\":");
        text(out, status);
        out.extend_from_slice(b",\"valid_from\":");
        some_text(out, self.valid_from());
        out.extend_from_slice(b",\"valid_until\":");
        some_text(out, self.valid_until());
        out.extend_from_slice(b",\"usable_weekdays\":");
        value(
            out,
            &self.usable_weekdays().map(Iterator::collect::<Vec<u8>>),
        );
        out.extend_from_slice(b",\"usable_hours\":");
        value(out, &self.usable_hours());
        out.extend_from_slice(b",\"channels\":");
        texts(out, self.channels());
        out.extend_from_slice(b",\"product_kinds\":");
        texts(out, self.product_kinds());
        out.extend_from_slice(b",\"image_url\":");
        some_text(out, self.image_url());
        out.extend_from_slice(b",\"vendor_status\":");
        some_text(out, self.vendor_status());
        out.push(b'}');
    }

    /// A page's JSON array: each coupon as [`Coupon::write_json_as`] writes it with the status
    /// paired with it.
    pub fn write_page(coupons: &[(&str, &Coupon)], out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, (status, c)) in coupons.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            c.write_json_as(status, out);
        }
        out.push(b']');
    }

    /// The status as judged at `now` (API.md "Effective status"): a coupon the vendor calls
    /// unused, usable or not yet valid is judged by its dates; every other status stands.
    pub fn effective_status(&self, now: jiff::Timestamp) -> &'static str {
        let status = self.status();
        match status {
            "pending" | "usable" => {
                if self.from_ts.is_some_and(|f| now < f) {
                    "pending"
                } else if self.until_ts.is_some_and(|u| now > u) {
                    "expired"
                } else if status == "pending" && self.from_ts.is_none() {
                    "pending" // no dates to judge by: the vendor's word stands
                } else {
                    "usable"
                }
            }
            other => super::schema::STATUSES
                .iter()
                .copied()
                .find(|s| *s == other)
                .unwrap_or("closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coupons_are_written_as_serde_writes_them() {
        // text that needs escaping and text that does not, every field absent and present
        let texts = [
            "",
            "满50减5元券",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline",
            "\u{1}\u{1f}\u{7f}",
            "/ok/",
            "é\u{2028}",
            // text made only of what must be escaped: a control character, a quote, a backslash
            "\t",
            "\"",
            "\\",
        ];
        let x = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15_u64);
        let next = |n: u64| {
            let mut v = x.get();
            v ^= v << 13;
            v ^= v >> 7;
            v ^= v << 17;
            x.set(v);
            v % n
        };
        let mut coupons = Vec::new();
        for _ in 0..500 {
            let t = || json!(texts[next(texts.len() as u64) as usize]);
            // absent, of its type, or (now and then) of another: both writers must read a
            // row's slot alike whatever it holds
            let maybe = |v: Value| match next(6) {
                0 | 1 => Value::Null,
                2 => json!([1, "x"]),
                _ => v,
            };
            let s = &*SLOTS;
            let mut row = vec![Value::Null; COUPON.len()];
            row[s.id] = t();
            row[s.code] = maybe(t());
            row[s.template_id] = maybe(t());
            row[s.name] = maybe(t());
            row[s.kind] = maybe(t());
            row[s.amount_off] = maybe(json!(-5_i64));
            row[s.percent_off] = maybe(json!(12.5));
            row[s.min_order] = maybe(json!(i64::MAX));
            // an integer too large for i64 is no amount: null, by both writers
            row[s.max_discount] =
                maybe([json!(0), json!(i64::MIN), json!(u64::MAX)][next(3) as usize].clone());
            row[s.status] = maybe(t());
            row[s.valid_from] = maybe(t());
            row[s.valid_until] = maybe(t());
            row[s.usable_weekdays] = maybe(json!([1, 7]));
            row[s.usable_hours] = maybe(json!([{"from": "11:00", "to": "14:00"}]));
            row[s.channels] = maybe(Value::Array((0..next(3)).map(|_| t()).collect()));
            row[s.product_kinds] = maybe(Value::Array((0..next(3)).map(|_| t()).collect()));
            row[s.image_url] = maybe(t());
            row[s.vendor_status] = maybe(t());
            let vendor = t();
            let c = Coupon::from_owned_row(&vendor.as_str().unwrap().into(), row);
            coupons.push(c);
        }
        for c in &coupons {
            let mut out = Vec::new();
            c.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(c).unwrap()
            );
        }
        // a page: each coupon with the status it is shown with
        let shown: Vec<(&str, &Coupon)> = coupons
            .iter()
            .enumerate()
            .map(|(i, c)| (if i % 2 == 0 { "expired" } else { c.status() }, c))
            .collect();
        let mut out = Vec::new();
        Coupon::write_page(&shown, &mut out);
        let copies: Vec<Coupon> = shown
            .iter()
            .map(|(s, c)| {
                let mut c = (*c).clone();
                c.set_status(s);
                c
            })
            .collect();
        assert_eq!(out, serde_json::to_vec(&copies).unwrap());
        let mut none = Vec::new();
        Coupon::write_page(&[], &mut none);
        assert_eq!(none, b"[]");
    }

    fn coupon(status: &str, from: Option<&str>, until: Option<&str>) -> Coupon {
        let mut row = vec![Value::Null; COUPON.len()];
        row[SLOTS.id] = json!("x");
        row[SLOTS.status] = json!(status);
        row[SLOTS.valid_from] = from.map(Value::from).unwrap_or(Value::Null);
        row[SLOTS.valid_until] = until.map(Value::from).unwrap_or(Value::Null);
        Coupon::from_row(&"v".into(), &row)
    }

    #[test]
    fn effective_status_judges_unused_coupons_by_their_dates() {
        let now: jiff::Timestamp = "2015-12-01T00:00:00+08:00".parse().unwrap();
        let (a, b) = (
            Some("2015-11-25T00:00:00+08:00"),
            Some("2015-12-12T23:59:59+08:00"),
        );
        let later = (
            Some("2015-12-05T00:00:00+08:00"),
            Some("2015-12-31T23:59:59+08:00"),
        );
        let past = (
            Some("2015-01-01T00:00:00+08:00"),
            Some("2015-02-01T23:59:59+08:00"),
        );
        let cases = [
            ("usable", a, b, "usable"),
            ("pending", a, b, "usable"),
            ("usable", later.0, later.1, "pending"),
            ("usable", past.0, past.1, "expired"),
            ("pending", None, None, "pending"),
            ("usable", None, None, "usable"),
            ("used", a, b, "used"),
            ("frozen", past.0, past.1, "frozen"),
            ("deleted", later.0, later.1, "deleted"),
        ];
        for (status, from, until, want) in cases {
            assert_eq!(
                coupon(status, from, until).effective_status(now),
                want,
                "{status} {from:?}..{until:?}"
            );
        }
    }

    #[test]
    fn rows_become_coupons_with_lists_never_null() {
        let c = coupon("usable", None, None);
        assert_eq!(c.id, "v:x");
        assert_eq!(c.kind(), "other");
        assert_eq!(c.name(), "");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["channels"], json!([]));
        assert_eq!(v["product_kinds"], json!([]));
        assert!(v.get("from_ts").is_none());
        assert_eq!(v["usable_hours"], Value::Null);
        // a row shorter than the schema reads as nulls past its end
        let short = Coupon::from_row(&"v".into(), &[json!("x")]);
        assert_eq!((short.id.as_str(), short.kind()), ("v:x", "other"));
        assert_eq!(short.usable_hours(), None);
    }

    #[test]
    fn rows_keep_their_lists_and_hours() {
        let mut row = vec![Value::Null; COUPON.len()];
        row[SLOTS.id] = json!("x");
        row[SLOTS.channels] = json!(["app", 3, "mini"]);
        row[SLOTS.product_kinds] = json!(["drinks"]);
        let hours = json!([{"from": "10:00", "to": "14:00"}]);
        row[SLOTS.usable_hours] = hours.clone();
        let c = Coupon::from_row(&"v".into(), &row);
        // the mapper gives canonical values; anything else in a list is left out, not an error
        assert_eq!(c.channels().collect::<Vec<_>>(), ["app", "mini"]);
        assert_eq!(c.product_kinds().collect::<Vec<_>>(), ["drinks"]);
        assert_eq!(c.usable_hours(), Some(&hours));
    }

    #[test]
    fn a_used_up_row_makes_the_coupon_a_kept_one_does() {
        // every slot filled, every slot empty, and values of the wrong type in each
        let full: Vec<Value> = COUPON
            .iter()
            .enumerate()
            .map(|(i, _)| json!(format!("v{i}")))
            .collect();
        let mut typed = full.clone();
        typed[SLOTS.amount_off] = json!(500);
        typed[SLOTS.percent_off] = json!(12.5);
        typed[SLOTS.valid_from] = json!("2015-12-01T00:00:00+08:00");
        typed[SLOTS.valid_until] = json!("2015-12-12T23:59:59+08:00");
        typed[SLOTS.usable_weekdays] = json!([1, 7]);
        typed[SLOTS.usable_hours] = json!([{"from": "10:00", "to": "14:00"}]);
        typed[SLOTS.channels] = json!(["app", 3, null, "mini"]);
        typed[SLOTS.product_kinds] = json!("not a list");
        let wrong: Vec<Value> = COUPON.iter().map(|_| json!([{"x": 1}])).collect();
        for row in [full, typed, wrong, vec![Value::Null; COUPON.len()]] {
            let kept = Coupon::from_row(&"v".into(), &row);
            assert_eq!(
                Coupon::from_owned_row(&"v".into(), row.clone()),
                kept,
                "{row:?}"
            );
        }
    }

    #[test]
    fn a_coupon_is_usable_through_its_last_instant() {
        let until = "2015-12-12T23:59:59+08:00";
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        let c = coupon("usable", None, Some(until));
        assert_eq!(c.effective_status(at(until)), "usable");
        assert_eq!(
            c.effective_status(at("2015-12-13T00:00:00+08:00")),
            "expired"
        );
    }
}
