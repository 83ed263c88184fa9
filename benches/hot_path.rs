//! Micro-benchmarks of the request hot path (`cargo bench --bench hot_path`).
//!
//! They go through the crate's public, high-level API only: the shipped routes.yaml is compiled
//! into a `Plan` and each operation's own compiled pieces (its items path and item mapper) are
//! run, so the numbers follow whatever the engine does internally. Signing blocks are the
//! `crypto` primitives chained exactly as routes.yaml's steps chain them. The whole cached
//! query runs in-process against the built-in sandbox vendors.
//!
//! Groups: `sign` (each signing/encryption block and each vendor's chain), `map` (a 100-item
//! vendor answer: parse, items, map every item, build coupons), `merge` (300 coupons from three
//! vendors: effective status, dedup, order), `serialize` (a 50-coupon answer), `cache` (key and
//! a fresh hit), `query` (a whole cached 3-vendor query, without HTTP).
use std::hint::black_box;

use coupon_gateway::app::{AppState, coupons};
use coupon_gateway::canonical::coupon::Coupon;
use coupon_gateway::canonical::merge::{Outcome, Source, VendorResult, merge};
use coupon_gateway::canonical::query::{CouponQuery, QueryLimits};
use coupon_gateway::crypto;
use coupon_gateway::embedded::{ROUTES_YAML, sandbox_plan};
use coupon_gateway::engine::cache::{AnswerStore, ResponseCache};
use coupon_gateway::engine::call::{CallInput, CallOutput};
use coupon_gateway::engine::packed::Packed;
use coupon_gateway::engine::plan::Plan;
use coupon_gateway::sandbox::{Sandbox, demo_query};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

#[path = "support/answers.rs"]
mod answers;
use answers::{cn_ms, hkl_answer, list_op, map_answer, op_answer, plan, zvcms_answer};

fn coupons_of(vendor: &str, out: &CallOutput) -> Vec<Coupon> {
    let vendor = vendor.into();
    out.rows
        .iter()
        .map(|row| Coupon::from_row(&vendor, row))
        .collect()
}

// ------------------------------------------------------------------ benches

fn sign(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign");
    // op: md5(secret + sorted query + body + secret) → lowercase hex
    let body = br#"{"OwnerType":1,"ChatId":"u00011234567890"}"#;
    let op_input = {
        let mut s =
            b"op-sandbox-secretapiVersion01client70374ddd0f3641368d419b2d93127b8fversion2.0"
                .to_vec();
        s.extend_from_slice(body);
        s.extend_from_slice(b"op-sandbox-secret");
        s
    };
    g.bench_function("md5", |b| b.iter(|| crypto::md5(black_box(&op_input))));
    let digest = crypto::md5(&op_input);
    g.bench_function("hex_lower", |b| {
        b.iter(|| crypto::hex_lower(black_box(&digest)))
    });
    g.bench_function("op_chain", |b| {
        b.iter(|| crypto::hex_lower(&crypto::md5(black_box(&op_input))))
    });
    // hkl: DES-ECB/PKCS#5 of the business JSON → uppercase hex
    let plain = br#"{"memberId":"K1H93QDKI00B7","platformId":"oEv-It_aoh7mzEinzyPhnR0-uVc41"}"#;
    g.bench_function("des_ecb_pkcs5", |b| {
        b.iter(|| crypto::des_ecb_encrypt(b"hklkey01", black_box(plain)))
    });
    let cipher = crypto::des_ecb_encrypt(b"hklkey01", plain).expect("8-byte key");
    g.bench_function("hex_upper", |b| {
        b.iter(|| crypto::hex_upper(black_box(&cipher)))
    });
    g.bench_function("hkl_chain", |b| {
        b.iter(|| {
            crypto::hex_upper(
                &crypto::des_ecb_encrypt(b"hklkey01", black_box(plain)).expect("8-byte key"),
            )
        })
    });
    // zvcms: percent-encode(base64(HMAC-SHA1(secret, sorted auth fields)))
    let msg = b"grantCode=782c281f62&nonce=658979&openId=6dc05b4ac175cf316d226252b05cf685&timestamp=1547186244";
    g.bench_function("hmac_sha1", |b| {
        b.iter(|| crypto::hmac_sha1(b"zv-sandbox-secret", black_box(msg)))
    });
    let tag = crypto::hmac_sha1(b"zv-sandbox-secret", msg);
    g.bench_function("base64", |b| b.iter(|| crypto::base64(black_box(&tag))));
    let b64 = crypto::base64(&tag);
    g.bench_function("percent_encode", |b| {
        b.iter(|| crypto::percent_encode(black_box(&b64)))
    });
    g.bench_function("zvcms_chain", |b| {
        b.iter(|| {
            crypto::percent_encode(&crypto::base64(&crypto::hmac_sha1(
                b"zv-sandbox-secret",
                black_box(msg),
            )))
        })
    });
    g.bench_function("hmac_sha256", |b| {
        b.iter(|| crypto::hmac_sha256(b"zv-sandbox-secret", black_box(msg)))
    });
    g.finish();
}

fn map(c: &mut Criterion) {
    let plan = plan();
    let mut g = c.benchmark_group("map_100_items");
    g.throughput(Throughput::Elements(100));
    for (vendor, body) in [
        ("op", op_answer(100)),
        ("hkl", hkl_answer(100)),
        ("zvcms", zvcms_answer(100)),
    ] {
        let op = list_op(&plan, vendor);
        let out = map_answer(op, &body);
        assert_eq!((out.rows.len(), out.dropped), (100, 0), "{vendor} maps");
        g.bench_function(format!("{vendor}/parse"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).expect("JSON"))
        });
        let projection = op.projection.as_ref().expect("plain paths only");
        g.bench_function(format!("{vendor}/parse_projected"), |b| {
            b.iter(|| projection.read(black_box(&body)).expect("JSON"))
        });
        g.bench_function(format!("{vendor}/parse_and_map"), |b| {
            b.iter(|| map_answer(op, black_box(&body)))
        });
        // what every request does again with a cached answer
        g.bench_function(format!("{vendor}/coupons_from_rows"), |b| {
            b.iter(|| coupons_of(vendor, black_box(&out)))
        });
    }
    g.finish();
}

fn three_vendors(plan: &Plan, per_vendor: usize) -> Vec<VendorResult> {
    [
        ("op", op_answer(per_vendor)),
        ("hkl", hkl_answer(per_vendor)),
        ("zvcms", zvcms_answer(per_vendor)),
    ]
    .into_iter()
    .map(|(vendor, body)| {
        let out = map_answer(list_op(plan, vendor), &body);
        let coupons = coupons_of(vendor, &out);
        VendorResult {
            source: Source {
                vendor: vendor.to_owned(),
                outcome: Outcome::Ok,
                count: coupons.len(),
                latency_ms: Some(1),
                cache: Some("hit"),
                error: None,
                dropped: 0,
                truncated: false,
            },
            coupons: std::sync::Arc::new(coupons),
        }
    })
    .collect()
}

fn clone_results(results: &[VendorResult]) -> Vec<VendorResult> {
    results
        .iter()
        .map(|r| VendorResult {
            source: r.source.clone(),
            coupons: r.coupons.clone(),
        })
        .collect()
}

fn query(limit: usize) -> CouponQuery {
    let body = json!({
        "member": {"ids": {"op": "u00011234567890", "hkl": "K1H93QDKI00B7", "zvcms": "383933091455959041"}},
        "limit": limit,
    });
    CouponQuery::parse(
        &serde_json::to_vec(&body).expect("serializes"),
        QueryLimits {
            default_limit: 100,
            max_limit: 500,
        },
        &["op", "hkl", "zvcms", "wxcard"],
        &coupon_gateway::canonical::cursor::CursorSigner::from_secret(b"bench"),
        jiff::Timestamp::now(),
    )
    .expect("a valid query")
}

fn merge_and_serialize(c: &mut Criterion) {
    let plan = plan();
    let now = jiff::Timestamp::from_millisecond(cn_ms(0) + 12 * 3_600_000).expect("in range");
    let results = three_vendors(&plan, 100);
    let q500 = query(500);
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(300));
    g.bench_function("300_coupons", |b| {
        b.iter_batched(
            || clone_results(&results),
            |r| merge(r, black_box(&q500), now),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("serialize");
    let (_, answer) = merge(clone_results(&results), &query(50), now);
    assert_eq!(answer.coupons.len(), 50);
    let bytes = serde_json::to_vec(&answer).expect("serializes").len();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("50_coupon_answer", |b| {
        b.iter(|| serde_json::to_vec(black_box(&answer)).expect("serializes"))
    });
    g.finish();
}

fn cache(c: &mut Criterion) {
    let plan = plan();
    let op = list_op(&plan, "op");
    let cfg = op.cache.as_ref().expect("op's list_coupons is cached");
    let input = CallInput {
        member_id: Some("u00011234567890".to_owned()),
        ..CallInput::default()
    };
    let mut g = c.benchmark_group("cache");
    g.bench_function("key", |b| {
        b.iter(|| ResponseCache::key(&op.vendor.id, &op.name, black_box(&input)))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = AnswerStore::new(plan.server.cache_max_bytes);
    let cache = ResponseCache::new(&store, cfg, &op.vendor.id, &op.name);
    let body = op_answer(11);
    let answer = map_answer(op, &body);
    // every answer a vendor gives is packed once for the store; a hit outside the decoded
    // tier unpacks it
    g.bench_function("pack_11_coupons", |b| {
        b.iter(|| Packed::of(black_box(&answer)))
    });
    let packed = Packed::of(&answer);
    g.bench_function("unpack_11_coupons", |b| {
        b.iter(|| black_box(&packed).unpack().expect("unpacks"))
    });
    let key = ResponseCache::key(&op.vendor.id, &op.name, &input);
    rt.block_on(async {
        let (r, _, _) = cache
            .get(key.clone(), false, async {
                Ok::<_, std::convert::Infallible>(answer)
            })
            .await;
        assert!(r.is_ok());
    });
    g.bench_function("hit", |b| {
        b.to_async(&rt).iter(|| async {
            let (r, lookup, _) = cache
                .get(
                    ResponseCache::key(&op.vendor.id, &op.name, black_box(&input)),
                    false,
                    async { Err::<CallOutput, _>("must not be called") },
                )
                .await;
            assert!(r.is_ok());
            lookup
        })
    });
    g.finish();
}

fn whole_query(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_sandbox, state) = rt.block_on(async {
        let sb = Sandbox::start().await.expect("sandbox starts");
        let plan = sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).expect("plan");
        (sb, AppState::new(plan))
    });
    let body = demo_query().into_bytes();
    let first = rt.block_on(coupons::query(&state, &body, false, None));
    let (_, reply) = first.expect("a valid query");
    assert!(reply.complete, "every sandbox vendor answers");
    let mut g = c.benchmark_group("query");
    g.bench_function("cached_3_vendors", |b| {
        b.to_async(&rt).iter(|| async {
            let (_, reply) = coupons::query(&state, black_box(&body), false, None)
                .await
                .expect("a valid query");
            reply.to_json()
        })
    });
    g.finish();
}

criterion_group!(benches, sign, map, merge_and_serialize, cache, whole_query);
criterion_main!(benches);
