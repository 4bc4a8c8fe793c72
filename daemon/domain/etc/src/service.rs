//! The ETC service at the counter and the kiosk: loads tied to recharge records, the card's
//! evidence about a record, and a 修改圈存状态 that cannot load the same money twice.
//!
//! The seed's app lets staff set a record back to 未圈存 on their word alone; if the "failed"
//! write had in fact reached the card, the 二次圈存 that follows loads the money twice. Here a
//! record's money moves only with proof, and the proof comes from the card:
//!
//! * [`EtcService::load_record`] runs in one reader job: identify the card (number, vehicle,
//!   validity), settle what the card says about the record's earlier loads, mark the record
//!   圈存中 under a fresh journal transaction, run the journaled load
//!   (`cardd_journal::load_card`: intent durable before CREDIT, outcome durable before the
//!   answer), and record the outcome on the record.
//! * [`EtcService::evidence`] reads the card (and the journal) about one record and decides:
//!   landed, not landed, or unknown. A record whose status the evidence contradicts is corrected
//!   on the spot (a 圈存中 record whose load is on the card becomes 已圈存; one whose load the
//!   card proves absent goes back to 未圈存).
//! * [`EtcService::mark_not_loaded`] is the seed's 修改圈存状态: with the card, allowed only when
//!   the card proves the load did not land, refused with the evidence when it did; without the
//!   card, only a supervisor with a reason, and never against a journal that saw the card's TAC.
//! * [`EtcService::settle_card`] and [`EtcService::settle_at_start`] keep records and journal in
//!   step after recovery (card presented again, daemon restarted).
//!
//! **Invariant:** a record goes from 未圈存 to 圈存中 only inside the reader job that then sends
//! the credit; so a 圈存中 record whose transaction is not in the journal never reached CREDIT
//! (the intent is durable before CREDIT) and may safely go back to 未圈存, unless a load of it is
//! running right now (the service's in-flight set knows).

use std::sync::Arc;

use cardd_api::etc::{CardLogEvidence, Evidence, LoadEvidence, Verdict};
use cardd_api::{ErrorCode, Fen};
use cardd_journal::intent::card_blocked;
use cardd_journal::{
    check_watch, load_card, recover_card, Clock, InFlight, InFlightGuard, IntentOutcome,
    IntentOwners, Journal, LoadError, LoadReceipt, LoadRequest, LoadTxn, LostCardVerdict,
    Resolution, TxnState,
};
use cardd_purse::{EtcIssueInfo, LogRecord, Purse, SecurityModule, Sfi, TransactionType};
use cardd_reader::Reader;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{load_error, EtcError, HostError};
use crate::model::{RechargeRecord, RecordStatus, CHINA_OFFSET, MARK_NOT_LOADED_DONE_ZH};
use crate::IssuerHost;

/// Longest reason written on a record for a failed load, in characters (within the host's
/// `REASON_CHARS_MAX`).
const REASON_CHARS_KEPT: usize = 120;

/// How many log records of the card [`EtcService::evidence`] reads (the card keeps 10).
const LOG_RECORDS_READ: u8 = 10;

/// What the service reads from the daemon's configuration.
#[derive(Clone)]
pub struct EtcSettings {
    /// The ETC cards' PIN, verified before a load.
    pub etc_pin: String,
    /// The terminal number written into the card's log.
    pub terminal_id: [u8; 6],
    /// Fleet mode: the records are shared with other sites through the issuer host, which
    /// also tells of the loads other sites began. A record whose current load is not in this
    /// site's journal is another site's load: this site neither settles nor takes it back
    /// until it has adopted that load (from the host, when the card is presented here) and the
    /// card decided it. `None` on a single machine, where every load is in this journal.
    pub fleet: Option<Arc<dyn cardd_journal::ForeignIntents>>,
}

impl std::fmt::Debug for EtcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcSettings")
            .field("terminal_id", &hex::encode_upper(self.terminal_id))
            .finish_non_exhaustive()
    }
}

/// Where the service reports what a card on the lost-card watch list showed (the daemon's
/// audit log).
pub trait WatchAudit: Send + Sync + std::fmt::Debug {
    /// A card on the watch list was checked against `verdict`.
    fn watch_checked(&self, verdict: &LostCardVerdict);
}

/// The ETC service. Cheap to share behind an `Arc`; every method that reads a card runs
/// inside the caller's reader job.
pub struct EtcService {
    records: Arc<dyn IssuerHost>,
    /// `None` when the journal failed verification: loads and evidence fail closed.
    journal: Option<Arc<Journal>>,
    sam: Arc<dyn SecurityModule>,
    /// Records being loaded or settled right now.
    loading: InFlight,
    /// Every domain's owners of loads, for the exactly-once-per-intent check.
    owners: Arc<dyn IntentOwners>,
    watch: Arc<dyn WatchAudit>,
    clock: Arc<dyn Clock>,
    settings: EtcSettings,
}

impl std::fmt::Debug for EtcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcService")
            .field("records", &self.records)
            .field("journal", &self.journal)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What [`EtcService::load_record`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RecordLoad {
    pub record: RechargeRecord,
    /// The load, when this call credited the card.
    pub receipt: Option<LoadReceipt>,
    /// True when the money turned out to be on the card already (an earlier load that had
    /// landed): nothing was credited and the record now says 已圈存.
    pub already_on_card: bool,
}

/// The result of [`EtcService::mark_not_loaded`].
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    pub record: RechargeRecord,
    pub evidence: Evidence,
    pub message: String,
}

fn yuan(fen: impl Into<i64>) -> String {
    Fen(fen.into()).to_yuan_string()
}

fn record_of(host: &dyn IssuerHost, record_id: &str) -> Result<RechargeRecord, EtcError> {
    host.record(record_id)?.ok_or_else(|| {
        EtcError::refused(
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

fn linked_txns(journal: &Journal, record: &RechargeRecord) -> Result<Vec<LoadTxn>, EtcError> {
    let mut out = Vec::new();
    for id in linked_txn_ids(record) {
        if let Some(txn) = journal.get(&id).map_err(EtcError::from)? {
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
fn read_issue(purse: &mut Purse<'_>) -> Result<EtcIssueInfo, EtcError> {
    purse.select_etc_adf()?;
    let raw = purse.read_binary_sfi(Sfi::ISSUE, 0, 0)?;
    EtcIssueInfo::parse(&raw).map_err(|_| {
        EtcError::refused(
            ErrorCode::UnsupportedCard,
            "读卡器上不是 ETC 用户卡：请插入该车辆的 ETC 用户卡",
        )
    })
}

fn read_card(purse: &mut Purse<'_>) -> Result<CardView, EtcError> {
    purse.select_etc_adf()?;
    let balance_fen = purse.balance()?;
    let log = purse.read_log(LOG_RECORDS_READ)?;
    Ok(CardView { balance_fen, log })
}

/// Refuses a card that is not the record's.
fn check_card_is_records(info: &EtcIssueInfo, record: &RechargeRecord) -> Result<(), EtcError> {
    let found = info.card_number();
    if found != record.card_number {
        return Err(EtcError::refused(
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
        return Err(EtcError::refused(
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
fn check_validity(info: &EtcIssueInfo, now: OffsetDateTime) -> Result<(), EtcError> {
    let today = now.to_offset(CHINA_OFFSET);
    let today = (today.year() as u16, u8::from(today.month()), today.day());
    let show = |(y, m, d): (u16, u8, u8)| format!("{y:04}-{m:02}-{d:02}");
    if let Some(expiry) = info.expiry_date() {
        if expiry < today {
            return Err(EtcError::refused(
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
            return Err(EtcError::refused(
                ErrorCode::CardNotEligible,
                format!("卡片尚未启用（启用日期 {}），不能圈存", show(start)),
            ));
        }
    }
    Ok(())
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
) -> Result<RechargeRecord, EtcError> {
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

/// A load the card took (committed in the journal) whose record could not be updated: the
/// teller reads that the money is on the card, never a failure; the record follows the
/// journal when the card is presented again or at the next start-up.
fn loaded_but_not_recorded(record_id: &str, receipt: &LoadReceipt, e: HostError) -> EtcError {
    tracing::error!(record = record_id, txn = %receipt.txn_id, error = %e, "a committed load could not be recorded on its recharge record");
    EtcError::refused(
        e.code(),
        format!(
            "圈存已成功：卡内余额 {} 元，但充值记录 {record_id} 未能更新（{e}）；系统将根据圈存日志自动补记，切勿重复充值",
            yuan(receipt.balance_after_fen),
        ),
    )
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
            let reason: String = format!("卡片未被写入：{}", load_error(e))
                .chars()
                .take(REASON_CHARS_KEPT)
                .collect();
            host.abort_load_of(record_id, operator, &reason, txn_id)
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
            host.flag_reconciliation_of(record_id, operator, reason, txn_id)
        }
        // The intent is open (or the journal could not be read): the card decides later.
        IntentOutcome::Unknown(_) => return,
    };
    match outcome {
        // The record is not with this load (a fleet: the host never claimed it for this load,
        // or another load has it): nothing of this load to undo.
        Err(err @ (HostError::NotThisLoad { .. } | HostError::BadTransition { .. })) => {
            tracing::debug!(record = record_id, txn = txn_id, error = %err, "the failed load had not claimed its record");
        }
        Err(err) => {
            tracing::error!(record = record_id, error = %err, "could not record a failed load on its record");
        }
        Ok(_) => {}
    }
}

impl EtcService {
    /// The service over `records`, with the journal (`None`: it failed verification, and
    /// every load and evidence fails closed), the security module behind the funding check,
    /// the set of records being loaded, every domain's owners of loads, where watch-list checks
    /// are reported, the clock and the settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        records: Arc<dyn IssuerHost>,
        journal: Option<Arc<Journal>>,
        sam: Arc<dyn SecurityModule>,
        loading: InFlight,
        owners: Arc<dyn IntentOwners>,
        watch: Arc<dyn WatchAudit>,
        clock: Arc<dyn Clock>,
        settings: EtcSettings,
    ) -> EtcService {
        EtcService {
            records,
            journal,
            sam,
            loading,
            owners,
            watch,
            clock,
            settings,
        }
    }

    /// The records store.
    pub fn records(&self) -> &dyn IssuerHost {
        self.records.as_ref()
    }

    /// Records being loaded or settled right now.
    pub fn loading(&self) -> &InFlight {
        &self.loading
    }

    /// The journal, or the fail-closed refusal when it did not verify.
    pub fn journal(&self) -> Result<&Journal, EtcError> {
        self.journal.as_deref().ok_or_else(|| {
            EtcError::refused(
                ErrorCode::FailedClosed,
                "圈存日志未通过完整性检查，已停止写卡；请联系管理员",
            )
        })
    }

    /// Refuses a new credit to `card_number` while a load to it is unsettled, or while the card
    /// contradicts a lost-card verdict on one of its loads (exactly once per intent: see
    /// `cardd_journal::intent`).
    pub fn refuse_if_card_blocked(&self, card_number: &str) -> Result<(), EtcError> {
        match card_blocked(self.journal()?, self.owners.as_ref(), card_number)? {
            None => Ok(()),
            Some(b) => Err(EtcError::Blocked(b)),
        }
    }

    /// Resolves the card's open journal transaction, if any, from the card (reference §3).
    fn recover(&self, purse: &mut Purse<'_>) -> Result<(), EtcError> {
        let journal = self.journal()?;
        // A card on the watch list is checked against its lost-card verdicts first.
        let checked = check_watch(
            purse,
            self.sam.as_ref(),
            journal,
            &self.settings.etc_pin,
            cardd_crypto::Algorithm::Tdes,
        )
        .map_err(|e| load_error(&e))?;
        for verdict in &checked {
            self.watch.watch_checked(verdict);
        }
        recover_card(
            purse,
            self.sam.as_ref(),
            journal,
            &self.settings.etc_pin,
            cardd_crypto::Algorithm::Tdes,
        )
        .map(drop)
        .map_err(|e| load_error(&e))
    }

    /// Reads the record's card (when `purse` is given) and the journal, settles the card's open
    /// load from the card, decides, and corrects the record where the proof contradicts it. Runs
    /// inside a reader job when the card is read.
    fn examine(
        &self,
        purse: Option<&mut Purse<'_>>,
        record_id: &str,
        operator: &str,
    ) -> Result<(Evidence, RechargeRecord), EtcError> {
        let host = self.records.as_ref();
        let journal = self.journal()?;
        let record = record_of(host, record_id)?;
        let card = match purse {
            Some(purse) => {
                let info = read_issue(purse)?;
                check_card_is_records(&info, &record)?;
                if journal
                    .open_for_card(&record.card_number)
                    .map_err(EtcError::from)?
                    .is_some()
                {
                    self.recover(purse)?;
                }
                Some(read_card(purse)?)
            }
            None => None,
        };
        let txns = linked_txns(journal, &record)?;
        let (verdict, explanation, card_log) = decide(&record, &txns, card.as_ref());
        let record = if self.loading.contains(record_id) {
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
        &self,
        reader: Option<&mut Reader>,
        record_id: &str,
        operator: &str,
    ) -> Result<(Evidence, RechargeRecord), EtcError> {
        match reader {
            Some(reader) => {
                let mut purse = Purse::new(reader);
                self.examine(Some(&mut purse), record_id, operator)
            }
            None => self.examine(None, record_id, operator),
        }
    }

    /// Checks, before anything is asked or loaded, that the card in `reader` is the record's card
    /// (number and vehicle) and within its validity dates. Runs inside a reader job.
    pub fn check_card_for_record(
        &self,
        reader: &mut Reader,
        record_id: &str,
    ) -> Result<(), EtcError> {
        let record = record_of(self.records.as_ref(), record_id)?;
        let mut purse = Purse::new(reader);
        let info = read_issue(&mut purse)?;
        check_card_is_records(&info, &record)?;
        check_validity(&info, self.clock.now())
    }

    /// The first half of a load, without loading: refuses a record already 已圈存, checks the card
    /// in `purse` is the record's and valid, settles the card's open load from the card, and
    /// decides the record from its linked transactions. Returns the record as it is now: 已圈存
    /// when its money is on the card already, 未圈存 when it may be loaded; any other state is
    /// refused. The caller holds the record's loading claim.
    fn settle_from_card(
        &self,
        purse: &mut Purse<'_>,
        record_id: &str,
        operator: &str,
    ) -> Result<RechargeRecord, EtcError> {
        let host = self.records.as_ref();
        let journal = self.journal()?;
        let before_settle = record_of(host, record_id)?;
        if before_settle.status == RecordStatus::Loaded {
            return Err(EtcError::refused(
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
        check_validity(&info, self.clock.now())?;
        // In a fleet, a load of this card another site began and nobody settled is taken in
        // first, so that the card decides it here.
        if let Some(foreign) = &self.settings.fleet {
            cardd_journal::adopt_foreign(journal, foreign.as_ref(), &before_settle.card_number);
        }
        // What the card says about this record's earlier loads comes first.
        if journal
            .open_for_card(&before_settle.card_number)
            .map_err(EtcError::from)?
            .is_some()
        {
            if let Err(e) = self.recover(purse) {
                // The card could not settle its open load: the load is still pending; say which.
                self.refuse_if_card_blocked(&before_settle.card_number)?;
                return Err(e);
            }
        }
        let txns = linked_txns(journal, &before_settle)?;
        let record = if self.foreign_load(&before_settle, &txns) {
            before_settle
        } else {
            let (verdict, _, _) = decide(&before_settle, &txns, None);
            apply_verdict(host, before_settle, verdict, &txns, operator)?
        };
        match record.status {
            RecordStatus::Loaded | RecordStatus::NotLoaded => Ok(record),
            _ => Err(EtcError::refused(
                ErrorCode::CardEvidenceRequired,
                format!(
                    "充值记录 {record_id} 为{}：上一次圈存的结果尚未确认，请主管核对后再圈存",
                    record.status.label()
                ),
            )),
        }
    }

    /// Whether `record` is open under a load another site made (shared records only): its
    /// current load transaction is not among `txns`, this journal's transactions of it.
    fn foreign_load(&self, record: &RechargeRecord, txns: &[LoadTxn]) -> bool {
        self.settings.fleet.is_some()
            && record.status.is_open()
            && record
                .load_txn_id
                .as_deref()
                .is_some_and(|current| !txns.iter().any(|t| t.txn_id == current))
    }

    /// Marks the record as being loaded or settled, refusing while another run holds it.
    fn claim_record(&self, record_id: &str) -> Result<InFlightGuard, EtcError> {
        self.loading.claim(record_id).ok_or_else(|| {
            EtcError::refused(
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
        &self,
        reader: &mut Reader,
        record_id: &str,
        operator: &str,
    ) -> Result<RecordLoad, EtcError> {
        let _guard = self.claim_record(record_id)?;
        let mut purse = Purse::new(reader);
        let record = self.settle_from_card(&mut purse, record_id, operator)?;
        let already_on_card = record.status == RecordStatus::Loaded;
        if !already_on_card {
            // Asking makes no sense while another load to this card is still open.
            self.refuse_if_card_blocked(&record.card_number)?;
        }
        Ok(RecordLoad {
            record,
            receipt: None,
            already_on_card,
        })
    }

    /// Loads a 未圈存 record onto the card in `reader`, exactly once. Runs inside a reader job.
    pub fn load_record(
        &self,
        reader: &mut Reader,
        reader_id: &str,
        record_id: &str,
        operator: &str,
        txn_id: &str,
    ) -> Result<RecordLoad, EtcError> {
        let host = self.records.as_ref();
        let journal = self.journal()?;
        let _guard = self.claim_record(record_id)?;
        let mut purse = Purse::new(reader);
        let record = self.settle_from_card(&mut purse, record_id, operator)?;
        if record.status == RecordStatus::Loaded {
            return Ok(RecordLoad {
                record,
                receipt: None,
                already_on_card: true,
            });
        }
        // The card's own load is settled above; any other load to it still open (for another
        // record or a group order) blocks this credit until the card settles it.
        self.refuse_if_card_blocked(&record.card_number)?;
        let amount_fen = u32::try_from(record.amount_fen)
            .map_err(|_| EtcError::invalid_params("充值金额超出卡片可表示的范围"))?;
        let today = self.clock.now().to_offset(CHINA_OFFSET);
        let request = LoadRequest {
            txn_id: txn_id.to_owned(),
            amount_fen,
            terminal: self.settings.terminal_id,
            date: cardd_crypto::bcd::date(
                today.year() as u16,
                u8::from(today.month()),
                today.day(),
            ),
            time: cardd_crypto::bcd::time(today.hour(), today.minute(), today.second()),
            etc_pin: self.settings.etc_pin.clone(),
            expected_card: Some(record.card_number.clone()),
            city_algorithm: cardd_crypto::Algorithm::Tdes,
            funding: cardd_journal::Funding::EtcRecord {
                record_id: record.record_id.clone(),
            },
        };
        // On one machine the record is claimed here; in a fleet the host claims it when it
        // authorises the load (in the same transaction as the authorisation), so a host that
        // dies before authorising leaves the record 未圈存, and one that dies after leaves an
        // authorisation that any site settles from the card.
        if self.settings.fleet.is_none() {
            host.begin_load(record_id, operator, txn_id)?;
        }
        match load_card(&mut purse, self.sam.as_ref(), journal, reader_id, &request) {
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
            // Restored from a backup: the card's log proves this record was loaded after the
            // backup. Nothing was loaded now; the record is set to 已圈存 citing the card.
            Err(LoadError::LoadedSinceBackup(claim)) => {
                let record = self.loaded_since_backup(record_id, operator, txn_id, &claim)?;
                Ok(RecordLoad {
                    record,
                    receipt: None,
                    already_on_card: true,
                })
            }
            Err(e) => {
                settle_failed_load(host, journal, record_id, operator, txn_id, &e);
                Err(load_error(&e))
            }
        }
    }

    /// Sets a record the card proved loaded after the backup (restored mode) to 已圈存: the
    /// card's balances of that load are unknown, so it goes through 待核对 with the card's log
    /// record as the reason.
    fn loaded_since_backup(
        &self,
        record_id: &str,
        operator: &str,
        txn_id: &str,
        claim: &cardd_journal::Claim,
    ) -> Result<RechargeRecord, EtcError> {
        let host = self.records.as_ref();
        let reason = format!(
            "系统从备份恢复后核对：卡片交易记录显示该笔充值已于 {} 圈存到卡内（联机交易序号 {}）",
            claim.card_time, claim.atc
        );
        let current = record_of(host, record_id)?;
        if current.status == RecordStatus::NotLoaded {
            host.begin_load(record_id, operator, txn_id)?;
        }
        if current.status != RecordStatus::NeedsReconciliation {
            host.flag_reconciliation(record_id, operator, &reason)?;
        }
        Ok(host.resolve_reconciliation(record_id, operator, true, &reason)?)
    }

    /// 修改圈存状态: sets a record back to 未圈存 for 二次圈存, only when that is safe (see the
    /// module documentation). With `reader`, runs inside a reader job.
    pub fn mark_not_loaded(
        &self,
        reader: Option<&mut Reader>,
        record_id: &str,
        operator: &str,
        supervisor: bool,
        reason: Option<&str>,
    ) -> Result<MarkOutcome, EtcError> {
        let host = self.records.as_ref();
        let current = record_of(host, record_id)?;
        if current.status == RecordStatus::NotLoaded {
            return Err(EtcError::refused(
                ErrorCode::RecordStateConflict,
                format!("充值记录 {record_id} 已是未圈存，可以直接圈存"),
            ));
        }
        if self.loading.contains(record_id) {
            return Err(EtcError::refused(
                ErrorCode::RecordStateConflict,
                format!("充值记录 {record_id} 正在圈存，请等待本次圈存结束"),
            ));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let with_card = reader.is_some();
        if !with_card && !supervisor {
            return Err(EtcError::refused(
                ErrorCode::CardEvidenceRequired,
                "请将该记录的用户卡插入读卡器，由系统核对卡片后再修改；没有卡片时只有主管可以填写原因后修改",
            )
            .with_detail(serde_json::json!({ "reason_required": false })));
        }
        let (evidence, record) = self.evidence(reader, record_id, operator)?;
        match evidence.verdict {
            Verdict::Landed => {
                let explanation = evidence.explanation.clone();
                let detail = serde_json::json!({ "evidence": evidence, "record": record });
                return Err(EtcError::refused(
                    ErrorCode::LoadLanded,
                    format!(
                        "不能改为未圈存：{explanation}。记录状态为{}",
                        record.status.label()
                    ),
                )
                .with_detail(detail));
            }
            Verdict::Unknown if !supervisor => {
                return Err(EtcError::refused(
                    ErrorCode::CardEvidenceRequired,
                    format!("{}（需主管办理）", evidence.explanation),
                )
                .with_detail(
                    serde_json::json!({ "evidence": evidence, "reason_required": false }),
                ));
            }
            // The same code as the teller's refusal: the caller may decide, but only with a reason;
            // `reason_required` tells a client to ask for one and call again.
            Verdict::Unknown if reason.is_none() => {
                return Err(EtcError::refused(
                    ErrorCode::CardEvidenceRequired,
                    "卡片不能证明该笔圈存未写入，主管修改圈存状态必须填写原因",
                )
                .with_detail(
                    serde_json::json!({ "evidence": evidence, "reason_required": true }),
                ));
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
            self.resolve_journal(&record, false, operator, &why)?;
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
            message: MARK_NOT_LOADED_DONE_ZH.into(),
        })
    }

    /// Settles the record's journal transactions that await reconciliation as a person decided.
    /// Transactions still in `intent` are left for the card to decide when it is presented.
    fn resolve_journal(
        &self,
        record: &RechargeRecord,
        loaded: bool,
        operator: &str,
        reason: &str,
    ) -> Result<(), EtcError> {
        let journal = self.journal()?;
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
            journal
                .resolve(&txn.txn_id, state)
                .map_err(EtcError::from)?;
        }
        Ok(())
    }

    /// A supervisor settles a 待核对 record: `loaded` is the person's verdict, `reason` why. With
    /// the card, its evidence must not contradict the verdict. Runs inside a reader job when the
    /// card is read.
    pub fn resolve_record(
        &self,
        reader: Option<&mut Reader>,
        record_id: &str,
        operator: &str,
        loaded: bool,
        reason: &str,
    ) -> Result<RechargeRecord, EtcError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(EtcError::invalid_params("核对结论必须填写原因"));
        }
        if self.loading.contains(record_id) {
            return Err(EtcError::refused(
                ErrorCode::RecordStateConflict,
                format!("充值记录 {record_id} 正在圈存，请等待本次圈存结束"),
            ));
        }
        let (evidence, record) = self.evidence(reader, record_id, operator)?;
        match (evidence.verdict, loaded) {
            (Verdict::Landed, false) => {
                return Err(EtcError::refused(
                    ErrorCode::LoadLanded,
                    format!("不能核对为未圈存：{}", evidence.explanation),
                )
                .with_detail(serde_json::json!({ "evidence": evidence })))
            }
            (Verdict::NotLanded, true) => {
                return Err(EtcError::refused(
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
            return Err(EtcError::refused(
                ErrorCode::RecordStateConflict,
                format!(
                    "充值记录 {record_id} 为{}，不是待核对；{}",
                    record.status.label(),
                    evidence.explanation
                ),
            ));
        }
        self.resolve_journal(&record, loaded, operator, reason)?;
        Ok(self
            .records
            .as_ref()
            .resolve_reconciliation(record_id, operator, loaded, reason)?)
    }

    /// Settles, from the journal alone, the 圈存中 and 待核对 records of `card_number` whose load is
    /// decided (after recovery read the card, or a person's verdict in the journal). Returns the
    /// records changed.
    pub fn settle_card(&self, card_number: &str) -> Vec<RechargeRecord> {
        let host = self.records.as_ref();
        let Ok(journal) = self.journal() else {
            return Vec::new();
        };
        let records = match host.records_for_card(card_number, None) {
            Ok(r) => r.into_iter().filter(|r| r.status.is_open()).collect(),
            Err(e) => {
                tracing::error!(card = card_number, error = %e, "could not list the card's records");
                return Vec::new();
            }
        };
        self.settle_records(host, journal, records)
    }

    /// At start-up: settles every 圈存中 record whose load the journal has decided, or whose load
    /// never reached the journal (so never reached the card).
    pub fn settle_at_start(&self) -> Vec<RechargeRecord> {
        let host = self.records.as_ref();
        let Ok(journal) = self.journal() else {
            return Vec::new();
        };
        match host.open_records() {
            Ok(records) => {
                let loading = records
                    .into_iter()
                    .filter(|r| r.status == RecordStatus::Loading)
                    .collect();
                self.settle_records(host, journal, loading)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not list the open recharge records");
                Vec::new()
            }
        }
    }

    fn settle_records(
        &self,
        host: &dyn IssuerHost,
        journal: &Journal,
        records: Vec<RechargeRecord>,
    ) -> Vec<RechargeRecord> {
        let mut changed = Vec::new();
        for record in records {
            let id = record.record_id.clone();
            // Settled under the in-flight lock, so no load of this record can start meanwhile.
            let settled = self.loading.unless_in_flight(&id, || {
                linked_txns(journal, &record).and_then(|txns| {
                    if self.foreign_load(&record, &txns) {
                        return Ok(record.clone());
                    }
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
                    tracing::error!(record = %id, error = %e, "could not settle a record")
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PlateColour, RecordAction, RecordChange};

    /// A 已圈存 record whose load the history names.
    fn demo_record() -> RechargeRecord {
        let at = time::macros::datetime!(2025-03-01 10:00:00 +8);
        let change = |action, from, to, txn_id: Option<&str>| RecordChange {
            at,
            operator: "teller".into(),
            action,
            from,
            to,
            reason: None,
            txn_id: txn_id.map(str::to_owned),
            balance_before_fen: None,
            balance_after_fen: None,
        };
        RechargeRecord {
            record_id: "R1".into(),
            card_number: "61011801000000000001".into(),
            plate: "陕A12345".into(),
            plate_colour: PlateColour {
                code: 0,
                label: "蓝色".into(),
            },
            amount_fen: 20_000,
            balance_before_fen: Some(0),
            balance_after_fen: Some(20_000),
            recharged_at: at,
            channel: "银行柜台".into(),
            status: RecordStatus::Loaded,
            load_txn_id: Some("T-demo".into()),
            loaded_at: Some(at),
            history: vec![
                change(RecordAction::Recharge, None, RecordStatus::NotLoaded, None),
                change(
                    RecordAction::BeginLoad,
                    Some(RecordStatus::NotLoaded),
                    RecordStatus::Loading,
                    Some("T-demo"),
                ),
            ],
            txn_ids: vec!["T-demo".into()],
        }
    }

    #[test]
    fn links_come_from_the_records_own_list_and_the_history_of_older_records() {
        let mut record = demo_record();
        let legacy = record.load_txn_id.clone().expect("demo load");
        // Written before the list existed: the history names the load.
        record.txn_ids.clear();
        assert_eq!(linked_txn_ids(&record), vec![legacy.clone()]);
        // Loaded many times since: every attempt is linked, oldest first, though the capped
        // history no longer names the early ones.
        let attempts: Vec<String> = (0..crate::model::HISTORY_ENTRIES_MAX * 2)
            .map(|n| format!("T-{n}"))
            .collect();
        record.txn_ids = attempts.clone();
        record.load_txn_id = attempts.last().cloned();
        let mut expected = vec![legacy];
        expected.extend(attempts);
        assert_eq!(linked_txn_ids(&record), expected);
    }
}
