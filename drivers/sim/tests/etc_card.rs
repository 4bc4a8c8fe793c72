//! Every file command and status word of `docs/card-protocol.md` on the ETC and city cards.

mod common;

use cardd_crypto::gbk;
use cardd_sim::cards::{EtcCard, EtcCardSpec, ETC_ATR};
use cardd_sim::demo::{self, demo_city_card, demo_etc_card, demo_masters};
use cardd_sim::SimCard;
use common::*;

#[test]
fn select_by_fid_name_and_pse() {
    let mut card = demo_etc_card();
    let (fci, s) = tx(&mut card, "00A40000023F00");
    assert_eq!(s, 0x9000);
    assert_eq!(fci, h("6F10 840E 315041592E5359532E4444463031"));
    let (fci, s) = tx(&mut card, "00A4040009A00000000386980701");
    assert_eq!(s, 0x9000);
    assert_eq!(fci, h("6F0B 8409 A00000000386980701"));
    assert_eq!(
        tx(&mut card, "00A404000E315041592E5359532E4444463031").1,
        0x9000
    );
    assert_eq!(
        tx(&mut card, "00A4000C021001"),
        (vec![], 0x9000),
        "P2 0C: no FCI"
    );
    assert_eq!(
        tx(&mut card, "00A40000020015"),
        (vec![], 0x9000),
        "an EF in the ADF"
    );
    assert_eq!(sw(&mut card, "00A40000022222"), 0x6A82);
    assert_eq!(sw(&mut card, "00A4040005A000000000"), 0x6A82);
    assert_eq!(sw(&mut card, "00A40100023F00"), 0x6A86);
    assert_eq!(sw(&mut card, "00A4000003123456"), 0x6700);
}

#[test]
fn read_binary_by_sfi_and_current_file() {
    let mut card = demo_etc_card();
    let issue = card.as_etc().unwrap().issue_info().to_vec();
    assert_eq!(issue.len(), 43);
    assert_eq!(
        sw(&mut card, "00B095002B"),
        0x6A82,
        "0015 is in the ADF, the MF is selected after reset"
    );
    let (holder, s) = tx(&mut card, "00B0960037");
    assert_eq!(s, 0x9000);
    assert_eq!(&holder[2..6], gbk::encode("张三").unwrap().as_slice());
    select_adf(&mut card);
    assert_eq!(tx(&mut card, "00B095002B"), (issue.clone(), 0x9000));
    assert_eq!(
        tx(&mut card, "00B0950000"),
        (issue.clone(), 0x9000),
        "Le 00 reads to the end"
    );
    assert_eq!(
        tx(&mut card, "00B0950A02"),
        (issue[10..12].to_vec(), 0x9000)
    );
    assert_eq!(
        sw(&mut card, "00B0950032"),
        0x6C2B,
        "Le larger than the file"
    );
    assert_eq!(sw(&mut card, "00B0952A05"), 0x6C01);
    assert_eq!(sw(&mut card, "00B0952B01"), 0x6B00, "offset at the end");
    assert_eq!(sw(&mut card, "00B0950000FF"), 0x6700, "malformed length");
    // The SFI read made 0015 current: offset form.
    assert_eq!(
        tx(&mut card, "00B0001C0C"),
        (issue[28..40].to_vec(), 0x9000)
    );
    assert_eq!(sw(&mut card, "00B0960037"), 0x6A82, "0016 is in the MF");
    assert_eq!(sw(&mut card, "00B0980017"), 0x6981, "0018 is a record file");
    assert_eq!(
        sw(&mut card, "00B0D50000"),
        0x6A86,
        "P1 bits 6-7 must be 0 with an SFI"
    );
    assert_eq!(sw(&mut card, "00A40000021001"), 0x9000);
    assert_eq!(
        sw(&mut card, "00B0000000"),
        0x6A82,
        "no current EF after selecting a DF"
    );
    assert_eq!(sw(&mut card, "00A40000020015"), 0x9000);
    assert_eq!(tx(&mut card, "00B0000004"), (issue[0..4].to_vec(), 0x9000));
}

#[test]
fn plate_and_card_number_come_from_0015() {
    let card = demo_etc_card();
    let etc = card.as_etc().unwrap();
    assert_eq!(etc.card_number(), demo::DEMO_ETC_CARD_NUMBER);
    assert_eq!(etc.plate().as_deref(), Some("陕A12345"));
    let info = etc.issue_info();
    assert_eq!(&info[0..8], h("C9C2CEF761010001"));
    assert_eq!(info[8], 0x16);
    assert_eq!(&info[41..43], [0, 0], "blue");
    assert_eq!(card.atr(), ETC_ATR);
}

#[test]
fn long_0015_keeps_the_extra_bytes() {
    let spec = EtcCardSpec {
        long_0015: true,
        extra_0015: [1, 2, 3, 4, 5, 6, 7],
        ..demo::demo_etc_spec()
    };
    let mut card: SimCard = EtcCard::issue(&spec, &demo_masters()).unwrap().into();
    select_adf(&mut card);
    let (data, s) = tx(&mut card, "00B0950032");
    assert_eq!(s, 0x9000);
    assert_eq!(data.len(), 50);
    assert_eq!(&data[43..], [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        sw(&mut card, "00B095002C"),
        0x9000,
        "a shorter Le reads a prefix"
    );
}

#[test]
fn issue_rejects_bad_specs() {
    let masters = demo_masters();
    let bad = EtcCardSpec {
        internal_number: "12".into(),
        ..demo::demo_etc_spec()
    };
    assert!(EtcCard::issue(&bad, &masters).is_err());
    let long_plate = EtcCardSpec {
        plate_gbk: vec![b'A'; 13],
        ..demo::demo_etc_spec()
    };
    assert!(EtcCard::issue(&long_plate, &masters)
        .unwrap_err()
        .to_string()
        .contains("plate_gbk"));
    let sm4_card = EtcCardSpec {
        version: 0x50,
        ..demo::demo_etc_spec()
    };
    let err = EtcCard::issue(&sm4_card, &masters).unwrap_err();
    assert!(err.to_string().contains("sm4"), "{err}");
}

#[test]
fn read_record_of_log_and_composite_record() {
    let mut card = demo_etc_card();
    select_adf(&mut card);
    assert_eq!(sw(&mut card, "00B201C417"), 0x6A83, "empty log");
    let (rec, s) = tx(&mut card, "00B2AACC2B");
    assert_eq!(s, 0x9000);
    assert_eq!(rec[..3], [0xAA, 0x29, 0x00]);
    assert_eq!(tx(&mut card, "00B201CC00"), (rec.clone(), 0x9000));
    assert_eq!(sw(&mut card, "00B202CC2B"), 0x6A83);
    assert_eq!(sw(&mut card, "00B2AACC2C"), 0x6C2B);
    assert_eq!(tx(&mut card, "00B2AACC03").0, [0xAA, 0x29, 0x00]);
    assert_eq!(
        sw(&mut card, "00B201C517"),
        0x6A86,
        "P2 low bits must be 100"
    );
    assert_eq!(sw(&mut card, "00B201A417"), 0x6A82, "no SFI 0x14");
    assert_eq!(sw(&mut card, "00B201AC17"), 0x6981, "0015 is binary");
    assert_eq!(
        tx(&mut card, "00B2010417"),
        (rec[..23].to_vec(), 0x9000),
        "SFI 0: the current EF (0019)"
    );
}

#[test]
fn pin_tries_and_blocking() {
    let mut card = demo_etc_card();
    select_adf(&mut card);
    assert_eq!(sw(&mut card, "0020000006313233343537"), 0x63C2);
    assert_eq!(
        sw(&mut card, "0020000006313233343536"),
        0x9000,
        "right PIN resets the counter"
    );
    assert_eq!(card.as_etc().unwrap().pin_tries_left(), 3);
    assert_eq!(
        sw(&mut card, "0020000003123456"),
        0x63C2,
        "the ETC PIN is ASCII, not BCD"
    );
    assert_eq!(sw(&mut card, "0020000006000000000000"), 0x63C1);
    assert_eq!(sw(&mut card, "0020000006000000000000"), 0x63C0);
    assert_eq!(
        sw(&mut card, "0020000006313233343536"),
        0x6983,
        "blocked even with the right PIN"
    );
    assert_eq!(card.as_etc().unwrap().pin_tries_left(), 0);
    assert_eq!(sw(&mut card, "0020000000"), 0x6700);
    assert_eq!(sw(&mut card, "0020000106313233343536"), 0x6A86);
    let init = init_apdu(0x00, 0x01, 100, 0x10);
    assert_eq!(send(&mut card, &init).1, 0x6982, "no load without the PIN");
}

#[test]
fn city_pin_is_bcd() {
    let mut card = demo_city_card();
    select_adf(&mut card);
    assert_eq!(sw(&mut card, "0020000006313233343536"), 0x63C2);
    assert_eq!(sw(&mut card, "0020000003123456"), 0x9000);
    assert_eq!(card.as_city().unwrap().pin_tries_left(), 3);
}

#[test]
fn get_challenge_lengths() {
    let mut card = demo_etc_card();
    let (c4, s) = tx(&mut card, "0084000004");
    assert_eq!((c4.len(), s), (4, 0x9000));
    let (c8, s) = tx(&mut card, "0084000008");
    assert_eq!((c8.len(), s), (8, 0x9000));
    assert_ne!(c4, c8[..4]);
    assert_eq!(sw(&mut card, "0084000010"), 0x6700);
    assert_eq!(sw(&mut card, "00840000"), 0x6700);
    assert_eq!(sw(&mut card, "0084010004"), 0x6A86);
}

#[test]
fn secure_messaging_update_of_0015() {
    let mut card = demo_etc_card();
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &demo_masters());
    select_adf(&mut card);
    let new_expiry = h("20361231");
    assert_eq!(
        send(
            &mut card,
            &sm_update_apdu(keys.alg, &keys.damk, [0; 4], 0x95, 24, &new_expiry)
        )
        .1,
        0x6985,
        "no challenge"
    );
    let c = challenge(&mut card);
    let wrong = sm_update_apdu(keys.alg, &keys.dlk, c, 0x95, 24, &new_expiry);
    assert_eq!(send(&mut card, &wrong).1, 0x6988, "MAC under the wrong key");
    assert_eq!(
        &card.as_etc().unwrap().issue_info()[24..28],
        h("20340101"),
        "nothing written"
    );
    let c2 = challenge(&mut card);
    let good = sm_update_apdu(keys.alg, &keys.damk, c2, 0x95, 24, &new_expiry);
    assert_eq!(send(&mut card, &good).1, 0x9000);
    assert_eq!(
        &card.as_etc().unwrap().issue_info()[24..28],
        new_expiry.as_slice()
    );
    assert_eq!(
        send(&mut card, &good).1,
        0x6985,
        "the challenge is used once"
    );
    let c3 = challenge(&mut card);
    let past_end = sm_update_apdu(keys.alg, &keys.damk, c3, 0x95, 42, &[1, 2]);
    assert_eq!(
        send(&mut card, &past_end).1,
        0x6700,
        "data past the end of the file"
    );
    assert_eq!(
        sw(&mut card, "00D6951804 20361231"),
        0x6982,
        "plain UPDATE BINARY"
    );
    let c4 = challenge(&mut card);
    let log = sm_update_apdu(keys.alg, &keys.damk, c4, 0x98, 0, &[1]);
    assert_eq!(send(&mut card, &log).1, 0x6982, "the log is not updatable");
}

#[test]
fn get_balance_rules() {
    let mut card = demo_etc_card();
    assert_eq!(sw(&mut card, "805C000204"), 0x6985, "ADF not selected");
    select_adf(&mut card);
    assert_eq!(tx(&mut card, "805C000204"), (h("00002710"), 0x9000));
    assert_eq!(sw(&mut card, "805C000104"), 0x6A81, "ED");
    assert_eq!(sw(&mut card, "805C000304"), 0x6A86);
    assert_eq!(sw(&mut card, "805C010204"), 0x6A86);
    assert_eq!(
        sw(&mut card, "005C000204"),
        0x6E00,
        "purse command under CLA 00"
    );
}

#[test]
fn unknown_class_instruction_and_lengths() {
    let mut card = demo_etc_card();
    assert_eq!(sw(&mut card, "FFA40000023F00"), 0x6E00);
    assert_eq!(sw(&mut card, "00EE000000"), 0x6D00);
    assert_eq!(sw(&mut card, "80EE0000"), 0x6D00);
    assert_eq!(sw(&mut card, "00A4"), 0x6700);
    assert_eq!(sw(&mut card, ""), 0x6700);
    assert_eq!(
        sw(&mut card, "00A40000053F00"),
        0x6700,
        "Lc says 5, 2 bytes follow"
    );
    assert_eq!(
        sw(&mut card, "00C0000010"),
        0x6D00,
        "no GET RESPONSE on the card itself (T=0 is the reader's)"
    );
}

#[test]
fn initialize_checks() {
    let mut card = demo_etc_card();
    select_adf(&mut card);
    verify_pin(&mut card);
    assert_eq!(
        send(&mut card, &init_apdu(0x00, 0x41, 100, 0x10)).1,
        0x9403,
        "SM4 key index on a 3DES card"
    );
    assert_eq!(
        send(&mut card, &init_apdu(0x02, 0x01, 100, 0x10)).1,
        0x6A86,
        "P1 02"
    );
    assert_eq!(
        sw(&mut card, "8050000109 01 00000064 112233445566 10"),
        0x6700
    );
    let mut ed = init_apdu(0x00, 0x01, 100, 0x10);
    ed[3] = 0x01;
    assert_eq!(send(&mut card, &ed).1, 0x6A81);
    let mut city = demo_city_card();
    select_adf(&mut city);
    assert_eq!(
        send(&mut city, &init_apdu(0x03, 0x01, 100, 0x0F)).1,
        0x6A86,
        "no composite on a city card"
    );
}

#[test]
fn counters_at_maximum() {
    let mut card = demo_etc_card();
    card.purse_mut().unwrap().set_online_atc(0xFFFF);
    card.purse_mut().unwrap().set_offline_atc(0xFFFF);
    select_adf(&mut card);
    verify_pin(&mut card);
    assert_eq!(send(&mut card, &init_apdu(0x00, 0x01, 100, 0x10)).1, 0x9402);
    assert_eq!(send(&mut card, &init_apdu(0x01, 0x01, 100, 0x0F)).1, 0x9402);
}

#[test]
fn reset_forgets_selection_pin_and_session() {
    let mut card = demo_etc_card();
    select_adf(&mut card);
    verify_pin(&mut card);
    assert_eq!(send(&mut card, &init_apdu(0x00, 0x01, 100, 0x10)).1, 0x9000);
    card.reset();
    assert!(!card.purse_mut().unwrap().has_pending_session());
    assert_eq!(
        sw(&mut card, "805C000204"),
        0x6985,
        "MF selected after reset"
    );
    select_adf(&mut card);
    assert_eq!(
        send(&mut card, &init_apdu(0x00, 0x01, 100, 0x10)).1,
        0x6982,
        "PIN state gone"
    );
}

#[test]
fn selecting_resets_the_pin_state() {
    let mut card = demo_etc_card();
    select_adf(&mut card);
    verify_pin(&mut card);
    assert_eq!(sw(&mut card, "00A40000020015"), 0x9000);
    assert_eq!(send(&mut card, &init_apdu(0x00, 0x01, 100, 0x10)).1, 0x6982);
    assert_eq!(sw(&mut card, "00A40000029999"), 0x6A82);
    verify_pin(&mut card);
    assert_eq!(
        sw(&mut card, "00A40000029999"),
        0x6A82,
        "a failed SELECT changes nothing"
    );
    assert_eq!(send(&mut card, &init_apdu(0x00, 0x01, 100, 0x10)).1, 0x9000);
}
