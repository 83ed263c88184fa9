//! The answer cache bounds memory by weighing each entry with an estimate of what it holds
//! (the packed answer and, in the decoded tier, `Cached::weight`, each with a fixed overhead
//! per entry). This measures the heap the entries really take — with a counting allocator, so
//! it is the only test in its binary — and checks the estimate against it, for answers shaped
//! like each shipped vendor's, each stored and then read again (so held packed and decoded).
//! `tests/cache_fit.rs` measures the packed side at scale.
use std::sync::Arc;

use coupon_gateway::engine::cache::{AnswerStore, ResponseCache};
use coupon_gateway::engine::call::CallOutput;

#[path = "../benches/support/answers.rs"]
mod answers;
#[path = "support/counting.rs"]
mod counting;

use counting::live;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn each_entry_weighs_within_a_third_of_the_heap_it_holds() {
    let plan = answers::plan();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    const N: usize = 500;
    for (vendor, body) in [
        ("op", answers::op_answer(11)),
        ("hkl", answers::hkl_answer(8)),
        ("zvcms", answers::zvcms_answer(8)),
        ("op", answers::op_answer(0)),
    ] {
        let op = answers::list_op(&plan, vendor);
        let cfg = op.cache.clone().expect("list_coupons is cached");
        let store = AnswerStore::new(1 << 30);
        // as the gateway builds a coupon list's cache: its answers opened into coupons
        let cache = ResponseCache::new(&store, &cfg, vendor, &op.name)
            .with_records(coupon_gateway::app::coupons::coupons_out_of, vendor);
        let keys: Vec<Arc<str>> = (0..N)
            .map(|i| {
                Arc::from(format!(
                    "{vendor}\u{1f}list_coupons\u{1f}member{i:06}\u{1f}\u{1f}[]"
                ))
            })
            .collect();
        // one entry first, so that the store's own structures exist before measuring
        rt.block_on(cache.get(Arc::from("warm"), false, async {
            Ok::<_, String>(CallOutput::default())
        }))
        .0
        .expect("stored");
        let before = live();
        // the rows, as the pipeline hands them to the cache
        let outs: Vec<CallOutput> = (0..N).map(|_| answers::map_answer(op, &body)).collect();
        let weighed = rt.block_on(async {
            for (key, out) in keys.iter().zip(outs) {
                let (cached, _, _) = cache
                    .get_cached(key.clone(), false, async { Ok::<_, String>(out) })
                    .await;
                let cached = cached.expect("stored");
                assert!(cached.coupons.get().is_some(), "built when stored");
                assert!(cached.answer.rows.is_empty(), "and the rows used up");
            }
            // read again: a hit opens the packed answer into the decoded tier
            for key in &keys {
                let (cached, _, _) = cache
                    .get_cached(key.clone(), false, async {
                        Err::<CallOutput, String>("a hit does not ask the vendor".into())
                    })
                    .await;
                let cached = cached.expect("a hit");
                assert!(cached.coupons.get().is_some(), "built when opened");
            }
            store.weighed_size().await
        });
        let held = (live() - before) as f64 / N as f64;
        // the keys were made before measuring but are held by the store
        let held = held + keys[1].len() as f64 + 16.0;
        let weight = weighed as f64 / (N + 1) as f64;
        let ratio = weight / held;
        println!(
            "{vendor} ({} bytes from the vendor): {held:.0} bytes held per entry, weighed {weight:.0} ({ratio:.2})",
            body.len()
        );
        assert!(
            (0.75..=1.33).contains(&ratio),
            "{vendor}: an entry holds {held:.0} bytes of heap but weighs {weight:.0}"
        );
    }
}
