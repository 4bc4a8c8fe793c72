//! The protocol's codes, below every other module: key indexes and algorithm identifiers,
//! transaction types, purchase kinds and issuer key schemes. Commands, files, responses and the
//! security module all speak them; none of them is needed to define them.

use std::fmt;

use cardd_crypto::Algorithm;
use serde::{Deserialize, Serialize};

/// Purse key index of 3DES cards.
pub const KEY_INDEX_TDES: u8 = 0x01;
/// Purse key index of SM4 cards.
pub const KEY_INDEX_SM4: u8 = 0x41;
/// Algorithm identifier a card returns in INITIALIZE responses for 3DES.
pub const ALG_ID_TDES: u8 = 0x00;
/// Algorithm identifier a card returns in INITIALIZE responses for SM4.
pub const ALG_ID_SM4: u8 = 0x04;

/// The purse key index for cards of `alg`: `01` (3DES) or `41` (SM4).
pub fn key_index_for(alg: Algorithm) -> u8 {
    match alg {
        Algorithm::Tdes => KEY_INDEX_TDES,
        Algorithm::Sm4 => KEY_INDEX_SM4,
    }
}

/// The algorithm an INITIALIZE response's algorithm identifier names, if known.
pub fn algorithm_for_alg_id(alg_id: u8) -> Option<Algorithm> {
    match alg_id {
        ALG_ID_TDES => Some(Algorithm::Tdes),
        ALG_ID_SM4 => Some(Algorithm::Sm4),
        _ => None,
    }
}

/// Transaction type identifiers (MAC inputs, GET TRANSACTION PROVE, log records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionType {
    EdLoad,
    EpLoad,
    Unload,
    EdCash,
    EdPurchase,
    EpPurchase,
    OverdraftUpdate,
    CreditPurchase,
    CompositePurchase,
}

impl TransactionType {
    pub fn code(self) -> u8 {
        match self {
            TransactionType::EdLoad => 0x01,
            TransactionType::EpLoad => 0x02,
            TransactionType::Unload => 0x03,
            TransactionType::EdCash => 0x04,
            TransactionType::EdPurchase => 0x05,
            TransactionType::EpPurchase => 0x06,
            TransactionType::OverdraftUpdate => 0x07,
            TransactionType::CreditPurchase => 0x08,
            TransactionType::CompositePurchase => 0x09,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => TransactionType::EdLoad,
            0x02 => TransactionType::EpLoad,
            0x03 => TransactionType::Unload,
            0x04 => TransactionType::EdCash,
            0x05 => TransactionType::EdPurchase,
            0x06 => TransactionType::EpPurchase,
            0x07 => TransactionType::OverdraftUpdate,
            0x08 => TransactionType::CreditPurchase,
            0x09 => TransactionType::CompositePurchase,
            _ => return None,
        })
    }
}

/// A normal EP purchase or a composite (CAPP, toll) purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseKind {
    /// INITIALIZE FOR PURCHASE `80 50 01 02`, transaction type `06`.
    Normal,
    /// INITIALIZE FOR CAPP PURCHASE `80 50 03 02`, transaction type `09`.
    Composite,
}

impl PurchaseKind {
    /// P1 of the INITIALIZE command.
    pub fn p1(self) -> u8 {
        match self {
            PurchaseKind::Normal => 0x01,
            PurchaseKind::Composite => 0x03,
        }
    }

    pub fn transaction_type(self) -> TransactionType {
        match self {
            PurchaseKind::Normal => TransactionType::EpPurchase,
            PurchaseKind::Composite => TransactionType::CompositePurchase,
        }
    }
}

/// Which issuer key family a card belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScheme {
    /// ETC user cards (two-level diversification by default).
    Etc,
    /// City one-cards (one level by the application serial).
    City,
    /// OBU ESAMs (one level by the contract serial).
    Obu,
}

impl fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyScheme::Etc => "etc",
            KeyScheme::City => "city",
            KeyScheme::Obu => "obu",
        })
    }
}
