//! [`PgHost`]: the issuer host's vehicle accounts and recharge records in PostgreSQL.
//!
//! **Tables** (`migrations/0001_records.sql`): `vehicles` (keyed by plate colour and plate),
//! `vehicle_cards` (a card belongs to one vehicle; `position` orders a vehicle's cards),
//! `recharge_records` (money in BIGINT fen, times as timestamptz, the status as its wire
//! name), `record_history` (each record's changes, the creation first, capped as the model
//! says) and `record_txns` (every journal transaction a record was loaded under: one
//! transaction serves one record), `record_days` (the last record sequence of each China day).
//!
//! **Transactions.** Every call is one transaction on a pooled connection: changes
//! SERIALIZABLE, reads REPEATABLE READ READ ONLY (one consistent snapshot for a record and its
//! history). A serialization failure or deadlock rolls back and runs the whole transaction
//! again, at most [`TXN_ATTEMPTS_MAX`] times with a short random pause; a refusal rolls back
//! and is returned as is. One load in flight per card holds because `begin_load` reads the
//! card's open records in the same serializable transaction that opens one: of two concurrent
//! loads of one card, PostgreSQL aborts one, and its retry sees the other.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use cardd_etc::change::{self, Applied, ChangeRequest, Surroundings};
use cardd_etc::model::{
    Page, RechargeRecord, RecordAction, RecordChange, RecordQuery, RecordStatus, Vehicle,
    VehicleDetails, VehicleInput, CARDS_PER_VEHICLE_MAX, CARD_RECORDS_MAX, CHANNEL_CHARS_MAX,
    CHINA_OFFSET, HISTORY_ENTRIES_MAX, LOAD_TXN_ID_CHARS_MAX, OWNER_NAME_CHARS_MAX,
    RECORD_SEQ_PER_DAY_MAX,
};
use cardd_etc::{validate, HostError, IssuerHost};
use cardd_journal::clock::{china_date, china_seconds, Clock, SystemClock};
use time::OffsetDateTime;
use tokio_postgres::{Client, Row};

use crate::db::{self, body, Database, DbFailure, Mode, TxError};

const OPEN_STATUSES: &str = "('loading', 'needs_reconciliation')";
const RECORD_COLUMNS: &str = "record_id, card_number, colour, plate, amount_fen, \
     balance_before_fen, balance_after_fen, recharged_at, channel, status, load_txn_id, loaded_at";
const ACTIONS: [RecordAction; 7] = [
    RecordAction::Recharge,
    RecordAction::BeginLoad,
    RecordAction::FinishLoad,
    RecordAction::AbortLoad,
    RecordAction::FlagReconciliation,
    RecordAction::MarkNotLoaded,
    RecordAction::ResolveReconciliation,
];

pub(crate) type TxResult<T> = db::TxResult<T, HostError>;

impl From<HostError> for TxError<HostError> {
    fn from(e: HostError) -> Self {
        TxError::Refused(e)
    }
}

impl From<DbFailure> for HostError {
    fn from(e: DbFailure) -> Self {
        match e {
            DbFailure::Failed(detail) => HostError::Database(detail),
            DbFailure::SchemaTooNew { found, supported } => {
                HostError::SchemaTooNew { found, supported }
            }
        }
    }
}

fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> HostError {
    HostError::Corrupt {
        key: key.into(),
        reason: reason.into(),
    }
}

fn action_code(action: RecordAction) -> &'static str {
    match action {
        RecordAction::Recharge => "recharge",
        RecordAction::BeginLoad => "begin_load",
        RecordAction::FinishLoad => "finish_load",
        RecordAction::AbortLoad => "abort_load",
        RecordAction::FlagReconciliation => "flag_reconciliation",
        RecordAction::MarkNotLoaded => "mark_not_loaded",
        RecordAction::ResolveReconciliation => "resolve_reconciliation",
    }
}

fn action_from_code(record_id: &str, code: &str) -> Result<RecordAction, HostError> {
    ACTIONS
        .into_iter()
        .find(|a| action_code(*a) == code)
        .ok_or_else(|| corrupt(record_id, format!("unknown action {code}")))
}

fn status_from_code(record_id: &str, code: &str) -> Result<RecordStatus, HostError> {
    RecordStatus::from_code(code)
        .ok_or_else(|| corrupt(record_id, format!("unknown status {code}")))
}

fn china(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(CHINA_OFFSET)
}

fn colour_sql(code: u16) -> Result<i16, HostError> {
    i16::try_from(code).map_err(|_| HostError::InvalidPlateColour(code))
}

fn colour_of(key: &str, code: i16) -> Result<cardd_etc::PlateColour, HostError> {
    u16::try_from(code)
        .ok()
        .and_then(|c| validate::plate_colour(c).ok())
        .ok_or_else(|| corrupt(key, format!("unknown plate colour {code}")))
}

/// What [`PgHost::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Vehicle accounts.
    pub vehicles: u64,
    /// Recharge records.
    pub records: u64,
}

/// The issuer host on PostgreSQL. Its calls block the calling thread on the database's
/// runtime (see [`Database`]): call them from threads of their own, not from a thread of an
/// async runtime (its executor or its blocking pool).
pub struct PgHost {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHost")
            .field("db", &self.db)
            .field("clock", &self.clock)
            .finish()
    }
}

impl PgHost {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with the system clock
    /// and brings the schema up to date ([`Database::open`]); refuses a newer schema.
    pub fn open(url: &str) -> Result<PgHost, HostError> {
        PgHost::open_with_clock(url, Arc::new(SystemClock))
    }

    /// [`PgHost::open`] with another clock (tests).
    pub fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<PgHost, HostError> {
        Ok(PgHost::new(Arc::new(Database::open(url)?), clock))
    }

    /// The host's records in an open database.
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgHost {
        PgHost { db, clock }
    }

    /// The database the host uses.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i32, HostError> {
        Ok(self.db.schema_version()?)
    }

    /// Counts vehicles and records and checks that every record's current load transaction
    /// is linked to it (the rest is kept by the schema's constraints).
    pub fn verify(&self) -> Result<VerifyReport, HostError> {
        self.call(self.transaction(
            Mode::Read,
            "核对数据",
            body!(|c| async {
                let unlinked = c
                    .query(
                        "SELECT r.record_id FROM recharge_records r \
                         LEFT JOIN record_txns t ON t.txn_id = r.load_txn_id \
                         WHERE r.load_txn_id IS NOT NULL \
                           AND (t.record_id IS NULL OR t.record_id <> r.record_id) LIMIT 1",
                        &[],
                    )
                    .await?;
                if let Some(row) = unlinked.first() {
                    let id: String = row.get(0);
                    return Err(corrupt(id, "transaction index disagrees").into());
                }
                let row = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM vehicles), \
                                (SELECT count(*) FROM recharge_records)",
                        &[],
                    )
                    .await?;
                let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                Ok(VerifyReport {
                    vehicles: count(0),
                    records: count(1),
                })
            }),
        ))
    }

    /// Makes the next transaction lose its connection right before COMMIT (the server ends
    /// the session), to test that nothing of it remains. For tests of failure handling.
    #[doc(hidden)]
    pub fn drop_connection_before_next_commit(&self) {
        self.db.drop_connection_before_next_commit();
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    fn call<T>(&self, fut: impl Future<Output = Result<T, HostError>>) -> Result<T, HostError> {
        self.db.call(fut)
    }

    async fn transaction<'e, T>(
        &self,
        mode: Mode,
        what: &'static str,
        body: impl Fn(deadpool_postgres::Client) -> db::TxFuture<'e, T, HostError>,
    ) -> Result<T, HostError> {
        self.db.transaction(mode, what, body).await
    }

    /// Applies one checked state change in one serializable transaction.
    fn change(&self, record_id: &str, req: ChangeRequest) -> Result<RechargeRecord, HostError> {
        let at = self.now();
        let req = &req;
        let record = self.call(self.transaction(
            Mode::Write,
            "修改充值记录",
            body!(|c| async { change_in(c, record_id, req, at).await }),
        ))?;
        tracing::info!(
            record_id,
            operator = %req.operator,
            action = req.action.label(),
            status = record.status.label(),
            "recharge record changed"
        );
        Ok(record)
    }
}

/// Brings the host's authorisation of the record's load (if the load was authorised by this
/// host for a site) in line with a change of the record that settles it, in the caller's
/// transaction: the record and its authorisation never disagree about an outcome. A
/// 圈存中 record set back to 未圈存 (the card proved the load did not land) releases it; flagged
/// 待核对 it waits for a person; 已圈存 books it; a person's verdict settles it either way.
async fn settle_authorization_in(
    c: &Client,
    txn_id: &str,
    req: &ChangeRequest,
    at: OffsetDateTime,
) -> TxResult<()> {
    let (state, from): (&str, &[&str]) = match req.action {
        RecordAction::FinishLoad => ("booked", &["authorized"]),
        RecordAction::AbortLoad => ("released", &["authorized"]),
        RecordAction::FlagReconciliation => ("reconcile", &["authorized"]),
        RecordAction::ResolveReconciliation if req.loaded => {
            ("booked", &["authorized", "reconcile"])
        }
        RecordAction::ResolveReconciliation => ("released", &["authorized", "reconcile"]),
        _ => return Ok(()),
    };
    let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
    c.execute(
        "UPDATE load_authorizations SET state = $2, settled_at = $3, settled_by = $4, \
             reason = $5 WHERE txn_id = $1 AND state = ANY($6)",
        &[&txn_id, &state, &at, &req.operator, &req.reason, &from],
    )
    .await?;
    Ok(())
}

/// The vehicle with this colour and plate, read in the caller's transaction.
async fn vehicle_in(c: &Client, colour: i16, plate: &str) -> TxResult<Option<Vehicle>> {
    let Some(row) = c
        .query_opt(
            "SELECT owner_name, vehicle_class, obu_contract_serial, details, created_at, \
                    updated_at, updated_by FROM vehicles WHERE colour = $1 AND plate = $2",
            &[&colour, &plate],
        )
        .await?
    else {
        return Ok(None);
    };
    let key = format!("vehicles/{colour}/{plate}");
    let cards = c
        .query(
            "SELECT card_number FROM vehicle_cards WHERE colour = $1 AND plate = $2 \
             ORDER BY position",
            &[&colour, &plate],
        )
        .await?;
    let details: Option<serde_json::Value> = row.get(3);
    let details = details
        .map(serde_json::from_value::<VehicleDetails>)
        .transpose()
        .map_err(|e| corrupt(key.clone(), e.to_string()))?;
    let class: i16 = row.get(1);
    Ok(Some(Vehicle {
        plate: plate.to_owned(),
        plate_colour: colour_of(&key, colour)?,
        card_numbers: cards.iter().map(|r| r.get(0)).collect(),
        owner_name: row.get(0),
        vehicle_class: u8::try_from(class)
            .map_err(|_| corrupt(key.clone(), format!("vehicle class {class}")))?,
        obu_contract_serial: row.get(2),
        details,
        created_at: china(row.get(4)),
        updated_at: china(row.get(5)),
        updated_by: row.get(6),
    }))
}

/// Records from rows of [`RECORD_COLUMNS`], with their history and load transactions, in the
/// rows' order.
async fn records_in(c: &Client, rows: &[Row]) -> TxResult<Vec<RechargeRecord>> {
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut history: HashMap<String, Vec<RecordChange>> = HashMap::new();
    for h in c
        .query(
            "SELECT record_id, at, operator, action, from_status, to_status, reason, txn_id, \
                    balance_before_fen, balance_after_fen \
             FROM record_history WHERE record_id = ANY($1) ORDER BY record_id, seq",
            &[&ids],
        )
        .await?
    {
        let id: String = h.get(0);
        let from: Option<String> = h.get(4);
        let change = RecordChange {
            at: china(h.get(1)),
            operator: h.get(2),
            action: action_from_code(&id, h.get(3))?,
            from: from.map(|f| status_from_code(&id, &f)).transpose()?,
            to: status_from_code(&id, h.get(5))?,
            reason: h.get(6),
            txn_id: h.get(7),
            balance_before_fen: h.get(8),
            balance_after_fen: h.get(9),
        };
        history.entry(id).or_default().push(change);
    }
    let mut txns: HashMap<String, Vec<String>> = HashMap::new();
    for t in c
        .query(
            "SELECT record_id, txn_id FROM record_txns WHERE record_id = ANY($1) \
             ORDER BY record_id, attempt",
            &[&ids],
        )
        .await?
    {
        txns.entry(t.get(0)).or_default().push(t.get(1));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let status: String = row.get(9);
        let loaded_at: Option<OffsetDateTime> = row.get(11);
        out.push(RechargeRecord {
            card_number: row.get(1),
            plate_colour: colour_of(&id, row.get(2))?,
            plate: row.get(3),
            amount_fen: row.get(4),
            balance_before_fen: row.get(5),
            balance_after_fen: row.get(6),
            recharged_at: china(row.get(7)),
            channel: row.get(8),
            status: status_from_code(&id, &status)?,
            load_txn_id: row.get(10),
            loaded_at: loaded_at.map(china),
            history: history.remove(&id).unwrap_or_default(),
            txn_ids: txns.remove(&id).unwrap_or_default(),
            record_id: id,
        });
    }
    Ok(out)
}

/// One record by id, read in the caller's transaction (`FOR UPDATE` when it is to change).
pub(crate) async fn record_in(
    c: &Client,
    record_id: &str,
    lock: bool,
) -> TxResult<Option<RechargeRecord>> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM recharge_records WHERE record_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = c.query(&sql, &[&record_id]).await?;
    Ok(records_in(c, &rows).await?.pop())
}

async fn insert_change(
    c: &Client,
    record_id: &str,
    seq: i32,
    change: &RecordChange,
) -> TxResult<()> {
    c.execute(
        "INSERT INTO record_history (record_id, seq, at, operator, action, from_status, \
             to_status, reason, txn_id, balance_before_fen, balance_after_fen) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &record_id,
            &seq,
            &change.at,
            &change.operator,
            &action_code(change.action),
            &change.from.map(RecordStatus::code),
            &change.to.code(),
            &change.reason,
            &change.txn_id,
            &change.balance_before_fen,
            &change.balance_after_fen,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn change_in(
    c: &Client,
    record_id: &str,
    req: &ChangeRequest,
    at: OffsetDateTime,
) -> TxResult<RechargeRecord> {
    let Some(mut record) = record_in(c, record_id, true).await? else {
        return Err(HostError::RecordNotFound(record_id.to_owned()).into());
    };
    if change::already_done(&record, req) {
        return Ok(record);
    }
    let mut around = Surroundings::default();
    if change::needs_surroundings(req, record.status) {
        if let Some(txn_id) = &req.txn_id {
            around.txn_owner = c
                .query_opt(
                    "SELECT record_id FROM record_txns WHERE txn_id = $1",
                    &[txn_id],
                )
                .await?
                .map(|owner| owner.get(0));
        }
        let busy = c
            .query_opt(
                &format!(
                    "SELECT record_id, status FROM recharge_records \
                     WHERE card_number = $1 AND status IN {OPEN_STATUSES} \
                       AND record_id <> $2 \
                     ORDER BY recharged_at, record_id COLLATE \"C\" LIMIT 1"
                ),
                &[&record.card_number, &record_id],
            )
            .await?;
        if let Some(other) = busy {
            let other_id: String = other.get(0);
            let status = status_from_code(&other_id, other.get(1))?;
            around.other_open = Some((other_id, status));
        }
    }
    let load_txn = record.load_txn_id.clone();
    let Applied { change, new_txn_id } = change::apply(&mut record, req, at, &around)?;
    if let Some(txn) = &load_txn {
        settle_authorization_in(c, txn, req, at).await?;
    }
    if let Some(txn_id) = &new_txn_id {
        let attempt = i32::try_from(record.txn_ids.len() - 1).unwrap_or(i32::MAX);
        c.execute(
            "INSERT INTO record_txns (txn_id, record_id, attempt) VALUES ($1, $2, $3)",
            &[txn_id, &record_id, &attempt],
        )
        .await?;
    }
    let to = record.status;
    c.execute(
        "UPDATE recharge_records SET status = $2, load_txn_id = $3, balance_before_fen = $4, \
             balance_after_fen = $5, loaded_at = $6 WHERE record_id = $1",
        &[
            &record_id,
            &to.code(),
            &record.load_txn_id,
            &record.balance_before_fen,
            &record.balance_after_fen,
            &record.loaded_at,
        ],
    )
    .await?;
    let row = c
        .query_one(
            "SELECT coalesce(max(seq), 0) + 1 FROM record_history WHERE record_id = $1",
            &[&record_id],
        )
        .await?;
    let seq: i32 = row.get(0);
    insert_change(c, record_id, seq, &change).await?;
    // Keep the creation and the newest changes, HISTORY_ENTRIES_MAX in all.
    let keep_after = seq - i32::try_from(HISTORY_ENTRIES_MAX - 1).unwrap_or(i32::MAX);
    c.execute(
        "DELETE FROM record_history WHERE record_id = $1 AND seq > 0 AND seq <= $2",
        &[&record_id, &keep_after],
    )
    .await?;
    match record_in(c, record_id, false).await? {
        Some(record) => Ok(record),
        None => Err(HostError::RecordNotFound(record_id.to_owned()).into()),
    }
}

impl IssuerHost for PgHost {
    fn vehicle(&self, plate: &str, colour: u16) -> Result<Option<Vehicle>, HostError> {
        let plate = validate::normalize_plate(plate)?;
        let colour = colour_sql(validate::plate_colour(colour)?.code)?;
        let plate = &plate;
        self.call(self.transaction(
            Mode::Read,
            "查询车辆",
            body!(|c| async { vehicle_in(c, colour, plate).await }),
        ))
    }

    fn vehicles_for_card(&self, card_number: &str) -> Result<Vec<Vehicle>, HostError> {
        let card = validate::card_number(card_number)?;
        let card = &card;
        self.call(self.transaction(
            Mode::Read,
            "按卡号查询车辆",
            body!(|c| async {
                let Some(row) = c
                    .query_opt(
                        "SELECT colour, plate FROM vehicle_cards WHERE card_number = $1",
                        &[card],
                    )
                    .await?
                else {
                    return Ok(Vec::new());
                };
                let plate: String = row.get(1);
                Ok(vehicle_in(c, row.get(0), &plate)
                    .await?
                    .into_iter()
                    .collect())
            }),
        ))
    }

    fn upsert_vehicle(&self, input: &VehicleInput, operator: &str) -> Result<Vehicle, HostError> {
        let plate = validate::normalize_plate(&input.plate)?;
        let colour = validate::plate_colour(input.plate_colour)?;
        let owner_name = validate::text("车主姓名", &input.owner_name, OWNER_NAME_CHARS_MAX)?;
        let vehicle_class = validate::vehicle_class(input.vehicle_class)?;
        let obu_contract_serial = input
            .obu_contract_serial
            .as_deref()
            .map(validate::obu_contract_serial)
            .transpose()?;
        let details = input
            .details
            .as_ref()
            .map(validate::vehicle_details)
            .transpose()?
            .map(|d| serde_json::to_value(&d))
            .transpose()
            .map_err(|e| HostError::Encode {
                key: format!("vehicles/{}/{plate}", colour.code),
                reason: e.to_string(),
            })?;
        if input.card_numbers.len() > CARDS_PER_VEHICLE_MAX {
            return Err(HostError::InvalidCardList(format!(
                "一辆车最多 {CARDS_PER_VEHICLE_MAX} 张用户卡"
            )));
        }
        let mut card_numbers: Vec<String> = Vec::with_capacity(input.card_numbers.len());
        for card in &input.card_numbers {
            let card = validate::card_number(card)?;
            if card_numbers.contains(&card) {
                return Err(HostError::InvalidCardList(format!("用户卡 {card} 重复")));
            }
            card_numbers.push(card);
        }
        let operator = change::operator_name(operator)?;
        let now = self.now();
        let colour_code = colour_sql(colour.code)?;
        let class = i16::from(vehicle_class);
        let (plate_ref, owner, serial, details, cards, op) = (
            &plate,
            &owner_name,
            &obu_contract_serial,
            &details,
            &card_numbers,
            &operator,
        );
        let vehicle = self.call(self.transaction(
            Mode::Write,
            "保存车辆",
            body!(|c| async {
                for card in cards {
                    let holder = c
                        .query_opt(
                            "SELECT colour, plate FROM vehicle_cards WHERE card_number = $1",
                            &[card],
                        )
                        .await?;
                    if let Some(holder) = holder {
                        let (h_colour, h_plate): (i16, String) = (holder.get(0), holder.get(1));
                        if (h_colour, h_plate.as_str()) != (colour_code, plate_ref.as_str()) {
                            let label = colour_of(&h_plate, h_colour)?.label;
                            return Err(HostError::CardBoundElsewhere {
                                card_number: card.clone(),
                                plate: h_plate,
                                colour: label,
                            }
                            .into());
                        }
                    }
                }
                c.execute(
                    "INSERT INTO vehicles (colour, plate, owner_name, vehicle_class, \
                         obu_contract_serial, details, created_at, updated_at, updated_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
                     ON CONFLICT (colour, plate) DO UPDATE SET owner_name = $3, \
                         vehicle_class = $4, obu_contract_serial = $5, details = $6, \
                         updated_at = $7, updated_by = $8",
                    &[
                        &colour_code,
                        plate_ref,
                        owner,
                        &class,
                        serial,
                        details,
                        &now,
                        op,
                    ],
                )
                .await?;
                c.execute(
                    "DELETE FROM vehicle_cards WHERE colour = $1 AND plate = $2",
                    &[&colour_code, plate_ref],
                )
                .await?;
                for (position, card) in cards.iter().enumerate() {
                    let position = i16::try_from(position).unwrap_or(i16::MAX);
                    c.execute(
                        "INSERT INTO vehicle_cards (card_number, colour, plate, position) \
                         VALUES ($1, $2, $3, $4)",
                        &[card, &colour_code, plate_ref, &position],
                    )
                    .await?;
                }
                match vehicle_in(c, colour_code, plate_ref).await? {
                    Some(v) => Ok(v),
                    None => Err(corrupt(plate_ref.clone(), "vanished while saved").into()),
                }
            }),
        ))?;
        tracing::info!(plate = %vehicle.plate, colour = vehicle.plate_colour.code, operator = %operator, "vehicle account saved");
        Ok(vehicle)
    }

    fn recharge(
        &self,
        plate: &str,
        colour: u16,
        amount_fen: i64,
        operator: &str,
        channel: &str,
    ) -> Result<RechargeRecord, HostError> {
        let plate = validate::normalize_plate(plate)?;
        let colour = validate::plate_colour(colour)?;
        let amount_fen = validate::recharge_amount(amount_fen)?;
        let operator = change::operator_name(operator)?;
        let channel = validate::text("充值渠道", channel, CHANNEL_CHARS_MAX)?;
        let now = self.now();
        let date = china_date(now);
        let colour_code = colour_sql(colour.code)?;
        let label = validate::colour_label(colour.code);
        let (plate_ref, op, ch, day) = (&plate, &operator, &channel, &date);
        let record = self.call(self.transaction(
            Mode::Write,
            "充值",
            body!(|c| async {
                let Some(vehicle) = vehicle_in(c, colour_code, plate_ref).await? else {
                    return Err(HostError::VehicleNotFound {
                        plate: plate_ref.clone(),
                        colour: label,
                    }
                    .into());
                };
                let Some(card) = vehicle.current_card() else {
                    return Err(HostError::NoCard {
                        plate: plate_ref.clone(),
                        colour: label,
                    }
                    .into());
                };
                let row = c
                    .query_one(
                        "INSERT INTO record_days (day, last_seq) VALUES ($1, 1) \
                         ON CONFLICT (day) DO UPDATE SET last_seq = record_days.last_seq + 1 \
                         RETURNING last_seq",
                        &[day],
                    )
                    .await?;
                let seq: i32 = row.get(0);
                if u32::try_from(seq).map_or(true, |s| s > RECORD_SEQ_PER_DAY_MAX) {
                    return Err(HostError::SequenceExhausted { date: day.clone() }.into());
                }
                let record_id = format!("R{day}{seq:06}");
                c.execute(
                    "INSERT INTO recharge_records (record_id, card_number, colour, plate, \
                         amount_fen, recharged_at, channel, status) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &record_id,
                        &card,
                        &colour_code,
                        plate_ref,
                        &amount_fen,
                        &now,
                        ch,
                        &RecordStatus::NotLoaded.code(),
                    ],
                )
                .await?;
                let change = RecordChange {
                    at: now,
                    operator: op.clone(),
                    action: RecordAction::Recharge,
                    from: None,
                    to: RecordStatus::NotLoaded,
                    reason: None,
                    txn_id: None,
                    balance_before_fen: None,
                    balance_after_fen: None,
                };
                insert_change(c, &record_id, 0, &change).await?;
                match record_in(c, &record_id, false).await? {
                    Some(r) => Ok(r),
                    None => Err(HostError::RecordNotFound(record_id).into()),
                }
            }),
        ))?;
        tracing::info!(
            record_id = %record.record_id,
            card = %record.card_number,
            amount_fen,
            operator = %operator,
            "recharge recorded"
        );
        Ok(record)
    }

    fn query_records(&self, query: &RecordQuery) -> Result<Page, HostError> {
        let (plate, colour) = validate::record_query(query)?;
        // Whole seconds, both ends inclusive: a start with a fraction begins at the next second.
        let from = query.from.map(|t| {
            let s = t
                .unix_timestamp()
                .saturating_add(i64::from(t.nanosecond() > 0));
            OffsetDateTime::from_unix_timestamp(s).unwrap_or(t)
        });
        let to = query
            .to
            .map(|t| OffsetDateTime::from_unix_timestamp(t.unix_timestamp()).unwrap_or(t));
        let colour_code = colour_sql(colour.code)?;
        let label = validate::colour_label(colour.code);
        let limit = i64::from(query.page_size);
        let offset = i64::from(query.page - 1) * limit;
        let plate_ref = &plate;
        let (records, total) = self.call(self.transaction(
            Mode::Read,
            "查询充值记录",
            body!(|c| async {
                if vehicle_in(c, colour_code, plate_ref).await?.is_none() {
                    return Err(HostError::VehicleNotFound {
                        plate: plate_ref.clone(),
                        colour: label,
                    }
                    .into());
                }
                let filter = "WHERE colour = $1 AND plate = $2 \
                     AND ($3::timestamptz IS NULL OR recharged_at >= $3) \
                     AND ($4::timestamptz IS NULL OR recharged_at <= $4)";
                let total: i64 = c
                    .query_one(
                        &format!("SELECT count(*) FROM recharge_records {filter}"),
                        &[&colour_code, plate_ref, &from, &to],
                    )
                    .await?
                    .get(0);
                let rows = c
                    .query(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM recharge_records {filter} \
                             ORDER BY recharged_at DESC, record_id COLLATE \"C\" DESC \
                             LIMIT $5 OFFSET $6"
                        ),
                        &[&colour_code, plate_ref, &from, &to, &limit, &offset],
                    )
                    .await?;
                Ok((records_in(c, &rows).await?, total))
            }),
        ))?;
        Ok(Page {
            records,
            total: u64::try_from(total).unwrap_or(0),
            page: query.page,
            page_size: query.page_size,
        })
    }

    fn records_for_card(
        &self,
        card_number: &str,
        status: Option<RecordStatus>,
    ) -> Result<Vec<RechargeRecord>, HostError> {
        let card = validate::card_number(card_number)?;
        let status = status.map(RecordStatus::code);
        let limit = i64::try_from(CARD_RECORDS_MAX + 1).unwrap_or(i64::MAX);
        let card_ref = &card;
        self.call(self.transaction(
            Mode::Read,
            "按卡号查询充值记录",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM recharge_records \
                             WHERE card_number = $1 AND ($2::text IS NULL OR status = $2) \
                             ORDER BY recharged_at DESC, record_id COLLATE \"C\" DESC LIMIT $3"
                        ),
                        &[card_ref, &status, &limit],
                    )
                    .await?;
                if rows.len() > CARD_RECORDS_MAX {
                    return Err(HostError::TooManyRecords {
                        card_number: card_ref.clone(),
                    }
                    .into());
                }
                records_in(c, &rows).await
            }),
        ))
    }

    fn record(&self, record_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        let record_id = change::record_id(record_id)?;
        self.call(self.transaction(
            Mode::Read,
            "查询充值记录",
            body!(|c| async { record_in(c, record_id, false).await }),
        ))
    }

    fn record_for_txn(&self, txn_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        let txn_id = validate::txn_id(txn_id, LOAD_TXN_ID_CHARS_MAX)?;
        let txn_ref = &txn_id;
        self.call(self.transaction(
            Mode::Read,
            "按交易号查询充值记录",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {} FROM record_txns t \
                             JOIN recharge_records r ON r.record_id = t.record_id \
                             WHERE t.txn_id = $1",
                            prefixed_columns("r")
                        ),
                        &[txn_ref],
                    )
                    .await?;
                Ok(records_in(c, &rows).await?.pop())
            }),
        ))
    }

    fn open_records(&self) -> Result<Vec<RechargeRecord>, HostError> {
        let limit = i64::try_from(CARD_RECORDS_MAX).unwrap_or(i64::MAX);
        self.call(self.transaction(
            Mode::Read,
            "查询未完成的充值记录",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM recharge_records \
                             WHERE status IN {OPEN_STATUSES} \
                             ORDER BY card_number COLLATE \"C\", recharged_at, \
                                      record_id COLLATE \"C\" LIMIT $1"
                        ),
                        &[&limit],
                    )
                    .await?;
                records_in(c, &rows).await
            }),
        ))
    }

    fn change_record(
        &self,
        record_id: &str,
        request: ChangeRequest,
    ) -> Result<RechargeRecord, HostError> {
        self.change(record_id, request)
    }
}

/// [`RECORD_COLUMNS`] qualified by a table alias.
fn prefixed_columns(alias: &str) -> String {
    RECORD_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
