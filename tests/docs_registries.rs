//! docs/routes.md's reference tables are made from the registries of the configuration
//! language, so the docs cannot drift from the code: this test fails when a generated block
//! differs from what the registry says, and `UPDATE_DOCS=1` rewrites the blocks.
use coupon_gateway::engine::compile::policy;
use coupon_gateway::engine::conversions;
use coupon_gateway::engine::formats;
use coupon_gateway::engine::time;
use coupon_gateway::engine::transforms;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/routes.md");

/// Each generated block: its name and the text the registry makes for it.
fn blocks() -> Vec<(&'static str, String)> {
    vec![
        ("transforms", transforms::reference_table()),
        ("formats", formats::reference_table()),
        ("conversions", conversions::reference_table()),
        ("time_layouts", time::reference_table()),
        ("bounds", policy::reference_table()),
    ]
}

#[test]
fn generated_reference_tables_match_the_registries() {
    let mut docs = std::fs::read_to_string(DOCS).unwrap();
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (name, table) in blocks() {
        let begin = format!("<!-- generated:{name}");
        let end = format!("<!-- end:{name} -->");
        let start = docs
            .find(&begin)
            .unwrap_or_else(|| panic!("docs/routes.md has no `{begin}` block"));
        let body_start = start + docs[start..].find("-->\n").unwrap() + 4;
        let body_end = docs[body_start..]
            .find(&end)
            .map(|i| body_start + i)
            .unwrap_or_else(|| panic!("docs/routes.md has no `{end}`"));
        if docs[body_start..body_end] != table {
            stale.push(name);
            docs.replace_range(body_start..body_end, &table);
        }
    }
    if update {
        std::fs::write(DOCS, docs).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "docs/routes.md is out of date for {stale:?}: run `UPDATE_DOCS=1 cargo test --test docs_registries`"
        );
    }
}
