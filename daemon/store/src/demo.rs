//! Demo data: the simulator's demo cards as vehicle accounts, with recharge records to load.
//!
//! A newcomer who starts cardd with the `sim` driver holds the demo ETC card
//! `61011801000000000001` (陕A12345, blue, 100.00 yuan, `drivers/sim/README.md`). For 圈存 and
//! 二次圈存 to be tried at once, the host must know that card's vehicle and have money waiting:
//! two 未圈存 records (200.00 and 50.00 yuan) and one older 已圈存 record of 100.00 yuan whose
//! balances (0.00 → 100.00) explain the card's balance. The SM4 demo card
//! `61011801000000000002` (陕AD12345, green) gets its vehicle account only.
//!
//! Everything is at fixed times in June 2024 with fixed record ids, so the data is the same on
//! every machine and seeding is idempotent: what exists is left exactly as it is (a demo record
//! that was loaded stays loaded), only what is missing is added.
//!
//! The 已圈存 record's load transaction `DEMO-R20240601000001` is not in the journal: that load
//! happened, in the story, before cardd.

use time::macros::datetime;
use time::OffsetDateTime;

use crate::embedded::{
    keys, run, tx_check_card_free, tx_insert_record, tx_put_vehicle, tx_raise_seq, EmbeddedHost,
};
use cardd_etc::error::HostError;
use cardd_etc::model::{
    PlateColour, RechargeRecord, RecordAction, RecordChange, RecordStatus, SeedReport, Vehicle,
    VehicleDetails,
};
use cardd_journal::clock::china_date;

/// The demo ETC card (3DES).
pub const DEMO_ETC_CARD: &str = "61011801000000000001";
/// Its vehicle's plate.
pub const DEMO_ETC_PLATE: &str = "陕A12345";
/// Its vehicle's plate colour: blue.
pub const DEMO_ETC_COLOUR: u16 = 0;
/// The demo OBU's contract serial (issued to 陕A12345).
pub const DEMO_OBU_CONTRACT_SERIAL: &str = "6101180100000001";
/// The SM4 demo ETC card.
pub const DEMO_SM4_CARD: &str = "61011801000000000002";
/// Its vehicle's plate.
pub const DEMO_SM4_PLATE: &str = "陕AD12345";
/// Its vehicle's plate colour: green.
pub const DEMO_SM4_COLOUR: u16 = 11;
/// The operator named in the demo records' history: the daemon's demo teller.
pub const DEMO_OPERATOR: &str = "teller";
/// The older, 已圈存 demo record (100.00 yuan, balance 0.00 → 100.00).
pub const DEMO_LOADED_RECORD_ID: &str = "R20240601000001";
/// The 未圈存 demo records, newest first: 50.00 yuan (网上银行) and 200.00 yuan (银行柜台).
pub const DEMO_NOT_LOADED_RECORD_IDS: [&str; 2] = ["R20240620000001", "R20240615000001"];

/// When the demo vehicle accounts were opened (the demo cards' start date).
const DEMO_OPENED_AT: OffsetDateTime = datetime!(2024-01-01 09:00:00 +8);

fn colour(code: u16) -> PlateColour {
    PlateColour {
        code,
        label: cardd_api::types::plate_colour_zh(code).to_owned(),
    }
}

/// The demo vehicle accounts: 陕A12345 blue (张三, card …0001, OBU) and 陕AD12345 green
/// (李四, card …0002).
pub fn demo_vehicles() -> Vec<Vehicle> {
    let vehicle = |plate: &str, code, card: &str, owner: &str, obu: Option<&str>| Vehicle {
        plate: plate.to_owned(),
        plate_colour: colour(code),
        card_numbers: vec![card.to_owned()],
        owner_name: owner.to_owned(),
        vehicle_class: 1,
        obu_contract_serial: obu.map(str::to_owned),
        details: obu.map(|_| demo_obu_vehicle_details()),
        created_at: DEMO_OPENED_AT,
        updated_at: DEMO_OPENED_AT,
        updated_by: DEMO_OPERATOR.to_owned(),
    };
    vec![
        vehicle(
            DEMO_ETC_PLATE,
            DEMO_ETC_COLOUR,
            DEMO_ETC_CARD,
            "张三",
            Some(DEMO_OBU_CONTRACT_SERIAL),
        ),
        vehicle(DEMO_SM4_PLATE, DEMO_SM4_COLOUR, DEMO_SM4_CARD, "李四", None),
    ]
}

/// The details of 陕A12345, the vehicle of the demo OBU: the values the simulator's demo OBU
/// already carries, so issuing it writes the same vehicle file.
pub fn demo_obu_vehicle_details() -> VehicleDetails {
    VehicleDetails {
        user_type: 0,
        length_mm: 4800,
        width_mm: 1800,
        height_mm: 1500,
        wheels: 4,
        axles: 2,
        wheelbase_mm: 2800,
        load_kg_or_seats: 5,
        description: "小型轿车".to_owned(),
        engine_number: "ENG0000000001".to_owned(),
    }
}

fn change(
    at: OffsetDateTime,
    action: RecordAction,
    from: Option<RecordStatus>,
    to: RecordStatus,
) -> RecordChange {
    RecordChange {
        at,
        operator: DEMO_OPERATOR.to_owned(),
        action,
        from,
        to,
        reason: None,
        txn_id: None,
        balance_before_fen: None,
        balance_after_fen: None,
    }
}

fn not_loaded(id: &str, at: OffsetDateTime, amount_fen: i64, channel: &str) -> RechargeRecord {
    RechargeRecord {
        record_id: id.to_owned(),
        card_number: DEMO_ETC_CARD.to_owned(),
        plate: DEMO_ETC_PLATE.to_owned(),
        plate_colour: colour(DEMO_ETC_COLOUR),
        amount_fen,
        balance_before_fen: None,
        balance_after_fen: None,
        recharged_at: at,
        channel: channel.to_owned(),
        status: RecordStatus::NotLoaded,
        load_txn_id: None,
        loaded_at: None,
        txn_ids: Vec::new(),
        history: vec![change(
            at,
            RecordAction::Recharge,
            None,
            RecordStatus::NotLoaded,
        )],
    }
}

/// The demo recharge records of 陕A12345, oldest first.
pub fn demo_records() -> Vec<RechargeRecord> {
    let recharged = datetime!(2024-06-01 09:30:00 +8);
    let begun = datetime!(2024-06-01 09:31:00 +8);
    let loaded_at = datetime!(2024-06-01 09:31:05 +8);
    let txn_id = format!("DEMO-{DEMO_LOADED_RECORD_ID}");
    let mut loaded = not_loaded(DEMO_LOADED_RECORD_ID, recharged, 10_000, "银行柜台");
    loaded.status = RecordStatus::Loaded;
    loaded.balance_before_fen = Some(0);
    loaded.balance_after_fen = Some(10_000);
    loaded.load_txn_id = Some(txn_id.clone());
    loaded.txn_ids = vec![txn_id.clone()];
    loaded.loaded_at = Some(loaded_at);
    let mut begin = change(
        begun,
        RecordAction::BeginLoad,
        Some(RecordStatus::NotLoaded),
        RecordStatus::Loading,
    );
    begin.txn_id = Some(txn_id.clone());
    let mut finish = change(
        loaded_at,
        RecordAction::FinishLoad,
        Some(RecordStatus::Loading),
        RecordStatus::Loaded,
    );
    finish.txn_id = Some(txn_id);
    finish.balance_before_fen = Some(0);
    finish.balance_after_fen = Some(10_000);
    loaded.history.extend([begin, finish]);
    vec![
        loaded,
        not_loaded(
            DEMO_NOT_LOADED_RECORD_IDS[1],
            datetime!(2024-06-15 10:00:00 +8),
            20_000,
            "银行柜台",
        ),
        not_loaded(
            DEMO_NOT_LOADED_RECORD_IDS[0],
            datetime!(2024-06-20 14:30:00 +8),
            5_000,
            "网上银行",
        ),
    ]
}

/// The sequence part of one of our record ids (`R` + 8-digit date + 6-digit sequence).
fn record_seq(record_id: &str) -> u32 {
    record_id.get(9..).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl EmbeddedHost {
    /// Adds whatever of the demo data is missing ([`demo_vehicles`], [`demo_records`]), in one
    /// durable transaction; existing vehicles and records are left untouched, so seeding twice
    /// changes nothing. Refused when a demo card is issued to another vehicle.
    pub fn seed_demo(&self) -> Result<SeedReport, HostError> {
        let vehicles = demo_vehicles();
        let records = demo_records();
        let report = run(self.tree(), |tx| {
            let mut report = SeedReport::default();
            for vehicle in &vehicles {
                let key = keys::vehicle(vehicle.plate_colour.code, &vehicle.plate);
                if tx.get(&key)?.is_some() {
                    continue;
                }
                for card in &vehicle.card_numbers {
                    tx_check_card_free(tx, card, &key)?;
                }
                tx_put_vehicle(tx, vehicle)?;
                report.vehicles_added += 1;
            }
            for record in &records {
                if tx.get(keys::record(&record.record_id))?.is_some() {
                    continue;
                }
                tx_insert_record(tx, record)?;
                tx_raise_seq(
                    tx,
                    &china_date(record.recharged_at),
                    record_seq(&record.record_id),
                )?;
                report.records_added += 1;
            }
            Ok(report)
        })?;
        if report != SeedReport::default() {
            self.flush()?;
            tracing::info!(
                vehicles = report.vehicles_added,
                records = report.records_added,
                "demo issuer data seeded"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_is_consistent() {
        let records = demo_records();
        for record in &records {
            assert_eq!(
                &record.record_id[1..9],
                china_date(record.recharged_at),
                "record ids carry the China date"
            );
            assert!(record_seq(&record.record_id) >= 1);
            if let (Some(before), Some(after)) =
                (record.balance_before_fen, record.balance_after_fen)
            {
                assert_eq!(before + record.amount_fen, after);
            }
        }
        let loaded = &records[0];
        assert_eq!(loaded.status, RecordStatus::Loaded);
        assert_eq!(
            loaded.balance_after_fen,
            Some(10_000),
            "explains the card's 100.00"
        );
        assert_eq!(
            records
                .iter()
                .filter(|r| r.status == RecordStatus::NotLoaded)
                .count(),
            2
        );
        assert_eq!(demo_vehicles().len(), 2);
    }
}
