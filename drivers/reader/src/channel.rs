//! [`Reader`]: the one place where T=0 chaining and the per-reader APDU timeout live.
//!
//! Drivers implement [`ApduTransport::transmit_raw`] (one command, one response, no chaining).
//! Card applications talk to a [`CardChannel`], which takes typed APDUs and returns complete
//! responses: a `61xx` answer is followed by GET RESPONSE until the card has sent everything,
//! and a `6Cxx` answer makes the command go again with the length the card asked for. Doing it
//! here, once, means no driver can get it subtly wrong, and every chain is bounded
//! ([`CHAIN_STEPS_MAX`], [`CHAINED_RESPONSE_BYTES_MAX`]) so a confused card cannot loop forever.

use std::time::Duration;

use crate::apdu::{CommandApdu, ResponseApdu};
use crate::error::ReaderError;
use crate::reader::{ApduTransport, CardReader, ObuChannel, ObuTarget, Protocol};

/// Most exchanges one logical command may take (original + GET RESPONSEs + re-sends).
pub const CHAIN_STEPS_MAX: usize = 32;
/// Most response bytes one chained command may collect.
pub const CHAINED_RESPONSE_BYTES_MAX: usize = 65_536;
/// APDU timeout used when configuration names none.
pub const APDU_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// What card applications talk to: typed commands in, complete responses out.
pub trait CardChannel {
    /// Sends `command`, running transport-level chaining, and returns the complete response.
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError>;
    /// The reader this channel reaches, for error messages and logs.
    fn reader_id(&self) -> &str;
}

/// Sends `command` over `transport`, handling `61xx` (GET RESPONSE) and `6Cxx` (re-send with
/// the exact Le), each step bounded by `timeout`.
pub fn transmit_chained(
    transport: &mut dyn ApduTransport,
    reader_id: &str,
    command: &CommandApdu,
    timeout: Duration,
) -> Result<ResponseApdu, ReaderError> {
    let protocol_error = |detail: String| ReaderError::Protocol {
        reader: reader_id.to_owned(),
        detail,
    };
    // The command's bytes are encoded once, straight into the buffer the driver gets; the
    // response keeps the driver's buffer. Only chaining (a new Le, GET RESPONSE) builds another
    // command or joins response parts.
    let encode = |command: &CommandApdu| {
        command.to_bytes().map_err(|source| ReaderError::Apdu {
            reader: reader_id.to_owned(),
            source,
        })
    };
    let mut bytes = encode(command)?;
    // The command last sent when it is not `command` itself (a new Le, a GET RESPONSE).
    let mut current: Option<CommandApdu> = None;
    let mut collected: Option<Vec<u8>> = None;
    for _ in 0..CHAIN_STEPS_MAX {
        let raw = transport.transmit_raw(&bytes, timeout)?;
        let response = ResponseApdu::from_vec(raw).map_err(|e| protocol_error(e.to_string()))?;
        if let Some(le) = response.sw.exact_length() {
            // The card wants the same command with Le = xx. It carries no data of its own.
            let mut again = current.take().unwrap_or_else(|| command.clone());
            again.le = Some(le);
            bytes = encode(&again)?;
            current = Some(again);
            continue;
        }
        let (sw, more) = (response.sw, response.sw.bytes_available());
        let data = match collected.take() {
            // The usual case: one exchange, and the driver's buffer is the answer.
            None if more.is_none() && response.data.len() <= CHAINED_RESPONSE_BYTES_MAX => {
                return Ok(response)
            }
            None => response.data,
            Some(mut parts) => {
                parts.extend_from_slice(&response.data);
                parts
            }
        };
        if data.len() > CHAINED_RESPONSE_BYTES_MAX {
            return Err(protocol_error(format!(
                "chained response exceeded {CHAINED_RESPONSE_BYTES_MAX} bytes"
            )));
        }
        match more {
            Some(le) => {
                // GET RESPONSE on the same logical channel as the original command.
                let get_response =
                    CommandApdu::new(command.cla & 0x03, 0xC0, 0x00, 0x00).with_le(le);
                bytes = encode(&get_response)?;
                current = Some(get_response);
                collected = Some(data);
            }
            None => return Ok(ResponseApdu::new(data, sw)),
        }
    }
    Err(protocol_error(format!(
        "the card kept asking for GET RESPONSE or a new Le after {CHAIN_STEPS_MAX} exchanges"
    )))
}

/// An open reader session with its APDU timeout: what the rest of cardd holds.
#[derive(Debug)]
pub struct Reader {
    inner: Box<dyn CardReader>,
    apdu_timeout: Duration,
    id: String,
}

impl Reader {
    /// Wraps a driver's session with the reader's APDU timeout.
    pub fn new(inner: Box<dyn CardReader>, apdu_timeout: Duration) -> Self {
        let id = inner.info().id.clone();
        Reader {
            inner,
            apdu_timeout,
            id,
        }
    }

    /// The per-APDU timeout of this reader.
    pub fn apdu_timeout(&self) -> Duration {
        self.apdu_timeout
    }

    pub fn set_apdu_timeout(&mut self, timeout: Duration) {
        self.apdu_timeout = timeout;
    }

    /// The driver's session, for power, presence and capabilities.
    pub fn session(&mut self) -> &mut dyn CardReader {
        self.inner.as_mut()
    }

    /// Notes in the reader's APDU trace, when one is recorded, what starts using the reader.
    pub fn mark(&mut self, context: &str) {
        self.inner.trace_mark(context);
    }

    /// Consumes the wrapper and returns the driver's session.
    pub fn into_inner(self) -> Box<dyn CardReader> {
        self.inner
    }

    /// A channel to a chip inside an OBU, for OBU programmers.
    pub fn obu(&mut self, target: ObuTarget) -> Result<ObuTransport<'_>, ReaderError> {
        let timeout = self.apdu_timeout;
        let reader_id = self.id.clone();
        match self.inner.obu() {
            Some(channel) => Ok(ObuTransport {
                channel,
                target,
                timeout,
                reader_id,
            }),
            None => Err(ReaderError::Unsupported {
                reader: reader_id,
                what: "an OBU channel",
            }),
        }
    }
}

impl CardChannel for Reader {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        transmit_chained(self.inner.as_mut(), &self.id, command, self.apdu_timeout)
    }

    fn reader_id(&self) -> &str {
        &self.id
    }
}

/// A [`CardChannel`] to one chip inside an OBU.
pub struct ObuTransport<'a> {
    channel: &'a mut dyn ObuChannel,
    target: ObuTarget,
    timeout: Duration,
    reader_id: String,
}

impl std::fmt::Debug for ObuTransport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObuTransport")
            .field("target", &self.target)
            .field("reader", &self.reader_id)
            .finish()
    }
}

impl ApduTransport for ObuTransport<'_> {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        self.channel.obu_transmit(self.target, command, timeout)
    }

    fn protocol(&self) -> Protocol {
        Protocol::Other
    }
}

impl CardChannel for ObuTransport<'_> {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        let (timeout, id) = (self.timeout, self.reader_id.clone());
        transmit_chained(self, &id, command, timeout)
    }

    fn reader_id(&self) -> &str {
        &self.reader_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Replays scripted responses and records what was sent.
    struct Script {
        replies: VecDeque<Result<Vec<u8>, ReaderError>>,
        sent: Vec<Vec<u8>>,
    }

    impl Script {
        fn new(replies: Vec<&str>) -> Self {
            Script {
                replies: replies
                    .into_iter()
                    .map(|h| Ok(hex::decode(h).unwrap()))
                    .collect(),
                sent: Vec::new(),
            }
        }
    }

    impl ApduTransport for Script {
        fn transmit_raw(
            &mut self,
            command: &[u8],
            _timeout: Duration,
        ) -> Result<Vec<u8>, ReaderError> {
            self.sent.push(command.to_vec());
            self.replies
                .pop_front()
                .unwrap_or_else(|| Ok(vec![0x6F, 0x00]))
        }
        fn protocol(&self) -> Protocol {
            Protocol::T0
        }
    }

    fn sent_hex(s: &Script) -> Vec<String> {
        s.sent.iter().map(hex::encode_upper).collect()
    }

    #[test]
    fn a_single_exchange_hands_back_the_drivers_buffer() {
        /// Answers with a buffer whose address it remembers.
        struct Pointer(Option<*const u8>);
        impl ApduTransport for Pointer {
            fn transmit_raw(&mut self, _: &[u8], _: Duration) -> Result<Vec<u8>, ReaderError> {
                let answer = vec![0x00, 0x00, 0x27, 0x10, 0x90, 0x00];
                self.0 = Some(answer.as_ptr());
                Ok(answer)
            }
            fn protocol(&self) -> Protocol {
                Protocol::T1
            }
        }
        let mut t = Pointer(None);
        let cmd = CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(4);
        let r = transmit_chained(&mut t, "test", &cmd, Duration::from_millis(10)).unwrap();
        assert!(r.is_ok());
        assert_eq!(r.data, [0x00, 0x00, 0x27, 0x10]);
        assert_eq!(Some(r.data.as_ptr()), t.0, "the response was copied");
    }

    #[test]
    fn get_response_collects_all_parts() {
        let mut t = Script::new(vec![
            "6110",
            "00112233445566778899AABBCCDDEEFF6102",
            "AABB9000",
        ]);
        let cmd = CommandApdu::new(0x80, 0x50, 0x00, 0x02).with_data([0u8; 11]);
        let r = transmit_chained(&mut t, "test", &cmd, Duration::from_millis(10)).unwrap();
        assert!(r.is_ok());
        assert_eq!(
            hex::encode_upper(&r.data),
            "00112233445566778899AABBCCDDEEFFAABB"
        );
        assert_eq!(
            sent_hex(&t)[1..],
            ["00C0000010".to_string(), "00C0000002".to_string()]
        );
    }

    #[test]
    fn wrong_le_is_resent_with_the_cards_length() {
        let mut t = Script::new(vec!["6C04", "000003E89000"]);
        let cmd = CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(256);
        let r = transmit_chained(&mut t, "test", &cmd, Duration::from_millis(10)).unwrap();
        assert_eq!(r.data, [0, 0, 3, 0xE8]);
        assert_eq!(sent_hex(&t), ["805C000200", "805C000204"]);
    }

    #[test]
    fn endless_chaining_is_a_protocol_error() {
        let mut t = Script::new(vec!["6101"; CHAIN_STEPS_MAX + 5]);
        let cmd = CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(1);
        let err = transmit_chained(&mut t, "r1", &cmd, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, ReaderError::Protocol { .. }), "{err}");
        assert_eq!(t.sent.len(), CHAIN_STEPS_MAX);
    }

    #[test]
    fn transport_errors_pass_through_and_short_responses_are_protocol_errors() {
        let mut t = Script {
            replies: VecDeque::from([Err(ReaderError::CardRemoved { reader: "r".into() })]),
            sent: vec![],
        };
        let cmd = CommandApdu::new(0x00, 0x84, 0x00, 0x00).with_le(4);
        let err = transmit_chained(&mut t, "r", &cmd, Duration::from_millis(10)).unwrap_err();
        assert!(err.outcome_unknown());
        let mut t = Script::new(vec!["90"]);
        let err = transmit_chained(&mut t, "r", &cmd, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, ReaderError::Protocol { .. }));
    }
}
