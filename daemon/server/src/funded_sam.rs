//! The daemon's security module: the configured one (keys) behind a funding check, the second
//! line of defence of "no credit without funds".
//!
//! Every load goes through `cardd_journal::load_card`, which states what pays for it
//! ([`Funding`]) and asks [`SecurityModule::authorize_load`] before INITIALIZE FOR LOAD.
//! [`FundedSam`] checks that statement against the daemon's own data: an ETC recharge record
//! that exists, is for that card and that amount and is being loaded under that transaction
//! (圈存中, begun by the teller's load); a group order that is reserved (充值中) for that card,
//! amount and transaction; the test mode only when `[flows] unfunded_test_loads` is on with the
//! demo keys. An accepted load leaves a one-shot authorisation of its card and load terms;
//! [`SecurityModule::load_mac2`] consumes it and computes no MAC2 without one. So even code that
//! reaches the daemon's security module directly (a flow module, a new method) cannot have a
//! card credited without a funded record: without MAC2 the card refuses CREDIT FOR LOAD.
//!
//! Authorisations are few and short-lived: at most [`LOAD_AUTHORIZATIONS_MAX`] wait at once
//! (more are refused, never evicted), each for [`LOAD_AUTHORIZATION_TTL`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cardd_etc::{IssuerHost, RecordStatus};
use cardd_group::model::OrderStatus;
use cardd_group::GroupHost;
use cardd_purse::{
    CardKeyContext, Funding, InitLoadResponse, InitPurchaseResponse, LoadAuthorization, LoadTerms,
    MaintenanceKey, PurchaseTerms, SamError, SecurityModule,
};

/// Most load authorisations waiting for their MAC2 at once (a load takes one between its
/// authorisation and INITIALIZE FOR LOAD, and there are far fewer readers than this).
pub const LOAD_AUTHORIZATIONS_MAX: usize = 64;
/// How long an authorisation waits for its MAC2 (a load asks for it right after INITIALIZE).
pub const LOAD_AUTHORIZATION_TTL: Duration = Duration::from_secs(60);

/// One authorised load, waiting for its MAC2.
#[derive(Debug)]
struct Authorized {
    card: CardKeyContext,
    terms: LoadTerms,
    expires: Instant,
}

/// The configured security module with the funding check in front of MAC2.
pub struct FundedSam {
    inner: Arc<dyn SecurityModule>,
    /// ETC recharge records (`None`: the issuer host failed verification; nothing is funded).
    records: Option<Arc<dyn IssuerHost>>,
    /// Group orders (`None`: the group data failed verification; nothing is funded).
    orders: Option<Arc<dyn GroupHost>>,
    /// `[flows] unfunded_test_loads` with demo keys.
    test_mode: bool,
    ttl: Duration,
    authorized: Mutex<Vec<Authorized>>,
}

impl std::fmt::Debug for FundedSam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FundedSam")
            .field("test_mode", &self.test_mode)
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

fn refuse(reason: impl Into<String>) -> SamError {
    SamError::LoadNotFunded {
        reason: reason.into(),
    }
}

fn fen_matches(stored_fen: i64, terms: &LoadTerms) -> bool {
    stored_fen == i64::from(terms.amount)
}

impl FundedSam {
    /// `inner` behind the funding check of `records`, `orders` and the test mode.
    pub fn new(
        inner: Arc<dyn SecurityModule>,
        records: Option<Arc<dyn IssuerHost>>,
        orders: Option<Arc<dyn GroupHost>>,
        test_mode: bool,
    ) -> Self {
        FundedSam {
            inner,
            records,
            orders,
            test_mode,
            ttl: LOAD_AUTHORIZATION_TTL,
            authorized: Mutex::new(Vec::new()),
        }
    }

    /// The same with another lifetime for authorisations (tests use zero: expired at once).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Authorisations waiting for their MAC2 (expired ones included until the next call).
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Authorized>> {
        self.authorized.lock().unwrap_or_else(|g| g.into_inner())
    }

    /// Checks that `request.funding` pays for exactly this load.
    fn check_funding(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        let (card, terms, txn) = (&request.card_number, &request.terms, &request.txn_id);
        match &request.funding {
            Funding::EtcRecord { record_id } => {
                let records = self
                    .records
                    .as_ref()
                    .ok_or_else(|| refuse("充值记录数据不可用"))?;
                let record = records
                    .record(record_id)
                    .map_err(|e| refuse(format!("读取充值记录 {record_id} 失败：{e}")))?
                    .ok_or_else(|| refuse(format!("充值记录 {record_id} 不存在")))?;
                if &record.card_number != card {
                    return Err(refuse(format!(
                        "充值记录 {record_id} 属于卡号 {}，不是卡号 {card}",
                        record.card_number
                    )));
                }
                if !fen_matches(record.amount_fen, terms) {
                    return Err(refuse(format!(
                        "充值记录 {record_id} 的金额是 {} 分，不是 {} 分",
                        record.amount_fen, terms.amount
                    )));
                }
                if record.status != RecordStatus::Loading
                    || record.load_txn_id.as_deref() != Some(txn.as_str())
                {
                    return Err(refuse(format!(
                        "充值记录 {record_id} 为{}，没有以圈存交易 {txn} 开始圈存",
                        record.status.label()
                    )));
                }
                Ok(())
            }
            Funding::GroupOrder { order_id } => {
                let orders = self
                    .orders
                    .as_ref()
                    .ok_or_else(|| refuse("集团充值数据不可用"))?;
                let order = orders
                    .order(order_id)
                    .map_err(|e| refuse(format!("读取集团订单 {order_id} 失败：{e}")))?
                    .ok_or_else(|| refuse(format!("集团订单 {order_id} 不存在")))?;
                if &order.card_number != card {
                    return Err(refuse(format!(
                        "集团订单 {order_id} 属于卡号 {}，不是卡号 {card}",
                        order.card_number
                    )));
                }
                if !fen_matches(order.amount_fen, terms) {
                    return Err(refuse(format!(
                        "集团订单 {order_id} 的金额是 {} 分，不是 {} 分",
                        order.amount_fen, terms.amount
                    )));
                }
                if order.status != OrderStatus::Reserved || &order.txn_id != txn {
                    return Err(refuse(format!(
                        "集团订单 {order_id} 为{}，不是以圈存交易 {txn} 预留额度的订单",
                        order.status.label()
                    )));
                }
                Ok(())
            }
            Funding::TestMode if self.test_mode => Ok(()),
            Funding::TestMode => Err(refuse(
                "无资金来源的圈存仅在测试模式（[flows] unfunded_test_loads，演示密钥）下可用",
            )),
        }
    }
}

impl SecurityModule for FundedSam {
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        self.check_funding(request)?;
        let now = Instant::now();
        let mut waiting = self.lock();
        // A new authorisation of a card replaces its unused one; expired ones go.
        waiting.retain(|a| a.expires > now && a.card != request.card);
        if waiting.len() >= LOAD_AUTHORIZATIONS_MAX {
            return Err(refuse(format!(
                "同时等待写卡的圈存超过 {LOAD_AUTHORIZATIONS_MAX} 笔，请稍后重试"
            )));
        }
        waiting.push(Authorized {
            card: request.card,
            terms: request.terms,
            expires: now + self.ttl,
        });
        Ok(())
    }

    fn verify_load_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<(), SamError> {
        self.inner.verify_load_mac1(card, init, terms)
    }

    fn load_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<[u8; 4], SamError> {
        let now = Instant::now();
        let taken = {
            let mut waiting = self.lock();
            waiting.retain(|a| a.expires > now);
            waiting
                .iter()
                .position(|a| &a.card == card && &a.terms == terms)
                .map(|i| waiting.swap_remove(i))
        };
        if taken.is_none() {
            return Err(SamError::LoadNotAuthorized {
                card: hex::encode_upper(card.card8),
            });
        }
        self.inner.load_mac2(card, init, terms)
    }

    fn verify_load_tac(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        self.inner.verify_load_tac(card, init, terms, tac)
    }

    fn purchase_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
    ) -> Result<[u8; 4], SamError> {
        self.inner.purchase_mac1(card, init, terms)
    }

    fn verify_purchase_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        self.inner.verify_purchase_mac2(card, init, terms, mac2)
    }

    fn verify_purchase_tac(
        &self,
        card: &CardKeyContext,
        terms: &PurchaseTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        self.inner.verify_purchase_tac(card, terms, tac)
    }

    fn secure_messaging_mac(
        &self,
        card: &CardKeyContext,
        key: MaintenanceKey,
        challenge: [u8; 4],
        data: &[u8],
    ) -> Result<[u8; 4], SamError> {
        self.inner.secure_messaging_mac(card, key, challenge, data)
    }

    fn decrypt_obu_vehicle(
        &self,
        card: &CardKeyContext,
        random: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SamError> {
        self.inner.decrypt_obu_vehicle(card, random, ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardd_crypto::Algorithm;
    use cardd_group::model::ReserveRequest;
    use cardd_journal::Store;
    use cardd_purse::{KeyScheme, SoftSam};
    use cardd_store::demo::{DEMO_ETC_CARD, DEMO_NOT_LOADED_RECORD_IDS};
    use cardd_store::{EmbeddedGroupHost, EmbeddedHost};

    const CITY_CARD: &str = "61010000000000000001";

    struct World {
        _store: Store,
        records: Arc<EmbeddedHost>,
        orders: Arc<EmbeddedGroupHost>,
    }

    fn world() -> World {
        let store = Store::temporary().expect("store");
        let records = EmbeddedHost::open(&store).expect("host");
        records.seed_demo().expect("seed host");
        let orders = EmbeddedGroupHost::open(&store).expect("group host");
        orders.seed_demo().expect("seed groups");
        World {
            _store: store,
            records: Arc::new(records),
            orders: Arc::new(orders),
        }
    }

    fn sam(w: &World, test_mode: bool) -> FundedSam {
        FundedSam::new(
            Arc::new(SoftSam::demo()),
            Some(w.records.clone()),
            Some(w.orders.clone()),
            test_mode,
        )
    }

    fn card(n: u8) -> CardKeyContext {
        CardKeyContext {
            scheme: KeyScheme::Etc,
            algorithm: Algorithm::Tdes,
            issuer4: *b"\xC9\xC2\xCE\xF7",
            card8: [0, 0, 0, 0, 0, 0, 0, n],
        }
    }

    fn terms(amount: u32) -> LoadTerms {
        LoadTerms {
            amount,
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: [0x20, 0x26, 0x12, 0x06],
            time: [0x12, 0x00, 0x00],
        }
    }

    fn init() -> InitLoadResponse {
        InitLoadResponse::parse(&hex::decode("000003E800050100A1B2C3D455954E2A").expect("hex"))
            .expect("init")
    }

    fn ask(
        txn: &str,
        card_number: &str,
        n: u8,
        amount: u32,
        funding: Funding,
    ) -> LoadAuthorization {
        LoadAuthorization {
            txn_id: txn.into(),
            card_number: card_number.into(),
            card: card(n),
            terms: terms(amount),
            funding,
        }
    }

    fn mac2(sam: &FundedSam, n: u8, amount: u32) -> Result<[u8; 4], SamError> {
        sam.load_mac2(&card(n), &init(), &terms(amount))
    }

    /// A demo 未圈存 record of the demo ETC card, begun under `txn`: (id, amount).
    fn begun_record(w: &World, txn: &str) -> (String, u32) {
        let id = DEMO_NOT_LOADED_RECORD_IDS[0];
        let record = w.records.begin_load(id, "teller", txn).expect("begin");
        (
            id.to_owned(),
            u32::try_from(record.amount_fen).expect("amount"),
        )
    }

    fn reserved_order(w: &World, txn: &str, amount_fen: i64) -> String {
        w.orders
            .reserve(&ReserveRequest {
                group_id: "G001".into(),
                operator: "group1".into(),
                card_number: CITY_CARD.into(),
                card_balance_fen: 0,
                amount_fen,
                txn_id: txn.into(),
                batch: None,
            })
            .expect("reserve")
            .order_id
    }

    fn refused_for_want_of_funds(result: Result<(), SamError>, says: &str) {
        match result {
            Err(SamError::LoadNotFunded { reason }) => {
                assert!(reason.contains(says), "{reason} should say {says}")
            }
            other => panic!("expected a refusal saying {says}, got {other:?}"),
        }
    }

    #[test]
    fn mac2_without_an_authorisation_is_refused() {
        let w = world();
        let sam = sam(&w, true);
        let err = mac2(&sam, 1, 100).unwrap_err();
        assert!(matches!(err, SamError::LoadNotAuthorized { .. }), "{err}");
        assert!(
            err.to_string().contains("no funded record names this load"),
            "{err}"
        );
    }

    #[test]
    fn a_begun_etc_record_authorises_exactly_one_mac2_of_its_terms() {
        let w = world();
        let sam = sam(&w, false);
        let (id, amount) = begun_record(&w, "T-1");
        let funding = Funding::EtcRecord { record_id: id };
        sam.authorize_load(&ask("T-1", DEMO_ETC_CARD, 1, amount, funding))
            .expect("funded");
        assert_eq!(sam.waiting(), 1);
        // Other terms or another card are not what was authorised.
        assert!(mac2(&sam, 1, amount + 1).is_err());
        assert!(mac2(&sam, 2, amount).is_err());
        let expected = SoftSam::demo()
            .load_mac2(&card(1), &init(), &terms(amount))
            .expect("inner");
        assert_eq!(mac2(&sam, 1, amount).expect("authorised"), expected);
        // One-shot.
        assert!(matches!(
            mac2(&sam, 1, amount),
            Err(SamError::LoadNotAuthorized { .. })
        ));
        assert_eq!(sam.waiting(), 0);
    }

    #[test]
    fn etc_records_that_do_not_fund_this_load_are_refused() {
        let w = world();
        let sam = sam(&w, true);
        let id = DEMO_NOT_LOADED_RECORD_IDS[0].to_owned();
        let amount = u32::try_from(w.records.record(&id).unwrap().unwrap().amount_fen).unwrap();
        let funding = Funding::EtcRecord {
            record_id: id.clone(),
        };
        // 未圈存, not begun: no load was started for it.
        refused_for_want_of_funds(
            sam.authorize_load(&ask("T-1", DEMO_ETC_CARD, 1, amount, funding.clone())),
            "未圈存",
        );
        w.records.begin_load(&id, "teller", "T-1").expect("begin");
        refused_for_want_of_funds(
            sam.authorize_load(&ask("T-1", DEMO_ETC_CARD, 1, amount + 100, funding.clone())),
            "金额",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask(
                "T-1",
                "61011801000000000002",
                1,
                amount,
                funding.clone(),
            )),
            "不是卡号",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask("T-2", DEMO_ETC_CARD, 1, amount, funding.clone())),
            "T-2",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask(
                "T-1",
                DEMO_ETC_CARD,
                1,
                amount,
                Funding::EtcRecord {
                    record_id: "R20990101000001".into(),
                },
            )),
            "不存在",
        );
        // Loaded: its money is on the card; it funds no second load.
        w.records
            .finish_load(&id, "teller", 0, i64::from(amount))
            .expect("finish");
        refused_for_want_of_funds(
            sam.authorize_load(&ask("T-1", DEMO_ETC_CARD, 1, amount, funding)),
            "已圈存",
        );
        assert_eq!(sam.waiting(), 0, "a refusal authorises nothing");
        assert!(mac2(&sam, 1, amount).is_err());
    }

    #[test]
    fn group_orders_fund_only_their_reserved_load() {
        let w = world();
        let sam = sam(&w, false);
        let order_id = reserved_order(&w, "G-1", 2_000);
        let funding = Funding::GroupOrder {
            order_id: order_id.clone(),
        };
        refused_for_want_of_funds(
            sam.authorize_load(&ask("G-1", CITY_CARD, 3, 3_000, funding.clone())),
            "金额",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask(
                "G-1",
                "61010000000000000002",
                3,
                2_000,
                funding.clone(),
            )),
            "不是卡号",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask("G-2", CITY_CARD, 3, 2_000, funding.clone())),
            "G-2",
        );
        sam.authorize_load(&ask("G-1", CITY_CARD, 3, 2_000, funding.clone()))
            .expect("reserved order");
        mac2(&sam, 3, 2_000).expect("authorised");
        // A failed order (refund pending) funds nothing.
        w.orders
            .fail(&order_id, "group1", "卡片未写入")
            .expect("fail");
        refused_for_want_of_funds(
            sam.authorize_load(&ask("G-1", CITY_CARD, 3, 2_000, funding)),
            "充值失败",
        );
        refused_for_want_of_funds(
            sam.authorize_load(&ask(
                "G-1",
                CITY_CARD,
                3,
                2_000,
                Funding::GroupOrder {
                    order_id: "GO20990101000001".into(),
                },
            )),
            "不存在",
        );
    }

    #[test]
    fn the_test_mode_funds_only_when_it_is_on() {
        let w = world();
        refused_for_want_of_funds(
            sam(&w, false).authorize_load(&ask("X-1", DEMO_ETC_CARD, 1, 100, Funding::TestMode)),
            "测试模式",
        );
        let on = sam(&w, true);
        on.authorize_load(&ask("X-1", DEMO_ETC_CARD, 1, 100, Funding::TestMode))
            .expect("test mode");
        mac2(&on, 1, 100).expect("authorised");
        // Without the data, nothing is funded.
        let blind = FundedSam::new(Arc::new(SoftSam::demo()), None, None, false);
        refused_for_want_of_funds(
            blind.authorize_load(&ask(
                "T-1",
                DEMO_ETC_CARD,
                1,
                100,
                Funding::EtcRecord {
                    record_id: DEMO_NOT_LOADED_RECORD_IDS[0].into(),
                },
            )),
            "不可用",
        );
    }

    #[test]
    fn authorisations_expire_and_are_bounded() {
        let w = world();
        let expired = sam(&w, true).with_ttl(Duration::ZERO);
        expired
            .authorize_load(&ask("X-1", DEMO_ETC_CARD, 1, 100, Funding::TestMode))
            .expect("test mode");
        assert!(matches!(
            mac2(&expired, 1, 100),
            Err(SamError::LoadNotAuthorized { .. })
        ));

        let sam = sam(&w, true);
        for n in 0..LOAD_AUTHORIZATIONS_MAX {
            let n = u8::try_from(n).expect("fits");
            sam.authorize_load(&ask("X", DEMO_ETC_CARD, n, 100, Funding::TestMode))
                .expect("room");
        }
        assert_eq!(sam.waiting(), LOAD_AUTHORIZATIONS_MAX);
        refused_for_want_of_funds(
            sam.authorize_load(&ask("X", DEMO_ETC_CARD, 200, 100, Funding::TestMode)),
            "请稍后重试",
        );
        // A card's new authorisation replaces its unused one rather than adding another.
        sam.authorize_load(&ask("X", DEMO_ETC_CARD, 0, 200, Funding::TestMode))
            .expect("replaces");
        assert_eq!(sam.waiting(), LOAD_AUTHORIZATIONS_MAX);
        assert!(mac2(&sam, 0, 100).is_err(), "the replaced terms are gone");
        mac2(&sam, 0, 200).expect("the new terms");
        assert_eq!(sam.waiting(), LOAD_AUTHORIZATIONS_MAX - 1);
    }
}
