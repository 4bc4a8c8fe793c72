//! The city one-card (MOHURD "City Union" transit card).
//!
//! Same CPU card machine as the ETC card with a 30-byte `0015`, a 10-record log, a BCD PIN that
//! loads do not need, no `0016`/`0019`, and one-level key diversification by the last 8 bytes
//! of the application serial.

use cardd_crypto::Algorithm;
use serde::{Deserialize, Serialize};

use super::cpu::{CpuCard, Pin, Profile, ADF_FID, ADF_NAME, PSE_NAME};
use super::fs::{Df, Ef, EfContent, FileTree, ReadAccess, UpdateKey};
use super::keys::{CardKeys, IssuerMasters};
use super::purse::{LogRecord, Purse, PurseConfig};
use super::rng::SimRng;
use super::{digits, IssueError};

/// Default highest balance of a city card: 1,000.00 yuan.
pub const CITY_MAX_BALANCE_FEN_DEFAULT: u32 = 100_000;
/// Records kept in a city card's `0018`.
pub const CITY_LOG_RECORDS: u8 = 10;
/// Bytes of a city card's `0015`.
pub const CITY_0015_BYTES: usize = 30;

/// Everything an issuer decides about one city card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CityCardSpec {
    pub issuer_code: [u8; 2],
    pub city_code: [u8; 2],
    pub industry_code: [u8; 2],
    /// `0` = interoperability off.
    pub app_type_flag: u8,
    pub app_version: u8,
    /// 20 digits; the displayed card number. Its last 8 bytes diversify the keys.
    pub app_serial: String,
    pub start_date: [u8; 4],
    pub expiry_date: [u8; 4],
    pub balance_fen: u32,
    pub online_atc: u16,
    pub offline_atc: u16,
    pub max_balance_fen: u32,
    pub key_version: u8,
    /// PIN digits, stored BCD (`"123456"` → `12 34 56`).
    pub pin: String,
    pub pin_tries: u8,
    pub prove_accepts_pre_atc: bool,
    pub rng_seed: Option<u64>,
}

impl Default for CityCardSpec {
    fn default() -> Self {
        CityCardSpec {
            issuer_code: [0x71, 0x00],
            city_code: [0x61, 0x01],
            industry_code: [0x00, 0x01],
            app_type_flag: 0x01,
            app_version: 0x01,
            app_serial: "00000000000000000000".into(),
            start_date: [0x20, 0x24, 0x01, 0x01],
            expiry_date: [0x20, 0x34, 0x01, 0x01],
            balance_fen: 0,
            online_atc: 0,
            offline_atc: 0,
            max_balance_fen: CITY_MAX_BALANCE_FEN_DEFAULT,
            key_version: 0x01,
            pin: "123456".into(),
            pin_tries: 3,
            prove_accepts_pre_atc: false,
            rng_seed: None,
        }
    }
}

impl CityCardSpec {
    /// The 30 bytes of `0015`.
    pub fn issue_file(&self) -> Result<Vec<u8>, IssueError> {
        let mut out = Vec::with_capacity(CITY_0015_BYTES);
        out.extend_from_slice(&self.issuer_code);
        out.extend_from_slice(&self.city_code);
        out.extend_from_slice(&self.industry_code);
        out.extend_from_slice(&[0, 0, self.app_type_flag, self.app_version]);
        out.extend_from_slice(&digits::<10>("app_serial", &self.app_serial)?);
        out.extend_from_slice(&self.start_date);
        out.extend_from_slice(&self.expiry_date);
        out.extend_from_slice(&[0, 0]);
        Ok(out)
    }
}

/// A city one-card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CityCard {
    pub(crate) core: CpuCard,
}

impl CityCard {
    /// Personalises a city card with `masters` (their algorithm is the card's; `two_level` is
    /// ignored: city cards are diversified once).
    pub fn issue(spec: &CityCardSpec, masters: &IssuerMasters) -> Result<CityCard, IssueError> {
        let issue_file = spec.issue_file()?;
        let serial = digits::<10>("app_serial", &spec.app_serial)?;
        let factor: [u8; 8] = super::apdu::array_at(&serial, 2).ok_or(IssueError::BadDigits {
            field: "app_serial",
            digits: 20,
        })?;
        let pin = digits::<3>("pin", &spec.pin)?.to_vec();
        let config = PurseConfig {
            max_balance_fen: spec.max_balance_fen,
            key_version: spec.key_version,
            prove_accepts_pre_atc: spec.prove_accepts_pre_atc,
            log_capacity: CITY_LOG_RECORDS,
        };
        let seed = spec
            .rng_seed
            .unwrap_or_else(|| SimRng::seed_from(&issue_file));
        let core = CpuCard {
            profile: Profile {
                load_requires_pin: false,
                composite: false,
            },
            files: city_files(issue_file),
            purse: Purse::new(
                spec.balance_fen,
                spec.online_atc,
                spec.offline_atc,
                config,
                CardKeys::derive(masters, None, &factor),
            ),
            pin: Pin {
                code: pin,
                tries_max: spec.pin_tries,
                tries_left: spec.pin_tries,
            },
            rng: SimRng::new(seed),
            vol: Default::default(),
        };
        Ok(CityCard { core })
    }

    /// `0015`.
    pub fn issue_info(&self) -> &[u8] {
        self.core.files.binary(ADF_FID, 0x0015).unwrap_or_default()
    }
    /// The displayed card number: the application serial's 20 digits.
    pub fn card_number(&self) -> String {
        hex::encode_upper(self.issue_info().get(10..20).unwrap_or_default())
    }
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
    pub fn pin_tries_left(&self) -> u8 {
        self.core.pin.tries_left
    }
    /// Forces the next random bytes the card draws (known-answer tests).
    pub fn queue_random(&mut self, bytes: &[u8]) {
        self.core.rng.queue(bytes);
    }
}

fn city_files(issue_file: Vec<u8>) -> FileTree {
    let mf = Df {
        fid: 0x3F00,
        name: PSE_NAME.to_vec(),
        efs: Vec::new(),
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
        ],
    };
    FileTree { dfs: vec![mf, adf] }
}
