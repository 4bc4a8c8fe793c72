//! Property tests: no card answer, however malformed, makes this crate panic, and every file
//! layout round-trips. A card (or a reader, or an attacker between them) chooses the bytes
//! the parsers see, so "returns an error" must hold for all of them, not just the samples.

use cardd_purse::sam::wrap_encrypted_file;
use cardd_purse::*;
use cardd_reader::{CardChannel, CommandApdu, ReaderError, ResponseApdu, StatusWord};
use proptest::prelude::*;

fn all_parsers(bytes: &[u8]) {
    if let Ok(info) = EtcIssueInfo::parse(bytes) {
        let _ = (
            info.card_number(),
            info.plate_text(),
            info.start_date(),
            info.expiry_date(),
            info.key_index(),
        );
        let _ = info.issuer_province_name();
        assert_eq!(info.to_bytes(), bytes);
    }
    if let Ok(info) = CityIssueInfo::parse(bytes) {
        let _ = (info.card_number(), info.card8(), info.start_date());
        assert_eq!(info.to_bytes(), bytes);
    }
    if let Ok(info) = HolderInfo::parse(bytes) {
        let _ = (info.id_number_text(), info.name_gbk().len());
        assert_eq!(info.to_bytes(), bytes);
    }
    if let Ok(rec) = LogRecord::parse(bytes) {
        let _ = (
            rec.date(),
            rec.time(),
            rec.transaction_type(),
            rec.is_empty(),
        );
        assert_eq!(rec.to_bytes(), bytes);
    }
    if let Ok(rec) = CappRecord::parse(bytes) {
        let _ = rec.plate_text();
        assert_eq!(rec.to_bytes(), bytes);
    }
    if let Ok(info) = ObuSystemInfo::parse(bytes) {
        let _ = (
            info.obu_number(),
            info.signed_date(),
            info.provider_province_name(),
        );
        assert_eq!(info.to_bytes(), bytes);
    }
    if let Ok(info) = ObuVehicleInfo::parse(bytes) {
        let _ = (info.plate_text(), info.engine_number_text());
        assert_eq!(info.to_bytes(), bytes);
    }
    if let Ok(r) = InitLoadResponse::parse(bytes) {
        assert_eq!(r.to_bytes(), bytes);
    }
    if let Ok(r) = InitPurchaseResponse::parse(bytes) {
        assert_eq!(r.to_bytes(), bytes);
    }
    if let Ok(r) = DebitResponse::parse(bytes) {
        assert_eq!(r.to_bytes(), bytes);
    }
    if let Ok(r) = Proof::parse(bytes) {
        assert_eq!(r.to_bytes(), bytes);
    }
    let _ = responses::parse_balance(bytes);
}

/// A channel that answers every command with the same arbitrary bytes.
struct Garbage {
    data: Vec<u8>,
    sw: u16,
}

impl CardChannel for Garbage {
    fn transmit(&mut self, _command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        Ok(ResponseApdu::new(self.data.clone(), StatusWord(self.sw)))
    }
    fn reader_id(&self) -> &str {
        "garbage"
    }
}

fn every_purse_method(channel: &mut Garbage) {
    let sam = SoftSam::demo();
    let etc = CardKeyContext {
        scheme: KeyScheme::Etc,
        algorithm: cardd_crypto::Algorithm::Tdes,
        issuer4: [1; 4],
        card8: [2; 8],
    };
    let obu = CardKeyContext {
        scheme: KeyScheme::Obu,
        ..etc
    };
    let plan = LoadPlan::new(etc, 100, [0; 6], [0x20, 0x24, 0x01, 0x01], [0; 3]);
    let session = LoadSession {
        plan,
        init: InitLoadResponse::parse(&[0; 16]).unwrap(),
        mac2: [0; 4],
    };
    let mut purse = Purse::new(channel);
    let _ = purse.select_mf();
    let _ = purse.select_pse();
    let _ = purse.select_etc_adf();
    let _ = purse.select_df01();
    let _ = purse.read_binary(0, 0);
    let _ = purse.read_binary(0x8000, 1);
    let _ = purse.read_etc_issue_info();
    let _ = purse.read_city_issue_info();
    let _ = purse.read_holder();
    let _ = purse.read_log(3);
    let _ = purse.read_capp_record();
    let _ = purse.verify_pin(
        "test card",
        &Pin::bcd("123456").unwrap(),
        &cardd_purse::MemoryPinRefusals::default(),
    );
    let _ = purse.balance();
    let _ = purse.init_load(1, 1, &[0; 6]);
    let _ = purse.credit(&[0; 4], &[0; 3], [0; 4]);
    let _ = purse.init_purchase(PurchaseKind::Composite, 1, 1, &[0; 6]);
    let _ = purse.update_capp_cache(&CappRecord::blank());
    let _ = purse.debit(1, &[0; 4], &[0; 3], [0; 4]);
    let _ = purse.prove(TransactionType::EpLoad, 1);
    let _ = purse.get_challenge();
    let _ = purse.update_binary_sm(Sfi::ISSUE, 0, &[1], [0; 4]);
    let _ = purse.write_binary_sm(
        &sam,
        &etc,
        MaintenanceKey::CardMaintenance,
        Sfi::ISSUE,
        0,
        &[1],
    );
    let _ = purse.chip_id();
    let _ = purse.read_obu_system_info();
    let _ = purse.read_obu_vehicle(&sam, &obu, &[0; 8], 0, 0);
    let _ = purse.probe_online_atc(1, &[0; 6]);
    if let Ok(now) = purse.observe_load(&session) {
        let _ = decide_interrupted_load(&session, now);
        let _ = decide_interrupted_load_verified(&session, now, &sam);
    }
}

proptest! {
    #[test]
    fn parsers_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        all_parsers(&bytes);
    }

    #[test]
    fn parsers_round_trip_at_their_exact_lengths(
        len in prop::sample::select(vec![8usize, 15, 16, 23, 27, 30, 43, 50, 55, 59]),
        seed in prop::collection::vec(any::<u8>(), 59),
    ) {
        let mut bytes: Vec<u8> = seed.iter().copied().cycle().take(len).collect();
        if len == 43 && bytes[0] & 1 == 0 {
            bytes[0] = 0xAA;
            bytes[1] = 0x29;
        }
        all_parsers(&bytes);
    }

    #[test]
    fn purse_never_panics_on_any_answer(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            prop::sample::select(vec![4usize, 8, 15, 16, 23, 27, 30, 43, 50, 55, 72, 80])
                .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len)),
        ],
        sw in prop::sample::select(vec![0x9000u16, 0x9406, 0x6A83, 0x63C1, 0x9302, 0x6F00]),
    ) {
        every_purse_method(&mut Garbage { data, sw });
    }

    #[test]
    fn decryption_never_panics(cipher in prop::collection::vec(any::<u8>(), 0..100), sm4 in any::<bool>()) {
        let alg = if sm4 { cardd_crypto::Algorithm::Sm4 } else { cardd_crypto::Algorithm::Tdes };
        let card = CardKeyContext { scheme: KeyScheme::Obu, algorithm: alg, issuer4: [0; 4], card8: [3; 8] };
        let _ = SoftSam::demo().decrypt_obu_vehicle(&card, &[0; 8], &cipher);
        prop_assert_eq!(wrap_encrypted_file(alg, &[0; 8], &cipher).len() % alg.block_size(), 0);
    }
}
