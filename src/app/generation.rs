//! One configuration generation: a compiled plan with the runtime state built for it (response
//! caches by operation slot, guards by vendor slot). `AppState` holds the current one behind an
//! `ArcSwap`; a request loads it once at its start and uses it throughout, so a reload never
//! changes the plan under a request in flight.
//!
//! Building the next generation carries over the state of what did not change: a vendor whose
//! fingerprint (`Plan::fingerprints`) is the same keeps its `VendorGuard` (breaker, limits,
//! retry budget, token cache), an operation whose fingerprint is the same keeps its
//! `ResponseCache`. Everything else starts afresh, as at start-up.
use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::cache::{AnswerStore, ResponseCache};
use crate::engine::plan::{OperationPlan, Plan, VendorPlan};
use crate::engine::resilience::{VendorAuth, VendorGuard};
use crate::engine::routes::RouteId;
use crate::engine::token::TokenCache;
use crate::shared::Shared;
use crate::shared::cache::SharedAnswers;
use crate::shared::tokens::SharedTokens;

/// Where a generation's configuration came from, for `GET /v1/config` and the metrics.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file (or `routes.yaml (embedded)`).
    pub source: String,
    /// SHA-256 (hex) of the file's text as read, before `CGW_` overrides.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: Option<jiff::Timestamp>,
}

impl Origin {
    pub fn of_text(source: &str, text: &str) -> Origin {
        use sha2::Digest;
        Origin {
            source: source.to_owned(),
            sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            loaded_at: Some(jiff::Timestamp::now()),
        }
    }

    /// The short form, as `cgw_config_info{digest}` and `/v1/config` `version` show it.
    pub fn version(&self) -> &str {
        self.sha256.get(..12).unwrap_or(&self.sha256)
    }
}

pub struct Generation {
    pub plan: Arc<Plan>,
    /// Response caches by operation slot.
    pub caches: Vec<Option<Arc<ResponseCache>>>,
    /// Breakers, limits, retry budgets and token caches by vendor slot.
    pub guards: Vec<Arc<VendorGuard>>,
    /// Coupon queries parsed under this plan, by body.
    pub queries: super::coupons::ParsedQueries,
    /// Whole coupon answers under this plan, by request, while they stand.
    pub whole: super::coupons::WholeAnswers,
    pub origin: Origin,
}

/// What building a generation kept from the previous one (vendor ids, `vendor.operation`s).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub guards: Vec<String>,
    pub caches: Vec<String>,
}

/// A piece of the previous generation's state, with the fingerprint it was built for.
type Previous<'a, T> = (&'a [u8; 32], &'a Arc<T>);

impl Generation {
    /// The runtime state for `plan`, reusing `previous`'s where the fingerprints match.
    pub fn build(
        plan: Plan,
        origin: Origin,
        answers: &Arc<AnswerStore>,
        shared: Option<&Arc<Shared>>,
        previous: Option<&Generation>,
    ) -> (Generation, Kept) {
        let mut kept = Kept::default();
        // the previous generation's state by identity (vendor id / vendor + operation)
        let mut old_guards: HashMap<&str, Previous<'_, VendorGuard>> = HashMap::new();
        let mut old_caches: HashMap<(&str, &str), Previous<'_, ResponseCache>> = HashMap::new();
        if let Some(prev) = previous {
            let prints = &prev.plan.fingerprints;
            for v in &prev.plan.vendors {
                old_guards.insert(&v.id, (&prints.vendors[v.slot], &prev.guards[v.slot]));
            }
            for op in prev.plan.operations() {
                if let Some(cache) = &prev.caches[op.slot] {
                    old_caches.insert(
                        (&op.vendor.id, &op.name),
                        (&prints.operations[op.slot], cache),
                    );
                }
            }
        }
        let prints = &plan.fingerprints;
        let mut caches: Vec<Option<Arc<ResponseCache>>> =
            (0..plan.operation_count).map(|_| None).collect();
        for route in &plan.routes {
            // the coupon lists' answers are read as coupons only: built once, out of the rows
            let coupons = route.id == RouteId::CouponsQuery;
            for op in &route.targets {
                let Some(cfg) = &op.cache else { continue };
                caches[op.slot] = Some(
                    match old_caches.get(&(op.vendor.id.as_str(), op.name.as_str())) {
                        Some((print, cache)) if **print == prints.operations[op.slot] => {
                            kept.caches.push(format!("{}.{}", op.vendor.id, op.name));
                            Arc::clone(cache)
                        }
                        _ => {
                            let cache = new_cache(op, cfg, answers, shared);
                            Arc::new(if coupons {
                                cache.with_records(super::coupons::coupons_out_of, &op.vendor.id)
                            } else {
                                cache
                            })
                        }
                    },
                );
            }
        }
        let guards = plan
            .vendors
            .iter()
            .map(|v| match old_guards.get(v.id.as_str()) {
                Some((print, guard)) if **print == prints.vendors[v.slot] => {
                    kept.guards.push(v.id.clone());
                    Arc::clone(guard)
                }
                _ => Arc::new(new_guard(&plan, v, shared)),
            })
            .collect();
        let shares = super::coupons::Shares::of(answers.pages_budget());
        let generation = Generation {
            plan: Arc::new(plan),
            caches,
            guards,
            queries: super::coupons::ParsedQueries::new(shares.parsed),
            whole: super::coupons::WholeAnswers::new(shares.whole),
            origin,
        };
        (generation, kept)
    }
}

/// An operation's cache, with its shared level when replicas share one.
fn new_cache(
    op: &OperationPlan,
    cfg: &crate::config::CacheConfig,
    answers: &Arc<AnswerStore>,
    shared: Option<&Arc<Shared>>,
) -> ResponseCache {
    match shared {
        Some(s) => ResponseCache::with_shared(
            answers,
            cfg,
            &op.vendor.id,
            &op.name,
            SharedAnswers::new(
                Arc::clone(s),
                &op.vendor.id,
                &op.name,
                cfg,
                op.vendor.timeout,
            ),
        ),
        None => ResponseCache::new(answers, cfg, &op.vendor.id, &op.name),
    }
}

/// A vendor's guard, with the shared rate and token levels when replicas share them.
fn new_guard(plan: &Plan, v: &VendorPlan, shared: Option<&Arc<Shared>>) -> VendorGuard {
    let mut guard = VendorGuard::new(
        &v.retry,
        v.circuit.as_ref(),
        v.limits.as_ref(),
        crate::telemetry::vendor(&v.id),
    );
    if let Some(s) = shared {
        guard.share_rate(Arc::clone(s), &v.id, v.limits.as_ref());
    }
    guard.auth = plan.tokens[v.slot].clone().map(|token| VendorAuth {
        cache: match shared {
            Some(s) => TokenCache::with_shared(
                token.refresh_before,
                SharedTokens::new(Arc::clone(s), &v.id, token.refresh_before),
            ),
            None => TokenCache::new(token.refresh_before),
        },
        plan: token,
    });
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Credentials;

    fn plan(text: &str) -> Plan {
        let loaded = crate::config::load_str("routes.yaml", text, false).unwrap();
        Plan::compile(&loaded, Credentials::Optional).unwrap().0
    }

    #[test]
    fn a_reload_keeps_the_state_of_what_did_not_change_only() {
        let text = crate::embedded::ROUTES_YAML;
        let (first, _) = Generation::build(
            plan(text),
            Origin::default(),
            &AnswerStore::new(1 << 20),
            None,
            None,
        );
        // op's timeout changes; hkl's list_coupons cache ttl changes; the rest stays
        let changed = text
            .replacen("    timeout_ms: 800\n", "    timeout_ms: 900\n", 1)
            .replacen("          ttl_ms: 30000", "          ttl_ms: 31000", 2);
        let (next, kept) = Generation::build(
            plan(&changed),
            Origin::default(),
            &AnswerStore::new(1 << 20),
            None,
            Some(&first),
        );
        assert_eq!(kept.guards, ["hkl", "zvcms", "wxcard"]);
        assert_eq!(kept.caches, ["zvcms.list_coupons", "wxcard.list_templates"]);
        // kept means the very same objects
        let slot =
            |g: &Generation, v: &str| g.plan.vendors.iter().find(|x| x.id == v).unwrap().slot;
        assert!(Arc::ptr_eq(
            &first.guards[slot(&first, "hkl")],
            &next.guards[slot(&next, "hkl")]
        ));
        assert!(!Arc::ptr_eq(
            &first.guards[slot(&first, "op")],
            &next.guards[slot(&next, "op")]
        ));
        // the same file again keeps everything
        let (_, all) = Generation::build(
            plan(&changed),
            Origin::default(),
            &AnswerStore::new(1 << 20),
            None,
            Some(&next),
        );
        assert_eq!(all.guards.len(), 4);
        assert_eq!(all.caches.len(), next.caches.iter().flatten().count());
    }
}
