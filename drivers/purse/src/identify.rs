//! Which card is in the reader, from what the card answers: [`Purse::identify`].
//!
//! ETC user cards and city one-cards share the payment application (`1001`) and its issue
//! information file `0015`; the file's length tells them apart (43 or 50 bytes for ETC, 30 for
//! city cards). An OBU's ESAM has no payment application; its system information is MF `EF01`.
//! Callers (the card summary, the load) used to repeat this reasoning; it lives here once.

use cardd_reader::StatusWord;
use serde::{Deserialize, Serialize};

use crate::commands::Sfi;
use crate::error::PurseError;
use crate::files::{CityIssueInfo, EtcIssueInfo, ObuSystemInfo};
use crate::purse::Purse;

/// The kind of card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// ETC user card.
    Etc,
    /// City one-card.
    City,
    /// OBU (its ESAM).
    Obu,
}

/// A card as it identified itself, with the file that tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardIdentity {
    /// An ETC user card: its `0015`.
    Etc(EtcIssueInfo),
    /// A city one-card: its `0015`.
    City(CityIssueInfo),
    /// An OBU's ESAM: its MF `EF01`.
    Obu(ObuSystemInfo),
    /// The payment application answered with a `0015` of a length no known card has.
    Unsupported {
        /// Length of the `0015` the card returned.
        issue_info_len: usize,
    },
}

impl CardIdentity {
    /// The kind of card, `None` when unsupported.
    pub fn kind(&self) -> Option<CardKind> {
        match self {
            CardIdentity::Etc(_) => Some(CardKind::Etc),
            CardIdentity::City(_) => Some(CardKind::City),
            CardIdentity::Obu(_) => Some(CardKind::Obu),
            CardIdentity::Unsupported { .. } => None,
        }
    }

    /// The displayed card number (20 digits), or the OBU number (16 hex digits).
    pub fn card_number(&self) -> Option<String> {
        match self {
            CardIdentity::Etc(info) => Some(info.card_number()),
            CardIdentity::City(info) => Some(info.card_number()),
            CardIdentity::Obu(info) => Some(info.obu_number()),
            CardIdentity::Unsupported { .. } => None,
        }
    }
}

impl Purse<'_> {
    /// Identifies the card: SELECT the payment application and READ BINARY `0015`, whose
    /// length tells an ETC card from a city card. When the card has no payment application
    /// (`6A82`), it is asked for an OBU's system information (SELECT MF, READ BINARY `EF01`);
    /// if it has none either, the first refusal is returned. Reads only. The payment
    /// application stays selected (MF for an OBU).
    pub fn identify(&mut self) -> Result<CardIdentity, PurseError> {
        match self.identify_payment_card() {
            Err(no_adf) if no_adf.status_word() == Some(StatusWord::FILE_NOT_FOUND) => {
                match self.identify_obu() {
                    Err(PurseError::Status { .. }) => Err(no_adf),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Identifies a card with the payment application (ETC or city card; never
    /// [`CardIdentity::Obu`]): SELECT it and READ BINARY `0015`. A card without the
    /// application answers SELECT with `6A82`, returned as is.
    pub fn identify_payment_card(&mut self) -> Result<CardIdentity, PurseError> {
        self.select_etc_adf()?;
        let raw = self.read_binary_sfi(Sfi::ISSUE, 0, 0)?;
        let parse = |source| PurseError::Parse {
            command: "READ BINARY",
            source,
        };
        Ok(match raw.len() {
            EtcIssueInfo::LEN | EtcIssueInfo::LEN_EXTENDED => {
                CardIdentity::Etc(EtcIssueInfo::parse(&raw).map_err(parse)?)
            }
            CityIssueInfo::LEN => CardIdentity::City(CityIssueInfo::parse(&raw).map_err(parse)?),
            n => CardIdentity::Unsupported { issue_info_len: n },
        })
    }

    /// Identifies an OBU's ESAM: SELECT MF and READ BINARY of its system information.
    pub fn identify_obu(&mut self) -> Result<CardIdentity, PurseError> {
        self.select_mf()?;
        Ok(CardIdentity::Obu(self.read_obu_system_info()?))
    }
}
