//! Host-side helpers for the simulator's tests: raw APDU exchange and the issuer's half of
//! loads and purchases, computed with `cardd-crypto` directly (never with simulator code), so a
//! test passing means the card and an independent host agree.
#![allow(dead_code)]

use cardd_crypto::{mac_input, Algorithm, Key16};
use cardd_sim::cards::{IssuerMasters, TX_COMPOSITE, TX_LOAD, TX_PURCHASE};
use cardd_sim::SimCard;

/// The terminal id used by the tests.
pub const TERMINAL: [u8; 6] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
/// BCD 2024-01-02.
pub const DATE: [u8; 4] = [0x20, 0x24, 0x01, 0x02];
/// BCD 03:04:05.
pub const TIME: [u8; 3] = [0x03, 0x04, 0x05];

/// Bytes from hex (spaces allowed).
pub fn h(text: &str) -> Vec<u8> {
    hex::decode(text.replace(' ', "")).expect("test hex")
}

/// Sends raw bytes; returns (data, SW).
pub fn send(card: &mut SimCard, apdu: &[u8]) -> (Vec<u8>, u16) {
    let r = card.process(apdu);
    assert!(r.len() >= 2, "response shorter than a status word");
    let (data, sw) = r.split_at(r.len() - 2);
    (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

/// Sends hex; returns (data, SW).
pub fn tx(card: &mut SimCard, apdu: &str) -> (Vec<u8>, u16) {
    send(card, &h(apdu))
}

/// Sends hex and returns only the SW.
pub fn sw(card: &mut SimCard, apdu: &str) -> u16 {
    tx(card, apdu).1
}

pub fn select_adf(card: &mut SimCard) {
    assert_eq!(sw(card, "00A40000021001"), 0x9000);
}

pub fn verify_pin(card: &mut SimCard) {
    assert_eq!(sw(card, "0020000006313233343536"), 0x9000);
}

/// The host's view of a card's keys: derived from the masters and the card's own `0015`.
pub struct HostKeys {
    pub alg: Algorithm,
    pub dlk: Key16,
    pub dpk: Key16,
    pub dtk: Key16,
    pub damk: Key16,
}

/// Keys of an ETC card (two-level unless `masters.two_level` is false), from its `0015`.
pub fn etc_host_keys(issue_info: &[u8], masters: &IssuerMasters) -> HostKeys {
    let issuer: [u8; 4] = issue_info[0..4].try_into().unwrap();
    let card: [u8; 8] = issue_info[12..20].try_into().unwrap();
    let alg = masters.algorithm;
    let div = |m: &Key16| {
        if masters.two_level {
            cardd_crypto::diversify_two_level(alg, m, &issuer, &card)
        } else {
            cardd_crypto::diversify(alg, m, &card)
        }
    };
    HostKeys {
        alg,
        dlk: div(&masters.load),
        dpk: div(&masters.purchase),
        dtk: div(&masters.tac),
        damk: div(&masters.maintenance),
    }
}

/// Keys of a city card (one level by the serial's last 8 bytes).
pub fn city_host_keys(issue_info: &[u8], masters: &IssuerMasters) -> HostKeys {
    let card: [u8; 8] = issue_info[12..20].try_into().unwrap();
    let alg = masters.algorithm;
    let div = |m: &Key16| cardd_crypto::diversify(alg, m, &card);
    HostKeys {
        alg,
        dlk: div(&masters.load),
        dpk: div(&masters.purchase),
        dtk: div(&masters.tac),
        damk: div(&masters.maintenance),
    }
}

pub fn key_index(alg: Algorithm) -> u8 {
    match alg {
        Algorithm::Tdes => 0x01,
        Algorithm::Sm4 => 0x41,
    }
}

/// INITIALIZE FOR LOAD / PURCHASE command bytes.
pub fn init_apdu(p1: u8, key_index: u8, amount: u32, le: u8) -> Vec<u8> {
    let mut a = vec![0x80, 0x50, p1, 0x02, 0x0B, key_index];
    a.extend_from_slice(&amount.to_be_bytes());
    a.extend_from_slice(&TERMINAL);
    a.push(le);
    a
}

/// The parsed INITIALIZE FOR LOAD response.
#[derive(Debug, Clone)]
pub struct LoadInit {
    pub balance: u32,
    pub atc: u16,
    pub key_version: u8,
    pub alg_id: u8,
    pub random: [u8; 4],
    pub mac1: [u8; 4],
}

pub fn parse_load_init(data: &[u8]) -> LoadInit {
    assert_eq!(data.len(), 16, "INITIALIZE FOR LOAD answers 16 bytes");
    LoadInit {
        balance: u32::from_be_bytes(data[0..4].try_into().unwrap()),
        atc: u16::from_be_bytes(data[4..6].try_into().unwrap()),
        key_version: data[6],
        alg_id: data[7],
        random: data[8..12].try_into().unwrap(),
        mac1: data[12..16].try_into().unwrap(),
    }
}

/// The host's MAC2 for a load.
pub fn host_mac2(keys: &HostKeys, init: &LoadInit, amount: u32) -> [u8; 4] {
    let ses = cardd_crypto::load_session_key(keys.alg, &keys.dlk, init.random, init.atc);
    cardd_crypto::purse_mac(
        &ses,
        &mac_input::load_mac2(amount, TX_LOAD, &TERMINAL, &DATE, &TIME),
    )
}

/// CREDIT FOR LOAD bytes.
pub fn credit_apdu(mac2: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0x80, 0x52, 0x00, 0x00, 0x0B];
    a.extend_from_slice(&DATE);
    a.extend_from_slice(&TIME);
    a.extend_from_slice(&mac2);
    a.push(0x04);
    a
}

/// INITIALIZE FOR LOAD with MAC1 checked by the host.
pub fn init_load(card: &mut SimCard, keys: &HostKeys, amount: u32) -> LoadInit {
    let (data, sw) = send(card, &init_apdu(0x00, key_index(keys.alg), amount, 0x10));
    assert_eq!(sw, 0x9000, "INITIALIZE FOR LOAD");
    let init = parse_load_init(&data);
    let ses = cardd_crypto::load_session_key(keys.alg, &keys.dlk, init.random, init.atc);
    let mac1 = cardd_crypto::purse_mac(
        &ses,
        &mac_input::load_mac1(init.balance, amount, TX_LOAD, &TERMINAL),
    );
    assert_eq!(init.mac1, mac1, "the card's MAC1 verifies on the host");
    init
}

/// A whole load (ADF selected and PIN verified by the caller when needed); returns the TAC,
/// already verified against the host's computation.
pub fn load(card: &mut SimCard, keys: &HostKeys, amount: u32) -> [u8; 4] {
    let init = init_load(card, keys, amount);
    let (tac, sw) = send(card, &credit_apdu(host_mac2(keys, &init, amount)));
    assert_eq!(sw, 0x9000, "CREDIT FOR LOAD");
    let new_balance = init.balance + amount;
    let tac_input = mac_input::load_tac(
        new_balance,
        init.atc,
        amount,
        TX_LOAD,
        &TERMINAL,
        &DATE,
        &TIME,
    );
    let expected = cardd_crypto::purse_mac(&cardd_crypto::tac_key(keys.alg, &keys.dtk), &tac_input);
    assert_eq!(tac, expected, "the load TAC verifies on the host");
    expected
}

/// The parsed INITIALIZE FOR PURCHASE response.
#[derive(Debug, Clone)]
pub struct PurchaseInit {
    pub balance: u32,
    pub atc: u16,
    pub random: [u8; 4],
}

/// INITIALIZE FOR PURCHASE (or composite with `composite`).
pub fn init_purchase(
    card: &mut SimCard,
    keys: &HostKeys,
    amount: u32,
    composite: bool,
) -> PurchaseInit {
    let p1 = if composite { 0x03 } else { 0x01 };
    let (data, sw) = send(card, &init_apdu(p1, key_index(keys.alg), amount, 0x0F));
    assert_eq!(sw, 0x9000, "INITIALIZE FOR PURCHASE");
    assert_eq!(data.len(), 15);
    assert_eq!(&data[6..9], [0, 0, 0], "no overdraft");
    PurchaseInit {
        balance: u32::from_be_bytes(data[0..4].try_into().unwrap()),
        atc: u16::from_be_bytes(data[4..6].try_into().unwrap()),
        random: data[11..15].try_into().unwrap(),
    }
}

/// DEBIT FOR PURCHASE bytes with the terminal's MAC1.
pub fn debit_apdu(
    keys: &HostKeys,
    init: &PurchaseInit,
    amount: u32,
    tx_type: u8,
    seq: u32,
) -> Vec<u8> {
    let ses = cardd_crypto::purchase_session_key(keys.alg, &keys.dpk, init.random, init.atc, seq);
    let mac1 = cardd_crypto::purse_mac(
        &ses,
        &mac_input::purchase_mac1(amount, tx_type, &TERMINAL, &DATE, &TIME),
    );
    let mut a = vec![0x80, 0x54, 0x01, 0x00, 0x0F];
    a.extend_from_slice(&seq.to_be_bytes());
    a.extend_from_slice(&DATE);
    a.extend_from_slice(&TIME);
    a.extend_from_slice(&mac1);
    a.push(0x08);
    a
}

/// Checks a DEBIT response (TAC ‖ MAC2) against the host; returns (TAC, MAC2).
pub fn check_debit(
    keys: &HostKeys,
    init: &PurchaseInit,
    amount: u32,
    tx_type: u8,
    seq: u32,
    data: &[u8],
) -> ([u8; 4], [u8; 4]) {
    assert_eq!(data.len(), 8);
    let ses = cardd_crypto::purchase_session_key(keys.alg, &keys.dpk, init.random, init.atc, seq);
    let mac2 = cardd_crypto::purse_mac(&ses, &mac_input::purchase_mac2(amount));
    let tac_input = mac_input::purchase_tac(amount, tx_type, &TERMINAL, seq, &DATE, &TIME);
    let tac = cardd_crypto::purse_mac(&cardd_crypto::tac_key(keys.alg, &keys.dtk), &tac_input);
    assert_eq!(&data[0..4], tac, "purchase TAC");
    assert_eq!(&data[4..8], mac2, "purchase MAC2");
    (tac, mac2)
}

/// A whole purchase (ADF selected by the caller); returns (TAC, MAC2).
pub fn purchase(card: &mut SimCard, keys: &HostKeys, amount: u32, seq: u32) -> ([u8; 4], [u8; 4]) {
    let init = init_purchase(card, keys, amount, false);
    let (data, sw) = send(card, &debit_apdu(keys, &init, amount, TX_PURCHASE, seq));
    assert_eq!(sw, 0x9000, "DEBIT FOR PURCHASE");
    check_debit(keys, &init, amount, TX_PURCHASE, seq, &data)
}

/// A composite purchase writing `record` (43 bytes) to `0019`.
pub fn composite_purchase(
    card: &mut SimCard,
    keys: &HostKeys,
    amount: u32,
    seq: u32,
    record: &[u8],
) -> ([u8; 4], [u8; 4]) {
    let init = init_purchase(card, keys, amount, true);
    let mut update = vec![0x80, 0xDC, 0xAA, 0xC8, 0x2B];
    update.extend_from_slice(record);
    assert_eq!(send(card, &update).1, 0x9000, "UPDATE CAPP DATA CACHE");
    let (data, sw) = send(card, &debit_apdu(keys, &init, amount, TX_COMPOSITE, seq));
    assert_eq!(sw, 0x9000, "composite DEBIT");
    check_debit(keys, &init, amount, TX_COMPOSITE, seq, &data)
}

/// GET TRANSACTION PROVE bytes.
pub fn prove_apdu(tx_type: u8, atc: u16) -> Vec<u8> {
    let mut a = vec![0x80, 0x5A, 0x00, tx_type, 0x02];
    a.extend_from_slice(&atc.to_be_bytes());
    a.push(0x08);
    a
}

/// A secure-messaging UPDATE BINARY with the MAC under `key` and `challenge`.
pub fn sm_update_apdu(
    alg: Algorithm,
    key: &Key16,
    challenge: [u8; 4],
    p1: u8,
    p2: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut a = vec![0x04, 0xD6, p1, p2, (data.len() + 4) as u8];
    a.extend_from_slice(data);
    let mac = cardd_crypto::secure_messaging_mac(alg, key, challenge, &a);
    a.extend_from_slice(&mac);
    a
}

/// GET CHALLENGE (4 bytes).
pub fn challenge(card: &mut SimCard) -> [u8; 4] {
    let (data, sw) = tx(card, "0084000004");
    assert_eq!(sw, 0x9000);
    data.try_into().unwrap()
}

/// A snapshot of everything money-related, to prove "nothing changed".
pub fn money_state(card: &SimCard) -> (Option<u32>, Option<u16>, Option<u16>, usize) {
    (
        card.balance(),
        card.online_atc(),
        card.offline_atc(),
        card.log().len(),
    )
}
