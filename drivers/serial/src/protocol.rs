//! cardd's transparent-APDU programmer protocol (pure: messages only, no I/O).
//!
//! Why our own protocol: the public sources only sketch the vendors' OBU-issuer protocols
//! (Wanji's `C0`/`C1`/`C4`/`C5` commands and `B0`–`B4` replies carry DSRC/BLE issuance
//! sessions, not plain APDUs, and their payloads are not documented). cardd moves APDUs, so this
//! module defines a small transparent subset in the same framing style (see [`crate::frame`])
//! that a programmer's firmware, a USB bridge or a vendor-protocol adapter can implement. It is
//! **not** wire-compatible with any vendor's device. `drivers/serial/PROTOCOL.md` is the
//! human-readable specification; this module is its executable form.
//!
//! # Frames and sequence numbers
//!
//! * Host commands carry `RSCTL = seq` with `seq` in `0x00..=0x0F`, one more (mod 16) for every
//!   new command. The device answers with the **same RSCTL**; the host ignores replies whose
//!   RSCTL or reply code does not match the command it waits for (stale replies of a command
//!   that timed out).
//! * Device-initiated frames (card events) set bit 7: `RSCTL = 0x80 | (changes & 0x0F)`.
//! * A reply's code is the command's code minus `0x10`; its data starts with a [`Status`] byte.
//!
//! | Command | Data | Reply | Reply data after the status byte |
//! |---|---|---|---|
//! | `C0` HELLO | version (`01`) | `B0` | [`DeviceInfo`]: version, serial number, model, firmware |
//! | `C1` STATUS | — | `B1` | [`SlotStatus`]: OBU present, ICC state, change counter, ATR |
//! | `C2` POWER ON | target | `B2` | ATR |
//! | `C3` POWER OFF | target | `B3` | — |
//! | `C4` APDU | target ‖ command APDU | `B4` | response APDU (data ‖ SW1 SW2) |
//! | (device) | | `B8` EVENT | [`SlotStatus`] without a status byte, after every ICC change |
//! | (device) | | `BF` NAK | status `05`: a frame arrived broken and was not executed |
//!
//! Targets ([`Target`]): `01` the ETC card in the OBU (ICC), `02` the OBU's ESAM (the numbers of
//! the DSRC TransferChannel, card-protocols §3).
//!
//! # Retransmission without double execution
//!
//! The device remembers the last command frame it executed (except HELLO) and its reply. A
//! frame identical to it (same RSCTL, code and data) is a retransmission: the device sends the
//! remembered reply again **without executing the command again**. The host may therefore
//! resend a command whenever its reply arrived broken or the device NAKed, and a CREDIT FOR LOAD
//! never reaches the card twice. Consecutive commands always differ in RSCTL, so two equal APDUs
//! in a row (two GET CHALLENGEs) both execute. HELLO clears the memory (a new host session
//! starts its sequence numbers afresh).

use cardd_reader::ObuTarget;

use crate::frame::Frame;

/// The protocol version this crate speaks (HELLO's data byte).
pub const PROTOCOL_VERSION: u8 = 0x01;
/// The sequence-number bits of a host command's RSCTL.
pub const SEQ_MASK: u8 = 0x0F;
/// RSCTL bit set on device-initiated frames (events).
pub const RSCTL_EVENT: u8 = 0x80;
/// RSCTL of a NAK (the device cannot trust the broken frame's RSCTL).
pub const RSCTL_NAK: u8 = 0x00;
/// Longest text field (serial number, model, firmware) in a [`DeviceInfo`], in bytes.
pub const DEVICE_TEXT_BYTES_MAX: usize = 64;

/// Command and reply codes.
pub mod code {
    /// Host: protocol version handshake, device identity.
    pub const HELLO: u8 = 0xC0;
    /// Host: OBU and ICC state.
    pub const STATUS: u8 = 0xC1;
    /// Host: power (cold-reset) a target, get its ATR.
    pub const POWER_ON: u8 = 0xC2;
    /// Host: power a target down.
    pub const POWER_OFF: u8 = 0xC3;
    /// Host: one transparent APDU to a target.
    pub const APDU: u8 = 0xC4;
    /// Device: unsolicited ICC state change.
    pub const EVENT: u8 = 0xB8;
    /// Device: the last frame arrived broken; resend it.
    pub const NAK: u8 = 0xBF;
}

/// The reply code answering `command` (`C4` → `B4`).
pub const fn reply_code(command: u8) -> u8 {
    command.wrapping_sub(0x10)
}

/// The sequence number after `seq`, wrapping within `0x00..=0x0F`.
pub const fn next_seq(seq: u8) -> u8 {
    seq.wrapping_add(1) & SEQ_MASK
}

/// What is wrong with a message inside a well-formed frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("unknown command code {0:02X}")]
    UnknownCommand(u8),
    #[error("unknown status byte {0:02X}")]
    UnknownStatus(u8),
    #[error("unknown target {0:02X} (01 = ICC, 02 = ESAM)")]
    UnknownTarget(u8),
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("{what} is longer than {DEVICE_TEXT_BYTES_MAX} bytes")]
    TextTooLong { what: &'static str },
}

/// Which chip inside the OBU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The ETC user card inserted in the OBU (`01`).
    Icc,
    /// The OBU's embedded secure module (`02`).
    Esam,
}

impl Target {
    pub fn byte(self) -> u8 {
        match self {
            Target::Icc => 0x01,
            Target::Esam => 0x02,
        }
    }

    pub fn from_byte(byte: u8) -> Result<Target, ProtocolError> {
        match byte {
            0x01 => Ok(Target::Icc),
            0x02 => Ok(Target::Esam),
            other => Err(ProtocolError::UnknownTarget(other)),
        }
    }
}

impl From<ObuTarget> for Target {
    fn from(target: ObuTarget) -> Self {
        match target {
            ObuTarget::Esam => Target::Esam,
            ObuTarget::Icc => Target::Icc,
        }
    }
}

/// The first data byte of every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `00`: done; the rest of the reply is the result.
    Ok,
    /// `01`: the target is not there (no ETC card in the OBU, or no OBU on the programmer).
    NoCard,
    /// `02`: the card left during the command; whether it took effect is unknown.
    CardRemoved,
    /// `03`: the ESAM did not answer or failed electrically.
    EsamError,
    /// `04`: the card did not answer within the device's own limit (outcome unknown).
    CardMute,
    /// `05`: the frame arrived broken (BCC, escape, length) and was not executed (NAK).
    BadFrame,
    /// `06`: the device does not know the command code.
    UnknownCommand,
    /// `07`: a parameter is wrong (target, empty APDU, protocol version).
    BadParameter,
}

impl Status {
    pub fn byte(self) -> u8 {
        match self {
            Status::Ok => 0x00,
            Status::NoCard => 0x01,
            Status::CardRemoved => 0x02,
            Status::EsamError => 0x03,
            Status::CardMute => 0x04,
            Status::BadFrame => 0x05,
            Status::UnknownCommand => 0x06,
            Status::BadParameter => 0x07,
        }
    }

    pub fn from_byte(byte: u8) -> Result<Status, ProtocolError> {
        Ok(match byte {
            0x00 => Status::Ok,
            0x01 => Status::NoCard,
            0x02 => Status::CardRemoved,
            0x03 => Status::EsamError,
            0x04 => Status::CardMute,
            0x05 => Status::BadFrame,
            0x06 => Status::UnknownCommand,
            0x07 => Status::BadParameter,
            other => return Err(ProtocolError::UnknownStatus(other)),
        })
    }
}

/// A host command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello { version: u8 },
    Status,
    PowerOn(Target),
    PowerOff(Target),
    Apdu { target: Target, apdu: Vec<u8> },
}

impl Request {
    /// The command code.
    pub fn code(&self) -> u8 {
        match self {
            Request::Hello { .. } => code::HELLO,
            Request::Status => code::STATUS,
            Request::PowerOn(_) => code::POWER_ON,
            Request::PowerOff(_) => code::POWER_OFF,
            Request::Apdu { .. } => code::APDU,
        }
    }

    /// The command's data.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Request::Hello { version } => vec![*version],
            Request::Status => Vec::new(),
            Request::PowerOn(t) | Request::PowerOff(t) => vec![t.byte()],
            Request::Apdu { target, apdu } => {
                let mut out = Vec::with_capacity(apdu.len() + 1);
                out.push(target.byte());
                out.extend_from_slice(apdu);
                out
            }
        }
    }

    /// The command as a frame with sequence number `seq`.
    pub fn to_frame(&self, seq: u8) -> Frame {
        Frame::new(seq & SEQ_MASK, self.code(), self.payload())
    }

    /// Parses a host frame (the device's side).
    pub fn from_frame(frame: &Frame) -> Result<Request, ProtocolError> {
        let target = |what| match frame.data.as_slice() {
            [t] => Target::from_byte(*t),
            _ => Err(ProtocolError::Malformed { what }),
        };
        Ok(match frame.cmd {
            code::HELLO => match frame.data.as_slice() {
                [version] => Request::Hello { version: *version },
                _ => return Err(ProtocolError::Malformed { what: "HELLO" }),
            },
            code::STATUS if frame.data.is_empty() => Request::Status,
            code::STATUS => return Err(ProtocolError::Malformed { what: "STATUS" }),
            code::POWER_ON => Request::PowerOn(target("POWER ON")?),
            code::POWER_OFF => Request::PowerOff(target("POWER OFF")?),
            code::APDU => match frame.data.split_first() {
                Some((t, apdu)) if !apdu.is_empty() => Request::Apdu {
                    target: Target::from_byte(*t)?,
                    apdu: apdu.to_vec(),
                },
                _ => return Err(ProtocolError::Malformed { what: "APDU" }),
            },
            other => return Err(ProtocolError::UnknownCommand(other)),
        })
    }
}

/// A device reply: status and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code (command code − `0x10`, or [`code::NAK`]).
    pub code: u8,
    pub status: Status,
    /// Everything after the status byte.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(code: u8, status: Status, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            code,
            status,
            body: body.into(),
        }
    }

    /// The reply as a frame with `rsctl` (the command's RSCTL).
    pub fn to_frame(&self, rsctl: u8) -> Frame {
        let mut data = Vec::with_capacity(self.body.len() + 1);
        data.push(self.status.byte());
        data.extend_from_slice(&self.body);
        Frame::new(rsctl, self.code, data)
    }

    /// Parses a device frame as a reply.
    pub fn from_frame(frame: &Frame) -> Result<Reply, ProtocolError> {
        match frame.data.split_first() {
            Some((status, body)) => Ok(Reply::new(
                frame.cmd,
                Status::from_byte(*status)?,
                body.to_vec(),
            )),
            None => Err(ProtocolError::Malformed {
                what: "reply (no status byte)",
            }),
        }
    }

    /// The NAK a device sends for a broken frame.
    pub fn nak() -> Reply {
        Reply::new(code::NAK, Status::BadFrame, Vec::new())
    }
}

/// The state of the ICC slot of the OBU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IccState {
    /// `00`: no card.
    Absent,
    /// `01`: a card, not powered.
    Present,
    /// `02`: a powered card (its ATR follows).
    Powered,
}

impl IccState {
    pub fn byte(self) -> u8 {
        match self {
            IccState::Absent => 0x00,
            IccState::Present => 0x01,
            IccState::Powered => 0x02,
        }
    }

    pub fn from_byte(byte: u8) -> Result<IccState, ProtocolError> {
        match byte {
            0x00 => Ok(IccState::Absent),
            0x01 => Ok(IccState::Present),
            0x02 => Ok(IccState::Powered),
            _ => Err(ProtocolError::Malformed {
                what: "ICC state (00 absent, 01 present, 02 powered)",
            }),
        }
    }
}

/// STATUS reply body and EVENT data: `obu(1) icc(1) changes(1) ATR…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// An OBU (its ESAM) is connected to the programmer.
    pub obu_present: bool,
    pub icc: IccState,
    /// Counts ICC insertions and removals (wrapping), so a host can tell a missed event.
    pub changes: u8,
    /// The ICC's ATR when [`IccState::Powered`], else empty.
    pub atr: Vec<u8>,
}

impl SlotStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.obu_present), self.icc.byte(), self.changes];
        out.extend_from_slice(&self.atr);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<SlotStatus, ProtocolError> {
        match bytes {
            [obu, icc, changes, atr @ ..] => Ok(SlotStatus {
                obu_present: *obu != 0,
                icc: IccState::from_byte(*icc)?,
                changes: *changes,
                atr: atr.to_vec(),
            }),
            _ => Err(ProtocolError::Malformed {
                what: "slot status (needs 3 bytes)",
            }),
        }
    }

    /// The unsolicited EVENT frame carrying this state.
    pub fn to_event_frame(&self) -> Frame {
        Frame::new(
            RSCTL_EVENT | (self.changes & SEQ_MASK),
            code::EVENT,
            self.encode(),
        )
    }
}

/// HELLO reply body: `version(1)` then three length-prefixed texts: serial number, model,
/// firmware.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// The protocol version the device speaks.
    pub version: u8,
    /// The programmer's own serial number (not the USB bridge's).
    pub serial_number: String,
    pub model: String,
    pub firmware: String,
}

impl DeviceInfo {
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = vec![self.version];
        for (what, text) in [
            ("serial number", &self.serial_number),
            ("model", &self.model),
            ("firmware", &self.firmware),
        ] {
            let bytes = text.as_bytes();
            let len = u8::try_from(bytes.len())
                .ok()
                .filter(|&n| usize::from(n) <= DEVICE_TEXT_BYTES_MAX)
                .ok_or(ProtocolError::TextTooLong { what })?;
            out.push(len);
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    pub fn parse(bytes: &[u8]) -> Result<DeviceInfo, ProtocolError> {
        let malformed = ProtocolError::Malformed {
            what: "device info",
        };
        let (version, mut rest) = bytes.split_first().ok_or(malformed.clone())?;
        let mut texts = Vec::with_capacity(3);
        for _ in 0..3 {
            let (len, tail) = rest.split_first().ok_or(malformed.clone())?;
            let (text, after) = tail
                .split_at_checked(usize::from(*len))
                .ok_or(malformed.clone())?;
            texts.push(String::from_utf8_lossy(text).into_owned());
            rest = after;
        }
        let [serial_number, model, firmware]: [String; 3] =
            texts.try_into().map_err(|_| malformed)?;
        Ok(DeviceInfo {
            version: *version,
            serial_number,
            model,
            firmware,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_frames() {
        let requests = [
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            Request::Status,
            Request::PowerOn(Target::Icc),
            Request::PowerOff(Target::Esam),
            Request::Apdu {
                target: Target::Esam,
                apdu: vec![0x00, 0x84, 0x00, 0x00, 0x04],
            },
        ];
        for (i, r) in requests.iter().enumerate() {
            let f = r.to_frame(i as u8 + 0x0E);
            assert_eq!(f.rsctl, (i as u8 + 0x0E) & 0x0F);
            assert_eq!(Request::from_frame(&f).as_ref(), Ok(r));
        }
        assert_eq!(
            hex::encode_upper(
                Request::Apdu {
                    target: Target::Icc,
                    apdu: vec![0x00, 0xA4, 0x00, 0x00, 0x02, 0x10, 0x01],
                }
                .to_frame(3)
                .encode()
                .unwrap()
            ),
            "FFFF03C40100A4000002100171FF"
        );
        assert_eq!(
            Request::from_frame(&Frame::new(0, code::APDU, vec![0x01])),
            Err(ProtocolError::Malformed { what: "APDU" })
        );
        assert_eq!(
            Request::from_frame(&Frame::new(0, code::APDU, vec![0x03, 0x00])),
            Err(ProtocolError::UnknownTarget(3))
        );
        assert_eq!(
            Request::from_frame(&Frame::new(0, 0xC9, vec![])),
            Err(ProtocolError::UnknownCommand(0xC9))
        );
    }

    #[test]
    fn the_example_in_protocol_md_is_what_the_simulated_card_answers() {
        let request = Request::Apdu {
            target: Target::Icc,
            apdu: hex::decode("00A40000021001").unwrap(),
        };
        let wire = request.to_frame(3).encode().unwrap();
        assert_eq!(hex::encode_upper(wire), "FFFF03C40100A4000002100171FF");
        let mut card = cardd_sim::demo::demo_etc_card();
        let response = card.process(&hex::decode("00A40000021001").unwrap());
        let reply = Reply::new(reply_code(code::APDU), Status::Ok, response).to_frame(3);
        assert_eq!(
            hex::encode_upper(reply.encode().unwrap()),
            "FFFF03B4006F0B8409A00000000386980701900075FF"
        );
    }

    #[test]
    fn replies_status_and_info() {
        let r = Reply::new(reply_code(code::APDU), Status::Ok, vec![0x90, 0x00]);
        assert_eq!(r.code, 0xB4);
        assert_eq!(Reply::from_frame(&r.to_frame(7)), Ok(r));
        for b in 0..=7 {
            assert_eq!(Status::from_byte(b).map(Status::byte), Ok(b));
        }
        assert_eq!(Status::from_byte(8), Err(ProtocolError::UnknownStatus(8)));
        let s = SlotStatus {
            obu_present: true,
            icc: IccState::Powered,
            changes: 0x13,
            atr: vec![0x3B, 0x00],
        };
        let f = s.to_event_frame();
        assert_eq!((f.rsctl, f.cmd), (0x83, code::EVENT));
        assert_eq!(SlotStatus::parse(&f.data), Ok(s));
        let info = DeviceInfo {
            version: 1,
            serial_number: "SN1".into(),
            model: "M".into(),
            firmware: String::new(),
        };
        assert_eq!(DeviceInfo::parse(&info.encode().unwrap()), Ok(info));
        assert!(DeviceInfo::parse(&[1, 5, b'a']).is_err());
        assert!(DeviceInfo {
            model: "x".repeat(65),
            ..DeviceInfo::default()
        }
        .encode()
        .is_err());
    }
}
