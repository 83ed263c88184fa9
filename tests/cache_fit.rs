//! 10,000 members' answers from three vendors fit in a 64 MiB cache budget: the store keeps
//! answers packed (rows compressed by LZ4) and only the answers hits read lately decoded, in an
//! eighth of the budget. This fills a 64 MiB store with 30,000 answers shaped like the shipped
//! vendors' (each member's coupon ids and codes its own, random, as a vendor's are), then checks
//! that every one is still held and that the heap they take, measured by a counting allocator (so
//! this is the only test in its binary), stays within the budget.
use std::sync::Arc;

use coupon_gateway::canonical::schema::{COUPON, slot};
use coupon_gateway::engine::cache::{AnswerStore, ResponseCache};
use coupon_gateway::engine::call::CallOutput;
use serde_json::Value;

#[path = "../benches/support/answers.rs"]
mod answers;
#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const MEMBERS: usize = 10_000;
const BUDGET: u64 = 64 << 20;

/// `out` with its coupons' ids and codes replaced by random digits, so that no two members'
/// answers share them and compression finds no more repetition than a vendor's list has.
fn as_member(out: &CallOutput, vendor: &str, rng: &mut u64) -> CallOutput {
    let (id, code) = (slot(COUPON, "id").unwrap(), slot(COUPON, "code").unwrap());
    let mut digits = |n: usize| -> String {
        (0..n)
            .map(|_| {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                char::from(b'0' + (*rng % 10) as u8)
            })
            .collect()
    };
    let rows = out
        .rows
        .iter()
        .map(|row| {
            let mut row = row.clone();
            let c = digits(18);
            row[id] = Value::String(format!("{vendor}:{c}"));
            row[code] = Value::String(c);
            row
        })
        .collect();
    CallOutput {
        rows,
        dropped: out.dropped,
        pages: out.pages,
        truncated: out.truncated,
        bytes: out.bytes,
        page_info: out.page_info,
    }
}

#[test]
fn ten_thousand_members_of_three_vendors_fit_in_64_mib() {
    let plan = answers::plan();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let vendors = [
        ("op", answers::op_answer(11)),
        ("hkl", answers::hkl_answer(8)),
        ("zvcms", answers::zvcms_answer(8)),
    ];
    let mapped: Vec<(&str, CallOutput)> = vendors
        .iter()
        .map(|(v, body)| (*v, answers::map_answer(answers::list_op(&plan, v), body)))
        .collect();
    assert_eq!(
        mapped.iter().map(|(_, o)| o.rows.len()).sum::<usize>(),
        27,
        "27 coupons a member, as the sandbox's README member has"
    );
    let before = counting::live();
    let store = AnswerStore::new(BUDGET);
    let caches: Vec<ResponseCache> = vendors
        .iter()
        .map(|(v, _)| {
            let op = answers::list_op(&plan, v);
            ResponseCache::new(&store, op.cache.as_ref().expect("cached"), v, &op.name)
        })
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let held = rt.block_on(async {
        for m in 0..MEMBERS {
            for ((vendor, out), cache) in mapped.iter().zip(&caches) {
                let key: Arc<str> = Arc::from(format!(
                    "{vendor}\u{1f}list_coupons\u{1f}member{m:08}\u{1f}\u{1f}[]"
                ));
                let answer = as_member(out, vendor, &mut rng);
                let (r, _, _) = cache
                    .get(key, false, async { Ok::<_, String>(answer) })
                    .await;
                assert_eq!(r.expect("stored").rows.len(), out.rows.len());
            }
        }
        (store.answers_held().await, store.weighed_size().await)
    });
    let (held, weighed) = held;
    let heap = counting::live() - before;
    println!(
        "{held} answers held, {:.1} MiB of heap ({:.0} bytes a member), weighed {:.1} MiB",
        heap as f64 / f64::from(1 << 20),
        heap as f64 / MEMBERS as f64,
        weighed as f64 / f64::from(1 << 20),
    );
    assert_eq!(
        held,
        3 * MEMBERS as u64,
        "every member's three answers are still in the store"
    );
    assert!(
        heap <= BUDGET as isize,
        "the store holds {heap} bytes of heap over a budget of {BUDGET}"
    );
    // and what is held reads back from its packed form (the last member: the first one's
    // answers may be past their ttl by now, debug builds being slow)
    rt.block_on(async {
        for ((vendor, out), cache) in mapped.iter().zip(&caches) {
            let key: Arc<str> = Arc::from(format!(
                "{vendor}\u{1f}list_coupons\u{1f}member{:08}\u{1f}\u{1f}[]",
                MEMBERS - 1
            ));
            let (r, lookup, _) = cache
                .get(key, false, async {
                    Err::<CallOutput, _>("not asked again")
                })
                .await;
            assert_eq!(lookup, coupon_gateway::engine::cache::Lookup::Hit);
            assert_eq!(r.expect("held").rows.len(), out.rows.len());
        }
    });
}
