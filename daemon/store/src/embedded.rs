//! The issuer host inside the daemon: vehicle accounts and recharge records in the daemon's own
//! sled database.
//!
//! **Why embedded.** A counter or a kiosk running cardd alone still needs somewhere to take a
//! payment and later load it onto the card (圈存), and to load it again when writing the card
//! failed (二次圈存). Later a remote issuer host can stand behind the same [`IssuerHost`] trait.
//!
//! **Storage.** One tree, [`HOST_TREE`], with these keys:
//! * `veh/<colour>/<plate>`: a [`Vehicle`];
//! * `card/<card>`: the `veh/…` key of the vehicle the card is issued to (a card belongs to one
//!   vehicle);
//! * `rec/<record id>`: a [`RechargeRecord`];
//! * `vrec/<colour>/<plate>/<time><record id>`: the vehicle's records in time order, `<time>`
//!   being the recharge's Unix seconds as 8 big-endian bytes with the sign bit flipped, so that
//!   byte order is time order and a time range is a key range;
//! * `crec/<card>/<record id>`: the card's records, valued with the status code, so the kiosk
//!   finds a card's 未圈存 records without decoding every record;
//! * `open/<card>`: the card's records in 圈存中 or 待核对 (a JSON list of ids): while one
//!   exists no other record of the card may start loading, so one card has at most one load in
//!   flight, as the journal requires;
//! * `txn/<load txn id>`: the record a load transaction belongs to, so one transaction id never
//!   serves two records;
//! * `seq/<YYYYMMDD>`: the last record sequence of that China day.
//!
//! Vehicles and records are stored as `sha256(json) ‖ json` and checked on every read; a
//! mismatch is [`HostError::Corrupt`] and [`EmbeddedHost::open`] refuses to start on one
//! (fail closed). Every change is one sled transaction (the record, its indexes and its
//! history move together, and concurrent changes of the same record cannot both win), followed
//! by [`Store::durable_flush`] before the call returns: durable before acknowledged. If that
//! flush fails the call fails, and the change may or may not survive a power failure: read the
//! record again before deciding anything.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use time::OffsetDateTime;

use cardd_journal::Store;

use cardd_etc::change::{self, ChangeRequest, Surroundings};
use cardd_etc::error::HostError;
use cardd_etc::model::{
    Page, RechargeRecord, RecordAction, RecordChange, RecordQuery, RecordStatus, Vehicle,
    VehicleInput, CARDS_PER_VEHICLE_MAX, CARD_RECORDS_MAX, CHANNEL_CHARS_MAX, HISTORY_ENTRIES_MAX,
    LOAD_TXN_ID_CHARS_MAX, OWNER_NAME_CHARS_MAX, RECORD_SEQ_PER_DAY_MAX, STORED_VALUE_BYTES_MAX,
};
use cardd_etc::validate;
use cardd_etc::IssuerHost;
use cardd_journal::clock::{china_date, china_seconds, Clock, SystemClock};

/// The sled tree of the embedded issuer host.
pub const HOST_TREE: &str = "host";

const CHECKSUM_BYTES: usize = 32;
/// Bytes of the time part of a `vrec/` key.
const TIME_KEY_BYTES: usize = 8;

/// The issuer host on the daemon's sled [`Store`].
pub struct EmbeddedHost {
    store: Store,
    tree: sled::Tree,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EmbeddedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedHost")
            .field("dir", &self.store.dir())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What [`EmbeddedHost::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Vehicle accounts.
    pub vehicles: u64,
    /// Recharge records.
    pub records: u64,
}

/// Sled keys.
pub(crate) mod keys {
    use super::TIME_KEY_BYTES;

    pub(crate) fn vehicle(colour: u16, plate: &str) -> String {
        format!("veh/{colour:02}/{plate}")
    }

    pub(crate) fn card(card: &str) -> String {
        format!("card/{card}")
    }

    pub(crate) fn record(record_id: &str) -> String {
        format!("rec/{record_id}")
    }

    pub(crate) fn vehicle_records(colour: u16, plate: &str) -> Vec<u8> {
        format!("vrec/{colour:02}/{plate}/").into_bytes()
    }

    /// Unix seconds whose big-endian bytes sort in time order.
    pub(crate) fn time(unix_seconds: i64) -> [u8; TIME_KEY_BYTES] {
        ((unix_seconds as u64) ^ (1 << 63)).to_be_bytes()
    }

    pub(crate) fn vehicle_record(
        colour: u16,
        plate: &str,
        unix_seconds: i64,
        record_id: &str,
    ) -> Vec<u8> {
        let mut key = vehicle_records(colour, plate);
        key.extend_from_slice(&time(unix_seconds));
        key.extend_from_slice(record_id.as_bytes());
        key
    }

    pub(crate) fn card_records(card: &str) -> String {
        format!("crec/{card}/")
    }

    pub(crate) fn card_record(card: &str, record_id: &str) -> String {
        format!("crec/{card}/{record_id}")
    }

    pub(crate) fn open(card: &str) -> String {
        format!("open/{card}")
    }

    pub(crate) fn txn(txn_id: &str) -> String {
        format!("txn/{txn_id}")
    }

    pub(crate) fn seq(date: &str) -> String {
        format!("seq/{date}")
    }
}

type TxResult<T> = ConflictableTransactionResult<T, HostError>;

/// Turns a host error into a transaction abort.
trait OrAbort<T> {
    fn or_abort(self) -> TxResult<T>;
}

impl<T> OrAbort<T> for Result<T, HostError> {
    fn or_abort(self) -> TxResult<T> {
        self.map_err(ConflictableTransactionError::Abort)
    }
}

fn abort<T>(e: HostError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// A failure of the sled database, as the ETC domain's error.
pub(crate) fn sled_err(e: sled::Error) -> HostError {
    HostError::Store(cardd_journal::StoreError::from(e))
}

/// Runs `f` as one sled transaction on `tree` (retried by sled on conflict).
pub(crate) fn run<T>(
    tree: &sled::Tree,
    f: impl Fn(&TransactionalTree) -> TxResult<T>,
) -> Result<T, HostError> {
    tree.transaction(f).map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => sled_err(e),
    })
}

/// `sha256(json) ‖ json`.
pub(crate) fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, HostError> {
    let json = serde_json::to_vec(value).map_err(|e| HostError::Encode {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    if json.len() > STORED_VALUE_BYTES_MAX {
        return Err(HostError::Encode {
            key: key.to_owned(),
            reason: format!("{} 字节超过上限 {STORED_VALUE_BYTES_MAX} 字节", json.len()),
        });
    }
    let mut out = Sha256::digest(&json).to_vec();
    out.extend_from_slice(&json);
    Ok(out)
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> HostError {
    HostError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

/// Checks the checksum and decodes.
pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, HostError> {
    if bytes.len() <= CHECKSUM_BYTES {
        return Err(corrupt(key, "too short"));
    }
    let (sum, json) = bytes.split_at(CHECKSUM_BYTES);
    if Sha256::digest(json).as_slice() != sum {
        return Err(corrupt(key, "checksum mismatch"));
    }
    serde_json::from_slice(json).map_err(|e| corrupt(key, e.to_string()))
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<RechargeRecord, HostError> {
    let record: RechargeRecord = decode(key, bytes)?;
    if keys::record(&record.record_id).as_bytes() != key {
        return Err(corrupt(key, "stored under another record id"));
    }
    Ok(record)
}

fn decode_vehicle(key: &[u8], bytes: &[u8]) -> Result<Vehicle, HostError> {
    let vehicle: Vehicle = decode(key, bytes)?;
    if keys::vehicle(vehicle.plate_colour.code, &vehicle.plate).as_bytes() != key {
        return Err(corrupt(key, "stored under another plate"));
    }
    Ok(vehicle)
}

fn decode_open(key: &[u8], bytes: &[u8]) -> Result<Vec<String>, HostError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()))
}

/// Reads a record inside a transaction.
fn tx_record(tx: &TransactionalTree, record_id: &str) -> TxResult<RechargeRecord> {
    let key = keys::record(record_id);
    match tx.get(&key)? {
        Some(bytes) => decode_record(key.as_bytes(), &bytes).or_abort(),
        None => abort(HostError::RecordNotFound(record_id.to_owned())),
    }
}

/// Reads a card's open records inside a transaction.
fn tx_open(tx: &TransactionalTree, card: &str) -> TxResult<Vec<String>> {
    let key = keys::open(card);
    match tx.get(&key)? {
        Some(bytes) => decode_open(key.as_bytes(), &bytes).or_abort(),
        None => Ok(Vec::new()),
    }
}

/// Writes a card's open records inside a transaction (removing the key when none is open).
fn tx_set_open(tx: &TransactionalTree, card: &str, open: &[String]) -> TxResult<()> {
    let key = keys::open(card);
    if open.is_empty() {
        tx.remove(key.as_bytes())?;
    } else {
        let value = serde_json::to_vec(open).map_err(|e| {
            ConflictableTransactionError::Abort(HostError::Encode {
                key: key.clone(),
                reason: e.to_string(),
            })
        })?;
        tx.insert(key.as_bytes(), value)?;
    }
    Ok(())
}

/// Stores a new record with its indexes, inside a transaction.
pub(crate) fn tx_insert_record(tx: &TransactionalTree, record: &RechargeRecord) -> TxResult<()> {
    let key = keys::record(&record.record_id);
    tx.insert(key.as_bytes(), encode(&key, record).or_abort()?)?;
    let vrec = keys::vehicle_record(
        record.plate_colour.code,
        &record.plate,
        record.recharged_at.unix_timestamp(),
        &record.record_id,
    );
    tx.insert(vrec, Vec::new())?;
    tx.insert(
        keys::card_record(&record.card_number, &record.record_id).as_bytes(),
        record.status.code().as_bytes(),
    )?;
    if record.status.is_open() {
        let mut open = tx_open(tx, &record.card_number)?;
        if !open.contains(&record.record_id) {
            open.push(record.record_id.clone());
        }
        tx_set_open(tx, &record.card_number, &open)?;
    }
    if let Some(txn_id) = &record.load_txn_id {
        tx.insert(keys::txn(txn_id).as_bytes(), record.record_id.as_bytes())?;
    }
    Ok(())
}

/// Refuses, inside a transaction, when `card` is issued to a vehicle other than the one stored
/// under `vehicle_key`.
pub(crate) fn tx_check_card_free(
    tx: &TransactionalTree,
    card: &str,
    vehicle_key: &str,
) -> TxResult<()> {
    let Some(holder) = tx.get(keys::card(card))? else {
        return Ok(());
    };
    if holder.as_ref() == vehicle_key.as_bytes() {
        return Ok(());
    }
    let holder_vehicle = match tx.get(&holder)? {
        Some(v) => decode_vehicle(&holder, &v).or_abort()?,
        None => {
            return abort(corrupt(
                &holder,
                "the card index points to a missing vehicle",
            ))
        }
    };
    abort(HostError::CardBoundElsewhere {
        card_number: card.to_owned(),
        plate: holder_vehicle.plate,
        colour: holder_vehicle.plate_colour.label,
    })
}

/// Stores a vehicle and its card index entries, inside a transaction (no checks).
pub(crate) fn tx_put_vehicle(tx: &TransactionalTree, vehicle: &Vehicle) -> TxResult<()> {
    let key = keys::vehicle(vehicle.plate_colour.code, &vehicle.plate);
    for card in &vehicle.card_numbers {
        tx.insert(keys::card(card).as_bytes(), key.as_bytes())?;
    }
    tx.insert(key.as_bytes(), encode(&key, vehicle).or_abort()?)?;
    Ok(())
}

/// Raises the day's sequence to at least `seq`, inside a transaction.
pub(crate) fn tx_raise_seq(tx: &TransactionalTree, date: &str, seq: u32) -> TxResult<()> {
    let key = keys::seq(date);
    if tx_seq(tx, &key)? < seq {
        tx.insert(key.as_bytes(), seq.to_be_bytes().to_vec())?;
    }
    Ok(())
}

fn tx_seq(tx: &TransactionalTree, key: &str) -> TxResult<u32> {
    match tx.get(key)? {
        None => Ok(0),
        Some(bytes) => match <[u8; 4]>::try_from(bytes.as_ref()) {
            Ok(b) => Ok(u32::from_be_bytes(b)),
            Err(_) => abort(corrupt(key.as_bytes(), "sequence is not 4 bytes")),
        },
    }
}

/// The next free record id of the China day `date`, its sequence taken.
fn tx_next_record_id(tx: &TransactionalTree, date: &str) -> TxResult<String> {
    let key = keys::seq(date);
    let mut seq = tx_seq(tx, &key)?;
    loop {
        seq = match seq.checked_add(1) {
            Some(s) if s <= RECORD_SEQ_PER_DAY_MAX => s,
            _ => {
                return abort(HostError::SequenceExhausted {
                    date: date.to_owned(),
                })
            }
        };
        let id = format!("R{date}{seq:06}");
        if tx.get(keys::record(&id))?.is_none() {
            tx.insert(key.as_bytes(), seq.to_be_bytes().to_vec())?;
            return Ok(id);
        }
    }
}

impl EmbeddedHost {
    /// Opens the host's tree in `store` with the system clock, and verifies every stored value
    /// and index ([`EmbeddedHost::verify`]); refuses to open on corruption.
    pub fn open(store: &Store) -> Result<EmbeddedHost, HostError> {
        EmbeddedHost::open_with_clock(store, Arc::new(SystemClock))
    }

    /// [`EmbeddedHost::open`] with another clock (tests, reproducible demos).
    pub fn open_with_clock(
        store: &Store,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedHost, HostError> {
        let host = EmbeddedHost {
            store: store.clone(),
            tree: store.tree(HOST_TREE)?,
            clock,
        };
        host.verify()?;
        Ok(host)
    }

    /// Every record not 已圈存 (未圈存, 圈存中, 待核对), at most `max`, in record id order:
    /// what a restored backup may show unloaded that was loaded after it.
    pub fn records_not_loaded(&self, max: usize) -> Result<Vec<RechargeRecord>, HostError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::record("")) {
            let (key, value) = item.map_err(sled_err)?;
            let record = decode_record(&key, &value)?;
            if record.status != RecordStatus::Loaded {
                if out.len() >= max {
                    break;
                }
                out.push(record);
            }
        }
        Ok(out)
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub(crate) fn flush(&self) -> Result<(), HostError> {
        Ok(self.store.durable_flush()?)
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    /// Checks every vehicle and record (checksums, keys) and that every index agrees with them.
    pub fn verify(&self) -> Result<VerifyReport, HostError> {
        let mut report = VerifyReport {
            vehicles: 0,
            records: 0,
        };
        let mut cards = 0u64;
        for item in self.tree.scan_prefix(b"veh/") {
            let (key, value) = item.map_err(sled_err)?;
            let vehicle = decode_vehicle(&key, &value)?;
            for card in &vehicle.card_numbers {
                if self
                    .tree
                    .get(keys::card(card))
                    .map_err(sled_err)?
                    .as_deref()
                    != Some(key.as_ref())
                {
                    return Err(corrupt(&key, format!("card index of {card} disagrees")));
                }
                cards += 1;
            }
            report.vehicles += 1;
        }
        if self.tree.scan_prefix(b"card/").count() as u64 != cards {
            return Err(corrupt(b"card/", "card index lists cards no vehicle holds"));
        }
        let mut open_total = 0u64;
        for item in self.tree.scan_prefix(b"rec/") {
            let (key, value) = item.map_err(sled_err)?;
            let record = decode_record(&key, &value)?;
            self.verify_record_indexes(&key, &record)?;
            open_total += u64::from(record.status.is_open());
            report.records += 1;
        }
        for (prefix, what) in [(&b"vrec/"[..], "vehicle"), (&b"crec/"[..], "card")] {
            if self.tree.scan_prefix(prefix).count() as u64 != report.records {
                return Err(corrupt(prefix, format!("{what} index has stray entries")));
            }
        }
        let mut open_listed = 0u64;
        for item in self.tree.scan_prefix(b"open/") {
            let (key, value) = item.map_err(sled_err)?;
            open_listed += decode_open(&key, &value)?.len() as u64;
        }
        if open_listed != open_total {
            return Err(corrupt(
                b"open/",
                "open index lists records that are not open",
            ));
        }
        Ok(report)
    }

    fn verify_record_indexes(&self, key: &[u8], record: &RechargeRecord) -> Result<(), HostError> {
        let vrec = keys::vehicle_record(
            record.plate_colour.code,
            &record.plate,
            record.recharged_at.unix_timestamp(),
            &record.record_id,
        );
        if !self.tree.contains_key(vrec).map_err(sled_err)? {
            return Err(corrupt(key, "missing from the vehicle index"));
        }
        let crec = keys::card_record(&record.card_number, &record.record_id);
        if self.tree.get(crec).map_err(sled_err)?.as_deref()
            != Some(record.status.code().as_bytes())
        {
            return Err(corrupt(key, "card index disagrees with the status"));
        }
        let open_key = keys::open(&record.card_number);
        let listed = match self.tree.get(&open_key).map_err(sled_err)? {
            Some(v) => decode_open(open_key.as_bytes(), &v)?.contains(&record.record_id),
            None => false,
        };
        if listed != record.status.is_open() {
            return Err(corrupt(key, "open index disagrees with the status"));
        }
        if let Some(txn_id) = &record.load_txn_id {
            if self
                .tree
                .get(keys::txn(txn_id))
                .map_err(sled_err)?
                .as_deref()
                != Some(record.record_id.as_bytes())
            {
                return Err(corrupt(key, "transaction index disagrees"));
            }
        }
        Ok(())
    }

    fn get_record(&self, record_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        let key = keys::record(record_id);
        self.tree
            .get(&key)
            .map_err(sled_err)?
            .map(|v| decode_record(key.as_bytes(), &v))
            .transpose()
    }

    fn load_listed_record(
        &self,
        record_id: &str,
        index_key: &[u8],
    ) -> Result<RechargeRecord, HostError> {
        self.get_record(record_id)?
            .ok_or_else(|| corrupt(index_key, format!("points to missing record {record_id}")))
    }

    fn get_vehicle(&self, colour: u16, plate: &str) -> Result<Option<Vehicle>, HostError> {
        let key = keys::vehicle(colour, plate);
        self.tree
            .get(&key)
            .map_err(sled_err)?
            .map(|v| decode_vehicle(key.as_bytes(), &v))
            .transpose()
    }

    /// Applies one checked state change, durably.
    fn change(&self, record_id: &str, req: ChangeRequest) -> Result<RechargeRecord, HostError> {
        let at = self.now();
        let record = run(&self.tree, |tx| {
            let mut record = tx_record(tx, record_id)?;
            if change::already_done(&record, &req) {
                return Ok(record);
            }
            let mut open = tx_open(tx, &record.card_number)?;
            let mut around = Surroundings::default();
            if change::needs_surroundings(&req, record.status) {
                if let Some(txn_id) = &req.txn_id {
                    around.txn_owner = tx
                        .get(keys::txn(txn_id))?
                        .map(|owner| String::from_utf8_lossy(&owner).into_owned());
                }
                if let Some(other) = open.iter().find(|id| id.as_str() != record_id) {
                    let other = tx_record(tx, other)?;
                    around.other_open = Some((other.record_id, other.status));
                }
            }
            let applied = match change::apply(&mut record, &req, at, &around) {
                Ok(applied) => applied,
                Err(e) => return abort(e),
            };
            if let (RecordAction::BeginLoad, Some(txn_id)) = (req.action, &record.load_txn_id) {
                tx.insert(keys::txn(txn_id).as_bytes(), record_id.as_bytes())?;
            }
            let to = record.status;
            open.retain(|id| id != record_id);
            if to.is_open() {
                open.push(record_id.to_owned());
            }
            tx_set_open(tx, &record.card_number, &open)?;
            record.history.push(applied.change);
            while record.history.len() > HISTORY_ENTRIES_MAX {
                record.history.remove(1);
            }
            let key = keys::record(record_id);
            tx.insert(key.as_bytes(), encode(&key, &record).or_abort()?)?;
            tx.insert(
                keys::card_record(&record.card_number, record_id).as_bytes(),
                to.code().as_bytes(),
            )?;
            Ok(record)
        })?;
        self.flush()?;
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

impl IssuerHost for EmbeddedHost {
    fn vehicle(&self, plate: &str, colour: u16) -> Result<Option<Vehicle>, HostError> {
        let plate = validate::normalize_plate(plate)?;
        let colour = validate::plate_colour(colour)?;
        self.get_vehicle(colour.code, &plate)
    }

    fn vehicles_for_card(&self, card_number: &str) -> Result<Vec<Vehicle>, HostError> {
        let card = validate::card_number(card_number)?;
        let card_key = keys::card(&card);
        let Some(vehicle_key) = self.tree.get(&card_key).map_err(sled_err)? else {
            return Ok(Vec::new());
        };
        match self.tree.get(&vehicle_key).map_err(sled_err)? {
            Some(v) => Ok(vec![decode_vehicle(&vehicle_key, &v)?]),
            None => Err(corrupt(card_key.as_bytes(), "points to a missing vehicle")),
        }
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
            .transpose()?;
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
        let key = keys::vehicle(colour.code, &plate);
        let vehicle = run(&self.tree, |tx| {
            let existing: Option<Vehicle> = match tx.get(&key)? {
                Some(v) => Some(decode_vehicle(key.as_bytes(), &v).or_abort()?),
                None => None,
            };
            for card in &card_numbers {
                tx_check_card_free(tx, card, &key)?;
            }
            if let Some(old) = &existing {
                for card in old
                    .card_numbers
                    .iter()
                    .filter(|c| !card_numbers.contains(c))
                {
                    tx.remove(keys::card(card).as_bytes())?;
                }
            }
            let vehicle = Vehicle {
                plate: plate.clone(),
                plate_colour: colour.clone(),
                card_numbers: card_numbers.clone(),
                owner_name: owner_name.clone(),
                vehicle_class,
                obu_contract_serial: obu_contract_serial.clone(),
                details: details.clone(),
                created_at: existing.as_ref().map_or(now, |v| v.created_at),
                updated_at: now,
                updated_by: operator.clone(),
            };
            tx_put_vehicle(tx, &vehicle)?;
            Ok(vehicle)
        })?;
        self.flush()?;
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
        let vehicle_key = keys::vehicle(colour.code, &plate);
        let record = run(&self.tree, |tx| {
            let vehicle = match tx.get(&vehicle_key)? {
                Some(v) => decode_vehicle(vehicle_key.as_bytes(), &v).or_abort()?,
                None => {
                    return abort(HostError::VehicleNotFound {
                        plate: plate.clone(),
                        colour: validate::colour_label(colour.code),
                    })
                }
            };
            let Some(card) = vehicle.current_card() else {
                return abort(HostError::NoCard {
                    plate: plate.clone(),
                    colour: validate::colour_label(colour.code),
                });
            };
            let record_id = tx_next_record_id(tx, &date)?;
            let record = RechargeRecord {
                record_id,
                card_number: card.to_owned(),
                plate: plate.clone(),
                plate_colour: colour.clone(),
                amount_fen,
                balance_before_fen: None,
                balance_after_fen: None,
                recharged_at: now,
                channel: channel.clone(),
                status: RecordStatus::NotLoaded,
                load_txn_id: None,
                loaded_at: None,
                txn_ids: Vec::new(),
                history: vec![RecordChange {
                    at: now,
                    operator: operator.clone(),
                    action: RecordAction::Recharge,
                    from: None,
                    to: RecordStatus::NotLoaded,
                    reason: None,
                    txn_id: None,
                    balance_before_fen: None,
                    balance_after_fen: None,
                }],
            };
            tx_insert_record(tx, &record)?;
            Ok(record)
        })?;
        self.flush()?;
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
        if self.get_vehicle(colour.code, &plate)?.is_none() {
            return Err(HostError::VehicleNotFound {
                plate,
                colour: validate::colour_label(colour.code),
            });
        }
        // Whole seconds, both ends inclusive: a start with a fraction begins at the next second.
        let from_seconds = query.from.map_or(i64::MIN, |t| {
            t.unix_timestamp()
                .saturating_add(i64::from(t.nanosecond() > 0))
        });
        let to_seconds = query.to.map_or(i64::MAX, |t| t.unix_timestamp());
        let prefix = keys::vehicle_records(colour.code, &plate);
        let mut low = prefix.clone();
        low.extend_from_slice(&keys::time(from_seconds));
        let mut high = prefix.clone();
        high.extend_from_slice(&keys::time(to_seconds));
        high.push(0xFF); // past every record id (ASCII) of the last second
        let skip = u64::from(query.page - 1) * u64::from(query.page_size);
        let mut total = 0u64;
        let mut ids = Vec::new();
        if from_seconds <= to_seconds {
            for item in self.tree.range(low..=high).rev() {
                let (key, _) = item.map_err(sled_err)?;
                if total >= skip && ids.len() < query.page_size as usize {
                    let id = key
                        .get(prefix.len() + TIME_KEY_BYTES..)
                        .ok_or_else(|| corrupt(&key, "vehicle index key too short"))?;
                    ids.push((String::from_utf8_lossy(id).into_owned(), key));
                }
                total += 1;
            }
        }
        let records = ids
            .iter()
            .map(|(id, key)| self.load_listed_record(id, key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            records,
            total,
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
        let prefix = keys::card_records(&card);
        let mut ids = Vec::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item.map_err(sled_err)?;
            let stored = std::str::from_utf8(&value)
                .ok()
                .and_then(RecordStatus::from_code)
                .ok_or_else(|| corrupt(&key, "unknown status in the card index"))?;
            if status.is_some_and(|s| s != stored) {
                continue;
            }
            if ids.len() == CARD_RECORDS_MAX {
                return Err(HostError::TooManyRecords { card_number: card });
            }
            let id = key
                .get(prefix.len()..)
                .ok_or_else(|| corrupt(&key, "card index key too short"))?;
            ids.push((String::from_utf8_lossy(id).into_owned(), key));
        }
        let mut records = ids
            .iter()
            .map(|(id, key)| self.load_listed_record(id, key))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| (b.recharged_at, &b.record_id).cmp(&(a.recharged_at, &a.record_id)));
        Ok(records)
    }

    fn record(&self, record_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        self.get_record(change::record_id(record_id)?)
    }

    fn record_for_txn(&self, txn_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        let txn_id = validate::txn_id(txn_id, LOAD_TXN_ID_CHARS_MAX)?;
        let Some(owner) = self.tree.get(keys::txn(&txn_id)).map_err(sled_err)? else {
            return Ok(None);
        };
        let record_id = String::from_utf8_lossy(&owner).into_owned();
        match self.get_record(&record_id)? {
            Some(record) => Ok(Some(record)),
            None => Err(corrupt(
                keys::txn(&txn_id).as_bytes(),
                "the transaction index points to a missing record",
            )),
        }
    }

    fn open_records(&self) -> Result<Vec<RechargeRecord>, HostError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"open/") {
            let (key, ids) = item.map_err(sled_err)?;
            for record_id in decode_open(&key, &ids)? {
                if out.len() >= CARD_RECORDS_MAX {
                    return Ok(out);
                }
                match self.get_record(&record_id)? {
                    Some(record) => out.push(record),
                    None => return Err(corrupt(&key, "the open index points to a missing record")),
                }
            }
        }
        Ok(out)
    }

    fn change_record(
        &self,
        record_id: &str,
        request: ChangeRequest,
    ) -> Result<RechargeRecord, HostError> {
        self.change(record_id, request)
    }
}
