//! Command builders: every command of `docs/card-protocol.md` as a [`CommandApdu`].
//!
//! Builders are pure (no I/O) so that the exact bytes sent to a card can be tested against
//! the contract and reused by anyone driving a card by hand. Arguments that could make a
//! malformed command (a PIN, an SFI, an offset, data length) are typed or checked, so a
//! builder never produces bytes the contract does not describe.

use std::fmt;

use cardd_crypto::Algorithm;
use cardd_reader::CommandApdu;

pub use crate::codes::{
    algorithm_for_alg_id, key_index_for, PurchaseKind, TransactionType, ALG_ID_SM4, ALG_ID_TDES,
    KEY_INDEX_SM4, KEY_INDEX_TDES,
};
use crate::error::CommandError;
use crate::files::CappRecord;

/// File id of the MF.
pub const FID_MF: u16 = 0x3F00;
/// File id of the ETC / city purse ADF.
pub const FID_ETC_ADF: u16 = 0x1001;
/// File id of the OBU ESAM application DF.
pub const FID_OBU_DF01: u16 = 0xDF01;
/// "1PAY.SYS.DDF01", the payment system environment name; selecting it selects the MF.
pub const PSE_NAME: &[u8] = b"1PAY.SYS.DDF01";
/// DF name of the ETC / city purse ADF.
pub const ETC_ADF_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x00, 0x03, 0x86, 0x98, 0x07, 0x01];

/// A short file identifier (1..=30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sfi(u8);

impl Sfi {
    /// ESAM EF01 (system information under MF, vehicle information under DF01).
    pub const ESAM_EF01: Sfi = Sfi(0x01);
    /// 0015 issue information.
    pub const ISSUE: Sfi = Sfi(0x15);
    /// 0016 holder information (MF).
    pub const HOLDER: Sfi = Sfi(0x16);
    /// 0018 transaction log.
    pub const LOG: Sfi = Sfi(0x18);
    /// 0019 composite (CAPP) record.
    pub const CAPP: Sfi = Sfi(0x19);

    pub fn new(sfi: u8) -> Result<Self, CommandError> {
        if (1..=30).contains(&sfi) {
            Ok(Sfi(sfi))
        } else {
            Err(CommandError::BadSfi { sfi })
        }
    }

    pub fn value(self) -> u8 {
        self.0
    }
}

/// A PIN in the form a card verifies it. `Debug` does not show the digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Vec<u8>);

impl Pin {
    const EXPECTED: &'static str = "2 to 12 decimal digits";

    /// The bytes VERIFY PIN carries (for the refusal record's digest; never logged).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn check(digits: &str) -> Result<&[u8], CommandError> {
        let d = digits.as_bytes();
        if (2..=12).contains(&d.len()) && d.iter().all(u8::is_ascii_digit) {
            Ok(d)
        } else {
            Err(CommandError::BadPin {
                expected: Self::EXPECTED,
            })
        }
    }

    /// The ASCII form ETC cards use (`"123456"` → `313233343536`).
    pub fn ascii(digits: &str) -> Result<Self, CommandError> {
        Ok(Pin(Self::check(digits)?.to_vec()))
    }

    /// The packed BCD form city cards use (`"123456"` → `123456`); an odd digit count is
    /// padded with `F`.
    pub fn bcd(digits: &str) -> Result<Self, CommandError> {
        let d = Self::check(digits)?;
        let packed = d
            .chunks(2)
            .map(|pair| match pair {
                [hi, lo] => ((hi - b'0') << 4) | (lo - b'0'),
                [hi] => ((hi - b'0') << 4) | 0x0F,
                _ => 0xFF,
            })
            .collect();
        Ok(Pin(packed))
    }

    /// The bytes sent in VERIFY.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// Expected length for a short command: `le` bytes, `0` meaning 256 as on the wire.
fn short_le(le: u8) -> u32 {
    if le == 0 {
        256
    } else {
        u32::from(le)
    }
}

/// SELECT by file id: `00 A4 00 00 02 FID`.
pub fn select_file(fid: u16) -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data(fid.to_be_bytes())
}

/// SELECT by DF name: `00 A4 04 00 Lc name` (1 to 16 bytes).
pub fn select_name(name: &[u8]) -> Result<CommandApdu, CommandError> {
    if name.is_empty() || name.len() > 16 {
        return Err(CommandError::DataTooLong {
            len: name.len(),
            max: 16,
        });
    }
    Ok(CommandApdu::new(0x00, 0xA4, 0x04, 0x00).with_data(name))
}

/// SELECT MF: `00 A4 00 00 02 3F00`.
pub fn select_mf() -> CommandApdu {
    select_file(FID_MF)
}

/// SELECT the PSE by name (selects the MF): `00 A4 04 00 0E 315041592E5359532E4444463031`.
pub fn select_pse() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x04, 0x00).with_data(PSE_NAME)
}

/// SELECT the purse ADF by file id: `00 A4 00 00 02 1001`.
pub fn select_etc_adf() -> CommandApdu {
    select_file(FID_ETC_ADF)
}

/// SELECT the purse ADF by DF name: `00 A4 04 00 09 A00000000386980701`.
pub fn select_etc_adf_by_aid() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x04, 0x00).with_data(ETC_ADF_AID)
}

/// SELECT the ESAM application DF: `00 A4 00 00 02 DF01`.
pub fn select_df01() -> CommandApdu {
    select_file(FID_OBU_DF01)
}

/// READ BINARY by short file id: `00 B0 (80|SFI) offset Le` (`le` 0 = 256: to the end).
pub fn read_binary_sfi(sfi: Sfi, offset: u8, le: u8) -> CommandApdu {
    CommandApdu::new(0x00, 0xB0, 0x80 | sfi.value(), offset).with_le(short_le(le))
}

/// READ BINARY of the selected EF: `00 B0 offHi offLo Le` (offset at most `7FFF`).
pub fn read_binary(offset: u16, le: u8) -> Result<CommandApdu, CommandError> {
    if offset > 0x7FFF {
        return Err(CommandError::BadOffset {
            offset,
            max: 0x7FFF,
        });
    }
    let [hi, lo] = offset.to_be_bytes();
    Ok(CommandApdu::new(0x00, 0xB0, hi, lo).with_le(short_le(le)))
}

/// READ RECORD `n` of a file by SFI: `00 B2 n (SFI<<3|4) Le`.
pub fn read_record(sfi: Sfi, record: u8, le: u8) -> CommandApdu {
    CommandApdu::new(0x00, 0xB2, record, (sfi.value() << 3) | 0x04).with_le(short_le(le))
}

/// READ RECORD `n` of the 0018 log: `00 B2 n C4 17`.
pub fn read_log_record(record: u8) -> CommandApdu {
    read_record(Sfi::LOG, record, 23)
}

/// READ RECORD of the 0019 composite record: `00 B2 01 CC 2B`.
pub fn read_capp_record() -> CommandApdu {
    read_record(Sfi::CAPP, 0x01, 43)
}

/// VERIFY PIN: `00 20 00 00 Lc PIN`.
pub fn verify_pin(pin: &Pin) -> CommandApdu {
    CommandApdu::new(0x00, 0x20, 0x00, 0x00).with_data(pin.as_bytes())
}

/// GET CHALLENGE of 4 bytes: `00 84 00 00 04` (arms one secure-messaging command).
pub fn get_challenge() -> CommandApdu {
    CommandApdu::new(0x00, 0x84, 0x00, 0x00).with_le(4)
}

/// GET CHALLENGE of 8 bytes: `00 84 00 00 08`.
pub fn get_challenge_8() -> CommandApdu {
    CommandApdu::new(0x00, 0x84, 0x00, 0x00).with_le(8)
}

/// Most data an UPDATE BINARY with secure messaging carries (Lc = data + 4-byte MAC ≤ 255).
pub const SM_DATA_BYTES_MAX: usize = 251;

fn sm_header(sfi: Sfi, offset: u8, data: &[u8]) -> Result<[u8; 5], CommandError> {
    if data.is_empty() || data.len() > SM_DATA_BYTES_MAX {
        return Err(CommandError::DataTooLong {
            len: data.len(),
            max: SM_DATA_BYTES_MAX,
        });
    }
    // data.len() + 4 <= 255 was just checked.
    let lc = (data.len() + 4) as u8;
    Ok([0x04, 0xD6, 0x80 | sfi.value(), offset, lc])
}

/// The data the secure-messaging MAC of UPDATE BINARY covers: the header with its Lc
/// (`04 D6 (80|SFI) off Lc`, Lc counting the MAC) followed by the data.
pub fn update_binary_sm_mac_input(
    sfi: Sfi,
    offset: u8,
    data: &[u8],
) -> Result<Vec<u8>, CommandError> {
    let mut out = sm_header(sfi, offset, data)?.to_vec();
    out.extend_from_slice(data);
    Ok(out)
}

/// UPDATE BINARY with secure messaging: `04 D6 (80|SFI) off Lc data MAC(4)`.
pub fn update_binary_sm(
    sfi: Sfi,
    offset: u8,
    data: &[u8],
    mac: [u8; 4],
) -> Result<CommandApdu, CommandError> {
    let [cla, ins, p1, p2, _] = sm_header(sfi, offset, data)?;
    let mut body = data.to_vec();
    body.extend_from_slice(&mac);
    Ok(CommandApdu::new(cla, ins, p1, p2).with_data(body))
}

/// GET BALANCE of the EP: `80 5C 00 02 04`.
pub fn get_balance() -> CommandApdu {
    CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(4)
}

/// INITIALIZE FOR LOAD (EP): `80 50 00 02 0B keyIdx amount(4) terminal(6) 10`.
pub fn initialize_for_load(key_index: u8, amount: u32, terminal: &[u8; 6]) -> CommandApdu {
    CommandApdu::new(0x80, 0x50, 0x00, 0x02)
        .with_data(init_data(key_index, amount, terminal))
        .with_le(0x10)
}

/// CREDIT FOR LOAD: `80 52 00 00 0B date(4) time(3) MAC2(4) 04`.
pub fn credit_for_load(date: &[u8; 4], time: &[u8; 3], mac2: [u8; 4]) -> CommandApdu {
    let mut data = Vec::with_capacity(11);
    data.extend_from_slice(date);
    data.extend_from_slice(time);
    data.extend_from_slice(&mac2);
    CommandApdu::new(0x80, 0x52, 0x00, 0x00)
        .with_data(data)
        .with_le(0x04)
}

/// INITIALIZE FOR PURCHASE (`80 50 01 02`) or CAPP PURCHASE (`80 50 03 02`):
/// `0B keyIdx amount(4) terminal(6) 0F`.
pub fn initialize_for_purchase(
    kind: PurchaseKind,
    key_index: u8,
    amount: u32,
    terminal: &[u8; 6],
) -> CommandApdu {
    CommandApdu::new(0x80, 0x50, kind.p1(), 0x02)
        .with_data(init_data(key_index, amount, terminal))
        .with_le(0x0F)
}

fn init_data(key_index: u8, amount: u32, terminal: &[u8; 6]) -> Vec<u8> {
    let mut data = Vec::with_capacity(11);
    data.push(key_index);
    data.extend_from_slice(&amount.to_be_bytes());
    data.extend_from_slice(terminal);
    data
}

/// UPDATE CAPP DATA CACHE of the 0019 record: `80 DC AA C8 2B AA 29 00 + 40 bytes`.
pub fn update_capp_data_cache(record: &CappRecord) -> CommandApdu {
    CommandApdu::new(0x80, 0xDC, CappRecord::RECORD_ID, 0xC8).with_data(record.to_bytes())
}

/// DEBIT FOR PURCHASE: `80 54 01 00 0F termSeq(4) date(4) time(3) MAC1(4) 08`.
pub fn debit_for_purchase(
    term_seq: u32,
    date: &[u8; 4],
    time: &[u8; 3],
    mac1: [u8; 4],
) -> CommandApdu {
    let mut data = Vec::with_capacity(15);
    data.extend_from_slice(&term_seq.to_be_bytes());
    data.extend_from_slice(date);
    data.extend_from_slice(time);
    data.extend_from_slice(&mac1);
    CommandApdu::new(0x80, 0x54, 0x01, 0x00)
        .with_data(data)
        .with_le(0x08)
}

/// GET TRANSACTION PROVE: `80 5A 00 type 02 ATC(2) 08` (ATC after the transaction).
pub fn get_transaction_prove(tx_type: TransactionType, atc: u16) -> CommandApdu {
    CommandApdu::new(0x80, 0x5A, 0x00, tx_type.code())
        .with_data(atc.to_be_bytes())
        .with_le(0x08)
}

/// GET CHIP ID of an ESAM: `80 F6 00 03 04`.
pub fn get_chip_id() -> CommandApdu {
    CommandApdu::new(0x80, 0xF6, 0x00, 0x03).with_le(4)
}

/// Key id and key version READ ENCRYPTED names on an ESAM of `alg`: `3B 00` for 3DES, `20 40`
/// for SM4 (reference §4).
pub fn obu_read_key_for(alg: Algorithm) -> (u8, u8) {
    match alg {
        Algorithm::Tdes => (0x3B, 0x00),
        Algorithm::Sm4 => (0x20, 0x40),
    }
}

/// READ ENCRYPTED of the ESAM vehicle file: `00 B4 00 00 0A random(8) keyId keyVer`.
pub fn read_encrypted(random: &[u8; 8], key_id: u8, key_version: u8) -> CommandApdu {
    let mut data = Vec::with_capacity(10);
    data.extend_from_slice(random);
    data.push(key_id);
    data.push(key_version);
    CommandApdu::new(0x00, 0xB4, 0x00, 0x00).with_data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command's bytes as upper-case hex.
    fn hx(cmd: &CommandApdu) -> String {
        hex::encode_upper(cmd.to_bytes().unwrap())
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn selects() {
        assert_eq!(hx(&select_mf()), "00A40000023F00");
        assert_eq!(hx(&select_pse()), "00A404000E315041592E5359532E4444463031");
        assert_eq!(hx(&select_etc_adf()), "00A40000021001");
        assert_eq!(hx(&select_etc_adf_by_aid()), "00A4040009A00000000386980701");
        assert_eq!(hx(&select_df01()), "00A4000002DF01");
        assert_eq!(
            hx(&select_name(&ETC_ADF_AID).unwrap()),
            "00A4040009A00000000386980701"
        );
        assert!(select_name(&[]).is_err());
        assert!(select_name(&[0; 17]).is_err());
    }

    #[test]
    fn reads() {
        assert_eq!(hx(&read_binary_sfi(Sfi::ISSUE, 0, 0x2B)), "00B095002B");
        assert_eq!(hx(&read_binary_sfi(Sfi::ISSUE, 0, 0)), "00B0950000");
        assert_eq!(hx(&read_binary_sfi(Sfi::HOLDER, 0, 0x37)), "00B0960037");
        assert_eq!(hx(&read_binary_sfi(Sfi::ESAM_EF01, 0, 0x1B)), "00B081001B");
        assert_eq!(hx(&read_binary(0x0012, 8).unwrap()), "00B0001208");
        assert!(matches!(
            read_binary(0x8000, 1),
            Err(CommandError::BadOffset { .. })
        ));
        assert_eq!(hx(&read_log_record(1)), "00B201C417");
        assert_eq!(hx(&read_record(Sfi::LOG, 10, 23)), "00B20AC417");
        assert_eq!(hx(&read_capp_record()), "00B201CC2B");
        assert_eq!(hx(&read_record(Sfi::CAPP, 0xAA, 43)), "00B2AACC2B");
        assert!(Sfi::new(0).is_err());
        assert!(Sfi::new(31).is_err());
        assert_eq!(Sfi::new(0x15).unwrap(), Sfi::ISSUE);
    }

    #[test]
    fn pins() {
        assert_eq!(
            hx(&verify_pin(&Pin::ascii("123456").unwrap())),
            "0020000006313233343536"
        );
        assert_eq!(
            hx(&verify_pin(&Pin::bcd("123456").unwrap())),
            "0020000003123456"
        );
        assert_eq!(Pin::bcd("12345").unwrap().as_bytes(), [0x12, 0x34, 0x5F]);
        assert!(Pin::ascii("12a456").is_err());
        assert!(Pin::bcd("1").is_err());
        assert!(Pin::ascii("1234567890123").is_err());
        assert_eq!(format!("{:?}", Pin::ascii("123456").unwrap()), "Pin(..)");
        let err = Pin::ascii("12x").unwrap_err().to_string();
        assert!(!err.contains("12x"), "{err}");
    }

    #[test]
    fn secure_messaging() {
        assert_eq!(hx(&get_challenge()), "0084000004");
        assert_eq!(hx(&get_challenge_8()), "0084000008");
        let date = arr::<4>("20301231");
        assert_eq!(
            hex::encode_upper(update_binary_sm_mac_input(Sfi::ISSUE, 0x18, &date).unwrap()),
            "04D695180820301231"
        );
        assert_eq!(
            hx(&update_binary_sm(Sfi::ISSUE, 0x18, &date, arr("A1B2C3D4")).unwrap()),
            "04D695180820301231A1B2C3D4"
        );
        let flag = update_binary_sm(Sfi::ESAM_EF01, 0x1A, &[0x01], arr("11223344")).unwrap();
        assert_eq!(hx(&flag), "04D6811A050111223344");
        assert!(update_binary_sm(Sfi::ISSUE, 0, &[0; 252], [0; 4]).is_err());
        assert!(update_binary_sm_mac_input(Sfi::ISSUE, 0, &[]).is_err());
        assert_eq!(
            update_binary_sm(Sfi::ISSUE, 0, &[0; 251], [0; 4])
                .unwrap()
                .data
                .len(),
            255
        );
    }

    #[test]
    fn purse_commands() {
        let term = arr::<6>("112233445566");
        assert_eq!(hx(&get_balance()), "805C000204");
        assert_eq!(
            hx(&initialize_for_load(0x01, 10_000, &term)),
            "805000020B010000271011223344556610"
        );
        assert_eq!(
            hx(&initialize_for_load(0x41, 1, &[0; 6])),
            "805000020B410000000100000000000010"
        );
        assert_eq!(
            hx(&credit_for_load(
                &arr("20240102"),
                &arr("030405"),
                arr("9F341DD2")
            )),
            "805200000B202401020304059F341DD204"
        );
        assert_eq!(
            hx(&initialize_for_purchase(
                PurchaseKind::Normal,
                0x01,
                100,
                &term
            )),
            "805001020B01000000641122334455660F"
        );
        assert_eq!(
            hx(&initialize_for_purchase(
                PurchaseKind::Composite,
                0x01,
                100,
                &term
            )),
            "805003020B01000000641122334455660F"
        );
        let mut capp = CappRecord::blank();
        capp.entry_lane = 0x07;
        assert_eq!(
            hx(&update_capp_data_cache(&capp)),
            format!("80DCAAC82BAA2900{}07{}", "00".repeat(4), "00".repeat(35))
        );
        assert_eq!(
            hx(&debit_for_purchase(
                0x102,
                &arr("20240102"),
                &arr("030405"),
                arr("48974A28")
            )),
            "805401000F000001022024010203040548974A2808"
        );
        assert_eq!(
            hx(&get_transaction_prove(TransactionType::EpLoad, 6)),
            "805A000202000608"
        );
        assert_eq!(
            hx(&get_transaction_prove(
                TransactionType::CompositePurchase,
                0x0100
            )),
            "805A000902010008"
        );
        assert_eq!(hx(&get_chip_id()), "80F6000304");
        assert_eq!(
            hx(&read_encrypted(&arr("0102030405060708"), 0x3B, 0x00)),
            "00B400000A01020304050607083B00"
        );
    }

    #[test]
    fn codes() {
        for code in 0..=255u8 {
            if let Some(t) = TransactionType::from_code(code) {
                assert_eq!(t.code(), code);
            }
        }
        assert_eq!(PurchaseKind::Composite.transaction_type().code(), 0x09);
        assert_eq!(PurchaseKind::Normal.transaction_type().code(), 0x06);
        assert_eq!(key_index_for(Algorithm::Sm4), 0x41);
        assert_eq!(obu_read_key_for(Algorithm::Tdes), (0x3B, 0x00));
        assert_eq!(obu_read_key_for(Algorithm::Sm4), (0x20, 0x40));
        assert_eq!(algorithm_for_alg_id(0x04), Some(Algorithm::Sm4));
        assert_eq!(algorithm_for_alg_id(0x02), None);
    }
}
