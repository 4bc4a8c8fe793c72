//! cardd's load authority: the one place that computes MAC2, and the way a site without keys
//! asks it.
//!
//! Whoever computes MAC2 creates money. On a single machine the daemon's own security module
//! does (the demo keys, or the configured ones, behind the funding check). In a fleet the load
//! keys stay with the issuer host, and a site (teller PC, kiosk) holds none: it asks the host.
//! The purse protocol allows exactly two exchanges for that, and this crate uses no more:
//!
//! 1. **authorize** ([`AuthorizeRequest`] → [`Authorized`]): after INITIALIZE FOR LOAD, the site
//!    sends the card's key context, its answer (counter, random, MAC1) and the load's terms
//!    with the funded record or order that pays for it. The host checks the funding, verifies
//!    MAC1, records the authorisation durably and answers MAC2.
//! 2. **confirm** ([`ConfirmRequest`] → [`Confirmed`]): after CREDIT FOR LOAD (or, for a load
//!    interrupted after CREDIT, from the card's transaction proof read by any site), the site
//!    sends the TAC; the host verifies it and books the load.
//!
//! * [`Authority`]: the host side over any [`SecurityModule`] that holds keys (and knows the
//!   funded records: [`GatedKeys`] puts keys behind a [`LoadGate`]), recording each step in an
//!   [`AuthorizationLog`];
//! * [`RemoteSam`]: the site side, a [`SecurityModule`] with no key, which the journaled load
//!   (`cardd_journal::load_card`) and recovery use unchanged; it speaks to the host through a
//!   [`HostLink`] (the transport: mutual-TLS JSON-RPC to the host, or [`LocalLink`] in-process);
//! * the wire messages, serialisable, the payloads of the host's two methods.
//!
//! **Architecture invariants.**
//! * A site's security module holds no key and computes nothing: every MAC2 comes from the
//!   authority, which computes one only for a load whose funding it checked and whose
//!   authorisation it recorded first.
//! * One load costs exactly two round trips to the host (authorize, confirm); recovery of a
//!   load interrupted after CREDIT costs one (confirm with the card's proof).
//! * A host that cannot be reached refuses the load before CREDIT
//!   ([`SamError::HostUnreachable`]): the card is not written and nothing is journaled.
//! * A MAC2 is handed out once, for exactly the card, counter and terms it was computed for.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cardd_purse::{
    CardKeyContext, InitLoadResponse, InitPurchaseResponse, LoadAuthorization, LoadTerms,
    MaintenanceKey, PurchaseTerms, SamError, SecurityModule,
};
use serde::{Deserialize, Serialize};

/// Most loads a site may have between authorize and the answer's use (MAC2 handed out once).
pub const PENDING_MAC2_MAX: usize = 64;

/// Most loads a site may have announced (`authorize_load`) and not yet sent to the host.
pub const ANNOUNCED_LOADS_MAX: usize = 64;

/// Step 1, site → host: a load the card has initialised, with what pays for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// The site's journal transaction id (unique per load attempt).
    pub txn_id: String,
    pub card_number: String,
    pub card: CardKeyContext,
    /// The card's INITIALIZE FOR LOAD answer (balance, counter, random, MAC1).
    pub init: InitLoadResponse,
    pub terms: LoadTerms,
    /// The funded record or order, as the site stated it before INITIALIZE.
    pub funding: cardd_purse::Funding,
}

/// Step 1, host → site: MAC2 for CREDIT FOR LOAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized {
    pub mac2: [u8; 4],
}

/// Step 2, site → host: the TAC of a load (from CREDIT FOR LOAD, or from the card's proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    pub card: CardKeyContext,
    pub init: InitLoadResponse,
    pub terms: LoadTerms,
    pub tac: [u8; 4],
}

/// Step 2, host → site: whether the TAC verified (the host books the load only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    pub booked: bool,
}

/// A load the host authorised whose outcome it does not know yet (no TAC, no card proof): what
/// any site needs to settle it from the card (the card's INITIALIZE answer, the terms and the
/// MAC2 the card was given), so that a card pulled at one site is settled at another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLoad {
    /// The site that asked for it.
    pub site_id: String,
    /// The authorisation as that site asked it (its transaction id, the card, the terms and
    /// the funding).
    pub request: AuthorizeRequest,
    /// The MAC2 the host gave.
    pub mac2: [u8; 4],
}

/// A refusal or failure on the way to the host, as the site sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The host could not be reached or did not answer in time.
    #[error("the issuer host did not answer: {0}")]
    Unreachable(String),
    /// The host answered with a refusal of the security module.
    #[error(transparent)]
    Refused(#[from] SamError),
}

/// The transport from a site to the host's authority: two calls.
pub trait HostLink: Send + Sync + fmt::Debug {
    /// Step 1.
    fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, LinkError>;
    /// Step 2.
    fn confirm(&self, request: &ConfirmRequest) -> Result<Confirmed, LinkError>;
    /// The card's loads authorised at any site whose outcome the host does not know.
    fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, LinkError> {
        let _ = card_number;
        Ok(Vec::new())
    }
}

/// The site the in-process [`LocalLink`] speaks for.
pub const LOCAL_SITE: &str = "local";

/// Who asks for a load step: the site, and the fingerprint of the certificate it was admitted
/// with (`None`: an in-process caller, admitted by construction). A log that keeps the site
/// directory ([`AuthorizationLog::admits_callers`]) checks both again in the step's own
/// transaction, so a site disabled or re-issued since its connection opened is refused at its
/// very next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub site: &'a str,
    pub certificate: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// A caller admitted by construction (no certificate to check again).
    pub fn trusted(site: &'a str) -> Caller<'a> {
        Caller {
            site,
            certificate: None,
        }
    }
}

/// What the authority records of each load, durably before it answers.
pub trait AuthorizationLog: Send + Sync + fmt::Debug {
    /// Records that MAC2 is about to be given to `site` for `request`. An implementation may
    /// claim the load's funding here too, in the same atomic change (the record store of a
    /// central host does: the claim and the authorisation are one transaction). Refuses
    /// ([`SamError::LoadNotFunded`]) when the record could not be made durable or the funding
    /// is taken: then no MAC2 is given. The same request asked again (same transaction, card, counter and terms) is
    /// answered again.
    fn authorized(
        &self,
        site: &str,
        request: &AuthorizeRequest,
        mac2: [u8; 4],
    ) -> Result<(), SamError>;
    /// Records that the load's TAC verified: the load is booked. Booking a booked load with
    /// the same TAC again succeeds (a retry after a lost answer).
    fn booked(&self, site: &str, request: &ConfirmRequest) -> Result<(), SamError>;
    /// Records that a load's TAC did not verify: a person must decide. By default nothing is
    /// recorded beyond the refusal.
    fn tac_refused(&self, site: &str, request: &ConfirmRequest) -> Result<(), SamError> {
        let _ = (site, request);
        Ok(())
    }
    /// The card's authorised loads whose outcome is unknown. By default none is kept.
    fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, SamError> {
        let _ = card_number;
        Ok(Vec::new())
    }
    /// Whether [`Self::authorized_by`] and [`Self::booked_by`] check, in the step's own
    /// atomic change, that a caller with a certificate is still admitted (enabled, with that
    /// certificate). When `false` (the default), whoever serves the sites must check its
    /// directory before each step itself.
    fn admits_callers(&self) -> bool {
        false
    }
    /// [`Self::authorized`] for `caller`; a log that [`Self::admits_callers`] refuses a caller
    /// no longer admitted, in the same transaction.
    fn authorized_by(
        &self,
        caller: &Caller<'_>,
        request: &AuthorizeRequest,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        self.authorized(caller.site, request, mac2)
    }
    /// [`Self::booked`] for `caller`, likewise.
    fn booked_by(&self, caller: &Caller<'_>, request: &ConfirmRequest) -> Result<(), SamError> {
        self.booked(caller.site, request)
    }
}

/// The host side: checks, records and answers, over a security module that holds the keys.
pub struct Authority {
    sam: Arc<dyn SecurityModule>,
    log: Arc<dyn AuthorizationLog>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// `sam` holds the keys and knows the funded records (its `authorize_load` checks them).
    pub fn new(sam: Arc<dyn SecurityModule>, log: Arc<dyn AuthorizationLog>) -> Authority {
        Authority { sam, log }
    }

    /// Step 1: MAC1 (a card that is not genuine claims nothing), the funding, the durable
    /// record, then MAC2.
    pub fn authorize(
        &self,
        site: &str,
        request: &AuthorizeRequest,
    ) -> Result<Authorized, SamError> {
        self.authorize_by(&Caller::trusted(site), request)
    }

    /// Whether the log checks each step's caller again ([`AuthorizationLog::admits_callers`]).
    pub fn admits_callers(&self) -> bool {
        self.log.admits_callers()
    }

    /// [`Self::authorize`] for `caller`, whose admission the log may check again.
    pub fn authorize_by(
        &self,
        caller: &Caller<'_>,
        request: &AuthorizeRequest,
    ) -> Result<Authorized, SamError> {
        self.sam
            .verify_load_mac1(&request.card, &request.init, &request.terms)?;
        self.sam.authorize_load(&LoadAuthorization {
            txn_id: request.txn_id.clone(),
            card_number: request.card_number.clone(),
            card: request.card,
            terms: request.terms,
            funding: request.funding.clone(),
        })?;
        // Computed first, handed out only once the authorisation (with it) is durable.
        let mac2 = self
            .sam
            .load_mac2(&request.card, &request.init, &request.terms)?;
        self.log.authorized_by(caller, request, mac2)?;
        Ok(Authorized { mac2 })
    }

    /// The card's loads authorised at any site whose outcome is unknown.
    pub fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, SamError> {
        self.log.open_loads(card_number)
    }

    /// Step 2: the TAC, then the booking.
    pub fn confirm(&self, site: &str, request: &ConfirmRequest) -> Result<Confirmed, SamError> {
        self.confirm_by(&Caller::trusted(site), request)
    }

    /// [`Self::confirm`] for `caller`, whose admission the log may check again.
    pub fn confirm_by(
        &self,
        caller: &Caller<'_>,
        request: &ConfirmRequest,
    ) -> Result<Confirmed, SamError> {
        let site = caller.site;
        if let Err(e) =
            self.sam
                .verify_load_tac(&request.card, &request.init, &request.terms, request.tac)
        {
            if e == SamError::TacInvalid {
                if let Err(failure) = self.log.tac_refused(site, request) {
                    tracing::error!(site, %failure, "a refused TAC could not be recorded");
                }
            }
            return Err(e);
        }
        self.log.booked_by(caller, request)?;
        Ok(Confirmed { booked: true })
    }
}

/// Decides whether a load is funded (and claims its funding), for [`GatedKeys`].
pub trait LoadGate: Send + Sync {
    /// `Ok` when `request.funding` pays for exactly this load (and is now claimed for it).
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError>;
}

/// A keyed security module behind a funding gate: `authorize_load` is the gate's, every key
/// operation the keys'.
pub struct GatedKeys {
    keys: Arc<dyn SecurityModule>,
    gate: Arc<dyn LoadGate>,
}

impl fmt::Debug for GatedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatedKeys(..)")
    }
}

impl GatedKeys {
    pub fn new(keys: Arc<dyn SecurityModule>, gate: Arc<dyn LoadGate>) -> GatedKeys {
        GatedKeys { keys, gate }
    }
}

impl SecurityModule for GatedKeys {
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        self.gate.authorize_load(request)
    }

    fn verify_load_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<(), SamError> {
        self.keys.verify_load_mac1(card, init, terms)
    }

    fn load_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<[u8; 4], SamError> {
        self.keys.load_mac2(card, init, terms)
    }

    fn verify_load_tac(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        self.keys.verify_load_tac(card, init, terms, tac)
    }

    fn purchase_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
    ) -> Result<[u8; 4], SamError> {
        self.keys.purchase_mac1(card, init, terms)
    }

    fn verify_purchase_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitPurchaseResponse,
        terms: &PurchaseTerms,
        mac2: [u8; 4],
    ) -> Result<(), SamError> {
        self.keys.verify_purchase_mac2(card, init, terms, mac2)
    }

    fn verify_purchase_tac(
        &self,
        card: &CardKeyContext,
        terms: &PurchaseTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        self.keys.verify_purchase_tac(card, terms, tac)
    }

    fn secure_messaging_mac(
        &self,
        card: &CardKeyContext,
        key: MaintenanceKey,
        challenge: [u8; 4],
        data: &[u8],
    ) -> Result<[u8; 4], SamError> {
        self.keys.secure_messaging_mac(card, key, challenge, data)
    }

    fn decrypt_obu_vehicle(
        &self,
        card: &CardKeyContext,
        random: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SamError> {
        self.keys.decrypt_obu_vehicle(card, random, ciphertext)
    }
}

/// The authority in the same process: the link of the embedded default and of tests.
#[derive(Debug, Clone)]
pub struct LocalLink(pub Arc<Authority>);

impl HostLink for LocalLink {
    fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, LinkError> {
        Ok(self.0.authorize(LOCAL_SITE, request)?)
    }

    fn confirm(&self, request: &ConfirmRequest) -> Result<Confirmed, LinkError> {
        Ok(self.0.confirm(LOCAL_SITE, request)?)
    }

    fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, LinkError> {
        Ok(self.0.open_loads(card_number)?)
    }
}

/// Where a site keeps the confirmations (step 2) it could not deliver, durably, until the host
/// answers them: a load the card took while the host was unreachable is booked at the host
/// when the link returns. Until then the host holds the load as authorised, outcome unknown.
pub trait Outbox: Send + Sync + fmt::Debug {
    /// Keeps `request` durably (on disk before this returns).
    fn hold(&self, request: &ConfirmRequest) -> Result<(), String>;
    /// Every confirmation held, oldest first, at most `max`.
    fn pending(&self, max: usize) -> Result<Vec<ConfirmRequest>, String>;
    /// Forgets a confirmation the host answered.
    fn delivered(&self, request: &ConfirmRequest) -> Result<(), String>;
}

/// What one delivery round of the outbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Confirmations the host booked.
    pub booked: usize,
    /// Confirmations the host refused (a TAC that did not verify: the host holds the load for a
    /// person to decide).
    pub refused: usize,
    /// Confirmations still waiting (the host unreachable).
    pub waiting: usize,
}

/// Most confirmations delivered in one round.
pub const OUTBOX_ROUND_MAX: usize = 256;

/// The key of a load between its two messages: the card and its counter before the load.
type LoadKey = (CardKeyContext, u16);

/// A site's security module: no key; every load asked of the host.
#[derive(Debug)]
pub struct RemoteSam {
    link: Arc<dyn HostLink>,
    /// Where confirmations wait when the host cannot be reached; without one, an unreachable
    /// host fails the confirmation.
    outbox: Option<Arc<dyn Outbox>>,
    /// Loads announced before INITIALIZE, by card: what pays for them.
    announced: Mutex<Vec<LoadAuthorization>>,
    /// MAC2s the host gave, waiting for `load_mac2`, each handed out once.
    mac2: Mutex<HashMap<LoadKey, (LoadTerms, [u8; 4])>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn link_error(e: LinkError) -> SamError {
    match e {
        LinkError::Unreachable(detail) => SamError::HostUnreachable { detail },
        LinkError::Refused(e) => e,
    }
}

/// What a site cannot do without keys (purchases and OBU issuance are not remote yet).
fn not_remote(what: &'static str) -> SamError {
    SamError::KeyNotInScheme {
        scheme: cardd_purse::KeyScheme::Etc,
        key: what,
    }
}

impl RemoteSam {
    pub fn new(link: Arc<dyn HostLink>) -> RemoteSam {
        RemoteSam {
            link,
            outbox: None,
            announced: Mutex::new(Vec::new()),
            mac2: Mutex::new(HashMap::new()),
        }
    }

    /// A site's module whose undelivered confirmations wait in `outbox`.
    pub fn with_outbox(link: Arc<dyn HostLink>, outbox: Arc<dyn Outbox>) -> RemoteSam {
        RemoteSam {
            outbox: Some(outbox),
            ..RemoteSam::new(link)
        }
    }

    /// The card's loads authorised at any site whose outcome the host does not know.
    pub fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, LinkError> {
        self.link.open_loads(card_number)
    }

    /// Delivers the confirmations waiting in the outbox, oldest first, until the host is
    /// unreachable again or [`OUTBOX_ROUND_MAX`] are done.
    pub fn deliver_outbox(&self) -> Result<Delivery, String> {
        let Some(outbox) = &self.outbox else {
            return Ok(Delivery::default());
        };
        let pending = outbox.pending(OUTBOX_ROUND_MAX)?;
        let mut done = Delivery::default();
        for (i, request) in pending.iter().enumerate() {
            match self.link.confirm(request) {
                Ok(_) => {
                    outbox.delivered(request)?;
                    done.booked += 1;
                }
                Err(LinkError::Unreachable(detail)) => {
                    tracing::debug!(%detail, "outbox: the host is still unreachable");
                    done.waiting = pending.len() - i;
                    return Ok(done);
                }
                Err(LinkError::Refused(e)) => {
                    tracing::error!(card = %load_card_label(&request.card), counter = request.init.online_atc, error = %e, "outbox: the host refused a held confirmation; it holds the load for a person to decide");
                    outbox.delivered(request)?;
                    done.refused += 1;
                }
            }
        }
        Ok(done)
    }
}

impl SecurityModule for RemoteSam {
    /// Remembers what pays for the load; the host checks it with step 1 (no round trip here).
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        let mut announced = lock(&self.announced);
        announced.retain(|a| a.card != request.card);
        if announced.len() >= ANNOUNCED_LOADS_MAX {
            announced.remove(0);
        }
        announced.push(request.clone());
        Ok(())
    }

    /// Step 1: the host checks the funding and MAC1 and answers MAC2, kept for `load_mac2`.
    fn verify_load_mac1(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<(), SamError> {
        let announced = {
            let mut announced = lock(&self.announced);
            announced
                .iter()
                .position(|a| a.card == *card && a.terms == *terms)
                .map(|i| announced.remove(i))
        };
        let Some(load) = announced else {
            return Err(SamError::LoadNotAuthorized {
                card: load_card_label(card),
            });
        };
        let request = AuthorizeRequest {
            txn_id: load.txn_id,
            card_number: load.card_number,
            card: *card,
            init: *init,
            terms: *terms,
            funding: load.funding,
        };
        let answer = self.link.authorize(&request).map_err(link_error)?;
        let mut pending = lock(&self.mac2);
        if pending.len() >= PENDING_MAC2_MAX {
            pending.clear();
        }
        pending.insert((*card, init.online_atc), (*terms, answer.mac2));
        Ok(())
    }

    /// The MAC2 step 1 brought, once, for exactly its card, counter and terms.
    fn load_mac2(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
    ) -> Result<[u8; 4], SamError> {
        match lock(&self.mac2).remove(&(*card, init.online_atc)) {
            Some((for_terms, mac2)) if for_terms == *terms => Ok(mac2),
            _ => Err(SamError::LoadNotAuthorized {
                card: load_card_label(card),
            }),
        }
    }

    /// Step 2: the host verifies the TAC and books the load. With an outbox, a host that
    /// cannot be reached does not fail it: the card has answered CREDIT, and the confirmation
    /// is held durably and delivered when the link returns (the host holds the load as
    /// authorised, outcome unknown, until then).
    fn verify_load_tac(
        &self,
        card: &CardKeyContext,
        init: &InitLoadResponse,
        terms: &LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), SamError> {
        let request = ConfirmRequest {
            card: *card,
            init: *init,
            terms: *terms,
            tac,
        };
        let confirmed = match self.link.confirm(&request) {
            Err(LinkError::Unreachable(detail)) if self.outbox.is_some() => {
                let outbox = self.outbox.as_ref().expect("checked");
                outbox
                    .hold(&request)
                    .map_err(|e| SamError::HostUnreachable {
                        detail: format!("{detail}; the confirmation could not be held either: {e}"),
                    })?;
                tracing::warn!(card = %load_card_label(card), counter = init.online_atc, %detail, "the host is unreachable: the load's confirmation waits in the outbox");
                return Ok(());
            }
            other => other.map_err(link_error)?,
        };
        if confirmed.booked {
            Ok(())
        } else {
            Err(SamError::TacInvalid)
        }
    }

    fn purchase_mac1(
        &self,
        _card: &CardKeyContext,
        _init: &InitPurchaseResponse,
        _terms: &PurchaseTerms,
    ) -> Result<[u8; 4], SamError> {
        Err(not_remote("purchase"))
    }

    fn verify_purchase_mac2(
        &self,
        _card: &CardKeyContext,
        _init: &InitPurchaseResponse,
        _terms: &PurchaseTerms,
        _mac2: [u8; 4],
    ) -> Result<(), SamError> {
        Err(not_remote("purchase"))
    }

    fn verify_purchase_tac(
        &self,
        _card: &CardKeyContext,
        _terms: &PurchaseTerms,
        _tac: [u8; 4],
    ) -> Result<(), SamError> {
        Err(not_remote("purchase"))
    }

    fn secure_messaging_mac(
        &self,
        _card: &CardKeyContext,
        _key: MaintenanceKey,
        _challenge: [u8; 4],
        _data: &[u8],
    ) -> Result<[u8; 4], SamError> {
        Err(not_remote("maintenance"))
    }

    fn decrypt_obu_vehicle(
        &self,
        _card: &CardKeyContext,
        _random: &[u8; 8],
        _ciphertext: &[u8],
    ) -> Result<Vec<u8>, SamError> {
        Err(not_remote("maintenance"))
    }
}

/// A card as refusals name it (no key material in a key context, only factors).
fn load_card_label(card: &CardKeyContext) -> String {
    card.card8.iter().map(|b| format!("{b:02X}")).collect()
}
