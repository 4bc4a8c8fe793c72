//! 充值记录 (every back-office role): a card's or a vehicle's recharge records as the host
//! keeps them (根据后台数据), with their 圈存状态 (未圈存/圈存中/已圈存/待核对), the site that
//! loaded them and when: where a newcomer checks that a load is 已圈存.

use cardd_etc::RechargeRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, when, yuan, Caller, Method, Stores, BACK_OFFICE_ROLES};
use crate::backoffice::error::BackOfficeError;

/// Most records one query shows.
pub const RECORDS_SHOWN_MAX: usize = 100;
/// Longest card number, in digits.
const CARD_DIGITS_MAX: usize = 20;
/// Longest plate, in characters.
const PLATE_CHARS_MAX: usize = 16;

pub const METHODS: &[Method] = &[Method {
    name: "records.query",
    roles: BACK_OFFICE_ROLES,
    changes: false,
    ends_sessions_of: None,
    run: query,
}];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    plate: String,
    #[serde(default)]
    colour: u16,
}

fn query(stores: &Stores, _: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let q: Query = params(p)?;
    let (card, plate) = (q.card_number.trim(), q.plate.trim());
    let records: Vec<RechargeRecord> = if !card.is_empty() {
        if card.len() > CARD_DIGITS_MAX || !card.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BackOfficeError::InvalidParams(format!(
                "卡号只能是数字，最多 {CARD_DIGITS_MAX} 位"
            )));
        }
        stores.records.records_for_card(card, None)?
    } else if !plate.is_empty() {
        if plate.chars().count() > PLATE_CHARS_MAX {
            return Err(BackOfficeError::InvalidParams(format!(
                "车牌号最多 {PLATE_CHARS_MAX} 个字符"
            )));
        }
        stores
            .records
            .query_records(&cardd_etc::RecordQuery {
                plate: plate.to_owned(),
                colour: q.colour,
                from: None,
                to: None,
                page: 1,
                page_size: cardd_etc::PAGE_SIZE_MAX,
            })?
            .records
    } else {
        return Err(BackOfficeError::InvalidParams(
            "请输入卡号或车牌号再查询".into(),
        ));
    };
    let total = records.len();
    let mut rows = Vec::new();
    for r in records.into_iter().take(RECORDS_SHOWN_MAX) {
        let site = match &r.load_txn_id {
            Some(txn) => stores.ledger.authorization(txn)?.map(|a| a.row.site_id),
            None => None,
        };
        rows.push(json!({
            "record_id": r.record_id,
            "card_number": r.card_number,
            "plate": r.plate,
            "amount": yuan(r.amount_fen),
            "status": r.status.code(),
            "status_label": r.status.label(),
            "channel": r.channel,
            "recharged_at": when(r.recharged_at),
            "loaded_at": r.loaded_at.map(when),
            "balance_before": r.balance_before_fen.map(yuan),
            "balance_after": r.balance_after_fen.map(yuan),
            "site_id": site,
        }));
    }
    answer(json!({ "records": rows, "total": total, "shown_max": RECORDS_SHOWN_MAX }))
}
