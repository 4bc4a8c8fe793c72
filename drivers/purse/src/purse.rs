//! Purse operations over a [`CardChannel`]: one method per card command, plus the pure
//! bookkeeping a load needs to survive an interruption.
//!
//! Each [`Purse`] method sends one command (two for the few convenience helpers named as
//! such), checks the status word and parses the answer, so a caller never sees a raw status
//! word or unparsed bytes. The steps of a load stay separate on purpose: the flow engine
//! journals a [`LoadSession`] between INITIALIZE FOR LOAD and CREDIT FOR LOAD, and when the
//! CREDIT's answer is lost it re-reads the card ([`Purse::observe_load`]) and lets
//! [`decide_interrupted_load`] say whether the money landed (reference section 3). This
//! module knows nothing of money policy: no limits, no business rules, no journal.

use std::fmt;

use cardd_crypto::mac_eq;
use cardd_reader::{CardChannel, CommandApdu, StatusWord};
use serde::{Deserialize, Serialize};

use crate::commands::{self, key_index_for, Pin, PurchaseKind, Sfi, TransactionType};
use crate::error::{ParseError, PurseError};
use crate::files::{
    CappRecord, CityIssueInfo, EtcIssueInfo, HolderInfo, LogRecord, ObuSystemInfo, ObuVehicleInfo,
};
use crate::pin::{PinMark, PinRefusals};
use crate::responses::{self, DebitResponse, InitLoadResponse, InitPurchaseResponse, Proof};
use crate::sam::{CardKeyContext, LoadTerms, MaintenanceKey, SamError, SecurityModule};

const SELECT: &str = "SELECT";
const READ_BINARY: &str = "READ BINARY";
const READ_RECORD: &str = "READ RECORD";
const VERIFY: &str = "VERIFY PIN";
const GET_CHALLENGE: &str = "GET CHALLENGE";
const UPDATE_BINARY: &str = "UPDATE BINARY";
const GET_BALANCE: &str = "GET BALANCE";
const INIT_LOAD: &str = "INITIALIZE FOR LOAD";
const CREDIT: &str = "CREDIT FOR LOAD";
const INIT_PURCHASE: &str = "INITIALIZE FOR PURCHASE";
const UPDATE_CAPP: &str = "UPDATE CAPP DATA CACHE";
const DEBIT: &str = "DEBIT FOR PURCHASE";
const PROVE: &str = "GET TRANSACTION PROVE";
const CHIP_ID: &str = "GET CHIP ID";
const READ_ENCRYPTED: &str = "READ ENCRYPTED";

/// The amount of the harmless probing INITIALIZE FOR LOAD: 1 fen.
pub const PROBE_AMOUNT: u32 = 1;

/// The purse application of one card, reached through a channel.
pub struct Purse<'a> {
    channel: &'a mut dyn CardChannel,
}

impl fmt::Debug for Purse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Purse")
            .field("reader", &self.channel.reader_id())
            .finish()
    }
}

/// Balance and online counter, as a probing INITIALIZE FOR LOAD reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineCounters {
    pub balance: u32,
    pub online_atc: u16,
}

impl<'a> Purse<'a> {
    pub fn new(channel: &'a mut dyn CardChannel) -> Self {
        Purse { channel }
    }

    /// The underlying channel, for commands this layer does not cover.
    pub fn channel(&mut self) -> &mut dyn CardChannel {
        self.channel
    }

    /// Sends `apdu` and returns its data if the card answered `9000`.
    fn run(&mut self, command: &'static str, apdu: &CommandApdu) -> Result<Vec<u8>, PurseError> {
        let response = self.channel.transmit(apdu)?;
        if response.sw.is_ok() {
            Ok(response.data)
        } else {
            Err(status_error(command, response.sw))
        }
    }

    fn run_parse<T>(
        &mut self,
        command: &'static str,
        apdu: &CommandApdu,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T, PurseError> {
        let data = self.run(command, apdu)?;
        parse(&data).map_err(|source| PurseError::Parse { command, source })
    }

    /// SELECT the MF by file id; returns the FCI (possibly empty).
    pub fn select_mf(&mut self) -> Result<Vec<u8>, PurseError> {
        self.run(SELECT, &commands::select_mf())
    }

    /// SELECT the PSE by name (selects the MF); returns the FCI.
    pub fn select_pse(&mut self) -> Result<Vec<u8>, PurseError> {
        self.run(SELECT, &commands::select_pse())
    }

    /// SELECT the purse ADF by file id `1001`, falling back to its DF name when the card
    /// answers `6A82` (two commands then). Returns the FCI. Resets the PIN state.
    pub fn select_etc_adf(&mut self) -> Result<Vec<u8>, PurseError> {
        match self.run(SELECT, &commands::select_etc_adf()) {
            Err(PurseError::Status {
                sw: StatusWord::FILE_NOT_FOUND,
                ..
            }) => self.run(SELECT, &commands::select_etc_adf_by_aid()),
            other => other,
        }
    }

    /// SELECT the ESAM application DF `DF01`.
    pub fn select_df01(&mut self) -> Result<Vec<u8>, PurseError> {
        self.run(SELECT, &commands::select_df01())
    }

    /// READ BINARY by SFI (`le` 0 = to the end of the file).
    pub fn read_binary_sfi(&mut self, sfi: Sfi, offset: u8, le: u8) -> Result<Vec<u8>, PurseError> {
        self.run(READ_BINARY, &commands::read_binary_sfi(sfi, offset, le))
    }

    /// READ BINARY of the currently selected EF at `offset` (`le` 0 = to the end of the file).
    pub fn read_binary(&mut self, offset: u16, le: u8) -> Result<Vec<u8>, PurseError> {
        self.run(READ_BINARY, &commands::read_binary(offset, le)?)
    }

    /// Reads ETC 0015 (ADF selected), 43 or 50 bytes.
    pub fn read_etc_issue_info(&mut self) -> Result<EtcIssueInfo, PurseError> {
        self.run_parse(
            READ_BINARY,
            &commands::read_binary_sfi(Sfi::ISSUE, 0, 0),
            EtcIssueInfo::parse,
        )
    }

    /// Reads city 0015 (ADF selected).
    pub fn read_city_issue_info(&mut self) -> Result<CityIssueInfo, PurseError> {
        let le = CityIssueInfo::LEN as u8;
        self.run_parse(
            READ_BINARY,
            &commands::read_binary_sfi(Sfi::ISSUE, 0, le),
            CityIssueInfo::parse,
        )
    }

    /// Reads 0016 holder information (an MF-level file: select the MF first).
    pub fn read_holder(&mut self) -> Result<HolderInfo, PurseError> {
        let le = HolderInfo::LEN as u8;
        self.run_parse(
            READ_BINARY,
            &commands::read_binary_sfi(Sfi::HOLDER, 0, le),
            HolderInfo::parse,
        )
    }

    /// Reads up to `max` records of the 0018 log, newest first, stopping at the first missing
    /// (`6A83`) or blank record.
    pub fn read_log(&mut self, max: u8) -> Result<Vec<LogRecord>, PurseError> {
        let mut records = Vec::new();
        for n in 1..=max {
            let response = self.channel.transmit(&commands::read_log_record(n))?;
            if response.sw == StatusWord::RECORD_NOT_FOUND {
                break;
            }
            if !response.sw.is_ok() {
                return Err(status_error(READ_RECORD, response.sw));
            }
            let record = LogRecord::parse(&response.data).map_err(|source| PurseError::Parse {
                command: READ_RECORD,
                source,
            })?;
            if record.is_empty() {
                break;
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Reads the 0019 composite record.
    pub fn read_capp_record(&mut self) -> Result<CappRecord, PurseError> {
        self.run_parse(
            READ_RECORD,
            &commands::read_capp_record(),
            CappRecord::parse,
        )
    }

    /// VERIFY PIN of `pin` on the card numbered `card`, through the refusal rule of
    /// [`crate::pin`]: a pair the card refused before is not presented
    /// ([`PurseError::PinRefusedBefore`]); a refusal is recorded before it is returned. A wrong
    /// PIN is [`PurseError::WrongPin`]; a blocked one a `6983` status.
    pub fn verify_pin(
        &mut self,
        card: &str,
        pin: &Pin,
        refusals: &dyn PinRefusals,
    ) -> Result<(), PurseError> {
        let mark = PinMark::of(card, pin);
        if refusals.refused(&mark)? {
            return Err(PurseError::PinRefusedBefore);
        }
        let response = self.channel.transmit(&commands::verify_pin(pin))?;
        if response.sw.is_ok() {
            return Ok(());
        }
        let tries_left = response.sw.tries_left();
        if tries_left.is_some() || response.sw.0 == 0x6983 {
            refusals.record(&mark)?;
        }
        match tries_left {
            Some(tries_left) => Err(PurseError::WrongPin { tries_left }),
            None => Err(status_error(VERIFY, response.sw)),
        }
    }

    /// GET BALANCE of the EP.
    pub fn balance(&mut self) -> Result<u32, PurseError> {
        self.run_parse(
            GET_BALANCE,
            &commands::get_balance(),
            responses::parse_balance,
        )
    }

    /// INITIALIZE FOR LOAD. Changes nothing on the card; arms one CREDIT FOR LOAD.
    pub fn init_load(
        &mut self,
        key_index: u8,
        amount: u32,
        terminal: &[u8; 6],
    ) -> Result<InitLoadResponse, PurseError> {
        self.run_parse(
            INIT_LOAD,
            &commands::initialize_for_load(key_index, amount, terminal),
            InitLoadResponse::parse,
        )
    }

    /// INITIALIZE FOR LOAD for `plan`.
    pub fn init_load_for(&mut self, plan: &LoadPlan) -> Result<InitLoadResponse, PurseError> {
        self.init_load(plan.key_index, plan.terms.amount, &plan.terms.terminal)
    }

    /// CREDIT FOR LOAD; returns the card's TAC (verify it with the security module). If this
    /// fails with [`PurseError::outcome_unknown`], the load may have landed: use
    /// [`Purse::observe_load`] and [`decide_interrupted_load`].
    pub fn credit(
        &mut self,
        date: &[u8; 4],
        time: &[u8; 3],
        mac2: [u8; 4],
    ) -> Result<[u8; 4], PurseError> {
        self.run_parse(CREDIT, &commands::credit_for_load(date, time, mac2), |d| {
            responses::parse_four("CREDIT FOR LOAD response", d)
        })
    }

    /// CREDIT FOR LOAD of a prepared session.
    pub fn credit_for(&mut self, session: &LoadSession) -> Result<[u8; 4], PurseError> {
        self.credit(
            &session.plan.terms.date,
            &session.plan.terms.time,
            session.mac2,
        )
    }

    /// INITIALIZE FOR PURCHASE (normal or composite).
    pub fn init_purchase(
        &mut self,
        kind: PurchaseKind,
        key_index: u8,
        amount: u32,
        terminal: &[u8; 6],
    ) -> Result<InitPurchaseResponse, PurseError> {
        let apdu = commands::initialize_for_purchase(kind, key_index, amount, terminal);
        self.run_parse(INIT_PURCHASE, &apdu, InitPurchaseResponse::parse)
    }

    /// UPDATE CAPP DATA CACHE (between a composite INITIALIZE and its DEBIT).
    pub fn update_capp_cache(&mut self, record: &CappRecord) -> Result<(), PurseError> {
        self.run(UPDATE_CAPP, &commands::update_capp_data_cache(record))
            .map(drop)
    }

    /// DEBIT FOR PURCHASE; returns the card's TAC and MAC2 (verify them).
    pub fn debit(
        &mut self,
        term_seq: u32,
        date: &[u8; 4],
        time: &[u8; 3],
        mac1: [u8; 4],
    ) -> Result<DebitResponse, PurseError> {
        self.run_parse(
            DEBIT,
            &commands::debit_for_purchase(term_seq, date, time, mac1),
            DebitResponse::parse,
        )
    }

    /// GET TRANSACTION PROVE for the last transaction of `tx_type` with counter `atc` (the
    /// counter after it). `None` when the card holds no such proof (`9406`).
    pub fn prove(
        &mut self,
        tx_type: TransactionType,
        atc: u16,
    ) -> Result<Option<Proof>, PurseError> {
        let response = self
            .channel
            .transmit(&commands::get_transaction_prove(tx_type, atc))?;
        if response.sw == StatusWord::PROOF_NOT_AVAILABLE {
            return Ok(None);
        }
        if !response.sw.is_ok() {
            return Err(status_error(PROVE, response.sw));
        }
        Proof::parse(&response.data)
            .map(Some)
            .map_err(|source| PurseError::Parse {
                command: PROVE,
                source,
            })
    }

    /// GET CHALLENGE (4 bytes), arming one secure-messaging command.
    pub fn get_challenge(&mut self) -> Result<[u8; 4], PurseError> {
        self.run_parse(GET_CHALLENGE, &commands::get_challenge(), |d| {
            responses::parse_four("GET CHALLENGE response", d)
        })
    }

    /// UPDATE BINARY with secure messaging and a MAC computed by the caller.
    pub fn update_binary_sm(
        &mut self,
        sfi: Sfi,
        offset: u8,
        data: &[u8],
        mac: [u8; 4],
    ) -> Result<(), PurseError> {
        self.run(
            UPDATE_BINARY,
            &commands::update_binary_sm(sfi, offset, data, mac)?,
        )
        .map(drop)
    }

    /// GET CHALLENGE, then UPDATE BINARY with secure messaging, the MAC computed by `sam`
    /// with `key` of `card`.
    pub fn write_binary_sm(
        &mut self,
        sam: &dyn SecurityModule,
        card: &CardKeyContext,
        key: MaintenanceKey,
        sfi: Sfi,
        offset: u8,
        data: &[u8],
    ) -> Result<(), PurseError> {
        let mac_input = commands::update_binary_sm_mac_input(sfi, offset, data)?;
        let challenge = self.get_challenge()?;
        let mac = sam.secure_messaging_mac(card, key, challenge, &mac_input)?;
        self.update_binary_sm(sfi, offset, data, mac)
    }

    /// GET CHIP ID of an ESAM.
    pub fn chip_id(&mut self) -> Result<[u8; 4], PurseError> {
        self.run_parse(CHIP_ID, &commands::get_chip_id(), |d| {
            responses::parse_four("GET CHIP ID response", d)
        })
    }

    /// Reads the ESAM system information (MF selected).
    pub fn read_obu_system_info(&mut self) -> Result<ObuSystemInfo, PurseError> {
        let le = ObuSystemInfo::LEN as u8;
        self.run_parse(
            READ_BINARY,
            &commands::read_binary_sfi(Sfi::ESAM_EF01, 0, le),
            ObuSystemInfo::parse,
        )
    }

    /// READ ENCRYPTED of the ESAM vehicle file (DF01 selected): the ciphertext.
    pub fn read_obu_vehicle_encrypted(
        &mut self,
        random: &[u8; 8],
        key_id: u8,
        key_version: u8,
    ) -> Result<Vec<u8>, PurseError> {
        self.run(
            READ_ENCRYPTED,
            &commands::read_encrypted(random, key_id, key_version),
        )
    }

    /// READ ENCRYPTED of the vehicle file, decrypted by `sam` and parsed.
    pub fn read_obu_vehicle(
        &mut self,
        sam: &dyn SecurityModule,
        card: &CardKeyContext,
        random: &[u8; 8],
        key_id: u8,
        key_version: u8,
    ) -> Result<ObuVehicleInfo, PurseError> {
        let ciphertext = self.read_obu_vehicle_encrypted(random, key_id, key_version)?;
        let plain = sam.decrypt_obu_vehicle(card, random, &ciphertext)?;
        ObuVehicleInfo::parse(&plain).map_err(|source| PurseError::Parse {
            command: READ_ENCRYPTED,
            source,
        })
    }

    /// An INITIALIZE FOR LOAD of 1 fen never followed by CREDIT: harmless (it changes
    /// nothing on the card and the next command cancels it) and returns the balance and the
    /// online counter. ETC cards need the PIN verified first, like any load.
    pub fn probe_online_atc(
        &mut self,
        key_index: u8,
        terminal: &[u8; 6],
    ) -> Result<OnlineCounters, PurseError> {
        let init = self.init_load(key_index, PROBE_AMOUNT, terminal)?;
        Ok(OnlineCounters {
            balance: init.old_balance,
            online_atc: init.online_atc,
        })
    }

    /// What the card says now about an interrupted load: first GET TRANSACTION PROVE for
    /// the counter the load would have produced (before anything else can replace the
    /// proof), then a probing INITIALIZE FOR LOAD for the balance and the online counter.
    /// The ADF must be selected and (ETC) the PIN verified.
    pub fn observe_load(&mut self, session: &LoadSession) -> Result<CardObservation, PurseError> {
        let proof = match session.atc_after() {
            Some(atc) => self.prove(TransactionType::EpLoad, atc)?,
            None => None,
        };
        let counters = match self
            .probe_online_atc(session.plan.key_index, &session.plan.terms.terminal)
        {
            Ok(counters) => counters,
            // A card at its maximum balance refuses even a 1-fen INITIALIZE (6985). When
            // it holds the proof of this load (our MAC2 echoed, its TAC checked by the
            // caller), the proof fixes the counter the load produced and GET BALANCE gives
            // the balance: decided without the probe.
            Err(PurseError::Status { command, sw }) if command == INIT_LOAD && sw.0 == 0x6985 => {
                match (proof, session.atc_after()) {
                    (Some(_), Some(atc)) => OnlineCounters {
                        balance: self.balance()?,
                        online_atc: atc,
                    },
                    _ => return Err(status_error(INIT_LOAD, sw)),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(CardObservation {
            balance: counters.balance,
            online_atc: counters.online_atc,
            proof,
        })
    }
}

fn status_error(command: &'static str, sw: StatusWord) -> PurseError {
    PurseError::Status { command, sw }
}

/// Everything a load needs before the card is asked anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadPlan {
    pub card: CardKeyContext,
    /// Key index for INITIALIZE FOR LOAD (`01` 3DES, `41` SM4).
    pub key_index: u8,
    pub terms: LoadTerms,
}

impl LoadPlan {
    /// A plan with the key index of the card's algorithm.
    pub fn new(
        card: CardKeyContext,
        amount: u32,
        terminal: [u8; 6],
        date: [u8; 4],
        time: [u8; 3],
    ) -> Self {
        LoadPlan {
            card,
            key_index: key_index_for(card.algorithm),
            terms: LoadTerms {
                amount,
                terminal,
                date,
                time,
            },
        }
    }

    /// The INITIALIZE FOR LOAD command of this plan.
    pub fn init_command(&self) -> CommandApdu {
        commands::initialize_for_load(self.key_index, self.terms.amount, &self.terms.terminal)
    }
}

/// A load between INITIALIZE and CREDIT: what to journal before sending CREDIT, and all that
/// is needed to decide later whether it landed. Contains no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSession {
    pub plan: LoadPlan,
    /// The card's INITIALIZE FOR LOAD answer (old balance, online ATC, random, MAC1).
    pub init: InitLoadResponse,
    /// The MAC2 to send in CREDIT FOR LOAD.
    pub mac2: [u8; 4],
}

impl LoadSession {
    /// Verifies the card's MAC1 and computes MAC2 with `sam`.
    pub fn start(
        plan: LoadPlan,
        init: InitLoadResponse,
        sam: &dyn SecurityModule,
    ) -> Result<Self, SamError> {
        sam.verify_load_mac1(&plan.card, &init, &plan.terms)?;
        let mac2 = sam.load_mac2(&plan.card, &init, &plan.terms)?;
        Ok(LoadSession { plan, init, mac2 })
    }

    /// The CREDIT FOR LOAD command of this session.
    pub fn credit_command(&self) -> CommandApdu {
        commands::credit_for_load(&self.plan.terms.date, &self.plan.terms.time, self.mac2)
    }

    /// The balance after the load (`None` if it would overflow, which no card accepts).
    pub fn expected_balance(&self) -> Option<u32> {
        self.init.old_balance.checked_add(self.plan.terms.amount)
    }

    /// The online counter after the load, the one GET TRANSACTION PROVE takes.
    pub fn atc_after(&self) -> Option<u16> {
        self.init.online_atc.checked_add(1)
    }

    /// Checks the TAC of CREDIT FOR LOAD (or of a proof).
    pub fn verify_tac(&self, sam: &dyn SecurityModule, tac: [u8; 4]) -> Result<(), SamError> {
        sam.verify_load_tac(&self.plan.card, &self.init, &self.plan.terms, tac)
    }
}

/// The card's state, re-read after a load's CREDIT went unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardObservation {
    pub balance: u32,
    pub online_atc: u16,
    /// GET TRANSACTION PROVE for the load's post-transaction counter; `None` on `9406`.
    pub proof: Option<Proof>,
}

/// Whether an interrupted load took effect on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadOutcome {
    /// The card was credited with this load: never load it again.
    Landed,
    /// The card is exactly as before INITIALIZE: the load did not happen; it may be released
    /// or run again (with a new INITIALIZE and MAC2).
    NotLanded,
    /// Neither can be proven: manual reconciliation.
    Unknown,
}

/// Decides an interrupted load from the card's state (reference section 3).
///
/// Only CREDIT FOR LOAD moves the online counter, so:
/// * online ATC unchanged → [`LoadOutcome::NotLanded`] (whatever the balance: purchases move
///   only the offline counter and may have lowered it since);
/// * online ATC = original + 1 and the card's proof for that counter carries our MAC2 →
///   [`LoadOutcome::Landed`] (the balance is not required to equal old + amount, for the same
///   reason);
/// * anything else → [`LoadOutcome::Unknown`] (manual reconciliation).
///
/// Pure; see [`decide_interrupted_load_verified`] to also require the proof's TAC to verify.
pub fn decide_interrupted_load(record: &LoadSession, now: CardObservation) -> LoadOutcome {
    if now.online_atc == record.init.online_atc {
        return LoadOutcome::NotLanded;
    }
    match now.proof {
        Some(proof)
            if record.atc_after() == Some(now.online_atc) && mac_eq(&proof.mac, &record.mac2) =>
        {
            LoadOutcome::Landed
        }
        _ => LoadOutcome::Unknown,
    }
}

/// What the card's own transaction log (0018, newest first) shows about an interrupted load,
/// when the counters and the proof could not decide it (the proof was replaced by a later
/// transaction, or a card at its maximum balance refuses the probe):
///
/// * a load record carrying the counter this load was initialized with, and this load's
///   amount, terminal, date and time → [`LoadOutcome::Landed`] (the card writes the record only
///   when CREDIT executes, with the terms the CREDIT carried);
/// * a load record carrying that counter with any other amount, terminal, date or time →
///   [`LoadOutcome::NotLanded`] (another load used the counter this load's MAC2 was bound to,
///   so this CREDIT can never have executed);
/// * no load record with that counter (the log is cyclic and may have dropped it) → `None`:
///   the log says nothing.
///
/// The log cannot prove a negative by absence: a missing record is never read as not landed.
pub fn decide_from_log(record: &LoadSession, log: &[LogRecord]) -> Option<LoadOutcome> {
    let terms = &record.plan.terms;
    let entry = log.iter().find(|l| {
        l.transaction_type() == Some(TransactionType::EpLoad) && l.atc == record.init.online_atc
    })?;
    let ours = entry.amount == terms.amount
        && entry.terminal == terms.terminal
        && entry.date_bcd == terms.date
        && entry.time_bcd == terms.time;
    Some(if ours {
        LoadOutcome::Landed
    } else {
        LoadOutcome::NotLanded
    })
}

/// [`decide_interrupted_load`], and [`LoadOutcome::Landed`] only if the proof's TAC also
/// verifies with `sam` (otherwise [`LoadOutcome::Unknown`]): the TAC, unlike the echoed MAC2,
/// cannot be produced without the card's TAC key.
pub fn decide_interrupted_load_verified(
    record: &LoadSession,
    now: CardObservation,
    sam: &dyn SecurityModule,
) -> LoadOutcome {
    match (decide_interrupted_load(record, now), now.proof) {
        (LoadOutcome::Landed, Some(proof)) if record.verify_tac(sam, proof.tac).is_ok() => {
            LoadOutcome::Landed
        }
        (LoadOutcome::Landed, _) => LoadOutcome::Unknown,
        (outcome, _) => outcome,
    }
}
