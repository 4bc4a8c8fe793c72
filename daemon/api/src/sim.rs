//! `sim.*`: the 模拟读卡器 panel of the embedded demo (`cardd --demo` only).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::NoParams;

/// A demo card as the panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SimCardView {
    /// `etc`, `etc_sm4`, `city` or `obu`.
    pub card: String,
    pub label: String,
    /// The card number (the contract serial for an OBU).
    pub card_number: String,
    /// The purse balance in yuan (`"100.00"`); none for an OBU.
    pub balance: Option<String>,
    /// Pulled out in the middle of a load and not inserted since.
    pub pulled_mid_load: bool,
}

/// A simulated reader as the panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SimReaderView {
    pub reader_id: String,
    /// 接触式读卡器, 非接触读卡器 or OBU 发行器.
    pub label: String,
    /// The card in the reader, if any.
    pub card: Option<SimCardView>,
    /// The card will be pulled right after it executes the next CREDIT FOR LOAD.
    pub pull_armed: bool,
    /// The demo cards this reader takes (`obu` for an OBU programmer, the cards otherwise).
    pub accepts: Vec<String>,
}

/// The panel: the readers and the cards outside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SimView {
    pub readers: Vec<SimReaderView>,
    /// Demo cards in no reader.
    pub outside: Vec<SimCardView>,
}

/// `sim.insert` and `sim.swap`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimCardParams {
    pub reader_id: String,
    /// `etc`, `etc_sm4`, `city` or `obu` (see `sim.readers`).
    pub card: String,
}

/// `sim.remove` and `sim.pull_during_next_load`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimReaderParams {
    pub reader_id: String,
}

/// `sim.pull_during_next_load`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimPullParams {
    pub reader_id: String,
    /// Pull the card just before the CREDIT FOR LOAD reaches it (写卡前拔卡: nothing is written,
    /// a 写卡失败 the card later proves) instead of right after it executes (圈存中拔卡: the money
    /// is on the card, its answer lost). Default false.
    #[serde(default)]
    pub before_write: bool,
}
/// Largest carried card, in bytes of JSON.
pub const CARRIED_CARD_BYTES_MAX: usize = 64 * 1024;

/// `sim.carry`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimCarryParams {
    /// A demo card outside the readers (`etc`, `etc_sm4`, `city` or `obu`).
    pub card: String,
}

/// `sim.carry`'s answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SimCarried {
    /// The card as it is now (balances, counters, log), to give to another site's `sim.bring`.
    pub card_json: String,
    /// This site's panel without it.
    pub view: SimView,
}

/// `sim.bring`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimBringParams {
    pub reader_id: String,
    /// A card another site's `sim.carry` gave (at most [`CARRIED_CARD_BYTES_MAX`] bytes).
    pub card_json: String,
}

crate::method!(
    /// The simulated readers, their cards and the demo cards outside them.
    Readers, "sim.readers", NoParams => SimView
);
crate::method!(
    /// Insert one of the demo cards into an empty simulated reader (插入卡片).
    Insert, "sim.insert", SimCardParams => SimView
);
crate::method!(
    /// Take the card out of a simulated reader (取出卡片).
    Remove, "sim.remove", SimReaderParams => SimView
);
crate::method!(
    /// Take the reader's card out and insert another demo card (更换卡片).
    Swap, "sim.swap", SimCardParams => SimView
);
crate::method!(
    /// Pull the reader's card around its next CREDIT FOR LOAD (圈存中拔卡 / 写卡前拔卡).
    PullDuringNextLoad, "sim.pull_during_next_load", SimPullParams => SimView
);
crate::method!(
    /// Take a demo card from outside the readers away from this site, to another site's panel
    /// (a customer carrying the card to another counter).
    Carry, "sim.carry", SimCarryParams => SimCarried
);
crate::method!(
    /// Put a card carried from another site into an empty simulated reader of this site.
    Bring, "sim.bring", SimBringParams => SimView
);
