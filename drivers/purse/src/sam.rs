//! The host side of the card cryptography: a security module that holds the issuer's master
//! keys and answers MAC/TAC questions about one card without ever handing a key out.
//!
//! Load stations and issuing desks use a hardware security module or a PSAM for this; the
//! [`SecurityModule`] trait is that boundary, so a hardware implementation can replace the
//! software one without the purse flows changing. [`SoftSam`] implements it in software from
//! a [`SamConfig`] (for development, the simulator and small deployments): it diversifies the
//! card keys from the masters per `docs/card-protocol.md` ("Keys and cryptography") and uses
//! `cardd-crypto` for every computation. Keys never appear in `Debug` output or errors.

use std::fmt;

use cardd_crypto::{self as crypto, mac_input, Algorithm, Key16};
use serde::{Deserialize, Serialize};

pub use crate::codes::KeyScheme;
use crate::codes::PurchaseKind;
pub use crate::error::SamError;
use crate::files::{CityIssueInfo, EtcIssueInfo, ObuSystemInfo};
use crate::responses::{InitLoadResponse, InitPurchaseResponse};

/// Everything the security module needs to derive one card's keys (no secret in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CardKeyContext {
    pub scheme: KeyScheme,
    pub algorithm: Algorithm,
    /// First-level factor half (ETC: 0015 bytes 0..4); unused by one-level schemes.
    pub issuer4: [u8; 4],
    /// The card's own diversification factor.
    pub card8: [u8; 8],
}

impl CardKeyContext {
    /// An ETC user card: algorithm from the version byte, `issuer4` the province bytes,
    /// `card8` the internal number.
    pub fn etc(info: &EtcIssueInfo) -> Self {
        CardKeyContext {
            scheme: KeyScheme::Etc,
            algorithm: info.algorithm(),
            issuer4: info.issuer4(),
            card8: info.internal_number_bytes(),
        }
    }

    /// A city one-card: its file does not say which algorithm it uses, so the caller does
    /// (see [`SchemeKeys::algorithm`]). `card8` is the last 8 bytes of the application
    /// serial, `issuer4` issuer code ‖ city code.
    pub fn city(info: &CityIssueInfo, algorithm: Algorithm) -> Self {
        CardKeyContext {
            scheme: KeyScheme::City,
            algorithm,
            issuer4: info.issuer4(),
            card8: info.card8(),
        }
    }

    /// An OBU ESAM: algorithm from the contract version, `card8` the contract serial.
    pub fn obu(info: &ObuSystemInfo) -> Self {
        CardKeyContext {
            scheme: KeyScheme::Obu,
            algorithm: info.algorithm(),
            issuer4: info.issuer4(),
            card8: info.contract_serial,
        }
    }
}

/// The key a secure-messaging MAC is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKey {
    /// An ETC or city card's application maintenance key (DAMK), for 0015/0016/0019 updates.
    CardMaintenance,
    /// An ESAM's system maintenance key (MF EF01 updates).
    ObuSystem,
    /// An ESAM's application maintenance key (DF01 EF01 updates).
    ObuApplication,
}

/// What a load is about, besides the card: the values MAC2 and the TAC cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTerms {
    /// Amount in fen.
    pub amount: u32,
    /// Terminal id (6 bytes).
    pub terminal: [u8; 6],
    /// Host date, BCD `YYYYMMDD`, sent in CREDIT FOR LOAD.
    pub date: [u8; 4],
    /// Host time, BCD `hhmmss`.
    pub time: [u8; 3],
}

/// What pays for a load: the funded record a load credits, stated by the caller and checked
/// by a security module that knows the records (see [`SecurityModule::authorize_load`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Funding {
    /// A paid ETC recharge record (充值记录).
    EtcRecord { record_id: String },
    /// A group recharge order whose quota is reserved (集团充值订单).
    GroupOrder { order_id: String },
    /// No funded record: the demo-keys test mode only.
    TestMode,
}

impl fmt::Display for Funding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Funding::EtcRecord { record_id } => write!(f, "recharge record {record_id}"),
            Funding::GroupOrder { order_id } => write!(f, "group order {order_id}"),
            Funding::TestMode => f.write_str("the unfunded test mode"),
        }
    }
}

/// A load a caller is about to start, asked of the security module before INITIALIZE FOR LOAD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadAuthorization {
    /// The journal transaction the load runs under.
    pub txn_id: String,
    /// The card's displayed number.
    pub card_number: String,
    /// The card's key context (MAC2 is asked for this card).
    pub card: CardKeyContext,
    /// Amount, terminal, date and time of the load (MAC2 is asked for these terms).
    pub terms: LoadTerms,
    /// What pays for it.
    pub funding: Funding,
}

/// What a purchase is about, besides the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseTerms {
    pub kind: PurchaseKind,
    /// Amount in fen.
    pub amount: u32,
    pub terminal: [u8; 6],
    /// Terminal transaction sequence number.
    pub term_seq: u32,
    pub date: [u8; 4],
    pub time: [u8; 3],
}

/// The host side of the card cryptography. Implementations hold master keys and never
/// return one; every method answers one question about one card.
pub trait SecurityModule: Send + Sync {
    /// Authorises a load before INITIALIZE FOR LOAD: a module that knows the funded records
    /// checks that `request.funding` pays for exactly this load and then computes one MAC2 for
    /// it. The default allows every load (a bare module has no records to check).
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        let _ = request;
        Ok(())
    }

    /// Checks the MAC1 of an INITIALIZE FOR LOAD response (`date`/`time` of `terms` unused).
    fn verify_load_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<(), SamError>;

    /// Computes the MAC2 for CREDIT FOR LOAD. Callers verify MAC1 first.
    fn load_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<[u8; 4], SamError>;

    /// Checks the TAC of a load (from CREDIT FOR LOAD or GET TRANSACTION PROVE).
    fn verify_load_tac(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError>;

    /// Computes the MAC1 for DEBIT FOR PURCHASE, as a PSAM would.
    fn purchase_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
    ) -> Result<[u8; 4], SamError>;

    /// Checks the card's MAC2 of DEBIT FOR PURCHASE.
    fn verify_purchase_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
        mac2: [u8; 4],
    ) -> Result<(), SamError>;

    /// Checks the TAC of a purchase.
    fn verify_purchase_tac(
        &self,
        card: &CardKeyContext,
        terms: &PurchaseTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError>;

    /// The MAC of a secure-messaging command: `data` is the header with Lc followed by the
    /// command data (see [`crate::commands::update_binary_sm_mac_input`]).
    fn secure_messaging_mac(
        &self,
        card: &CardKeyContext,
        key: MaintenanceKey,
        challenge: [u8; 4],
        data: &[u8],
    ) -> Result<[u8; 4], SamError>;

    /// Decrypts the answer of READ ENCRYPTED of the ESAM vehicle file and returns the file's
    /// plaintext bytes, checking the echoed `random`, the length byte and the padding.
    fn decrypt_obu_vehicle(
        &self,
        card: &CardKeyContext,
        random: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SamError>;
}

/// A master key as hex in configuration. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHex(String);

impl KeyHex {
    pub fn new(hex: impl Into<String>) -> Self {
        KeyHex(hex.into())
    }
}

impl fmt::Debug for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHex(..)")
    }
}

fn default_algorithm() -> Algorithm {
    Algorithm::Tdes
}

/// The master keys of an ETC or city scheme. A 16-byte master serves both 3DES and SM4 cards;
/// the card's algorithm comes from its [`CardKeyContext`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeKeys {
    /// The algorithm of this scheme's cards when the card does not declare it (city
    /// one-cards; ETC cards declare theirs in 0015's version byte). Default `tdes`.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// `true`: card key = Div(Div(master, issuer4‖issuer4), card8); `false`: Div(master, card8).
    pub two_level: bool,
    /// Master load key (cards' DLK). Needed to load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<KeyHex>,
    /// Master purchase key (cards' DPK). Needed to debit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase: Option<KeyHex>,
    /// Master TAC key (cards' DTK). Needed to verify TACs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tac: Option<KeyHex>,
    /// Master application maintenance key (cards' DAMK). Needed to update files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<KeyHex>,
}

/// The master keys of OBU ESAMs (one-level diversification by the contract serial).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObuKeys {
    /// System maintenance master (MF EF01 updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_maintenance: Option<KeyHex>,
    /// Application maintenance master (DF01 EF01 updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_maintenance: Option<KeyHex>,
    /// Application encryption master (encrypted reads of DF01 EF01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_encryption: Option<KeyHex>,
}

/// Configuration of a [`SoftSam`]: master keys per scheme; a scheme left out is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etc: Option<SchemeKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<SchemeKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obu: Option<ObuKeys>,
}

impl SamConfig {
    /// The public demo masters of `cardd_crypto::demo`: ETC two-level, city one-level (the
    /// same masters, 3DES and SM4 cards alike), and the OBU masters. Never for real cards.
    pub fn demo() -> Self {
        use cardd_crypto::demo;
        let scheme = |two_level| SchemeKeys {
            algorithm: Algorithm::Tdes,
            two_level,
            load: Some(KeyHex::new(demo::MASTER_LOAD_KEY)),
            purchase: Some(KeyHex::new(demo::MASTER_PURCHASE_KEY)),
            tac: Some(KeyHex::new(demo::MASTER_TAC_KEY)),
            maintenance: Some(KeyHex::new(demo::MASTER_MAINTENANCE_KEY)),
        };
        SamConfig {
            etc: Some(scheme(true)),
            city: Some(scheme(false)),
            obu: Some(ObuKeys {
                system_maintenance: Some(KeyHex::new(demo::OBU_SYSTEM_MAINTENANCE_KEY)),
                application_maintenance: Some(KeyHex::new(demo::OBU_APP_MAINTENANCE_KEY)),
                application_encryption: Some(KeyHex::new(demo::OBU_APP_ENCRYPTION_KEY)),
            }),
        }
    }

    /// The configured fallback algorithm of a scheme's cards ([`SchemeKeys::algorithm`]).
    pub fn algorithm_for(&self, scheme: KeyScheme) -> Option<Algorithm> {
        match scheme {
            KeyScheme::Etc => self.etc.as_ref().map(|s| s.algorithm),
            KeyScheme::City => self.city.as_ref().map(|s| s.algorithm),
            KeyScheme::Obu => None,
        }
    }
}

fn parse_key(name: &str, key: &Option<KeyHex>) -> Result<Option<Key16>, SamError> {
    match key {
        None => Ok(None),
        Some(KeyHex(hex)) => Key16::from_hex(hex.trim())
            .map(Some)
            .map_err(|e| SamError::BadKey {
                key: name.to_owned(),
                reason: e.to_string(),
            }),
    }
}

struct SchemeMasters {
    two_level: bool,
    load: Option<Key16>,
    purchase: Option<Key16>,
    tac: Option<Key16>,
    maintenance: Option<Key16>,
}

impl SchemeMasters {
    fn new(name: &str, keys: &SchemeKeys) -> Result<Self, SamError> {
        Ok(SchemeMasters {
            two_level: keys.two_level,
            load: parse_key(&format!("{name}.load"), &keys.load)?,
            purchase: parse_key(&format!("{name}.purchase"), &keys.purchase)?,
            tac: parse_key(&format!("{name}.tac"), &keys.tac)?,
            maintenance: parse_key(&format!("{name}.maintenance"), &keys.maintenance)?,
        })
    }
}

struct ObuMasters {
    system_maintenance: Option<Key16>,
    application_maintenance: Option<Key16>,
    application_encryption: Option<Key16>,
}

/// Which card key an operation needs.
#[derive(Clone, Copy)]
enum CardKey {
    Load,
    Purchase,
    Tac,
    Maintenance,
    ObuSystem,
    ObuApplication,
    ObuEncryption,
}

impl CardKey {
    fn name(self) -> &'static str {
        match self {
            CardKey::Load => "load",
            CardKey::Purchase => "purchase",
            CardKey::Tac => "tac",
            CardKey::Maintenance => "maintenance",
            CardKey::ObuSystem => "system_maintenance",
            CardKey::ObuApplication => "application_maintenance",
            CardKey::ObuEncryption => "application_encryption",
        }
    }
}

/// A software security module holding master keys in memory (zeroized on drop).
pub struct SoftSam {
    etc: Option<SchemeMasters>,
    city: Option<SchemeMasters>,
    obu: Option<ObuMasters>,
}

impl fmt::Debug for SoftSam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftSam")
            .field("etc", &self.etc.is_some())
            .field("city", &self.city.is_some())
            .field("obu", &self.obu.is_some())
            .finish()
    }
}

impl SoftSam {
    /// Loads the masters of `config`; a malformed key is an error naming it (never showing it).
    pub fn new(config: &SamConfig) -> Result<Self, SamError> {
        let obu = match &config.obu {
            None => None,
            Some(keys) => Some(ObuMasters {
                system_maintenance: parse_key("obu.system_maintenance", &keys.system_maintenance)?,
                application_maintenance: parse_key(
                    "obu.application_maintenance",
                    &keys.application_maintenance,
                )?,
                application_encryption: parse_key(
                    "obu.application_encryption",
                    &keys.application_encryption,
                )?,
            }),
        };
        Ok(SoftSam {
            etc: config
                .etc
                .as_ref()
                .map(|k| SchemeMasters::new("etc", k))
                .transpose()?,
            city: config
                .city
                .as_ref()
                .map(|k| SchemeMasters::new("city", k))
                .transpose()?,
            obu,
        })
    }

    /// [`SamConfig::demo`] loaded.
    pub fn demo() -> Self {
        // The demo keys are constants of cardd-crypto; should they ever be malformed, the
        // module simply has no keys and says so on first use.
        SoftSam::new(&SamConfig::demo()).unwrap_or(SoftSam {
            etc: None,
            city: None,
            obu: None,
        })
    }

    /// Derives `which` for `card`.
    fn card_key(&self, card: &CardKeyContext, which: CardKey) -> Result<Key16, SamError> {
        let scheme = card.scheme;
        let missing = || SamError::KeyNotConfigured {
            scheme,
            key: which.name(),
        };
        let not_in_scheme = || SamError::KeyNotInScheme {
            scheme,
            key: which.name(),
        };
        match scheme {
            KeyScheme::Etc | KeyScheme::City => {
                let masters = if scheme == KeyScheme::Etc {
                    &self.etc
                } else {
                    &self.city
                };
                let masters = masters.as_ref().ok_or(SamError::UnknownScheme { scheme })?;
                let master = match which {
                    CardKey::Load => &masters.load,
                    CardKey::Purchase => &masters.purchase,
                    CardKey::Tac => &masters.tac,
                    CardKey::Maintenance => &masters.maintenance,
                    CardKey::ObuSystem | CardKey::ObuApplication | CardKey::ObuEncryption => {
                        return Err(not_in_scheme())
                    }
                };
                let master = master.as_ref().ok_or_else(missing)?;
                Ok(if masters.two_level {
                    crypto::diversify_two_level(card.algorithm, master, &card.issuer4, &card.card8)
                } else {
                    crypto::diversify(card.algorithm, master, &card.card8)
                })
            }
            KeyScheme::Obu => {
                let masters = self
                    .obu
                    .as_ref()
                    .ok_or(SamError::UnknownScheme { scheme })?;
                let master = match which {
                    CardKey::ObuSystem => &masters.system_maintenance,
                    CardKey::ObuApplication => &masters.application_maintenance,
                    CardKey::ObuEncryption => &masters.application_encryption,
                    CardKey::Load | CardKey::Purchase | CardKey::Tac | CardKey::Maintenance => {
                        return Err(not_in_scheme())
                    }
                };
                let master = master.as_ref().ok_or_else(missing)?;
                Ok(crypto::diversify(card.algorithm, master, &card.card8))
            }
        }
    }

    fn load_session(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
    ) -> Result<crypto::SessionKey, SamError> {
        let dlk = self.card_key(card, CardKey::Load)?;
        Ok(crypto::load_session_key(
            card.algorithm,
            &dlk,
            init.random,
            init.online_atc,
        ))
    }

    fn purchase_session(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
    ) -> Result<crypto::SessionKey, SamError> {
        let dpk = self.card_key(card, CardKey::Purchase)?;
        Ok(crypto::purchase_session_key(
            card.algorithm,
            &dpk,
            init.random,
            init.offline_atc,
            terms.term_seq,
        ))
    }

    fn tac(&self, card: &CardKeyContext, data: &[u8]) -> Result<[u8; 4], SamError> {
        let dtk = self.card_key(card, CardKey::Tac)?;
        Ok(crypto::purse_mac(
            &crypto::tac_key(card.algorithm, &dtk),
            data,
        ))
    }
}

/// ETC and city cards load the electronic purse (EP).
const EP_LOAD: u8 = 0x02;

fn purchase_type(terms: &PurchaseTerms) -> u8 {
    terms.kind.transaction_type().code()
}

impl SecurityModule for SoftSam {
    fn verify_load_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<(), SamError> {
        let key = self.load_session(card, init)?;
        let mac = crypto::purse_mac(
            &key,
            &mac_input::load_mac1(init.old_balance, terms.amount, EP_LOAD, &terms.terminal),
        );
        check_mac(&mac, &init.mac1, SamError::Mac1Invalid)
    }

    fn load_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<[u8; 4], SamError> {
        let key = self.load_session(card, init)?;
        let data = mac_input::load_mac2(
            terms.amount,
            EP_LOAD,
            &terms.terminal,
            &terms.date,
            &terms.time,
        );
        Ok(crypto::purse_mac(&key, &data))
    }

    fn verify_load_tac(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        let new_balance = init
            .old_balance
            .checked_add(terms.amount)
            .ok_or(SamError::TacInvalid)?;
        let data = mac_input::load_tac(
            new_balance,
            init.online_atc,
            terms.amount,
            EP_LOAD,
            &terms.terminal,
            &terms.date,
            &terms.time,
        );
        let expected = self.tac(card, &data)?;
        check_mac(&expected, &tac, SamError::TacInvalid)
    }

    fn purchase_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
    ) -> Result<[u8; 4], SamError> {
        let key = self.purchase_session(card, init, terms)?;
        let data = mac_input::purchase_mac1(
            terms.amount,
            purchase_type(terms),
            &terms.terminal,
            &terms.date,
            &terms.time,
        );
        Ok(crypto::purse_mac(&key, &data))
    }

    fn verify_purchase_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        let key = self.purchase_session(card, init, terms)?;
        let expected = crypto::purse_mac(&key, &mac_input::purchase_mac2(terms.amount));
        check_mac(&expected, &mac2, SamError::Mac2Invalid)
    }

    fn verify_purchase_tac(
        &self,
        card: &CardKeyContext,
        terms: &PurchaseTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        let data = mac_input::purchase_tac(
            terms.amount,
            purchase_type(terms),
            &terms.terminal,
            terms.term_seq,
            &terms.date,
            &terms.time,
        );
        let expected = self.tac(card, &data)?;
        check_mac(&expected, &tac, SamError::TacInvalid)
    }

    fn secure_messaging_mac(
        &self,
        card: &CardKeyContext,
        key: MaintenanceKey,
        challenge: [u8; 4],
        data: &[u8],
    ) -> Result<[u8; 4], SamError> {
        let which = match key {
            MaintenanceKey::CardMaintenance => CardKey::Maintenance,
            MaintenanceKey::ObuSystem => CardKey::ObuSystem,
            MaintenanceKey::ObuApplication => CardKey::ObuApplication,
        };
        let card_key = self.card_key(card, which)?;
        Ok(crypto::secure_messaging_mac(
            card.algorithm,
            &card_key,
            challenge,
            data,
        ))
    }

    fn decrypt_obu_vehicle(
        &self,
        card: &CardKeyContext,
        random: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SamError> {
        let key = self.card_key(card, CardKey::ObuEncryption)?;
        let plain = crypto::ecb_decrypt(card.algorithm, &key, ciphertext).map_err(|_| {
            SamError::Decrypt {
                detail: "not a whole number of cipher blocks",
            }
        })?;
        unwrap_encrypted_file(card.algorithm, random, &plain)
    }
}

/// Undoes the READ ENCRYPTED framing: `random(8) [00×8 for SM4] len(1) file 80 00…`.
fn unwrap_encrypted_file(
    alg: Algorithm,
    random: &[u8; 8],
    plain: &[u8],
) -> Result<Vec<u8>, SamError> {
    let bad = |detail| SamError::Decrypt { detail };
    let (echoed, rest) = plain.split_first_chunk::<8>().ok_or(bad("too short"))?;
    if !crypto::mac_eq(echoed, random) {
        return Err(bad("the random does not match the one sent"));
    }
    let rest = match alg {
        Algorithm::Tdes => rest,
        Algorithm::Sm4 => match rest.split_first_chunk::<8>() {
            Some((zeros, tail)) if zeros.iter().all(|&b| b == 0) => tail,
            _ => return Err(bad("the SM4 header is not eight zero bytes")),
        },
    };
    let (&len, rest) = rest.split_first().ok_or(bad("too short"))?;
    let len = usize::from(len);
    let file = rest
        .get(..len)
        .ok_or(bad("the length byte exceeds the data"))?;
    let padding = rest.get(len..).unwrap_or_default();
    match padding.split_first() {
        None => {}
        Some((0x80, zeros)) if zeros.iter().all(|&b| b == 0) => {}
        Some(_) => return Err(bad("the padding is not 80 00…")),
    }
    Ok(file.to_vec())
}

/// The plaintext READ ENCRYPTED returns before encryption, for simulators and tests.
pub fn wrap_encrypted_file(alg: Algorithm, random: &[u8; 8], file: &[u8]) -> Vec<u8> {
    let mut out = random.to_vec();
    if alg == Algorithm::Sm4 {
        out.extend_from_slice(&[0; 8]);
    }
    out.push(file.len().min(255) as u8);
    out.extend_from_slice(file.get(..255).unwrap_or(file));
    out.push(0x80);
    let block = alg.block_size();
    let padded = out.len().div_ceil(block) * block;
    out.resize(padded, 0);
    out
}

/// `Ok` when `expected` equals `got` (compared in constant time), else `error`.
fn check_mac(expected: &[u8; 4], got: &[u8; 4], error: SamError) -> Result<(), SamError> {
    if crypto::mac_eq(expected, got) {
        Ok(())
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The reference's section 2.5 masters, one level, card8 = 1234567890ABCDEF.
    fn vector_sam() -> (SoftSam, CardKeyContext) {
        let config = SamConfig {
            etc: Some(SchemeKeys {
                algorithm: Algorithm::Tdes,
                two_level: false,
                load: Some(KeyHex::new("11223344556677888877665544332211")),
                purchase: Some(KeyHex::new("0102030405060708090A0B0C0D0E0F10")),
                tac: Some(KeyHex::new("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")),
                maintenance: None,
            }),
            city: None,
            obu: None,
        };
        let card = CardKeyContext {
            scheme: KeyScheme::Etc,
            algorithm: Algorithm::Tdes,
            issuer4: [0; 4],
            card8: arr("1234567890ABCDEF"),
        };
        (SoftSam::new(&config).unwrap(), card)
    }

    fn vector_load() -> (InitLoadResponse, LoadTerms) {
        let init = InitLoadResponse::parse(
            &hex::decode("000003E8000501 00 A1B2C3D4 55954E2A".replace(' ', "")).unwrap(),
        )
        .unwrap();
        let terms = LoadTerms {
            amount: 10_000,
            terminal: arr("112233445566"),
            date: arr("20240102"),
            time: arr("030405"),
        };
        (init, terms)
    }

    fn vector_purchase() -> (InitPurchaseResponse, PurchaseTerms) {
        let init = InitPurchaseResponse {
            balance: 1000,
            offline_atc: 7,
            overdraft_limit: 0,
            key_version: 1,
            alg_id: 0,
            random: arr("0BADCAFE"),
        };
        let terms = PurchaseTerms {
            kind: PurchaseKind::Normal,
            amount: 100,
            terminal: arr("112233445566"),
            term_seq: 0x102,
            date: arr("20240102"),
            time: arr("030405"),
        };
        (init, terms)
    }

    #[test]
    fn reproduces_the_reference_load_vectors() {
        let (sam, card) = vector_sam();
        let (init, terms) = vector_load();
        sam.verify_load_mac1(&card, &init, &terms).unwrap();
        assert_eq!(
            sam.load_mac2(&card, &init, &terms).unwrap(),
            arr("9F341DD2")
        );
        sam.verify_load_tac(&card, &init, &terms, arr("DA04C4A9"))
            .unwrap();

        let mut forged = init;
        forged.mac1[3] ^= 1;
        assert_eq!(
            sam.verify_load_mac1(&card, &forged, &terms),
            Err(SamError::Mac1Invalid)
        );
        assert_eq!(
            sam.verify_load_tac(&card, &init, &terms, arr("DA04C4A8")),
            Err(SamError::TacInvalid)
        );
        let other = LoadTerms {
            amount: 10_001,
            ..terms
        };
        assert_eq!(
            sam.verify_load_mac1(&card, &init, &other),
            Err(SamError::Mac1Invalid)
        );
    }

    #[test]
    fn reproduces_the_reference_purchase_vectors() {
        let (sam, card) = vector_sam();
        let (init, terms) = vector_purchase();
        assert_eq!(
            sam.purchase_mac1(&card, &init, &terms).unwrap(),
            arr("48974A28")
        );
        sam.verify_purchase_mac2(&card, &init, &terms, arr("484C18AB"))
            .unwrap();
        sam.verify_purchase_tac(&card, &terms, arr("CA673EC9"))
            .unwrap();
        assert_eq!(
            sam.verify_purchase_mac2(&card, &init, &terms, arr("484C18AC")),
            Err(SamError::Mac2Invalid)
        );
        assert_eq!(
            sam.verify_purchase_tac(&card, &terms, arr("00000000")),
            Err(SamError::TacInvalid)
        );
    }

    #[test]
    fn sm4_load_mac1_vector() {
        let (sam, mut card) = vector_sam();
        card.algorithm = Algorithm::Sm4;
        let (mut init, terms) = vector_load();
        init.alg_id = 0x04;
        init.mac1 = arr("6138DDAF");
        sam.verify_load_mac1(&card, &init, &terms).unwrap();
    }

    #[test]
    fn missing_schemes_and_keys_are_named() {
        let (sam, card) = vector_sam();
        let city = CardKeyContext {
            scheme: KeyScheme::City,
            ..card
        };
        let (init, terms) = vector_load();
        assert_eq!(
            sam.load_mac2(&city, &init, &terms),
            Err(SamError::UnknownScheme {
                scheme: KeyScheme::City
            })
        );
        let err = sam
            .secure_messaging_mac(&card, MaintenanceKey::CardMaintenance, [0; 4], &[])
            .unwrap_err();
        assert_eq!(
            err,
            SamError::KeyNotConfigured {
                scheme: KeyScheme::Etc,
                key: "maintenance"
            }
        );
        assert!(err.to_string().contains("add `maintenance`"), "{err}");
        let demo = SoftSam::demo();
        let err = demo
            .secure_messaging_mac(&card, MaintenanceKey::ObuSystem, [0; 4], &[])
            .unwrap_err();
        assert!(matches!(err, SamError::KeyNotInScheme { .. }), "{err}");
        let obu = CardKeyContext {
            scheme: KeyScheme::Obu,
            ..card
        };
        assert!(matches!(
            demo.load_mac2(&obu, &init, &terms),
            Err(SamError::KeyNotInScheme { .. })
        ));
    }

    #[test]
    fn keys_never_leak_into_debug_or_errors() {
        let config = SamConfig::demo();
        let text = format!("{config:?} {:?}", SoftSam::new(&config).unwrap());
        for key in [
            cardd_crypto::demo::MASTER_LOAD_KEY,
            cardd_crypto::demo::OBU_APP_ENCRYPTION_KEY,
        ] {
            assert!(
                !text.contains(key) && !text.to_lowercase().contains(&key.to_lowercase()),
                "{text}"
            );
        }
        let mut bad = SamConfig::demo();
        if let Some(etc) = bad.etc.as_mut() {
            etc.tac = Some(KeyHex::new("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7BZ"));
        }
        let err = SoftSam::new(&bad).unwrap_err();
        assert!(
            matches!(&err, SamError::BadKey { key, .. } if key == "etc.tac"),
            "{err}"
        );
        assert!(!err.to_string().contains("A1A2A3"), "{err}");
    }

    #[test]
    fn config_is_strict_json() {
        let json = serde_json::to_value(SamConfig::demo()).unwrap();
        let back: SamConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, SamConfig::demo());
        assert_eq!(json["etc"]["algorithm"], "tdes");
        assert_eq!(json["etc"]["two_level"], true);
        let typo = serde_json::json!({"etc": {"two_level": true, "laod": "00"}});
        let err = serde_json::from_value::<SamConfig>(typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `laod`"), "{err}");
        let err = serde_json::from_value::<SamConfig>(serde_json::json!({"bus": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bus`"), "{err}");
        let minimal: SamConfig =
            serde_json::from_value(serde_json::json!({"city": {"two_level": false, "load": "00112233445566778899AABBCCDDEEFF"}}))
                .unwrap();
        assert_eq!(
            minimal.algorithm_for(KeyScheme::City),
            Some(Algorithm::Tdes)
        );
        assert!(minimal.etc.is_none());
        SoftSam::new(&minimal).unwrap();
    }

    #[test]
    fn demo_two_level_differs_from_one_level() {
        let sam = SoftSam::demo();
        let (init, terms) = vector_load();
        let card8 = arr("1234567890ABCDEF");
        let etc = CardKeyContext {
            scheme: KeyScheme::Etc,
            algorithm: Algorithm::Tdes,
            issuer4: arr("C9C2CEF7"),
            card8,
        };
        let city = CardKeyContext {
            scheme: KeyScheme::City,
            ..etc
        };
        // City is one-level with the vector masters: the reference MAC2.
        assert_eq!(
            sam.load_mac2(&city, &init, &terms).unwrap(),
            arr("9F341DD2")
        );
        assert_ne!(sam.load_mac2(&etc, &init, &terms).unwrap(), arr("9F341DD2"));
    }

    #[test]
    fn encrypted_vehicle_file_round_trips() {
        let sam = SoftSam::demo();
        let file: Vec<u8> = (0..59).collect();
        let random = arr::<8>("0102030405060708");
        for alg in [Algorithm::Tdes, Algorithm::Sm4] {
            let card = CardKeyContext {
                scheme: KeyScheme::Obu,
                algorithm: alg,
                issuer4: [0; 4],
                card8: arr("0011223344556677"),
            };
            let key = crypto::diversify(
                alg,
                &Key16::from_hex(cardd_crypto::demo::OBU_APP_ENCRYPTION_KEY).unwrap(),
                &card.card8,
            );
            let plain = wrap_encrypted_file(alg, &random, &file);
            assert_eq!(plain.len(), if alg == Algorithm::Tdes { 72 } else { 80 });
            let cipher = crypto::ecb_encrypt(alg, &key, &plain).unwrap();
            assert_eq!(
                sam.decrypt_obu_vehicle(&card, &random, &cipher).unwrap(),
                file
            );
            let other_random = arr::<8>("0102030405060709");
            assert!(matches!(
                sam.decrypt_obu_vehicle(&card, &other_random, &cipher),
                Err(SamError::Decrypt { .. })
            ));
            assert!(matches!(
                sam.decrypt_obu_vehicle(&card, &random, &cipher[1..]),
                Err(SamError::Decrypt { .. })
            ));
        }
    }

    #[test]
    fn unwrap_rejects_malformed_plaintext() {
        let random = [9u8; 8];
        let ok = wrap_encrypted_file(Algorithm::Tdes, &random, &[1, 2, 3]);
        assert_eq!(
            unwrap_encrypted_file(Algorithm::Tdes, &random, &ok).unwrap(),
            [1, 2, 3]
        );
        let mut bad_pad = ok.clone();
        bad_pad[12] = 0x81;
        assert!(unwrap_encrypted_file(Algorithm::Tdes, &random, &bad_pad).is_err());
        let mut long = ok.clone();
        long[8] = 200;
        assert!(unwrap_encrypted_file(Algorithm::Tdes, &random, &long).is_err());
        assert!(unwrap_encrypted_file(Algorithm::Sm4, &random, &ok).is_err());
        assert!(unwrap_encrypted_file(Algorithm::Tdes, &random, &[]).is_err());
    }
}
