//! ETC service at the counter and the kiosk: loads tied to recharge records, the card's
//! evidence about a record, and a 修改圈存状态 that cannot load the same money twice.
//!
//! The seed's app lets staff set a record back to 未圈存 on their word alone; if the "failed"
//! write had in fact reached the card, the 二次圈存 that follows loads the money twice. Here a
//! record's money moves only with proof, and the proof comes from the card:
//!
//! * [`load_record`] runs in one reader job: identify the card (number, vehicle, validity), settle
//!   what the card says about the record's earlier loads, mark the record 圈存中 under a fresh
//!   journal transaction, run the journaled load (`cardd_journal::load_card`: intent durable
//!   before CREDIT, outcome durable before the answer), and record the outcome on the record.
//! * [`evidence`] reads the card (and the journal) about one record and decides: landed, not
//!   landed, or unknown. A record whose status the evidence contradicts is corrected on the spot
//!   (a 圈存中 record whose load is on the card becomes 已圈存; one whose load the card proves
//!   absent goes back to 未圈存).
//! * [`mark_not_loaded`] is the seed's 修改圈存状态: with the card, allowed only when the card
//!   proves the load did not land, refused with the evidence when it did; without the card, only
//!   a supervisor with a reason, and never against a journal that saw the card's TAC.
//! * [`settle_card`] and [`settle_at_start`] keep records and journal in step after recovery
//!   (card presented again, daemon restarted).
//!
//! **Invariant:** a record goes from 未圈存 to 圈存中 only inside the reader job that then sends
//! the credit; so a 圈存中 record whose transaction is not in the journal never reached CREDIT
//! (the intent is durable before CREDIT) and may safely go back to 未圈存, unless a load of it is
//! running right now (`Daemon::records_loading` knows).

use cardd_api::{ErrorCode, Fen};
use cardd_journal::{
    load_card, recover_card, IntentOutcome, Journal, LoadError, LoadReceipt, LoadRequest, LoadTxn,
    Resolution, TxnState,
};
use cardd_purse::{EtcIssueInfo, LogRecord, Purse, PurseError, Sfi, TransactionType};
use cardd_reader::Reader;
use cardd_store::{IssuerHost, RechargeRecord, RecordStatus};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::errors::ApiError;
use crate::server::Daemon;

/// Longest reason written on a record for a failed load, in characters (within the host's
/// `REASON_CHARS_MAX`).
const REASON_CHARS_KEPT: usize = 120;

/// How many log records of the card [`evidence`] reads (the card keeps 10).
const LOG_RECORDS_READ: u8 = 10;

/// Did a load land (the vocabulary both domains share).
pub use cardd_api::vocab::Verdict;

/// One load transaction of the record, as the journal knows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LoadEvidence {
    pub txn_id: String,
    /// `intent`, `committed`, `not_applied` or `needs_reconciliation`.
    pub state: String,
    /// The card's online counter before this load.
    pub online_atc_before: u16,
    /// 圈存前的金额 the card reported for this load, yuan.
    pub balance_before: String,
    /// The load's amount, yuan.
    pub amount: String,
    /// The card's TAC (verified), for committed loads.
    pub tac: Option<String>,
    /// How the outcome was established (`card_response`, `recovery`, `manual`).
    pub decided_by: Option<String>,
}

/// A load found in the card's own transaction log (0018).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CardLogEvidence {
    /// The online counter before the load.
    pub atc: u16,
    /// Amount, yuan.
    pub amount: String,
    /// Date and time as the card keeps them (`YYYYMMDD`, `HHMMSS`).
    pub date: String,
    pub time: String,
    /// Terminal number, hex.
    pub terminal: String,
}

/// The evidence about one record.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Evidence {
    pub record_id: String,
    pub verdict: Verdict,
    /// What the evidence means, for the teller (zh-CN).
    pub explanation: String,
    /// Whether the card itself was read for this answer.
    pub card_checked: bool,
    /// The card's balance now, yuan (when read).
    pub card_balance: Option<String>,
    /// The record's load transactions in the journal, oldest first.
    pub loads: Vec<LoadEvidence>,
    /// The matching load in the card's log, if any.
    pub card_log: Option<CardLogEvidence>,
}

/// What [`load_record`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RecordLoad {
    pub record: RechargeRecord,
    /// The load, when this call credited the card.
    pub receipt: Option<LoadReceipt>,
    /// True when the money turned out to be on the card already (an earlier load that had
    /// landed): nothing was credited and the record now says 已圈存.
    pub already_on_card: bool,
}

fn yuan(fen: impl Into<i64>) -> String {
    Fen(fen.into()).to_yuan_string()
}

/// The issuer host, or the fail-closed refusal when it did not verify.
pub(crate) fn host(daemon: &Daemon) -> Result<&dyn IssuerHost, ApiError> {
    daemon.host.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::FailedClosed,
            "充值数据未通过完整性检查，已停止圈存业务；请联系管理员",
        )
    })
}

/// The journal, or the fail-closed refusal when it did not verify.
pub(crate) fn journal(daemon: &Daemon) -> Result<&Journal, ApiError> {
    daemon.journal.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::FailedClosed,
            "圈存日志未通过完整性检查，已停止写卡；请联系管理员",
        )
    })
}

pub(crate) use crate::errors::journal_error;

/// Refuses a new credit to `card_number` while a load to it is unsettled (see `crate::intent`).
pub(crate) fn refuse_if_card_blocked(daemon: &Daemon, card_number: &str) -> Result<(), ApiError> {
    crate::intent::refuse_if_card_blocked(
        journal(daemon)?,
        daemon.host.as_deref(),
        daemon.group.as_ref().map(|g| g.host.as_ref()),
        card_number,
    )
}

fn record_of(host: &dyn IssuerHost, record_id: &str) -> Result<RechargeRecord, ApiError> {
    host.record(record_id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::HostNotFound,
            format!("未找到充值记录 {record_id}"),
        )
    })
}

/// Every journal transaction the record's loads used, oldest first: the record's own list of
/// them, after the ones only the history names (records written before that list existed).
fn linked_txn_ids(record: &RechargeRecord) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let legacy = record
        .history
        .iter()
        .filter_map(|c| c.txn_id.clone())
        .filter(|id| !record.txn_ids.contains(id));
    let all = legacy
        .chain(record.txn_ids.iter().cloned())
        .chain(record.load_txn_id.clone());
    for id in all {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

fn linked_txns(journal: &Journal, record: &RechargeRecord) -> Result<Vec<LoadTxn>, ApiError> {
    let mut out = Vec::new();
    for id in linked_txn_ids(record) {
        if let Some(txn) = journal.get(&id).map_err(journal_error)? {
            out.push(txn);
        }
    }
    Ok(out)
}

fn state_name(state: &TxnState) -> &'static str {
    match state {
        TxnState::Intent => "intent",
        TxnState::Committed { .. } => "committed",
        TxnState::NotApplied { .. } => "not_applied",
        TxnState::NeedsReconciliation { .. } => "needs_reconciliation",
    }
}

fn decided_by(resolution: &Resolution) -> &'static str {
    match resolution {
        Resolution::CardResponse => "card_response",
        Resolution::Recovery => "recovery",
        Resolution::CardLog => "card_log",
        Resolution::Manual { .. } => "manual",
        Resolution::LostCard { .. } => "lost_card",
    }
}

fn load_evidence(txn: &LoadTxn) -> LoadEvidence {
    let (tac, by) = match &txn.state {
        TxnState::Committed { tac, resolution } => {
            (Some(tac.clone()), Some(decided_by(resolution)))
        }
        TxnState::NotApplied { resolution } => (None, Some(decided_by(resolution))),
        _ => (None, None),
    };
    LoadEvidence {
        txn_id: txn.txn_id.clone(),
        state: state_name(&txn.state).into(),
        online_atc_before: txn.session.init.online_atc,
        balance_before: yuan(txn.session.init.old_balance),
        amount: yuan(txn.amount_fen()),
        tac,
        decided_by: by.map(str::to_owned),
    }
}

fn committed(txns: &[LoadTxn]) -> Option<&LoadTxn> {
    txns.iter()
        .find(|t| matches!(t.state, TxnState::Committed { .. }))
}

fn bcd_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The card in the reader, read for evidence.
struct CardView {
    balance_fen: u32,
    log: Vec<LogRecord>,
}

/// Selects the ETC application and reads 0015: the card number, vehicle and validity.
fn read_issue(purse: &mut Purse<'_>) -> Result<EtcIssueInfo, ApiError> {
    purse.select_etc_adf()?;
    let raw = purse.read_binary_sfi(Sfi::ISSUE, 0, 0)?;
    EtcIssueInfo::parse(&raw).map_err(|_| {
        ApiError::new(
            ErrorCode::UnsupportedCard,
            "读卡器上不是 ETC 用户卡：请插入该车辆的 ETC 用户卡",
        )
    })
}

fn read_card(purse: &mut Purse<'_>) -> Result<CardView, ApiError> {
    purse.select_etc_adf()?;
    let balance_fen = purse.balance()?;
    let log = purse.read_log(LOG_RECORDS_READ)?;
    Ok(CardView { balance_fen, log })
}

/// Refuses a card that is not the record's.
fn check_card_is_records(info: &EtcIssueInfo, record: &RechargeRecord) -> Result<(), ApiError> {
    let found = info.card_number();
    if found != record.card_number {
        return Err(ApiError::new(
            ErrorCode::CardNotEligible,
            format!(
                "卡号不符：读卡器上是 {found}，充值记录 {} 的用户卡是 {}；请插入正确的卡",
                record.record_id, record.card_number
            ),
        ));
    }
    let plate = info.plate_text();
    let colour = info.plate_colour.code();
    let plate_differs = !plate.contains('?') && plate != record.plate;
    if plate_differs || colour != record.plate_colour.code {
        return Err(ApiError::new(
            ErrorCode::CardNotEligible,
            format!(
                "该卡登记的车辆是 {plate}（{}），与充值记录的车辆 {}（{}）不符；请核对车辆信息",
                cardd_api::types::plate_colour_zh(colour),
                record.plate,
                record.plate_colour.label
            ),
        ));
    }
    Ok(())
}

/// Refuses a card outside its validity dates (China date).
fn check_validity(info: &EtcIssueInfo, now: OffsetDateTime) -> Result<(), ApiError> {
    let today = now.to_offset(cardd_store::model::CHINA_OFFSET);
    let today = (today.year() as u16, u8::from(today.month()), today.day());
    let show = |(y, m, d): (u16, u8, u8)| format!("{y:04}-{m:02}-{d:02}");
    if let Some(expiry) = info.expiry_date() {
        if expiry < today {
            return Err(ApiError::new(
                ErrorCode::CardNotEligible,
                format!(
                    "卡片已过期（有效期至 {}），不能圈存；请为该车辆办理换卡，充值记录保持未圈存",
                    show(expiry)
                ),
            ));
        }
    }
    if let Some(start) = info.start_date() {
        if start > today {
            return Err(ApiError::new(
                ErrorCode::CardNotEligible,
                format!("卡片尚未启用（启用日期 {}），不能圈存", show(start)),
            ));
        }
    }
    Ok(())
}

/// Resolves the card's open journal transaction, if any, from the card (reference §3).
fn recover(daemon: &Daemon, purse: &mut Purse<'_>) -> Result<(), ApiError> {
    let journal = journal(daemon)?;
    crate::recovery::check_watch_on(daemon, purse).map_err(|e| load_error(&e))?;
    recover_card(
        purse,
        daemon.sam.as_ref(),
        journal,
        &daemon.config.etc_pin,
        cardd_crypto::Algorithm::Tdes,
    )
    .map(drop)
    .map_err(|e| load_error(&e))
}

/// Decides what the evidence says, without changing anything.
fn decide(
    record: &RechargeRecord,
    txns: &[LoadTxn],
    card: Option<&CardView>,
) -> (Verdict, String, Option<CardLogEvidence>) {
    let log_entry = |atc: Option<u16>| {
        card.and_then(|c| {
            c.log.iter().find(|l| {
                l.tx_type == TransactionType::EpLoad.code()
                    && i64::from(l.amount) == record.amount_fen
                    && !matches!(atc, Some(a) if a != l.atc)
            })
        })
        .map(|l| CardLogEvidence {
            atc: l.atc,
            amount: yuan(l.amount),
            date: bcd_hex(&l.date_bcd),
            time: bcd_hex(&l.time_bcd),
            terminal: hex::encode_upper(l.terminal),
        })
    };
    if let Some(txn) = committed(txns) {
        let atc = txn.session.init.online_atc;
        let before = txn.session.init.old_balance;
        let tac = match &txn.state {
            TxnState::Committed { tac, .. } => tac.clone(),
            _ => String::new(),
        };
        return (
            Verdict::Landed,
            format!(
                "卡片证实该笔圈存已写入卡内：联机交易序号 {}，圈存前余额 {} 元，圈存金额 {} 元，圈存后余额 {} 元，交易验证码 TAC {} 校验通过；不能改为未圈存，请勿重复圈存",
                u32::from(atc) + 1,
                yuan(before),
                yuan(txn.amount_fen()),
                yuan(i64::from(before) + i64::from(txn.amount_fen())),
                tac
            ),
            log_entry(Some(atc)),
        );
    }
    if let Some(open) = txns.iter().find(|t| t.state.is_open()) {
        let why = match &card {
            Some(_) => "卡片的交易计数器和交易证明不能证明该笔圈存是否写入",
            None => "未读取卡片，无法确认该笔圈存是否写入",
        };
        return (
            Verdict::Unknown,
            format!(
                "圈存交易 {} 的结果未确认：{why}；请插入该卡核对，或由主管核对后处理",
                open.txn_id
            ),
            None,
        );
    }
    let ids = linked_txn_ids(record);
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !txns.iter().any(|t| &t.txn_id == *id))
        .collect();
    // A 圈存中 record's current transaction that the journal never saw never reached CREDIT:
    // the intent is durable before CREDIT is sent.
    let only_current_missing = record.status == RecordStatus::Loading
        && missing
            .iter()
            .all(|id| Some(*id) == record.load_txn_id.as_ref());
    if !ids.is_empty() && (missing.is_empty() || only_current_missing) {
        let explanation = match txns.last() {
            Some(txn) => format!(
                "卡片证实该笔圈存未写入卡内：交易 {} 发出后，卡片联机交易序号仍为 {}，余额未增加；可以改为未圈存后重新圈存",
                txn.txn_id, txn.session.init.online_atc
            ),
            None => "该笔圈存在写卡之前已中断，卡片未被写入；可以重新圈存".into(),
        };
        return (Verdict::NotLanded, explanation, None);
    }
    // No load through cardd (recorded before cardd): only the card's log can speak.
    if let Some(entry) = log_entry(None) {
        return (
            Verdict::Landed,
            format!(
                "卡片交易记录中有一笔 {} 元的圈存（联机交易序号 {}，日期 {}）；该笔充值已写入卡内，不能改为未圈存",
                entry.amount, entry.atc, entry.date
            ),
            Some(entry),
        );
    }
    let why = if card.is_some() {
        "本系统没有该记录的写卡证明，卡片交易记录中也没有相符的圈存"
    } else {
        "本系统没有该记录的写卡证明，且未读取卡片"
    };
    (
        Verdict::Unknown,
        format!(
            "无法证明该笔充值是否已写入卡内：{why}；如需修改，请由主管核对卡片余额后填写原因办理"
        ),
        None,
    )
}

/// Brings the record in line with a verdict the journal or the card proved. Returns the record
/// as it is now.
fn apply_verdict(
    host: &dyn IssuerHost,
    record: RechargeRecord,
    verdict: Verdict,
    txns: &[LoadTxn],
    operator: &str,
) -> Result<RechargeRecord, ApiError> {
    match (verdict, record.status) {
        (Verdict::Landed, status) if status != RecordStatus::Loaded => {
            let Some(txn) = committed(txns) else {
                return Ok(record);
            };
            let before = i64::from(txn.session.init.old_balance);
            let after = before + i64::from(txn.amount_fen());
            let id = record.record_id.as_str();
            match status {
                RecordStatus::NotLoaded => {
                    host.begin_load(id, operator, &txn.txn_id)?;
                    Ok(host.finish_load(id, operator, before, after)?)
                }
                RecordStatus::Loading => Ok(host.finish_load(id, operator, before, after)?),
                _ => Ok(host.resolve_reconciliation(
                    id,
                    operator,
                    true,
                    &format!("卡片证实圈存交易 {} 已写入卡内", txn.txn_id),
                )?),
            }
        }
        (Verdict::NotLanded, RecordStatus::Loading) => {
            Ok(host.abort_load(&record.record_id, operator, "卡片证实该笔圈存未写入卡内")?)
        }
        (Verdict::NotLanded, RecordStatus::NeedsReconciliation) if !txns.is_empty() => Ok(host
            .resolve_reconciliation(
                &record.record_id,
                operator,
                false,
                "圈存日志证实该笔圈存未写入卡内",
            )?),
        (Verdict::Unknown, RecordStatus::Loading)
            if txns
                .iter()
                .any(|t| matches!(t.state, TxnState::NeedsReconciliation { .. })) =>
        {
            Ok(host.flag_reconciliation(
                &record.record_id,
                operator,
                "卡片不能证明圈存是否写入，需主管核对",
            )?)
        }
        _ => Ok(record),
    }
}

/// Reads the record's card (when `purse` is given) and the journal, settles the card's open
/// load from the card, decides, and corrects the record where the proof contradicts it. Runs
/// inside a reader job when the card is read.
fn examine(
    daemon: &Daemon,
    purse: Option<&mut Purse<'_>>,
    record_id: &str,
    operator: &str,
) -> Result<(Evidence, RechargeRecord), ApiError> {
    let host = host(daemon)?;
    let journal = journal(daemon)?;
    let record = record_of(host, record_id)?;
    let card = match purse {
        Some(purse) => {
            let info = read_issue(purse)?;
            check_card_is_records(&info, &record)?;
            if journal
                .open_for_card(&record.card_number)
                .map_err(journal_error)?
                .is_some()
            {
                recover(daemon, purse)?;
            }
            Some(read_card(purse)?)
        }
        None => None,
    };
    let txns = linked_txns(journal, &record)?;
    let (verdict, explanation, card_log) = decide(&record, &txns, card.as_ref());
    let record = if daemon.records_loading.contains(record_id) {
        record
    } else {
        apply_verdict(host, record, verdict, &txns, operator)?
    };
    let evidence = Evidence {
        record_id: record.record_id.clone(),
        verdict,
        explanation,
        card_checked: card.is_some(),
        card_balance: card.as_ref().map(|c| yuan(c.balance_fen)),
        loads: txns.iter().map(load_evidence).collect(),
        card_log,
    };
    Ok((evidence, record))
}

/// The evidence about a record, reading its card when a reader holding it is given. May
/// correct the record where the proof contradicts its status.
pub fn evidence(
    daemon: &Daemon,
    reader: Option<&mut Reader>,
    record_id: &str,
    operator: &str,
) -> Result<(Evidence, RechargeRecord), ApiError> {
    match reader {
        Some(reader) => {
            let mut purse = Purse::new(reader);
            examine(daemon, Some(&mut purse), record_id, operator)
        }
        None => examine(daemon, None, record_id, operator),
    }
}

/// What a teller reads when a journaled load fails, with the matching code.
pub fn load_error(e: &LoadError) -> ApiError {
    match e {
        LoadError::WrongCard { expected, found } => ApiError::new(
            ErrorCode::CardNotEligible,
            format!("卡号不符：读卡器上是 {found}，应为 {expected}；请插入正确的卡"),
        ),
        LoadError::OutcomeUnknown { .. } => ApiError::new(
            ErrorCode::LoadOutcomeUnknown,
            "写卡过程中卡片被拔出或无响应，圈存结果未知：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
        ),
        LoadError::AfterCredit { .. } => ApiError::new(
            ErrorCode::LoadOutcomeUnknown,
            "卡片已响应圈存，但结果未能记录，圈存结果未知：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
        ),
        LoadError::Unresolved { txn_id, .. } => ApiError::new(
            ErrorCode::CardEvidenceRequired,
            format!("该卡有一笔未确认的圈存（{txn_id}），需主管核对后处理；在此之前不能再次圈存"),
        ),
        LoadError::VerdictContradicted { card, txn_id, .. } => {
            crate::intent::contradicted(card, txn_id)
        }
        LoadError::TacInvalid { txn_id } => ApiError::new(
            ErrorCode::CardEvidenceRequired,
            format!("卡片返回的交易验证码（TAC）校验失败，圈存交易 {txn_id} 已标记为待核对；请主管核对卡片余额"),
        ),
        LoadError::Card(PurseError::Status { command, sw })
            if *command == "INITIALIZE FOR LOAD" && sw.0 == 0x6985 =>
        {
            ApiError::new(
                ErrorCode::CardNotEligible,
                "圈存后卡内余额将超过卡片的余额上限，卡片拒绝圈存；请先消费或减少圈存金额，充值记录保持未圈存",
            )
        }
        LoadError::Card(PurseError::WrongPin { tries_left }) => ApiError::new(
            ErrorCode::CardError,
            format!("卡片 PIN 校验失败（剩余 {tries_left} 次），未圈存；请联系发行方核对 PIN"),
        ),
        LoadError::Card(PurseError::Reader(r)) => ApiError::from(r),
        LoadError::Unfunded(e) => crate::errors::unfunded_load(e),
        LoadError::Card(p) => ApiError::new(
            ErrorCode::CardError,
            format!("圈存失败：{}", crate::errors::purse_error_zh(p)),
        )
        .with_detail(serde_json::json!({ "technical": p.to_string() })),
        LoadError::Mac1(_) => ApiError::new(
            ErrorCode::CardError,
            "卡片校验失败（MAC1），未圈存：该卡不是本系统发行的卡片或密钥不符，请联系管理员",
        )
        .with_detail(serde_json::json!({ "technical": e.to_string() })),
        LoadError::UnknownCard(_) => ApiError::new(
            ErrorCode::UnsupportedCard,
            "读卡器上不是 ETC 用户卡或城市一卡通，未圈存：请换用正确的卡片",
        ),
        LoadError::Journal(j) => {
            ApiError::internal("圈存日志写入失败，未圈存：请联系管理员检查 cardd 数据目录")
                .with_detail(serde_json::json!({ "technical": j.to_string() }))
        }
    }
}

/// Checks, before anything is asked or loaded, that the card in `reader` is the record's card
/// (number and vehicle) and within its validity dates. Runs inside a reader job.
pub fn check_card_for_record(
    daemon: &Daemon,
    reader: &mut Reader,
    record_id: &str,
) -> Result<(), ApiError> {
    let record = record_of(host(daemon)?, record_id)?;
    let mut purse = Purse::new(reader);
    let info = read_issue(&mut purse)?;
    check_card_is_records(&info, &record)?;
    check_validity(&info, OffsetDateTime::now_utc())
}

/// The first half of a load, without loading: refuses a record already 已圈存, checks the card
/// in `purse` is the record's and valid, settles the card's open load from the card, and
/// decides the record from its linked transactions. Returns the record as it is now: 已圈存
/// when its money is on the card already, 未圈存 when it may be loaded; any other state is
/// refused. The caller holds the record's loading claim.
fn settle_from_card(
    daemon: &Daemon,
    purse: &mut Purse<'_>,
    record_id: &str,
    operator: &str,
) -> Result<RechargeRecord, ApiError> {
    let host = host(daemon)?;
    let journal = journal(daemon)?;
    let before_settle = record_of(host, record_id)?;
    if before_settle.status == RecordStatus::Loaded {
        return Err(ApiError::new(
            ErrorCode::RecordStateConflict,
            format!(
                "充值记录 {record_id} 已圈存（圈存前 {} 元，圈存后 {} 元），不能重复圈存",
                before_settle.balance_before_yuan().unwrap_or_default(),
                before_settle.balance_after_yuan().unwrap_or_default()
            ),
        ));
    }
    let info = read_issue(purse)?;
    check_card_is_records(&info, &before_settle)?;
    check_validity(&info, OffsetDateTime::now_utc())?;
    // What the card says about this record's earlier loads comes first.
    if journal
        .open_for_card(&before_settle.card_number)
        .map_err(journal_error)?
        .is_some()
    {
        if let Err(e) = recover(daemon, purse) {
            // The card could not settle its open load: the load is still pending; say which.
            refuse_if_card_blocked(daemon, &before_settle.card_number)?;
            return Err(e);
        }
    }
    let txns = linked_txns(journal, &before_settle)?;
    let (verdict, _, _) = decide(&before_settle, &txns, None);
    let record = apply_verdict(host, before_settle, verdict, &txns, operator)?;
    match record.status {
        RecordStatus::Loaded | RecordStatus::NotLoaded => Ok(record),
        _ => Err(ApiError::new(
            ErrorCode::CardEvidenceRequired,
            format!(
                "充值记录 {record_id} 为{}：上一次圈存的结果尚未确认，请主管核对后再圈存",
                record.status.label()
            ),
        )),
    }
}

/// Marks the record as being loaded or settled, refusing while another run holds it.
fn claim_record(
    daemon: &Daemon,
    record_id: &str,
) -> Result<cardd_journal::inflight::InFlightGuard, ApiError> {
    daemon.records_loading.claim(record_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("充值记录 {record_id} 正在圈存，请等待本次圈存结束"),
        )
    })
}

/// Settles a record from the card in `reader` before anyone is asked to load it, without
/// loading: `already_on_card` when the card proves the record's money is there already (the
/// record is then 已圈存), otherwise the record stays 未圈存 and may be loaded. A record whose
/// earlier load the card cannot decide, or a card with another open load, is refused. Runs
/// inside a reader job.
pub fn settle_record(
    daemon: &Daemon,
    reader: &mut Reader,
    record_id: &str,
    operator: &str,
) -> Result<RecordLoad, ApiError> {
    let _guard = claim_record(daemon, record_id)?;
    let mut purse = Purse::new(reader);
    let record = settle_from_card(daemon, &mut purse, record_id, operator)?;
    let already_on_card = record.status == RecordStatus::Loaded;
    if !already_on_card {
        // Asking makes no sense while another load to this card is still open.
        refuse_if_card_blocked(daemon, &record.card_number)?;
    }
    Ok(RecordLoad {
        record,
        receipt: None,
        already_on_card,
    })
}

/// Loads a 未圈存 record onto the card in `reader`, exactly once. Runs inside a reader job.
pub fn load_record(
    daemon: &Daemon,
    reader: &mut Reader,
    reader_id: &str,
    record_id: &str,
    operator: &str,
    txn_id: &str,
) -> Result<RecordLoad, ApiError> {
    let host = host(daemon)?;
    let journal = journal(daemon)?;
    let _guard = claim_record(daemon, record_id)?;
    let mut purse = Purse::new(reader);
    let record = settle_from_card(daemon, &mut purse, record_id, operator)?;
    if record.status == RecordStatus::Loaded {
        return Ok(RecordLoad {
            record,
            receipt: None,
            already_on_card: true,
        });
    }
    // The card's own load is settled above; any other load to it still open (for another
    // record or a group order) blocks this credit until the card settles it.
    refuse_if_card_blocked(daemon, &record.card_number)?;
    let amount_fen = u32::try_from(record.amount_fen)
        .map_err(|_| ApiError::invalid_params("充值金额超出卡片可表示的范围"))?;
    let today = OffsetDateTime::now_utc().to_offset(cardd_store::model::CHINA_OFFSET);
    let request = LoadRequest {
        txn_id: txn_id.to_owned(),
        amount_fen,
        terminal: daemon.config.terminal_id,
        date: cardd_crypto::bcd::date(today.year() as u16, u8::from(today.month()), today.day()),
        time: cardd_crypto::bcd::time(today.hour(), today.minute(), today.second()),
        etc_pin: daemon.config.etc_pin.clone(),
        expected_card: Some(record.card_number.clone()),
        city_algorithm: cardd_crypto::Algorithm::Tdes,
        funding: cardd_journal::Funding::EtcRecord {
            record_id: record.record_id.clone(),
        },
    };
    host.begin_load(record_id, operator, txn_id)?;
    match load_card(
        &mut purse,
        daemon.sam.as_ref(),
        journal,
        reader_id,
        &request,
    ) {
        Ok(receipt) => {
            let record = host
                .finish_load(
                    record_id,
                    operator,
                    i64::from(receipt.balance_before_fen),
                    i64::from(receipt.balance_after_fen),
                )
                .map_err(|e| loaded_but_not_recorded(record_id, &receipt, e))?;
            Ok(RecordLoad {
                record,
                receipt: Some(receipt),
                already_on_card: false,
            })
        }
        Err(e) => {
            settle_failed_load(host, journal, record_id, operator, txn_id, &e);
            Err(load_error(&e))
        }
    }
}

/// A load the card took (committed in the journal) whose record could not be updated: the
/// teller reads that the money is on the card, never a failure; the record follows the
/// journal when the card is presented again or at the next start-up.
fn loaded_but_not_recorded(
    record_id: &str,
    receipt: &LoadReceipt,
    e: cardd_store::HostError,
) -> ApiError {
    tracing::error!(record = record_id, txn = %receipt.txn_id, error = %e, "a committed load could not be recorded on its recharge record");
    let mut err = ApiError::from(e);
    err.message = format!(
        "圈存已成功：卡内余额 {} 元，但充值记录 {record_id} 未能更新（{}）；系统将根据圈存日志自动补记，切勿重复充值",
        yuan(receipt.balance_after_fen),
        err.message
    );
    err
}

/// Records what a failed load means for its record, from the journal's state of its
/// transaction, never from the error alone: only a load the journal proves not credited
/// (nothing was sent, or the card showed the money is not there) takes the record back to
/// 未圈存; a credited one becomes 已圈存; one that a person must decide becomes 待核对; an
/// open intent leaves the record 圈存中 for the journal to settle when the card is presented.
fn settle_failed_load(
    host: &dyn IssuerHost,
    journal: &Journal,
    record_id: &str,
    operator: &str,
    txn_id: &str,
    e: &LoadError,
) {
    tracing::warn!(record = record_id, txn = txn_id, error = %e, "load of a recharge record failed");
    let outcome = match IntentOutcome::of(journal, txn_id) {
        IntentOutcome::NotCredited(_) => {
            // The record keeps a short reason (the host bounds reasons); the log keeps the whole error.
            let reason: String = format!("卡片未被写入：{}", load_error(e).message)
                .chars()
                .take(REASON_CHARS_KEPT)
                .collect();
            host.abort_load(record_id, operator, &reason)
        }
        IntentOutcome::Credited(txn) => {
            let before = i64::from(txn.session.init.old_balance);
            host.finish_load(
                record_id,
                operator,
                before,
                before + i64::from(txn.amount_fen()),
            )
        }
        IntentOutcome::Unknown(Some(txn))
            if matches!(txn.state, TxnState::NeedsReconciliation { .. })
                || matches!(e, LoadError::TacInvalid { .. }) =>
        {
            let reason = match e {
                LoadError::TacInvalid { .. } => "卡片返回的 TAC 校验失败",
                _ => "卡片状态无法证明圈存是否成功，需主管核对",
            };
            host.flag_reconciliation(record_id, operator, reason)
        }
        // The intent is open (or the journal could not be read): the card decides later.
        IntentOutcome::Unknown(_) => return,
    };
    if let Err(err) = outcome {
        tracing::error!(record = record_id, error = %err, "could not record a failed load on its record");
    }
}

/// The result of [`mark_not_loaded`].
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    pub record: RechargeRecord,
    pub evidence: Evidence,
    pub message: String,
}

/// 修改圈存状态: sets a record back to 未圈存 for 二次圈存, only when that is safe (see the
/// module documentation). With `reader`, runs inside a reader job.
pub fn mark_not_loaded(
    daemon: &Daemon,
    reader: Option<&mut Reader>,
    record_id: &str,
    operator: &str,
    supervisor: bool,
    reason: Option<&str>,
) -> Result<MarkOutcome, ApiError> {
    let host = host(daemon)?;
    let current = record_of(host, record_id)?;
    if current.status == RecordStatus::NotLoaded {
        return Err(ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("充值记录 {record_id} 已是未圈存，可以直接圈存"),
        ));
    }
    if daemon.records_loading.contains(record_id) {
        return Err(ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("充值记录 {record_id} 正在圈存，请等待本次圈存结束"),
        ));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let with_card = reader.is_some();
    if !with_card && !supervisor {
        return Err(ApiError::new(
            ErrorCode::CardEvidenceRequired,
            "请将该记录的用户卡插入读卡器，由系统核对卡片后再修改；没有卡片时只有主管可以填写原因后修改",
        )
        .with_detail(serde_json::json!({ "reason_required": false })));
    }
    let (evidence, record) = evidence(daemon, reader, record_id, operator)?;
    match evidence.verdict {
        Verdict::Landed => {
            let explanation = evidence.explanation.clone();
            let detail = serde_json::json!({ "evidence": evidence, "record": record });
            return Err(ApiError::new(
                ErrorCode::LoadLanded,
                format!(
                    "不能改为未圈存：{explanation}。记录状态为{}",
                    record.status.label()
                ),
            )
            .with_detail(detail));
        }
        Verdict::Unknown if !supervisor => {
            return Err(ApiError::new(
                ErrorCode::CardEvidenceRequired,
                format!("{}（需主管办理）", evidence.explanation),
            )
            .with_detail(serde_json::json!({ "evidence": evidence, "reason_required": false })));
        }
        // The same code as the teller's refusal: the caller may decide, but only with a reason;
        // `reason_required` tells a client to ask for one and call again.
        Verdict::Unknown if reason.is_none() => {
            return Err(ApiError::new(
                ErrorCode::CardEvidenceRequired,
                "卡片不能证明该笔圈存未写入，主管修改圈存状态必须填写原因",
            )
            .with_detail(serde_json::json!({ "evidence": evidence, "reason_required": true })));
        }
        _ => {}
    }
    let why = match (evidence.verdict, reason) {
        (Verdict::NotLanded, Some(r)) => format!("卡片证实未写入；{r}"),
        (Verdict::NotLanded, None) => "卡片证实该笔圈存未写入卡内".to_owned(),
        (_, Some(r)) => format!("主管无卡片证明修改：{r}"),
        (_, None) => "主管修改".to_owned(),
    };
    if evidence.verdict == Verdict::Unknown {
        // A person decided: the journal's transactions awaiting reconciliation follow.
        resolve_journal(daemon, &record, false, operator, &why)?;
    }
    let record = match record.status {
        RecordStatus::NotLoaded => record,
        RecordStatus::Loading => host.abort_load(record_id, operator, &why)?,
        RecordStatus::Loaded => host.mark_not_loaded(record_id, operator, &why)?,
        RecordStatus::NeedsReconciliation => {
            host.resolve_reconciliation(record_id, operator, false, &why)?
        }
    };
    Ok(MarkOutcome {
        record,
        evidence,
        message: cardd_store::model::MARK_NOT_LOADED_DONE_ZH.into(),
    })
}

/// Settles the record's journal transactions that await reconciliation as a person decided.
/// Transactions still in `intent` are left for the card to decide when it is presented.
fn resolve_journal(
    daemon: &Daemon,
    record: &RechargeRecord,
    loaded: bool,
    operator: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let journal = journal(daemon)?;
    for txn in linked_txns(journal, record)? {
        if !matches!(txn.state, TxnState::NeedsReconciliation { .. }) {
            continue;
        }
        let resolution = Resolution::Manual {
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        };
        let state = if loaded {
            TxnState::Committed {
                tac: String::new(),
                resolution,
            }
        } else {
            TxnState::NotApplied { resolution }
        };
        journal.resolve(&txn.txn_id, state).map_err(journal_error)?;
    }
    Ok(())
}

/// A supervisor settles a 待核对 record: `loaded` is the person's verdict, `reason` why. With
/// the card, its evidence must not contradict the verdict. Runs inside a reader job when the
/// card is read.
pub fn resolve_record(
    daemon: &Daemon,
    reader: Option<&mut Reader>,
    record_id: &str,
    operator: &str,
    loaded: bool,
    reason: &str,
) -> Result<RechargeRecord, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid_params("核对结论必须填写原因"));
    }
    if daemon.records_loading.contains(record_id) {
        return Err(ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("充值记录 {record_id} 正在圈存，请等待本次圈存结束"),
        ));
    }
    let (evidence, record) = evidence(daemon, reader, record_id, operator)?;
    match (evidence.verdict, loaded) {
        (Verdict::Landed, false) => {
            return Err(ApiError::new(
                ErrorCode::LoadLanded,
                format!("不能核对为未圈存：{}", evidence.explanation),
            )
            .with_detail(serde_json::json!({ "evidence": evidence })))
        }
        (Verdict::NotLanded, true) => {
            return Err(ApiError::new(
                ErrorCode::CardEvidenceRequired,
                format!("不能核对为已圈存：{}", evidence.explanation),
            )
            .with_detail(serde_json::json!({ "evidence": evidence })))
        }
        _ => {}
    }
    if record.status != RecordStatus::NeedsReconciliation {
        let matches = (record.status == RecordStatus::Loaded) == loaded;
        if matches {
            return Ok(record);
        }
        return Err(ApiError::new(
            ErrorCode::RecordStateConflict,
            format!(
                "充值记录 {record_id} 为{}，不是待核对；{}",
                record.status.label(),
                evidence.explanation
            ),
        ));
    }
    resolve_journal(daemon, &record, loaded, operator, reason)?;
    Ok(host(daemon)?.resolve_reconciliation(record_id, operator, loaded, reason)?)
}

/// Settles, from the journal alone, the 圈存中 and 待核对 records of `card_number` whose load is
/// decided (after recovery read the card, or a person's verdict in the journal). Returns the
/// records changed.
pub fn settle_card(daemon: &Daemon, card_number: &str) -> Vec<RechargeRecord> {
    let (Ok(host), Ok(journal)) = (host(daemon), journal(daemon)) else {
        return Vec::new();
    };
    let records = match host.records_for_card(card_number, None) {
        Ok(r) => r.into_iter().filter(|r| r.status.is_open()).collect(),
        Err(e) => {
            tracing::error!(card = card_number, error = %e, "could not list the card's records");
            return Vec::new();
        }
    };
    settle_records(daemon, host, journal, records)
}

/// At start-up: settles every 圈存中 record whose load the journal has decided, or whose load
/// never reached the journal (so never reached the card).
pub fn settle_at_start(daemon: &Daemon) -> Vec<RechargeRecord> {
    let (Ok(host), Ok(journal)) = (host(daemon), journal(daemon)) else {
        return Vec::new();
    };
    match host.open_records() {
        Ok(records) => {
            let loading = records
                .into_iter()
                .filter(|r| r.status == RecordStatus::Loading)
                .collect();
            settle_records(daemon, host, journal, loading)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not list the open recharge records");
            Vec::new()
        }
    }
}

fn settle_records(
    daemon: &Daemon,
    host: &dyn IssuerHost,
    journal: &Journal,
    records: Vec<RechargeRecord>,
) -> Vec<RechargeRecord> {
    let mut changed = Vec::new();
    for record in records {
        let id = record.record_id.clone();
        // Settled under the in-flight lock, so no load of this record can start meanwhile.
        let settled = daemon.records_loading.unless_in_flight(&id, || {
            linked_txns(journal, &record).and_then(|txns| {
                let (verdict, _, _) = decide(&record, &txns, None);
                apply_verdict(host, record.clone(), verdict, &txns, "cardd")
            })
        });
        let Some(result) = settled else {
            continue;
        };
        match result {
            Ok(now) if now.status != record.status => changed.push(now),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(record = %id, error = %e.message, "could not settle a record")
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_come_from_the_records_own_list_and_the_history_of_older_records() {
        let mut record = cardd_store::demo::demo_records().remove(0);
        let legacy = record.load_txn_id.clone().expect("demo load");
        // Written before the list existed: the history names the load.
        record.txn_ids.clear();
        assert_eq!(linked_txn_ids(&record), vec![legacy.clone()]);
        // Loaded many times since: every attempt is linked, oldest first, though the capped
        // history no longer names the early ones.
        let attempts: Vec<String> = (0..cardd_store::model::HISTORY_ENTRIES_MAX * 2)
            .map(|n| format!("T-{n}"))
            .collect();
        record.txn_ids = attempts.clone();
        record.load_txn_id = attempts.last().cloned();
        let mut expected = vec![legacy];
        expected.extend(attempts);
        assert_eq!(linked_txn_ids(&record), expected);
    }
}
