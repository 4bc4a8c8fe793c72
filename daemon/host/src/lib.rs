//! cardd's central issuer host (后台): one back office for a fleet of counters and kiosks. The
//! host keeps the records and the keys; a site keeps neither and asks the host for every load
//! (`cardd_authority`).
//!
//! This crate is the host's side of a load of an ETC recharge record (充值记录):
//!
//! * [`RecordFunding`]: the host's funding gate (`cardd_authority::LoadGate`, with the host's
//!   keys behind it in `GatedKeys`: `SoftSam`, or an HSM later). It *claims* the record the site
//!   names, in the records store itself (`IssuerHost::begin_load`: 未圈存 → 圈存中 under the
//!   site's transaction, atomic in the store), after checking that the record is this card's and
//!   of this amount.
//! * [`RecordBook`]: the authority's log. An authorisation is remembered by card and counter;
//!   a confirmed TAC books the record 已圈存 with the card's balances.
//!
//! A record paid at any counter can so be loaded at any site, and the same record asked from two
//! sites at once is authorised once: the second claim finds it 圈存中 and is refused before its
//! card is written.
//!
//! * [`HostService`] ([`service`]): the load methods ([`wire`]) over HTTPS with mutual TLS,
//!   each connection admitted through the host's site directory before a request is read, and
//!   the stores the sites share: the recharge records (`records.*`) and group recharge
//!   (`groups.*`: groups, quotas, orders, top-ups; `cardd_store_pg::PgGroupHost` in the binary,
//!   whose orders `cardd_store_pg::PgLedger` authorises and settles like records), and the
//!   fleet's operators (`operators.verify`: a site's login checked here, no password hash ever
//!   leaving the host; `operators.status`: which of a site's logged-in operators were disabled
//!   or removed; `cardd_store_pg::PgOperators` in the binary, managed with `cardd-host
//!   operators …`);
//! * [`HttpsLink`] ([`link`]): a site's `HostLink` to it, with the site's certificate.
//! * [`backoffice`]: the back office's web pages (后台: 额度充值审核, 退款审核 with the host's
//!   card evidence, 充值记录, 操作员管理, 站点管理, 审计日志) for the host's administrators,
//!   auditors and supervisors, on the loopback address of `[backoffice] listen`.
//!
//! **Architecture invariants.**
//! * No MAC2 without a claimed record: the claim is the store's atomic state change, so two
//!   sites never both obtain MAC2 for one record.
//! * A record is 已圈存 only after the card's TAC verified with the host's keys.
//! * A retry of the same authorisation (same transaction, same record) is answered again; a
//!   claim under another transaction is refused while the record is 圈存中.
#![forbid(unsafe_code)]

pub mod backoffice;
pub mod config;
pub mod service;

pub use cardd_hostlink::{wire, HttpsLink, HOST_CALL_TIMEOUT_MS};
pub use service::HostService;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cardd_authority::{AuthorizationLog, AuthorizeRequest, ConfirmRequest, LoadGate};
use cardd_etc::{IssuerHost, RecordStatus};
use cardd_purse::{CardKeyContext, Funding, LoadAuthorization, SamError};

/// Who the host records as having begun and finished a load claimed by a site.
pub const HOST_OPERATOR: &str = "cardd-host";

/// Most authorisations remembered between MAC2 and the TAC (older ones are settled from the
/// card's proof, which names the card and counter again).
pub const OPEN_AUTHORIZATIONS_MAX: usize = 4096;

fn refused(reason: impl Into<String>) -> SamError {
    SamError::LoadNotFunded {
        reason: reason.into(),
    }
}

/// The host's funding gate for loads of ETC records: claims the record. Put the host's keys
/// behind it with [`cardd_authority::GatedKeys`].
pub struct RecordFunding {
    records: Arc<dyn IssuerHost>,
}

impl fmt::Debug for RecordFunding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordFunding")
            .field("records", &self.records)
            .finish()
    }
}

impl RecordFunding {
    pub fn new(records: Arc<dyn IssuerHost>) -> RecordFunding {
        RecordFunding { records }
    }
}

impl LoadGate for RecordFunding {
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        let Funding::EtcRecord { record_id } = &request.funding else {
            return Err(refused(format!(
                "{} is not paid through this host's records",
                request.funding
            )));
        };
        let record = self
            .records
            .record(record_id)
            .map_err(|e| refused(e.to_string()))?
            .ok_or_else(|| refused(format!("no recharge record {record_id}")))?;
        if record.card_number != request.card_number {
            return Err(refused(format!(
                "record {record_id} belongs to card {}, not {}",
                record.card_number, request.card_number
            )));
        }
        if record.amount_fen != i64::from(request.terms.amount) {
            return Err(refused(format!(
                "record {record_id} pays {} fen, not {}",
                record.amount_fen, request.terms.amount
            )));
        }
        match record.status {
            RecordStatus::NotLoaded => self
                .records
                .begin_load(record_id, HOST_OPERATOR, &request.txn_id)
                .map(|_| ())
                .map_err(|e| refused(e.to_string())),
            // The same authorisation asked again (a lost answer): still this transaction's.
            RecordStatus::Loading if record.load_txn_id.as_deref() == Some(&request.txn_id) => {
                Ok(())
            }
            other => Err(refused(format!(
                "record {record_id} is {}, not 未圈存",
                other.label()
            ))),
        }
    }
}

/// An authorised load waiting for its TAC.
#[derive(Debug, Clone)]
struct Open {
    record_id: String,
    balance_before_fen: i64,
    amount_fen: i64,
}

/// The authority's log on the records: a confirmed TAC books the record 已圈存.
#[derive(Debug)]
pub struct RecordBook {
    records: Arc<dyn IssuerHost>,
    open: Mutex<HashMap<(CardKeyContext, u16), Open>>,
}

impl RecordBook {
    pub fn new(records: Arc<dyn IssuerHost>) -> RecordBook {
        RecordBook {
            records,
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl AuthorizationLog for RecordBook {
    fn authorized(
        &self,
        _site: &str,
        request: &AuthorizeRequest,
        _mac2: [u8; 4],
    ) -> Result<(), SamError> {
        let Funding::EtcRecord { record_id } = &request.funding else {
            return Err(refused(format!(
                "{} is not a recharge record",
                request.funding
            )));
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= OPEN_AUTHORIZATIONS_MAX {
            open.clear();
        }
        open.insert(
            (request.card, request.init.online_atc),
            Open {
                record_id: record_id.clone(),
                balance_before_fen: i64::from(request.init.old_balance),
                amount_fen: i64::from(request.terms.amount),
            },
        );
        Ok(())
    }

    fn booked(&self, _site: &str, request: &ConfirmRequest) -> Result<(), SamError> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(request.card, request.init.online_atc))
            .ok_or_else(|| refused("no authorisation of this host names this card and counter"))?;
        self.records
            .finish_load(
                &open.record_id,
                HOST_OPERATOR,
                open.balance_before_fen,
                open.balance_before_fen + open.amount_fen,
            )
            .map(|_| ())
            .map_err(|e| refused(e.to_string()))
    }
}
