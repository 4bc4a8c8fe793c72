//! Vehicle details (what an OBU's vehicle file needs): validation, storage with the account,
//! and vehicle accounts stored before details existed staying readable.

use std::sync::Arc;

use cardd_etc::model::{VehicleDetails, VehicleInput};
use cardd_etc::validate::vehicle_details;
use cardd_etc::{HostError, IssuerHost, Vehicle};
use cardd_journal::Store;
use cardd_store::demo::{demo_obu_vehicle_details, demo_vehicles, DEMO_ETC_PLATE};
use cardd_store::{EmbeddedHost, ManualClock};

#[test]
fn the_demo_details_are_valid_and_texts_are_normalised() {
    let demo = demo_obu_vehicle_details();
    assert_eq!(vehicle_details(&demo).unwrap(), demo);
    let typed = VehicleDetails {
        description: "  轻型货车 ".into(),
        engine_number: " e4h-1 ".into(),
        ..demo.clone()
    };
    let clean = vehicle_details(&typed).unwrap();
    assert_eq!(clean.description, "轻型货车");
    assert_eq!(clean.engine_number, "E4H-1");
    let empty = VehicleDetails {
        description: String::new(),
        engine_number: String::new(),
        ..demo
    };
    assert!(vehicle_details(&empty).is_ok(), "texts are optional");
}

#[test]
fn bad_details_are_refused_with_the_field_named() {
    let ok = demo_obu_vehicle_details();
    let cases: Vec<(VehicleDetails, &str)> = vec![
        (
            VehicleDetails {
                user_type: 3,
                ..ok.clone()
            },
            "车辆用户类型",
        ),
        (
            VehicleDetails {
                length_mm: 0,
                ..ok.clone()
            },
            "车长",
        ),
        (
            VehicleDetails {
                width_mm: 30_001,
                ..ok.clone()
            },
            "车宽",
        ),
        (
            VehicleDetails {
                wheelbase_mm: 4800,
                ..ok.clone()
            },
            "轴距",
        ),
        (
            VehicleDetails {
                wheels: 1,
                ..ok.clone()
            },
            "车轮数",
        ),
        (
            VehicleDetails {
                axles: 0,
                ..ok.clone()
            },
            "车轴数",
        ),
        (
            VehicleDetails {
                axles: 5,
                wheels: 4,
                ..ok.clone()
            },
            "车轴数",
        ),
        (
            VehicleDetails {
                load_kg_or_seats: 0x100_0000,
                ..ok.clone()
            },
            "核定载质量",
        ),
        (
            VehicleDetails {
                description: "一二三四五六七八九".into(),
                ..ok.clone()
            },
            "车辆描述",
        ),
        (
            VehicleDetails {
                description: "a\u{7}".into(),
                ..ok.clone()
            },
            "车辆描述",
        ),
        (
            VehicleDetails {
                engine_number: "ABCDEFGHIJKLMNO".into(),
                ..ok.clone()
            },
            "发动机号",
        ),
        (
            VehicleDetails {
                engine_number: "发动机".into(),
                ..ok.clone()
            },
            "发动机号",
        ),
    ];
    for (bad, field) in cases {
        match vehicle_details(&bad) {
            Err(e @ HostError::InvalidField { .. }) => {
                assert!(e.to_string().contains(field), "{field}: {e}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn details_are_stored_with_the_account_and_old_accounts_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2024-06-01 09:00:00 +8),
    ));
    let host = EmbeddedHost::open_with_clock(&store, clock).unwrap();
    let input = VehicleInput {
        plate: "陕C33333".into(),
        plate_colour: 1,
        card_numbers: Vec::new(),
        owner_name: "王五".into(),
        vehicle_class: 12,
        obu_contract_serial: Some("6101180100000033".into()),
        details: Some(VehicleDetails {
            engine_number: "e4h-1".into(),
            ..demo_obu_vehicle_details()
        }),
    };
    let saved = host.upsert_vehicle(&input, "admin").unwrap();
    assert_eq!(saved.details.as_ref().unwrap().engine_number, "E4H-1");
    let found = host.vehicle("陕C33333", 1).unwrap().unwrap();
    assert_eq!(found.details, saved.details);
    let bad = VehicleInput {
        details: Some(VehicleDetails {
            wheels: 0,
            ..demo_obu_vehicle_details()
        }),
        ..input
    };
    assert!(host.upsert_vehicle(&bad, "admin").is_err());
    assert_eq!(host.vehicle("陕C33333", 1).unwrap().unwrap(), found);

    // An account written before vehicle details existed has no `details` key.
    let demo = demo_vehicles()
        .into_iter()
        .find(|v| v.plate == DEMO_ETC_PLATE)
        .unwrap();
    assert_eq!(demo.details, Some(demo_obu_vehicle_details()));
    let mut old = serde_json::to_value(&demo).unwrap();
    old.as_object_mut().unwrap().remove("details");
    let read: Vehicle = serde_json::from_value(old).unwrap();
    assert_eq!(read.details, None);
    assert_eq!(read.plate, demo.plate);
}
