//! [`PgLedger`]: the host's load authorisations in PostgreSQL, each written in the same
//! transaction that claims the record it pays with.
//!
//! * **authorize** ([`AuthorizationLog::authorized`]): one serializable transaction reads the
//!   funded record, checks it is this card's and of this amount, moves it 未圈存 → 圈存中 under
//!   the load's transaction (already 圈存中 under it: a site began it, or a retry) and inserts
//!   the authorisation (`authorized`). Only after the commit does the authority compute MAC2.
//!   The same transaction asked again with the same card, counter and terms is answered again.
//! * **confirm** ([`AuthorizationLog::booked`], after the TAC verified with the host's keys):
//!   one transaction finds the authorisation by the card and its counter, marks it `booked`
//!   with the TAC and books the record 已圈存 with the card's balances. Booking it again with
//!   the same TAC succeeds; the record follows whatever state it was left in (待核对 is resolved
//!   as loaded, a record wrongly set back to 未圈存 is loaded again under this transaction):
//!   a verified TAC is the card's proof that the money is there.
//! * a TAC that did not verify ([`AuthorizationLog::tac_refused`]) marks the authorisation
//!   `reconcile` and the record 待核对.
//! * people's verdicts on loads no card settled (待核对, [`crate::review`]) are checked against
//!   the card's online counter in the authorize transaction of the card's next load; a verdict
//!   the card contradicts is recorded in a transaction of its own (record back to 待核对) before
//!   the load is tried again, so a wrongly released record is never loaded twice. A verified
//!   TAC judges such a verdict too.
//!
//! Everything is on disk before the host answers, so a host restarted between MAC2 and the TAC
//! confirms the load from the table; nothing is kept in memory.
//!
//! **The caller is admitted in the step's own transaction** ([`AuthorizationLog::authorized_by`],
//! [`AuthorizationLog::booked_by`] with the certificate a site connected with): the site
//! directory (`sites`, [`crate::PgSites`]) is read in the same serializable transaction, and a
//! site unknown, disabled or presenting a certificate other than the one issued to it last is
//! refused before anything is claimed or booked. A site disabled by any process is so refused
//! at its next step, on a connection opened before, at no extra transaction.
//!
//! **Group orders** (`Funding::GroupOrder`, 集团充值) are authorised the same way: in the one
//! serializable transaction the order must exist, be 充值中 (`reserved`: its quota is already
//! taken), be for this card, amount and load transaction, and the authorisation
//! (`funding_kind = 'group_order'`) is inserted; a verified TAC settles the order 充值成功 with
//! the card's balances in the transaction that books the authorisation (an order already
//! failed is set right: the card proved the money is there); a TAC that did not verify leaves
//! the order 结果待确认 for a person, as the group domain does with an unknown outcome. The site's
//! own later settlement with the same balances is answered, not refused.
//!
//! [`PgLedger`] is also the [`LoadGate`] of the host's keys: it accepts only loads paid by a
//! recharge record or a group order (the claim itself is made by `authorized`, atomically with
//! the log).

use std::sync::Arc;

use cardd_authority::{AuthorizationLog, AuthorizeRequest, Caller, ConfirmRequest, OpenLoad};
use cardd_etc::change::ChangeRequest;
use cardd_etc::{HostError, RecordAction, RecordStatus};
use cardd_journal::clock::{china_seconds, Clock};
use cardd_purse::{CardKeyContext, Funding, LoadAuthorization, SamError};
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::audit::{append_in, HostAuditEntry};
use crate::db::TxResult;
use crate::db::{body, Database, Mode, TxError};
use crate::group::{change_order_in, order_in, Effect, FromStatus};
use crate::host::{change_in, record_in};
use crate::review::{check_card_in, record_contradiction_in, Contradicted, ReviewError};
use cardd_group::model::OrderStatus;
use cardd_group::GroupError;

/// Most open loads of one card listed for a site (a card has one at a time; more is damage).
pub const OPEN_LOADS_MAX: i64 = 16;

/// Who the records' history names for changes the host makes for a site (`cardd-host@S1`).
pub const HOST_OPERATOR: &str = "cardd-host";

/// The state of an authorisation, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationState {
    /// MAC2 given; the outcome is unknown until the TAC or the card settles it.
    Authorized,
    /// The TAC verified: the money is on the card.
    Booked,
    /// The card proved the load did not land.
    Released,
    /// A person must decide.
    Reconcile,
}

impl AuthorizationState {
    /// The stored name.
    pub fn code(self) -> &'static str {
        match self {
            AuthorizationState::Authorized => "authorized",
            AuthorizationState::Booked => "booked",
            AuthorizationState::Released => "released",
            AuthorizationState::Reconcile => "reconcile",
        }
    }

    fn from_code(code: &str) -> Option<AuthorizationState> {
        [
            AuthorizationState::Authorized,
            AuthorizationState::Booked,
            AuthorizationState::Released,
            AuthorizationState::Reconcile,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

/// One authorisation, as an auditor or a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRow {
    pub txn_id: String,
    pub site_id: String,
    pub card_number: String,
    pub online_atc: u16,
    pub amount_fen: i64,
    pub funding_id: String,
    pub state: AuthorizationState,
    pub tac: Option<String>,
}

/// The host's load authorisations on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgLedger {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

fn refused(reason: impl Into<String>) -> SamError {
    SamError::LoadNotFunded {
        reason: reason.into(),
    }
}

/// The card as the table keys it: issuer factor and card factor, in hex.
fn card_key(card: &CardKeyContext) -> String {
    format!("{}{}", hex::encode(card.issuer4), hex::encode(card.card8))
}

/// The operator the records' history names for the host acting for `site`.
fn operator(site: &str) -> String {
    format!("{HOST_OPERATOR}@{site}")
}

impl From<HostError> for TxError<SamError> {
    fn from(e: HostError) -> Self {
        TxError::Refused(refused(e.to_string()))
    }
}

impl From<crate::audit::AuditError> for SamError {
    fn from(e: crate::audit::AuditError) -> Self {
        refused(format!("发卡方后台无法记录审计日志：{e}"))
    }
}

/// The audit record of a load step, written in the step's own transaction.
fn audit_entry(
    site: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> HostAuditEntry {
    HostAuditEntry {
        chain: site.to_owned(),
        actor: site.to_owned(),
        action: action.to_owned(),
        target: Some(target.to_owned()),
        detail,
        outcome: "ok".into(),
    }
}

impl From<crate::db::DbFailure> for SamError {
    fn from(e: crate::db::DbFailure) -> Self {
        refused(format!("发卡方后台数据库不可用：{e}"))
    }
}

/// A group store refusal inside a ledger transaction.
fn group_refusal(e: TxError<GroupError>) -> TxError<SamError> {
    match e {
        TxError::Refused(g) => TxError::Refused(refused(g.to_string())),
        TxError::Db(d) => TxError::Db(d),
    }
}

/// How an authorisation is paid, as stored: `(funding_kind, funding_id)`.
fn funding_of(funding: &Funding) -> Result<(&'static str, &str), SamError> {
    match funding {
        Funding::EtcRecord { record_id } => Ok(("etc_record", record_id)),
        Funding::GroupOrder { order_id } => Ok(("group_order", order_id)),
        other => Err(refused(format!(
            "{other} is not paid through this host's recharge records or group orders"
        ))),
    }
}

/// A record store refusal inside a ledger transaction.
fn host_refusal(e: TxError<HostError>) -> TxError<SamError> {
    match e {
        TxError::Refused(h) => h.into(),
        TxError::Db(d) => TxError::Db(d),
    }
}

impl PgLedger {
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgLedger {
        PgLedger { db, clock }
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    /// Every authorisation of a card, oldest first (auditors, tests).
    pub fn authorizations_for_card(
        &self,
        card_number: &str,
    ) -> Result<Vec<AuthorizationRow>, HostError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取圈存授权",
            body!(|c| async {
                let rows = c
                    .query(
                        "SELECT txn_id, site_id, card_number, online_atc, amount_fen, funding_id, \
                                state, tac FROM load_authorizations WHERE card_number = $1 \
                         ORDER BY authorized_at, txn_id",
                        &[&card_number],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        let state: String = r.get(6);
                        let atc: i32 = r.get(3);
                        Ok(AuthorizationRow {
                            txn_id: r.get(0),
                            site_id: r.get(1),
                            card_number: r.get(2),
                            online_atc: u16::try_from(atc).unwrap_or(u16::MAX),
                            amount_fen: r.get(4),
                            funding_id: r.get(5),
                            state: AuthorizationState::from_code(&state).ok_or_else(|| {
                                TxError::Refused(HostError::Corrupt {
                                    key: r.get(0),
                                    reason: format!("unknown authorisation state {state}"),
                                })
                            })?,
                            tac: r.get(7),
                        })
                    })
                    .collect::<Result<Vec<_>, TxError<HostError>>>()
            }),
        ))
    }
}

/// One authorisation with what an auditor weighs (the back office's card evidence): when it
/// was given and settled, by whom and why, and the card's balance before the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDetail {
    pub row: AuthorizationRow,
    /// The card's balance before the load, as the card reported it (fen).
    pub balance_before_fen: i64,
    pub authorized_at: OffsetDateTime,
    pub settled_at: Option<OffsetDateTime>,
    /// Who settled it: the host for a site (`cardd-host@S01`) or a person.
    pub settled_by: Option<String>,
    pub reason: Option<String>,
}

impl PgLedger {
    /// The authorisation of the load transaction `txn_id`, if the host gave one.
    pub fn authorization(&self, txn_id: &str) -> Result<Option<AuthorizationDetail>, HostError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取圈存授权",
            body!(|c| async {
                let Some(r) = c
                    .query_opt(
                        "SELECT txn_id, site_id, card_number, online_atc, amount_fen, funding_id, \
                                state, tac, balance_before_fen, authorized_at, settled_at, \
                                settled_by, reason \
                         FROM load_authorizations WHERE txn_id = $1",
                        &[&txn_id],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let state: String = r.get(6);
                let atc: i32 = r.get(3);
                let settled_at: Option<OffsetDateTime> = r.get(10);
                Ok(Some(AuthorizationDetail {
                    row: AuthorizationRow {
                        txn_id: r.get(0),
                        site_id: r.get(1),
                        card_number: r.get(2),
                        online_atc: u16::try_from(atc).unwrap_or(u16::MAX),
                        amount_fen: r.get(4),
                        funding_id: r.get(5),
                        state: AuthorizationState::from_code(&state).ok_or_else(|| {
                            TxError::Refused(HostError::Corrupt {
                                key: r.get(0),
                                reason: format!("unknown authorisation state {state}"),
                            })
                        })?,
                        tac: r.get(7),
                    },
                    balance_before_fen: r.get(8),
                    authorized_at: china_seconds(r.get(9)),
                    settled_at: settled_at.map(china_seconds),
                    settled_by: r.get(11),
                    reason: r.get(12),
                }))
            }),
        ))
    }
}

impl cardd_authority::LoadGate for PgLedger {
    /// Accepts loads paid by a recharge record or a group order; the record or order is
    /// claimed with the authorisation.
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        funding_of(&request.funding).map(|_| ())
    }
}

/// Refuses, in the caller's transaction, a site that is no longer admitted: unknown, disabled,
/// or presenting a certificate other than the one issued to it last. A caller without a
/// certificate was admitted by construction. Read in the step's own serializable transaction,
/// a site disabled by any process before the step commits is refused, at no extra transaction.
async fn admitted_in(c: &Client, caller: &Caller<'_>) -> TxResult<(), SamError> {
    let Some(certificate) = caller.certificate else {
        return Ok(());
    };
    let site = caller.site;
    let row = c
        .query_opt(
            "SELECT enabled, cert_fingerprint FROM sites WHERE site_id = $1",
            &[&site],
        )
        .await?;
    let why = match row {
        None => format!("站点 {site} 未在发卡方后台登记：请先在后台登记该站点"),
        Some(r) if !r.get::<_, bool>(0) => {
            format!("站点 {site} 已在发卡方后台停用：请后台管理员启用后再试")
        }
        Some(r) => {
            let issued: String = r.get(1);
            let same = issued
                .parse::<cardd_fleet::CertFingerprint>()
                .is_ok_and(|fp| fp.to_string() == certificate);
            if same {
                return Ok(());
            }
            format!("站点 {site} 的证书已重新签发或吊销：请安装该站点当前的证书")
        }
    };
    Err(TxError::Refused(refused(why)))
}

/// Claims the record and inserts the authorisation, in the caller's transaction.
async fn authorize_in(
    c: &Client,
    site: &str,
    request: &AuthorizeRequest,
    request_json: &serde_json::Value,
    mac2: &str,
    at: OffsetDateTime,
) -> TxResult<Vec<Contradicted>, SamError> {
    let (kind, funding_id) = funding_of(&request.funding).map_err(TxError::Refused)?;
    let key = card_key(&request.card);
    let atc = i32::from(request.init.online_atc);
    let amount = i64::from(request.terms.amount);
    if let Some(row) = c
        .query_opt(
            "SELECT card_key, online_atc, amount_fen, funding_id, funding_kind \
             FROM load_authorizations WHERE txn_id = $1",
            &[&request.txn_id],
        )
        .await?
    {
        let same = row.get::<_, String>(0) == key
            && row.get::<_, i32>(1) == atc
            && row.get::<_, i64>(2) == amount
            && row.get::<_, String>(3) == funding_id
            && row.get::<_, String>(4) == kind;
        return if same {
            Ok(Vec::new())
        } else {
            Err(TxError::Refused(refused(format!(
                "transaction {} was authorised for another load",
                request.txn_id
            ))))
        };
    }
    // The card's counter checks the people's verdicts on its earlier loads first.
    let contradicted = check_card_in::<SamError>(c, &key, request.init.online_atc, at).await?;
    if !contradicted.is_empty() {
        return Ok(contradicted);
    }
    if kind == "group_order" {
        claim_order_in(c, funding_id, request).await?;
    } else {
        claim_record_in(c, site, funding_id, request, at).await?;
    }
    append_in::<SamError>(
        c,
        &audit_entry(
            site,
            "host.authorize",
            &request.card_number,
            serde_json::json!({
                "txn_id": request.txn_id,
                "funding": funding_id,
                "amount_fen": amount,
                "online_atc": atc,
            }),
        ),
        at,
    )
    .await?;
    c.execute(
        "INSERT INTO load_authorizations (txn_id, site_id, card_number, card_key, online_atc, \
             amount_fen, balance_before_fen, funding_kind, funding_id, request, mac2, state, \
             authorized_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'authorized', $12)",
        &[
            &request.txn_id,
            &site,
            &request.card_number,
            &key,
            &atc,
            &amount,
            &i64::from(request.init.old_balance),
            &kind,
            &funding_id,
            request_json,
            &mac2,
            &at,
        ],
    )
    .await?;
    Ok(Vec::new())
}

/// Checks, in the caller's transaction, that the group order pays this load: it exists, is
/// 充值中 (its quota taken, nothing settled), is for this card, amount and load transaction,
/// and no other transaction was authorised for it.
async fn claim_order_in(
    c: &Client,
    order_id: &str,
    request: &AuthorizeRequest,
) -> TxResult<(), SamError> {
    let order = order_in(c, order_id)
        .await
        .map_err(group_refusal)?
        .ok_or_else(|| TxError::Refused(refused(format!("no group order {order_id}"))))?;
    let amount = i64::from(request.terms.amount);
    let why = if order.status != OrderStatus::Reserved {
        Some(format!(
            "group order {order_id} is {}, not reserved",
            order.status.code()
        ))
    } else if order.card_number != request.card_number {
        Some(format!(
            "group order {order_id} is for card {}, not {}",
            order.card_number, request.card_number
        ))
    } else if order.amount_fen != amount {
        Some(format!(
            "group order {order_id} pays {} fen, not {amount}",
            order.amount_fen
        ))
    } else if order.txn_id != request.txn_id {
        Some(format!(
            "group order {order_id} is for load transaction {}, not {}",
            order.txn_id, request.txn_id
        ))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(TxError::Refused(refused(why)));
    }
    let other = c
        .query_opt(
            "SELECT txn_id FROM load_authorizations WHERE funding_kind = 'group_order' \
             AND funding_id = $1 AND txn_id <> $2 LIMIT 1",
            &[&order_id, &request.txn_id],
        )
        .await?;
    if let Some(other) = other {
        return Err(TxError::Refused(refused(format!(
            "group order {order_id} was authorised under transaction {}",
            other.get::<_, String>(0)
        ))));
    }
    Ok(())
}

/// Claims the recharge record for this load (未圈存 → 圈存中), in the caller's transaction.
async fn claim_record_in(
    c: &Client,
    site: &str,
    record_id: &str,
    request: &AuthorizeRequest,
    at: OffsetDateTime,
) -> TxResult<(), SamError> {
    let amount = i64::from(request.terms.amount);
    let record = record_in(c, record_id, true)
        .await
        .map_err(host_refusal)?
        .ok_or_else(|| TxError::Refused(refused(format!("no recharge record {record_id}"))))?;
    if record.card_number != request.card_number {
        return Err(TxError::Refused(refused(format!(
            "record {record_id} belongs to card {}, not {}",
            record.card_number, request.card_number
        ))));
    }
    if record.amount_fen != amount {
        return Err(TxError::Refused(refused(format!(
            "record {record_id} pays {} fen, not {amount}",
            record.amount_fen
        ))));
    }
    let claim = ChangeRequest::begin_load(&operator(site), &request.txn_id)
        .map_err(|e| TxError::Refused(refused(e.to_string())))?;
    change_in(c, record_id, &claim, at)
        .await
        .map_err(host_refusal)?;
    Ok(())
}

/// Settles the group order of a load whose TAC verified: 充值成功 with the card's balances,
/// from whatever state it is in (充值中 or 结果待确认; 充值失败 is set right, the card proved the
/// money is there; already 充值成功: nothing to do). A refunded order cannot be undone here: it
/// is reported for an auditor.
async fn book_order_in(
    c: &Client,
    site: &str,
    order_id: &str,
    txn_id: &str,
    before: i64,
    amount: i64,
    at: OffsetDateTime,
) -> TxResult<(), SamError> {
    let Some(order) = order_in(c, order_id).await.map_err(group_refusal)? else {
        return Err(TxError::Refused(refused(format!(
            "no group order {order_id}"
        ))));
    };
    let op = operator(site);
    let balances = Effect::Balances(Some((before, before + amount)));
    match order.status {
        OrderStatus::Reserved | OrderStatus::Pending => {
            change_order_in(
                c,
                order_id,
                FromStatus::Unsettled,
                OrderStatus::Succeeded,
                "确认充值成功",
                &op,
                None,
                &balances,
                at,
            )
            .await
            .map_err(group_refusal)?;
        }
        OrderStatus::Failed => {
            let why = format!("发卡方后台核验卡片 TAC，证实圈存交易 {txn_id} 已写入卡内");
            change_order_in(
                c,
                order_id,
                FromStatus::Exactly(OrderStatus::Failed),
                OrderStatus::Succeeded,
                "改为充值成功",
                &op,
                Some(&why),
                &balances,
                at,
            )
            .await
            .map_err(group_refusal)?;
        }
        OrderStatus::Succeeded => {}
        OrderStatus::Refunded => {
            tracing::error!(order = order_id, txn = txn_id, "the card proves a refunded group order's load landed: an auditor must recover the refund");
        }
    }
    Ok(())
}

/// The authorisation of this card, counter and amount: an open one first (a counter repeats
/// only after a load that did not land), then the latest settled one: `(txn, state, tac,
/// funding, balance before)`.
async fn find_in(
    c: &Client,
    request: &ConfirmRequest,
) -> TxResult<Option<(String, AuthorizationState, Option<String>, Funded, i64)>, SamError> {
    let row = c
        .query_opt(
            "SELECT txn_id, state, tac, funding_id, balance_before_fen, funding_kind \
             FROM load_authorizations \
             WHERE card_key = $1 AND online_atc = $2 AND amount_fen = $3 \
             ORDER BY state <> 'authorized', state = 'released', authorized_at DESC, txn_id \
             LIMIT 1",
            &[
                &card_key(&request.card),
                &i32::from(request.init.online_atc),
                &i64::from(request.terms.amount),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state: String = row.get(1);
    let state = AuthorizationState::from_code(&state)
        .ok_or_else(|| TxError::Refused(refused(format!("unknown authorisation state {state}"))))?;
    let funded = if row.get::<_, String>(5) == "group_order" {
        Funded::Order(row.get(3))
    } else {
        Funded::Record(row.get(3))
    };
    Ok(Some((row.get(0), state, row.get(2), funded, row.get(4))))
}

/// What an authorisation is paid by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Funded {
    Record(String),
    Order(String),
}

/// A verified TAC judges the confirmed verdict on its load (if one waits for the card): right
/// when it said landed, contradicted when it said not.
async fn verdict_meets_tac_in(
    c: &Client,
    txn_id: &str,
    at: OffsetDateTime,
) -> TxResult<(), SamError> {
    c.execute(
        "UPDATE load_verdicts SET card_check = CASE WHEN landed THEN 'agreed' \
             ELSE 'contradicted' END, card_checked_at = $2, \
             card_evidence = '卡片 TAC 经发卡方后台验证，证实该笔圈存已写入卡内' \
         WHERE txn_id = $1 AND state = 'confirmed' AND card_check = 'waiting'",
        &[&txn_id, &at],
    )
    .await?;
    Ok(())
}

/// Books the record of a load whose TAC verified, from whatever state it is in.
async fn book_record_in(
    c: &Client,
    site: &str,
    record_id: &str,
    txn_id: &str,
    before: i64,
    amount: i64,
    at: OffsetDateTime,
) -> TxResult<(), SamError> {
    let op = operator(site);
    let Some(record) = record_in(c, record_id, true).await.map_err(host_refusal)? else {
        return Err(TxError::Refused(refused(format!(
            "no recharge record {record_id}"
        ))));
    };
    let to_refusal = |e: HostError| TxError::Refused(refused(e.to_string()));
    let finish = ChangeRequest::finish_load(&op, before, before + amount).map_err(to_refusal)?;
    match record.status {
        RecordStatus::Loading if record.load_txn_id.as_deref() == Some(txn_id) => {
            change_in(c, record_id, &finish, at)
                .await
                .map_err(host_refusal)?;
        }
        RecordStatus::NotLoaded => {
            let begin = ChangeRequest::begin_load(&op, txn_id).map_err(to_refusal)?;
            change_in(c, record_id, &begin, at)
                .await
                .map_err(host_refusal)?;
            change_in(c, record_id, &finish, at)
                .await
                .map_err(host_refusal)?;
        }
        RecordStatus::NeedsReconciliation => {
            let resolve = ChangeRequest::with_reason(
                RecordAction::ResolveReconciliation,
                &op,
                &format!("发卡方后台核验卡片 TAC，证实圈存交易 {txn_id} 已写入卡内"),
                true,
            )
            .map_err(to_refusal)?;
            change_in(c, record_id, &resolve, at)
                .await
                .map_err(host_refusal)?;
        }
        // 已圈存 (by the site, or a retry), or 圈存中 under another transaction of this record
        // (its own load will settle it): the record already says the money is on a card.
        _ => {}
    }
    Ok(())
}

impl AuthorizationLog for PgLedger {
    fn authorized(
        &self,
        site: &str,
        request: &AuthorizeRequest,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        self.authorized_by(&Caller::trusted(site), request, mac2)
    }

    fn booked(&self, site: &str, request: &ConfirmRequest) -> Result<(), SamError> {
        self.booked_by(&Caller::trusted(site), request)
    }

    /// The site directory (`sites`) is in this database: each step checks its caller there.
    fn admits_callers(&self) -> bool {
        true
    }

    fn authorized_by(
        &self,
        caller: &Caller<'_>,
        request: &AuthorizeRequest,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        let site = caller.site;
        let at = self.now();
        let json = serde_json::to_value(request)
            .map_err(|e| refused(format!("the authorisation could not be encoded: {e}")))?;
        let (json, mac2) = (&json, &hex::encode_upper(mac2));
        // At most once: a contradiction found is recorded, and its verdict no longer waits.
        for _ in 0..2 {
            let found = self.db.call(self.db.transaction(
                Mode::Write,
                "记录圈存授权",
                body!(|c| async {
                    admitted_in(c, caller).await?;
                    authorize_in(c, site, request, json, mac2, at).await
                }),
            ))?;
            if found.is_empty() {
                tracing::info!(site, txn = %request.txn_id, card = %request.card_number, amount_fen = request.terms.amount, "load authorised");
                return Ok(());
            }
            let found = &found;
            self.db
                .call(self.db.transaction(
                    Mode::Write,
                    "记录核定结论与卡片不符",
                    body!(|c| async {
                        for f in found {
                            record_contradiction_in(c, f, at).await?;
                        }
                        Ok::<_, TxError<ReviewError>>(())
                    }),
                ))
                .map_err(|e| refused(e.to_string()))?;
        }
        Err(refused(
            "该卡的后台核定结论与卡片不符，已转入待核对；请稍后再试",
        ))
    }

    fn booked_by(&self, caller: &Caller<'_>, request: &ConfirmRequest) -> Result<(), SamError> {
        let site = caller.site;
        let at = self.now();
        let tac = hex::encode_upper(request.tac);
        let tac = &tac;
        let txn = self.db.call(self.db.transaction(
            Mode::Write,
            "确认圈存",
            body!(|c| async {
                admitted_in(c, caller).await?;
                let Some((txn, state, booked_tac, funded, before)) = find_in(c, request).await?
                else {
                    return Err(TxError::Refused(refused(
                        "no authorisation of this host names this card, counter and amount",
                    )));
                };
                match state {
                    AuthorizationState::Booked if booked_tac.as_deref() == Some(tac.as_str()) => {
                        return Ok(txn)
                    }
                    // Booked from the record (the site's journal proved it first): the TAC
                    // arrives now and is kept.
                    AuthorizationState::Booked if booked_tac.is_none() => {
                        c.execute(
                            "UPDATE load_authorizations SET tac = $2 WHERE txn_id = $1",
                            &[&txn, tac],
                        )
                        .await?;
                        verdict_meets_tac_in(c, &txn, at).await?;
                        return Ok(txn);
                    }
                    AuthorizationState::Booked => {
                        return Err(TxError::Refused(refused(format!(
                            "load {txn} was booked with another TAC"
                        ))))
                    }
                    _ => {}
                }
                append_in::<SamError>(
                    c,
                    &audit_entry(
                        site,
                        "host.confirm",
                        &txn,
                        serde_json::json!({ "txn_id": txn, "tac": tac }),
                    ),
                    at,
                )
                .await?;
                c.execute(
                    "UPDATE load_authorizations SET state = 'booked', tac = $2, settled_at = $3, \
                         settled_by = $4 WHERE txn_id = $1",
                    &[&txn, tac, &at, &site],
                )
                .await?;
                if state != AuthorizationState::Authorized {
                    // Settled by people before the card's proof came: the proof wins.
                    verdict_meets_tac_in(c, &txn, at).await?;
                }
                let amount = i64::from(request.terms.amount);
                match &funded {
                    Funded::Record(record_id) => {
                        book_record_in(c, site, record_id, &txn, before, amount, at).await?
                    }
                    Funded::Order(order_id) => {
                        book_order_in(c, site, order_id, &txn, before, amount, at).await?
                    }
                }
                Ok(txn)
            }),
        ))?;
        tracing::info!(site, txn = %txn, "load booked");
        Ok(())
    }

    fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, SamError> {
        let rows = self.db.call(self.db.transaction(
            Mode::Read,
            "读取未确认的圈存",
            body!(|c| async {
                let rows = c
                    .query(
                        "SELECT site_id, request, mac2 FROM load_authorizations \
                         WHERE card_number = $1 AND state = 'authorized' \
                         ORDER BY authorized_at, txn_id LIMIT $2",
                        &[&card_number, &OPEN_LOADS_MAX],
                    )
                    .await?;
                Ok::<_, TxError<SamError>>(
                    rows.iter()
                        .map(|r| {
                            (
                                r.get::<_, String>(0),
                                r.get::<_, serde_json::Value>(1),
                                r.get::<_, String>(2),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            }),
        ))?;
        rows.into_iter()
            .map(|(site_id, request, mac2)| {
                let request: AuthorizeRequest = serde_json::from_value(request)
                    .map_err(|e| refused(format!("a stored authorisation does not decode: {e}")))?;
                let mac2 = hex::decode(&mac2)
                    .ok()
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .ok_or_else(|| refused("a stored MAC2 is malformed"))?;
                Ok(OpenLoad {
                    site_id,
                    request,
                    mac2,
                })
            })
            .collect()
    }

    fn tac_refused(&self, site: &str, request: &ConfirmRequest) -> Result<(), SamError> {
        let at = self.now();
        let tac = hex::encode_upper(request.tac);
        let tac = &tac;
        self.db.call(self.db.transaction(
            Mode::Write,
            "记录 TAC 校验失败",
            body!(|c| async {
                let Some((txn, state, _, funded, _)) = find_in(c, request).await? else {
                    return Ok(());
                };
                if state != AuthorizationState::Authorized {
                    return Ok(());
                }
                c.execute(
                    "UPDATE load_authorizations SET state = 'reconcile', tac = $2, \
                         settled_at = $3, settled_by = $4, reason = 'TAC did not verify' \
                     WHERE txn_id = $1",
                    &[&txn, tac, &at, &site],
                )
                .await?;
                let record_id = match funded {
                    Funded::Record(record_id) => record_id,
                    Funded::Order(order_id) => {
                        // The outcome needs a person: 结果待确认, as the group domain leaves
                        // an order whose card did not prove the outcome.
                        let why = "卡片返回的 TAC 校验失败，待核对".to_owned();
                        let order = order_in(c, &order_id).await.map_err(group_refusal)?;
                        if order.is_some_and(|o| o.status == OrderStatus::Reserved) {
                            change_order_in(
                                c,
                                &order_id,
                                FromStatus::Exactly(OrderStatus::Reserved),
                                OrderStatus::Pending,
                                "标记为结果待确认",
                                &operator(site),
                                Some(&why),
                                &Effect::Nothing,
                                at,
                            )
                            .await
                            .map_err(group_refusal)?;
                        }
                        return Ok(());
                    }
                };
                let flag = ChangeRequest::with_reason(
                    RecordAction::FlagReconciliation,
                    &operator(site),
                    "卡片返回的 TAC 校验失败",
                    false,
                )
                .map_err(|e| TxError::Refused(refused(e.to_string())))?;
                let record = record_in(c, &record_id, true).await.map_err(host_refusal)?;
                if record.is_some_and(|r| r.status == RecordStatus::Loading) {
                    change_in(c, &record_id, &flag, at)
                        .await
                        .map_err(host_refusal)?;
                }
                Ok(())
            }),
        ))
    }
}
