//! The OBU ESAM: chip id, system information, secure-messaging updates, encrypted read.

mod common;

use cardd_crypto::{Algorithm, Key16};
use cardd_sim::cards::{
    encrypted_read_plaintext, ObuEsam, ObuMasters, OBU_ATR, TAMPER_FLAG_OFFSET,
};
use cardd_sim::demo::{self, demo_obu, demo_obu_masters, demo_obu_masters_sm4, demo_obu_spec};
use cardd_sim::{SimCard, VehicleInfo};
use common::*;

fn serial() -> [u8; 8] {
    h(demo::DEMO_OBU_CONTRACT_SERIAL).try_into().unwrap()
}

fn host_key(alg: Algorithm, master: &Key16) -> Key16 {
    cardd_crypto::diversify(alg, master, &serial())
}

#[test]
fn chip_id_and_system_information() {
    let mut obu = demo_obu();
    assert_eq!(obu.atr(), OBU_ATR);
    assert_eq!(
        tx(&mut obu, "80F6000304"),
        (demo::DEMO_OBU_CHIP_ID.to_vec(), 0x9000)
    );
    assert_eq!(sw(&mut obu, "80F6000004"), 0x6A86);
    let (info, s) = tx(&mut obu, "00B081001B");
    assert_eq!(s, 0x9000);
    assert_eq!(info.len(), 27);
    assert_eq!(&info[0..8], h("C9C2CEF7C9C2CEF7"));
    assert_eq!(&info[10..18], serial());
    assert_eq!(info[TAMPER_FLAG_OFFSET], 0x00, "not activated");
    assert_eq!(sw(&mut obu, "00B081002B"), 0x6C1B);
    assert_eq!(sw(&mut obu, "00A4000002DF01"), 0x9000);
    assert_eq!(
        sw(&mut obu, "00B081003B"),
        0x6982,
        "the vehicle file is read encrypted only"
    );
    assert_eq!(sw(&mut obu, "00A4000002EF01"), 0x9000);
    assert_eq!(sw(&mut obu, "00B0000010"), 0x6982);
    assert_eq!(sw(&mut obu, "00A40000023F00"), 0x9000);
    assert_eq!(sw(&mut obu, "00A4000002EF02"), 0x6A82);
    assert_eq!(sw(&mut obu, "805C000204"), 0x6D00, "no purse on an ESAM");
    assert_eq!(
        sw(&mut obu, "0020000003123456"),
        0x6D00,
        "no PIN on an ESAM"
    );
}

#[test]
fn activation_writes_the_tamper_flag_with_the_system_maintenance_key() {
    let mut obu = demo_obu();
    let masters = demo_obu_masters();
    let key = host_key(Algorithm::Tdes, &masters.system_maintenance);
    let activate = |c: [u8; 4]| sm_update_apdu(Algorithm::Tdes, &key, c, 0x81, 0x1A, &[0x01]);
    assert_eq!(send(&mut obu, &activate([0; 4])).1, 0x6985, "no challenge");
    let c = challenge(&mut obu);
    let wrong_key = host_key(Algorithm::Tdes, &masters.app_maintenance);
    let bad = sm_update_apdu(Algorithm::Tdes, &wrong_key, c, 0x81, 0x1A, &[0x01]);
    assert_eq!(send(&mut obu, &bad).1, 0x6988);
    assert!(!obu.as_obu().unwrap().is_activated(), "nothing written");
    assert_eq!(
        send(&mut obu, &activate(c)).1,
        0x6985,
        "the challenge was spent by the bad MAC"
    );
    let c = challenge(&mut obu);
    assert_eq!(send(&mut obu, &activate(c)).1, 0x9000);
    assert!(obu.as_obu().unwrap().is_activated());
    assert_eq!(tx(&mut obu, "00B0811A01"), (vec![0x01], 0x9000));
    assert_eq!(sw(&mut obu, "00D6811A0101"), 0x6982, "plain update");
}

#[test]
fn vehicle_file_update_needs_the_application_maintenance_key() {
    let mut obu = demo_obu();
    let masters = demo_obu_masters();
    let app_key = host_key(Algorithm::Tdes, &masters.app_maintenance);
    let mut vehicle = VehicleInfo::parse(obu.as_obu().unwrap().vehicle_info()).unwrap();
    vehicle.axles = 3;
    vehicle.plate_gbk = cardd_crypto::gbk::encode_padded("甘A99999").unwrap();
    let bytes = vehicle.to_bytes();
    assert_eq!(sw(&mut obu, "00A4000002DF01"), 0x9000);
    let c = challenge(&mut obu);
    let sys_key = host_key(Algorithm::Tdes, &masters.system_maintenance);
    assert_eq!(
        send(
            &mut obu,
            &sm_update_apdu(Algorithm::Tdes, &sys_key, c, 0x81, 0x00, &bytes)
        )
        .1,
        0x6988
    );
    let c = challenge(&mut obu);
    assert_eq!(
        send(
            &mut obu,
            &sm_update_apdu(Algorithm::Tdes, &app_key, c, 0x81, 0x00, &bytes)
        )
        .1,
        0x9000
    );
    let stored = VehicleInfo::parse(obu.as_obu().unwrap().vehicle_info()).unwrap();
    assert_eq!(stored, vehicle);
    assert_eq!(stored.plate().as_deref(), Some("甘A99999"));
}

fn check_encrypted_read(
    mut obu: SimCard,
    masters: &ObuMasters,
    alg: Algorithm,
    expected_len: usize,
) {
    assert_eq!(
        sw(&mut obu, "00B400000A 0102030405060708 2040"),
        0x6985,
        "DF01 not selected"
    );
    assert_eq!(sw(&mut obu, "00A4000002DF01"), 0x9000);
    let random = [1, 2, 3, 4, 5, 6, 7, 8];
    let (cipher, s) = tx(&mut obu, "00B400000A 0102030405060708 2040");
    assert_eq!(s, 0x9000);
    assert_eq!(cipher.len(), expected_len);
    let key = host_key(alg, &masters.app_encryption);
    let plain = cardd_crypto::ecb_decrypt(alg, &key, &cipher).unwrap();
    let file = obu.as_obu().unwrap().vehicle_info().to_vec();
    assert_eq!(plain, encrypted_read_plaintext(alg, random, &file));
    let offset = if matches!(alg, Algorithm::Sm4) { 17 } else { 9 };
    assert_eq!(&plain[..8], random);
    assert_eq!(plain[offset - 1], 59);
    assert_eq!(
        &plain[offset..offset + 59],
        file.as_slice(),
        "decrypts to the file"
    );
    assert_eq!(plain[offset + 59], 0x80);
    assert_eq!(
        sw(&mut obu, "00B4000009 010203040506070820"),
        0x6700,
        "Lc must be 10"
    );
    assert_eq!(sw(&mut obu, "00B401000A 0102030405060708 2040"), 0x6A86);
}

#[test]
fn encrypted_read_3des() {
    check_encrypted_read(demo_obu(), &demo_obu_masters(), Algorithm::Tdes, 72);
}

#[test]
fn encrypted_read_sm4() {
    let spec = cardd_sim::ObuSpec {
        contract_version: 0x52,
        ..demo_obu_spec()
    };
    let obu: SimCard = ObuEsam::issue(&spec, &demo_obu_masters_sm4())
        .unwrap()
        .into();
    assert!(matches!(obu.as_obu().unwrap().algorithm(), Algorithm::Sm4));
    check_encrypted_read(obu, &demo_obu_masters_sm4(), Algorithm::Sm4, 80);
}

#[test]
fn sm4_contract_needs_sm4_masters() {
    let spec = cardd_sim::ObuSpec {
        contract_version: 0x52,
        ..demo_obu_spec()
    };
    assert!(ObuEsam::issue(&spec, &demo_obu_masters()).is_err());
}
