//! Property tests: no input makes a card panic, and no guessed command moves money.

mod common;

use std::time::Duration;

use cardd_reader::{CardReader, ReaderFactory, ReaderSelector};
use cardd_sim::demo::{demo_city_card, demo_etc_card, demo_etc_card_sm4, demo_obu};
use cardd_sim::{SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};
use common::*;
use proptest::prelude::*;

fn any_card() -> impl Strategy<Value = SimCard> {
    prop_oneof![
        Just(()).prop_map(|_| demo_etc_card()),
        Just(()).prop_map(|_| demo_etc_card_sm4()),
        Just(()).prop_map(|_| demo_city_card()),
        Just(()).prop_map(|_| demo_obu()),
    ]
}

/// A command that looks like one the cards know: a known CLA/INS with arbitrary P1 P2, data
/// and Le, or a prefix that selects something real.
fn valid_looking() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just((0x00u8, 0xA4u8)),
        Just((0x00, 0xB0)),
        Just((0x00, 0xB2)),
        Just((0x00, 0x20)),
        Just((0x00, 0x84)),
        Just((0x04, 0xD6)),
        Just((0x00, 0xD6)),
        Just((0x00, 0xB4)),
        Just((0x80, 0x5C)),
        Just((0x80, 0x50)),
        Just((0x80, 0x52)),
        Just((0x80, 0x54)),
        Just((0x80, 0xDC)),
        Just((0x80, 0x5A)),
        Just((0x80, 0xF6)),
        Just((0x00, 0xC0)),
    ];
    let p1p2 = prop_oneof![
        any::<(u8, u8)>(),
        Just((0x00, 0x02)),
        Just((0x01, 0x02)),
        Just((0x03, 0x02)),
        Just((0x95, 0x00)),
        Just((0x01, 0xC4)),
        Just((0xAA, 0xC8))
    ];
    let data = prop_oneof![
        Just(Vec::new()),
        Just(vec![0x10, 0x01]),
        Just(vec![0x3F, 0x00]),
        Just(vec![0xDF, 0x01]),
        Just(b"123456".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..60),
    ];
    let le = prop_oneof![Just(None), any::<u8>().prop_map(Some)];
    (header, p1p2, data, le).prop_map(|((cla, ins), (p1, p2), data, le)| {
        let mut apdu = vec![cla, ins, p1, p2];
        if !data.is_empty() {
            apdu.push(data.len() as u8);
            apdu.extend_from_slice(&data);
        }
        if let Some(le) = le {
            apdu.push(le);
        }
        apdu
    })
}

fn check_response(r: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(r.len() >= 2, "a response has a status word");
    prop_assert!(r.len() <= 258, "responses are bounded");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn process_never_panics_on_arbitrary_bytes(mut card in any_card(), apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
        for apdu in apdus {
            check_response(&card.process(&apdu))?;
        }
    }

    #[test]
    fn guessed_commands_never_move_money(mut card in any_card(), apdus in proptest::collection::vec(valid_looking(), 1..40)) {
        let before = money_state(&card);
        for apdu in apdus {
            check_response(&card.process(&apdu))?;
        }
        prop_assert_eq!(money_state(&card), before);
        if let Some(obu) = card.as_obu() {
            prop_assert!(!obu.is_activated(), "no guessed MAC activates an OBU");
        }
    }

    #[test]
    fn read_binary_returns_the_file_or_a_status_word(sfi in prop_oneof![Just(0x15u8), Just(0x16), Just(0x18), Just(0x19), 0u8..0x20], offset in any::<u8>(), le in any::<u8>(), adf in any::<bool>()) {
        let mut card = demo_etc_card();
        if adf {
            select_adf(&mut card);
        }
        let (data, sw) = send(&mut card, &[0x00, 0xB0, 0x80 | sfi, offset, le]);
        let file: Option<Vec<u8>> = match (adf, sfi) {
            (true, 0x15) => Some(card.as_etc().unwrap().issue_info().to_vec()),
            (false, 0x16) => Some(card.as_etc().unwrap().holder_info().to_vec()),
            _ => None,
        };
        match file {
            Some(file) if usize::from(offset) >= file.len() => prop_assert_eq!(sw, 0x6B00),
            Some(file) => {
                let remaining = file.len() - usize::from(offset);
                let want = if le == 0 { remaining } else { usize::from(le) };
                if want > remaining {
                    prop_assert_eq!(sw, 0x6C00 | remaining as u16);
                } else {
                    prop_assert_eq!(sw, 0x9000);
                    prop_assert_eq!(&data[..], &file[usize::from(offset)..usize::from(offset) + want]);
                }
            }
            None => prop_assert!(matches!(sw, 0x6A82 | 0x6981), "SW {:04X}", sw),
        }
    }

    #[test]
    fn t0_reader_never_panics(apdus in proptest::collection::vec(prop_oneof![valid_looking(), proptest::collection::vec(any::<u8>(), 0..40)], 1..30)) {
        let world = SimWorld::new();
        world.add_reader(SimReaderConfig::new("r", SimReaderKind::Contact).with_card(demo_etc_card()).with_t0(true)).unwrap();
        let mut reader = SimFactory::new(world.clone()).open(&ReaderSelector::Index(0)).unwrap();
        for apdu in apdus {
            let r = reader.transmit_raw(&apdu, Duration::from_millis(10)).unwrap();
            check_response(&r)?;
        }
        let reader: &mut dyn CardReader = reader.as_mut();
        prop_assert!(reader.presence().unwrap().is_present());
        prop_assert_eq!(world.card("r").unwrap().balance(), Some(10_000));
    }
}
