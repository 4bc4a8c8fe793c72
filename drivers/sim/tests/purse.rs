//! Loads, purchases and proofs end to end, with the host side computed by `cardd-crypto`.

mod common;

use cardd_sim::cards::{
    CityCard, EtcCard, EtcCardSpec, LogRecord, TX_COMPOSITE, TX_LOAD, TX_PURCHASE,
};
use cardd_sim::demo::{
    self, demo_city_card, demo_etc_card, demo_etc_card_sm4, demo_masters, demo_masters_sm4,
};
use cardd_sim::SimCard;
use common::*;

fn ready_etc() -> (SimCard, HostKeys) {
    let mut card = demo_etc_card();
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &demo_masters());
    select_adf(&mut card);
    verify_pin(&mut card);
    (card, keys)
}

fn ready_etc_sm4() -> (SimCard, HostKeys) {
    let mut card = demo_etc_card_sm4();
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &demo_masters_sm4());
    select_adf(&mut card);
    verify_pin(&mut card);
    (card, keys)
}

fn load_and_purchase(mut card: SimCard, keys: HostKeys, key_index_byte: u8, alg_id: u8) {
    let init = init_load(&mut card, &keys, 5_000);
    assert_eq!(
        (init.balance, init.atc, init.key_version, init.alg_id),
        (10_000, 0, 0x01, alg_id)
    );
    assert_eq!(key_index(keys.alg), key_index_byte);
    let (tac, s) = send(&mut card, &credit_apdu(host_mac2(&keys, &init, 5_000)));
    assert_eq!(s, 0x9000);
    assert_eq!(tac.len(), 4);
    assert_eq!(money_state(&card), (Some(15_000), Some(1), Some(0), 1));
    assert_eq!(
        tx(&mut card, "805C000204"),
        (15_000u32.to_be_bytes().to_vec(), 0x9000)
    );
    let record = LogRecord::parse(&tx(&mut card, "00B201C417").0).unwrap();
    assert_eq!(
        (
            record.atc,
            record.amount_fen,
            record.tx_type,
            record.terminal
        ),
        (0, 5_000, TX_LOAD, TERMINAL)
    );
    assert_eq!((record.date, record.time), (DATE, TIME));

    purchase(&mut card, &keys, 1_234, 0x0102);
    assert_eq!(money_state(&card), (Some(13_766), Some(1), Some(1), 2));
    let newest = LogRecord::parse(&tx(&mut card, "00B201C417").0).unwrap();
    assert_eq!(
        (newest.atc, newest.amount_fen, newest.tx_type),
        (0, 1_234, TX_PURCHASE)
    );
    let oldest = LogRecord::parse(&tx(&mut card, "00B202C417").0).unwrap();
    assert_eq!(oldest.tx_type, TX_LOAD);
}

#[test]
fn load_and_purchase_3des() {
    let (card, keys) = ready_etc();
    load_and_purchase(card, keys, 0x01, 0x00);
}

#[test]
fn load_and_purchase_sm4() {
    let (card, keys) = ready_etc_sm4();
    load_and_purchase(card, keys, 0x41, 0x04);
}

#[test]
fn composite_purchase_writes_0019_only_on_success() {
    let (mut card, keys) = ready_etc();
    let mut record = vec![0xAA, 0x29, 0x00];
    record.extend((0..40).map(|i| i as u8));
    composite_purchase(&mut card, &keys, 500, 7, &record);
    assert_eq!(card.as_etc().unwrap().capp_record(), record.as_slice());
    assert_eq!(tx(&mut card, "00B2AACC2B"), (record.clone(), 0x9000));
    assert_eq!(card.log()[0].tx_type, TX_COMPOSITE);
    assert_eq!(card.balance(), Some(9_500));

    // A second composite purchase whose DEBIT fails leaves 0019 as it was.
    let init = init_purchase(&mut card, &keys, 100, true);
    let mut other = record.clone();
    other[10] = 0xEE;
    let mut update = h("80DCAAC82B");
    update.extend_from_slice(&other);
    assert_eq!(send(&mut card, &update).1, 0x9000);
    let mut debit = debit_apdu(&keys, &init, 100, TX_COMPOSITE, 8);
    debit[19] ^= 1;
    assert_eq!(send(&mut card, &debit).1, 0x9302);
    assert_eq!(card.as_etc().unwrap().capp_record(), record.as_slice());
    assert_eq!(card.balance(), Some(9_500));
}

#[test]
fn update_capp_only_inside_a_composite_purchase() {
    let (mut card, keys) = ready_etc();
    let mut update = h("80DCAAC82B AA2900");
    update.extend_from_slice(&[0; 40]);
    assert_eq!(send(&mut card, &update).1, 0x6985, "no purchase pending");
    let init = init_purchase(&mut card, &keys, 100, false);
    assert_eq!(send(&mut card, &update).1, 0x6985, "plain purchase");
    assert_eq!(
        send(&mut card, &debit_apdu(&keys, &init, 100, TX_PURCHASE, 1)).1,
        0x6985,
        "and the session is gone"
    );
    init_purchase(&mut card, &keys, 100, true);
    let mut bad = update.clone();
    bad[5] = 0xAB;
    assert_eq!(send(&mut card, &bad).1, 0x6A80, "record must start AA 29");
    init_purchase(&mut card, &keys, 100, true);
    assert_eq!(send(&mut card, &update[..update.len() - 1]).1, 0x6700);
}

#[test]
fn bad_mac2_changes_nothing_and_spends_the_session() {
    let (mut card, keys) = ready_etc();
    let before = money_state(&card);
    let init = init_load(&mut card, &keys, 1_000);
    let mut mac2 = host_mac2(&keys, &init, 1_000);
    mac2[0] ^= 0xFF;
    assert_eq!(send(&mut card, &credit_apdu(mac2)).1, 0x9302);
    assert_eq!(money_state(&card), before);
    assert!(card.purse_mut().unwrap().proof(TX_LOAD).is_none());
    let good = host_mac2(&keys, &init, 1_000);
    assert_eq!(
        send(&mut card, &credit_apdu(good)).1,
        0x6985,
        "the session was spent"
    );
    assert_eq!(money_state(&card), before);
}

#[test]
fn an_old_mac2_is_rejected_after_a_new_initialize() {
    let (mut card, keys) = ready_etc();
    let first = init_load(&mut card, &keys, 1_000);
    let old_mac2 = host_mac2(&keys, &first, 1_000);
    let second = init_load(&mut card, &keys, 1_000);
    assert_ne!(first.random, second.random);
    assert_eq!(send(&mut card, &credit_apdu(old_mac2)).1, 0x9302);
    assert_eq!(card.balance(), Some(10_000));
}

#[test]
fn credit_only_directly_after_initialize() {
    let (mut card, keys) = ready_etc();
    assert_eq!(
        send(&mut card, &credit_apdu([0; 4])).1,
        0x6985,
        "no INITIALIZE at all"
    );
    let init = init_load(&mut card, &keys, 1_000);
    assert_eq!(sw(&mut card, "805C000204"), 0x9000);
    assert_eq!(
        send(&mut card, &credit_apdu(host_mac2(&keys, &init, 1_000))).1,
        0x6985,
        "GET BALANCE in between"
    );
    let init = init_load(&mut card, &keys, 1_000);
    assert_eq!(sw(&mut card, "00EE0000"), 0x6D00);
    assert_eq!(
        send(&mut card, &credit_apdu(host_mac2(&keys, &init, 1_000))).1,
        0x6985,
        "even a failed command cancels"
    );
    let init = init_load(&mut card, &keys, 1_000);
    let mut wrong_p1 = credit_apdu(host_mac2(&keys, &init, 1_000));
    wrong_p1[2] = 0x01;
    assert_eq!(send(&mut card, &wrong_p1).1, 0x6A86);
    let init = init_purchase(&mut card, &keys, 100, false);
    assert_eq!(
        send(&mut card, &credit_apdu([0; 4])).1,
        0x6985,
        "CREDIT after a purchase INITIALIZE"
    );
    assert_eq!(
        send(&mut card, &debit_apdu(&keys, &init, 100, TX_PURCHASE, 1)).1,
        0x6985
    );
    assert_eq!(money_state(&card), (Some(10_000), Some(0), Some(0), 0));
}

#[test]
fn initialize_alone_changes_nothing() {
    let (mut card, keys) = ready_etc();
    let before = money_state(&card);
    for _ in 0..3 {
        init_load(&mut card, &keys, 1);
        init_purchase(&mut card, &keys, 1, false);
        init_purchase(&mut card, &keys, 1, true);
    }
    card.reset();
    assert_eq!(money_state(&card), before);
    assert_eq!(card.as_etc().unwrap().capp_record()[3..], [0; 40]);
}

#[test]
fn debit_with_bad_mac1_changes_nothing() {
    let (mut card, keys) = ready_etc();
    let init = init_purchase(&mut card, &keys, 300, false);
    let mut debit = debit_apdu(&keys, &init, 300, TX_PURCHASE, 9);
    debit[4 + 1 + 14] ^= 0x80;
    assert_eq!(send(&mut card, &debit).1, 0x9302);
    assert_eq!(money_state(&card), (Some(10_000), Some(0), Some(0), 0));
    assert!(card.purse_mut().unwrap().proof(TX_PURCHASE).is_none());
}

#[test]
fn insufficient_balance_and_over_maximum() {
    let (mut card, keys) = ready_etc();
    let exact = init_apdu(0x01, 0x01, 10_000, 0x0F);
    assert_eq!(
        send(&mut card, &exact).1,
        0x9000,
        "the whole balance may be spent"
    );
    assert_eq!(
        send(&mut card, &init_apdu(0x01, 0x01, 10_001, 0x0F)).1,
        0x9401
    );
    let max = card.purse_mut().unwrap().config().max_balance_fen;
    assert_eq!(max, 10_000_000);
    assert_eq!(
        send(&mut card, &init_apdu(0x00, 0x01, max - 10_000, 0x10)).1,
        0x9000,
        "up to the maximum"
    );
    assert_eq!(
        send(&mut card, &init_apdu(0x00, 0x01, max - 9_999, 0x10)).1,
        0x6985
    );
    assert_eq!(
        send(&mut card, &init_apdu(0x00, 0x01, u32::MAX, 0x10)).1,
        0x6985,
        "no overflow"
    );
    let mut city = demo_city_card();
    select_adf(&mut city);
    assert_eq!(
        send(&mut city, &init_apdu(0x00, 0x01, 95_001, 0x10)).1,
        0x6985,
        "city maximum 1000 yuan"
    );
    let city_keys = city_host_keys(city.as_city().unwrap().issue_info(), &demo_masters());
    load(&mut city, &city_keys, 95_000);
    assert_eq!(city.balance(), Some(100_000));
    let _ = keys;
}

#[test]
fn transaction_prove_after_load_and_purchase() {
    let (mut card, keys) = ready_etc();
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 1)).1,
        0x9406,
        "no load yet"
    );
    let init = init_load(&mut card, &keys, 2_000);
    let mac2 = host_mac2(&keys, &init, 2_000);
    let (tac, s) = send(&mut card, &credit_apdu(mac2));
    assert_eq!(s, 0x9000);
    let (proof, s) = send(&mut card, &prove_apdu(TX_LOAD, 1));
    assert_eq!(s, 0x9000, "the post-transaction ATC");
    assert_eq!(&proof[..4], mac2, "the MAC2 the card accepted");
    assert_eq!(&proof[4..], tac.as_slice());
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 0)).1,
        0x9406,
        "pre-transaction ATC not accepted by default"
    );
    assert_eq!(send(&mut card, &prove_apdu(TX_LOAD, 2)).1, 0x9406);
    assert_eq!(
        send(&mut card, &prove_apdu(TX_PURCHASE, 1)).1,
        0x9406,
        "wrong type"
    );
    assert_eq!(
        send(&mut card, &prove_apdu(0x01, 1)).1,
        0x9406,
        "ED load never happened"
    );
    card.purse_mut().unwrap().config_mut().prove_accepts_pre_atc = true;
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 0)).0,
        proof,
        "pre-ATC accepted when configured"
    );

    let (ptac, pmac2) = purchase(&mut card, &keys, 700, 55);
    let (pproof, s) = send(&mut card, &prove_apdu(TX_PURCHASE, 1));
    assert_eq!(s, 0x9000);
    assert_eq!(
        pproof,
        [pmac2, ptac].concat(),
        "purchase: the card's MAC2 then the TAC"
    );
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 1)).0,
        proof,
        "each type keeps its own last proof"
    );

    // Only the last load is kept.
    load(&mut card, &keys, 1);
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 1)).1,
        0x9000,
        "pre-ATC of the new load (configured)"
    );
    card.purse_mut().unwrap().config_mut().prove_accepts_pre_atc = false;
    assert_eq!(
        send(&mut card, &prove_apdu(TX_LOAD, 1)).1,
        0x9406,
        "the old load's proof is gone"
    );
    assert_eq!(send(&mut card, &prove_apdu(TX_LOAD, 2)).1, 0x9000);
    assert_eq!(sw(&mut card, "805A0102020001 08"), 0x6A86);
    assert_eq!(sw(&mut card, "805A000203000100 08"), 0x6700);
}

#[test]
fn city_card_loads_without_pin_and_keeps_ten_records() {
    let mut card = demo_city_card();
    let keys = city_host_keys(card.as_city().unwrap().issue_info(), &demo_masters());
    select_adf(&mut card);
    for i in 0..12u32 {
        load(&mut card, &keys, 100 + i);
    }
    assert_eq!(card.log().len(), 10);
    assert_eq!(card.online_atc(), Some(12));
    let newest = LogRecord::parse(&tx(&mut card, "00B201C417").0).unwrap();
    assert_eq!((newest.atc, newest.amount_fen), (11, 111));
    let oldest = LogRecord::parse(&tx(&mut card, "00B20AC417").0).unwrap();
    assert_eq!(oldest.atc, 2);
    assert_eq!(sw(&mut card, "00B20BC417"), 0x6A83);
    purchase(&mut card, &keys, 50, 1);
    assert_eq!(card.offline_atc(), Some(1));
}

#[test]
fn etc_log_keeps_fifty_records() {
    let (mut card, keys) = ready_etc();
    for _ in 0..55 {
        purchase(&mut card, &keys, 1, 1);
    }
    assert_eq!(card.log().len(), 50);
    assert_eq!(sw(&mut card, "00B232C417"), 0x9000);
    assert_eq!(sw(&mut card, "00B233C417"), 0x6A83);
}

#[test]
fn load_without_pin_when_configured() {
    let mut card = demo_etc_card();
    card.as_etc_mut().unwrap().set_load_requires_pin(false);
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &demo_masters());
    select_adf(&mut card);
    load(&mut card, &keys, 10);
    assert_eq!(card.balance(), Some(10_010));
}

/// The self-computed vectors of the reference (one-level diversification by
/// `1234567890ABCDEF`; load: random `A1B2C3D4`, online ATC 5, balance 1000; purchase: random
/// `0BADCAFE`, offline ATC 7, terminal sequence `00000102`, at 2024-01-02 03:04:05).
#[test]
fn known_answer_load_vector() {
    let spec = EtcCardSpec {
        internal_number: "1234567890ABCDEF".into(),
        balance_fen: 1_000,
        online_atc: 5,
        offline_atc: 7,
        load_requires_pin: false,
        ..demo::demo_etc_spec()
    };
    let masters = cardd_sim::IssuerMasters {
        two_level: false,
        ..demo_masters()
    };
    let mut card: SimCard = EtcCard::issue(&spec, &masters).unwrap().into();
    select_adf(&mut card);
    card.queue_random(&h("A1B2C3D4"));
    let (init, s) = send(&mut card, &init_apdu(0x00, 0x01, 10_000, 0x10));
    assert_eq!(s, 0x9000);
    assert_eq!(
        hex::encode_upper(&init),
        "000003E8000501".to_owned() + "00A1B2C3D455954E2A"
    );
    let (tac, s) = send(&mut card, &credit_apdu(h("9F341DD2").try_into().unwrap()));
    assert_eq!((hex::encode_upper(tac), s), ("DA04C4A9".to_owned(), 0x9000));
    assert_eq!(card.balance(), Some(11_000));

    card.queue_random(&h("0BADCAFE"));
    let (_, s) = send(&mut card, &init_apdu(0x01, 0x01, 100, 0x0F));
    assert_eq!(s, 0x9000);
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &masters);
    let init = PurchaseInit {
        balance: 11_000,
        atc: 7,
        random: [0x0B, 0xAD, 0xCA, 0xFE],
    };
    let full = debit_apdu(&keys, &init, 100, TX_PURCHASE, 0x102);
    assert_eq!(
        hex::encode_upper(&full[16..20]),
        "48974A28",
        "MAC1 of the reference"
    );
    let (resp, s) = send(&mut card, &full);
    assert_eq!(s, 0x9000);
    assert_eq!(
        hex::encode_upper(&resp),
        "CA673EC9484C18AB",
        "TAC and MAC2 of the reference"
    );
    check_debit(&keys, &init, 100, TX_PURCHASE, 0x102, &resp);
}

#[test]
fn city_cards_issue_with_sm4_masters() {
    let spec = demo::demo_city_spec();
    let mut card: SimCard = CityCard::issue(&spec, &demo_masters_sm4()).unwrap().into();
    let keys = city_host_keys(card.as_city().unwrap().issue_info(), &demo_masters_sm4());
    select_adf(&mut card);
    assert_eq!(send(&mut card, &init_apdu(0x00, 0x01, 1, 0x10)).1, 0x9403);
    load(&mut card, &keys, 100);
    purchase(&mut card, &keys, 100, 3);
    assert_eq!(card.balance(), Some(5_000));
}
