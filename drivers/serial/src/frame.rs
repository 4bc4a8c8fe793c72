//! The byte-level frame of OBU programmers: `FF FF | RSCTL | CMD | data… | BCC | FF`.
//!
//! Why a module of its own, with no I/O: the framing is where a serial link goes wrong (noise,
//! a half-sent frame after a reset, a device that starts talking mid-frame), so it must be
//! testable byte by byte and must never panic on what a wire hands it. The layout follows the
//! Wanji RSU-style issuers (shared reference `card-protocols.md` §4):
//!
//! * a preamble `FF FF`, then the **body** `RSCTL CMD data… BCC`, then a tail `FF`;
//! * `BCC` is the XOR of every body byte before it (RSCTL through the end of data);
//! * inside the body (BCC included) `FF` is sent as `FE 01` and `FE` as `FE 00`, so `FF` on the
//!   wire only ever marks a frame boundary.
//!
//! [`Decoder`] is a streaming decoder: it takes bytes as they come, skips anything before a
//! `FF FF` preamble, treats extra `FF`s as preamble, reports broken frames (bad escape, bad BCC,
//! too short, too long) as errors and carries on with the next frame. A tail `FF` may double as
//! the first preamble byte of the next frame, so a frame right after a broken one is not lost.

/// First two bytes of every frame.
pub const PREAMBLE: [u8; 2] = [0xFF, 0xFF];
/// Last byte of every frame.
pub const TAIL: u8 = 0xFF;
/// Escape byte inside the body: `FE 00` is `FE`, `FE 01` is `FF`.
pub const ESCAPE: u8 = 0xFE;
/// Most data bytes (between CMD and BCC, unescaped) one frame may carry: room for a short APDU
/// and its response with headroom; extended APDUs are not carried.
pub const FRAME_DATA_BYTES_MAX: usize = 1_024;
/// Fewest body bytes (unescaped): RSCTL, CMD and BCC.
pub const FRAME_BODY_BYTES_MIN: usize = 3;
/// Most body bytes (unescaped): RSCTL, CMD, data and BCC.
pub const FRAME_BODY_BYTES_MAX: usize = FRAME_DATA_BYTES_MAX + FRAME_BODY_BYTES_MIN;
/// Most bytes one frame can take on the wire (every body byte escaped), preamble and tail
/// included. The decoder gives up on a frame whose body grows past [`FRAME_BODY_BYTES_MAX`].
pub const FRAME_BYTES_MAX: usize = PREAMBLE.len() + 2 * FRAME_BODY_BYTES_MAX + 1;

/// One decoded frame (unescaped, BCC checked and dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Sequence and direction byte (see the protocol module).
    pub rsctl: u8,
    /// Command (host → device) or reply (device → host) code.
    pub cmd: u8,
    /// Payload, unescaped.
    pub data: Vec<u8>,
}

/// What can be wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Encoding: the payload does not fit in one frame.
    #[error("frame data of {len} bytes exceeds the {FRAME_DATA_BYTES_MAX}-byte limit")]
    DataTooLong { len: usize },
    /// Decoding: the body grew past [`FRAME_BODY_BYTES_MAX`] before its tail.
    #[error("frame body longer than {FRAME_BODY_BYTES_MAX} bytes; dropped")]
    TooLong,
    /// Decoding: the body lacks RSCTL, CMD or BCC.
    #[error("frame body of {len} bytes is shorter than RSCTL, CMD and BCC")]
    TooShort { len: usize },
    /// Decoding: `FE` followed by something other than `00` or `01`.
    #[error("bad escape sequence FE {byte:02X} in a frame body")]
    BadEscape { byte: u8 },
    /// Decoding: the check byte does not match the body.
    #[error("BCC mismatch: the frame carries {received:02X}, its bytes give {computed:02X}")]
    BadBcc { received: u8, computed: u8 },
}

/// XOR of `bytes`.
pub fn bcc(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

impl Frame {
    pub fn new(rsctl: u8, cmd: u8, data: impl Into<Vec<u8>>) -> Self {
        Frame {
            rsctl,
            cmd,
            data: data.into(),
        }
    }

    /// The frame's check byte.
    pub fn bcc(&self) -> u8 {
        self.rsctl ^ self.cmd ^ bcc(&self.data)
    }

    /// The frame as wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        encode_with_bcc(self.rsctl, self.cmd, &self.data, self.bcc())
    }
}

/// Wire bytes for a frame with an explicit check byte. Use [`Frame::encode`]; this exists so
/// fault injection and tests can send a frame whose BCC is wrong.
pub fn encode_with_bcc(rsctl: u8, cmd: u8, data: &[u8], bcc: u8) -> Result<Vec<u8>, FrameError> {
    if data.len() > FRAME_DATA_BYTES_MAX {
        return Err(FrameError::DataTooLong { len: data.len() });
    }
    let mut out = Vec::with_capacity(PREAMBLE.len() + 2 * (data.len() + 3) + 1);
    out.extend_from_slice(&PREAMBLE);
    let body = [rsctl, cmd]
        .into_iter()
        .chain(data.iter().copied())
        .chain(std::iter::once(bcc));
    for byte in body {
        match byte {
            0xFF => out.extend_from_slice(&[ESCAPE, 0x01]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, 0x00]),
            b => out.push(b),
        }
    }
    out.push(TAIL);
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first preamble `FF`.
    Hunt,
    /// Saw one `FF`; a second starts a body.
    Preamble,
    /// Inside a body (extra `FF`s before the first body byte are preamble).
    Body,
    /// Dropping the rest of a broken or over-long body up to its tail.
    Discard,
}

/// Streaming frame decoder. Feed it bytes in any chunking; it never panics and never holds more
/// than [`FRAME_BODY_BYTES_MAX`] bytes.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    body: Vec<u8>,
    escaped: bool,
    skipped: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::Hunt,
            body: Vec::new(),
            escaped: false,
            skipped: 0,
        }
    }

    /// Bytes skipped so far while looking for a preamble (line noise, partial frames).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Forgets any partial frame.
    pub fn reset(&mut self) {
        self.state = State::Hunt;
        self.body.clear();
        self.escaped = false;
    }

    /// Decodes `bytes`, returning every frame (or broken frame) they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Frame, FrameError>> {
        bytes.iter().filter_map(|&b| self.push(b)).collect()
    }

    /// Takes one byte; returns a frame or a frame error when this byte completes one.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, FrameError>> {
        match self.state {
            State::Hunt => {
                if byte == 0xFF {
                    self.state = State::Preamble;
                } else {
                    self.skipped += 1;
                }
                None
            }
            State::Preamble => {
                if byte == 0xFF {
                    self.start_body();
                } else {
                    self.skipped += 2;
                    self.state = State::Hunt;
                }
                None
            }
            State::Discard => {
                if byte == TAIL {
                    self.state = State::Preamble;
                } else {
                    self.skipped += 1;
                }
                None
            }
            State::Body => self.push_body(byte),
        }
    }

    fn start_body(&mut self) {
        self.state = State::Body;
        self.body.clear();
        self.escaped = false;
    }

    fn push_body(&mut self, byte: u8) -> Option<Result<Frame, FrameError>> {
        if byte == TAIL {
            if self.body.is_empty() && !self.escaped {
                return None; // one more preamble byte
            }
            // The tail may also be the first preamble byte of the next frame.
            self.state = State::Preamble;
            if self.escaped {
                self.escaped = false;
                return Some(Err(FrameError::BadEscape { byte }));
            }
            let body = std::mem::take(&mut self.body);
            return Some(finish(&body));
        }
        let value = if self.escaped {
            self.escaped = false;
            match byte {
                0x00 => ESCAPE,
                0x01 => 0xFF,
                other => {
                    self.state = State::Discard;
                    return Some(Err(FrameError::BadEscape { byte: other }));
                }
            }
        } else if byte == ESCAPE {
            self.escaped = true;
            return None;
        } else {
            byte
        };
        if self.body.len() >= FRAME_BODY_BYTES_MAX {
            self.body.clear();
            self.state = State::Discard;
            return Some(Err(FrameError::TooLong));
        }
        self.body.push(value);
        None
    }
}

/// Checks an unescaped body and splits it into a frame.
fn finish(body: &[u8]) -> Result<Frame, FrameError> {
    let (received, rest) = match body.split_last() {
        Some((last, rest)) if body.len() >= FRAME_BODY_BYTES_MIN => (*last, rest),
        _ => return Err(FrameError::TooShort { len: body.len() }),
    };
    let computed = bcc(rest);
    if computed != received {
        return Err(FrameError::BadBcc { received, computed });
    }
    match rest {
        [rsctl, cmd, data @ ..] => Ok(Frame::new(*rsctl, *cmd, data.to_vec())),
        _ => Err(FrameError::TooShort { len: body.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Frame, FrameError>> {
        Decoder::new().feed(bytes)
    }

    #[test]
    fn encodes_with_escapes_and_xor_bcc() {
        let f = Frame::new(0x03, 0xC4, vec![0x01, 0xFF, 0xFE, 0x00]);
        // BCC = 03 ^ C4 ^ 01 ^ FF ^ FE ^ 00 = C7
        assert_eq!(f.bcc(), 0xC7);
        assert_eq!(
            hex::encode_upper(f.encode().unwrap()),
            "FFFF03C401FE01FE0000C7FF"
        );
        let f = Frame::new(0x00, 0xFE, vec![0x01]);
        // BCC = FF, escaped as well.
        assert_eq!(hex::encode_upper(f.encode().unwrap()), "FFFF00FE0001FE01FF");
        assert_eq!(decode_all(&f.encode().unwrap()), vec![Ok(f)]);
    }

    #[test]
    fn rejects_bad_bcc_short_bodies_bad_escapes_and_long_frames() {
        let good = Frame::new(1, 0xB4, vec![0x90, 0x00]).encode().unwrap();
        let bad = encode_with_bcc(1, 0xB4, &[0x90, 0x00], 0x00).unwrap();
        assert!(matches!(
            decode_all(&bad)[..],
            [Err(FrameError::BadBcc { .. })]
        ));
        assert_eq!(
            decode_all(&hex::decode("FFFF0102FF").unwrap()),
            vec![Err(FrameError::TooShort { len: 2 })]
        );
        assert_eq!(
            decode_all(&hex::decode("FFFF01FE05020304FF").unwrap()),
            vec![Err(FrameError::BadEscape { byte: 0x05 })]
        );
        let mut long = vec![0xFF, 0xFF];
        long.extend(std::iter::repeat(0x11).take(FRAME_BODY_BYTES_MAX + 10));
        long.push(0xFF);
        long.extend_from_slice(&good);
        let out = decode_all(&long);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], Err(FrameError::TooLong));
        assert!(out[1].is_ok(), "the next frame survives");
        assert_eq!(
            Frame::new(0, 0, vec![0; FRAME_DATA_BYTES_MAX + 1]).encode(),
            Err(FrameError::DataTooLong {
                len: FRAME_DATA_BYTES_MAX + 1
            })
        );
        assert!(Frame::new(0, 0, vec![0xFF; FRAME_DATA_BYTES_MAX])
            .encode()
            .is_ok_and(|b| b.len() <= FRAME_BYTES_MAX));
    }

    #[test]
    fn a_frame_right_after_a_broken_one_is_kept() {
        let f = Frame::new(2, 0xB1, vec![0x00, 0x01]);
        // Garbage that ends inside a body with a dangling escape: the next frame's first
        // preamble byte ends the broken frame, the second starts the good one.
        let mut bytes = hex::decode("FFFF1234FE").unwrap();
        bytes.extend_from_slice(&f.encode().unwrap());
        let out = decode_all(&bytes);
        assert_eq!(out.last(), Some(&Ok(f.clone())), "{out:?}");
        // Back-to-back frames, extra preamble bytes.
        let mut bytes = f.encode().unwrap();
        bytes.extend_from_slice(&[0xFF, 0xFF]);
        bytes.extend_from_slice(&f.encode().unwrap());
        assert_eq!(decode_all(&bytes), vec![Ok(f.clone()), Ok(f)]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut d = Decoder::new();
            for chunk in bytes.chunks(7) {
                for f in d.feed(chunk).into_iter().flatten() {
                    prop_assert!(f.data.len() <= FRAME_DATA_BYTES_MAX);
                }
            }
        }

        #[test]
        fn encode_then_decode_round_trips(
            rsctl in any::<u8>(),
            cmd in any::<u8>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            split in 0usize..700,
        ) {
            let f = Frame::new(rsctl, cmd, data);
            let wire = f.encode().unwrap();
            prop_assert!(wire.len() <= FRAME_BYTES_MAX);
            prop_assert_eq!(wire.iter().filter(|&&b| b == 0xFF).count(), 3, "FF only at the edges");
            let split = split.min(wire.len());
            let mut d = Decoder::new();
            let mut out = d.feed(&wire[..split]);
            out.extend(d.feed(&wire[split..]));
            prop_assert_eq!(out, vec![Ok(f)]);
        }

        #[test]
        fn garbage_prefixes_are_skipped(
            garbage in proptest::collection::vec(any::<u8>(), 0..600),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let f = Frame::new(0x05, 0xB4, data);
            let mut bytes = garbage.clone();
            bytes.extend_from_slice(&f.encode().unwrap());
            let out = decode_all(&bytes);
            prop_assert_eq!(out.last(), Some(&Ok(f.clone())));
            if !garbage.contains(&0xFF) {
                prop_assert_eq!(out, vec![Ok(f)]);
            }
        }

        #[test]
        fn corrupting_one_body_byte_never_yields_a_different_valid_frame(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let f = Frame::new(0x01, 0xB4, data);
            let mut wire = f.encode().unwrap();
            // Corrupt one byte strictly inside the body, never creating or removing an FF.
            let i = 2 + at.index(wire.len() - 3);
            let corrupted = wire[i] ^ flip;
            prop_assume!(corrupted != 0xFF && wire[i] != 0xFE && corrupted != 0xFE);
            wire[i] = corrupted;
            for r in decode_all(&wire) {
                prop_assert!(r.is_err(), "a single-byte error always breaks the BCC: {r:?}");
            }
        }
    }
}
