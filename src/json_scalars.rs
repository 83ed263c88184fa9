//! The scalar half of a `serde::de::Visitor` that builds a `serde_json::Value`, for the
//! visitors that build objects and lists their own way: the strict parser of caller bodies
//! (duplicate members refused).

/// Expands, inside `impl<'de> Visitor<'de> for T { type Value = serde_json::Value; … }`, to
/// `expecting` and the scalar `visit_*` methods, reading scalars as serde_json's own `Value`
/// does (a float that is not finite becomes null).
macro_rules! value_scalars {
    () => {
        fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Number::from_f64(v)
                .map_or(::serde_json::Value::Null, ::serde_json::Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::Null)
        }
        fn visit_none<E>(self) -> Result<::serde_json::Value, E> {
            Ok(::serde_json::Value::Null)
        }
    };
}

pub(crate) use value_scalars;
