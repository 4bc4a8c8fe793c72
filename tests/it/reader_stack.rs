//! The reader stack end to end on simulated cards: driver, reader layer, purse layer and host
//! cryptography agree on full load and purchase sequences, for 3DES and SM4 cards, and a bad
//! MAC leaves the card unchanged.

use std::time::Duration;

use cardd_crypto::bcd;
use cardd_purse::SecurityModule;
use cardd_purse::{
    decide_interrupted_load, CardIdentity, CardKeyContext, CardKind, LoadOutcome, LoadPlan,
    LoadSession, Pin, Purse, PurseError, SoftSam, TransactionType,
};
use cardd_reader::{Reader, ReaderError, ReaderFactory, ReaderSelector, StatusWord};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld,
};

const TERMINAL: [u8; 6] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];

fn reader_with(card: SimCard, t0: bool) -> (SimWorld, Reader) {
    let world = SimWorld::new();
    world
        .add_reader(
            SimReaderConfig::new("r", SimReaderKind::Contact)
                .with_card(card)
                .with_t0(t0),
        )
        .unwrap();
    let session = SimFactory::new(world.clone())
        .open(&ReaderSelector::Id("sim:r".into()))
        .unwrap();
    (world, Reader::new(session, Duration::from_secs(5)))
}

/// Selects, verifies the PIN and prepares a load of `amount` (MAC1 checked, MAC2 computed).
fn prepare_load(purse: &mut Purse<'_>, sam: &SoftSam, amount: u32) -> LoadSession {
    purse.select_etc_adf().unwrap();
    let info = purse.read_etc_issue_info().unwrap();
    purse
        .verify_pin(
            "test card",
            &Pin::ascii("123456").unwrap(),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .unwrap();
    let plan = LoadPlan::new(
        CardKeyContext::etc(&info),
        amount,
        TERMINAL,
        bcd::date(2026, 11, 22),
        bcd::time(10, 0, 0),
    );
    let init = purse.init_load_for(&plan).unwrap();
    LoadSession::start(plan, init, sam).expect("MAC1 verifies")
}

#[test]
fn full_load_on_3des_and_sm4_etc_cards_verifies_the_tac() {
    let sam = SoftSam::demo();
    for (card, t0) in [
        (cardd_sim::demo::demo_etc_card(), false),
        (cardd_sim::demo::demo_etc_card_sm4(), true),
    ] {
        let (world, mut reader) = reader_with(card, t0);
        let mut purse = Purse::new(&mut reader);
        let load = prepare_load(&mut purse, &sam, 12_345);
        let tac = purse.credit_for(&load).unwrap();
        load.verify_tac(&sam, tac).expect("TAC verifies");
        assert_eq!(purse.balance().unwrap(), 10_000 + 12_345);
        // The card keeps the proof of this load under the post-transaction counter.
        let proof = purse
            .prove(TransactionType::EpLoad, load.atc_after().unwrap())
            .unwrap()
            .expect("proof");
        assert_eq!(proof.mac, load.mac2);
        assert_eq!(proof.tac, tac);
        let card = world.card("sim:r").unwrap();
        assert_eq!(card.online_atc(), Some(1));
    }
}

#[test]
fn full_purchase_agrees_with_the_host() {
    let sam = SoftSam::demo();
    let (world, mut reader) = reader_with(cardd_sim::demo::demo_etc_card(), false);
    let mut purse = Purse::new(&mut reader);
    purse.select_etc_adf().unwrap();
    let info = purse.read_etc_issue_info().unwrap();
    let ctx = CardKeyContext::etc(&info);
    let init = purse
        .init_purchase(
            cardd_purse::PurchaseKind::Normal,
            info.key_index(),
            300,
            &TERMINAL,
        )
        .unwrap();
    let terms = cardd_purse::PurchaseTerms {
        kind: cardd_purse::PurchaseKind::Normal,
        amount: 300,
        terminal: TERMINAL,
        term_seq: 7,
        date: bcd::date(2026, 11, 22),
        time: bcd::time(10, 1, 0),
    };
    let mac1 = sam.purchase_mac1(&ctx, &init, &terms).unwrap();
    let debit = purse
        .debit(terms.term_seq, &terms.date, &terms.time, mac1)
        .unwrap();
    sam.verify_purchase_mac2(&ctx, &init, &terms, debit.mac2)
        .expect("card MAC2 verifies");
    sam.verify_purchase_tac(&ctx, &terms, debit.tac)
        .expect("TAC verifies");
    assert_eq!(world.card("sim:r").unwrap().balance(), Some(10_000 - 300));
    assert_eq!(world.card("sim:r").unwrap().offline_atc(), Some(1));
}

#[test]
fn a_bad_mac2_is_refused_and_changes_nothing() {
    let sam = SoftSam::demo();
    let (world, mut reader) = reader_with(cardd_sim::demo::demo_etc_card(), false);
    let before = world.card("sim:r").unwrap();
    let mut purse = Purse::new(&mut reader);
    let mut load = prepare_load(&mut purse, &sam, 1_000);
    load.mac2[0] ^= 0xFF;
    match purse.credit_for(&load) {
        Err(PurseError::Status { sw, .. }) => assert_eq!(sw, StatusWord::MAC_INVALID),
        other => panic!("expected 9302, got {other:?}"),
    }
    let after = world.card("sim:r").unwrap();
    assert_eq!(after.balance(), before.balance());
    assert_eq!(after.online_atc(), before.online_atc());
    assert_eq!(after.offline_atc(), before.offline_atc());
    assert_eq!(after.log().len(), before.log().len());
}

#[test]
fn a_lost_credit_response_is_decided_from_the_card() {
    let sam = SoftSam::demo();
    for (kind, expected, balance) in [
        (
            FaultKind::RemoveAfterExec,
            LoadOutcome::Landed,
            10_000 + 2_000,
        ),
        (FaultKind::RemoveBeforeExec, LoadOutcome::NotLanded, 10_000),
    ] {
        let (world, mut reader) = reader_with(cardd_sim::demo::demo_etc_card(), false);
        let load = {
            let mut purse = Purse::new(&mut reader);
            prepare_load(&mut purse, &sam, 2_000)
        };
        let next = world.apdu_count("sim:r") + 1;
        world
            .set_fault_plan("sim:r", FaultPlan::new().at(next, kind.clone()))
            .unwrap();
        let err = Purse::new(&mut reader).credit_for(&load).unwrap_err();
        assert!(
            matches!(err, PurseError::Reader(ReaderError::CardRemoved { .. })),
            "{err:?}"
        );
        assert!(err.outcome_unknown());
        // The teller puts the card back; cardd reads it before deciding anything.
        let card = world.take_pocket("sim:r").expect("the pulled card");
        world.insert_card("sim:r", card).unwrap();
        let mut purse = Purse::new(&mut reader);
        purse.select_etc_adf().unwrap();
        purse
            .verify_pin(
                "test card",
                &Pin::ascii("123456").unwrap(),
                &cardd_purse::MemoryPinRefusals::default(),
            )
            .unwrap();
        let seen = purse.observe_load(&load).unwrap();
        assert_eq!(decide_interrupted_load(&load, seen), expected, "{kind:?}");
        assert_eq!(world.card("sim:r").unwrap().balance(), Some(balance));
    }
}

#[test]
fn identify_tells_etc_city_and_obu_cards_from_their_answers() {
    use cardd_sim::demo;
    let cases = [
        (
            demo::demo_etc_card(),
            CardKind::Etc,
            demo::DEMO_ETC_CARD_NUMBER,
        ),
        (
            demo::demo_etc_card_sm4(),
            CardKind::Etc,
            demo::DEMO_ETC_SM4_CARD_NUMBER,
        ),
        (
            demo::demo_city_card(),
            CardKind::City,
            demo::DEMO_CITY_CARD_NUMBER,
        ),
        // An ESAM in a reader's own slot: no payment application, system information under MF.
        (
            demo::demo_obu(),
            CardKind::Obu,
            demo::DEMO_OBU_CONTRACT_SERIAL,
        ),
    ];
    for (card, kind, number) in cases {
        let (_world, mut reader) = reader_with(card, false);
        let mut purse = Purse::new(&mut reader);
        let identity = purse.identify().unwrap();
        assert_eq!(identity.kind(), Some(kind), "{number}");
        assert_eq!(identity.card_number().as_deref(), Some(number));
        match &identity {
            CardIdentity::Etc(info) => {
                assert_eq!(
                    info.plate_text(),
                    if number == demo::DEMO_ETC_CARD_NUMBER {
                        demo::DEMO_ETC_PLATE
                    } else {
                        demo::DEMO_ETC_SM4_PLATE
                    }
                );
                // The payment application stays selected: the balance answers at once.
                assert_eq!(purse.balance().unwrap(), demo::DEMO_ETC_BALANCE_FEN);
            }
            CardIdentity::City(_) => {
                assert_eq!(purse.balance().unwrap(), demo::DEMO_CITY_BALANCE_FEN);
            }
            CardIdentity::Obu(info) => assert!(!info.is_activated()),
            CardIdentity::Unsupported { .. } => panic!("{number} unsupported"),
        }
    }
}

#[test]
fn identify_on_an_obu_programmer_reads_the_esam() {
    let world = SimWorld::new();
    world
        .add_reader(
            SimReaderConfig::new("p", SimReaderKind::ObuProgrammer)
                .with_card(cardd_sim::demo::demo_obu()),
        )
        .unwrap();
    let session = SimFactory::new(world.clone())
        .open(&ReaderSelector::Id("sim:p".into()))
        .unwrap();
    let mut reader = Reader::new(session, Duration::from_secs(5));
    let mut esam = reader.obu(cardd_reader::ObuTarget::Esam).unwrap();
    let channel: &mut dyn cardd_reader::CardChannel = &mut esam;
    let mut purse = Purse::new(channel);
    for identity in [purse.identify_obu().unwrap(), purse.identify().unwrap()] {
        assert_eq!(identity.kind(), Some(CardKind::Obu));
        assert_eq!(
            identity.card_number().as_deref(),
            Some(cardd_sim::demo::DEMO_OBU_CONTRACT_SERIAL)
        );
    }
}

#[test]
fn a_payment_card_identification_refuses_an_esam_as_the_card_answered() {
    let (_world, mut reader) = reader_with(cardd_sim::demo::demo_obu(), false);
    let mut purse = Purse::new(&mut reader);
    let e = purse.identify_payment_card().unwrap_err();
    assert_eq!(e.status_word(), Some(StatusWord::FILE_NOT_FOUND), "{e}");
}
