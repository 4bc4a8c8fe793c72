//! The serial driver against the simulated programmer over a real pseudo-terminal: issuance
//! traffic, resends that never run an APDU twice, noise, stale replies, silence, a vanished
//! device, card absence and removal, ESAM failure, card events and shared sessions.

mod common;

use std::time::{Duration, Instant};

use cardd_crypto::Algorithm;
use cardd_reader::{
    CardChannel, CardEvent, CardPresence, CommandApdu, ObuTarget, ReaderError, StatusWord,
};
use cardd_serial::{SerialError, SimProgrammerConfig};
use cardd_sim::demo;
use common::*;

/// `04 D6 81 1A 05 <flag> MAC`: the tamper flag under the system maintenance key.
fn tamper_flag_update(key: &cardd_crypto::Key16, challenge: [u8; 4], flag: u8) -> CommandApdu {
    let header = [0x04, 0xD6, 0x81, 0x1A, 0x05, flag];
    let mac = cardd_crypto::secure_messaging_mac(Algorithm::Tdes, key, challenge, &header);
    let mut data = vec![flag];
    data.extend_from_slice(&mac);
    CommandApdu::new(0x04, 0xD6, 0x81, 0x1A).with_data(data)
}

/// The host's system maintenance key for the ESAM whose contract serial is `serial`.
fn system_key(serial: &[u8]) -> cardd_crypto::Key16 {
    let factor: [u8; 8] = serial.try_into().expect("8-byte contract serial");
    cardd_crypto::diversify(
        Algorithm::Tdes,
        &demo::demo_obu_masters().system_maintenance,
        &factor,
    )
}

fn challenge(reader: &mut cardd_reader::Reader) -> [u8; 4] {
    let mut esam = reader.obu(ObuTarget::Esam).unwrap();
    let r = esam.transmit(&apdu("0084000004")).unwrap();
    assert_eq!(r.sw, StatusWord::OK);
    r.data.try_into().expect("4-byte challenge")
}

#[test]
fn issuance_traffic_reaches_the_esam_and_the_etc_card() {
    let (sim, factory, mut reader) = demo();
    let listed = factory.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, READER_ID);
    assert_eq!(listed[0].name, "Test programmer");
    assert!(listed[0].capabilities.obu_channel && listed[0].capabilities.contact);

    let serial = {
        let mut esam = reader.obu(ObuTarget::Esam).unwrap();
        let chip = esam.transmit(&apdu("80F6000304")).unwrap();
        assert_eq!(chip.data, demo::DEMO_OBU_CHIP_ID);
        assert_eq!(
            esam.transmit(&apdu("00A40000023F00")).unwrap().sw,
            StatusWord::OK
        );
        let info = esam.transmit(&apdu("00B081001B")).unwrap();
        assert_eq!(info.sw, StatusWord::OK);
        assert_eq!(info.data.len(), 27);
        assert_eq!(info.data[26], 0x00, "not activated yet");
        info.data[10..18].to_vec()
    };
    assert_eq!(hex::encode_upper(&serial), demo::DEMO_OBU_CONTRACT_SERIAL);
    let key = system_key(&serial);

    // Activation: GET CHALLENGE, then the tamper flag with secure messaging, then read back.
    let c = challenge(&mut reader);
    {
        let mut esam = reader.obu(ObuTarget::Esam).unwrap();
        let r = esam.transmit(&tamper_flag_update(&key, c, 0x01)).unwrap();
        assert_eq!(r.sw, StatusWord::OK);
        let flag = esam.transmit(&apdu("00B0811A01")).unwrap();
        assert_eq!(
            (flag.data.as_slice(), flag.sw),
            (&[0x01][..], StatusWord::OK)
        );
        // A replayed MAC is refused: the challenge was spent.
        let r = esam.transmit(&tamper_flag_update(&key, c, 0x01)).unwrap();
        assert_eq!(r.sw.0, 0x6985);
    }
    assert_eq!(
        sim.with_esam(|e| e.and_then(|e| e.as_obu().map(|o| o.is_activated()))),
        Some(true)
    );

    // The ETC card in the OBU, through both the main channel and the OBU channel.
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    let balance = reader.transmit(&apdu("805C000204")).unwrap();
    assert_eq!(balance.data, demo::DEMO_ETC_BALANCE_FEN.to_be_bytes());
    let mut icc = reader.obu(ObuTarget::Icc).unwrap();
    let file = icc.transmit(&apdu("00B0950000")).unwrap();
    assert_eq!(file.sw, StatusWord::OK);
    assert!(file.data.len() == 43 || file.data.len() == 50);

    let stats = sim.stats();
    assert_eq!(stats.replays, 0);
    assert_eq!(stats.bad_frames_received, 0);
}

#[test]
fn a_corrupted_reply_is_resent_without_running_the_apdu_twice() {
    let (sim, _factory, mut reader) = demo();
    let before = sim.stats();
    sim.corrupt_next_reply();
    let c = challenge(&mut reader);
    let after = sim.stats();
    assert_eq!(
        after.apdus_executed - before.apdus_executed,
        1,
        "executed once"
    );
    assert_eq!(after.replays - before.replays, 1, "answered from memory");
    // Had the ESAM run GET CHALLENGE twice, the host's challenge would be stale and the MAC
    // would fail with 6988.
    let key = system_key(&hex::decode(demo::DEMO_OBU_CONTRACT_SERIAL).unwrap());
    let mut esam = reader.obu(ObuTarget::Esam).unwrap();
    assert_eq!(
        esam.transmit(&tamper_flag_update(&key, c, 0x01))
            .unwrap()
            .sw,
        StatusWord::OK
    );
}

#[test]
fn a_nak_makes_the_host_resend() {
    let (sim, _factory, mut reader) = demo();
    let before = sim.stats();
    sim.nak_next_command();
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    let after = sim.stats();
    assert_eq!(after.frames_received - before.frames_received, 2);
    assert_eq!(after.apdus_executed - before.apdus_executed, 1);
    assert_eq!(after.replays - before.replays, 0);
}

#[test]
fn resends_are_bounded() {
    let sim = cardd_serial::SimProgrammer::with_config(SimProgrammerConfig::demo()).unwrap();
    let factory = factory_with(sim.path(), serde_json::json!({"retries": 2}));
    let mut reader = open(&factory);
    let before = sim.stats();
    sim.corrupt_next_replies(3);
    let err = reader.transmit(&apdu("0084000004")).unwrap_err();
    assert!(matches!(err, ReaderError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("2 resends"), "{err}");
    assert_eq!(sim.stats().apdus_executed - before.apdus_executed, 1);
    // The link is still good.
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
}

#[test]
fn garbage_before_a_frame_is_skipped() {
    let (sim, _factory, mut reader) = demo();
    let before = sim.stats();
    // Noise without FF is skipped silently; no resend is needed.
    sim.inject_garbage(&[0x00, 0x13, 0xFE, 0x42, 0x7E, 0x80]);
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    let mid = sim.stats();
    assert_eq!(mid.frames_received - before.frames_received, 1);
    // Noise that looks like the start of a frame breaks into the reply's preamble: the host
    // sees a broken frame, resends, and the device answers from memory.
    sim.inject_garbage(&[0xFF, 0xFF, 0x05, 0xB4, 0xFE]);
    let balance = reader.transmit(&apdu("805C000204")).unwrap();
    assert_eq!(balance.data, demo::DEMO_ETC_BALANCE_FEN.to_be_bytes());
    let after = sim.stats();
    assert_eq!(after.apdus_executed - mid.apdus_executed, 1);
}

#[test]
fn a_stale_reply_is_ignored() {
    let (sim, _factory, mut reader) = demo();
    sim.delay_next_reply(Duration::from_millis(400));
    reader.set_apdu_timeout(Duration::from_millis(100));
    let err = reader.transmit(&apdu("0084000004")).unwrap_err();
    assert!(matches!(err, ReaderError::Timeout { .. }), "{err}");
    assert!(err.outcome_unknown());
    reader.set_apdu_timeout(APDU_TIMEOUT);
    // The GET CHALLENGE reply (4 bytes + 9000) arrives while this SELECT waits: it must not be
    // taken for the SELECT's answer.
    let r = reader.transmit(&apdu("00A4000C021001")).unwrap();
    assert_eq!((r.data.len(), r.sw), (0, StatusWord::OK));
}

#[test]
fn a_silent_device_times_out_within_the_bound() {
    let (sim, _factory, mut reader) = demo();
    sim.go_silent();
    let bound = Duration::from_millis(300);
    reader.set_apdu_timeout(bound);
    let started = Instant::now();
    let err = reader.transmit(&apdu("00A40000021001")).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            ReaderError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err}"
    );
    assert!(took >= bound, "{took:?}");
    assert!(took < bound + Duration::from_millis(500), "{took:?}");
    // presence uses the command timeout; it is bounded too.
    let started = Instant::now();
    let err = reader.session().presence().unwrap_err();
    assert!(matches!(err, ReaderError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1_200));
    sim.wake();
    reader.set_apdu_timeout(APDU_TIMEOUT);
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
}

#[test]
fn a_device_that_disappears_is_reader_gone() {
    let (mut sim, factory, mut reader) = demo();
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    let mut watcher = open(&factory);
    sim.disappear();
    let started = Instant::now();
    let err = reader.transmit(&apdu("00A40000021001")).unwrap_err();
    assert!(matches!(err, ReaderError::ReaderGone { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        reader.session().presence(),
        Err(ReaderError::ReaderGone { .. })
    ));
    let events = watcher.session().events().unwrap();
    assert!(matches!(
        events.wait_for_change(Duration::from_secs(1)),
        Err(ReaderError::ReaderGone { .. })
    ));
    // The pty's path went with it: the device is no longer listed nor openable.
    assert!(factory.list().unwrap().is_empty());
    assert!(matches!(
        factory.open(&cardd_reader::ReaderSelector::Id(READER_ID.into())),
        Err(ReaderError::NotFound { .. })
    ));
}

#[test]
fn no_card_removal_mid_command_and_esam_failure_are_reported() {
    let config = SimProgrammerConfig::new(demo::demo_obu());
    let (sim, _factory, mut reader) = start(config);
    // Empty slot: the card is absent, the ESAM still answers.
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Absent);
    let err = reader.transmit(&apdu("00A40000021001")).unwrap_err();
    assert!(matches!(err, ReaderError::NoCard { .. }), "{err}");
    assert!(matches!(
        reader.session().power_on(),
        Err(ReaderError::NoCard { .. })
    ));
    reader
        .session()
        .power_off()
        .expect("power off without a card is harmless");
    {
        let mut esam = reader.obu(ObuTarget::Esam).unwrap();
        assert_eq!(
            esam.transmit(&apdu("00A40000023F00")).unwrap().sw,
            StatusWord::OK
        );
    }

    // Insert: present and powered, the ATR is the card's.
    sim.insert_card(demo::demo_etc_card()).unwrap();
    let presence = reader.session().presence().unwrap();
    let atr = match presence {
        CardPresence::Powered { atr } => atr,
        other => panic!("{other:?}"),
    };
    assert_eq!(atr.0, cardd_sim::cards::ETC_ATR);
    assert_eq!(reader.session().power_on().unwrap(), atr);
    assert_eq!(reader.session().atr(), Some(atr));

    // Pulled mid-command after the card ran it: CardRemoved, outcome unknown.
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    sim.remove_card_during_next_command(true);
    let err = reader.transmit(&apdu("805C000204")).unwrap_err();
    assert!(matches!(err, ReaderError::CardRemoved { .. }), "{err}");
    assert!(err.outcome_unknown());
    assert_eq!(reader.session().atr(), None);
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Absent);
    let card = sim.take_pocket().expect("the pulled card");
    sim.insert_card(card).unwrap();
    assert_eq!(
        reader.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );

    // The ESAM fails electrically: a driver error the caller can downcast.
    sim.esam_error_next_command();
    let mut esam = reader.obu(ObuTarget::Esam).unwrap();
    let err = esam.transmit(&apdu("00A40000023F00")).unwrap_err();
    match &err {
        ReaderError::Driver { source, .. } => assert!(
            matches!(
                source.downcast_ref::<SerialError>(),
                Some(SerialError::Esam)
            ),
            "{err}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(
        esam.transmit(&apdu("00A40000023F00")).unwrap().sw,
        StatusWord::OK
    );
}

#[test]
fn card_events_arrive_in_order_and_missed_ones_are_recovered_from_status() {
    let (sim, factory, mut reader) = demo();
    let mut watcher = open(&factory);
    let wait = Duration::from_secs(2);
    let card = sim.remove_card().expect("demo card");
    sim.insert_card(card).unwrap();
    let events = watcher.session().events().unwrap();
    assert_eq!(
        events.wait_for_change(wait).unwrap(),
        Some(CardEvent::Removed)
    );
    match events.wait_for_change(wait).unwrap() {
        Some(CardEvent::Inserted { atr }) => assert_eq!(atr.0, cardd_sim::cards::ETC_ATR),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events.wait_for_change(Duration::from_millis(100)).unwrap(),
        None
    );

    // The event frame of a removal is lost on the line: STATUS notices the change counter moved.
    sim.corrupt_next_reply();
    let card = sim.remove_card().expect("demo card");
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Absent);
    let events = watcher.session().events().unwrap();
    assert_eq!(
        events.wait_for_change(wait).unwrap(),
        Some(CardEvent::Removed)
    );
    drop(card);
}

#[test]
fn sessions_share_the_port_and_it_reopens_after_the_last_one_closes() {
    let (sim, factory, mut first) = demo();
    let mut second = open(&factory);
    assert_eq!(
        first.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    let balance = second.transmit(&apdu("805C000204")).unwrap();
    assert_eq!(balance.data, demo::DEMO_ETC_BALANCE_FEN.to_be_bytes());
    // Two threads at once: commands are serialised on the port, none is lost or mismatched.
    let threads: Vec<_> = [first, second]
        .into_iter()
        .map(|mut reader| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let r = reader.transmit(&apdu("00A4000C021001")).unwrap();
                    assert_eq!((r.data.len(), r.sw), (0, StatusWord::OK));
                    let r = reader.transmit(&apdu("805C000204")).unwrap();
                    assert_eq!(r.data.len(), 4);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every session is gone, so the port was closed; opening again works (exclusivity released).
    let mut again = open(&factory);
    assert_eq!(
        again.transmit(&apdu("00A40000021001")).unwrap().sw,
        StatusWord::OK
    );
    assert_eq!(sim.stats().bad_frames_received, 0);
}

#[test]
fn an_unknown_reader_id_is_not_found() {
    let (_sim, factory, _reader) = demo();
    assert!(matches!(
        factory.open(&cardd_reader::ReaderSelector::Id("serial:nope".into())),
        Err(ReaderError::NotFound { .. })
    ));
}

#[test]
fn a_session_waits_for_its_turn_no_longer_than_its_own_timeout() {
    let sim = cardd_serial::SimProgrammer::with_config(SimProgrammerConfig::demo()).unwrap();
    let factory = factory_with(sim.path(), serde_json::json!({"command_timeout_ms": 200}));
    let mut slow = open(&factory);
    let mut other = open(&factory);
    sim.delay_next_reply(Duration::from_millis(800));
    let worker = std::thread::spawn(move || slow.transmit(&apdu("00A4000C021001")).map(|r| r.sw));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let err = other.session().presence().unwrap_err();
    assert!(matches!(err, ReaderError::Busy { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(worker.join().unwrap().unwrap(), StatusWord::OK);
    assert!(other.session().presence().unwrap().is_present());
}
