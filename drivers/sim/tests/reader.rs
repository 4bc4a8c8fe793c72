//! The simulated reader driver through the `cardd-reader` traits: listing, sessions, T=0,
//! every fault kind, events, hotplug, OBU channels, persistence and driver options.

mod common;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use cardd_reader::{
    CardChannel, CardEvent, CardPresence, CardReader, CommandApdu, DriverOptions, DriverRegistry,
    HotplugEvent, ObuTarget, Protocol, Reader, ReaderError, ReaderFactory, ReaderSelector,
};
use cardd_sim::cards::{TX_LOAD, TX_PURCHASE};
use cardd_sim::demo::{
    demo_city_card, demo_etc_card, demo_masters, demo_obu, DEMO_ETC_CARD_NUMBER,
};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimSlot, SimWorld,
    SIM_DRIVER,
};
use common::*;

const T: Duration = Duration::from_secs(2);

fn world_with_etc(t0: bool) -> (SimWorld, SimFactory) {
    let world = SimWorld::new();
    world
        .add_reader(
            SimReaderConfig::new("etc", SimReaderKind::Contact)
                .with_card(demo_etc_card())
                .with_t0(t0),
        )
        .unwrap();
    let factory = SimFactory::new(world.clone());
    (world, factory)
}

fn open(factory: &SimFactory, id: &str) -> Box<dyn CardReader> {
    factory.open(&ReaderSelector::Id(id.into())).unwrap()
}

/// Raw exchange through the trait; (data, SW).
fn raw(reader: &mut dyn CardReader, apdu: &[u8]) -> Result<(Vec<u8>, u16), ReaderError> {
    let r = reader.transmit_raw(apdu, T)?;
    let (data, sw) = r.split_at(r.len() - 2);
    Ok((data.to_vec(), u16::from_be_bytes([sw[0], sw[1]])))
}

fn raw_ok(reader: &mut dyn CardReader, apdu: &[u8]) -> Vec<u8> {
    let (data, sw) = raw(reader, apdu).unwrap();
    assert_eq!(sw, 0x9000, "{}", hex::encode_upper(apdu));
    data
}

/// Selects the ADF, verifies the PIN and runs INITIALIZE FOR LOAD; returns the CREDIT bytes.
fn prepare_credit(
    reader: &mut dyn CardReader,
    keys: &HostKeys,
    amount: u32,
) -> (LoadInit, Vec<u8>) {
    raw_ok(reader, &h("00A40000021001"));
    raw_ok(reader, &h("0020000006313233343536"));
    let init = parse_load_init(&raw_ok(reader, &init_apdu(0x00, 0x01, amount, 0x10)));
    let credit = credit_apdu(host_mac2(keys, &init, amount));
    (init, credit)
}

fn etc_keys() -> HostKeys {
    etc_host_keys(
        demo_etc_card().as_etc().unwrap().issue_info(),
        &demo_masters(),
    )
}

#[test]
fn lists_opens_and_reports_capabilities() {
    let (world, factory) = world_with_etc(false);
    world
        .add_reader(
            SimReaderConfig::new("obu", SimReaderKind::ObuProgrammer).with_name("OBU programmer"),
        )
        .unwrap();
    let list = factory.list().unwrap();
    assert_eq!(
        list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["sim:etc", "sim:obu"]
    );
    assert!(
        list[0].capabilities.contact
            && list[0].capabilities.events
            && !list[0].capabilities.obu_channel
    );
    assert!(list[1].capabilities.obu_channel);
    assert_eq!(factory.driver(), "sim");
    assert!(matches!(
        factory.open(&ReaderSelector::Id("sim:nope".into())),
        Err(ReaderError::NotFound { .. })
    ));
    let mut r = factory
        .open(&ReaderSelector::NameContains("OBU".into()))
        .unwrap();
    assert_eq!(r.info().id, "sim:obu");
    assert!(matches!(
        r.transmit_raw(&h("0084000004"), T),
        Err(ReaderError::NoCard { .. })
    ));
    assert!(
        world
            .add_reader(SimReaderConfig::new("etc", SimReaderKind::Contact))
            .is_err(),
        "duplicate id"
    );
    assert!(world
        .add_reader(SimReaderConfig::new("", SimReaderKind::Contact))
        .is_err());
}

#[test]
fn power_presence_and_atr() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    assert_eq!(r.protocol(), Protocol::T1);
    assert_eq!(r.presence().unwrap(), CardPresence::Present);
    assert_eq!(r.atr(), None);
    let atr = r.power_on().unwrap();
    assert_eq!(atr.0, demo_etc_card().atr());
    assert_eq!(r.atr(), Some(atr.clone()));
    assert_eq!(
        r.presence().unwrap(),
        CardPresence::Powered { atr: atr.clone() }
    );
    raw_ok(r.as_mut(), &h("00A40000021001"));
    assert_eq!(r.reset().unwrap(), atr);
    assert_eq!(
        raw(r.as_mut(), &h("805C000204")).unwrap().1,
        0x6985,
        "reset selected the MF"
    );
    r.power_off().unwrap();
    assert_eq!(r.presence().unwrap(), CardPresence::Present);
    assert_eq!(
        raw(r.as_mut(), &h("00A40000021001")).unwrap().1,
        0x9000,
        "transmit powers the card"
    );
    world.remove_card("etc").unwrap();
    assert_eq!(r.presence().unwrap(), CardPresence::Absent);
    assert!(matches!(r.power_on(), Err(ReaderError::NoCard { .. })));
    r.power_off().unwrap();
    assert!(r.events().is_some());
    assert!(r.obu().is_none());
}

#[test]
fn t0_chaining_through_the_reader_layer() {
    let (world, factory) = world_with_etc(true);
    let session = open(&factory, "sim:etc");
    assert_eq!(session.protocol(), Protocol::T0);
    let mut reader = Reader::new(session, T);
    let select = reader
        .transmit(&CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01]))
        .unwrap();
    assert!(select.is_ok());
    assert_eq!(
        select.data,
        h("6F0B8409A00000000386980701"),
        "FCI fetched with GET RESPONSE"
    );
    assert_eq!(world.apdu_count("etc"), 2);
    let issue = reader
        .transmit(&CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(256))
        .unwrap();
    assert_eq!(issue.data.len(), 43, "6C2B then re-sent with Le 2B");
    assert_eq!(world.apdu_count("etc"), 4);
    reader
        .transmit(&CommandApdu::new(0x00, 0x20, 0x00, 0x00).with_data(*b"123456"))
        .unwrap();
    let keys = etc_keys();
    let init_cmd = CommandApdu::new(0x80, 0x50, 0x00, 0x02)
        .with_data(init_apdu(0, 0x01, 300, 0x10)[5..16].to_vec())
        .with_le(0x10);
    let init = reader.transmit(&init_cmd).unwrap();
    assert!(init.is_ok());
    let init = parse_load_init(&init.data);
    let credit = credit_apdu(host_mac2(&keys, &init, 300));
    let credit_cmd = CommandApdu::new(0x80, 0x52, 0x00, 0x00)
        .with_data(credit[5..16].to_vec())
        .with_le(4);
    let tac = reader.transmit(&credit_cmd).unwrap();
    assert!(tac.is_ok(), "GET RESPONSE does not cancel the load session");
    assert_eq!(tac.data.len(), 4);
    assert_eq!(world.card("etc").unwrap().balance(), Some(10_300));
    let mut raw_session = reader.into_inner();
    assert_eq!(
        raw(raw_session.as_mut(), &h("00C0000004")).unwrap().1,
        0x6985,
        "nothing waiting"
    );
    assert_eq!(
        raw(raw_session.as_mut(), &h("805C000200")).unwrap().1,
        0x6C04
    );
}

#[test]
fn remove_before_exec_leaves_the_card_unchanged_in_the_pocket() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    let (_, credit) = prepare_credit(r.as_mut(), &etc_keys(), 500);
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(world.apdu_count("etc") + 1, FaultKind::RemoveBeforeExec),
        )
        .unwrap();
    let err = r.transmit_raw(&credit, T).unwrap_err();
    assert!(
        matches!(err, ReaderError::CardRemoved { .. }) && err.outcome_unknown(),
        "{err}"
    );
    assert_eq!(r.presence().unwrap(), CardPresence::Absent);
    assert!(world.card("etc").is_none());
    let card = world.take_pocket("etc").expect("the card is in the pocket");
    assert!(world.take_pocket("etc").is_none());
    assert_eq!(money_state(&card), (Some(10_000), Some(0), Some(0), 0));
    world.insert_card("etc", card).unwrap();
    raw_ok(r.as_mut(), &h("00A40000021001"));
    assert_eq!(
        raw(r.as_mut(), &prove_apdu(TX_LOAD, 1)).unwrap().1,
        0x9406,
        "the credit never happened"
    );
    assert_eq!(
        raw(r.as_mut(), &credit).unwrap().1,
        0x6985,
        "the session died with the power"
    );
}

#[test]
fn remove_after_exec_applies_the_command() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    let (_, credit) = prepare_credit(r.as_mut(), &etc_keys(), 500);
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(world.apdu_count("etc") + 1, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    assert!(matches!(
        r.transmit_raw(&credit, T),
        Err(ReaderError::CardRemoved { .. })
    ));
    let card = world.take_pocket("etc").unwrap();
    assert_eq!(money_state(&card), (Some(10_500), Some(1), Some(0), 1));
    world.insert_card("etc", card).unwrap();
    raw_ok(r.as_mut(), &h("00A40000021001"));
    let proof = raw_ok(r.as_mut(), &prove_apdu(TX_LOAD, 1));
    assert_eq!(&proof[..4], &credit[12..16], "the MAC2 the card accepted");
}

#[test]
fn timeouts_return_at_once_with_or_without_execution() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    let keys = etc_keys();
    let (_, credit) = prepare_credit(r.as_mut(), &keys, 100);
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(
                world.apdu_count("etc") + 1,
                FaultKind::Timeout { executed: false },
            ),
        )
        .unwrap();
    let started = Instant::now();
    let err = r
        .transmit_raw(&credit, Duration::from_secs(60))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "no real sleep");
    assert!(
        matches!(
            err,
            ReaderError::Timeout {
                timeout_ms: 60_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(world.card("etc").unwrap().balance(), Some(10_000));

    let (_, credit) = prepare_credit(r.as_mut(), &keys, 100);
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(
                world.apdu_count("etc") + 1,
                FaultKind::Timeout { executed: true },
            ),
        )
        .unwrap();
    assert!(r.transmit_raw(&credit, T).unwrap_err().outcome_unknown());
    assert_eq!(
        world.card("etc").unwrap().balance(),
        Some(10_100),
        "executed, answer lost"
    );
    assert!(world.card("etc").is_some(), "the card stays");
}

#[test]
fn garbled_sw_after_execution() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    let (_, credit) = prepare_credit(r.as_mut(), &etc_keys(), 100);
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(world.apdu_count("etc") + 1, FaultKind::GarbledSw),
        )
        .unwrap();
    let (tac, sw) = raw(r.as_mut(), &credit).unwrap();
    assert_eq!(sw, 0x6F00);
    assert_eq!(tac.len(), 4);
    assert_eq!(world.card("etc").unwrap().balance(), Some(10_100));
    assert_eq!(world.pending_faults("etc"), 0);
    assert_eq!(
        raw(r.as_mut(), &h("805C000204")).unwrap().1,
        0x9000,
        "the fault fired once"
    );
}

#[test]
fn swap_card_presents_another_card() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    raw_ok(r.as_mut(), &h("00A40000021001"));
    let n = world.apdu_count("etc") + 1;
    world
        .set_fault_plan(
            "etc",
            FaultPlan::once(n, FaultKind::SwapCard(Box::new(demo_city_card()))),
        )
        .unwrap();
    assert_eq!(
        raw(r.as_mut(), &h("805C000204")).unwrap().1,
        0x6985,
        "the new card is freshly powered"
    );
    raw_ok(r.as_mut(), &h("00A40000021001"));
    assert_eq!(
        raw_ok(r.as_mut(), &h("805C000204")),
        5_000u32.to_be_bytes(),
        "the city card's balance"
    );
    assert_eq!(
        world.card("etc").unwrap().card_number(),
        "61010000000000000001"
    );
    assert_eq!(
        world.take_pocket("etc").unwrap().card_number(),
        DEMO_ETC_CARD_NUMBER
    );
    let mut events = open(&factory, "sim:etc");
    assert_eq!(
        events
            .events()
            .unwrap()
            .wait_for_change(Duration::from_millis(10))
            .unwrap(),
        None,
        "a new session starts after the swap"
    );
}

#[test]
fn reader_unplug_and_replug() {
    let (world, factory) = world_with_etc(false);
    let mut watch = factory.hotplug().unwrap();
    let mut r = open(&factory, "sim:etc");
    world
        .set_fault_plan("etc", FaultPlan::once(1, FaultKind::ReaderUnplug))
        .unwrap();
    assert!(matches!(
        r.transmit_raw(&h("00A40000021001"), T),
        Err(ReaderError::ReaderGone { .. })
    ));
    assert!(factory.list().unwrap().is_empty());
    assert!(matches!(r.presence(), Err(ReaderError::ReaderGone { .. })));
    assert!(
        matches!(watch.wait(T).unwrap(), Some(HotplugEvent::Removed { reader_id }) if reader_id == "sim:etc")
    );
    assert!(
        world.card("etc").is_some(),
        "the card stays in the unplugged reader"
    );
    world.replug_reader("etc").unwrap();
    assert!(
        matches!(watch.wait(T).unwrap(), Some(HotplugEvent::Added { reader }) if reader.id == "sim:etc")
    );
    raw_ok(r.as_mut(), &h("00A40000021001"));
    world.remove_reader("etc").unwrap();
    assert!(matches!(
        r.transmit_raw(&h("00A40000021001"), T),
        Err(ReaderError::ReaderGone { .. })
    ));
    assert!(matches!(
        watch.wait(T).unwrap(),
        Some(HotplugEvent::Removed { .. })
    ));
}

#[test]
fn card_events_wake_on_insert_and_remove_and_time_out_otherwise() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    let started = Instant::now();
    assert_eq!(
        r.events()
            .unwrap()
            .wait_for_change(Duration::from_millis(50))
            .unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    let w = world.clone();
    let remover = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.remove_card("etc").unwrap()
    });
    let event = r
        .events()
        .unwrap()
        .wait_for_change(Duration::from_secs(10))
        .unwrap();
    assert_eq!(event, Some(CardEvent::Removed));
    let card = remover.join().unwrap();
    let w = world.clone();
    let inserter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.insert_card("etc", card).unwrap();
    });
    let event = r
        .events()
        .unwrap()
        .wait_for_change(Duration::from_secs(10))
        .unwrap();
    assert!(matches!(event, Some(CardEvent::Inserted { atr }) if atr.0 == demo_etc_card().atr()));
    inserter.join().unwrap();
    assert_eq!(
        r.events()
            .unwrap()
            .wait_for_change(Duration::from_millis(10))
            .unwrap(),
        None
    );
}

#[test]
fn hotplug_wakes_on_add_and_times_out_otherwise() {
    let world = SimWorld::new();
    let factory = SimFactory::new(world.clone());
    let mut watch = factory.hotplug().unwrap();
    assert_eq!(watch.wait(Duration::from_millis(20)).unwrap(), None);
    let w = world.clone();
    let adder = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.add_reader(SimReaderConfig::new("late", SimReaderKind::Contactless))
            .unwrap();
    });
    let event = watch.wait(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(event, Some(HotplugEvent::Added { reader }) if reader.id == "sim:late" && reader.capabilities.contactless)
    );
    adder.join().unwrap();
    let r = open(&factory, "sim:late");
    assert_eq!(r.protocol(), Protocol::Contactless);
}

#[test]
fn obu_programmer_reaches_the_esam_and_the_icc() {
    let world = SimWorld::new();
    world
        .add_reader(SimReaderConfig::new("obu", SimReaderKind::ObuProgrammer).with_card(demo_obu()))
        .unwrap();
    let factory = SimFactory::new(world.clone());
    let mut reader = Reader::new(open(&factory, "sim:obu"), T);
    let chip = reader
        .obu(ObuTarget::Esam)
        .unwrap()
        .transmit(&CommandApdu::new(0x80, 0xF6, 0x00, 0x03).with_le(4))
        .unwrap();
    assert_eq!(chip.data, [0x0A, 0x0B, 0x0C, 0x0D]);
    let select = CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01]);
    let err = reader
        .obu(ObuTarget::Icc)
        .unwrap()
        .transmit(&select)
        .unwrap_err();
    assert!(matches!(err, ReaderError::NoCard { .. }), "{err}");
    world
        .insert_card_in("obu", SimSlot::Icc, demo_etc_card())
        .unwrap();
    assert!(reader
        .obu(ObuTarget::Icc)
        .unwrap()
        .transmit(&select)
        .unwrap()
        .is_ok());
    let balance = reader
        .obu(ObuTarget::Icc)
        .unwrap()
        .transmit(&CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(4))
        .unwrap();
    assert_eq!(balance.data, 10_000u32.to_be_bytes());
    assert_eq!(
        world.apdu_count("obu"),
        4,
        "OBU exchanges count on the reader"
    );
    assert_eq!(
        world.card_in("obu", SimSlot::Icc).unwrap().card_number(),
        DEMO_ETC_CARD_NUMBER
    );
    assert!(
        world
            .insert_card_in("obu", SimSlot::Icc, demo_etc_card())
            .is_err(),
        "slot occupied"
    );

    // A contact reader has no ICC slot, but an ESAM in it still gets an OBU channel.
    world
        .add_reader(SimReaderConfig::new("desk", SimReaderKind::Contact).with_card(demo_obu()))
        .unwrap();
    let mut desk = open(&factory, "sim:desk");
    let channel = desk.obu().expect("an ESAM in the slot");
    let err = channel
        .obu_transmit(ObuTarget::Icc, &h("0084000004"), T)
        .unwrap_err();
    assert!(matches!(err, ReaderError::Unsupported { .. }), "{err}");
    assert!(world
        .insert_card_in("desk", SimSlot::Icc, demo_etc_card())
        .is_err());
}

#[test]
fn world_accessors() {
    let (world, factory) = world_with_etc(false);
    let mut r = open(&factory, "sim:etc");
    assert_eq!(
        world.with_card_mut("etc", |c| c.purse_mut().unwrap().set_balance_fen(42)),
        Some(())
    );
    raw_ok(r.as_mut(), &h("00A40000021001"));
    assert_eq!(raw_ok(r.as_mut(), &h("805C000204")), 42u32.to_be_bytes());
    assert_eq!(
        world.apdu_count("sim:etc"),
        2,
        "ids with or without the prefix"
    );
    assert_eq!(world.apdu_count("nope"), 0);
    assert!(world.card("nope").is_none());
    assert!(world.set_fault_plan("nope", FaultPlan::new()).is_err());
    assert!(
        world.insert_card("etc", demo_etc_card()).is_err(),
        "slot occupied"
    );
    assert!(world.remove_card("etc").is_some());
    assert!(world.remove_card("etc").is_none());
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cardd-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn state_dir_keeps_cards_across_worlds() {
    let dir = temp_dir("state");
    {
        let world = SimWorld::with_state_dir(&dir).unwrap();
        world
            .add_reader(
                SimReaderConfig::new("etc", SimReaderKind::Contact).with_card(demo_etc_card()),
            )
            .unwrap();
        world
            .add_reader(
                SimReaderConfig::new("city", SimReaderKind::Contact).with_card(demo_city_card()),
            )
            .unwrap();
        let factory = SimFactory::new(world.clone());
        let mut r = open(&factory, "sim:etc");
        let (_, credit) = prepare_credit(r.as_mut(), &etc_keys(), 700);
        raw_ok(r.as_mut(), &credit);
        world.remove_card("city").unwrap();
        // The world is dropped here without any shutdown step, as a killed daemon would.
    }
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:?}");
    let world = SimWorld::with_state_dir(&dir).unwrap();
    world
        .add_reader(SimReaderConfig::new("etc", SimReaderKind::Contact).with_card(demo_etc_card()))
        .unwrap();
    world
        .add_reader(
            SimReaderConfig::new("city", SimReaderKind::Contact).with_card(demo_city_card()),
        )
        .unwrap();
    let card = world.card("etc").unwrap();
    assert_eq!(
        money_state(&card),
        (Some(10_700), Some(1), Some(0), 1),
        "the saved card, not a fresh demo card"
    );
    assert!(
        world.card("city").is_none(),
        "the card was removed before the kill"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn driver_default_options_give_the_demo_readers() {
    let mut registry = DriverRegistry::new();
    registry.register(&SIM_DRIVER);
    let factory = registry
        .instantiate("sim", &DriverOptions::empty("sim"))
        .unwrap();
    let ids: Vec<String> = factory.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["sim:etc", "sim:city", "sim:obu"]);
    let mut etc = factory.open(&ReaderSelector::Id("sim:etc".into())).unwrap();
    raw_ok(etc.as_mut(), &h("00A40000021001"));
    assert_eq!(
        raw_ok(etc.as_mut(), &h("805C000204")),
        10_000u32.to_be_bytes()
    );
    let mut obu = factory.open(&ReaderSelector::Id("sim:obu".into())).unwrap();
    let chip = obu
        .obu()
        .unwrap()
        .obu_transmit(ObuTarget::Esam, &h("80F6000304"), T)
        .unwrap();
    assert_eq!(chip, h("0A0B0C0D9000"));
    let icc = obu
        .obu()
        .unwrap()
        .obu_transmit(ObuTarget::Icc, &h("00A40000021001"), T);
    assert!(
        matches!(icc, Err(ReaderError::NoCard { .. })),
        "the ICC slot starts empty"
    );
    let null = DriverOptions::new("sim", serde_json::Value::Null);
    assert_eq!(
        SIM_DRIVER.instantiate(&null).unwrap().list().unwrap().len(),
        3
    );
    use cardd_reader::Driver;
    assert!(!SIM_DRIVER.summary().is_empty());
}

#[test]
fn driver_options_describe_readers_cards_and_state() {
    use cardd_reader::Driver;
    let dir = temp_dir("options");
    std::fs::create_dir_all(&dir).unwrap();
    let mut card = demo_etc_card();
    card.purse_mut().unwrap().set_balance_fen(1);
    let card_file = dir.join("card.json");
    std::fs::write(&card_file, card.to_json().unwrap()).unwrap();
    let options = serde_json::json!({
        "readers": [
            { "id": "a", "name": "Desk A", "kind": "contactless", "card": "demo-etc-sm4", "t0": true },
            { "id": "b", "card": { "json_file": card_file } },
            { "id": "c", "kind": "obu_programmer", "card": "demo-obu", "icc_card": "demo-etc" },
            { "id": "d", "card": "none" },
            { "id": "e", "card": "demo-city" }
        ],
        "state_dir": dir.join("state"),
    });
    let factory = SIM_DRIVER
        .instantiate(&DriverOptions::new("sim", options))
        .unwrap();
    let list = factory.list().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0].name, "Desk A");
    let a = factory.open(&ReaderSelector::Id("sim:a".into())).unwrap();
    assert_eq!(a.protocol(), Protocol::T0);
    let mut b = factory.open(&ReaderSelector::Id("sim:b".into())).unwrap();
    raw_ok(b.as_mut(), &h("00A40000021001"));
    assert_eq!(raw_ok(b.as_mut(), &h("805C000204")), 1u32.to_be_bytes());
    assert!(dir.join("state").join("c.icc.json").exists());

    let typo = serde_json::json!({ "readers": [ { "id": "a", "crad": "demo-etc" } ] });
    let err = SIM_DRIVER
        .instantiate(&DriverOptions::new("sim", typo))
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `crad`"), "{err}");
    let icc_on_contact =
        serde_json::json!({ "readers": [ { "id": "a", "icc_card": "demo-etc" } ] });
    assert!(SIM_DRIVER
        .instantiate(&DriverOptions::new("sim", icc_on_contact))
        .is_err());
    let missing = serde_json::json!({ "readers": [ { "id": "a", "card": { "json_file": dir.join("nope.json") } } ] });
    assert!(matches!(
        SIM_DRIVER.instantiate(&DriverOptions::new("sim", missing)),
        Err(ReaderError::Config { .. })
    ));
    let empty = serde_json::json!({ "readers": [] });
    assert!(SIM_DRIVER
        .instantiate(&DriverOptions::new("sim", empty))
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_purchase_through_a_session_then_the_card_moves_readers() {
    let (world, factory) = world_with_etc(false);
    world
        .add_reader(SimReaderConfig::new("other", SimReaderKind::Contactless))
        .unwrap();
    let keys = etc_keys();
    let mut r = open(&factory, "sim:etc");
    raw_ok(r.as_mut(), &h("00A40000021001"));
    let data = raw_ok(r.as_mut(), &init_apdu(0x01, 0x01, 250, 0x0F));
    let init = PurchaseInit {
        balance: 10_000,
        atc: 0,
        random: data[11..15].try_into().unwrap(),
    };
    let resp = raw_ok(r.as_mut(), &debit_apdu(&keys, &init, 250, TX_PURCHASE, 1));
    check_debit(&keys, &init, 250, TX_PURCHASE, 1, &resp);
    let card: SimCard = world.remove_card("etc").unwrap();
    world.insert_card("other", card).unwrap();
    let mut o = open(&factory, "sim:other");
    raw_ok(o.as_mut(), &h("00A40000021001"));
    assert_eq!(
        raw_ok(o.as_mut(), &prove_apdu(TX_PURCHASE, 1))[4..],
        resp[..4]
    );
}
