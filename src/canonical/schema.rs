//! The canonical records a vendor operation may produce, field by field, with each field's
//! type. The compiler checks a vendor's `fields:` mapping against these (unknown fields,
//! enum values that are not canonical, conversions that do not fit the type), and the mapper
//! produces values already in the canonical type.

/// The canonical type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text; numbers and booleans are written as text.
    Text,
    /// Integer fen.
    Money,
    /// Percentage as a number (15.0 = 15 % off).
    Percent,
    /// An integer count.
    Integer,
    /// An instant, written RFC 3339 in UTC+08:00.
    Time,
    /// A list of names, `[]` when absent.
    TextList,
    /// ISO weekdays 1–7, or null for every day.
    Weekdays,
    /// `[{"from":"HH:MM","to":"HH:MM"}]`, or null for all day.
    HourRanges,
    /// An absolute URL (relative vendor paths resolved against the vendor's origin).
    Url,
    /// One of a closed set of values.
    Enum(&'static [&'static str]),
    /// Any JSON value, passed through.
    Json,
    /// A list of nested records of the given schema (`{path: …, fields: {…}}`).
    Records(&'static [FieldDef]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    /// An item without this field is dropped (and counted), not answered half-empty.
    pub required: bool,
}

const fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: false,
    }
}

const fn req(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: true,
    }
}

pub const KINDS: &[&str] = &[
    "cash",
    "discount",
    "free_item",
    "buy_x_get_y",
    "exchange",
    "product",
    "free_shipping",
    "queue_skip",
    "parking",
    "gift",
    "groupon",
    "other",
];

pub const STATUSES: &[&str] = &[
    "pending", "usable", "frozen", "used", "expired", "closed", "deleted",
];

/// One coupon instance held by a member. `id` is the vendor's instance id; the canonical
/// layer prefixes it with the vendor id.
pub const COUPON: &[FieldDef] = &[
    req("id", FieldType::Text),
    f("code", FieldType::Text),
    f("template_id", FieldType::Text),
    f("name", FieldType::Text),
    f("kind", FieldType::Enum(KINDS)),
    f("amount_off", FieldType::Money),
    f("percent_off", FieldType::Percent),
    f("min_order", FieldType::Money),
    f("max_discount", FieldType::Money),
    req("status", FieldType::Enum(STATUSES)),
    f("valid_from", FieldType::Time),
    f("valid_until", FieldType::Time),
    f("usable_weekdays", FieldType::Weekdays),
    f("usable_hours", FieldType::HourRanges),
    f("channels", FieldType::TextList),
    f("product_kinds", FieldType::TextList),
    f("image_url", FieldType::Url),
    f("vendor_status", FieldType::Text),
];

/// Index of a field in a schema.
pub fn slot(schema: &[FieldDef], name: &str) -> Option<usize> {
    schema.iter().position(|d| d.name == name)
}

pub const PACKAGE_STATUSES: &[&str] = &["active", "expired"];

pub const REVIEW_STATUSES: &[&str] = &[
    "pending_review",
    "in_review",
    "rejected",
    "ready",
    "published",
    "closed",
    "deleted",
];

/// A coupon template inside a gift package.
pub const PACKAGE_COUPON: &[FieldDef] = &[
    f("template_id", FieldType::Text),
    f("name", FieldType::Text),
    f("kind", FieldType::Enum(KINDS)),
    f("amount_off", FieldType::Money),
    f("percent_off", FieldType::Percent),
    f("count", FieldType::Integer),
    f("min_order", FieldType::Money),
    f("max_discount", FieldType::Money),
    f("valid_from", FieldType::Time),
    f("valid_until", FieldType::Time),
    f("valid_days_after_claim", FieldType::Integer),
    f("product_kinds", FieldType::TextList),
    f("channels", FieldType::TextList),
];

/// A vendor's gift package (API.md "Gift packages"). `vendor` is added by the route.
pub const PACKAGE: &[FieldDef] = &[
    req("id", FieldType::Text),
    f("code", FieldType::Text),
    f("name", FieldType::Text),
    f("alias", FieldType::Text),
    f("status", FieldType::Enum(PACKAGE_STATUSES)),
    f("review_status", FieldType::Enum(REVIEW_STATUSES)),
    f("claim_from", FieldType::Time),
    f("claim_until", FieldType::Time),
    f("total_limit", FieldType::Integer),
    f("per_member_limit", FieldType::Integer),
    f("channels", FieldType::TextList),
    f("coupons", FieldType::Records(PACKAGE_COUPON)),
];

/// A mapped row as a JSON object (keys sorted, as serde_json's map keeps them); lists are
/// `[]`, never null.
pub fn to_object(
    schema: &[FieldDef],
    row: Vec<serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    schema
        .iter()
        .zip(row)
        .map(|(d, v)| {
            let v = match (d.ty, v) {
                (FieldType::TextList | FieldType::Records(_), serde_json::Value::Null) => {
                    serde_json::Value::Array(vec![])
                }
                (_, v) => v,
            };
            (d.name.to_owned(), v)
        })
        .collect()
}

pub const TEMPLATE_KINDS: &[&str] = &["discount", "cash", "groupon", "gift"];

/// A coupon template (API.md "Coupon templates"). `vendor` is added by the route.
pub const TEMPLATE: &[FieldDef] = &[
    req("id", FieldType::Text),
    f("kind", FieldType::Enum(TEMPLATE_KINDS)),
    f("title", FieldType::Text),
    f("status", FieldType::Text),
    f("begin_at", FieldType::Time),
    f("end_at", FieldType::Time),
    f("created_at", FieldType::Time),
    f("updated_at", FieldType::Time),
    f("card", FieldType::Json),
];

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_row_becomes_an_object_of_its_schema_names_with_lists_never_null() {
        let mut row = vec![Value::Null; PACKAGE.len()];
        row[slot(PACKAGE, "id").unwrap()] = json!("p1");
        row[slot(PACKAGE, "total_limit").unwrap()] = json!(5);
        let object = to_object(PACKAGE, row);
        let names: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = PACKAGE.iter().map(|d| d.name).collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert_eq!(object["id"], json!("p1"));
        assert_eq!(object["total_limit"], json!(5));
        // a list of names and a list of records: [] for null; other fields stay null
        assert_eq!(object["channels"], json!([]));
        assert_eq!(object["coupons"], json!([]));
        assert_eq!(object["name"], Value::Null);
    }
}
