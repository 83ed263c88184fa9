//! The sandbox data set: every member, coupon, gift package and template the simulators
//! serve. It is deterministic except for dates, which are offsets in whole calendar days
//! (UTC+08:00) from the day the [`Sandbox`](super::Sandbox) was started ("day 0"), so that
//! effective-status logic always sees coupons that are currently valid, not yet valid and
//! already past. Every date bound is at least one whole day away from "now".
//!
//! Conventions used in the tables: a start offset `s` means `day(s) 00:00:00` UTC+08:00, an
//! end offset `e` means `day(e) 23:59:59` UTC+08:00 (for hkl: the whole day `e`).
//!
//! # op (`OpenAPI v2`) — coupons by chat id
//!
//! `_id` below is `u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f00NN` (NN as listed). `useStatus`: 1 not
//! yet valid, 2 usable, 3 frozen, 4 used, 5 expired, 6 closed. `ticketType` 1 = amount off in
//! fen, 2 = discount ("折" figure). Dates "ms" are epoch milliseconds, "str" are `yyyy-MM-dd`
//! strings; "delay" coupons have `useStartTime`/`useEndTime` null and are valid from
//! `createTime` (day `c` 10:00:00 UTC+08:00) for `delayDay` × 24 h. `createTime` is day `c`
//! 10:00:00 UTC+08:00 for every coupon, `updateTime` one hour later. Used coupons (status 4)
//! carry an `orderId` (`O` + `userTicketCode`) and a `verificationId`; others have them null.
//!
//! | chat id | NN | useStatus | ticketType | ticketAmount | orderAmount | maxAmount | dates | c | effective today |
//! |---|---|---|---|---|---|---|---|---|---|
//! | `u00011234567890` ([`OP_MEMBER`]) | 01 | 2 | 1 | 500 | 3000 | 500 | ms −10 … +30 | −12 | valid |
//! | | 02 | 2 | 2 | 8.5 | 5000 | 2000 | ms +5 … +40 | −2 | not yet valid |
//! | | 03 | 2 | 1 | 1000 | 10000 | 1000 | ms −40 … −3 | −45 | past |
//! | | 04 | 2 | 2 | 5 | 0 | 3000 | str −7 … +14 | −8 | valid |
//! | | 05 | 2 | 1 | 300 | 1500 | 300 | delay 30 d | −5 | valid until day 25 10:00 |
//! | | 06 | 2 | 1 | 200 | 0 | 200 | delay 7 d | −20 | past (ended day −13 10:00) |
//! | | 07 | 1 | 1 | 2000 | 20000 | 2000 | ms +3 … +33 | −1 | not yet valid |
//! | | 08 | 3 | 1 | 800 | 4000 | 800 | ms −10 … +20 | −11 | frozen |
//! | | 09 | 4 | 2 | 9 | 2000 | 1000 | ms −30 … +30 | −31 | used |
//! | | 10 | 5 | 1 | 1500 | 6000 | 1500 | ms −60 … −31 | −61 | expired |
//! | | 11 | 6 | 2 | 7.5 | 3000 | 1500 | str −15 … +45 | −16 | closed |
//! | `u00019876543210` ([`OP_MEMBER2`]) | 12 | 2 | 1 | 1000 | 5000 | 1000 | ms −2 … +28 | −3 | valid |
//! | | 13 | 4 | 1 | 500 | 0 | 500 | ms −20 … −5 | −21 | used |
//!
//! Any other chat id answers `data: []`. `productKinds`: coupons 01, 03, 05, 08, 10, 12 are
//! 咖啡 (`aea513510de24ca5aa03193411ef74f9`); 02, 06, 09, 13 are 打车
//! (`5c1f0e8a9b2d4c6e8f0a1b3c5d7e9f10`); 04, 07, 11 are both.
//!
//! # op — gift packages
//!
//! | package id | useStatus | sendStatus | receive window | tickets (type, amount, count, dates, delayDay) |
//! |---|---|---|---|---|
//! | `1bfb390cc3144de3b45c662047693f8e` ([`OP_PACKAGE`]) | 1 | 5 | ms −10 … +50 | 1/500 ×12 ms −10 … +50 delay 10; 2/8.5 ×5 ms −10 … +50; 1/1000 ×2 ms +7 … +60 |
//! | `2c2aacf0a7e54b34ab18b64e1a14f4a4` ([`OP_PACKAGE_DATES`]) | 1 | 4 | str −3 … +27 | 1/300 ×3 str −3 … +30; 2/9.5 ×1 str +1 … +31 |
//! | `7d0c1e55a2b34f6d9e8f00112233aabb` ([`OP_PACKAGE_DELAY`]) | 1 | 5 | ms −1 … +89 | 1/1000 ×1 no dates, delay 15 |
//! | `9e8d7c6b5a4f4e3d8c2b1a0f9e8d7c6b` ([`OP_PACKAGE_EXPIRED`]) | 2 | 6 | ms −90 … −30 | 1/2000 ×1 ms −90 … −20 |
//!
//! Any other package id answers `{"code":404,"message":"礼包不存在","data":null}`.
//!
//! # hkl — coupons by member id / platform id (openid)
//!
//! `status` 0 unused, 1 used, 2 expired. `cpnType` is always `"0"`. Dates are `yyyy-MM-dd`
//! (valid from the start of `begDate` to the end of `endDate`).
//!
//! | mmbid / openid | id | cpnCode | cpnid | status | begDate … endDate | timeLimit | weekLimit | picUrl | effective today |
//! |---|---|---|---|---|---|---|---|---|---|
//! | `K1H93QDKI00B7` / `oEv-It_aoh7mzEinzyPhnR0-uVc41` ([`HKL_MEMBER`], [`HKL_OPENID`]) | `K1H93QDM600F0` | 7270000006699 | H3UA24SI6830 | 0 | −10 … +30 | | | relative | valid |
//! | | `K1H93QDLQ00E1` | 7270200006680 | H3UA24SI6830 | 0 | +5 … +40 | | | relative | not yet valid |
//! | | `K1H93QDLD00D5` | 7270300006672 | H3UA24SI6830 | 0 | −60 … −5 | | | relative | past |
//! | | `K1H93QDO800J7` | 6838000000065 | JCUH1EF5R58G8 | 0 | −10 … +30 | | `1,2,3,4,5,6,7` | absolute `https://` | valid |
//! | | `K1H93QDMO00G0` | 7280500008017 | H3UA24SI6831 | 0 | −10 … +30 | `11:00-14:00` | `1,2,3,4,5` | relative | valid (time/week limited) |
//! | | `K1H93QDNN00I9` | 7290100000229 | H3UA24SI6832 | 1 | −20 … +10 | `11:00-14:00` | | relative | used |
//! | | `K1H93QDOM00K9` | 6838900000073 | JCUH1EF5R58G8 | 2 | −90 … −30 | | `1,2,3,4,5,6,7` | relative | expired |
//! | | `K1H93QDN400H6` | 7280700008022 | H3UA24SI6831 | 0 | −3 … +3 | `11:00-14:00` | `6,7` | relative | valid (time/week limited) |
//! | `K1H93QDKI00C8` / `oEv-It_bq3n8xYz2LmPq7Rs1-tUv02` ([`HKL_MEMBER2`], [`HKL_OPENID2`]) | `K1H93QDP100L1` | 7270000007001 | H3UA24SI6840 | 0 | −2 … +28 | | | relative | valid |
//! | | `K1H93QDP200L2` | 7270000007002 | H3UA24SI6840 | 1 | −40 … −10 | | | relative | used |
//!
//! `useTime` is `day(n) 12:15:00` for the used coupons (`K1H93QDNN00I9`: day −3,
//! `K1H93QDP200L2`: day −12) and `""` otherwise; `cacStatus` is −1 for the three lunch coupons
//! (`H3UA24SI6831`/`H3UA24SI6832`), 0 otherwise. Any other member answers an empty `list`.
//!
//! # zvcms — coupons by customer id
//!
//! `useStatus` 0 unused, 1 redeemed, 2 frozen, 6 expired, 7 deleted. `beginAt` is day `s`
//! 00:00:00 and `endAt` day `e` 23:59:59 (UTC+08:00). "str" means the number is sent as a
//! JSON string (`"0"`), "num" as a JSON number. See [`ZV_COUPONS`] for the exact values of
//! every field (`couponId`, `title`, `extra`, …).
//!
//! | customerId | cardId | couponType | useStatus | templateId | beginAt … endAt | effective today |
//! |---|---|---|---|---|---|---|
//! | `383933091455959041` ([`ZVCMS_MEMBER`], `status` boolean `true`, `data` always an array unless `cardId` is given) | `390913445498200065` | 0 (str) | 0 (str) | 951 (str) | −10 … +30 | valid |
//! | | `390913445498200066` | 2 (num) | 0 (num) | 895 (num) | +5 … +35 | not yet valid |
//! | | `390913445498200067` | 3 (str) | 0 (str) | 896 (num) | −40 … −2 | past |
//! | | `390913445498200068` | 4 (str) | 1 (str) | 897 (str) | −20 … +20 | redeemed |
//! | | `390913445498200069` | 5 (num) | 2 (str) | 898 (num) | −5 … +25 | frozen |
//! | | `390913445498200070` | 6 (str) | 6 (str) | 899 (str) | −60 … −30 | expired |
//! | | `390913445498200071` | 7 (str) | 7 (num) | 900 (num) | −10 … +10 | deleted |
//! | | `390913445498200072` | 8 (str) | 0 (str) | 901 (str) | −2 … +2 | valid |
//! | `401588390113411073` ([`ZVCMS_SINGLE`], `status` string `"true"`, a single coupon is sent as an object) | `401588390180519937` | 0 (str) | 0 (str) | 960 (str) | −3 … +27 | valid |
//! | `401588390113411099` ([`ZVCMS_NONE`]) | — | | | | | answers `20004` |
//!
//! `createdAt` is day `min(s, 0) − 1` 17:10:28; `updatedAt` equals it for unused coupons, is
//! day `e + 1` 00:00:05 for expired ones (6) and day −1 15:20:00 otherwise. `channel` is always
//! `naixue`. Any other customer answers `20004` too.
//!
//! # wxcard — seeded templates
//!
//! | id | ticket_type | card_type | title | begin_at … end_at | sync | status | created_at |
//! |---|---|---|---|---|---|---|---|
//! | 1 | DISCOUNT | `discount_card` | 海底捞8折券 (discount 20 % off) | −30 … +60 | 1 | 0 | day −31 10:10:10 UTC |
//! | 2 | CASH | `cash_card` | 满100减20代金券 (reduce_money 2000, least_cost 10000) | −10 … +20 | 0 | 0 | day −12 10:10:10 UTC |
//! | 3 | GROUPON | `groupon_card` | 双人套餐团购券 | +5 … +35 | 0 | 0 | day −3 10:10:10 UTC |
//! | 4 | GIFT | `gift_card` | 生日礼品券 | −90 … −30 | 1 | 1 | day −91 10:10:10 UTC |
//!
//! New templates get ids 5, 6, ….
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};

/// op chat id with eleven coupons (every `useStatus`, both `ticketType`s, all date forms).
pub const OP_MEMBER: &str = "u00011234567890";
/// op chat id with two coupons.
pub const OP_MEMBER2: &str = "u00019876543210";
/// op gift package from the kit (epoch-millisecond dates, one ticket with `delayDay` too).
pub const OP_PACKAGE: &str = "1bfb390cc3144de3b45c662047693f8e";
/// op gift package with `yyyy-MM-dd` string dates.
pub const OP_PACKAGE_DATES: &str = "2c2aacf0a7e54b34ab18b64e1a14f4a4";
/// op gift package whose only ticket has `delayDay` and no use dates.
pub const OP_PACKAGE_DELAY: &str = "7d0c1e55a2b34f6d9e8f00112233aabb";
/// op gift package that has expired (`useStatus` 2, receive window in the past).
pub const OP_PACKAGE_EXPIRED: &str = "9e8d7c6b5a4f4e3d8c2b1a0f9e8d7c6b";

/// hkl member id with eight coupons.
pub const HKL_MEMBER: &str = "K1H93QDKI00B7";
/// The platform id (WeChat openid) of [`HKL_MEMBER`].
pub const HKL_OPENID: &str = "oEv-It_aoh7mzEinzyPhnR0-uVc41";
/// hkl member id with two coupons.
pub const HKL_MEMBER2: &str = "K1H93QDKI00C8";
/// The platform id of [`HKL_MEMBER2`].
pub const HKL_OPENID2: &str = "oEv-It_bq3n8xYz2LmPq7Rs1-tUv02";

/// zvcms customer with eight coupons (`status` sent as boolean, `data` as an array).
pub const ZVCMS_MEMBER: &str = "383933091455959041";
/// zvcms customer with exactly one coupon (`status` sent as `"true"`, `data` as an object).
pub const ZVCMS_SINGLE: &str = "401588390113411073";
/// zvcms customer without coupons (answers `20004`).
pub const ZVCMS_NONE: &str = "401588390113411099";

/// China Standard Time, UTC+08:00 without daylight saving.
pub fn cn_tz() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

/// Today's calendar day in UTC+08:00.
pub fn today() -> Date {
    Timestamp::now().to_zoned(cn_tz()).date()
}

/// Today in UTC+08:00 plus `offset` days.
pub fn day(offset: i64) -> Date {
    day_from(today(), offset)
}

/// `base` plus `offset` days (saturating at jiff's range, which the data never reaches).
pub fn day_from(base: Date, offset: i64) -> Date {
    base.checked_add(offset.days()).unwrap_or(base)
}

/// Epoch milliseconds of `d` at `h:m:s` UTC+08:00.
pub fn cn_millis(d: Date, h: i8, m: i8, s: i8) -> i64 {
    d.at(h, m, s, 0)
        .to_zoned(cn_tz())
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(0)
}

/// `yyyy-MM-dd`.
pub fn ymd(d: Date) -> String {
    d.strftime("%Y-%m-%d").to_string()
}

/// `yyyy-MM-dd HH:mm:ss` (the caller decides the zone the wall clock is in).
pub fn ymd_hms(d: Date, h: i8, m: i8, s: i8) -> String {
    d.at(h, m, s, 0).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

// ---------------------------------------------------------------------------------------------
// op

/// How an op date is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpTime {
    /// Epoch milliseconds; start bounds are 00:00:00, end bounds 23:59:59 UTC+08:00 of day `n`.
    Millis(i64),
    /// A `yyyy-MM-dd` string of day `n`.
    Date(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct OpCoupon {
    pub chat_id: &'static str,
    /// `_id`
    pub id: &'static str,
    pub user_ticket_code: &'static str,
    pub ticket_code: &'static str,
    pub ticket_name: &'static str,
    pub ticket_package_code: &'static str,
    pub use_status: u8,
    pub ticket_type: u8,
    /// fen for type 1, the "折" figure for type 2
    pub ticket_amount: f64,
    pub order_amount: i64,
    pub max_amount: i64,
    pub use_start: Option<OpTime>,
    pub use_end: Option<OpTime>,
    pub delay_day: Option<i64>,
    /// `createTime` is this day at 10:00:00 UTC+08:00; `updateTime` an hour later.
    pub created: i64,
    pub product_kinds: &'static [(&'static str, &'static str)],
}

pub const KIND_COFFEE: (&str, &str) = ("aea513510de24ca5aa03193411ef74f9", "咖啡");
pub const KIND_TAXI: (&str, &str) = ("5c1f0e8a9b2d4c6e8f0a1b3c5d7e9f10", "打车");
const COFFEE: &[(&str, &str)] = &[KIND_COFFEE];
const TAXI: &[(&str, &str)] = &[KIND_TAXI];
const BOTH: &[(&str, &str)] = &[KIND_COFFEE, KIND_TAXI];

/// Channels every op coupon can be used in (`useChannels` objects in coupon lists).
pub const OP_CHANNELS: &[(&str, &str)] = &[
    ("b1784cf9aca34a4aae341752a4179842", "NewWear微信公共号"),
    ("bc91b9499d304c638bc9497eb256e8e8", "找我 微信公众号"),
];

#[allow(clippy::too_many_arguments)]
const fn op(
    chat_id: &'static str,
    id: &'static str,
    codes: (&'static str, &'static str),
    ticket_name: &'static str,
    use_status: u8,
    ticket_type: u8,
    ticket_amount: f64,
    amounts: (i64, i64),
    dates: (Option<OpTime>, Option<OpTime>, Option<i64>),
    created: i64,
    product_kinds: &'static [(&'static str, &'static str)],
) -> OpCoupon {
    OpCoupon {
        chat_id,
        id,
        user_ticket_code: codes.0,
        ticket_code: codes.1,
        ticket_name,
        ticket_package_code: "7380348447",
        use_status,
        ticket_type,
        ticket_amount,
        order_amount: amounts.0,
        max_amount: amounts.1,
        use_start: dates.0,
        use_end: dates.1,
        delay_day: dates.2,
        created,
        product_kinds,
    }
}

use OpTime::{Date as D, Millis as M};

#[rustfmt::skip]
pub const OP_COUPONS: &[OpCoupon] = &[
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0001", ("742026513401", "046870433401"),
        "咖啡满30减5元券", 2, 1, 500.0, (3000, 500), (Some(M(-10)), Some(M(30)), None), -12, COFFEE),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0002", ("742026513402", "046870433402"),
        "打车8.5折券", 2, 2, 8.5, (5000, 2000), (Some(M(5)), Some(M(40)), None), -2, TAXI),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0003", ("742026513403", "046870433403"),
        "咖啡满100减10元券", 2, 1, 1000.0, (10000, 1000), (Some(M(-40)), Some(M(-3)), None), -45, COFFEE),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0004", ("742026513404", "046870433404"),
        "全品类5折券", 2, 2, 5.0, (0, 3000), (Some(D(-7)), Some(D(14)), None), -8, BOTH),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0005", ("742026513405", "046870433405"),
        "咖啡3元券(领取后30天有效)", 2, 1, 300.0, (1500, 300), (None, None, Some(30)), -5, COFFEE),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0006", ("742026513406", "046870433406"),
        "打车2元券(领取后7天有效)", 2, 1, 200.0, (0, 200), (None, None, Some(7)), -20, TAXI),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0007", ("742026513407", "046870433407"),
        "满200减20元券", 1, 1, 2000.0, (20000, 2000), (Some(M(3)), Some(M(33)), None), -1, BOTH),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0008", ("742026513408", "046870433408"),
        "咖啡满40减8元券", 3, 1, 800.0, (4000, 800), (Some(M(-10)), Some(M(20)), None), -11, COFFEE),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0009", ("742026513409", "046870433409"),
        "打车9折券", 4, 2, 9.0, (2000, 1000), (Some(M(-30)), Some(M(30)), None), -31, TAXI),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0010", ("742026513410", "046870433410"),
        "咖啡满60减15元券", 5, 1, 1500.0, (6000, 1500), (Some(M(-60)), Some(M(-31)), None), -61, COFFEE),
    op(OP_MEMBER, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0011", ("742026513411", "046870433411"),
        "全品类7.5折券", 6, 2, 7.5, (3000, 1500), (Some(D(-15)), Some(D(45)), None), -16, BOTH),
    op(OP_MEMBER2, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0012", ("742026513412", "046870433412"),
        "咖啡满50减10元券", 2, 1, 1000.0, (5000, 1000), (Some(M(-2)), Some(M(28)), None), -3, COFFEE),
    op(OP_MEMBER2, "u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f0013", ("742026513413", "046870433413"),
        "打车5元券", 4, 1, 500.0, (0, 500), (Some(M(-20)), Some(M(-5)), None), -21, TAXI),
];

/// The op `userId`/`ownerId` behind a chat id.
pub fn op_user_id(chat_id: &str) -> &'static str {
    match chat_id {
        OP_MEMBER => "u0001dfae31623f9a499baac77e8709910c42",
        OP_MEMBER2 => "u00017b2e94c1a35d4f0e8c6a2b9d1f3e5a77",
        _ => "",
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OpPackageTicket {
    pub ticket_name: &'static str,
    pub ticket_code: &'static str,
    pub ticket_type: u8,
    pub count: i64,
    pub ticket_amount: f64,
    pub use_start: Option<OpTime>,
    pub use_end: Option<OpTime>,
    pub product_kinds: &'static [&'static str],
    pub order_amount: i64,
    pub max_amount: i64,
    pub delay_day: Option<i64>,
    pub theme_id: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct OpPackage {
    pub id: &'static str,
    pub code: &'static str,
    pub name: &'static str,
    pub alias: &'static str,
    /// 1 active, 2 expired
    pub use_status: u8,
    /// 1 pending review … 5 published, 6 closed, 7 deleted
    pub send_status: u8,
    pub receive_start: OpTime,
    pub receive_end: OpTime,
    pub total_count_limit: i64,
    pub personal_count_limit: i64,
    /// `createTime` is this day at 09:30:00 UTC+08:00.
    pub created: i64,
    pub tickets: &'static [OpPackageTicket],
}

pub const OP_PACKAGES: &[OpPackage] = &[
    OpPackage {
        id: OP_PACKAGE,
        code: "7480648244",
        name: "新用户礼包",
        alias: "新用户专享 优惠券礼包",
        use_status: 1,
        send_status: 5,
        receive_start: M(-10),
        receive_end: M(50),
        total_count_limit: 100,
        personal_count_limit: 2,
        created: -12,
        tickets: &[
            OpPackageTicket {
                ticket_name: "新用户5元券",
                ticket_code: "042870246485",
                ticket_type: 1,
                count: 12,
                ticket_amount: 500.0,
                use_start: Some(M(-10)),
                use_end: Some(M(50)),
                product_kinds: &["打车", "咖啡"],
                order_amount: 1000,
                max_amount: 10000,
                delay_day: Some(10),
                theme_id: "9368f91573a84f5a84f130f4f9d92c5a",
            },
            OpPackageTicket {
                ticket_name: "新用户8.5折券",
                ticket_code: "840870246480",
                ticket_type: 2,
                count: 5,
                ticket_amount: 8.5,
                use_start: Some(M(-10)),
                use_end: Some(M(50)),
                product_kinds: &["咖啡"],
                order_amount: 0,
                max_amount: 2000,
                delay_day: None,
                theme_id: "3397716e4d814d75928c826b93fbc80b",
            },
            OpPackageTicket {
                ticket_name: "新用户满100减10元券",
                ticket_code: "641870246481",
                ticket_type: 1,
                count: 2,
                ticket_amount: 1000.0,
                use_start: Some(M(7)),
                use_end: Some(M(60)),
                product_kinds: &["打车"],
                order_amount: 10000,
                max_amount: 1000,
                delay_day: None,
                theme_id: "11d63189531843cc915904b5caaa73e5",
            },
        ],
    },
    OpPackage {
        id: OP_PACKAGE_DATES,
        code: "7480648245",
        name: "测试礼包",
        alias: "get 优惠券   测试",
        use_status: 1,
        send_status: 4,
        receive_start: D(-3),
        receive_end: D(27),
        total_count_limit: 50,
        personal_count_limit: 1,
        created: -4,
        tickets: &[
            OpPackageTicket {
                ticket_name: "测试优惠券3元",
                ticket_code: "042870246490",
                ticket_type: 1,
                count: 3,
                ticket_amount: 300.0,
                use_start: Some(D(-3)),
                use_end: Some(D(30)),
                product_kinds: &["咖啡"],
                order_amount: 0,
                max_amount: 300,
                delay_day: None,
                theme_id: "7d3a1c9e5b2f4a6c8e0d1f3b5a7c9e11",
            },
            OpPackageTicket {
                ticket_name: "测试优惠券9.5折",
                ticket_code: "042870246491",
                ticket_type: 2,
                count: 1,
                ticket_amount: 9.5,
                use_start: Some(D(1)),
                use_end: Some(D(31)),
                product_kinds: &["打车", "咖啡"],
                order_amount: 1000,
                max_amount: 500,
                delay_day: None,
                theme_id: "7d3a1c9e5b2f4a6c8e0d1f3b5a7c9e12",
            },
        ],
    },
    OpPackage {
        id: OP_PACKAGE_DELAY,
        code: "7480648246",
        name: "领取即用礼包",
        alias: "领取后15天有效",
        use_status: 1,
        send_status: 5,
        receive_start: M(-1),
        receive_end: M(89),
        total_count_limit: 1000,
        personal_count_limit: 1,
        created: -2,
        tickets: &[OpPackageTicket {
            ticket_name: "领取后15天有效10元券",
            ticket_code: "042870246492",
            ticket_type: 1,
            count: 1,
            ticket_amount: 1000.0,
            use_start: None,
            use_end: None,
            product_kinds: &["咖啡"],
            order_amount: 5000,
            max_amount: 1000,
            delay_day: Some(15),
            theme_id: "7d3a1c9e5b2f4a6c8e0d1f3b5a7c9e13",
        }],
    },
    OpPackage {
        id: OP_PACKAGE_EXPIRED,
        code: "7480648247",
        name: "国庆礼包",
        alias: "国庆专享(已结束)",
        use_status: 2,
        send_status: 6,
        receive_start: M(-90),
        receive_end: M(-30),
        total_count_limit: 500,
        personal_count_limit: 1,
        created: -95,
        tickets: &[OpPackageTicket {
            ticket_name: "国庆20元券",
            ticket_code: "042870246493",
            ticket_type: 1,
            count: 1,
            ticket_amount: 2000.0,
            use_start: Some(M(-90)),
            use_end: Some(M(-20)),
            product_kinds: &["打车"],
            order_amount: 10000,
            max_amount: 2000,
            delay_day: None,
            theme_id: "7d3a1c9e5b2f4a6c8e0d1f3b5a7c9e14",
        }],
    },
];

// ---------------------------------------------------------------------------------------------
// hkl

#[derive(Debug, Clone, Copy)]
pub struct HklCoupon {
    pub mmbid: &'static str,
    pub openid: &'static str,
    pub id: &'static str,
    pub cpn_code: &'static str,
    pub cpn_name: &'static str,
    pub cpnid: &'static str,
    /// 0 unused, 1 used, 2 expired
    pub status: u8,
    pub beg: i64,
    pub end: i64,
    pub time_limit: &'static str,
    pub week_limit: &'static str,
    pub pic_url: &'static str,
    pub sell_scene: &'static str,
    pub cac_status: i64,
    /// For used coupons: `useTime` is this day at 12:15:00 UTC+08:00.
    pub used: Option<i64>,
}

const PIC_30: &str = "/upload_img/20170718/170718_2021456830.jpg";
const PIC_31: &str = "/upload_img/20170718/170718_2021456831.jpg";
const PIC_32: &str = "/upload_img/20170718/170718_2021456832.jpg";
const PIC_HKLAI: &str = "/upload_img/common/hklai.jpg";

#[allow(clippy::too_many_arguments)]
const fn hkl(
    member: (&'static str, &'static str),
    id: &'static str,
    cpn_code: &'static str,
    cpn_name: &'static str,
    cpnid: &'static str,
    status: u8,
    dates: (i64, i64),
    limits: (&'static str, &'static str),
    pic_url: &'static str,
    cac_status: i64,
    used: Option<i64>,
) -> HklCoupon {
    HklCoupon {
        mmbid: member.0,
        openid: member.1,
        id,
        cpn_code,
        cpn_name,
        cpnid,
        status,
        beg: dates.0,
        end: dates.1,
        time_limit: limits.0,
        week_limit: limits.1,
        pic_url,
        sell_scene: "reg",
        cac_status,
        used,
    }
}

const H1: (&str, &str) = (HKL_MEMBER, HKL_OPENID);
const H2: (&str, &str) = (HKL_MEMBER2, HKL_OPENID2);

#[rustfmt::skip]
pub const HKL_COUPONS: &[HklCoupon] = &[
    hkl(H1, "K1H93QDM600F0", "7270000006699", "新会员20元全场券", "H3UA24SI6830", 0,
        (-10, 30), ("", ""), PIC_30, 0, None),
    hkl(H1, "K1H93QDLQ00E1", "7270200006680", "新会员20元全场券", "H3UA24SI6830", 0,
        (5, 40), ("", ""), PIC_30, 0, None),
    hkl(H1, "K1H93QDLD00D5", "7270300006672", "新会员20元全场券", "H3UA24SI6830", 0,
        (-60, -5), ("", ""), PIC_30, 0, None),
    hkl(H1, "K1H93QDO800J7", "6838000000065", "新会员甜饮品8元优惠券", "JCUH1EF5R58G8", 0,
        (-10, 30), ("", "1,2,3,4,5,6,7"), "https://img.houcaller.com/upload_img/common/hklai.jpg", 0, None),
    hkl(H1, "K1H93QDMO00G0", "7280500008017", "新会员22元午餐欢聚券", "H3UA24SI6831", 0,
        (-10, 30), ("11:00-14:00", "1,2,3,4,5"), PIC_31, -1, None),
    hkl(H1, "K1H93QDNN00I9", "7290100000229", "新会员8元午餐优惠券", "H3UA24SI6832", 1,
        (-20, 10), ("11:00-14:00", ""), PIC_32, -1, Some(-3)),
    hkl(H1, "K1H93QDOM00K9", "6838900000073", "新会员甜饮品8元优惠券", "JCUH1EF5R58G8", 2,
        (-90, -30), ("", "1,2,3,4,5,6,7"), PIC_HKLAI, 0, None),
    hkl(H1, "K1H93QDN400H6", "7280700008022", "新会员22元午餐欢聚券", "H3UA24SI6831", 0,
        (-3, 3), ("11:00-14:00", "6,7"), PIC_31, -1, None),
    hkl(H2, "K1H93QDP100L1", "7270000007001", "生日礼10元券", "H3UA24SI6840", 0,
        (-2, 28), ("", ""), "/upload_img/20200101/200101_birthday.jpg", 0, None),
    hkl(H2, "K1H93QDP200L2", "7270000007002", "生日礼10元券", "H3UA24SI6840", 1,
        (-40, -10), ("", ""), "/upload_img/20200101/200101_birthday.jpg", 0, Some(-12)),
];

// ---------------------------------------------------------------------------------------------
// zvcms

/// A number as the zvcms wire sends it: a JSON string (`"0"`) or a JSON number (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZvNum {
    Str(i64),
    Num(i64),
}

impl ZvNum {
    pub fn value(self) -> i64 {
        match self {
            ZvNum::Str(v) | ZvNum::Num(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ZvCoupon {
    pub customer_id: &'static str,
    pub card_id: &'static str,
    pub coupon_id: &'static str,
    pub title: &'static str,
    pub coupon_type: ZvNum,
    pub use_status: ZvNum,
    pub template_id: ZvNum,
    /// `beginAt` = day `begin` 00:00:00 UTC+08:00
    pub begin: i64,
    /// `endAt` = day `end` 23:59:59 UTC+08:00
    pub end: i64,
    pub channel: &'static str,
    pub extra: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct ZvCustomer {
    pub id: &'static str,
    /// `status` as the JSON string `"true"` (else the boolean `true`)
    pub status_as_string: bool,
    /// a result of exactly one coupon is sent as an object (else always an array)
    pub single_as_object: bool,
}

pub const ZV_CUSTOMERS: &[ZvCustomer] = &[
    ZvCustomer {
        id: ZVCMS_MEMBER,
        status_as_string: false,
        single_as_object: false,
    },
    ZvCustomer {
        id: ZVCMS_SINGLE,
        status_as_string: true,
        single_as_object: true,
    },
    ZvCustomer {
        id: ZVCMS_NONE,
        status_as_string: false,
        single_as_object: false,
    },
];

#[allow(clippy::too_many_arguments)]
const fn zv(
    customer_id: &'static str,
    card_id: &'static str,
    coupon_id: &'static str,
    title: &'static str,
    coupon_type: ZvNum,
    use_status: ZvNum,
    template_id: ZvNum,
    dates: (i64, i64),
    extra: &'static str,
) -> ZvCoupon {
    ZvCoupon {
        customer_id,
        card_id,
        coupon_id,
        title,
        coupon_type,
        use_status,
        template_id,
        begin: dates.0,
        end: dates.1,
        channel: "naixue",
        extra,
    }
}

use ZvNum::{Num as N, Str as S};

#[rustfmt::skip]
pub const ZV_COUPONS: &[ZvCoupon] = &[
    zv(ZVCMS_MEMBER, "390913445498200065", "390913445519171584", "全场满100减20元",
        S(0), S(0), S(951), (-10, 30), ""),
    zv(ZVCMS_MEMBER, "390913445498200066", "390913445519171585", "免费美式咖啡(限1杯)",
        N(2), N(0), N(895), (5, 35), ""),
    zv(ZVCMS_MEMBER, "390913445498200067", "390913445519171586", "门店兑换券(线下)",
        S(3), S(0), N(896), (-40, -2), "erp:EX20190815"),
    zv(ZVCMS_MEMBER, "390913445498200068", "390913445519171587", "奶茶买二送一",
        S(4), S(1), S(897), (-20, 20), ""),
    zv(ZVCMS_MEMBER, "390913445498200069", "390913445519171588", "指定商品芝士蛋糕券",
        N(5), S(2), N(898), (-5, 25), ""),
    zv(ZVCMS_MEMBER, "390913445498200070", "390913445519171589", "免配送费券",
        S(6), S(6), S(899), (-60, -30), ""),
    zv(ZVCMS_MEMBER, "390913445498200071", "390913445519171590", "免排队券",
        S(7), N(7), N(900), (-10, 10), ""),
    zv(ZVCMS_MEMBER, "390913445498200072", "390913445519171591", "停车2小时券",
        S(8), S(0), S(901), (-2, 2), "{\"plate\":\"\"}"),
    zv(ZVCMS_SINGLE, "401588390180519937", "401588390205685760", "新客专享满50减10元",
        S(0), S(0), S(960), (-3, 27), ""),
];

// ---------------------------------------------------------------------------------------------
// wxcard

#[derive(Debug, Clone, Copy)]
pub struct WxSeed {
    /// DISCOUNT, CASH, GROUPON or GIFT
    pub ticket_type: &'static str,
    pub title: &'static str,
    pub begin: i64,
    pub end: i64,
    pub sync: bool,
    pub status: i64,
    /// `created_at` is this day at 10:10:10 UTC.
    pub created: i64,
}

pub const WX_SEEDS: &[WxSeed] = &[
    WxSeed {
        ticket_type: "DISCOUNT",
        title: "海底捞8折券",
        begin: -30,
        end: 60,
        sync: true,
        status: 0,
        created: -31,
    },
    WxSeed {
        ticket_type: "CASH",
        title: "满100减20代金券",
        begin: -10,
        end: 20,
        sync: false,
        status: 0,
        created: -12,
    },
    WxSeed {
        ticket_type: "GROUPON",
        title: "双人套餐团购券",
        begin: 5,
        end: 35,
        sync: false,
        status: 0,
        created: -3,
    },
    WxSeed {
        ticket_type: "GIFT",
        title: "生日礼品券",
        begin: -90,
        end: -30,
        sync: true,
        status: 1,
        created: -91,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vendor_status_and_type_is_covered() {
        for s in 1..=6 {
            assert!(
                OP_COUPONS.iter().any(|c| c.use_status == s),
                "op status {s}"
            );
        }
        for s in 0..=2 {
            assert!(HKL_COUPONS.iter().any(|c| c.status == s), "hkl status {s}");
        }
        for t in [0, 2, 3, 4, 5, 6, 7, 8] {
            assert!(
                ZV_COUPONS.iter().any(|c| c.coupon_type.value() == t),
                "zv type {t}"
            );
        }
        for s in [0, 1, 2, 6, 7] {
            assert!(
                ZV_COUPONS.iter().any(|c| c.use_status.value() == s),
                "zv status {s}"
            );
        }
        let single = ZV_COUPONS.iter().filter(|c| c.customer_id == ZVCMS_SINGLE);
        assert_eq!(single.count(), 1);
        assert!(!ZV_COUPONS.iter().any(|c| c.customer_id == ZVCMS_NONE));
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = OP_COUPONS.iter().map(|c| c.id).collect();
        ids.extend(HKL_COUPONS.iter().map(|c| c.id));
        ids.extend(ZV_COUPONS.iter().map(|c| c.card_id));
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn day_arithmetic_is_in_china_time() {
        let d = jiff::civil::date(2026, 12, 1);
        assert_eq!(ymd(day_from(d, -1)), "2026-11-30");
        // 2026-12-01 00:00:00 +08:00 is 2026-11-30 16:00:00 UTC
        assert_eq!(cn_millis(d, 0, 0, 0), 1_796_054_400_000);
        assert_eq!(ymd_hms(d, 23, 59, 59), "2026-12-01 23:59:59");
    }
}
