//! The ETC user card (highway-toll stored-value or account card).
//!
//! Personalisation ([`EtcCard::issue`]) turns an [`EtcCardSpec`] into the files of
//! `docs/card-protocol.md` (`0016` in the MF; `0015`, `0018`, `0019` and the purse in ADF
//! `1001`) and diversifies the card keys from the issuer's masters: two levels by default
//! (`Div(Div(master, issuer4‖issuer4), internal number)`), one level when the masters say so.

use cardd_crypto::Algorithm;
use serde::{Deserialize, Serialize};

use super::cpu::{CpuCard, Pin, Profile, ADF_FID, ADF_NAME, PSE_NAME};
use super::fs::{Df, Ef, EfContent, FileTree, ReadAccess, UpdateKey};
use super::keys::{alg_name, algorithm_for_version, is_sm4, CardKeys, IssuerMasters};
use super::purse::{LogRecord, Purse, PurseConfig, CAPP_RECORD_BYTES};
use super::rng::SimRng;
use super::{digits, IssueError};
use cardd_crypto::gbk;

/// Default highest balance of a simulated ETC card: 100,000.00 yuan. Real cards get their limit
/// at personalisation; this one is high enough never to get in the way of a test that is not
/// about the limit, and low enough that `u32` arithmetic near it cannot overflow.
pub const ETC_MAX_BALANCE_FEN_DEFAULT: u32 = 10_000_000;
/// Records kept in an ETC card's `0018`.
pub const ETC_LOG_RECORDS: u8 = 50;
/// Bytes of the short `0015`.
pub const ETC_0015_BYTES: usize = 43;
/// Bytes of the long `0015`.
pub const ETC_0015_LONG_BYTES: usize = 50;
/// Bytes of `0016`.
pub const HOLDER_BYTES: usize = 55;

/// Everything an issuer decides about one ETC card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcCardSpec {
    /// Issuer province name, GBK (e.g. `gbk::encode("陕西")`), `0015[0..4]`, also the first
    /// diversification level.
    pub issuer_province_gbk: [u8; 4],
    /// Issuer code, `0015[4..8]`.
    pub issuer_code: [u8; 4],
    /// `0x16` stored-value, `0x17` account.
    pub card_type: u8,
    /// `0x10..=0x4F` 3DES, `0x5x` SM4.
    pub version: u8,
    /// 4 digits, e.g. `"6101"`.
    pub network_id: String,
    /// 16 digits (hex digits are accepted for test vectors); the diversification factor.
    pub internal_number: String,
    /// BCD `YYYYMMDD`.
    pub start_date: [u8; 4],
    pub expiry_date: [u8; 4],
    /// GBK, at most 12 bytes (see [`gbk::encode`]).
    pub plate_gbk: Vec<u8>,
    /// 0 blue, 1 yellow, 2 black, 3 white, 4 gradient green, 5 yellow-green, 6 blue-white, 11 green, 12 red.
    pub plate_colour: u16,
    pub user_type: u8,
    /// Write the 50-byte `0015`, appending [`EtcCardSpec::extra_0015`].
    pub long_0015: bool,
    pub extra_0015: [u8; 7],
    /// `0016`: holder flag, staff flag, name (GBK ≤ 20), ID number (ASCII ≤ 32), ID type.
    pub holder_flag: u8,
    pub staff_flag: u8,
    pub holder_name_gbk: Vec<u8>,
    pub holder_id_number: String,
    pub holder_id_type: u8,
    pub balance_fen: u32,
    pub online_atc: u16,
    pub offline_atc: u16,
    pub max_balance_fen: u32,
    pub key_version: u8,
    /// ASCII PIN, `"123456"` by default.
    pub pin: String,
    pub pin_tries: u8,
    pub load_requires_pin: bool,
    pub prove_accepts_pre_atc: bool,
    /// RNG seed; derived from the card number when `None`.
    pub rng_seed: Option<u64>,
}

impl Default for EtcCardSpec {
    /// A 3DES stored-value card of issuer 陕西 61010001 with an empty purse (identity fields
    /// are placeholders to be overwritten).
    fn default() -> Self {
        EtcCardSpec {
            issuer_province_gbk: [0xC9, 0xC2, 0xCE, 0xF7],
            issuer_code: [0x61, 0x01, 0x00, 0x01],
            card_type: 0x16,
            version: 0x40,
            network_id: "6101".into(),
            internal_number: "0000000000000000".into(),
            start_date: [0x20, 0x24, 0x01, 0x01],
            expiry_date: [0x20, 0x34, 0x01, 0x01],
            plate_gbk: Vec::new(),
            plate_colour: 0,
            user_type: 0,
            long_0015: false,
            extra_0015: [0; 7],
            holder_flag: 0,
            staff_flag: 0,
            holder_name_gbk: Vec::new(),
            holder_id_number: String::new(),
            holder_id_type: 0,
            balance_fen: 0,
            online_atc: 0,
            offline_atc: 0,
            max_balance_fen: ETC_MAX_BALANCE_FEN_DEFAULT,
            key_version: 0x01,
            pin: "123456".into(),
            pin_tries: 3,
            load_requires_pin: true,
            prove_accepts_pre_atc: false,
            rng_seed: None,
        }
    }
}

impl EtcCardSpec {
    /// The `0015` bytes (43, or 50 with `long_0015`).
    pub fn issue_file(&self) -> Result<Vec<u8>, IssueError> {
        let mut out = Vec::with_capacity(ETC_0015_LONG_BYTES);
        out.extend_from_slice(&self.issuer_province_gbk);
        out.extend_from_slice(&self.issuer_code);
        out.extend_from_slice(&[self.card_type, self.version]);
        out.extend_from_slice(&digits::<2>("network_id", &self.network_id)?);
        out.extend_from_slice(&digits::<8>("internal_number", &self.internal_number)?);
        out.extend_from_slice(&self.start_date);
        out.extend_from_slice(&self.expiry_date);
        out.extend_from_slice(&super::padded::<12>("plate_gbk", &self.plate_gbk)?);
        out.push(self.user_type);
        out.extend_from_slice(&self.plate_colour.to_be_bytes());
        if self.long_0015 {
            out.extend_from_slice(&self.extra_0015);
        }
        Ok(out)
    }

    /// The 55 bytes of `0016`.
    pub fn holder_file(&self) -> Result<Vec<u8>, IssueError> {
        let mut out = Vec::with_capacity(HOLDER_BYTES);
        out.extend_from_slice(&[self.holder_flag, self.staff_flag]);
        out.extend_from_slice(&super::padded::<20>(
            "holder_name_gbk",
            &self.holder_name_gbk,
        )?);
        out.extend_from_slice(&super::padded::<32>(
            "holder_id_number",
            self.holder_id_number.as_bytes(),
        )?);
        out.push(self.holder_id_type);
        Ok(out)
    }
}

/// An ETC user card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcCard {
    pub(crate) core: CpuCard,
}

impl EtcCard {
    /// Personalises a card. Fails when a field does not fit or the masters' algorithm is not
    /// the one the card version selects.
    pub fn issue(spec: &EtcCardSpec, masters: &IssuerMasters) -> Result<EtcCard, IssueError> {
        let issue_file = spec.issue_file()?;
        let alg = algorithm_for_version(spec.version);
        check_algorithm(alg, masters.algorithm)?;
        let factor = digits::<8>("internal_number", &spec.internal_number)?;
        let issuer = masters.two_level.then_some(&spec.issuer_province_gbk);
        let keys = CardKeys::derive(masters, issuer, &factor);
        let config = PurseConfig {
            max_balance_fen: spec.max_balance_fen,
            key_version: spec.key_version,
            prove_accepts_pre_atc: spec.prove_accepts_pre_atc,
            log_capacity: ETC_LOG_RECORDS,
        };
        let seed = spec
            .rng_seed
            .unwrap_or_else(|| SimRng::seed_from(&issue_file));
        let core = CpuCard {
            profile: Profile {
                load_requires_pin: spec.load_requires_pin,
                composite: true,
            },
            files: etc_files(issue_file, spec.holder_file()?),
            purse: Purse::new(
                spec.balance_fen,
                spec.online_atc,
                spec.offline_atc,
                config,
                keys,
            ),
            pin: Pin {
                code: spec.pin.as_bytes().to_vec(),
                tries_max: spec.pin_tries,
                tries_left: spec.pin_tries,
            },
            rng: SimRng::new(seed),
            vol: Default::default(),
        };
        Ok(EtcCard { core })
    }

    /// `0015`.
    pub fn issue_info(&self) -> &[u8] {
        self.core.files.binary(ADF_FID, 0x0015).unwrap_or_default()
    }
    /// `0016`.
    pub fn holder_info(&self) -> &[u8] {
        self.core.files.binary(0x3F00, 0x0016).unwrap_or_default()
    }
    /// The `0019` composite record.
    pub fn capp_record(&self) -> &[u8] {
        self.core.files.binary(ADF_FID, 0x0019).unwrap_or_default()
    }
    /// The displayed card number: network id + internal number (20 digits).
    pub fn card_number(&self) -> String {
        hex::encode_upper(self.issue_info().get(10..20).unwrap_or_default())
    }
    /// The plate of `0015`, when it is well-formed GBK.
    pub fn plate(&self) -> Option<String> {
        gbk::decode(self.issue_info().get(28..40)?)
    }
    /// SM4 for version `0x5x`, else 3DES.
    pub fn algorithm(&self) -> Algorithm {
        self.core.purse.keys().algorithm
    }
    pub fn purse(&self) -> &Purse {
        &self.core.purse
    }
    pub fn purse_mut(&mut self) -> &mut Purse {
        &mut self.core.purse
    }
    pub fn balance(&self) -> u32 {
        self.core.purse.balance_fen()
    }
    pub fn online_atc(&self) -> u16 {
        self.core.purse.online_atc()
    }
    pub fn offline_atc(&self) -> u16 {
        self.core.purse.offline_atc()
    }
    pub fn log(&self) -> &[LogRecord] {
        self.core.purse.log()
    }
    /// PIN tries left (0 = blocked).
    pub fn pin_tries_left(&self) -> u8 {
        self.core.pin.tries_left
    }
    /// Whether INITIALIZE FOR LOAD needs the PIN.
    pub fn set_load_requires_pin(&mut self, required: bool) {
        self.core.profile.load_requires_pin = required;
    }
    /// Forces the next random bytes the card draws (known-answer tests).
    pub fn queue_random(&mut self, bytes: &[u8]) {
        self.core.rng.queue(bytes);
    }
}

/// The file tree of an ETC card.
fn etc_files(issue_file: Vec<u8>, holder: Vec<u8>) -> FileTree {
    let mut capp = vec![0u8; CAPP_RECORD_BYTES];
    capp[..3].copy_from_slice(&[0xAA, 0x29, 0x00]);
    let mf = Df {
        fid: 0x3F00,
        name: PSE_NAME.to_vec(),
        efs: vec![Ef::binary(0x0016, 0x16, holder, UpdateKey::Damk)],
    };
    let adf = Df {
        fid: ADF_FID,
        name: ADF_NAME.to_vec(),
        efs: vec![
            Ef::binary(0x0015, 0x15, issue_file, UpdateKey::Damk),
            Ef {
                fid: 0x0018,
                sfi: 0x18,
                content: EfContent::Log,
                read: ReadAccess::Plain,
                update: None,
            },
            Ef {
                fid: 0x0019,
                sfi: 0x19,
                content: EfContent::Record(capp),
                read: ReadAccess::Plain,
                update: None,
            },
        ],
    };
    FileTree { dfs: vec![mf, adf] }
}

/// Fails unless the card's algorithm and the masters' agree.
pub(crate) fn check_algorithm(card: Algorithm, masters: Algorithm) -> Result<(), IssueError> {
    if is_sm4(card) == is_sm4(masters) {
        Ok(())
    } else {
        Err(IssueError::AlgorithmMismatch {
            card: alg_name(card),
            masters: alg_name(masters),
        })
    }
}
