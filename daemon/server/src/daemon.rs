//! `Daemon`: the services the composition root (`server`) built, as method handlers
//! (`methods`), Lua bindings (`lua`) and background tasks reach them.
//!
//! It holds services and answers three questions every handler asks (is the daemon failed
//! closed, is the journal verified, is the ETC service up); it builds nothing and imports no
//! method set, binding or transport, so everything above can depend on it without a cycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cardd_journal::Journal;
use cardd_purse::SecurityModule;
use serde_json::json;

use crate::audit::{AuditLog, RefusalDigest};
use crate::auth::Auth;
use crate::config::Config;
use crate::events::EventBus;
use crate::readers::ReaderManager;
use crate::store::Store;

/// Everything a method handler can reach.
pub struct Daemon {
    pub config: Config,
    pub store: Store,
    pub auth: Auth,
    pub audit: Arc<AuditLog>,
    /// Failed logins and calls refused for want of a session, waiting to be written to the
    /// audit log as one record per source, action and interval.
    pub refusals: RefusalDigest,
    /// The money journal; `None` when it failed verification (the daemon then fails closed).
    pub journal: Option<Arc<Journal>>,
    /// The issuer host (vehicle accounts, recharge records); `None` when it failed verification
    /// (the daemon then fails closed).
    pub host: Option<Arc<dyn cardd_etc::IssuerHost>>,
    /// The ETC service (loads of recharge records, evidence, 修改圈存状态); `None` when the
    /// issuer host failed verification.
    pub etc: Option<Arc<cardd_etc::EtcService>>,
    /// Group recharge (groups, quota ledger, orders, top-ups, payment gateway); `None` when its
    /// data failed verification (the daemon then fails closed).
    pub group: Option<cardd_group::GroupService>,
    /// The flow engine; `None` when the flows directory could not be read (logged).
    pub flows: Option<Arc<crate::flows::FlowEngine>>,
    /// When the flow files were last read again ([`crate::flows_reload`]).
    pub flows_checked: crate::flows_reload::ReloadGate,
    pub events: Arc<EventBus>,
    pub readers: Arc<ReaderManager>,
    /// The security module: the configured keys behind the funding check
    /// ([`crate::funded_sam::FundedSam`]): no MAC2 for a load without a funded record.
    pub sam: Arc<dyn SecurityModule>,
    /// What `GET /metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The 模拟读卡器 panel: the embedded default (`--demo`) only, `None` otherwise.
    pub sim_panel: Option<crate::sim_panel::SimPanel>,
    /// Fleet mode: the keyless security module and its outbox of undelivered confirmations.
    pub fleet: Option<FleetLink>,
    pub(crate) started: Instant,
    pub(crate) failed_closed: AtomicBool,
}

/// A fleet site's link to the issuer host: the keyless security module (which also delivers
/// the outbox), the outbox itself and the host's operators.
#[derive(Debug, Clone)]
pub struct FleetLink {
    pub host: std::net::SocketAddr,
    pub sam: Arc<cardd_authority::RemoteSam>,
    pub outbox: cardd_store::SledOutbox,
    /// The loads other sites began, for a card presented here.
    pub intents: Arc<dyn cardd_journal::ForeignIntents>,
    /// The fleet's operators, kept at the host: logins are checked there, and operators
    /// disabled there lose their sessions here.
    pub operators: cardd_hostlink::RemoteOperators,
    /// The site's reports to the host (alive, outbox length), for the back office.
    pub sites: cardd_hostlink::RemoteSites,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("source", &self.config.source)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// True when an integrity check failed: state-changing methods are refused.
    pub fn failed_closed(&self) -> bool {
        self.failed_closed.load(Ordering::Relaxed) || self.store.failed_closed().is_some()
    }

    /// Stops state-changing methods (an invariant broke); logged loudly.
    pub fn fail_closed(&self, why: &str) {
        tracing::error!(
            reason = why,
            "failing closed: state-changing methods are refused until an administrator intervenes"
        );
        self.failed_closed.store(true, Ordering::Relaxed);
    }

    /// Writes audit records of refusals (see [`RefusalDigest`]); a failure to write is logged
    /// (the call was refused either way).
    pub fn audit_refusals(&self, entries: Vec<crate::audit::AuditEntry>) {
        for entry in entries {
            if let Err(e) = self.audit.append(entry) {
                tracing::error!(error = %e, "could not audit refused calls");
            }
        }
    }

    /// The journal, or the fail-closed refusal when it did not verify.
    pub(crate) fn verified_journal(&self) -> Result<&Journal, crate::errors::ApiError> {
        self.journal.as_deref().ok_or_else(|| {
            crate::errors::ApiError::new(
                cardd_api::ErrorCode::FailedClosed,
                "圈存日志未通过完整性检查，已停止写卡；请联系管理员",
            )
        })
    }

    /// The group service, or the fail-closed refusal when its data did not verify.
    pub(crate) fn group_service(
        &self,
    ) -> Result<&cardd_group::GroupService, crate::errors::ApiError> {
        self.group.as_ref().ok_or_else(|| {
            crate::errors::ApiError::new(
                cardd_api::ErrorCode::FailedClosed,
                "集团充值数据未通过完整性检查，已停止办理；请联系管理员查看日志",
            )
        })
    }

    /// The ETC service, or the fail-closed refusal when the issuer host did not verify.
    pub(crate) fn etc_service(&self) -> Result<&cardd_etc::EtcService, crate::errors::ApiError> {
        self.etc.as_deref().ok_or_else(|| {
            crate::errors::ApiError::new(
                cardd_api::ErrorCode::FailedClosed,
                "充值数据未通过完整性检查，已停止圈存业务；请联系管理员",
            )
        })
    }

    pub(crate) fn health(&self) -> serde_json::Value {
        let mut health = json!({
            "status": if self.failed_closed() { "failed_closed" } else { "ok" },
            "name": "cardd",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "readers": self.readers.list().len(),
            "demo": self.config.demo,
        });
        if self.fleet.is_none() {
            // No operator yet: nobody can log in until the first administrator is created
            // (`cardd --config FILE operators add --role admin USER`, the daemon stopped).
            health["needs_setup"] = json!(!self.auth.has_operators());
        }
        // Restored from a backup: cards are checked against their own logs before loads.
        if let Some(Ok(Some(mode))) = self.journal.as_deref().map(Journal::restored_mode) {
            health["restored"] = json!({
                "backup_created_at": mode.backup_created_at,
                "restored_at": mode.restored_at,
            });
        }
        if let Some(fleet) = &self.fleet {
            health["fleet"] = json!({
                "host": fleet.host.to_string(),
                "outbox_pending": fleet.outbox.len(),
            });
        }
        health
    }
}
