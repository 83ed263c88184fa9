//! `GET /openapi.json`: docs/openapi.yaml, embedded at compile time and turned into JSON once
//! (at start-up, see `server::serve`), so the document served is the one in the repository.
use std::sync::LazyLock;

use bytes::Bytes;

/// docs/openapi.yaml as written.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// The document as JSON. A YAML error is a build mistake, caught by the unit test below.
pub static OPENAPI_JSON: LazyLock<Bytes> = LazyLock::new(|| {
    let doc: serde_json::Value =
        serde_yaml::from_str(OPENAPI_YAML).expect("docs/openapi.yaml is valid YAML");
    Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialize"))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_converts_and_says_it_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_slice(&OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/coupons/query"]["post"].is_object());
    }
}
