//! Command parsing and status words as the simulated cards see them.
//!
//! Every card handler works on a parsed [`Apdu`] and answers `Result<Vec<u8>, Sw>`: success
//! data with `9000`, or a bare status word. Keeping the parse in one place means no handler
//! touches raw bytes by index, which is how the "never panic on any APDU" promise is kept.

use cardd_reader::CommandApdu;

/// Longest command data a simulated card accepts (short APDUs only, as the cards of
/// `docs/card-protocol.md` do).
pub(crate) const COMMAND_DATA_BYTES_MAX: usize = 255;

/// A status word returned instead of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sw(pub u16);

impl Sw {
    pub(crate) const WRONG_LENGTH: Sw = Sw(0x6700);
    pub(crate) const INCOMPATIBLE_FILE: Sw = Sw(0x6981);
    pub(crate) const SECURITY: Sw = Sw(0x6982);
    pub(crate) const PIN_BLOCKED: Sw = Sw(0x6983);
    pub(crate) const CONDITIONS: Sw = Sw(0x6985);
    pub(crate) const SM_WRONG: Sw = Sw(0x6988);
    pub(crate) const WRONG_DATA: Sw = Sw(0x6A80);
    pub(crate) const FUNCTION_NOT_SUPPORTED: Sw = Sw(0x6A81);
    pub(crate) const FILE_NOT_FOUND: Sw = Sw(0x6A82);
    pub(crate) const RECORD_NOT_FOUND: Sw = Sw(0x6A83);
    pub(crate) const WRONG_P1P2: Sw = Sw(0x6A86);
    pub(crate) const OFFSET_OUTSIDE: Sw = Sw(0x6B00);
    pub(crate) const INS_NOT_SUPPORTED: Sw = Sw(0x6D00);
    pub(crate) const CLA_NOT_SUPPORTED: Sw = Sw(0x6E00);
    pub(crate) const UNKNOWN: Sw = Sw(0x6F00);
    pub(crate) const MAC_INVALID: Sw = Sw(0x9302);
    pub(crate) const INSUFFICIENT_BALANCE: Sw = Sw(0x9401);
    pub(crate) const COUNTER_AT_MAXIMUM: Sw = Sw(0x9402);
    pub(crate) const KEY_NOT_FOUND: Sw = Sw(0x9403);
    pub(crate) const PROOF_NOT_AVAILABLE: Sw = Sw(0x9406);

    /// `6Cxx`: re-send with `Le = xx` (`00` meaning 256).
    pub(crate) fn exact_length(len: usize) -> Sw {
        Sw(0x6C00 | u16::from(len.min(256) as u8))
    }

    /// `63Cx`: PIN wrong, `x` tries left.
    pub(crate) fn tries_left(tries: u8) -> Sw {
        Sw(0x63C0 | u16::from(tries.min(15)))
    }
}

/// What a command handler returns.
pub(crate) type CardResult = Result<Vec<u8>, Sw>;

/// Encodes a handler's result as response bytes (data ‖ SW1 SW2).
pub(crate) fn respond(result: CardResult) -> Vec<u8> {
    match result {
        Ok(mut data) => {
            data.extend_from_slice(&[0x90, 0x00]);
            data
        }
        Err(sw) => sw.0.to_be_bytes().to_vec(),
    }
}

/// A parsed short command APDU: the reader layer's [`CommandApdu`], limited to what the
/// simulated cards accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Apdu(CommandApdu);

impl std::ops::Deref for Apdu {
    type Target = CommandApdu;

    fn deref(&self) -> &CommandApdu {
        &self.0
    }
}

impl Apdu {
    /// Parses command bytes; malformed lengths and extended APDUs are `6700`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Apdu, Sw> {
        let cmd = CommandApdu::parse(bytes).map_err(|_| Sw::WRONG_LENGTH)?;
        if cmd.data.len() > COMMAND_DATA_BYTES_MAX || cmd.le.is_some_and(|le| le > 256) {
            return Err(Sw::WRONG_LENGTH);
        }
        Ok(Apdu(cmd))
    }

    /// Fails with `6A86` unless P1 P2 are exactly as given.
    pub(crate) fn expect_p1p2(&self, p1: u8, p2: u8) -> Result<(), Sw> {
        if self.p1 == p1 && self.p2 == p2 {
            Ok(())
        } else {
            Err(Sw::WRONG_P1P2)
        }
    }

    /// Fails with `6700` unless the command data has exactly `len` bytes.
    pub(crate) fn expect_lc(&self, len: usize) -> Result<(), Sw> {
        if self.data.len() == len {
            Ok(())
        } else {
            Err(Sw::WRONG_LENGTH)
        }
    }

    /// The header with a short Lc, as secure-messaging MACs cover it.
    pub(crate) fn header_with_lc(&self) -> [u8; 5] {
        [
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len().min(255) as u8,
        ]
    }
}

/// The status word for a command the card does not know: `6E00` for a foreign class or a known
/// instruction under the wrong class, `6D00` for an unknown instruction.
pub(crate) fn unknown_command(cla: u8, ins: u8, known_ins: &[u8]) -> Sw {
    if !matches!(cla, 0x00 | 0x04 | 0x80) || known_ins.contains(&ins) {
        Sw::CLA_NOT_SUPPORTED
    } else {
        Sw::INS_NOT_SUPPORTED
    }
}

/// Reads `N` bytes at `offset` of `data` (no panics: `None` when out of range).
pub(crate) fn array_at<const N: usize>(data: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    data.get(offset..end)?.try_into().ok()
}

/// A big-endian `u32` at `offset`.
pub(crate) fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    array_at::<4>(data, offset).map(u32::from_be_bytes)
}

/// A big-endian `u16` at `offset`.
pub(crate) fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    array_at::<2>(data, offset).map(u16::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_lengths_and_extended_forms() {
        assert_eq!(Apdu::parse(&[0, 0xA4, 0]), Err(Sw::WRONG_LENGTH));
        assert_eq!(
            Apdu::parse(&[0, 0xB0, 0, 0, 0, 0x01, 0x01]),
            Err(Sw::WRONG_LENGTH)
        );
        let a = Apdu::parse(&[0, 0xB0, 0x95, 0, 0]).unwrap();
        assert_eq!(a.le, Some(256));
        assert_eq!(respond(Err(Sw::exact_length(43))), [0x6C, 0x2B]);
        assert_eq!(respond(Ok(vec![1])), [1, 0x90, 0]);
    }

    #[test]
    fn helpers_never_index_out_of_range() {
        assert_eq!(u32_at(&[1, 2, 3], 0), None);
        assert_eq!(u16_at(&[1, 2, 3], usize::MAX), None);
        assert_eq!(array_at::<2>(&[1, 2, 3], 1), Some([2, 3]));
        assert_eq!(unknown_command(0xFF, 0xB0, &[0xB0]), Sw::CLA_NOT_SUPPORTED);
        assert_eq!(unknown_command(0x80, 0xB0, &[0xB0]), Sw::CLA_NOT_SUPPORTED);
        assert_eq!(unknown_command(0x80, 0x11, &[0xB0]), Sw::INS_NOT_SUPPORTED);
    }
}
