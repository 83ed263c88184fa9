//! `POST /v1/coupons/query`: validate, choose each vendor's identity, fan out, merge.
use crate::engine::routes::RouteId;
use std::sync::Arc;

use crate::app::AppState;
use crate::app::ask_vendor;
use crate::canonical::coupon::Coupon;
use crate::canonical::merge::{QueryAnswer, Source, VendorResult, Verdict, merge};
use crate::canonical::query::{CouponQuery, InvalidQuery, QueryLimits, Require};
use crate::config::IdentityKind;
use crate::engine::call::CallInput;
use crate::engine::fanout;
use crate::engine::plan::OperationPlan;

/// Why a query was not asked.
#[derive(Debug)]
pub enum Refused {
    /// 400: the query is not valid.
    Invalid(InvalidQuery),
    /// 403: it names a vendor the caller may not reach.
    Forbidden(String),
}

/// Answers one query; `bypass_cache` when the caller sent `Cache-Control: no-cache`;
/// `allowed` limits the vendors to those the caller may reach.
pub async fn query(
    state: &Arc<AppState>,
    body: &[u8],
    bypass_cache: bool,
    allowed: Option<&[String]>,
) -> Result<(Verdict, QueryAnswer), Refused> {
    let plan = &state.plan;
    let route = plan.route(RouteId::CouponsQuery);
    // the vendors that can be asked: those offering the route's operation
    let known: Vec<&str> = route
        .targets
        .iter()
        .map(|op| op.vendor.id.as_str())
        .collect();
    let limits = QueryLimits {
        default_limit: route.default_limit,
        max_limit: route.max_limit,
    };
    let now = jiff::Timestamp::now();
    let q =
        CouponQuery::parse(body, limits, &known, &state.cursors, now).map_err(Refused::Invalid)?;
    let may = |v: &str| allowed.is_none_or(|a| a.iter().any(|x| x == v));
    let named = q
        .vendors
        .iter()
        .flatten()
        .chain(q.ids.keys())
        .chain(match &q.require {
            Require::Vendors(vs) => vs.as_slice(),
            _ => &[],
        });
    if let Some(v) = named.into_iter().find(|v| !may(v)) {
        return Err(Refused::Forbidden(format!(
            "this caller may not ask vendor `{v}`"
        )));
    }
    // without a `vendors` filter, a limited caller's query considers the vendors it may reach
    let asks = route
        .targets
        .iter()
        .filter(|op| q.considers(&op.vendor.id) && may(&op.vendor.id))
        .map(|op| ask(state, op, &q, bypass_cache));
    let results = fanout::all(asks).await;
    Ok(merge(results, &q, now))
}

/// The identity to send to `op`'s vendor: the first kind it accepts that the caller gave.
fn identity(op: &OperationPlan, q: &CouponQuery) -> Option<CallInput> {
    op.identity.iter().find_map(|kind| match kind {
        IdentityKind::MemberId => q.ids.get(&op.vendor.id).map(|id| CallInput {
            member_id: Some(id.clone()),
            ..CallInput::default()
        }),
        IdentityKind::Openid => q.openid.as_ref().map(|o| CallInput {
            openid: Some(o.clone()),
            ..CallInput::default()
        }),
    })
}

async fn ask(
    state: &Arc<AppState>,
    op: &Arc<OperationPlan>,
    q: &CouponQuery,
    bypass_cache: bool,
) -> VendorResult {
    let vendor = op.vendor.id.as_str();
    let Some(input) = identity(op, q) else {
        return VendorResult {
            source: Source::skipped(vendor, format!("no identity for {vendor}")),
            coupons: Vec::new(),
        };
    };
    let asked = ask_vendor(state, op, &input, bypass_cache).await;
    let (source, served) = asked.report(vendor);
    let coupons = served.map_or_else(Vec::new, |out| {
        out.rows
            .iter()
            .map(|row| Coupon::from_row(vendor, row))
            .collect()
    });
    VendorResult { source, coupons }
}
