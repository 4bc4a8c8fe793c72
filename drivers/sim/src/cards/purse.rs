//! The electronic purse (EP) shared by ETC user cards and city one-cards.
//!
//! This is the money state machine of `docs/card-protocol.md`: balance, online (load) and
//! offline (purchase) transaction counters, the key set, the one pending INITIALIZE session,
//! the last proof of each transaction type for GET TRANSACTION PROVE, and the `0018` cyclic
//! log. It is kept apart from the file commands so that every rule about money sits in one
//! place: INITIALIZE changes nothing but arms one CREDIT or DEBIT; a bad MAC changes nothing;
//! a success moves balance, counter, log and proof together.

use serde::{Deserialize, Serialize};

use super::apdu::{array_at, u16_at, u32_at, Apdu, CardResult, Sw};
use super::hexser;
use super::keys::{alg_id, key_index, CardKeys};
use super::rng::SimRng;
use cardd_crypto::mac_input;

/// Transaction type of an EP load.
pub const TX_LOAD: u8 = 0x02;
/// Transaction type of an EP purchase.
pub const TX_PURCHASE: u8 = 0x06;
/// Transaction type of a composite (CAPP) purchase.
pub const TX_COMPOSITE: u8 = 0x09;
/// Bytes of one `0018` record.
pub const LOG_RECORD_BYTES: usize = 23;
/// Most records any simulated log keeps (record numbers are one byte).
pub const LOG_CAPACITY_MAX: u8 = 255;
/// Bytes of the `0019` composite record.
pub const CAPP_RECORD_BYTES: usize = 43;

/// One `0018` record: ATC(2) overdraft(3) amount(4) type(1) terminal(6) date(4) time(3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The counter before the transaction (online for a load, offline for a purchase).
    pub atc: u16,
    /// Overdraft limit in fen (3 bytes on the card; always 0 here).
    pub overdraft_fen: u32,
    pub amount_fen: u32,
    pub tx_type: u8,
    #[serde(with = "hexser::arr")]
    pub terminal: [u8; 6],
    #[serde(with = "hexser::arr")]
    pub date: [u8; 4],
    #[serde(with = "hexser::arr")]
    pub time: [u8; 3],
}

impl LogRecord {
    /// The 23 bytes READ RECORD returns.
    pub fn to_bytes(&self) -> [u8; LOG_RECORD_BYTES] {
        let mut out = [0u8; LOG_RECORD_BYTES];
        out[0..2].copy_from_slice(&self.atc.to_be_bytes());
        out[2..5].copy_from_slice(&self.overdraft_fen.min(0xFF_FFFF).to_be_bytes()[1..]);
        out[5..9].copy_from_slice(&self.amount_fen.to_be_bytes());
        out[9] = self.tx_type;
        out[10..16].copy_from_slice(&self.terminal);
        out[16..20].copy_from_slice(&self.date);
        out[20..23].copy_from_slice(&self.time);
        out
    }

    /// Parses a 23-byte record (`None` for any other length).
    pub fn parse(bytes: &[u8]) -> Option<LogRecord> {
        if bytes.len() != LOG_RECORD_BYTES {
            return None;
        }
        let overdraft = array_at::<3>(bytes, 2)?;
        Some(LogRecord {
            atc: u16_at(bytes, 0)?,
            overdraft_fen: u32::from_be_bytes([0, overdraft[0], overdraft[1], overdraft[2]]),
            amount_fen: u32_at(bytes, 5)?,
            tx_type: *bytes.get(9)?,
            terminal: array_at(bytes, 10)?,
            date: array_at(bytes, 16)?,
            time: array_at(bytes, 20)?,
        })
    }
}

/// What GET TRANSACTION PROVE returns for the last transaction of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub tx_type: u8,
    /// The counter before the transaction (accepted only with `prove_accepts_pre_atc`).
    pub atc_before: u16,
    /// The counter after the transaction (always accepted).
    pub atc_after: u16,
    /// Load: the MAC2 the card accepted. Purchase: the card's MAC2.
    #[serde(with = "hexser::arr")]
    pub mac: [u8; 4],
    #[serde(with = "hexser::arr")]
    pub tac: [u8; 4],
}

/// Per-card purse settings fixed at personalisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurseConfig {
    /// INITIALIZE FOR LOAD refuses (`6985`) a load that would take the balance above this.
    pub max_balance_fen: u32,
    /// Key version reported by INITIALIZE.
    pub key_version: u8,
    /// GET TRANSACTION PROVE also accepts the counter value before the transaction.
    pub prove_accepts_pre_atc: bool,
    /// Records kept in `0018` (1..=255).
    pub log_capacity: u8,
}

/// An armed INITIALIZE (volatile: reset, power loss or any other command cancels it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    Load(Pending),
    Purchase(Pending),
}

/// The inputs INITIALIZE fixed for its CREDIT or DEBIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    tx_type: u8,
    amount: u32,
    terminal: [u8; 6],
    random: [u8; 4],
    atc: u16,
    balance: u32,
    capp: Option<Vec<u8>>,
}

/// The INITIALIZE command data: keyIdx(1) amount(4) terminal(6).
struct InitRequest {
    key_index: u8,
    amount: u32,
    terminal: [u8; 6],
}

impl InitRequest {
    fn parse(apdu: &Apdu) -> Result<InitRequest, Sw> {
        apdu.expect_lc(11)?;
        let data = &apdu.data;
        Ok(InitRequest {
            key_index: *data.first().ok_or(Sw::WRONG_LENGTH)?,
            amount: u32_at(data, 1).ok_or(Sw::WRONG_LENGTH)?,
            terminal: array_at(data, 5).ok_or(Sw::WRONG_LENGTH)?,
        })
    }
}

/// What the card around the purse decides for an INITIALIZE.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitPolicy {
    /// The card's load conditions hold (ETC: PIN verified since the ADF was selected).
    pub load_allowed: bool,
    /// The card supports composite purchase (`80 50 03 02`).
    pub composite: bool,
}

/// The purse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Purse {
    balance_fen: u32,
    online_atc: u16,
    offline_atc: u16,
    config: PurseConfig,
    keys: CardKeys,
    /// Newest first.
    log: Vec<LogRecord>,
    /// At most one per transaction type.
    proofs: Vec<Proof>,
    #[serde(skip)]
    session: Option<Session>,
}

impl Purse {
    pub(crate) fn new(
        balance_fen: u32,
        online_atc: u16,
        offline_atc: u16,
        config: PurseConfig,
        keys: CardKeys,
    ) -> Purse {
        Purse {
            balance_fen,
            online_atc,
            offline_atc,
            config,
            keys,
            log: Vec::new(),
            proofs: Vec::new(),
            session: None,
        }
    }

    pub fn balance_fen(&self) -> u32 {
        self.balance_fen
    }
    pub fn online_atc(&self) -> u16 {
        self.online_atc
    }
    pub fn offline_atc(&self) -> u16 {
        self.offline_atc
    }
    pub fn config(&self) -> &PurseConfig {
        &self.config
    }
    /// The card's keys (test keys: the simulator is not a security boundary).
    pub fn keys(&self) -> &CardKeys {
        &self.keys
    }
    /// The `0018` records, newest first.
    pub fn log(&self) -> &[LogRecord] {
        &self.log
    }
    /// The kept proof of transaction type `tx_type`.
    pub fn proof(&self, tx_type: u8) -> Option<&Proof> {
        self.proofs.iter().find(|p| p.tx_type == tx_type)
    }
    /// True while an INITIALIZE is armed.
    pub fn has_pending_session(&self) -> bool {
        self.session.is_some()
    }

    /// Sets the balance directly (a personalisation tool's power, for tests).
    pub fn set_balance_fen(&mut self, balance_fen: u32) {
        self.balance_fen = balance_fen;
    }
    /// Sets the online counter directly (for tests of `9402`).
    pub fn set_online_atc(&mut self, atc: u16) {
        self.online_atc = atc;
    }
    /// Sets the offline counter directly.
    pub fn set_offline_atc(&mut self, atc: u16) {
        self.offline_atc = atc;
    }
    /// The settings, to change them after issue.
    pub fn config_mut(&mut self) -> &mut PurseConfig {
        &mut self.config
    }

    pub(crate) fn take_session(&mut self) -> Option<Session> {
        self.session.take()
    }

    pub(crate) fn clear_session(&mut self) {
        self.session = None;
    }

    /// Record `n` (1 = newest) of `0018`.
    pub(crate) fn log_record(&self, n: u8) -> Option<Vec<u8>> {
        let index = usize::from(n).checked_sub(1)?;
        self.log.get(index).map(|r| r.to_bytes().to_vec())
    }

    /// GET BALANCE (`80 5C 00 02 04`).
    pub(crate) fn get_balance(&self, apdu: &Apdu) -> CardResult {
        if apdu.p1 != 0x00 {
            return Err(Sw::WRONG_P1P2);
        }
        check_ep(apdu.p2)?;
        Ok(self.balance_fen.to_be_bytes().to_vec())
    }

    /// INITIALIZE FOR LOAD / PURCHASE / CAPP PURCHASE (`80 50 P1 02`).
    pub(crate) fn initialize(
        &mut self,
        apdu: &Apdu,
        policy: InitPolicy,
        rng: &mut SimRng,
    ) -> CardResult {
        let tx_type = match apdu.p1 {
            0x00 => TX_LOAD,
            0x01 => TX_PURCHASE,
            0x03 if policy.composite => TX_COMPOSITE,
            _ => return Err(Sw::WRONG_P1P2),
        };
        check_ep(apdu.p2)?;
        let request = InitRequest::parse(apdu)?;
        if tx_type == TX_LOAD {
            if !policy.load_allowed {
                return Err(Sw::SECURITY);
            }
            self.init_load(request, rng)
        } else {
            self.init_purchase(request, tx_type, rng)
        }
    }

    fn check_key_index(&self, requested: u8) -> Result<(), Sw> {
        if requested == key_index(self.keys.algorithm) {
            Ok(())
        } else {
            Err(Sw::KEY_NOT_FOUND)
        }
    }

    fn init_load(&mut self, request: InitRequest, rng: &mut SimRng) -> CardResult {
        self.check_key_index(request.key_index)?;
        if self.online_atc == u16::MAX {
            return Err(Sw::COUNTER_AT_MAXIMUM);
        }
        self.balance_fen
            .checked_add(request.amount)
            .filter(|b| *b <= self.config.max_balance_fen)
            .ok_or(Sw::CONDITIONS)?;
        let random = rng.bytes::<4>();
        let alg = self.keys.algorithm;
        let session_key =
            cardd_crypto::load_session_key(alg, &self.keys.dlk, random, self.online_atc);
        let mac1_input =
            mac_input::load_mac1(self.balance_fen, request.amount, TX_LOAD, &request.terminal);
        let mac1 = cardd_crypto::purse_mac(&session_key, &mac1_input);
        self.session = Some(Session::Load(self.pending(
            TX_LOAD,
            &request,
            random,
            self.online_atc,
        )));
        let mut out = self.balance_fen.to_be_bytes().to_vec();
        out.extend_from_slice(&self.online_atc.to_be_bytes());
        out.extend_from_slice(&[self.config.key_version, alg_id(alg)]);
        out.extend_from_slice(&random);
        out.extend_from_slice(&mac1);
        Ok(out)
    }

    fn init_purchase(&mut self, request: InitRequest, tx_type: u8, rng: &mut SimRng) -> CardResult {
        self.check_key_index(request.key_index)?;
        if self.offline_atc == u16::MAX {
            return Err(Sw::COUNTER_AT_MAXIMUM);
        }
        if self.balance_fen < request.amount {
            return Err(Sw::INSUFFICIENT_BALANCE);
        }
        let random = rng.bytes::<4>();
        self.session = Some(Session::Purchase(self.pending(
            tx_type,
            &request,
            random,
            self.offline_atc,
        )));
        let mut out = self.balance_fen.to_be_bytes().to_vec();
        out.extend_from_slice(&self.offline_atc.to_be_bytes());
        out.extend_from_slice(&[
            0,
            0,
            0,
            self.config.key_version,
            alg_id(self.keys.algorithm),
        ]);
        out.extend_from_slice(&random);
        Ok(out)
    }

    fn pending(&self, tx_type: u8, request: &InitRequest, random: [u8; 4], atc: u16) -> Pending {
        Pending {
            tx_type,
            amount: request.amount,
            terminal: request.terminal,
            random,
            atc,
            balance: self.balance_fen,
            capp: None,
        }
    }

    /// CREDIT FOR LOAD (`80 52 00 00 0B`): date(4) time(3) MAC2(4) → TAC(4).
    pub(crate) fn credit(&mut self, session: Option<Session>, apdu: &Apdu) -> CardResult {
        let Some(Session::Load(s)) = session else {
            return Err(Sw::CONDITIONS);
        };
        apdu.expect_p1p2(0x00, 0x00)?;
        apdu.expect_lc(11)?;
        let (date, time, mac2) = date_time_mac(&apdu.data, 0)?;
        if s.balance != self.balance_fen || s.atc != self.online_atc {
            return Err(Sw::CONDITIONS);
        }
        let alg = self.keys.algorithm;
        let session_key = cardd_crypto::load_session_key(alg, &self.keys.dlk, s.random, s.atc);
        let expected = cardd_crypto::purse_mac(
            &session_key,
            &mac_input::load_mac2(s.amount, TX_LOAD, &s.terminal, &date, &time),
        );
        if !cardd_crypto::mac_eq(&expected, &mac2) {
            return Err(Sw::MAC_INVALID);
        }
        let new_balance = s
            .balance
            .checked_add(s.amount)
            .filter(|b| *b <= self.config.max_balance_fen)
            .ok_or(Sw::CONDITIONS)?;
        let new_atc = s.atc.checked_add(1).ok_or(Sw::COUNTER_AT_MAXIMUM)?;
        let tac_input = mac_input::load_tac(
            new_balance,
            s.atc,
            s.amount,
            TX_LOAD,
            &s.terminal,
            &date,
            &time,
        );
        let tac = cardd_crypto::purse_mac(&cardd_crypto::tac_key(alg, &self.keys.dtk), &tac_input);
        self.balance_fen = new_balance;
        self.online_atc = new_atc;
        self.commit(
            &s,
            date,
            time,
            Proof {
                tx_type: TX_LOAD,
                atc_before: s.atc,
                atc_after: new_atc,
                mac: mac2,
                tac,
            },
        );
        Ok(tac.to_vec())
    }

    /// UPDATE CAPP DATA CACHE (`80 DC AA C8 2B`): keeps the record for the composite DEBIT.
    pub(crate) fn update_capp(&mut self, session: Option<Session>, apdu: &Apdu) -> CardResult {
        let Some(Session::Purchase(mut s)) = session else {
            return Err(Sw::CONDITIONS);
        };
        if s.tx_type != TX_COMPOSITE {
            return Err(Sw::CONDITIONS);
        }
        apdu.expect_p1p2(0xAA, 0xC8)?;
        apdu.expect_lc(CAPP_RECORD_BYTES)?;
        if !apdu.data.starts_with(&[0xAA, 0x29]) {
            return Err(Sw::WRONG_DATA);
        }
        s.capp = Some(apdu.data.clone());
        self.session = Some(Session::Purchase(s));
        Ok(Vec::new())
    }

    /// DEBIT FOR PURCHASE (`80 54 01 00 0F`): termSeq(4) date(4) time(3) MAC1(4) → TAC(4) MAC2(4).
    /// Also returns the cached `0019` record of a composite purchase, for the card to write.
    pub(crate) fn debit(
        &mut self,
        session: Option<Session>,
        apdu: &Apdu,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), Sw> {
        let Some(Session::Purchase(s)) = session else {
            return Err(Sw::CONDITIONS);
        };
        apdu.expect_p1p2(0x01, 0x00)?;
        apdu.expect_lc(15)?;
        let term_seq = u32_at(&apdu.data, 0).ok_or(Sw::WRONG_LENGTH)?;
        let (date, time, mac1) = date_time_mac(&apdu.data, 4)?;
        if s.balance != self.balance_fen || s.atc != self.offline_atc {
            return Err(Sw::CONDITIONS);
        }
        let alg = self.keys.algorithm;
        let session_key =
            cardd_crypto::purchase_session_key(alg, &self.keys.dpk, s.random, s.atc, term_seq);
        let mac1_input = mac_input::purchase_mac1(s.amount, s.tx_type, &s.terminal, &date, &time);
        if !cardd_crypto::mac_eq(&cardd_crypto::purse_mac(&session_key, &mac1_input), &mac1) {
            return Err(Sw::MAC_INVALID);
        }
        let new_balance = s
            .balance
            .checked_sub(s.amount)
            .ok_or(Sw::INSUFFICIENT_BALANCE)?;
        let new_atc = s.atc.checked_add(1).ok_or(Sw::COUNTER_AT_MAXIMUM)?;
        let mac2 = cardd_crypto::purse_mac(&session_key, &mac_input::purchase_mac2(s.amount));
        let tac_input =
            mac_input::purchase_tac(s.amount, s.tx_type, &s.terminal, term_seq, &date, &time);
        let tac = cardd_crypto::purse_mac(&cardd_crypto::tac_key(alg, &self.keys.dtk), &tac_input);
        self.balance_fen = new_balance;
        self.offline_atc = new_atc;
        self.commit(
            &s,
            date,
            time,
            Proof {
                tx_type: s.tx_type,
                atc_before: s.atc,
                atc_after: new_atc,
                mac: mac2,
                tac,
            },
        );
        let mut out = tac.to_vec();
        out.extend_from_slice(&mac2);
        Ok((out, s.capp))
    }

    /// Appends the log record and keeps the proof of a committed transaction.
    fn commit(&mut self, s: &Pending, date: [u8; 4], time: [u8; 3], proof: Proof) {
        let record = LogRecord {
            atc: s.atc,
            overdraft_fen: 0,
            amount_fen: s.amount,
            tx_type: s.tx_type,
            terminal: s.terminal,
            date,
            time,
        };
        self.log.insert(0, record);
        self.log
            .truncate(usize::from(self.config.log_capacity.max(1)));
        self.proofs.retain(|p| p.tx_type != proof.tx_type);
        self.proofs.push(proof);
    }

    /// GET TRANSACTION PROVE (`80 5A 00 P2 02` ATC(2)) → MAC(4) TAC(4).
    pub(crate) fn prove(&self, apdu: &Apdu) -> CardResult {
        if apdu.p1 != 0x00 {
            return Err(Sw::WRONG_P1P2);
        }
        apdu.expect_lc(2)?;
        let atc = u16_at(&apdu.data, 0).ok_or(Sw::WRONG_LENGTH)?;
        let pre_ok = self.config.prove_accepts_pre_atc;
        let proof = self
            .proof(apdu.p2)
            .filter(|p| p.atc_after == atc || (pre_ok && p.atc_before == atc))
            .ok_or(Sw::PROOF_NOT_AVAILABLE)?;
        let mut out = proof.mac.to_vec();
        out.extend_from_slice(&proof.tac);
        Ok(out)
    }
}

/// P2 of purse commands: `02` EP; `01` (ED) is not supported; anything else is wrong.
fn check_ep(p2: u8) -> Result<(), Sw> {
    match p2 {
        0x02 => Ok(()),
        0x01 => Err(Sw::FUNCTION_NOT_SUPPORTED),
        _ => Err(Sw::WRONG_P1P2),
    }
}

/// A transaction's BCD date, BCD time and MAC.
type DateTimeMac = ([u8; 4], [u8; 3], [u8; 4]);

/// date(4) time(3) MAC(4) at `offset`.
fn date_time_mac(data: &[u8], offset: usize) -> Result<DateTimeMac, Sw> {
    let date = array_at::<4>(data, offset).ok_or(Sw::WRONG_LENGTH)?;
    let time = array_at::<3>(data, offset + 4).ok_or(Sw::WRONG_LENGTH)?;
    let mac = array_at::<4>(data, offset + 7).ok_or(Sw::WRONG_LENGTH)?;
    Ok((date, time, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_round_trips() {
        let r = LogRecord {
            atc: 5,
            overdraft_fen: 0,
            amount_fen: 10_000,
            tx_type: TX_LOAD,
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: [0x20, 0x24, 0x01, 0x02],
            time: [0x03, 0x04, 0x05],
        };
        let bytes = r.to_bytes();
        assert_eq!(
            hex::encode_upper(bytes),
            "0005000000000027100211223344556620240102030405"
        );
        assert_eq!(LogRecord::parse(&bytes), Some(r));
        assert_eq!(LogRecord::parse(&bytes[1..]), None);
    }
}
