//! The PBOC-style CPU card application shared by ETC user cards and city one-cards.
//!
//! Both card kinds are the same machine with different files and policies: an MF and the ADF
//! `1001`, a PIN, GET CHALLENGE with secure-messaging updates under the DAMK, and the EP purse.
//! [`CpuCard`] is that machine; [`super::EtcCard`] and [`super::CityCard`] personalise it and
//! add the accessors that make sense for their kind.

use serde::{Deserialize, Serialize};

use super::apdu::{respond, unknown_command, Apdu, CardResult, Sw};
use super::fs::{Cursor, FileTree, UpdateKey};
use super::hexser;
use super::purse::{InitPolicy, Purse, Session};
use super::rng::SimRng;

/// FID of the payment ADF.
pub(crate) const ADF_FID: u16 = 0x1001;
/// DF name of the payment ADF.
pub(crate) const ADF_NAME: [u8; 9] = [0xA0, 0x00, 0x00, 0x00, 0x03, 0x86, 0x98, 0x07, 0x01];
/// DF name that selects the MF ("1PAY.SYS.DDF01").
pub(crate) const PSE_NAME: &[u8; 14] = b"1PAY.SYS.DDF01";
/// Longest PIN accepted by VERIFY.
pub const PIN_BYTES_MAX: usize = 12;

/// Instructions a CPU card knows (for `6E00` versus `6D00`).
const KNOWN_INS: &[u8] = &[
    0xA4, 0xB0, 0xB2, 0x20, 0x84, 0xD6, 0x5C, 0x50, 0x52, 0x54, 0xDC, 0x5A,
];

/// What differs between the kinds of CPU card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// INITIALIZE FOR LOAD needs the PIN verified since the ADF was selected (ETC).
    pub load_requires_pin: bool,
    /// Composite purchase with `0019` (ETC).
    pub composite: bool,
}

/// The PIN and its try counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pin {
    #[serde(with = "hexser::vec")]
    pub code: Vec<u8>,
    pub tries_max: u8,
    pub tries_left: u8,
}

/// What a reset or power loss forgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Volatile {
    pub cursor: Cursor,
    pub pin_verified: bool,
    pub challenge: Option<[u8; 4]>,
}

/// The card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CpuCard {
    pub profile: Profile,
    pub files: FileTree,
    pub purse: Purse,
    pub pin: Pin,
    pub rng: SimRng,
    #[serde(skip)]
    pub vol: Volatile,
}

impl CpuCard {
    /// Forgets the volatile state: the MF is selected, no PIN, no session, no challenge.
    pub(crate) fn reset(&mut self) {
        self.vol = Volatile::default();
        self.purse.clear_session();
    }

    /// Runs one command. Any command cancels a pending INITIALIZE unless it is that
    /// INITIALIZE's CREDIT/DEBIT (or, for a composite purchase, UPDATE CAPP DATA CACHE).
    pub(crate) fn process(&mut self, bytes: &[u8]) -> Vec<u8> {
        let session = self.purse.take_session();
        respond(Apdu::parse(bytes).and_then(|apdu| self.dispatch(&apdu, session)))
    }

    fn dispatch(&mut self, apdu: &Apdu, session: Option<Session>) -> CardResult {
        match (apdu.cla, apdu.ins) {
            (0x00, 0xA4) => self.select(apdu),
            (0x00, 0xB0) => self.files.read_binary(&mut self.vol.cursor, apdu),
            (0x00, 0xB2) => {
                let purse = &self.purse;
                self.files
                    .read_record(&mut self.vol.cursor, apdu, &|n| purse.log_record(n))
            }
            (0x00, 0x20) => self.verify(apdu),
            (0x00, 0x84) => get_challenge(apdu, &mut self.rng, &mut self.vol.challenge),
            (0x04, 0xD6) => self.sm_update(apdu),
            (0x00, 0xD6) => Err(Sw::SECURITY),
            (0x80, 0x5C | 0x50 | 0x52 | 0x54 | 0xDC | 0x5A) => self.purse_command(apdu, session),
            (cla, ins) => Err(unknown_command(cla, ins, KNOWN_INS)),
        }
    }

    fn select(&mut self, apdu: &Apdu) -> CardResult {
        let result = self.files.select(&mut self.vol.cursor, apdu);
        if result.is_ok() {
            self.vol.pin_verified = false;
        }
        result
    }

    /// True when the payment ADF is the current DF.
    pub(crate) fn adf_selected(&self) -> bool {
        self.files
            .dfs
            .get(self.vol.cursor.df)
            .is_some_and(|d| d.fid == ADF_FID)
    }

    fn purse_command(&mut self, apdu: &Apdu, session: Option<Session>) -> CardResult {
        if !self.adf_selected() {
            return Err(Sw::CONDITIONS);
        }
        match apdu.ins {
            0x5C => self.purse.get_balance(apdu),
            0x50 => {
                let policy = InitPolicy {
                    load_allowed: !self.profile.load_requires_pin || self.vol.pin_verified,
                    composite: self.profile.composite,
                };
                self.purse.initialize(apdu, policy, &mut self.rng)
            }
            0x52 => self.purse.credit(session, apdu),
            0xDC => self.purse.update_capp(session, apdu),
            0x54 => self.debit(apdu, session),
            0x5A => self.purse.prove(apdu),
            _ => Err(Sw::INS_NOT_SUPPORTED),
        }
    }

    fn debit(&mut self, apdu: &Apdu, session: Option<Session>) -> CardResult {
        let (response, capp) = self.purse.debit(session, apdu)?;
        if let Some(record) = capp {
            self.files.set_content(ADF_FID, 0x0019, &record);
        }
        Ok(response)
    }

    /// VERIFY (`00 20 00 00 Lc PIN`): `63Cx` with x tries left, `6983` once blocked.
    fn verify(&mut self, apdu: &Apdu) -> CardResult {
        apdu.expect_p1p2(0x00, 0x00)?;
        if apdu.data.is_empty() || apdu.data.len() > PIN_BYTES_MAX {
            return Err(Sw::WRONG_LENGTH);
        }
        if self.pin.tries_left == 0 {
            return Err(Sw::PIN_BLOCKED);
        }
        if cardd_crypto::mac_eq(&apdu.data, &self.pin.code) {
            self.pin.tries_left = self.pin.tries_max;
            self.vol.pin_verified = true;
            return Ok(Vec::new());
        }
        self.pin.tries_left -= 1;
        self.vol.pin_verified = false;
        Err(Sw::tries_left(self.pin.tries_left))
    }

    fn sm_update(&mut self, apdu: &Apdu) -> CardResult {
        let challenge = self.vol.challenge.take();
        let keys = self.purse.keys();
        let key_for = |key: UpdateKey| match key {
            UpdateKey::Damk => Some((keys.algorithm, keys.damk.clone())),
            UpdateKey::EsamSystem | UpdateKey::EsamApplication => None,
        };
        self.files
            .sm_update(&mut self.vol.cursor, apdu, challenge, &key_for)
    }
}

/// GET CHALLENGE (`00 84 00 00 04|08`): returns the random and arms one secure-messaging
/// command with its first four bytes.
pub(crate) fn get_challenge(
    apdu: &Apdu,
    rng: &mut SimRng,
    challenge: &mut Option<[u8; 4]>,
) -> CardResult {
    apdu.expect_p1p2(0x00, 0x00)?;
    if !apdu.data.is_empty() {
        return Err(Sw::WRONG_LENGTH);
    }
    let random = match apdu.le {
        Some(4) => rng.bytes::<4>().to_vec(),
        Some(8) => rng.bytes::<8>().to_vec(),
        _ => return Err(Sw::WRONG_LENGTH),
    };
    *challenge = super::apdu::array_at::<4>(&random, 0);
    Ok(random)
}
