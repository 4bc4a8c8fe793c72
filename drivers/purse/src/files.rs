//! Typed card files: the layouts of `docs/card-protocol.md`, parsed and (where the host writes
//! them, and for tests and simulators) serialised back.
//!
//! Every parser checks the exact length first and reads fields with bounds-checked slicing,
//! so a truncated, oversized or garbled file is a [`ParseError`], never a panic. Fields that
//! are BCD or GBK keep their raw bytes (a card with an odd date or an unknown character still
//! parses and round-trips) and accessors give the decoded, display-friendly values.

use cardd_crypto::{bcd, Algorithm};
use serde::{Deserialize, Serialize};

use crate::codes::{key_index_for, TransactionType};
use crate::error::ParseError;
use crate::text;

/// Reads fixed-width fields from a byte string whose length was checked.
pub(crate) struct Fields<'a> {
    what: &'static str,
    expected: &'static str,
    rest: &'a [u8],
    total: usize,
}

impl<'a> Fields<'a> {
    /// Starts reading `bytes`, which must be exactly one of `lengths`.
    pub(crate) fn new(
        what: &'static str,
        bytes: &'a [u8],
        lengths: &[usize],
        expected: &'static str,
    ) -> Result<Self, ParseError> {
        if !lengths.contains(&bytes.len()) {
            return Err(ParseError::Length {
                what,
                expected,
                actual: bytes.len(),
            });
        }
        Ok(Fields {
            what,
            expected,
            rest: bytes,
            total: bytes.len(),
        })
    }

    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(*head)
            }
            None => Err(ParseError::Length {
                what: self.what,
                expected: self.expected,
                actual: self.total,
            }),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, ParseError> {
        let [a, b, c] = self.take::<3>()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// The low three bytes of `v`, big-endian (24-bit card fields; higher bits are dropped).
pub(crate) fn u24_bytes(v: u32) -> [u8; 3] {
    let [_, a, b, c] = v.to_be_bytes();
    [a, b, c]
}

/// Algorithm from a card or contract version byte: `0x5x` is SM4, anything else 3DES.
pub fn algorithm_from_version(version: u8) -> Algorithm {
    if version >> 4 == 5 {
        Algorithm::Sm4
    } else {
        Algorithm::Tdes
    }
}

/// Plate colour (2 bytes big-endian in 0015 and the ESAM vehicle file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateColour {
    /// 0
    Blue,
    /// 1
    Yellow,
    /// 2
    Black,
    /// 3
    White,
    /// 4 (small new-energy vehicles)
    GradientGreen,
    /// 5 (large new-energy vehicles)
    YellowGreen,
    /// 6
    BlueWhiteGradient,
    /// 11
    Green,
    /// 12
    Red,
    /// Any other code, kept as is.
    Other(u16),
}

impl PlateColour {
    /// The colour for a code.
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => PlateColour::Blue,
            1 => PlateColour::Yellow,
            2 => PlateColour::Black,
            3 => PlateColour::White,
            4 => PlateColour::GradientGreen,
            5 => PlateColour::YellowGreen,
            6 => PlateColour::BlueWhiteGradient,
            11 => PlateColour::Green,
            12 => PlateColour::Red,
            other => PlateColour::Other(other),
        }
    }

    /// The code stored on the card.
    pub fn code(self) -> u16 {
        match self {
            PlateColour::Blue => 0,
            PlateColour::Yellow => 1,
            PlateColour::Black => 2,
            PlateColour::White => 3,
            PlateColour::GradientGreen => 4,
            PlateColour::YellowGreen => 5,
            PlateColour::BlueWhiteGradient => 6,
            PlateColour::Green => 11,
            PlateColour::Red => 12,
            PlateColour::Other(code) => code,
        }
    }

    /// English name, `None` for [`PlateColour::Other`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            PlateColour::Blue => "blue",
            PlateColour::Yellow => "yellow",
            PlateColour::Black => "black",
            PlateColour::White => "white",
            PlateColour::GradientGreen => "gradient green",
            PlateColour::YellowGreen => "yellow-green",
            PlateColour::BlueWhiteGradient => "blue-white gradient",
            PlateColour::Green => "green",
            PlateColour::Red => "red",
            PlateColour::Other(_) => return None,
        })
    }
}

/// ETC card type (0015 byte 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcCardType {
    /// `0x16`: stored-value card (储值卡).
    StoredValue,
    /// `0x17`: account card (记账卡).
    Account,
    /// Any other code (pass and test cards...), kept as is.
    Other(u8),
}

impl EtcCardType {
    pub fn from_code(code: u8) -> Self {
        match code {
            0x16 => EtcCardType::StoredValue,
            0x17 => EtcCardType::Account,
            other => EtcCardType::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            EtcCardType::StoredValue => 0x16,
            EtcCardType::Account => 0x17,
            EtcCardType::Other(code) => code,
        }
    }
}

/// ETC user card issue information, ADF file 0015 (43 bytes, or 50 with 7 trailing bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcIssueInfo {
    /// Issuer province name, GBK (bytes 0..4; the first diversification level's `issuer4`).
    pub issuer_province: [u8; 4],
    /// Issuer code (bytes 4..8).
    pub issuer_code: [u8; 4],
    pub card_type: EtcCardType,
    /// Card version: `0x5x` SM4, otherwise 3DES.
    pub version: u8,
    /// Card network id, BCD.
    pub network_id_bcd: [u8; 2],
    /// CPU card internal number, BCD: the card's diversification factor.
    pub internal_number_bcd: [u8; 8],
    pub start_date_bcd: [u8; 4],
    pub expiry_date_bcd: [u8; 4],
    /// Plate, GBK, `00`-padded.
    pub plate: [u8; 12],
    pub user_type: u8,
    pub plate_colour: PlateColour,
    /// The 7 extra bytes of the 50-byte variant, kept verbatim.
    pub extension: Option<[u8; 7]>,
}

impl EtcIssueInfo {
    /// Length of the classic file.
    pub const LEN: usize = 43;
    /// Length of the newer file.
    pub const LEN_EXTENDED: usize = 50;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new(
            "ETC issue information (0015)",
            bytes,
            &[Self::LEN, Self::LEN_EXTENDED],
            "43 or 50",
        )?;
        let info = EtcIssueInfo {
            issuer_province: f.take()?,
            issuer_code: f.take()?,
            card_type: EtcCardType::from_code(f.u8()?),
            version: f.u8()?,
            network_id_bcd: f.take()?,
            internal_number_bcd: f.take()?,
            start_date_bcd: f.take()?,
            expiry_date_bcd: f.take()?,
            plate: f.take()?,
            user_type: f.u8()?,
            plate_colour: PlateColour::from_code(f.u16()?),
            extension: if f.remaining() == 7 {
                Some(f.take()?)
            } else {
                None
            },
        };
        Ok(info)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN_EXTENDED);
        out.extend_from_slice(&self.issuer_province);
        out.extend_from_slice(&self.issuer_code);
        out.push(self.card_type.code());
        out.push(self.version);
        out.extend_from_slice(&self.network_id_bcd);
        out.extend_from_slice(&self.internal_number_bcd);
        out.extend_from_slice(&self.start_date_bcd);
        out.extend_from_slice(&self.expiry_date_bcd);
        out.extend_from_slice(&self.plate);
        out.push(self.user_type);
        out.extend_from_slice(&self.plate_colour.code().to_be_bytes());
        if let Some(ext) = &self.extension {
            out.extend_from_slice(ext);
        }
        out
    }

    /// The first diversification level's factor half: the province bytes.
    pub fn issuer4(&self) -> [u8; 4] {
        self.issuer_province
    }

    /// The issuer province's name (e.g. `陕西`), when the bytes are a known province.
    pub fn issuer_province_name(&self) -> Option<&'static str> {
        text::province_name(&self.issuer_province)
    }

    /// Network id digits (4; hex digits if the card's BCD is malformed).
    pub fn network_id(&self) -> String {
        hex::encode_upper(self.network_id_bcd)
    }

    /// Internal number digits (16).
    pub fn internal_number(&self) -> String {
        hex::encode_upper(self.internal_number_bcd)
    }

    /// The internal number as the 8-byte diversification factor.
    pub fn internal_number_bytes(&self) -> [u8; 8] {
        self.internal_number_bcd
    }

    /// The displayed card number: network id + internal number (20 digits).
    pub fn card_number(&self) -> String {
        format!("{}{}", self.network_id(), self.internal_number())
    }

    /// Start date, `None` if the bytes are not a valid BCD date.
    pub fn start_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.start_date_bcd)
    }

    /// Expiry date, `None` if the bytes are not a valid BCD date.
    pub fn expiry_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.expiry_date_bcd)
    }

    /// The plate for display (province abbreviations and ASCII; `?` for other characters).
    pub fn plate_text(&self) -> String {
        text::plate_text(&self.plate)
    }

    /// The card's algorithm from its version byte.
    pub fn algorithm(&self) -> Algorithm {
        algorithm_from_version(self.version)
    }

    /// The purse key index for this card: `01` (3DES) or `41` (SM4).
    pub fn key_index(&self) -> u8 {
        key_index_for(self.algorithm())
    }
}

/// City one-card issue information, ADF file 0015 (30 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CityIssueInfo {
    pub issuer_code: [u8; 2],
    pub city_code: [u8; 2],
    pub industry_code: [u8; 2],
    pub rfu1: [u8; 2],
    /// Application type flag (0: interoperability off).
    pub app_type: u8,
    pub app_version: u8,
    /// Application serial, BCD (10 bytes; the last 8 are the diversification factor).
    pub app_serial: [u8; 10],
    pub start_date_bcd: [u8; 4],
    pub expiry_date_bcd: [u8; 4],
    pub rfu2: [u8; 2],
}

impl CityIssueInfo {
    pub const LEN: usize = 30;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new(
            "city card issue information (0015)",
            bytes,
            &[Self::LEN],
            "30",
        )?;
        Ok(CityIssueInfo {
            issuer_code: f.take()?,
            city_code: f.take()?,
            industry_code: f.take()?,
            rfu1: f.take()?,
            app_type: f.u8()?,
            app_version: f.u8()?,
            app_serial: f.take()?,
            start_date_bcd: f.take()?,
            expiry_date_bcd: f.take()?,
            rfu2: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.issuer_code);
        out.extend_from_slice(&self.city_code);
        out.extend_from_slice(&self.industry_code);
        out.extend_from_slice(&self.rfu1);
        out.push(self.app_type);
        out.push(self.app_version);
        out.extend_from_slice(&self.app_serial);
        out.extend_from_slice(&self.start_date_bcd);
        out.extend_from_slice(&self.expiry_date_bcd);
        out.extend_from_slice(&self.rfu2);
        out
    }

    /// The displayed card number: the application serial's 20 digits.
    pub fn card_number(&self) -> String {
        hex::encode_upper(self.app_serial)
    }

    /// The diversification factor: the last 8 bytes of the application serial.
    pub fn card8(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&self.app_serial[2..]);
        out
    }

    /// Issuer code ‖ city code, used as `issuer4` if a city scheme is configured two-level.
    pub fn issuer4(&self) -> [u8; 4] {
        let [a, b] = self.issuer_code;
        let [c, d] = self.city_code;
        [a, b, c, d]
    }

    pub fn start_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.start_date_bcd)
    }

    pub fn expiry_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.expiry_date_bcd)
    }
}

/// Card holder information, MF file 0016 (55 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub holder_flag: u8,
    pub staff_flag: u8,
    /// Holder name, GBK, padded.
    pub name: [u8; 20],
    /// ID number, ASCII, padded.
    pub id_number: [u8; 32],
    pub id_type: u8,
}

impl HolderInfo {
    pub const LEN: usize = 55;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("holder information (0016)", bytes, &[Self::LEN], "55")?;
        Ok(HolderInfo {
            holder_flag: f.u8()?,
            staff_flag: f.u8()?,
            name: f.take()?,
            id_number: f.take()?,
            id_type: f.u8()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(self.holder_flag);
        out.push(self.staff_flag);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.id_number);
        out.push(self.id_type);
        out
    }

    /// The name's GBK bytes without the padding (`00`, `FF`, spaces).
    pub fn name_gbk(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .rposition(|&b| !matches!(b, 0x00 | 0xFF | b' '))
            .map_or(0, |i| i + 1);
        &self.name[..end]
    }

    /// The ID number as text (non-printable bytes shown as `?`).
    pub fn id_number_text(&self) -> String {
        text::ascii_text(&self.id_number)
    }
}

/// One transaction record, file 0018 (23 bytes; record 1 is the newest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// For a load the online counter before it; for a purchase the offline counter before it.
    pub atc: u16,
    /// Overdraft limit (3 bytes).
    pub overdraft: u32,
    /// Amount in fen.
    pub amount: u32,
    /// Transaction type code (see [`TransactionType`]).
    pub tx_type: u8,
    pub terminal: [u8; 6],
    pub date_bcd: [u8; 4],
    pub time_bcd: [u8; 3],
}

impl LogRecord {
    pub const LEN: usize = 23;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("transaction record (0018)", bytes, &[Self::LEN], "23")?;
        Ok(LogRecord {
            atc: f.u16()?,
            overdraft: f.u24()?,
            amount: f.u32()?,
            tx_type: f.u8()?,
            terminal: f.take()?,
            date_bcd: f.take()?,
            time_bcd: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.atc.to_be_bytes());
        out.extend_from_slice(&u24_bytes(self.overdraft));
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.push(self.tx_type);
        out.extend_from_slice(&self.terminal);
        out.extend_from_slice(&self.date_bcd);
        out.extend_from_slice(&self.time_bcd);
        out
    }

    /// An unused slot (all `00` or all `FF`), which some cards return instead of `6A83`.
    pub fn is_empty(&self) -> bool {
        let bytes = self.to_bytes();
        bytes.iter().all(|&b| b == 0) || bytes.iter().all(|&b| b == 0xFF)
    }

    /// The transaction type, when the code is known.
    pub fn transaction_type(&self) -> Option<TransactionType> {
        TransactionType::from_code(self.tx_type)
    }

    pub fn date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.date_bcd)
    }

    pub fn time(&self) -> Option<(u8, u8, u8)> {
        bcd::decode_time(&self.time_bcd)
    }
}

/// The ETC composite (CAPP) record, file 0019 record `AA` (43 bytes: `AA 29` lock-flag + 40).
///
/// The field names are the old (pre-2019) layout; newer cards give some of the same bytes
/// other meanings, and every byte round-trips either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CappRecord {
    /// Byte 2 (`00`; the application lock flag on some cards).
    pub lock_flag: u8,
    pub entry_network: [u8; 2],
    pub entry_station: [u8; 2],
    pub entry_lane: u8,
    /// Entry time, UNIX seconds.
    pub entry_time: u32,
    pub vehicle_class: u8,
    /// In/out status (`03` ETC entry, `02` MTC exit...).
    pub status: u8,
    pub flag_station: [u8; 9],
    pub collector: [u8; 3],
    pub shift: u8,
    /// Plate, GBK, `00`-padded.
    pub plate: [u8; 12],
    pub reserved: [u8; 4],
}

impl CappRecord {
    pub const LEN: usize = 43;
    /// The record identifier (byte 0).
    pub const RECORD_ID: u8 = 0xAA;
    /// The length byte (byte 1): the 41 bytes after it.
    pub const LENGTH_BYTE: u8 = 0x29;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "composite record (0019)";
        let mut f = Fields::new(WHAT, bytes, &[Self::LEN], "43")?;
        if f.take::<2>()? != [Self::RECORD_ID, Self::LENGTH_BYTE] {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: "the record does not start with AA 29",
            });
        }
        Ok(CappRecord {
            lock_flag: f.u8()?,
            entry_network: f.take()?,
            entry_station: f.take()?,
            entry_lane: f.u8()?,
            entry_time: f.u32()?,
            vehicle_class: f.u8()?,
            status: f.u8()?,
            flag_station: f.take()?,
            collector: f.take()?,
            shift: f.u8()?,
            plate: f.take()?,
            reserved: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&[Self::RECORD_ID, Self::LENGTH_BYTE, self.lock_flag]);
        out.extend_from_slice(&self.entry_network);
        out.extend_from_slice(&self.entry_station);
        out.push(self.entry_lane);
        out.extend_from_slice(&self.entry_time.to_be_bytes());
        out.push(self.vehicle_class);
        out.push(self.status);
        out.extend_from_slice(&self.flag_station);
        out.extend_from_slice(&self.collector);
        out.push(self.shift);
        out.extend_from_slice(&self.plate);
        out.extend_from_slice(&self.reserved);
        out
    }

    /// An all-zero record (after the header), as a card leaves it before any toll.
    pub fn blank() -> Self {
        CappRecord {
            lock_flag: 0,
            entry_network: [0; 2],
            entry_station: [0; 2],
            entry_lane: 0,
            entry_time: 0,
            vehicle_class: 0,
            status: 0,
            flag_station: [0; 9],
            collector: [0; 3],
            shift: 0,
            plate: [0; 12],
            reserved: [0; 4],
        }
    }

    pub fn plate_text(&self) -> String {
        text::plate_text(&self.plate)
    }
}

/// OBU ESAM system information, MF EF01 (27 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObuSystemInfo {
    /// Contract provider (issuer; GBK province name twice, or `ETC\x01`...).
    pub contract_provider: [u8; 8],
    pub contract_type: u8,
    /// Contract version: `0x5x` SM4, otherwise 3DES.
    pub contract_version: u8,
    /// Contract serial: the OBU number and the diversification factor.
    pub contract_serial: [u8; 8],
    pub signed_date_bcd: [u8; 4],
    pub expiry_date_bcd: [u8; 4],
    /// Tamper flag: `00` not activated or tampered, `01` activated.
    pub tamper_flag: u8,
}

impl ObuSystemInfo {
    pub const LEN: usize = 27;
    /// Offset of the signed date (BCD `YYYYMMDD`); the expiry date follows it, so issuance
    /// writes both dates ([`Self::dates_bytes`]) in one UPDATE BINARY here.
    pub const SIGNED_DATE_OFFSET: u8 = 18;
    /// Offset of the expiry date (BCD `YYYYMMDD`).
    pub const EXPIRY_DATE_OFFSET: u8 = 22;
    /// Offset of the tamper (activation) flag, the file's last byte.
    pub const TAMPER_FLAG_OFFSET: u8 = 26;
    /// The tamper flag of an activated OBU (`00`: not activated, or tampered with).
    pub const ACTIVATED: u8 = 0x01;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("OBU system information (EF01)", bytes, &[Self::LEN], "27")?;
        Ok(ObuSystemInfo {
            contract_provider: f.take()?,
            contract_type: f.u8()?,
            contract_version: f.u8()?,
            contract_serial: f.take()?,
            signed_date_bcd: f.take()?,
            expiry_date_bcd: f.take()?,
            tamper_flag: f.u8()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.contract_provider);
        out.push(self.contract_type);
        out.push(self.contract_version);
        out.extend_from_slice(&self.contract_serial);
        out.extend_from_slice(&self.signed_date_bcd);
        out.extend_from_slice(&self.expiry_date_bcd);
        out.push(self.tamper_flag);
        out
    }

    pub fn algorithm(&self) -> Algorithm {
        algorithm_from_version(self.contract_version)
    }

    /// The OBU number (the contract serial as 16 hex digits).
    pub fn obu_number(&self) -> String {
        hex::encode_upper(self.contract_serial)
    }

    /// First four bytes of the contract provider.
    pub fn issuer4(&self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.contract_provider;
        [a, b, c, d]
    }

    /// The provider's province name, when its first four bytes are a known province.
    pub fn provider_province_name(&self) -> Option<&'static str> {
        text::province_name(&self.issuer4())
    }

    /// The OBU is activated (tamper flag `01`).
    pub fn is_activated(&self) -> bool {
        self.tamper_flag == Self::ACTIVATED
    }

    /// Sets the tamper flag to activated (what issuance writes at [`Self::TAMPER_FLAG_OFFSET`]).
    pub fn activate(&mut self) {
        self.tamper_flag = Self::ACTIVATED;
    }

    /// Sets the signed and expiry dates, `(year, month, day)`, encoded as BCD.
    pub fn set_dates(&mut self, signed: (u16, u8, u8), expiry: (u16, u8, u8)) {
        self.signed_date_bcd = bcd::date(signed.0, signed.1, signed.2);
        self.expiry_date_bcd = bcd::date(expiry.0, expiry.1, expiry.2);
    }

    /// The signed and expiry dates as the file holds them from [`Self::SIGNED_DATE_OFFSET`].
    pub fn dates_bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.signed_date_bcd);
        out[4..].copy_from_slice(&self.expiry_date_bcd);
        out
    }

    pub fn signed_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.signed_date_bcd)
    }

    pub fn expiry_date(&self) -> Option<(u16, u8, u8)> {
        bcd::decode_date(&self.expiry_date_bcd)
    }
}

/// OBU ESAM vehicle information, DF01 EF01 (59 bytes).
///
/// Bytes 0..16 are confirmed by public code; the rest is cardd's layout. The field list in
/// `docs/card-protocol.md` adds up to 61 bytes for a 59-byte file; cardd gives the engine
/// number the 14 bytes that remain (bytes 45..59).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObuVehicleInfo {
    /// Plate, GBK, `00`-padded.
    pub plate: [u8; 12],
    pub plate_colour: PlateColour,
    pub vehicle_class: u8,
    pub vehicle_user_type: u8,
    pub length_mm: u16,
    pub width_mm: u16,
    pub height_mm: u16,
    pub wheels: u8,
    pub axles: u8,
    pub wheelbase_mm: u16,
    /// Rated load in kg (trucks) or seats (coaches), 3 bytes.
    pub load_or_seats: u32,
    /// Description, GBK, padded.
    pub description: [u8; 16],
    /// Engine number, ASCII, padded.
    pub engine_number: [u8; 14],
}

impl ObuVehicleInfo {
    pub const LEN: usize = 59;
    /// Width of the plate field (GBK, `00`-padded).
    pub const PLATE_BYTES: usize = 12;
    /// Width of the description field (GBK, `00`-padded).
    pub const DESCRIPTION_BYTES: usize = 16;
    /// Width of the engine-number field (ASCII, `00`-padded).
    pub const ENGINE_NUMBER_BYTES: usize = 14;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new(
            "OBU vehicle information (DF01 EF01)",
            bytes,
            &[Self::LEN],
            "59",
        )?;
        Ok(ObuVehicleInfo {
            plate: f.take()?,
            plate_colour: PlateColour::from_code(f.u16()?),
            vehicle_class: f.u8()?,
            vehicle_user_type: f.u8()?,
            length_mm: f.u16()?,
            width_mm: f.u16()?,
            height_mm: f.u16()?,
            wheels: f.u8()?,
            axles: f.u8()?,
            wheelbase_mm: f.u16()?,
            load_or_seats: f.u24()?,
            description: f.take()?,
            engine_number: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.plate);
        out.extend_from_slice(&self.plate_colour.code().to_be_bytes());
        out.push(self.vehicle_class);
        out.push(self.vehicle_user_type);
        out.extend_from_slice(&self.length_mm.to_be_bytes());
        out.extend_from_slice(&self.width_mm.to_be_bytes());
        out.extend_from_slice(&self.height_mm.to_be_bytes());
        out.push(self.wheels);
        out.push(self.axles);
        out.extend_from_slice(&self.wheelbase_mm.to_be_bytes());
        out.extend_from_slice(&u24_bytes(self.load_or_seats));
        out.extend_from_slice(&self.description);
        out.extend_from_slice(&self.engine_number);
        out
    }

    pub fn plate_text(&self) -> String {
        text::plate_text(&self.plate)
    }

    pub fn engine_number_text(&self) -> String {
        text::ascii_text(&self.engine_number)
    }

    /// No plate written yet (a new OBU's vehicle file is all `00`).
    pub fn is_blank(&self) -> bool {
        self.plate.iter().all(|b| *b == 0)
    }

    /// Written for the same vehicle as `other`: same plate bytes and plate colour.
    pub fn same_vehicle(&self, other: &ObuVehicleInfo) -> bool {
        self.plate == other.plate && self.plate_colour == other.plate_colour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// The reference's sample 0015 (FS 20430104571).
    const ETC_0015: &str = "C9C2CEF761010001 16 10 6101 1518220000249639 20160526 20260526 C9C2414F4B313132 00000000 00 0000";

    #[test]
    fn etc_issue_info_decodes_the_reference_sample() {
        let info = EtcIssueInfo::parse(&h(ETC_0015)).unwrap();
        assert_eq!(info.issuer_province_name(), Some("陕西"));
        assert_eq!(info.issuer4(), [0xC9, 0xC2, 0xCE, 0xF7]);
        assert_eq!(info.issuer_code, [0x61, 0x01, 0x00, 0x01]);
        assert_eq!(info.card_type, EtcCardType::StoredValue);
        assert_eq!(info.version, 0x10);
        assert_eq!(info.network_id(), "6101");
        assert_eq!(info.internal_number(), "1518220000249639");
        assert_eq!(info.card_number(), "61011518220000249639");
        assert_eq!(
            info.internal_number_bytes(),
            [0x15, 0x18, 0x22, 0x00, 0x00, 0x24, 0x96, 0x39]
        );
        assert_eq!(info.start_date(), Some((2016, 5, 26)));
        assert_eq!(info.expiry_date(), Some((2026, 5, 26)));
        assert_eq!(info.plate_text(), "陕AOK112");
        assert_eq!(info.user_type, 0);
        assert_eq!(info.plate_colour, PlateColour::Blue);
        assert_eq!(info.algorithm(), Algorithm::Tdes);
        assert_eq!(info.key_index(), 0x01);
        assert_eq!(info.extension, None);
        assert_eq!(info.to_bytes(), h(ETC_0015));
    }

    #[test]
    fn etc_issue_info_50_byte_variant_and_sm4() {
        let mut bytes = h(ETC_0015);
        bytes[9] = 0x52;
        bytes[41..43].copy_from_slice(&[0x00, 0x0B]);
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        let info = EtcIssueInfo::parse(&bytes).unwrap();
        assert_eq!(info.algorithm(), Algorithm::Sm4);
        assert_eq!(info.key_index(), 0x41);
        assert_eq!(info.plate_colour, PlateColour::Green);
        assert_eq!(info.extension, Some([1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(info.to_bytes(), bytes);
        for len in [0, 42, 44, 49, 51] {
            let mut b = bytes.clone();
            b.resize(len, 0);
            assert!(
                matches!(EtcIssueInfo::parse(&b), Err(ParseError::Length { actual, .. }) if actual == len)
            );
        }
    }

    #[test]
    fn plate_colours_round_trip() {
        for code in 0..=20u16 {
            assert_eq!(PlateColour::from_code(code).code(), code);
        }
        assert_eq!(PlateColour::from_code(6), PlateColour::BlueWhiteGradient);
        assert_eq!(PlateColour::from_code(5).name(), Some("yellow-green"));
        assert_eq!(PlateColour::from_code(9), PlateColour::Other(9));
        assert_eq!(EtcCardType::from_code(0x17), EtcCardType::Account);
        assert_eq!(EtcCardType::from_code(0x15).code(), 0x15);
    }

    #[test]
    fn city_issue_info() {
        let bytes = h("1234 5678 0301 0000 01 02 31000000001234567890 20200101 20301231 0000");
        let info = CityIssueInfo::parse(&bytes).unwrap();
        assert_eq!(info.card_number(), "31000000001234567890");
        assert_eq!(
            info.card8(),
            [0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x90]
        );
        assert_eq!(info.issuer4(), [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(info.expiry_date(), Some((2030, 12, 31)));
        assert_eq!(info.to_bytes(), bytes);
        assert!(CityIssueInfo::parse(&bytes[..29]).is_err());
    }

    #[test]
    fn holder_log_capp() {
        let mut holder = vec![0x00, 0x01];
        holder.extend_from_slice(&h("D5C5C8FD"));
        holder.extend_from_slice(&[0; 16]);
        let mut id = b"110101199001011234".to_vec();
        id.resize(32, 0);
        holder.extend_from_slice(&id);
        holder.push(0x00);
        let info = HolderInfo::parse(&holder).unwrap();
        assert_eq!(info.name_gbk(), &h("D5C5C8FD")[..]);
        assert_eq!(info.id_number_text(), "110101199001011234");
        assert_eq!(info.to_bytes(), holder);
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<HolderInfo>(&json).unwrap(), info);

        let log = h("0005 000000 00002710 02 112233445566 20240102 030405");
        let rec = LogRecord::parse(&log).unwrap();
        assert_eq!(
            (rec.atc, rec.amount, rec.transaction_type()),
            (5, 10_000, Some(TransactionType::EpLoad))
        );
        assert_eq!(rec.date(), Some((2024, 1, 2)));
        assert_eq!(rec.time(), Some((3, 4, 5)));
        assert!(!rec.is_empty());
        assert_eq!(rec.to_bytes(), log);
        assert!(LogRecord::parse(&[0; 23]).unwrap().is_empty());

        let mut capp = CappRecord::blank();
        capp.entry_time = 0x5F5E_1000;
        capp.plate[..8].copy_from_slice(&h("C9C2414F4B313132"));
        let bytes = capp.to_bytes();
        assert_eq!(bytes.len(), 43);
        assert_eq!(&bytes[..3], &[0xAA, 0x29, 0x00]);
        assert_eq!(CappRecord::parse(&bytes).unwrap(), capp);
        assert_eq!(capp.plate_text(), "陕AOK112");
        let mut bad = bytes.clone();
        bad[0] = 0xAB;
        assert!(matches!(
            CappRecord::parse(&bad),
            Err(ParseError::Invalid { .. })
        ));
    }

    #[test]
    fn obu_files() {
        let sys = h("C4FECFC4C4FECFC4 01 52 0102030405060708 20240101 20340101 01");
        let info = ObuSystemInfo::parse(&sys).unwrap();
        assert_eq!(info.algorithm(), Algorithm::Sm4);
        assert_eq!(info.obu_number(), "0102030405060708");
        assert_eq!(info.provider_province_name(), Some("宁夏"));
        assert!(info.is_activated());
        assert_eq!(info.expiry_date(), Some((2034, 1, 1)));
        assert_eq!(info.to_bytes(), sys);
        assert!(ObuSystemInfo::parse(&h(
            "C4FECFC4C4FECFC4 01 52 0102030405060708 20240101 20340101 01 00"
        ))
        .is_err());

        let vehicle = ObuVehicleInfo {
            plate: h("C4FE4131323334350000 0000").try_into().unwrap(),
            plate_colour: PlateColour::Yellow,
            vehicle_class: 1,
            vehicle_user_type: 0,
            length_mm: 4800,
            width_mm: 1800,
            height_mm: 1500,
            wheels: 4,
            axles: 2,
            wheelbase_mm: 2800,
            load_or_seats: 5,
            description: [0; 16],
            engine_number: *b"ENG12345678901",
        };
        let bytes = vehicle.to_bytes();
        assert_eq!(bytes.len(), ObuVehicleInfo::LEN);
        assert_eq!(ObuVehicleInfo::parse(&bytes).unwrap(), vehicle);
        assert_eq!(vehicle.plate_text(), "宁A12345");
        assert_eq!(vehicle.engine_number_text(), "ENG12345678901");
        assert!(!vehicle.is_blank());
        assert!(ObuVehicleInfo::parse(&[0; 59]).unwrap().is_blank());
    }

    #[test]
    fn obu_system_offsets_and_issuance_fields() {
        let sys = h("C4FECFC4C4FECFC4 01 52 0102030405060708 00000000 00000000 00");
        let mut info = ObuSystemInfo::parse(&sys).unwrap();
        assert!(!info.is_activated());
        assert_eq!((info.signed_date(), info.expiry_date()), (None, None));

        info.set_dates((2024, 2, 29), (2034, 2, 28));
        info.activate();
        assert!(info.is_activated());
        assert_eq!(info.signed_date(), Some((2024, 2, 29)));
        assert_eq!(info.expiry_date(), Some((2034, 2, 28)));
        assert_eq!(info.dates_bytes(), *h("20240229 20340228"));
        let bytes = info.to_bytes();
        let at = |offset: u8| usize::from(offset);
        assert_eq!(
            bytes[at(ObuSystemInfo::SIGNED_DATE_OFFSET)..][..8],
            info.dates_bytes()
        );
        assert_eq!(
            bytes[at(ObuSystemInfo::EXPIRY_DATE_OFFSET)..][..4],
            info.expiry_date_bcd
        );
        assert_eq!(
            bytes[at(ObuSystemInfo::TAMPER_FLAG_OFFSET)],
            ObuSystemInfo::ACTIVATED
        );
        assert_eq!(
            at(ObuSystemInfo::TAMPER_FLAG_OFFSET),
            ObuSystemInfo::LEN - 1
        );
    }

    #[test]
    fn obu_vehicle_field_widths() {
        let vehicle = ObuVehicleInfo::parse(&[0; ObuVehicleInfo::LEN]).unwrap();
        assert_eq!(vehicle.plate.len(), ObuVehicleInfo::PLATE_BYTES);
        assert_eq!(vehicle.description.len(), ObuVehicleInfo::DESCRIPTION_BYTES);
        assert_eq!(
            vehicle.engine_number.len(),
            ObuVehicleInfo::ENGINE_NUMBER_BYTES
        );
        let mut other = vehicle.clone();
        assert!(vehicle.same_vehicle(&other));
        other.plate_colour = PlateColour::Yellow;
        assert!(!vehicle.same_vehicle(&other));
        other = vehicle.clone();
        other.plate[0] = b'A';
        assert!(!vehicle.same_vehicle(&other));
    }
}
