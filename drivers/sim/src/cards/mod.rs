//! Simulated cards: ETC user cards, city one-cards and OBU ESAMs.
//!
//! A [`SimCard`] answers raw APDUs exactly as `docs/card-protocol.md` says a real card does, and
//! its whole state (files, purse, counters, keys, log, proofs, PIN tries, RNG) is plain data
//! that serialises to JSON, so a card can be saved, moved to another process and go on
//! transacting. What a real card forgets at power loss (selection, PIN-verified flag, pending
//! purse session, challenge) is not saved: a restored card is a freshly powered card.

mod apdu;
mod city;
mod cpu;
mod etc;
mod fs;
mod hexser;
mod keys;
mod obu;
mod purse;
mod rng;

use serde::{Deserialize, Serialize};

pub use city::{
    CityCard, CityCardSpec, CITY_0015_BYTES, CITY_LOG_RECORDS, CITY_MAX_BALANCE_FEN_DEFAULT,
};
pub use cpu::PIN_BYTES_MAX;
pub use etc::{
    EtcCard, EtcCardSpec, ETC_0015_BYTES, ETC_0015_LONG_BYTES, ETC_LOG_RECORDS,
    ETC_MAX_BALANCE_FEN_DEFAULT, HOLDER_BYTES,
};
pub use keys::{key_from_hex, CardKeys, EsamKeys, IssuerMasters, ObuMasters};
pub use obu::{
    encrypted_read_plaintext, ObuEsam, ObuSpec, VehicleInfo, DF01, EF01, SYSTEM_INFO_BYTES,
    TAMPER_FLAG_OFFSET, VEHICLE_INFO_BYTES,
};
pub use purse::{
    LogRecord, Proof, Purse, PurseConfig, CAPP_RECORD_BYTES, LOG_CAPACITY_MAX, LOG_RECORD_BYTES,
    TX_COMPOSITE, TX_LOAD, TX_PURCHASE,
};
pub use rng::SimRng;

/// ATR of simulated ETC cards (historical bytes "CDDSETC\x01").
pub const ETC_ATR: [u8; 12] = [
    0x3B, 0x68, 0x00, 0x00, b'C', b'D', b'D', b'S', b'E', b'T', b'C', 0x01,
];
/// ATR of simulated city cards (historical bytes "CDDSCTY\x01").
pub const CITY_ATR: [u8; 12] = [
    0x3B, 0x68, 0x00, 0x00, b'C', b'D', b'D', b'S', b'C', b'T', b'Y', 0x01,
];
/// ATR of simulated OBU ESAMs (historical bytes "CDDSOBU\x01").
pub const OBU_ATR: [u8; 12] = [
    0x3B, 0x68, 0x00, 0x00, b'C', b'D', b'D', b'S', b'O', b'B', b'U', 0x01,
];

/// Which kind of card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    Etc,
    City,
    Obu,
}

/// Why a card could not be personalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A digit field has the wrong number of digits or a non-digit.
    #[error("{field} must be exactly {digits} digits")]
    BadDigits { field: &'static str, digits: usize },
    /// A text field is longer than its place in the file.
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    /// The masters are for another algorithm than the card version selects.
    #[error("the card's version selects {card} but the master keys are {masters}")]
    AlgorithmMismatch {
        card: &'static str,
        masters: &'static str,
    },
}

/// `N` bytes from `2N` digits (hex digits accepted, as BCD is a subset).
pub(crate) fn digits<const N: usize>(
    field: &'static str,
    text: &str,
) -> Result<[u8; N], IssueError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| IssueError::BadDigits {
        field,
        digits: 2 * N,
    })?;
    Ok(out)
}

/// `bytes` `00`-padded to `N`.
pub(crate) fn padded<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], IssueError> {
    let mut out = [0u8; N];
    out.get_mut(..bytes.len())
        .ok_or(IssueError::TooLong { field, max: N })?
        .copy_from_slice(bytes);
    Ok(out)
}

/// A simulated card of any kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SimCard {
    Etc(EtcCard),
    City(CityCard),
    Obu(ObuEsam),
}

impl From<EtcCard> for SimCard {
    fn from(card: EtcCard) -> Self {
        SimCard::Etc(card)
    }
}

impl From<CityCard> for SimCard {
    fn from(card: CityCard) -> Self {
        SimCard::City(card)
    }
}

impl From<ObuEsam> for SimCard {
    fn from(card: ObuEsam) -> Self {
        SimCard::Obu(card)
    }
}

impl SimCard {
    pub fn kind(&self) -> CardKind {
        match self {
            SimCard::Etc(_) => CardKind::Etc,
            SimCard::City(_) => CardKind::City,
            SimCard::Obu(_) => CardKind::Obu,
        }
    }

    /// The Answer To Reset.
    pub fn atr(&self) -> Vec<u8> {
        match self {
            SimCard::Etc(_) => ETC_ATR.to_vec(),
            SimCard::City(_) => CITY_ATR.to_vec(),
            SimCard::Obu(_) => OBU_ATR.to_vec(),
        }
    }

    /// Runs one command APDU and returns response data ‖ SW1 SW2. Never panics.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        match self {
            SimCard::Etc(c) => c.core.process(apdu),
            SimCard::City(c) => c.core.process(apdu),
            SimCard::Obu(c) => c.process(apdu),
        }
    }

    /// Forgets the volatile state (selection, PIN-verified flag, pending purse session,
    /// challenge), as a reset or power loss does.
    pub fn reset(&mut self) {
        match self {
            SimCard::Etc(c) => c.core.reset(),
            SimCard::City(c) => c.core.reset(),
            SimCard::Obu(c) => c.reset(),
        }
    }

    /// The card's persistent state as JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// A card from [`SimCard::to_json`] output (freshly powered: no volatile state).
    pub fn from_json(text: &str) -> Result<SimCard, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn purse(&self) -> Option<&Purse> {
        match self {
            SimCard::Etc(c) => Some(c.purse()),
            SimCard::City(c) => Some(c.purse()),
            SimCard::Obu(_) => None,
        }
    }

    /// The purse, for ETC and city cards.
    pub fn purse_mut(&mut self) -> Option<&mut Purse> {
        match self {
            SimCard::Etc(c) => Some(c.purse_mut()),
            SimCard::City(c) => Some(c.purse_mut()),
            SimCard::Obu(_) => None,
        }
    }

    /// Balance in fen (`None` for an ESAM).
    pub fn balance(&self) -> Option<u32> {
        self.purse().map(Purse::balance_fen)
    }
    pub fn online_atc(&self) -> Option<u16> {
        self.purse().map(Purse::online_atc)
    }
    pub fn offline_atc(&self) -> Option<u16> {
        self.purse().map(Purse::offline_atc)
    }
    /// The `0018` records, newest first (empty for an ESAM).
    pub fn log(&self) -> &[LogRecord] {
        self.purse().map(Purse::log).unwrap_or_default()
    }

    /// The displayed card number (ETC, city) or the contract serial in hex (ESAM).
    pub fn card_number(&self) -> String {
        match self {
            SimCard::Etc(c) => c.card_number(),
            SimCard::City(c) => c.card_number(),
            SimCard::Obu(c) => hex::encode_upper(c.contract_serial()),
        }
    }

    /// Forces the next random bytes the card draws (known-answer tests).
    pub fn queue_random(&mut self, bytes: &[u8]) {
        match self {
            SimCard::Etc(c) => c.queue_random(bytes),
            SimCard::City(c) => c.queue_random(bytes),
            SimCard::Obu(c) => c.queue_random(bytes),
        }
    }

    pub fn as_etc(&self) -> Option<&EtcCard> {
        match self {
            SimCard::Etc(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_etc_mut(&mut self) -> Option<&mut EtcCard> {
        match self {
            SimCard::Etc(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_city(&self) -> Option<&CityCard> {
        match self {
            SimCard::City(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_city_mut(&mut self) -> Option<&mut CityCard> {
        match self {
            SimCard::City(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_obu(&self) -> Option<&ObuEsam> {
        match self {
            SimCard::Obu(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_obu_mut(&mut self) -> Option<&mut ObuEsam> {
        match self {
            SimCard::Obu(c) => Some(c),
            _ => None,
        }
    }
}
