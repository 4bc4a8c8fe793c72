//! A card's summary in one call: what `card.summary` shows a teller before anything else.
//!
//! It reads, never writes, and spends no PIN try: SELECT, READ BINARY and GET BALANCE only. The
//! online counter is read only when asked for explicitly (`online_counter`): then, for ETC
//! cards, a VERIFY PIN and a probing INITIALIZE FOR LOAD of 1 fen (it changes nothing on the
//! card and the next command cancels it). A wrong configured PIN is reported and never
//! retried.

use cardd_api::types::plate_colour_zh;
use cardd_crypto::Algorithm;
use cardd_purse::{
    CardIdentity, CityIssueInfo, EtcCardType, EtcIssueInfo, ObuSystemInfo, Pin, PinRefusals, Purse,
    PurseError,
};
use cardd_reader::{CardChannel, ObuTarget, Reader, StatusWord};
use std::sync::Arc;

use crate::daemon::Daemon;

use crate::errors::ApiError;

pub use cardd_api::card::{CardBalance, CardKind, CardSummary};

fn date(d: Option<(u16, u8, u8)>) -> Option<String> {
    d.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

fn algorithm_name(a: Algorithm) -> String {
    a.as_str().to_owned()
}

fn set_balance(summary: &mut CardSummary, fen: u32) {
    summary.balance_fen = Some(i64::from(fen));
    summary.balance = Some(cardd_api::Fen(i64::from(fen)).to_yuan_string());
}

/// What a summary reads beyond the card's files and balance.
#[derive(Clone, Default)]
pub enum Counters {
    /// Nothing: no PIN presented, no load started (every read by default).
    #[default]
    None,
    /// The online counter, on explicit request: VERIFY PIN (through the refusal rule of
    /// `cardd_purse::pin`) and a probing INITIALIZE FOR LOAD.
    Online {
        etc_pin: String,
        refusals: Arc<dyn PinRefusals>,
    },
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the PIN.
        f.write_str(match self {
            Counters::None => "Counters::None",
            Counters::Online { .. } => "Counters::Online",
        })
    }
}

impl Counters {
    /// The online counter, read with the daemon's configured PIN and its durable record of
    /// refused PINs. Refused when the journal failed verification (the daemon fails closed).
    pub fn online(d: &Daemon) -> Result<Counters, ApiError> {
        let journal = d.verified_journal()?;
        Ok(Counters::Online {
            etc_pin: d.config.etc_pin.clone(),
            refusals: Arc::new(journal.pin_refusals().clone()),
        })
    }
}

/// Reads the summary of the card in `reader`; a PIN is presented only for
/// [`Counters::Online`].
pub fn read(
    reader: &mut Reader,
    terminal: [u8; 6],
    counters: Counters,
) -> Result<CardSummary, ApiError> {
    if reader.session().obu().is_some() {
        // An OBU programmer: what answers through its OBU channel is the OBU's ESAM.
        let mut esam = reader.obu(ObuTarget::Esam)?;
        let channel: &mut dyn CardChannel = &mut esam;
        let mut purse = Purse::new(channel);
        let identity = purse.identify_obu()?;
        return summarise(&mut purse, identity, &terminal, counters);
    }
    let mut purse = Purse::new(reader);
    let identity = purse.identify().map_err(|e| match e {
        // An issue file that does not parse: the parser says what is wrong with it.
        PurseError::Parse { source, .. } => {
            ApiError::new(cardd_api::ErrorCode::CardError, source.to_string())
        }
        other => other.into(),
    })?;
    summarise(&mut purse, identity, &terminal, counters)
}

/// The summary of the card `purse` talks to, of the kind it identified as.
fn summarise(
    purse: &mut Purse<'_>,
    identity: CardIdentity,
    terminal: &[u8; 6],
    counters: Counters,
) -> Result<CardSummary, ApiError> {
    match identity {
        CardIdentity::Etc(info) => read_etc(purse, info, terminal, counters),
        CardIdentity::City(info) => read_city(purse, info),
        CardIdentity::Obu(info) => Ok(obu_summary(&info)),
        CardIdentity::Unsupported { issue_info_len: n } => Err(ApiError::new(
            cardd_api::ErrorCode::UnsupportedCard,
            format!("the card's 0015 file is {n} bytes; cardd knows ETC (43/50) and city one-card (30) cards"),
        )),
    }
}

fn read_etc(
    purse: &mut Purse<'_>,
    info: EtcIssueInfo,
    terminal: &[u8; 6],
    counters: Counters,
) -> Result<CardSummary, ApiError> {
    let mut s = CardSummary {
        kind: Some(CardKind::Etc),
        kind_label: CardKind::Etc.label_zh().into(),
        card_number: info.card_number(),
        plate: Some(info.plate_text()),
        plate_colour: Some(info.plate_colour.code()),
        plate_colour_label: Some(plate_colour_zh(info.plate_colour.code()).into()),
        card_type: Some(match info.card_type {
            EtcCardType::StoredValue => "储值卡".into(),
            EtcCardType::Account => "记账卡".into(),
            EtcCardType::Other(code) => format!("其他卡类型（{code:#04X}）"),
        }),
        start_date: date(info.start_date()),
        expiry_date: date(info.expiry_date()),
        algorithm: Some(algorithm_name(info.algorithm())),
        ..CardSummary::default()
    };
    set_balance(&mut s, purse.balance()?);
    let Counters::Online { etc_pin, refusals } = counters else {
        return Ok(s);
    };
    let pin = Pin::ascii(&etc_pin).map_err(|e| ApiError::invalid_params(e.to_string()))?;
    match purse.verify_pin(&s.card_number, &pin, refusals.as_ref()) {
        Ok(()) => {
            let counters = purse.probe_online_atc(info.key_index(), terminal)?;
            s.online_atc = Some(counters.online_atc);
        }
        Err(PurseError::WrongPin { tries_left }) => s.notes.push(format!(
            "卡片拒绝了配置的 PIN（剩余 {tries_left} 次），未读取联机交易序号；此 PIN 不会再自动提交给该卡，请管理员检查 cards.etc_pin"
        )),
        Err(PurseError::PinRefusedBefore) => s.notes.push(
            "该卡曾拒绝配置的 PIN，为免卡片锁定不再自动提交，未读取联机交易序号；请管理员检查 cards.etc_pin".into(),
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(s)
}

fn read_city(purse: &mut Purse<'_>, info: CityIssueInfo) -> Result<CardSummary, ApiError> {
    let mut s = CardSummary {
        kind: Some(CardKind::City),
        kind_label: CardKind::City.label_zh().into(),
        card_number: info.card_number(),
        start_date: date(info.start_date()),
        expiry_date: date(info.expiry_date()),
        ..CardSummary::default()
    };
    set_balance(&mut s, purse.balance()?);
    Ok(s)
}

fn obu_summary(info: &ObuSystemInfo) -> CardSummary {
    CardSummary {
        kind: Some(CardKind::Obu),
        kind_label: CardKind::Obu.label_zh().into(),
        card_number: info.obu_number(),
        expiry_date: date(info.expiry_date()),
        algorithm: Some(algorithm_name(info.algorithm())),
        obu_activated: Some(info.is_activated()),
        ..CardSummary::default()
    }
}

/// The purse balance with as few APDUs as the card allows: GET BALANCE alone while the payment
/// application is selected (one round trip, the common case on a teller's desk); when the card
/// answers `6985` (no application selected, e.g. a card just inserted) the application is
/// selected and GET BALANCE sent again. Reads only.
pub fn balance(reader: &mut Reader) -> Result<CardBalance, ApiError> {
    let mut purse = Purse::new(reader);
    let fen = match purse.balance() {
        Ok(fen) => fen,
        Err(PurseError::Status {
            sw: StatusWord(0x6985),
            ..
        }) => {
            purse.select_etc_adf()?;
            purse.balance()?
        }
        Err(e) => return Err(e.into()),
    };
    let fen = i64::from(fen);
    Ok(CardBalance {
        balance: cardd_api::Fen(fen).to_yuan_string(),
        balance_fen: fen,
    })
}
