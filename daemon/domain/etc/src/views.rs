//! Records and vehicles as the wire shows them ([`cardd_api::etc`]): amounts in yuan, times in
//! RFC 3339 at +08:00, codes with their zh-CN labels.

use cardd_api::etc::{ChangeView, RecordView, VehicleView};
use time::OffsetDateTime;

use crate::model::{RechargeRecord, RecordChange, Vehicle};

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<&Vehicle> for VehicleView {
    fn from(v: &Vehicle) -> Self {
        VehicleView {
            plate: v.plate.clone(),
            plate_colour: v.plate_colour.code,
            plate_colour_label: v.plate_colour.label.clone(),
            card_numbers: v.card_numbers.clone(),
            owner_name: v.owner_name.clone(),
            vehicle_class: v.vehicle_class,
            vehicle_class_label: v.vehicle_class_label().into(),
            obu_contract_serial: v.obu_contract_serial.clone(),
            details: v.details.clone(),
            updated_at: rfc3339(v.updated_at),
            updated_by: v.updated_by.clone(),
        }
    }
}

/// A change as the wire shows it; `operator_name` is the user name until the caller names the
/// operator as people read it.
impl From<&RecordChange> for ChangeView {
    fn from(c: &RecordChange) -> Self {
        ChangeView {
            at: rfc3339(c.at),
            operator: c.operator.clone(),
            operator_name: c.operator.clone(),
            action: serde_json::to_value(c.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            action_label: c.action.label().into(),
            from_label: c.from.map(|s| s.label().into()),
            to_label: c.to.label().into(),
            reason: c.reason.clone(),
            txn_id: c.txn_id.clone(),
        }
    }
}

impl From<&RechargeRecord> for RecordView {
    fn from(r: &RechargeRecord) -> Self {
        RecordView {
            record_id: r.record_id.clone(),
            card_number: r.card_number.clone(),
            plate: r.plate.clone(),
            plate_colour: r.plate_colour.code,
            plate_colour_label: r.plate_colour.label.clone(),
            balance_before: r.balance_before_yuan(),
            amount: r.amount_yuan(),
            balance_after: r.balance_after_yuan(),
            recharged_at: rfc3339(r.recharged_at),
            channel: r.channel.clone(),
            status: r.status.code().into(),
            status_label: r.status.label().into(),
            load_txn_id: r.load_txn_id.clone(),
            loaded_at: r.loaded_at.map(rfc3339),
            history: r.history.iter().map(ChangeView::from).collect(),
        }
    }
}
