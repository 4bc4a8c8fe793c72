//! Property tests: no panics on arbitrary input, ECB round trips, BCD round trips.

use cardd_crypto::{
    bcd, ecb_decrypt, ecb_encrypt, purse_mac, secure_messaging_mac, Algorithm, CryptoError, Key16,
    SessionKey,
};
use proptest::prelude::*;

fn alg() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Tdes), Just(Algorithm::Sm4)]
}

proptest! {
    #[test]
    fn purse_mac_never_panics(
        des in any::<[u8; 8]>(),
        sm in any::<[u8; 16]>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = purse_mac(&SessionKey::Des(des), &data);
        let _ = purse_mac(&SessionKey::Sm4(sm), &data);
    }

    #[test]
    fn secure_messaging_mac_never_panics(
        a in alg(),
        k in any::<[u8; 16]>(),
        ch in any::<[u8; 4]>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = secure_messaging_mac(a, &Key16(k), ch, &data);
    }

    #[test]
    fn ecb_round_trip_on_whole_blocks(
        a in alg(),
        k in any::<[u8; 16]>(),
        blocks in 0usize..8,
        seed in proptest::collection::vec(any::<u8>(), 128),
    ) {
        let data = &seed[..blocks * a.block_size()];
        let key = Key16(k);
        let c = ecb_encrypt(a, &key, data).unwrap();
        prop_assert_eq!(c.len(), data.len());
        let p = ecb_decrypt(a, &key, &c).unwrap();
        prop_assert_eq!(&p[..], data);
    }

    #[test]
    fn ecb_rejects_partial_blocks(
        a in alg(),
        k in any::<[u8; 16]>(),
        data in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        prop_assume!(data.len() % a.block_size() != 0);
        let key = Key16(k);
        let enc = ecb_encrypt(a, &key, &data);
        let dec = ecb_decrypt(a, &key, &data);
        let is_bad_len = |r: &Result<Vec<u8>, CryptoError>| {
            matches!(r, Err(CryptoError::BadLength { got, .. }) if *got == data.len())
        };
        prop_assert!(is_bad_len(&enc));
        prop_assert!(is_bad_len(&dec));
    }

    #[test]
    fn bcd_digits_round_trip(s in "([0-9]{2}){0,20}") {
        let packed = bcd::encode_digits(&s).unwrap();
        prop_assert_eq!(packed.len(), s.len() / 2);
        prop_assert_eq!(bcd::decode_digits(&packed).unwrap(), s);
    }

    #[test]
    fn bcd_decode_encode_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
        match bcd::decode_digits(&bytes) {
            Some(s) => prop_assert_eq!(bcd::encode_digits(&s).unwrap(), bytes),
            None => prop_assert!(bytes.iter().any(|b| b >> 4 > 9 || b & 0x0F > 9)),
        }
    }

    #[test]
    fn bcd_date_time_round_trip(y in 0u16..10000, m in 1u8..=12, d in 1u8..=28, h in 0u8..24, mi in 0u8..60, se in 0u8..60) {
        prop_assert_eq!(bcd::decode_date(&bcd::date(y, m, d)), Some((y, m, d)));
        prop_assert_eq!(bcd::decode_time(&bcd::time(h, mi, se)), Some((h, mi, se)));
    }

    #[test]
    fn bcd_decoders_never_panic(d in any::<[u8; 4]>(), t in any::<[u8; 3]>(), s in ".{0,40}") {
        let _ = bcd::decode_date(&d);
        let _ = bcd::decode_time(&t);
        let _ = bcd::encode_digits(&s);
    }

    #[test]
    fn key_from_hex_never_panics(s in ".{0,40}") {
        let _ = Key16::from_hex(&s);
    }
}
