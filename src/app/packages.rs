//! `GET /v1/packages/{vendor}/{package_id}`: one vendor's gift package.
use std::sync::Arc;

use serde_json::{Value, json};

use crate::app::{AppState, ask_vendor};
use crate::canonical::merge::{Outcome, Source};
use crate::canonical::schema::{PACKAGE, to_object};
use crate::engine::call::CallInput;
use crate::engine::fanout::Failure;
use crate::engine::routes::RouteId;

pub enum PackageAnswer {
    /// `{"package": {…}, "source": {…}}`
    Found(Value),
    /// The vendor has no such package.
    NotFound(Source),
    /// No vendor of that id offers packages.
    NoSuchVendor,
    /// The package id is not one a vendor could have.
    BadId,
    /// The vendor failed (`source.outcome` says how).
    Failed(Source),
}

pub async fn get(
    state: &Arc<AppState>,
    vendor: &str,
    package_id: &str,
    bypass_cache: bool,
) -> PackageAnswer {
    let generation = state.generation();
    let Some(op) = generation.plan.route(RouteId::PackageGet).of(vendor) else {
        return PackageAnswer::NoSuchVendor;
    };
    if !crate::app::is_record_id(package_id) {
        return PackageAnswer::BadId;
    }
    let input = CallInput {
        inputs: vec![Some(Value::String(package_id.to_owned()))],
        ..CallInput::default()
    };
    let asked = ask_vendor(state, &generation, op, &input, bypass_cache).await;
    let (mut source, served) = asked.report(vendor);
    if let Err(e) = &asked.result
        && matches!(&**e, Failure::Call(c) if c.is_not_found())
    {
        // the vendor answered: the package just is not there
        source.outcome = Outcome::Ok;
        source.count = 0;
        source.dropped = 0;
        source.truncated = false;
        return PackageAnswer::NotFound(source);
    }
    let Some(row) = served.and_then(|out| out.rows.first()) else {
        if source.outcome == Outcome::Ok {
            return PackageAnswer::NotFound(source);
        }
        return PackageAnswer::Failed(source);
    };
    source.count = 1;
    let mut package = to_object(PACKAGE, row.clone());
    // API.md: `id` is the package id the caller asked for
    package.insert("id".to_owned(), Value::String(package_id.to_owned()));
    package.insert("vendor".to_owned(), Value::String(vendor.to_owned()));
    PackageAnswer::Found(json!({ "package": package, "source": source }))
}
