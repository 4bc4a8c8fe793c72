//! [`RemoteRecords`]: a site's view of the host's recharge records, `cardd_etc::IssuerHost`
//! over the host's `records.*` methods. In fleet mode the site keeps no records of its own: a
//! record paid at any counter is read, loaded and changed at the host, in the host's
//! transactions, with the host's refusals word for word.
//!
//! A host that cannot be reached is [`HostError::Unreachable`] (无法连接发卡方后台…): nothing is
//! assumed. A change whose answer was lost may have been made; the caller reads the record
//! again (every change is idempotent when repeated: the same load begun or finished again is
//! answered with the record as it is).

use std::sync::Arc;

use cardd_api::ErrorCode;
use cardd_etc::change::ChangeRequest;
use cardd_etc::{
    HostError, IssuerHost, Page, RechargeRecord, RecordQuery, RecordStatus, Vehicle, VehicleInput,
};
use serde::de::DeserializeOwned;

use crate::link::{CallError, HostClient};
use crate::wire::{RecordCall, Refusal, WireChange};

/// The host's records, seen from a site.
#[derive(Debug, Clone)]
pub struct RemoteRecords {
    client: Arc<HostClient>,
}

impl RemoteRecords {
    pub fn new(client: Arc<HostClient>) -> RemoteRecords {
        RemoteRecords { client }
    }

    fn call<R: DeserializeOwned>(&self, call: RecordCall) -> Result<R, HostError> {
        let (method, params) = call.split();
        self.client
            .call(&method, &params)
            .map_err(|e| remote_error(&method, e))
    }
}

/// A failed call as the record store's error.
pub fn remote_error(method: &str, e: CallError) -> HostError {
    match e {
        CallError::Unreachable(detail) => {
            tracing::warn!(method, %detail, "the issuer host did not answer");
            HostError::Unreachable(detail)
        }
        CallError::Refused(error) => match error.data {
            Some(Refusal::Record {
                code,
                refusal,
                message,
            }) => HostError::Remote {
                code: ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal),
                refusal,
                message,
            },
            _ => HostError::Remote {
                code: ErrorCode::Internal,
                refusal: false,
                message: format!("发卡方后台出错：{}", error.message),
            },
        },
    }
}

impl IssuerHost for RemoteRecords {
    fn vehicle(&self, plate: &str, colour: u16) -> Result<Option<Vehicle>, HostError> {
        self.call(RecordCall::Vehicle {
            plate: plate.to_owned(),
            colour,
        })
    }

    fn vehicles_for_card(&self, card_number: &str) -> Result<Vec<Vehicle>, HostError> {
        self.call(RecordCall::VehiclesForCard {
            card_number: card_number.to_owned(),
        })
    }

    fn upsert_vehicle(&self, vehicle: &VehicleInput, operator: &str) -> Result<Vehicle, HostError> {
        self.call(RecordCall::UpsertVehicle {
            vehicle: vehicle.clone(),
            operator: operator.to_owned(),
        })
    }

    fn recharge(
        &self,
        plate: &str,
        colour: u16,
        amount_fen: i64,
        operator: &str,
        channel: &str,
    ) -> Result<RechargeRecord, HostError> {
        self.call(RecordCall::Recharge {
            plate: plate.to_owned(),
            colour,
            amount_fen,
            operator: operator.to_owned(),
            channel: channel.to_owned(),
        })
    }

    fn query_records(&self, query: &RecordQuery) -> Result<Page, HostError> {
        self.call(RecordCall::QueryRecords {
            query: query.clone(),
        })
    }

    fn records_for_card(
        &self,
        card_number: &str,
        status: Option<RecordStatus>,
    ) -> Result<Vec<RechargeRecord>, HostError> {
        self.call(RecordCall::RecordsForCard {
            card_number: card_number.to_owned(),
            status,
        })
    }

    fn record(&self, record_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        self.call(RecordCall::Record {
            record_id: record_id.to_owned(),
        })
    }

    fn record_for_txn(&self, txn_id: &str) -> Result<Option<RechargeRecord>, HostError> {
        self.call(RecordCall::RecordForTxn {
            txn_id: txn_id.to_owned(),
        })
    }

    fn open_records(&self) -> Result<Vec<RechargeRecord>, HostError> {
        self.call(RecordCall::OpenRecords {})
    }

    fn change_record(
        &self,
        record_id: &str,
        request: ChangeRequest,
    ) -> Result<RechargeRecord, HostError> {
        self.call(RecordCall::ChangeRecord {
            record_id: record_id.to_owned(),
            change: WireChange::from(&request),
        })
    }
}

/// Runs `call` against `records` (the host's side of the record methods).
pub fn serve_record_call(
    records: &dyn IssuerHost,
    call: RecordCall,
) -> Result<serde_json::Value, HostError> {
    fn json<T: serde::Serialize>(v: Result<T, HostError>) -> Result<serde_json::Value, HostError> {
        v.and_then(|v| {
            serde_json::to_value(v).map_err(|e| HostError::Encode {
                key: "answer".into(),
                reason: e.to_string(),
            })
        })
    }
    match call {
        RecordCall::Vehicle { plate, colour } => json(records.vehicle(&plate, colour)),
        RecordCall::VehiclesForCard { card_number } => {
            json(records.vehicles_for_card(&card_number))
        }
        RecordCall::UpsertVehicle { vehicle, operator } => {
            json(records.upsert_vehicle(&vehicle, &operator))
        }
        RecordCall::Recharge {
            plate,
            colour,
            amount_fen,
            operator,
            channel,
        } => json(records.recharge(&plate, colour, amount_fen, &operator, &channel)),
        RecordCall::QueryRecords { query } => json(records.query_records(&query)),
        RecordCall::RecordsForCard {
            card_number,
            status,
        } => json(records.records_for_card(&card_number, status)),
        RecordCall::Record { record_id } => json(records.record(&record_id)),
        RecordCall::RecordForTxn { txn_id } => json(records.record_for_txn(&txn_id)),
        RecordCall::OpenRecords {} => json(records.open_records()),
        RecordCall::ChangeRecord { record_id, change } => {
            let request = change.checked()?;
            let record_id = cardd_etc::change::record_id(&record_id)?;
            json(records.change_record(record_id, request))
        }
    }
}

/// A record store error as the wire's refusal.
pub fn record_refusal(e: &HostError) -> Refusal {
    Refusal::Record {
        code: e.code().code(),
        refusal: e.is_refusal(),
        message: e.to_string(),
    }
}
