//! `card.*`: reading the card in a reader.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::readers::ReaderParams;

/// The kind of card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// ETC 用户卡.
    Etc,
    /// 城市一卡通.
    City,
    /// An OBU (on-board unit) on a programmer.
    Obu,
}

impl CardKind {
    /// The kind's zh-CN name.
    pub fn label_zh(self) -> &'static str {
        match self {
            CardKind::Etc => "ETC用户卡",
            CardKind::City => "城市一卡通",
            CardKind::Obu => "OBU车载单元",
        }
    }
}

/// What `card.summary` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardSummary {
    pub kind: Option<CardKind>,
    /// zh-CN name of the kind.
    pub kind_label: String,
    /// The displayed card number (20 digits), or the OBU number.
    pub card_number: String,
    /// Balance in yuan as a decimal string.
    pub balance: Option<String>,
    /// Balance in fen.
    pub balance_fen: Option<i64>,
    /// Online (load) transaction counter: only when asked for (`online_counter`).
    pub online_atc: Option<u16>,
    /// Plate number as printed (ETC cards and OBUs).
    pub plate: Option<String>,
    /// Plate colour code (0 blue, 1 yellow, …).
    pub plate_colour: Option<u16>,
    /// Plate colour in zh-CN (蓝色 …).
    pub plate_colour_label: Option<String>,
    /// 储值卡 / 记账卡 for ETC cards.
    pub card_type: Option<String>,
    /// YYYY-MM-DD.
    pub start_date: Option<String>,
    /// YYYY-MM-DD.
    pub expiry_date: Option<String>,
    /// `tdes` or `sm4`.
    pub algorithm: Option<String>,
    /// OBU only: activated (tamper flag set).
    pub obu_activated: Option<bool>,
    /// Why some fields are missing (for example the PIN was refused).
    pub notes: Vec<String>,
}

/// What `card.balance` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardBalance {
    /// Balance in yuan as a decimal string.
    pub balance: String,
    /// Balance in fen.
    pub balance_fen: i64,
}

/// `card.summary`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {
    pub reader_id: String,
    /// Also read the online (load) counter. For an ETC card this presents the configured PIN
    /// (VERIFY PIN) and sends a probing INITIALIZE FOR LOAD of 1 fen, which changes nothing on
    /// the card. Off by default: a plain summary presents no PIN and starts no load.
    #[serde(default)]
    pub online_counter: bool,
}

crate::method!(
    /// Read the card in a reader: type, card number, plate, balance, validity; the online
    /// counter only on request.
    Summary, "card.summary", SummaryParams => CardSummary
);
crate::method!(
    /// Read the purse balance of the card in a reader.
    Balance, "card.balance", ReaderParams => CardBalance
);
