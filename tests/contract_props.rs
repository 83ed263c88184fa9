//! Bad input at scale: the query parser, the strict reader, the cursor, every field
//! conversion and every signing block never panic, and every refusal is a clear reason
//! (answered 400). The memory test is tests/contract_load.rs.
use coupon_gateway::canonical::cursor::{CursorSigner, SortKey};
use coupon_gateway::canonical::query::{CouponQuery, QueryLimits};
use coupon_gateway::canonical::strict;
use proptest::prelude::*;
use serde_json::{Value, json};

const LIMITS: QueryLimits = QueryLimits {
    default_limit: 100,
    max_limit: 500,
};
const VENDORS: &[&str] = &["op", "hkl", "zvcms"];

fn now() -> jiff::Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

/// Any JSON value, a few levels deep, biased towards the query's own member names.
fn json_value() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("member".to_owned()),
        Just("ids".to_owned()),
        Just("openid".to_owned()),
        Just("status".to_owned()),
        Just("kinds".to_owned()),
        Just("vendors".to_owned()),
        Just("limit".to_owned()),
        Just("cursor".to_owned()),
        Just("require".to_owned()),
        Just("op".to_owned()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        Just(json!("usable")),
        Just(json!("all")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn a_cursor_key() -> impl Strategy<Value = SortKey> {
    (
        0u8..3,
        proptest::option::of(any::<i64>()),
        "\\PC{0,8}",
        "\\PC{0,16}",
    )
        .prop_map(|(r, u, v, i)| SortKey { r, u, v, i })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_query_parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let signer = CursorSigner::random();
        if let Err(e) = CouponQuery::parse(&body, LIMITS, VENDORS, &signer, now()) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn the_query_parser_judges_any_json_with_a_clear_reason(v in json_value()) {
        let signer = CursorSigner::random();
        let body = serde_json::to_vec(&v).unwrap();
        match CouponQuery::parse(&body, LIMITS, VENDORS, &signer, now()) {
            Ok(q) => {
                prop_assert!(q.limit >= 1 && q.limit <= 500);
                for k in q.ids.keys() {
                    prop_assert!(VENDORS.contains(&k.as_str()));
                }
            }
            Err(e) => {
                prop_assert!(e.0.len() < 600, "short: {}", e.0);
                prop_assert!(e.0.contains('`') || e.0.contains("JSON") || e.0.contains("query"), "{}", e.0);
            }
        }
    }

    #[test]
    fn a_typo_of_a_member_is_refused_with_a_suggestion(extra in "[a-z]{1,3}", at in 0usize..6) {
        let names = ["member", "status", "kinds", "vendors", "limit", "cursor"];
        let mut typo = names[at].to_owned();
        typo.insert_str(typo.len() / 2, &extra);
        prop_assume!(!names.contains(&typo.as_str()) && typo != "require");
        let body = format!(r#"{{"member":{{}},"{typo}":1}}"#);
        let signer = CursorSigner::random();
        let e = CouponQuery::parse(body.as_bytes(), LIMITS, VENDORS, &signer, now()).unwrap_err();
        prop_assert!(e.0.contains(&format!("unknown member `{typo}`")), "{}", e.0);
    }

    #[test]
    fn cursors_round_trip_and_any_change_is_refused(key in a_cursor_key(), q in "[0-9a-f]{16}", flip in any::<prop::sample::Index>()) {
        let signer = CursorSigner::random();
        let c = signer.issue(&q, &key, now());
        prop_assert_eq!(signer.check(&c, &q, now()), Ok(key));
        let mut bytes = c.clone().into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        let altered = String::from_utf8(bytes).unwrap();
        prop_assert!(signer.check(&altered, &q, now()).is_err());
    }

    #[test]
    fn the_cursor_check_never_panics_on_any_text(text in "\\PC{0,300}") {
        let signer = CursorSigner::random();
        prop_assert!(signer.check(&text, "q", now()).is_err());
    }

    #[test]
    fn query_strings_never_panic(q in "\\PC{0,80}") {
        let _ = strict::check_query(Some(&q), &["vendor", "kind"]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every field conversion takes any JSON a vendor might send without panicking, and what
    /// it produces keeps its type's promises.
    #[test]
    fn field_conversions_never_panic_on_any_vendor_value(v in json_value(), origin in "\\PC{0,20}") {
        use coupon_gateway::engine::convert;
        let _ = convert::fen(&v);
        let _ = convert::yuan_to_fen(&v);
        let _ = convert::number(&v);
        let _ = convert::text(&v);
        let _ = convert::url(&v, &origin);
        let _ = convert::names(&v, "name");
        if let Some(p) = convert::zhe_to_percent_off(&v) {
            prop_assert!(p.is_finite(), "{p}");
        }
        if let Some(p) = convert::pay_rate_to_percent_off(&v) {
            prop_assert!(p.is_finite(), "{p}");
        }
        if let Some(days) = convert::weekdays(&v) {
            prop_assert!(days.iter().all(|d| (1..=7).contains(d)), "{days:?}");
        }
        if let Some(ranges) = convert::hour_ranges(&v) {
            for (from, to) in ranges {
                prop_assert!(from.len() == 5 && to.len() == 5, "{from}-{to}");
            }
        }
    }

    #[test]
    fn decimals_and_time_formats_parse_any_text_without_panicking(s in "\\PC{0,40}") {
        use coupon_gateway::engine::convert::Decimal;
        if let Some(d) = Decimal::parse(&s) {
            let _ = d.scaled_exact(2);
            let _ = d.to_f64();
        }
        let _ = coupon_gateway::engine::time::layout(&s);
        let _ = coupon_gateway::engine::time::zone(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Vendor times in every format, from any value (huge epochs, odd text), never panic.
    #[test]
    fn time_reading_never_panics(v in prop_oneof![json_value(), any::<i64>().prop_map(Value::from), "[0-9: T/-]{0,25}".prop_map(Value::String)]) {
        use coupon_gateway::engine::time::{DayBound, TimeSpec, canonical_zone, layout};
        for bound in [DayBound::Start, DayBound::End] {
            let spec = TimeSpec {
                layouts: ["epoch_s", "epoch_ms", "rfc3339", "yyyy-MM-dd", "%Y%m%d%H%M%S"]
                    .into_iter()
                    .map(|f| layout(f).unwrap())
                    .collect(),
                zone: canonical_zone(),
                bound,
            };
            let _ = spec.read(&v);
        }
    }
}

/// Values of one signing attempt: the member id and a credential, both arbitrary.
struct Given {
    member: String,
    key: String,
}

impl coupon_gateway::engine::template::Values for Given {
    fn text(&self, r: coupon_gateway::engine::template::Ref) -> Option<std::borrow::Cow<'_, str>> {
        use coupon_gateway::engine::template::Ref;
        match r {
            Ref::MemberId => Some(self.member.as_str().into()),
            Ref::Cred(_) => Some(self.key.as_str().into()),
            _ => None,
        }
    }
}

struct Names;

impl coupon_gateway::engine::template::Scope for Names {
    fn resolve(&self, name: &str) -> Result<coupon_gateway::engine::template::Ref, String> {
        use coupon_gateway::engine::template::Ref;
        match name {
            "member.id" => Ok(Ref::MemberId),
            "cred.key" => Ok(Ref::Cred(0)),
            other => Err(format!("unknown `{other}`")),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every signing block, over any input and any key (DES keys of the wrong length
    /// included), answers text or a clear step error; never a panic.
    #[test]
    fn signing_steps_never_panic_on_any_input_or_key(member in "\\PC{0,64}", key in "\\PC{0,24}") {
        use coupon_gateway::engine::steps::{Step, Target};
        let chains = [
            json!(["md5", "hex_lower"]),
            json!(["sha1", "hex_upper"]),
            json!(["sha256", "base64"]),
            json!([{"hmac_sha1": "{{cred.key}}"}, "base64", "percent_encode"]),
            json!([{"hmac_sha256": "{{cred.key}}"}, "base64url"]),
            json!([{"des_ecb_pkcs5": "{{cred.key}}"}, "hex_upper"]),
            json!(["upper", "lower", "percent_encode"]),
        ];
        let des_key_fits = key.len() == 8;
        let given = Given { member, key };
        for apply in chains {
            let (input, transforms) = Step::compile_parts(
                &json!("{{member.id}}"),
                apply.as_array().unwrap(),
                &Names,
            )
            .unwrap_or_else(|e| panic!("{apply}: {e:?}"));
            let step = Step { name: "sign".into(), input, transforms, target: Target::Var(0) };
            match step.run(&given) {
                // every chain ends in an ASCII encoding
                Ok(out) => prop_assert!(out.is_ascii(), "{apply}: {out}"),
                Err(e) => {
                    prop_assert!(e.to_string().starts_with("step `sign`"), "{e}");
                    // only DES refuses, and only a key that is not 8 bytes
                    prop_assert!(apply.to_string().contains("des") && !des_key_fits, "{apply}: {e}");
                }
            }
        }
    }
}
