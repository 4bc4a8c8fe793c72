//! Issuance on a simulated OBU programmer, without a daemon: the happy path, and the refusals
//! that leave the ESAM untouched (activated for another vehicle, expired contract, a plate that
//! GBK cannot hold), and a write that does not read back.

use std::sync::Arc;
use std::time::Duration;

use cardd_api::obu::VehicleDetails;
use cardd_journal::clock::{Clock, ManualClock, SystemClock};
use cardd_obu::{issue_esam, IssueError, ObuService, VehicleAccount};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{
    CardChannel, CommandApdu, Reader, ReaderError, ReaderFactory, ReaderSelector, ResponseApdu,
};
use cardd_sim::demo::{demo_obu_masters, demo_obu_spec, DEMO_OBU_CONTRACT_SERIAL};
use cardd_sim::{
    ObuEsam, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld, VehicleInfo,
};

const READER: &str = "sim:obu";

/// A factory-fresh OBU with the demo serial: no dates, no vehicle, not activated.
fn factory_obu() -> SimCard {
    let mut spec = demo_obu_spec();
    spec.signed_date = [0; 4];
    spec.expiry_date = [0; 4];
    spec.vehicle = VehicleInfo::parse(&[0; 59]).expect("59 bytes");
    ObuEsam::issue(&spec, &demo_obu_masters())
        .expect("valid OBU spec")
        .into()
}

/// The demo OBU as issued by the simulator: dates 2024-01-01 to 2034-01-01, not activated.
fn demo_obu() -> SimCard {
    ObuEsam::issue(&demo_obu_spec(), &demo_obu_masters())
        .expect("valid OBU spec")
        .into()
}

fn programmer(card: SimCard) -> (SimWorld, Reader) {
    let world = SimWorld::new();
    world
        .add_reader(SimReaderConfig::new("obu", SimReaderKind::ObuProgrammer).with_card(card))
        .expect("reader");
    let session = SimFactory::new(world.clone())
        .open(&ReaderSelector::Id(READER.into()))
        .expect("open");
    (world, Reader::new(session, Duration::from_secs(1)))
}

fn details() -> VehicleDetails {
    VehicleDetails {
        user_type: 0,
        length_mm: 4800,
        width_mm: 1800,
        height_mm: 1500,
        wheels: 4,
        axles: 2,
        wheelbase_mm: 2800,
        load_kg_or_seats: 5,
        description: "小型轿车".into(),
        engine_number: "ENG0000000001".into(),
    }
}

fn account(plate: &str) -> VehicleAccount {
    VehicleAccount {
        plate: plate.into(),
        plate_colour: 0,
        vehicle_class: 1,
        obu_contract_serial: Some(DEMO_OBU_CONTRACT_SERIAL.into()),
        details: Some(details()),
    }
}

fn service(clock: Arc<dyn Clock>) -> ObuService {
    ObuService::new(Arc::new(SoftSam::demo()), clock)
}

fn accept(d: &VehicleDetails) -> Result<VehicleDetails, IssueError> {
    Ok(d.clone())
}

/// The ESAM's system file, vehicle file and activation.
fn files(world: &SimWorld) -> (Vec<u8>, Vec<u8>, bool) {
    let card = world.card(READER).expect("an OBU");
    let esam = card.as_obu().expect("an OBU");
    (
        esam.system_info().to_vec(),
        esam.vehicle_info().to_vec(),
        esam.is_activated(),
    )
}

#[test]
fn a_factory_obu_is_issued_activated_and_verified() {
    let (world, mut reader) = programmer(factory_obu());
    let obu = service(Arc::new(SystemClock));
    let before = obu.read_info(&mut reader).expect("info");
    assert!(before.dates_missing && !before.activated, "{before:?}");
    assert!(before.vehicle.as_ref().is_some_and(|v| v.blank));

    let (plan, order) = obu.plan(&account("陕A12345"), None, accept).expect("plan");
    assert_eq!(plan.obu_number, DEMO_OBU_CONTRACT_SERIAL);
    assert_eq!(plan.details_source, "account");
    assert_eq!(plan.vehicle.vehicle_class_label, "一型客车");
    let outcome = obu.issue(&mut reader, &order).expect("issued");
    assert_eq!(
        outcome.written,
        ["system_info_dates", "vehicle_info", "activation_flag"]
    );
    let report = ObuService::report(plan, &outcome);
    assert!(report.activated);
    assert_eq!(report.signed_date, Some(cardd_obu::ymd(obu.today())));

    let (_, vehicle, activated) = files(&world);
    assert!(activated);
    assert_eq!(vehicle, demo_obu_spec().vehicle.to_bytes().to_vec());
    let after = obu.read_info(&mut reader).expect("info");
    let seen = after.vehicle.expect("vehicle file");
    assert_eq!(
        (seen.vehicle.plate.as_str(), seen.blank),
        ("陕A12345", false)
    );
    assert_eq!(seen.vehicle.details, details());

    // Issuing again to the same vehicle rewrites the same bytes.
    let again = obu.issue(&mut reader, &order).expect("idempotent");
    assert_eq!(again.written, ["vehicle_info", "activation_flag"]);
}

#[test]
fn an_obu_activated_for_another_vehicle_is_refused_untouched() {
    let (world, mut reader) = programmer(demo_obu());
    let obu = service(Arc::new(SystemClock));
    let (_, order) = obu.plan(&account("陕A12345"), None, accept).expect("plan");
    obu.issue(&mut reader, &order).expect("issued");
    let before = files(&world);

    let (_, other) = obu.plan(&account("陕B54321"), None, accept).expect("plan");
    let err = obu.issue(&mut reader, &other).expect_err("refused");
    assert!(
        matches!(err, IssueError::IssuedToOther { ref plate, .. } if plate == "陕A12345"),
        "{err}"
    );
    assert_eq!(err.code(), cardd_api::ErrorCode::CardNotEligible);
    assert_eq!(files(&world), before);
}

#[test]
fn an_expired_contract_is_refused_untouched() {
    let (world, mut reader) = programmer(demo_obu());
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2034-01-02 08:00 +8),
    ));
    let obu = service(clock);
    assert!(obu.read_info(&mut reader).expect("info").expired);
    let before = files(&world);
    let (_, order) = obu.plan(&account("陕A12345"), None, accept).expect("plan");
    let err = obu.issue(&mut reader, &order).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "OBU合同已于 2034-01-01 到期，不能发行；请更换OBU"
    );
    assert_eq!(files(&world), before);
}

#[test]
fn a_plate_gbk_cannot_hold_is_refused_before_the_card() {
    let obu = service(Arc::new(SystemClock));
    let err = obu
        .plan(&account("陕A1234🚗"), None, accept)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            IssueError::Text {
                field: "车牌号",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("GBK"), "{err}");
}

#[test]
fn details_given_at_issuance_fill_an_account_without_and_must_agree_with_one_with() {
    let obu = service(Arc::new(SystemClock));
    let mut bare = account("陕A12345");
    bare.details = None;
    assert!(matches!(
        obu.plan(&bare, None, accept),
        Err(IssueError::MissingDetails { .. })
    ));
    let (plan, _) = obu.plan(&bare, Some(details()), accept).expect("plan");
    assert_eq!(plan.details_source, "params");
    let other = VehicleDetails {
        wheels: 6,
        ..details()
    };
    assert!(matches!(
        obu.plan(&account("陕A12345"), Some(other), accept),
        Err(IssueError::DetailsConflict)
    ));
    let mut no_serial = account("陕A12345");
    no_serial.obu_contract_serial = None;
    assert!(matches!(
        obu.plan(&no_serial, None, accept),
        Err(IssueError::NoContractSerial { .. })
    ));
}

/// A channel whose READ BINARY answers come back with one byte changed once anything was
/// written: a write the card did not keep.
struct Forgetful<'a> {
    inner: &'a mut Reader,
    wrote: bool,
}

impl CardChannel for Forgetful<'_> {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        let mut response = self.inner.transmit(command)?;
        if command.ins == 0xD6 {
            self.wrote = true;
        }
        if command.ins == 0xB0 && self.wrote {
            if let Some(last) = response.data.last_mut() {
                *last ^= 0x01;
            }
        }
        Ok(response)
    }

    fn reader_id(&self) -> &str {
        self.inner.reader_id()
    }
}

#[test]
fn a_write_that_does_not_read_back_is_not_reported_done() {
    // The simulated programmer's ESAM sits behind its OBU channel; a contact reader holding
    // the ESAM directly lets the test wrap the channel.
    let world = SimWorld::new();
    world
        .add_reader(SimReaderConfig::new("esam", SimReaderKind::Contact).with_card(factory_obu()))
        .expect("reader");
    let session = SimFactory::new(world.clone())
        .open(&ReaderSelector::Id("sim:esam".into()))
        .expect("open");
    let mut reader = Reader::new(session, Duration::from_secs(1));
    let obu = service(Arc::new(SystemClock));
    let (_, order) = obu.plan(&account("陕A12345"), None, accept).expect("plan");
    let mut channel = Forgetful {
        inner: &mut reader,
        wrote: false,
    };
    let sam = SoftSam::demo();
    let mut wrote = false;
    let err = issue_esam(&mut Purse::new(&mut channel), &sam, &order, &mut wrote)
        .expect_err("not verified");
    assert!(wrote);
    assert!(
        matches!(
            err,
            IssueError::VerifyMismatch {
                file: "系统信息文件",
                offset: 26
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("OBU发行未完成"), "{err}");
}
