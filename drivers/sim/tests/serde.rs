//! A card saved to JSON mid-life and restored (as in another process) goes on transacting
//! exactly where it left off.

mod common;

use cardd_sim::cards::{TX_COMPOSITE, TX_LOAD};
use cardd_sim::demo::{demo_city_card, demo_etc_card, demo_masters, demo_obu, demo_obu_masters};
use cardd_sim::SimCard;
use common::*;

fn live_etc() -> (SimCard, HostKeys) {
    let mut card = demo_etc_card();
    let keys = etc_host_keys(card.as_etc().unwrap().issue_info(), &demo_masters());
    select_adf(&mut card);
    verify_pin(&mut card);
    load(&mut card, &keys, 3_000);
    purchase(&mut card, &keys, 120, 9);
    let mut record = vec![0xAA, 0x29, 0x00];
    record.extend([7u8; 40]);
    composite_purchase(&mut card, &keys, 80, 10, &record);
    assert_eq!(
        sw(&mut card, "0020000006000000000000"),
        0x63C2,
        "one wrong PIN try is part of the state"
    );
    (card, keys)
}

#[test]
fn etc_card_round_trips_mid_life_and_continues() {
    let (mut card, keys) = live_etc();
    let json = card.to_json().unwrap();
    assert!(json.contains("\"kind\": \"etc\""), "{json}");
    assert!(json.contains("\"algorithm\": \"tdes\""));
    let mut restored = SimCard::from_json(&json).unwrap();
    assert_eq!(money_state(&restored), money_state(&card));
    assert_eq!(restored.log(), card.log());
    assert_eq!(restored.as_etc().unwrap().pin_tries_left(), 2);
    assert_eq!(
        restored.as_etc().unwrap().capp_record(),
        card.as_etc().unwrap().capp_record()
    );
    assert_eq!(restored.to_json().unwrap(), json, "stable format");

    // The restored card is freshly powered; the original is reset to match.
    card.reset();
    for apdu in [
        "00A40000021001",
        "0084000008",
        "805A000209000108",
        "805A000202000108",
        "00B201C417",
    ] {
        assert_eq!(
            tx(&mut restored, apdu),
            tx(&mut card, apdu),
            "same answer to {apdu} (RNG state included)"
        );
    }
    verify_pin(&mut restored);
    load(&mut restored, &keys, 1);
    purchase(&mut restored, &keys, 1, 11);
    assert_eq!(restored.balance(), Some(10_000 + 3_000 - 120 - 80 + 1 - 1));
    assert_eq!(
        restored
            .purse_mut()
            .unwrap()
            .proof(TX_LOAD)
            .unwrap()
            .atc_after,
        2
    );
    assert_eq!(
        restored
            .purse_mut()
            .unwrap()
            .proof(TX_COMPOSITE)
            .unwrap()
            .atc_after,
        2
    );
}

#[test]
fn a_pending_session_does_not_survive_a_round_trip() {
    let (mut card, keys) = live_etc();
    verify_pin(&mut card);
    let init = init_load(&mut card, &keys, 10);
    let mut restored = SimCard::from_json(&card.to_json().unwrap()).unwrap();
    select_adf(&mut restored);
    assert_eq!(
        send(&mut restored, &credit_apdu(host_mac2(&keys, &init, 10))).1,
        0x6985
    );
}

#[test]
fn city_and_obu_round_trip() {
    let mut city = demo_city_card();
    let keys = city_host_keys(city.as_city().unwrap().issue_info(), &demo_masters());
    select_adf(&mut city);
    load(&mut city, &keys, 10);
    let mut city2 = SimCard::from_json(&city.to_json().unwrap()).unwrap();
    select_adf(&mut city2);
    purchase(&mut city2, &keys, 10, 1);
    assert_eq!(city2.balance(), Some(5_000));

    let mut obu = demo_obu();
    let key = cardd_crypto::diversify(
        cardd_crypto::Algorithm::Tdes,
        &demo_obu_masters().system_maintenance,
        &obu.as_obu().unwrap().contract_serial(),
    );
    let c = challenge(&mut obu);
    assert_eq!(
        send(
            &mut obu,
            &sm_update_apdu(cardd_crypto::Algorithm::Tdes, &key, c, 0x81, 0x1A, &[1])
        )
        .1,
        0x9000
    );
    let mut obu2 = SimCard::from_json(&obu.to_json().unwrap()).unwrap();
    assert!(obu2.as_obu().unwrap().is_activated());
    let c = challenge(&mut obu2);
    assert_eq!(
        send(
            &mut obu2,
            &sm_update_apdu(cardd_crypto::Algorithm::Tdes, &key, c, 0x81, 0x1A, &[0])
        )
        .1,
        0x9000,
        "keys survive"
    );
    assert!(!obu2.as_obu().unwrap().is_activated());
}

#[test]
fn bad_json_is_an_error() {
    assert!(SimCard::from_json("{}").is_err());
    assert!(SimCard::from_json("{\"kind\": \"etc\"}").is_err());
    let mut json: serde_json::Value =
        serde_json::from_str(&demo_etc_card().to_json().unwrap()).unwrap();
    json["core"]["purse"]["keys"]["dlk"] = "00".into();
    assert!(SimCard::from_json(&json.to_string())
        .unwrap_err()
        .to_string()
        .contains("32 hex digits"));
}
