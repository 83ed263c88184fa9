//! The canonical coupon record of API.md, built from a mapped vendor row.
use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::schema::{COUPON, slot};

/// One coupon instance, as API.md defines it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coupon {
    pub id: String,
    /// Shared by the coupons of one answer: one allocation an answer, not one a coupon.
    pub vendor: Arc<str>,
    pub code: Option<String>,
    pub template_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub amount_off: Option<i64>,
    pub percent_off: Option<f64>,
    pub min_order: Option<i64>,
    pub max_discount: Option<i64>,
    pub status: String,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub usable_weekdays: Option<Vec<u8>>,
    pub usable_hours: Option<Value>,
    pub channels: Vec<String>,
    pub product_kinds: Vec<String>,
    pub image_url: Option<String>,
    pub vendor_status: Option<String>,
    /// Instants of the validity window, for judging and ordering (not serialized).
    #[serde(skip)]
    pub from_ts: Option<jiff::Timestamp>,
    #[serde(skip)]
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

/// A row's value, borrowed from a row that stays or taken from one that is used up.
fn text(v: Cow<'_, Value>) -> Option<String> {
    match v {
        Cow::Owned(Value::String(s)) => Some(s),
        v => v.as_str().map(str::to_owned),
    }
}

fn list(v: Cow<'_, Value>) -> Vec<String> {
    let texts = |v: Value| match v {
        Value::String(s) => Some(s),
        _ => None,
    };
    match v {
        Cow::Owned(Value::Array(a)) => a.into_iter().filter_map(texts).collect(),
        v => v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Coupon {
    /// Builds a coupon of `vendor` from a row in coupon-schema slot order (as the mapper
    /// produces it: values already of the canonical type, or null).
    pub fn from_row(vendor: &Arc<str>, row: &[Value]) -> Coupon {
        Coupon::build(vendor, |i| Cow::Borrowed(&row[i]))
    }

    /// [`Coupon::from_row`] of a row it uses up: its text moves into the coupon instead of
    /// being copied (an answer's rows, once its coupons are built, are not kept).
    pub fn from_owned_row(vendor: &Arc<str>, mut row: Vec<Value>) -> Coupon {
        Coupon::build(vendor, |i| Cow::Owned(std::mem::take(&mut row[i])))
    }

    /// The coupon from its row's values, each asked for once by slot.
    fn build<'r>(vendor: &Arc<str>, mut value: impl FnMut(usize) -> Cow<'r, Value>) -> Coupon {
        let s = &*SLOTS;
        let valid_from = text(value(s.valid_from));
        let valid_until = text(value(s.valid_until));
        let instant = |t: &Option<String>| {
            t.as_deref()
                .and_then(crate::engine::time::canonical_instant)
        };
        let usable_hours = value(s.usable_hours);
        Coupon {
            id: {
                let own = value(s.id);
                let own = own.as_str().unwrap_or_default();
                let mut id = String::with_capacity(vendor.len() + 1 + own.len());
                id.push_str(vendor);
                id.push(':');
                id.push_str(own);
                id
            },
            vendor: Arc::clone(vendor),
            code: text(value(s.code)),
            template_id: text(value(s.template_id)),
            name: text(value(s.name)).unwrap_or_default(),
            kind: text(value(s.kind)).unwrap_or_else(|| "other".to_owned()),
            amount_off: value(s.amount_off).as_i64(),
            percent_off: value(s.percent_off).as_f64(),
            min_order: value(s.min_order).as_i64(),
            max_discount: value(s.max_discount).as_i64(),
            status: text(value(s.status)).unwrap_or_else(|| "usable".to_owned()),
            from_ts: instant(&valid_from),
            until_ts: instant(&valid_until),
            valid_from,
            valid_until,
            usable_weekdays: value(s.usable_weekdays).as_array().map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as u8))
                    .collect()
            }),
            usable_hours: (!usable_hours.is_null()).then(|| usable_hours.into_owned()),
            channels: list(value(s.channels)),
            product_kinds: list(value(s.product_kinds)),
            image_url: text(value(s.image_url)),
            vendor_status: text(value(s.vendor_status)),
        }
    }

    /// The coupon as JSON, exactly as `serde_json` writes the derived `Serialize` (a test holds
    /// them equal), written directly: the field names are constants, and text that needs no
    /// escaping (nearly all of it) is copied as it is. serde_json escaped every name and
    /// value byte by byte through its serializer, ~6.5k instructions a coupon: a tenth of a
    /// miss was serializing the merged page.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_as(&self.status, out);
    }

    /// [`Coupon::write_json`] with `status` written in place of the coupon's own: its effective
    /// status, without copying the coupon to change it.
    pub fn write_json_as(&self, status: &str, out: &mut Vec<u8>) {
        use crate::json_text::write_str as text;
        fn some_text(out: &mut Vec<u8>, s: &Option<String>) {
            match s {
                Some(s) => text(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn value(out: &mut Vec<u8>, v: &impl Serialize) {
            serde_json::to_writer(&mut *out, v).expect("a value serializes");
        }
        fn texts(out: &mut Vec<u8>, list: &[String]) {
            out.push(b'[');
            for (i, s) in list.iter().enumerate() {
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
        some_text(out, &self.code);
        out.extend_from_slice(b",\"template_id\":");
        some_text(out, &self.template_id);
        out.extend_from_slice(b",\"name\":");
        text(out, &self.name);
        out.extend_from_slice(b",\"kind\":");
        text(out, &self.kind);
        out.extend_from_slice(b",\"amount_off\":");
        value(out, &self.amount_off);
        out.extend_from_slice(b",\"percent_off\":");
        value(out, &self.percent_off);
        out.extend_from_slice(b",\"min_order\":");
        value(out, &self.min_order);
        out.extend_from_slice(b",\"max_discount\":");
        value(out, &self.max_discount);
        out.extend_from_slice(b",\"status\":");
        text(out, status);
        out.extend_from_slice(b",\"valid_from\":");
        some_text(out, &self.valid_from);
        out.extend_from_slice(b",\"valid_until\":");
        some_text(out, &self.valid_until);
        out.extend_from_slice(b",\"usable_weekdays\":");
        value(out, &self.usable_weekdays);
        out.extend_from_slice(b",\"usable_hours\":");
        value(out, &self.usable_hours);
        out.extend_from_slice(b",\"channels\":");
        texts(out, &self.channels);
        out.extend_from_slice(b",\"product_kinds\":");
        texts(out, &self.product_kinds);
        out.extend_from_slice(b",\"image_url\":");
        some_text(out, &self.image_url);
        out.extend_from_slice(b",\"vendor_status\":");
        some_text(out, &self.vendor_status);
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
        match self.status.as_str() {
            "pending" | "usable" => {
                if self.from_ts.is_some_and(|f| now < f) {
                    "pending"
                } else if self.until_ts.is_some_and(|u| now > u) {
                    "expired"
                } else if self.status == "pending" && self.from_ts.is_none() {
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
            let t = || texts[next(texts.len() as u64) as usize].to_owned();
            let maybe = |t: String| (next(3) > 0).then_some(t);
            let c = Coupon {
                id: t(),
                vendor: t().into(),
                code: maybe(t()),
                template_id: maybe(t()),
                name: t(),
                kind: t(),
                amount_off: maybe(String::new()).map(|_| -5_i64),
                percent_off: maybe(String::new()).map(|_| 12.5),
                min_order: maybe(String::new()).map(|_| i64::MAX),
                max_discount: maybe(String::new()).map(|_| 0),
                status: t(),
                valid_from: maybe(t()),
                valid_until: maybe(t()),
                usable_weekdays: maybe(String::new()).map(|_| vec![1, 7]),
                usable_hours: maybe(String::new())
                    .map(|_| json!([{"from": "11:00", "to": "14:00"}])),
                channels: (0..next(3)).map(|_| t()).collect(),
                product_kinds: (0..next(3)).map(|_| t()).collect(),
                image_url: maybe(t()),
                vendor_status: maybe(t()),
                from_ts: None,
                until_ts: None,
            };
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
            .map(|(i, c)| {
                (
                    if i % 2 == 0 {
                        "expired"
                    } else {
                        c.status.as_str()
                    },
                    c,
                )
            })
            .collect();
        let mut out = Vec::new();
        Coupon::write_page(&shown, &mut out);
        let copies: Vec<Coupon> = shown
            .iter()
            .map(|(s, c)| Coupon {
                status: (*s).to_owned(),
                ..(*c).clone()
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
        assert_eq!(c.kind, "other");
        assert_eq!(c.name, "");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["channels"], json!([]));
        assert_eq!(v["product_kinds"], json!([]));
        assert!(v.get("from_ts").is_none());
        assert_eq!(v["usable_hours"], Value::Null);
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
        assert_eq!(c.channels, ["app", "mini"]);
        assert_eq!(c.product_kinds, ["drinks"]);
        assert_eq!(c.usable_hours, Some(hours));
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
