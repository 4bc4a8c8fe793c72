//! The demo cards: fixed, documented identities personalised from `cardd_crypto::demo`.
//!
//! The daemon's embedded default configuration puts these cards in simulated readers and its
//! seeded host data refers to them by number and plate, so a newcomer can load money without
//! any hardware or secret. Changing an identity here is a breaking change for that data.
//!
//! | Card | Number | Plate | Balance | Algorithm |
//! |---|---|---|---|---|
//! | [`demo_etc_card`] | `61011801000000000001` | 陕A12345 blue | 100.00 yuan | 3DES, version `0x40`, two-level keys |
//! | [`demo_etc_card_sm4`] | `61011801000000000002` | 陕AD12345 green | 100.00 yuan | SM4, version `0x50`, two-level keys |
//! | [`demo_city_card`] | `61010000000000000001` | — | 50.00 yuan | 3DES, one-level keys |
//! | [`demo_obu`] | contract serial `6101180100000001`, chip id `0A0B0C0D` | 陕A12345 blue | — | 3DES, not activated |

use cardd_crypto::{demo, Algorithm, Key16};

use crate::cards::{
    key_from_hex, CityCard, CityCardSpec, EtcCard, EtcCardSpec, IssuerMasters, ObuEsam, ObuMasters,
    ObuSpec, SimCard, VehicleInfo,
};
use cardd_crypto::gbk;

/// Card number of [`demo_etc_card`].
pub const DEMO_ETC_CARD_NUMBER: &str = "61011801000000000001";
/// Plate of [`demo_etc_card`] and of the vehicle in [`demo_obu`].
pub const DEMO_ETC_PLATE: &str = "陕A12345";
/// Card number of [`demo_etc_card_sm4`].
pub const DEMO_ETC_SM4_CARD_NUMBER: &str = "61011801000000000002";
/// Plate of [`demo_etc_card_sm4`].
pub const DEMO_ETC_SM4_PLATE: &str = "陕AD12345";
/// Card number of [`demo_city_card`].
pub const DEMO_CITY_CARD_NUMBER: &str = "61010000000000000001";
/// Contract serial (OBU number) of [`demo_obu`].
pub const DEMO_OBU_CONTRACT_SERIAL: &str = "6101180100000001";
/// Chip id of [`demo_obu`].
pub const DEMO_OBU_CHIP_ID: [u8; 4] = [0x0A, 0x0B, 0x0C, 0x0D];
/// Opening balance of both demo ETC cards: 100.00 yuan.
pub const DEMO_ETC_BALANCE_FEN: u32 = 10_000;
/// Opening balance of the demo city card: 50.00 yuan.
pub const DEMO_CITY_BALANCE_FEN: u32 = 5_000;

fn demo_key(hex: &str) -> Key16 {
    key_from_hex(hex).expect("cardd_crypto::demo keys are 32 hex digits")
}

/// The demo issuer masters for 3DES cards (two-level ETC diversification).
pub fn demo_masters() -> IssuerMasters {
    IssuerMasters {
        algorithm: Algorithm::Tdes,
        load: demo_key(demo::MASTER_LOAD_KEY),
        purchase: demo_key(demo::MASTER_PURCHASE_KEY),
        tac: demo_key(demo::MASTER_TAC_KEY),
        maintenance: demo_key(demo::MASTER_MAINTENANCE_KEY),
        two_level: true,
    }
}

/// The same masters used as SM4 keys, for SM4 cards.
pub fn demo_masters_sm4() -> IssuerMasters {
    IssuerMasters {
        algorithm: Algorithm::Sm4,
        ..demo_masters()
    }
}

/// The demo OBU masters (3DES).
pub fn demo_obu_masters() -> ObuMasters {
    ObuMasters {
        algorithm: Algorithm::Tdes,
        system_maintenance: demo_key(demo::OBU_SYSTEM_MAINTENANCE_KEY),
        app_maintenance: demo_key(demo::OBU_APP_MAINTENANCE_KEY),
        app_encryption: demo_key(demo::OBU_APP_ENCRYPTION_KEY),
    }
}

/// The same OBU masters used as SM4 keys.
pub fn demo_obu_masters_sm4() -> ObuMasters {
    ObuMasters {
        algorithm: Algorithm::Sm4,
        ..demo_obu_masters()
    }
}

/// The spec of [`demo_etc_card`], for tests that vary one field.
pub fn demo_etc_spec() -> EtcCardSpec {
    EtcCardSpec {
        internal_number: "1801000000000001".into(),
        plate_gbk: gbk::encode(DEMO_ETC_PLATE).unwrap_or_default(),
        plate_colour: 0,
        holder_name_gbk: gbk::encode("张三").unwrap_or_default(),
        holder_id_number: "610100199001011234".into(),
        balance_fen: DEMO_ETC_BALANCE_FEN,
        ..EtcCardSpec::default()
    }
}

/// The spec of [`demo_etc_card_sm4`].
pub fn demo_etc_sm4_spec() -> EtcCardSpec {
    EtcCardSpec {
        version: 0x50,
        internal_number: "1801000000000002".into(),
        plate_gbk: gbk::encode(DEMO_ETC_SM4_PLATE).unwrap_or_default(),
        plate_colour: 11,
        holder_name_gbk: gbk::encode("李四").unwrap_or_default(),
        holder_id_number: "610100199202021234".into(),
        ..demo_etc_spec()
    }
}

/// The spec of [`demo_city_card`].
pub fn demo_city_spec() -> CityCardSpec {
    CityCardSpec {
        app_serial: DEMO_CITY_CARD_NUMBER.into(),
        balance_fen: DEMO_CITY_BALANCE_FEN,
        ..CityCardSpec::default()
    }
}

/// The spec of [`demo_obu`].
pub fn demo_obu_spec() -> ObuSpec {
    let mut serial = [0u8; 8];
    hex::decode_to_slice(DEMO_OBU_CONTRACT_SERIAL, &mut serial).unwrap_or_default();
    ObuSpec {
        chip_id: DEMO_OBU_CHIP_ID,
        contract_provider: gbk::encode_padded("陕西陕西").unwrap_or_default(),
        contract_type: 0x01,
        contract_version: 0x10,
        contract_serial: serial,
        signed_date: [0x20, 0x24, 0x01, 0x01],
        expiry_date: [0x20, 0x34, 0x01, 0x01],
        tamper_flag: 0x00,
        vehicle: VehicleInfo {
            plate_gbk: gbk::encode_padded(DEMO_ETC_PLATE).unwrap_or_default(),
            plate_colour: 0,
            vehicle_class: 1,
            vehicle_user_type: 0,
            length_mm: 4800,
            width_mm: 1800,
            height_mm: 1500,
            wheels: 4,
            axles: 2,
            wheelbase_mm: 2800,
            load_kg_or_seats: 5,
            description_gbk: gbk::encode_padded("小型轿车").unwrap_or_default(),
            engine_number: *b"ENG0000000001\0",
        },
        rng_seed: None,
    }
}

/// The demo 3DES ETC card: `61011801000000000001`, 陕A12345 blue, 100.00 yuan.
pub fn demo_etc_card() -> SimCard {
    EtcCard::issue(&demo_etc_spec(), &demo_masters())
        .expect("the demo ETC spec is valid")
        .into()
}

/// The demo SM4 ETC card: `61011801000000000002`, 陕AD12345 green, 100.00 yuan.
pub fn demo_etc_card_sm4() -> SimCard {
    EtcCard::issue(&demo_etc_sm4_spec(), &demo_masters_sm4())
        .expect("the demo SM4 ETC spec is valid")
        .into()
}

/// The demo city card: `61010000000000000001`, 50.00 yuan.
pub fn demo_city_card() -> SimCard {
    CityCard::issue(&demo_city_spec(), &demo_masters())
        .expect("the demo city spec is valid")
        .into()
}

/// The demo OBU ESAM: contract serial `6101180100000001`, vehicle 陕A12345, not activated.
pub fn demo_obu() -> SimCard {
    ObuEsam::issue(&demo_obu_spec(), &demo_obu_masters())
        .expect("the demo OBU spec is valid")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_identities_are_as_documented() {
        let etc = demo_etc_card();
        assert_eq!(etc.card_number(), DEMO_ETC_CARD_NUMBER);
        assert_eq!(
            etc.as_etc().and_then(|c| c.plate()).as_deref(),
            Some(DEMO_ETC_PLATE)
        );
        assert_eq!(etc.balance(), Some(10_000));
        let sm4 = demo_etc_card_sm4();
        assert_eq!(sm4.card_number(), DEMO_ETC_SM4_CARD_NUMBER);
        assert_eq!(
            sm4.as_etc().and_then(|c| c.plate()).as_deref(),
            Some(DEMO_ETC_SM4_PLATE)
        );
        assert!(matches!(
            sm4.as_etc().map(|c| c.algorithm()),
            Some(Algorithm::Sm4)
        ));
        let city = demo_city_card();
        assert_eq!(city.card_number(), DEMO_CITY_CARD_NUMBER);
        assert_eq!(city.balance(), Some(5_000));
        let obu = demo_obu();
        assert_eq!(obu.card_number(), DEMO_OBU_CONTRACT_SERIAL);
        let esam = obu.as_obu().unwrap();
        assert!(!esam.is_activated());
        assert_eq!(esam.chip_id(), DEMO_OBU_CHIP_ID);
        let vehicle = VehicleInfo::parse(esam.vehicle_info()).unwrap();
        assert_eq!(vehicle.plate().as_deref(), Some(DEMO_ETC_PLATE));
    }
}
