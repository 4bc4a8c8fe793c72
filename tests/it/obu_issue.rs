//! OBU issuance and activation (`scripts/obu_issue.lua`, the `obu` module) over JSON-RPC on the
//! embedded default: the simulated OBU programmer `sim:obu`, and the `serial` driver talking to
//! a simulated programmer on a pseudo-terminal. Every refusal leaves the ESAM untouched; an OBU
//! moved away mid-write is issued again and verified; the ESAM's files are checked directly.

use crate::common;

use std::time::{Duration, Instant};

use cardd_api::ErrorCode;
use cardd_etc::model::{VehicleDetails, VehicleInput};
use cardd_serial::{SimProgrammer, SimProgrammerConfig};
use cardd_sim::demo::{demo_obu_masters, demo_obu_spec, DEMO_OBU_CONTRACT_SERIAL};
use cardd_sim::{FaultKind, FaultPlan, ObuEsam, ObuSpec, SimCard, SimWorld, VehicleInfo};
use common::TestDaemon;
use serde_json::{json, Value};

const FLOW: &str = "obu.issue";
const SIM_OBU: &str = "sim:obu";
const PLATE: &str = "陕A12345";

/// An OBU made from the demo spec changed by `change`.
fn obu(change: impl FnOnce(&mut ObuSpec)) -> SimCard {
    let mut spec = demo_obu_spec();
    change(&mut spec);
    ObuEsam::issue(&spec, &demo_obu_masters())
        .expect("valid OBU spec")
        .into()
}

/// An OBU as it leaves the factory: contract serial `serial`, no dates, no vehicle, not
/// activated.
pub(crate) fn factory_obu(serial: &str) -> SimCard {
    obu(|spec| {
        hex::decode_to_slice(serial, &mut spec.contract_serial).expect("16 hex digits");
        spec.signed_date = [0; 4];
        spec.expiry_date = [0; 4];
        spec.vehicle = VehicleInfo::parse(&[0; 59]).expect("59 bytes");
    })
}

/// The ESAM's MF EF01, DF01 EF01 and activation state.
fn esam_files(card: &SimCard) -> (Vec<u8>, Vec<u8>, bool) {
    let esam = card.as_obu().expect("an OBU");
    (
        esam.system_info().to_vec(),
        esam.vehicle_info().to_vec(),
        esam.is_activated(),
    )
}

fn world_files(world: &SimWorld) -> (Vec<u8>, Vec<u8>, bool) {
    esam_files(&world.card(SIM_OBU).expect("an OBU in sim:obu"))
}

/// Swaps the OBU on `sim:obu` in place: no insertion event, so no start-up or insertion
/// recovery job sends APDUs to it while a test counts them.
pub(crate) fn put_obu(world: &SimWorld, card: SimCard) {
    world
        .with_card_mut(SIM_OBU, |slot| *slot = card)
        .expect("an OBU on sim:obu");
}

/// The vehicle file the demo account of 陕A12345 gives: the demo OBU's own.
fn demo_vehicle_file() -> Vec<u8> {
    demo_obu_spec().vehicle.to_bytes().to_vec()
}

/// Today in China as BCD, and ten years on.
fn contract_dates() -> Vec<u8> {
    let (y, m, d) = cardd_obu::china_today();
    let mut out = cardd_crypto::bcd::date(y, m, d).to_vec();
    let expiry = if m == 2 && d == 29 {
        (y + 10, 2, 28)
    } else {
        (y + 10, m, d)
    };
    out.extend_from_slice(&cardd_crypto::bcd::date(expiry.0, expiry.1, expiry.2));
    out
}

async fn daemon(world: &str) -> (TestDaemon, SimWorld) {
    let name = world.to_owned();
    let d = TestDaemon::start_with(move |c| c.readers[0].options = json!({ "world": name })).await;
    let world = cardd_sim::named_world(world).expect("the daemon's simulated world");
    // Start-up recovery reads every card present once; let it be done with the OBU.
    let give_up = Instant::now() + Duration::from_secs(60);
    while world.apdu_count(SIM_OBU) == 0 {
        assert!(
            Instant::now() < give_up,
            "start-up recovery never reached sim:obu"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (d, world)
}

/// Polls the run until it reaches one of `states`.
async fn settle(d: &TestDaemon, token: &str, run_id: &str, states: &[&str]) -> Value {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let run = d
            .ok("flows.get", json!({ "run_id": run_id }), Some(token))
            .await;
        if states.iter().any(|s| run["state"] == *s) {
            return run;
        }
        assert!(Instant::now() < give_up, "run stuck: {run}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Starts the flow and returns the run once it asks for confirmation or has ended.
async fn begin(d: &TestDaemon, token: &str, key: &str, reader: &str, params: Value) -> Value {
    let start =
        json!({ "flow": FLOW, "params": params, "idempotency_key": key, "reader_id": reader });
    let run = d.ok("flows.start", start, Some(token)).await;
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    settle(d, token, &run_id, &["waiting", "failed", "succeeded"]).await
}

/// Answers the confirmation and returns the finished run.
async fn confirm(d: &TestDaemon, token: &str, waiting: &Value, yes: bool) -> Value {
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    let run_id = waiting["run_id"].as_str().expect("run id");
    let answer =
        json!({ "run_id": run_id, "prompt_id": waiting["prompt"]["prompt_id"], "answer": yes });
    d.ok("flows.answer", answer, Some(token)).await;
    settle(d, token, run_id, &["succeeded", "failed", "cancelled"]).await
}

fn failure(run: &Value) -> &str {
    assert_eq!(run["state"], "failed", "{run}");
    run["failure"]["message"].as_str().unwrap_or_default()
}

/// A vehicle account (no ETC card) naming the OBU `serial`.
fn account(
    plate: &str,
    colour: u16,
    class: u8,
    serial: &str,
    details: Option<VehicleDetails>,
) -> VehicleInput {
    serde_json::from_value(json!({
        "plate": plate, "plate_colour": colour, "card_numbers": [], "owner_name": "车主",
        "vehicle_class": class, "obu_contract_serial": serial, "details": details,
    }))
    .expect("a vehicle input")
}

pub(crate) fn demo_params() -> Value {
    json!({ "plate": PLATE, "plate_colour": 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_obu_is_issued_activated_and_verified() {
    let (d, world) = daemon(&format!("obu-issue-{}", std::process::id())).await;
    put_obu(&world, factory_obu(DEMO_OBU_CONTRACT_SERIAL));
    let teller = d.login("teller", "teller123").await;
    let listed = d.ok("flows.list", json!({}), Some(&teller)).await;
    let flow = listed
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == FLOW))
        .unwrap_or_else(|| panic!("{FLOW} is offered on the embedded default: {listed}"));
    assert_eq!(flow["title"], "OBU发行");

    let waiting = begin(&d, &teller, "obu-0001", SIM_OBU, demo_params()).await;
    let message = waiting["prompt"]["message"].as_str().unwrap_or_default();
    for line in [
        "OBU号：6101180100000001",
        "车牌号：陕A12345（蓝色）",
        "车型：一型客车",
        "车辆用户类型：普通车辆",
        "车长×车宽×车高：4800×1800×1500 毫米",
        "车辆描述：小型轿车",
        "发动机号：ENG0000000001",
        "将写入系统信息（签约日期、有效期）、车辆信息、激活标志。是否发行？",
    ] {
        assert!(message.contains(line), "{line:?} missing from {message}");
    }
    assert!(
        !world_files(&world).2,
        "nothing written before the confirmation"
    );

    let done = confirm(&d, &teller, &waiting, true).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let result = &done["result"];
    assert_eq!(result["obu_number"], DEMO_OBU_CONTRACT_SERIAL);
    assert_eq!(
        result["written"],
        json!(["system_info_dates", "vehicle_info", "activation_flag"])
    );
    assert_eq!(result["verified"], json!(["system_info", "vehicle_info"]));
    assert_eq!(result["activated"], true);
    assert_eq!(result["details_source"], "account");
    assert!(result["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("OBU发行成功"));

    // The ESAM itself: dates of today and ten years on, the account's vehicle file, activated.
    let (system, vehicle, activated) = world_files(&world);
    assert!(activated);
    assert_eq!(&system[18..26], contract_dates().as_slice());
    assert_eq!(hex::encode_upper(&system[10..18]), DEMO_OBU_CONTRACT_SERIAL);
    assert_eq!(vehicle, demo_vehicle_file());

    // Issuing it again to the same vehicle is allowed and rewrites the same bytes.
    let again = begin(&d, &teller, "obu-0002", SIM_OBU, demo_params()).await;
    let message = again["prompt"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("该OBU已激活，将按车辆账户重新写入"),
        "{message}"
    );
    assert!(message.contains("将写入车辆信息、激活标志。"), "{message}");
    let done = confirm(&d, &teller, &again, true).await;
    assert_eq!(
        done["result"]["written"],
        json!(["vehicle_info", "activation_flag"])
    );
    assert_eq!(world_files(&world), (system, vehicle, true));
    d.stop().await;
}

/// OBUs the demo account of 陕A12345 must refuse, with the words of the refusal: another
/// contract serial, an expired contract, activated for another plate.
fn foreign_obus() -> Vec<(SimCard, &'static str)> {
    vec![
        (
            factory_obu("6101180100000099"),
            "OBU合同序列号不符：发行器上的OBU为 6101180100000099，车辆账户",
        ),
        (
            obu(|s| s.expiry_date = [0x20, 0x20, 0x01, 0x01]),
            "OBU合同已于 2020-01-01 到期",
        ),
        (
            obu(|s| {
                s.tamper_flag = 0x01;
                s.vehicle.plate_gbk = cardd_crypto::gbk::encode_padded("陕B54321").expect("plate");
            }),
            "该OBU已激活并发行给 陕B54321（蓝色）",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_obu_untouched() {
    let (d, world) = daemon(&format!("obu-refuse-{}", std::process::id())).await;
    let teller = d.login("teller", "teller123").await;
    let mut cases: Vec<(SimCard, Value, &str)> = foreign_obus()
        .into_iter()
        .map(|(card, expected)| (card, demo_params(), expected))
        .collect();
    // An unknown vehicle; a vehicle account without an OBU.
    let unknown = json!({ "plate": "陕A99999", "plate_colour": 0 });
    let no_obu = json!({ "plate": "陕AD12345", "plate_colour": 11 });
    cases.push((
        factory_obu(DEMO_OBU_CONTRACT_SERIAL),
        unknown,
        "未找到车辆账户",
    ));
    cases.push((
        factory_obu(DEMO_OBU_CONTRACT_SERIAL),
        no_obu,
        "未登记OBU合同序列号",
    ));
    for (i, (card, params, expected)) in cases.into_iter().enumerate() {
        put_obu(&world, card);
        let before = world_files(&world);
        let run = begin(&d, &teller, &format!("refuse-{i}"), SIM_OBU, params).await;
        assert!(failure(&run).contains(expected), "{expected}: {run}");
        assert_eq!(
            world_files(&world),
            before,
            "{expected}: the OBU is untouched"
        );
    }

    // Not an OBU: the flow started on the ETC card reader.
    let run = begin(&d, &teller, "refuse-etc", "sim:etc", demo_params()).await;
    assert!(failure(&run).contains("读卡器上不是OBU"), "{run}");

    // The teller says no.
    put_obu(&world, factory_obu(DEMO_OBU_CONTRACT_SERIAL));
    let before = world_files(&world);
    let waiting = begin(&d, &teller, "refuse-6", SIM_OBU, demo_params()).await;
    let done = confirm(&d, &teller, &waiting, false).await;
    assert_eq!(done["result"]["status"], "cancelled", "{done}");
    assert_eq!(world_files(&world), before);

    // Roles: auditors and kiosks may not issue OBUs.
    for (user, password) in [("auditor", "audit123"), ("kiosk", "kiosk123")] {
        let token = d.login(user, password).await;
        let start = json!({ "flow": FLOW, "params": demo_params(), "idempotency_key": "r-1", "reader_id": SIM_OBU });
        let (code, message) = d.err("flows.start", start, Some(&token)).await;
        assert_eq!(
            code,
            ErrorCode::Forbidden.code() as i64,
            "{user}: {message}"
        );
        assert!(message.contains("无权执行“OBU发行”"), "{user}: {message}");
    }
    assert_eq!(world_files(&world), before);
    d.stop().await;
}

/// A flow that skips every check and calls `obu.issue` directly.
const RECKLESS_FLOW: &str = r#"
return {
  name = "obu.reckless", version = "1.0.0", title = "无核对发行", role = { "teller" },
  params = { plate = { type = "string", required = true }, plate_colour = { type = "integer", required = true } },
  run = function(ctx, params)
    return obu.issue({ plate = params.plate, plate_colour = params.plate_colour })
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_operation_refuses_what_a_flow_forgot_to_check() {
    let flows = tempfile::tempdir().expect("temp dir");
    std::fs::write(flows.path().join("reckless.lua"), RECKLESS_FLOW).expect("write flow");
    let name = format!("obu-reckless-{}", std::process::id());
    let (dir, world_name) = (flows.path().to_path_buf(), name.clone());
    let d = TestDaemon::start_with(move |c| {
        c.flows.dir = Some(dir);
        c.readers[0].options = json!({ "world": world_name });
    })
    .await;
    let world = cardd_sim::named_world(&name).expect("world");
    let teller = d.login("teller", "teller123").await;
    let cases = foreign_obus();
    for (i, (card, expected)) in cases.into_iter().enumerate() {
        put_obu(&world, card);
        let before = world_files(&world);
        let start = json!({ "flow": "obu.reckless", "params": demo_params(), "idempotency_key": format!("r-{i}"), "reader_id": SIM_OBU });
        let run = d.ok("flows.start", start, Some(&teller)).await;
        let run_id = run["run_id"].as_str().expect("run id").to_owned();
        let done = settle(&d, &teller, &run_id, &["failed", "succeeded"]).await;
        assert!(failure(&done).contains(expected), "{expected}: {done}");
        assert_eq!(world_files(&world), before, "{expected}: nothing written");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obu_moved_away_mid_write_is_issued_again_and_verified() {
    let (d, world) = daemon(&format!("obu-pulled-{}", std::process::id())).await;
    put_obu(&world, factory_obu(DEMO_OBU_CONTRACT_SERIAL));
    let teller = d.login("teller", "teller123").await;
    let waiting = begin(&d, &teller, "pulled-1", SIM_OBU, demo_params()).await;
    // After the confirmation: SELECT MF, READ (system), SELECT MF, GET CHALLENGE, UPDATE
    // (dates), SELECT DF01, GET CHALLENGE, UPDATE (vehicle file): the OBU leaves right after
    // the vehicle file was written, before the activation flag.
    let at = world.apdu_count(SIM_OBU) + 8;
    world
        .set_fault_plan(SIM_OBU, FaultPlan::once(at, FaultKind::RemoveAfterExec))
        .expect("fault plan");
    let done = confirm(&d, &teller, &waiting, true).await;
    assert!(
        failure(&done).contains("写入过程中OBU被移开或无响应"),
        "{done}"
    );
    let pulled = world
        .take_pocket(SIM_OBU)
        .expect("the OBU left the programmer");
    let (system, vehicle, activated) = esam_files(&pulled);
    assert!(!activated, "the flag is written last");
    assert_eq!(vehicle, demo_vehicle_file(), "the vehicle file was written");
    assert_eq!(&system[18..26], contract_dates().as_slice());

    world
        .insert_card(SIM_OBU, pulled)
        .expect("put the OBU back");
    let supervisor = d.login("supervisor", "super123").await;
    let waiting = begin(&d, &supervisor, "pulled-2", SIM_OBU, demo_params()).await;
    let done = confirm(&d, &supervisor, &waiting, true).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["written"],
        json!(["vehicle_info", "activation_flag"])
    );
    assert_eq!(
        done["result"]["verified"],
        json!(["system_info", "vehicle_info"])
    );
    let (system_after, vehicle_after, activated) = world_files(&world);
    assert!(activated);
    assert_eq!(vehicle_after, demo_vehicle_file());
    assert_eq!(system_after[..26], system[..26], "dates kept");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_entered_at_issuance_fill_an_account_without_them() {
    let (d, world) = daemon(&format!("obu-details-{}", std::process::id())).await;
    let host = d.daemon().host.clone().expect("issuer host");
    let input = account("陕C33333", 1, 12, "6101180100000033", None);
    host.upsert_vehicle(&input, "admin")
        .expect("vehicle account");
    put_obu(&world, factory_obu("6101180100000033"));
    let teller = d.login("teller", "teller123").await;
    let params = json!({ "plate": "陕C33333", "plate_colour": 1 });
    let run = begin(&d, &teller, "details-1", SIM_OBU, params).await;
    assert!(failure(&run).contains("缺少车辆信息"), "{run}");
    let partial = json!({ "plate": "陕C33333", "plate_colour": 1, "length_mm": 6000 });
    let run = begin(&d, &teller, "details-2", SIM_OBU, partial).await;
    assert!(failure(&run).contains("车辆信息不完整"), "{run}");

    let full = json!({
        "plate": "陕C33333", "plate_colour": 1, "vehicle_user_type": 0,
        "length_mm": 6000, "width_mm": 2000, "height_mm": 2500, "wheels": 6, "axles": 2,
        "wheelbase_mm": 3300, "load_kg_or_seats": 4995, "description": "轻型货车", "engine_number": "e4h-20240001",
    });
    let waiting = begin(&d, &teller, "details-3", SIM_OBU, full).await;
    let message = waiting["prompt"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("车牌号：陕C33333（黄色）"), "{message}");
    assert!(message.contains("车型：二型货车"), "{message}");
    let done = confirm(&d, &teller, &waiting, true).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["details_source"], "params");
    let details: VehicleDetails =
        serde_json::from_value(done["result"]["details"].clone()).expect("details");
    assert_eq!(details.engine_number, "E4H-20240001");

    let (_, vehicle, activated) = world_files(&world);
    assert!(activated);
    let file = VehicleInfo::parse(&vehicle).expect("59 bytes");
    assert_eq!(file.plate(), Some("陕C33333".to_owned()));
    assert_eq!((file.plate_colour, file.vehicle_class), (1, 12));
    assert_eq!(
        (file.length_mm, file.width_mm, file.height_mm),
        (6000, 2000, 2500)
    );
    assert_eq!((file.wheels, file.axles, file.wheelbase_mm), (6, 2, 3300));
    assert_eq!(file.load_kg_or_seats, 4995);
    assert_eq!(&file.engine_number[..12], b"E4H-20240001");
    assert_eq!(&file.engine_number[12..], &[0, 0]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_through_the_serial_driver() {
    let programmer = SimProgrammer::with_config(SimProgrammerConfig::new(factory_obu(
        DEMO_OBU_CONTRACT_SERIAL,
    )))
    .expect("simulated programmer on a pty");
    let path = programmer.path().to_owned();
    let world = format!("obu-serial-{}", std::process::id());
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": world });
        c.readers.push(cardd::config::ReaderInstance {
            driver: "serial".into(),
            options: json!({ "devices": [{ "id": "counter1", "path": path }] }),
            trace: None,
        });
    })
    .await;
    let reader = "serial:counter1";
    let teller = d.login("teller", "teller123").await;
    let esam = || programmer.with_esam(|e| esam_files(e.expect("an OBU on the programmer")));

    // A refusal first: a vehicle whose account names another OBU.
    // The account is opened over JSON-RPC, vehicle details included.
    let details = cardd_store::demo::demo_obu_vehicle_details();
    let other = account("陕D44444", 0, 1, "6101180100000044", Some(details.clone()));
    let supervisor = d.login("supervisor", "super123").await;
    let saved = d
        .ok(
            "etc.vehicles.upsert",
            json!({ "vehicle": other }),
            Some(&supervisor),
        )
        .await;
    assert_eq!(saved["details"], json!(details));
    let got = json!({ "plate": "陕D44444", "plate_colour": 0 });
    let got = d.ok("etc.vehicles.get", got, Some(&supervisor)).await;
    assert_eq!(got["details"]["engine_number"], "ENG0000000001");
    let before = esam();
    let run = begin(
        &d,
        &teller,
        "serial-1",
        reader,
        json!({ "plate": "陕D44444", "plate_colour": 0 }),
    )
    .await;
    assert!(failure(&run).contains("OBU合同序列号不符"), "{run}");
    assert_eq!(esam(), before);

    // The issuance, with a garbled reply on the way: resent, never run twice.
    let waiting = begin(&d, &teller, "serial-2", reader, demo_params()).await;
    programmer.corrupt_next_reply();
    let stats = programmer.stats();
    let done = confirm(&d, &teller, &waiting, true).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["written"],
        json!(["system_info_dates", "vehicle_info", "activation_flag"])
    );
    assert_eq!(
        done["result"]["verified"],
        json!(["system_info", "vehicle_info"])
    );
    let after = programmer.stats();
    assert_eq!(
        after.replays - stats.replays,
        1,
        "the garbled reply was answered from memory"
    );

    let (system, vehicle, activated) = esam();
    assert!(activated);
    assert_eq!(vehicle, demo_vehicle_file());
    assert_eq!(&system[18..26], contract_dates().as_slice());
    d.stop().await;
}
