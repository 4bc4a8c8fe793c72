//! Whole purse flows through [`Purse`] against a scripted card: each test lists the exact
//! commands the card must receive and what it answers, so the order of commands, their bytes
//! and the handling of every answer are checked together. The answers of the load and
//! purchase are the reference's section 2.5 vectors (one-level masters, card8
//! `1234567890ABCDEF`), so the security module's MACs are checked against a card that was
//! not computed by this crate.

use std::collections::VecDeque;

use cardd_crypto::{self as crypto, Algorithm, Key16};
use cardd_purse::sam::wrap_encrypted_file;
use cardd_purse::*;
use cardd_reader::{CardChannel, CommandApdu, ReaderError, ResponseApdu, StatusWord};

/// A card that expects exactly the scripted commands, in order, and gives the scripted answers.
struct ScriptedCard {
    steps: VecDeque<(String, Result<String, ReaderError>)>,
}

impl ScriptedCard {
    fn new(steps: &[(&str, &str)]) -> Self {
        ScriptedCard {
            steps: steps
                .iter()
                .map(|(c, r)| (clean(c), Ok(clean(r))))
                .collect(),
        }
    }

    fn then_fail(mut self, command: &str, error: ReaderError) -> Self {
        self.steps.push_back((clean(command), Err(error)));
        self
    }

    fn assert_done(&self) {
        assert!(
            self.steps.is_empty(),
            "commands not sent: {:?}",
            self.steps.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
    }
}

fn clean(s: &str) -> String {
    s.replace(' ', "").to_uppercase()
}

impl CardChannel for ScriptedCard {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        let sent = hex::encode_upper(command.to_bytes().unwrap());
        let (expected, reply) = self
            .steps
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected command {sent}"));
        assert_eq!(sent, expected, "the card expected another command");
        let reply = reply?;
        Ok(ResponseApdu::parse(&hex::decode(reply).unwrap()).unwrap())
    }

    fn reader_id(&self) -> &str {
        "scripted"
    }
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(clean(s)).unwrap().try_into().unwrap()
}

/// An ETC 0015 whose internal number is the reference vectors' card8.
const ETC_0015: &str = "C9C2CEF761010001 16 10 6101 1234567890ABCDEF 20240101 20340101 C9C2414F4B313132 00000000 00 0000";
const TERMINAL: &str = "112233445566";

/// The reference masters, ETC one-level.
fn vector_sam() -> SoftSam {
    let config = SamConfig {
        etc: Some(SchemeKeys {
            algorithm: Algorithm::Tdes,
            two_level: false,
            load: Some(KeyHex::new("11223344556677888877665544332211")),
            purchase: Some(KeyHex::new("0102030405060708090A0B0C0D0E0F10")),
            tac: Some(KeyHex::new("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")),
            maintenance: Some(KeyHex::new(crypto::demo::MASTER_MAINTENANCE_KEY)),
        }),
        city: None,
        obu: None,
    };
    SoftSam::new(&config).unwrap()
}

fn etc_card() -> CardKeyContext {
    CardKeyContext::etc(&EtcIssueInfo::parse(&hex::decode(clean(ETC_0015)).unwrap()).unwrap())
}

fn vector_plan() -> LoadPlan {
    LoadPlan::new(
        etc_card(),
        10_000,
        arr(TERMINAL),
        arr("20240102"),
        arr("030405"),
    )
}

const INIT_LOAD_CMD: &str = "805000020B 01 00002710 112233445566 10";
const INIT_LOAD_OK: &str = "000003E8 0005 01 00 A1B2C3D4 55954E2A 9000";
const CREDIT_CMD: &str = "805200000B 20240102 030405 9F341DD2 04";

#[test]
fn full_load_through_purse() {
    let mut card = ScriptedCard::new(&[
        ("00A40000021001", "6F00 9000"),
        ("00B0950000", &format!("{ETC_0015} 9000")),
        ("0020000006313233343536", "9000"),
        (INIT_LOAD_CMD, INIT_LOAD_OK),
        (CREDIT_CMD, "DA04C4A9 9000"),
        ("805C000204", "00002AF8 9000"),
    ]);
    let sam = vector_sam();
    let mut purse = Purse::new(&mut card);
    assert_eq!(purse.select_etc_adf().unwrap(), [0x6F, 0x00]);
    let info = purse.read_etc_issue_info().unwrap();
    assert_eq!(info.card_number(), "61011234567890ABCDEF");
    purse
        .verify_pin(
            "test card",
            &Pin::ascii("123456").unwrap(),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .unwrap();

    let plan = LoadPlan::new(
        CardKeyContext::etc(&info),
        10_000,
        arr(TERMINAL),
        arr("20240102"),
        arr("030405"),
    );
    assert_eq!(plan.key_index, 0x01);
    assert_eq!(
        hex::encode_upper(plan.init_command().to_bytes().unwrap()),
        clean(INIT_LOAD_CMD)
    );
    let init = purse.init_load_for(&plan).unwrap();
    let session = LoadSession::start(plan, init, &sam).unwrap();
    assert_eq!(session.mac2, arr("9F341DD2"));
    assert_eq!(
        hex::encode_upper(session.credit_command().to_bytes().unwrap()),
        clean(CREDIT_CMD)
    );
    // A journal would persist the session here; it round-trips through serde.
    let journaled: LoadSession =
        serde_json::from_str(&serde_json::to_string(&session).unwrap()).unwrap();
    assert_eq!(journaled, session);

    let tac = purse.credit_for(&journaled).unwrap();
    journaled.verify_tac(&sam, tac).unwrap();
    assert_eq!(purse.balance().unwrap(), 11_000);
    assert_eq!(journaled.expected_balance(), Some(11_000));
    card.assert_done();
}

#[test]
fn full_purchase_through_purse() {
    let mut card = ScriptedCard::new(&[
        (
            "805001020B 01 00000064 112233445566 0F",
            "000003E8 0007 000000 01 00 0BADCAFE 9000",
        ),
        (
            "805401000F 00000102 20240102 030405 48974A28 08",
            "CA673EC9 484C18AB 9000",
        ),
    ]);
    let sam = vector_sam();
    let card_ctx = etc_card();
    let mut purse = Purse::new(&mut card);
    let init = purse
        .init_purchase(PurchaseKind::Normal, 0x01, 100, &arr(TERMINAL))
        .unwrap();
    assert_eq!((init.balance, init.offline_atc), (1000, 7));
    let terms = PurchaseTerms {
        kind: PurchaseKind::Normal,
        amount: 100,
        terminal: arr(TERMINAL),
        term_seq: 0x102,
        date: arr("20240102"),
        time: arr("030405"),
    };
    let mac1 = sam.purchase_mac1(&card_ctx, &init, &terms).unwrap();
    assert_eq!(mac1, arr("48974A28"));
    let debit = purse
        .debit(terms.term_seq, &terms.date, &terms.time, mac1)
        .unwrap();
    sam.verify_purchase_mac2(&card_ctx, &init, &terms, debit.mac2)
        .unwrap();
    sam.verify_purchase_tac(&card_ctx, &terms, debit.tac)
        .unwrap();
    card.assert_done();
}

#[test]
fn composite_purchase_writes_the_cache_between_init_and_debit() {
    let mut capp = CappRecord::blank();
    capp.entry_lane = 3;
    capp.status = 0x03;
    let sam = SoftSam::demo();
    let card_ctx = etc_card();
    let terms = PurchaseTerms {
        kind: PurchaseKind::Composite,
        amount: 500,
        terminal: arr(TERMINAL),
        term_seq: 1,
        date: arr("20240102"),
        time: arr("030405"),
    };
    let init =
        InitPurchaseResponse::parse(&arr::<15>("00002710 0009 000000 01 00 01020304")).unwrap();
    // The PSAM role: MAC1 for transaction type 09 under the demo (two-level) purchase key.
    let mac1 = sam.purchase_mac1(&card_ctx, &init, &terms).unwrap();
    let mut card = ScriptedCard::new(&[
        (
            "805003020B 01 000001F4 112233445566 0F",
            "00002710 0009 000000 01 00 01020304 9000",
        ),
        (
            &format!("80DCAAC82B {}", hex::encode_upper(capp.to_bytes())),
            "9000",
        ),
        (
            &format!(
                "805401000F 00000001 20240102 030405 {} 08",
                hex::encode_upper(mac1)
            ),
            "11111111 22222222 9000",
        ),
    ]);
    let mut purse = Purse::new(&mut card);
    assert_eq!(
        purse
            .init_purchase(PurchaseKind::Composite, 0x01, 500, &arr(TERMINAL))
            .unwrap(),
        init
    );
    purse.update_capp_cache(&capp).unwrap();
    let debit = purse
        .debit(terms.term_seq, &terms.date, &terms.time, mac1)
        .unwrap();
    // This scripted card's MAC2 and TAC are made up: the security module must refuse them.
    assert_eq!(
        sam.verify_purchase_mac2(&card_ctx, &init, &terms, debit.mac2),
        Err(SamError::Mac2Invalid)
    );
    assert_eq!(
        sam.verify_purchase_tac(&card_ctx, &terms, debit.tac),
        Err(SamError::TacInvalid)
    );
    card.assert_done();
}

#[test]
fn card_refusals_explain_themselves() {
    let mut card = ScriptedCard::new(&[
        (INIT_LOAD_CMD, INIT_LOAD_OK),
        (CREDIT_CMD, "9302"),
        ("805001020B 01 00002710 112233445566 0F", "9401"),
        ("805C000204", "6985"),
        ("0020000006313233343536", "63C2"),
        ("0020000006313233343536", "6983"),
        (INIT_LOAD_CMD, "000003E8 0005 01 00 A1B2C3D4 9000"),
    ]);
    let mut purse = Purse::new(&mut card);
    let sam = vector_sam();
    let plan = vector_plan();
    let session = LoadSession::start(plan, purse.init_load_for(&plan).unwrap(), &sam).unwrap();
    let err = purse.credit_for(&session).unwrap_err();
    assert_eq!(err.status_word(), Some(StatusWord::MAC_INVALID));
    assert!(err.to_string().contains("rejected MAC2"), "{err}");
    let err = purse
        .init_purchase(PurchaseKind::Normal, 1, 10_000, &arr(TERMINAL))
        .unwrap_err();
    assert!(err.to_string().contains("balance is lower"), "{err}");
    let err = purse.balance().unwrap_err();
    assert!(err.to_string().contains("select the ADF"), "{err}");
    let err = purse
        .verify_pin(
            "test card",
            &Pin::ascii("123456").unwrap(),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, PurseError::WrongPin { tries_left: 2 }),
        "{err}"
    );
    let err = purse
        .verify_pin(
            "test card",
            &Pin::ascii("123456").unwrap(),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .unwrap_err();
    assert_eq!(err.status_word(), Some(StatusWord::AUTH_METHOD_BLOCKED));
    let err = purse.init_load_for(&plan).unwrap_err();
    assert!(
        matches!(
            err,
            PurseError::Parse {
                command: "INITIALIZE FOR LOAD",
                ..
            }
        ),
        "{err}"
    );
    card.assert_done();
}

#[test]
fn forged_mac1_stops_the_load_before_credit() {
    let plan = vector_plan();
    let mut init = InitLoadResponse::parse(
        &hex::decode(clean("000003E8 0005 01 00 A1B2C3D4 55954E2A")).unwrap(),
    )
    .unwrap();
    init.mac1 = arr("00000000");
    assert_eq!(
        LoadSession::start(plan, init, &vector_sam()),
        Err(SamError::Mac1Invalid)
    );
}

#[test]
fn removal_during_credit_is_outcome_unknown() {
    let mut card = ScriptedCard::new(&[(INIT_LOAD_CMD, INIT_LOAD_OK)]).then_fail(
        CREDIT_CMD,
        ReaderError::CardRemoved {
            reader: "scripted".into(),
        },
    );
    let mut purse = Purse::new(&mut card);
    let session = LoadSession::start(
        vector_plan(),
        purse.init_load_for(&vector_plan()).unwrap(),
        &vector_sam(),
    )
    .unwrap();
    let err = purse.credit_for(&session).unwrap_err();
    assert!(err.outcome_unknown(), "{err}");
    card.assert_done();
}

fn vector_session() -> LoadSession {
    let init = InitLoadResponse::parse(
        &hex::decode(clean("000003E8 0005 01 00 A1B2C3D4 55954E2A")).unwrap(),
    )
    .unwrap();
    LoadSession::start(vector_plan(), init, &vector_sam()).unwrap()
}

#[test]
fn interrupted_load_that_landed_is_recognised_from_the_card() {
    let session = vector_session();
    let mut card = ScriptedCard::new(&[
        ("805A000202 0006 08", "9F341DD2 DA04C4A9 9000"),
        (
            "805000020B 01 00000001 112233445566 10",
            "00002AF8 0006 01 00 55667788 01020304 9000",
        ),
    ]);
    let now = Purse::new(&mut card).observe_load(&session).unwrap();
    card.assert_done();
    assert_eq!(
        now,
        CardObservation {
            balance: 11_000,
            online_atc: 6,
            proof: Some(Proof {
                mac: arr("9F341DD2"),
                tac: arr("DA04C4A9")
            })
        }
    );
    assert_eq!(decide_interrupted_load(&session, now), LoadOutcome::Landed);
    assert_eq!(
        decide_interrupted_load_verified(&session, now, &vector_sam()),
        LoadOutcome::Landed
    );
}

#[test]
fn interrupted_load_that_did_not_land_is_recognised_from_the_card() {
    let session = vector_session();
    let mut card = ScriptedCard::new(&[
        ("805A000202 0006 08", "9406"),
        (
            "805000020B 01 00000001 112233445566 10",
            "000003E8 0005 01 00 55667788 01020304 9000",
        ),
    ]);
    let now = Purse::new(&mut card).observe_load(&session).unwrap();
    card.assert_done();
    assert_eq!(
        now,
        CardObservation {
            balance: 1000,
            online_atc: 5,
            proof: None
        }
    );
    assert_eq!(
        decide_interrupted_load(&session, now),
        LoadOutcome::NotLanded
    );
    assert_eq!(
        decide_interrupted_load_verified(&session, now, &vector_sam()),
        LoadOutcome::NotLanded
    );
}

#[test]
fn interrupted_load_decision_covers_every_branch() {
    let session = vector_session();
    let ours = Proof {
        mac: arr("9F341DD2"),
        tac: arr("DA04C4A9"),
    };
    let obs = |balance, online_atc, proof| CardObservation {
        balance,
        online_atc,
        proof,
    };
    let cases = [
        (obs(11_000, 6, Some(ours)), LoadOutcome::Landed),
        // Unchanged, whatever proof the card still holds from an older load.
        (obs(1000, 5, None), LoadOutcome::NotLanded),
        (obs(1000, 5, Some(ours)), LoadOutcome::NotLanded),
        // Credited-looking state but no proof, or a proof of another load.
        (obs(11_000, 6, None), LoadOutcome::Unknown),
        (
            obs(
                11_000,
                6,
                Some(Proof {
                    mac: arr("9F341DD3"),
                    tac: ours.tac,
                }),
            ),
            LoadOutcome::Unknown,
        ),
        // Our proof but the counter moved on (another load since).
        (obs(21_000, 7, Some(ours)), LoadOutcome::Unknown),
        // Our load landed and a purchase lowered the balance since: still landed.
        (obs(10_900, 6, Some(ours)), LoadOutcome::Landed),
        // Counter unchanged but a purchase lowered the balance: our credit did not land.
        (obs(900, 5, None), LoadOutcome::NotLanded),
        // Counter moved without our proof.
        (obs(1000, 6, None), LoadOutcome::Unknown),
    ];
    for (now, expected) in cases {
        assert_eq!(decide_interrupted_load(&session, now), expected, "{now:?}");
    }
    // A proof whose MAC matches but whose TAC does not verify is not enough when verified.
    let forged = obs(
        11_000,
        6,
        Some(Proof {
            mac: ours.mac,
            tac: arr("00000000"),
        }),
    );
    assert_eq!(
        decide_interrupted_load(&session, forged),
        LoadOutcome::Landed
    );
    assert_eq!(
        decide_interrupted_load_verified(&session, forged, &vector_sam()),
        LoadOutcome::Unknown
    );
    // The counter at its maximum cannot be followed by a landed load.
    let mut maxed = session;
    maxed.init.online_atc = u16::MAX;
    assert_eq!(maxed.atc_after(), None);
    assert_eq!(
        decide_interrupted_load(&maxed, obs(11_000, 0, Some(ours))),
        LoadOutcome::Unknown
    );
}

#[test]
fn prove_returns_none_only_on_9406() {
    let mut card = ScriptedCard::new(&[
        ("805A000602 0008 08", "9406"),
        ("805A000902 0001 08", "6A86"),
        ("805A000602 0008 08", "484C18AB CA673EC9 9000"),
        ("805A000602 0008 08", "484C18AB 9000"),
    ]);
    let mut purse = Purse::new(&mut card);
    assert_eq!(purse.prove(TransactionType::EpPurchase, 8).unwrap(), None);
    assert!(matches!(
        purse.prove(TransactionType::CompositePurchase, 1),
        Err(PurseError::Status { .. })
    ));
    assert_eq!(
        purse.prove(TransactionType::EpPurchase, 8).unwrap(),
        Some(Proof {
            mac: arr("484C18AB"),
            tac: arr("CA673EC9")
        })
    );
    assert!(matches!(
        purse.prove(TransactionType::EpPurchase, 8),
        Err(PurseError::Parse { .. })
    ));
    card.assert_done();
}

#[test]
fn adf_selection_falls_back_to_the_aid_and_files_are_read() {
    let city = "1234 5678 0301 0000 01 02 31000000001234567890 20200101 20301231 0000";
    let holder = format!(
        "00 01 D5C5C8FD{} {}{} 00",
        "00".repeat(16),
        hex::encode_upper(b"110101199001011234"),
        "00".repeat(14)
    );
    let log1 = "0005 000000 00002710 02 112233445566 20240102 030405";
    let log2 = "0007 000000 00000064 06 112233445566 20240103 101010";
    let mut card = ScriptedCard::new(&[
        ("00A40000021001", "6A82"),
        ("00A4040009A00000000386980701", "9000"),
        ("00B095001E", &format!("{city} 9000")),
        ("00B201C417", &format!("{log1} 9000")),
        ("00B202C417", &format!("{log2} 9000")),
        ("00B203C417", "6A83"),
        ("00B201C417", &format!("{log1} 9000")),
        ("00B202C417", &format!("{} 9000", "00".repeat(23))),
        ("00B201CC2B", &format!("AA2900{} 9000", "00".repeat(40))),
        ("00A40000023F00", "9000"),
        ("00B0960037", &format!("{holder} 9000")),
        ("00A404000E315041592E5359532E4444463031", "9000"),
        ("00A40000021001", "6A86"),
    ]);
    let mut purse = Purse::new(&mut card);
    purse.select_etc_adf().unwrap();
    let info = purse.read_city_issue_info().unwrap();
    assert_eq!(info.card_number(), "31000000001234567890");
    let ctx = CardKeyContext::city(&info, Algorithm::Tdes);
    assert_eq!(ctx.card8, arr("0000001234567890"));
    let log = purse.read_log(10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].transaction_type(), Some(TransactionType::EpPurchase));
    assert_eq!(purse.read_log(2).unwrap().len(), 1);
    assert_eq!(purse.read_log(0).unwrap().len(), 0);
    assert_eq!(purse.read_capp_record().unwrap(), CappRecord::blank());
    purse.select_mf().unwrap();
    assert_eq!(
        purse.read_holder().unwrap().id_number_text(),
        "110101199001011234"
    );
    purse.select_pse().unwrap();
    assert!(matches!(
        purse.select_etc_adf(),
        Err(PurseError::Status { .. })
    ));
    card.assert_done();
}

#[test]
fn obu_issue_reads_and_secure_messaging_write() {
    let serial = arr::<8>("0011223344556677");
    let system = format!(
        "C4FECFC4C4FECFC4 01 10 {} 20240101 20340101 00",
        hex::encode_upper(serial)
    );
    let vehicle = ObuVehicleInfo {
        plate: arr("C4FE413132333435000000 00"),
        plate_colour: PlateColour::Blue,
        vehicle_class: 1,
        vehicle_user_type: 0,
        length_mm: 4500,
        width_mm: 1800,
        height_mm: 1450,
        wheels: 4,
        axles: 2,
        wheelbase_mm: 2700,
        load_or_seats: 5,
        description: [0; 16],
        engine_number: *b"ABC12345      ",
    };
    let random = arr::<8>("8877665544332211");
    let enc_key = crypto::diversify(
        Algorithm::Tdes,
        &Key16::from_hex(crypto::demo::OBU_APP_ENCRYPTION_KEY).unwrap(),
        &serial,
    );
    let cipher = crypto::ecb_encrypt(
        Algorithm::Tdes,
        &enc_key,
        &wrap_encrypted_file(Algorithm::Tdes, &random, &vehicle.to_bytes()),
    )
    .unwrap();
    let challenge = arr::<4>("CAFEBABE");
    let sys_key = crypto::diversify(
        Algorithm::Tdes,
        &Key16::from_hex(crypto::demo::OBU_SYSTEM_MAINTENANCE_KEY).unwrap(),
        &serial,
    );
    let mac = crypto::secure_messaging_mac(
        Algorithm::Tdes,
        &sys_key,
        challenge,
        &hex::decode("04D6811A0501").unwrap(),
    );

    let mut card = ScriptedCard::new(&[
        ("80F6000304", "A1B2C3D4 9000"),
        ("00A40000023F00", "9000"),
        ("00B081001B", &format!("{system} 9000")),
        ("00A4000002DF01", "9000"),
        ("00B081003B", "6982"),
        ("00B0001A01", "6982"),
        (
            "00B400000A 8877665544332211 3B 00",
            &format!("{} 9000", hex::encode_upper(&cipher)),
        ),
        ("00A40000023F00", "9000"),
        ("0084000004", "CAFEBABE 9000"),
        (&format!("04D6811A05 01 {}", hex::encode_upper(mac)), "9000"),
    ]);
    let sam = SoftSam::demo();
    let mut purse = Purse::new(&mut card);
    assert_eq!(purse.chip_id().unwrap(), arr("A1B2C3D4"));
    purse.select_mf().unwrap();
    let info = purse.read_obu_system_info().unwrap();
    assert!(!info.is_activated());
    let ctx = CardKeyContext::obu(&info);
    assert_eq!(
        (ctx.scheme, ctx.algorithm, ctx.card8),
        (KeyScheme::Obu, Algorithm::Tdes, serial)
    );
    purse.select_df01().unwrap();
    let err = purse.read_binary_sfi(Sfi::ESAM_EF01, 0, 59).unwrap_err();
    assert!(err.to_string().contains("read it encrypted"), "{err}");
    assert!(matches!(
        purse.read_binary(0x1A, 1),
        Err(PurseError::Status { .. })
    ));
    assert_eq!(
        purse
            .read_obu_vehicle(&sam, &ctx, &random, 0x3B, 0x00)
            .unwrap(),
        vehicle
    );
    purse.select_mf().unwrap();
    purse
        .write_binary_sm(
            &sam,
            &ctx,
            MaintenanceKey::ObuSystem,
            Sfi::ESAM_EF01,
            0x1A,
            &[0x01],
        )
        .unwrap();
    card.assert_done();
}

#[test]
fn etc_file_update_uses_the_two_level_maintenance_key() {
    let info = EtcIssueInfo::parse(&hex::decode(clean(ETC_0015)).unwrap()).unwrap();
    let ctx = CardKeyContext::etc(&info);
    let damk = crypto::diversify_two_level(
        Algorithm::Tdes,
        &Key16::from_hex(crypto::demo::MASTER_MAINTENANCE_KEY).unwrap(),
        &info.issuer4(),
        &info.internal_number_bytes(),
    );
    let data = arr::<4>("20361231");
    let input = commands::update_binary_sm_mac_input(Sfi::ISSUE, 0x18, &data).unwrap();
    assert_eq!(hex::encode_upper(&input), "04D695180820361231");
    let mac = crypto::secure_messaging_mac(Algorithm::Tdes, &damk, arr("01020304"), &input);
    let mut card = ScriptedCard::new(&[
        ("0084000004", "01020304 9000"),
        (
            &format!("04D6951808 20361231 {}", hex::encode_upper(mac)),
            "6988",
        ),
    ]);
    let err = Purse::new(&mut card)
        .write_binary_sm(
            &SoftSam::demo(),
            &ctx,
            MaintenanceKey::CardMaintenance,
            Sfi::ISSUE,
            0x18,
            &data,
        )
        .unwrap_err();
    assert!(err.to_string().contains("wrote nothing"), "{err}");
    card.assert_done();
}

#[test]
fn a_pin_a_card_refused_is_never_presented_to_it_again() {
    let refusals = MemoryPinRefusals::default();
    let configured = Pin::ascii("123456").unwrap();
    let corrected = Pin::ascii("654321").unwrap();
    // One wrong try: recorded. The same PIN to the same card again: refused here, and the
    // card sees nothing (the script has no second VERIFY). A corrected PIN is presented once.
    let mut card = ScriptedCard::new(&[
        ("0020000006313233343536", "63C2"),
        ("0020000006363534333231", "9000"),
    ]);
    let mut purse = Purse::new(&mut card);
    let err = purse.verify_pin("A", &configured, &refusals).unwrap_err();
    assert!(
        matches!(err, PurseError::WrongPin { tries_left: 2 }),
        "{err}"
    );
    for _ in 0..3 {
        let err = purse.verify_pin("A", &configured, &refusals).unwrap_err();
        assert!(matches!(err, PurseError::PinRefusedBefore), "{err}");
        assert!(err.to_string().contains("cards.etc_pin"), "{err}");
    }
    purse.verify_pin("A", &corrected, &refusals).unwrap();
    card.assert_done();

    // Another card with the configured PIN is presented; a PIN already blocked (6983) counts
    // as a refusal too.
    let mut card = ScriptedCard::new(&[("0020000006313233343536", "6983")]);
    let mut purse = Purse::new(&mut card);
    let err = purse.verify_pin("B", &configured, &refusals).unwrap_err();
    assert_eq!(err.status_word(), Some(StatusWord::AUTH_METHOD_BLOCKED));
    let err = purse.verify_pin("B", &configured, &refusals).unwrap_err();
    assert!(matches!(err, PurseError::PinRefusedBefore), "{err}");
    card.assert_done();
    assert_eq!(refusals.len(), 2);
}
