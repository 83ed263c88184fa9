//! `POST /v1/coupons/query`: validate, choose each vendor's identity, fan out, merge.
use std::sync::Arc;

use crate::app::AppState;
use crate::app::ask_vendor;
use crate::canonical::coupon::Coupon;
use crate::canonical::merge::{Outcome, QueryAnswer, Source, VendorResult, Verdict, merge};
use crate::canonical::query::{CouponQuery, InvalidQuery, QueryLimits};
use crate::config::IdentityKind;
use crate::engine::cache::Lookup;
use crate::engine::call::{CallInput, CallOutput};
use crate::engine::fanout;
use crate::engine::plan::OperationPlan;

/// Answers one query; `bypass_cache` when the caller sent `Cache-Control: no-cache`.
pub async fn query(
    state: &Arc<AppState>,
    body: &[u8],
    bypass_cache: bool,
) -> Result<(Verdict, QueryAnswer), InvalidQuery> {
    let plan = &state.plan;
    let route = &plan.coupons_query;
    let known: Vec<&str> = plan.vendors.iter().map(|v| v.id.as_str()).collect();
    let limits = QueryLimits {
        default_limit: route.default_limit,
        max_limit: route.max_limit,
    };
    let q = CouponQuery::parse(body, limits, &known)?;
    let asks = route
        .targets
        .iter()
        .filter(|op| q.considers(&op.vendor.id))
        .map(|op| ask(state, op, &q, bypass_cache));
    let results = fanout::all(asks).await;
    Ok(merge(results, &q, jiff::Timestamp::now()))
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
    let (result, lookup, stale) = (asked.result, asked.lookup, asked.stale);
    let latency_ms = Some(asked.latency.as_millis() as u64);
    let coupons_of = |out: &CallOutput| {
        out.rows
            .iter()
            .map(|row| Coupon::from_row(vendor, row))
            .collect::<Vec<_>>()
    };
    match result {
        Ok(out) => VendorResult {
            source: Source {
                vendor: vendor.to_owned(),
                outcome: Outcome::Ok,
                count: out.rows.len(),
                latency_ms,
                cache: lookup.map(Lookup::as_str),
                error: None,
                dropped: out.dropped,
                truncated: out.truncated,
            },
            coupons: coupons_of(&out),
        },
        Err(e) => {
            // a failed vendor's last good answer is served within its stale-if-error window
            let served = stale.as_deref();
            VendorResult {
                source: Source {
                    vendor: vendor.to_owned(),
                    outcome: e.outcome(),
                    count: served.map_or(0, |s| s.rows.len()),
                    latency_ms,
                    cache: lookup.map(Lookup::as_str),
                    error: Some(e.to_string()),
                    dropped: served.map_or(0, |s| s.dropped),
                    truncated: served.is_some_and(|s| s.truncated),
                },
                coupons: served.map(coupons_of).unwrap_or_default(),
            }
        }
    }
}
