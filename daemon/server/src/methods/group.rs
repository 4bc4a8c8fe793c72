//! Group recharge (集团充值) in the daemon: the `group.*` and `groups.*` JSON-RPC methods (thin
//! handlers over [`cardd_group::GroupService`]), the group service's construction, the periodic
//! reconciliation task, and the run reader as the card of a flow's recharge.
//!
//! The business rules (who sees which group, reservation and settlement, reconciliation with the
//! journal, the auditor's evidence, top-ups, batches, queries) are the service's; see
//! `cardd_group`.

use std::sync::Arc;

use cardd_api::group::{
    AuditTopUpParams, BatchCreateParams, BatchIdParams, CardCheck, EvidenceParams, ExportParams,
    GroupScope, GroupView, LedgerParams, OrderDecisionParams, QueryParams, TopUpIdParams,
    TopUpParams,
};
use cardd_api::Role;
use cardd_group::export::{ORDER_HEADERS, TOPUP_HEADERS};
use cardd_group::model::{recharge_rules, GroupInput, RechargeOrder};
pub use cardd_group::service::RechargeStop;
use cardd_group::service::{export_file, group_view, Viewer};
use cardd_group::{GroupHost, GroupService, PaymentError, PaymentGateway};
use cardd_journal::{IntentOwners, SystemClock};
use cardd_purse::SecurityModule;
use cardd_store::{EmbeddedGroupHost, SandboxBank};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::rpc::{Access, AuditDetail, Caller, Methods, NoParams};
use cardd_api::auth::SessionView;
/// Did an order's load land: the same verdict as a recharge record's.
pub use cardd_api::etc::Verdict;
use cardd_api::group::{GroupLoginParams, GroupLoginResult};

/// Longest wait for the bank's answer to a transfer; past it the top-up is 支付结果未知 and the
/// bank is asked again later (`group.topup_status`).
pub const PAYMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The group store and the bank, opened.
pub type GroupStores = (Arc<dyn GroupHost>, Arc<dyn PaymentGateway>);

/// Opens the group host (seeding the demo groups with `--demo`) and the sandbox bank. Returns
/// them, or why they could not open (the daemon then fails closed).
pub fn open(
    config: &crate::config::Config,
    store: &cardd_journal::Store,
) -> (Option<GroupStores>, Option<String>) {
    let host = match EmbeddedGroupHost::open(store) {
        Ok(host) => host,
        Err(e) => return (None, Some(e.to_string())),
    };
    if config.demo {
        if let Err(e) = host.seed_demo() {
            return (None, Some(e.to_string()));
        }
    }
    let bank = match SandboxBank::open(store, config.group.sandbox_mode) {
        Ok(bank) => bank,
        Err(e) => return (None, Some(e.to_string())),
    };
    (Some((Arc::new(host), Arc::new(bank))), None)
}

/// A fleet site's group stores: the issuer host's groups, quotas and orders
/// ([`cardd_hostlink::RemoteGroups`]) over `client`, and the sandbox bank, still local to the
/// site (its top-ups' payments; the top-ups themselves are the host's).
pub fn open_fleet(
    config: &crate::config::Config,
    store: &cardd_journal::Store,
    client: Arc<cardd_hostlink::HostClient>,
) -> (Option<GroupStores>, Option<String>) {
    let bank = match SandboxBank::open(store, config.group.sandbox_mode) {
        Ok(bank) => bank,
        Err(e) => return (None, Some(e.to_string())),
    };
    let host: Arc<dyn GroupHost> = Arc::new(cardd_hostlink::RemoteGroups::new(client));
    (Some((host, Arc::new(bank))), None)
}

/// The group service on the opened stores, checking loads with `sam` and naming the owners of
/// open loads of both domains (`owners`: the issuer host's records and the group's orders). In
/// a fleet (`foreign`: the other sites' open loads), orders whose load is not in this site's
/// journal are left to their site.
pub fn service(
    stores: Option<GroupStores>,
    sam: &Arc<dyn SecurityModule>,
    owners: Arc<dyn IntentOwners>,
    foreign: Option<Arc<dyn cardd_journal::ForeignIntents>>,
) -> Option<GroupService> {
    let (host, bank) = stores?;
    let service = GroupService::new(host, bank, sam.clone(), owners, Arc::new(SystemClock));
    Some(match foreign {
        Some(foreign) => service.in_fleet(foreign),
        None => service,
    })
}

fn services(d: &Daemon) -> Result<&GroupService, ApiError> {
    d.group_service()
}

/// Runs `work` on the group service off the async threads: at a fleet site its store is the
/// issuer host's, and a call may wait for the host up to the link's timeout.
async fn blocking<R: Send + 'static>(
    d: &Arc<Daemon>,
    work: impl FnOnce(&Daemon, &GroupService) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let daemon = d.clone();
    tokio::task::spawn_blocking(move || work(&daemon, services(&daemon)?))
        .await
        .map_err(|e| ApiError::internal(format!("the group call stopped: {e}")))?
}

/// The caller as the group service sees them.
fn viewer(c: &Caller) -> Result<Viewer, ApiError> {
    let s = c.session()?;
    Ok(Viewer {
        username: s.username.clone(),
        role: s.role,
        group_id: s.group_id.clone(),
    })
}

/// Settles unsettled orders whose run is gone, from the journal (see
/// [`GroupService::reconcile`]). Returns how many orders changed.
pub fn reconcile(daemon: &Daemon) -> Result<usize, ApiError> {
    let Ok(svc) = services(daemon) else {
        return Ok(0);
    };
    Ok(svc.reconcile(daemon.journal.as_deref())?)
}

/// Runs [`reconcile`] at start-up and after every load the daemon resolves from a card.
pub fn spawn_reconciler(daemon: &Arc<Daemon>) {
    if daemon.group.is_none() {
        return;
    }
    let weak = Arc::downgrade(daemon);
    let mut rx = daemon.events.subscribe();
    tokio::spawn(async move {
        let run = |weak: &std::sync::Weak<Daemon>| {
            let weak = weak.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(d) = weak.upgrade() {
                    if let Err(e) = reconcile(&d) {
                        tracing::error!(error = %e, "group order reconciliation failed");
                    }
                }
            })
        };
        let _ = run(&weak).await;
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if matches!(event.kind, crate::events::EventKind::LoadResolved { .. }) {
                        let _ = run(&weak).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let _ = run(&weak).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            if weak.strong_count() == 0 {
                return;
            }
        }
    });
}

/// Reads the order's card on `reader_id`: its number must be the order's; GET TRANSACTION
/// PROVE for the load's counter tells whether the card holds this load.
async fn card_check(
    d: &Arc<Daemon>,
    c: &Caller,
    order: &RechargeOrder,
    reader_id: &str,
) -> Result<CardCheck, ApiError> {
    let svc = services(d)?;
    let session = svc.load_session(d.journal.as_deref(), order);
    let loaded = session.is_some();
    let terminal = d.config.terminal_id;
    let job = d.clone();
    let (summary, proof) = d
        .readers
        .run(reader_id, &c.holder()?, c.method, move |reader| {
            let summary = crate::summary::read(reader, terminal, crate::summary::Counters::None)?;
            let proof = services(&job)?.card_proof(reader, session.as_ref())?;
            Ok::<_, ApiError>((summary, proof))
        })
        .await??;
    Ok(svc.card_check(
        order,
        reader_id,
        summary.card_number,
        summary.balance,
        proof,
        loaded,
    )?)
}

/// The display name of a user name, for rows that name people.
fn namer(d: &Daemon) -> impl Fn(&str) -> String + '_ {
    move |u| crate::methods::auth::operator_name(d, u)
}

// ---------------------------------------------------------------------------------------------
// Parameters and results (the wire types are `cardd_api::group`'s).

/// Implements [`AuditDetail`] for parameter types without secrets, naming `$target`.
macro_rules! group_audit {
    ($($t:ty => $target:expr;)*) => {$(
        impl AuditDetail for $t {
            fn audit_detail(&self) -> Value {
                serde_json::to_value(self).unwrap_or(Value::Null)
            }
            fn audit_target(&self) -> Option<String> {
                #[allow(clippy::redundant_closure_call)]
                ($target)(self)
            }
        }
    )*};
}

impl AuditDetail for GroupLoginParams {
    fn audit_detail(&self) -> Value {
        json!({ "group_id": self.group_id.chars().take(64).collect::<String>() })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.chars().take(64).collect())
    }
}

group_audit! {
    GroupScope => |p: &GroupScope| p.group_id.clone();
    QueryParams => |p: &QueryParams| p.group_id.clone();
    ExportParams => |p: &ExportParams| p.group_id.clone();
    TopUpParams => |_: &TopUpParams| None;
    TopUpIdParams => |p: &TopUpIdParams| Some(p.topup_id.clone());
    AuditTopUpParams => |p: &AuditTopUpParams| Some(p.topup_id.clone());
    EvidenceParams => |p: &EvidenceParams| Some(p.order_id.clone());
    OrderDecisionParams => |p: &OrderDecisionParams| Some(p.order_id.clone());
    BatchCreateParams => |_: &BatchCreateParams| None;
    BatchIdParams => |p: &BatchIdParams| Some(p.batch_id.clone());
    LedgerParams => |p: &LedgerParams| p.group_id.clone();
    GroupInput => |p: &GroupInput| Some(p.group_id.clone());
}

// ---------------------------------------------------------------------------------------------
// The methods.

const GROUP_OPS: Access = Access::Roles(&[Role::GroupOperator]);
const GROUP_READERS: Access = Access::Roles(&[
    Role::GroupOperator,
    Role::Auditor,
    Role::Supervisor,
    Role::Admin,
]);
const AUDITORS: Access = Access::Roles(&[Role::Auditor]);
const AUDIT_READERS: Access = Access::Roles(&[Role::Auditor, Role::Supervisor, Role::Admin]);
const ADMIN: Access = Access::Roles(&[Role::Admin]);

/// Registers the `group.*` and `groups.*` methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::group::Login, _, _>(
        "集团充值登录: log into a group's site; an operator who is not of that group gets 用户和密码错误.",
        Access::Public,
        true,
        |d, c, p: GroupLoginParams| async move {
            let group_id = p.group_id.trim().to_owned();
            let looked_up = group_id.clone();
            let group = blocking(&d, move |_, svc| Ok(svc.host.group(&looked_up).ok().flatten()))
                .await?;
            let of_group = |s: &crate::auth::Session| {
                group.is_some()
                    && s.role == Role::GroupOperator
                    && s.group_id.as_deref() == Some(group_id.as_str())
            };
            let session = crate::methods::auth::login(
                &d,
                &c.peer,
                p.username,
                p.password,
                "group.login",
                of_group,
            )
            .await?;
            let Some(group) = group else {
                d.auth.logout(&session.token);
                return Err(crate::auth::AuthError::InvalidCredentials.into());
            };
            Ok(GroupLoginResult {
                token: session.token.clone(),
                operator: SessionView::from(&session),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
                group: group_view(&group),
            })
        },
    );

    m.method::<cardd_api::group::Info, _, _>(
        "The recharge page's header: group name, terminal number, available quota, operator.",
        GROUP_READERS,
        false,
        |d, c, p: GroupScope| async move {
            let display_name = c.session()?.display_name.clone();
            let v = viewer(&c)?;
            blocking(&d, move |_, svc| {
                Ok(svc.info(&v, &display_name, p.group_id.as_deref())?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::Rules, _, _>(
        "The group recharge rules (step, minimum, card balance ceiling, in fen and short yuan) and the amounts the recharge page offers.",
        GROUP_READERS,
        false,
        |_, _, _: NoParams| async move { Ok(recharge_rules()) },
    );

    m.method::<cardd_api::group::Orders, _, _>(
        "充值查询: the group's card recharges in a period (preset or dates) with success and failure statistics.",
        GROUP_READERS,
        false,
        |d, c, p: QueryParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |d, svc| {
                Ok(svc.orders(d.journal.as_deref(), &v, &p, &namer(d))?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::OrdersExport, _, _>(
        "Export exactly the rows of 充值查询 as CSV or XLSX (zh-CN headers), base64.",
        GROUP_READERS,
        false,
        |d, c, p: ExportParams| async move {
            let (v, query) = (viewer(&c)?, p.query());
            let result = blocking(&d, move |d, svc| {
                Ok(svc.orders(d.journal.as_deref(), &v, &query, &namer(d))?)
            })
            .await?;
            let limit = d.config.limits.response_body_bytes_max as usize;
            Ok(export_file(
                "充值查询",
                &result,
                p.format,
                &ORDER_HEADERS,
                limit,
            )?)
        },
    );

    m.method::<cardd_api::group::TopUp, _, _>(
        "额度充值: transfer a whole number of yuan to the card company through the payment gateway; the quota grows after an auditor approves. A declined transfer is PaymentDeclined, an unanswered one PaymentUnknown (data.detail.topup_id to ask again).",
        GROUP_OPS,
        true,
        |d, c, p: TopUpParams| async move {
            let v = viewer(&c)?;
            let started = blocking(&d, move |_, svc| Ok(svc.begin_topup(&v, &p)?)).await?;
            let bank = services(&d)?.bank.clone();
            let request = started.request.clone();
            let paying = tokio::task::spawn_blocking(move || bank.pay(&request));
            let paid = match tokio::time::timeout(PAYMENT_WAIT, paying).await {
                Ok(joined) => joined.unwrap_or_else(|e| Err(PaymentError::Gateway(e.to_string()))),
                Err(_) => Err(PaymentError::NoAnswer(format!("{} 秒内无应答", PAYMENT_WAIT.as_secs()))),
            };
            blocking(&d, move |_, svc| Ok(svc.finish_topup(&started, paid)?)).await
        },
    );

    m.method::<cardd_api::group::TopUpStatusOf, _, _>(
        "A top-up's status; asks the bank again when its answer was lost.",
        GROUP_READERS,
        true,
        |d, c, p: TopUpIdParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |_, svc| Ok(svc.topup_status(&v, &p.topup_id)?)).await
        },
    );

    m.method::<cardd_api::group::TopUps, _, _>(
        "额度充值查询: the group's transfers in a period with transfer and audit statistics.",
        GROUP_READERS,
        false,
        |d, c, p: QueryParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |d, svc| {
                Ok(svc.topups(d.journal.as_deref(), &v, &p, &namer(d))?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::TopUpsExport, _, _>(
        "Export exactly the rows of 额度充值查询 as CSV or XLSX (zh-CN headers), base64.",
        GROUP_READERS,
        false,
        |d, c, p: ExportParams| async move {
            let (v, query) = (viewer(&c)?, p.query());
            let result = blocking(&d, move |d, svc| {
                Ok(svc.topups(d.journal.as_deref(), &v, &query, &namer(d))?)
            })
            .await?;
            let limit = d.config.limits.response_body_bytes_max as usize;
            Ok(export_file(
                "额度充值查询",
                &result,
                p.format,
                &TOPUP_HEADERS,
                limit,
            )?)
        },
    );

    m.method::<cardd_api::group::Ledger, _, _>(
        "The group's quota ledger (append-only), oldest first.",
        GROUP_READERS,
        false,
        |d, c, p: LedgerParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |_, svc| Ok(svc.ledger(&v, &p)?)).await
        },
    );

    m.method::<cardd_api::group::BatchCreate, _, _>(
        "Batch recharge: a queue of cards and amounts, run card by card with the group.batch_recharge flow.",
        GROUP_OPS,
        true,
        |d, c, p: BatchCreateParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |_, svc| Ok(svc.create_batch(&v, &p)?)).await
        },
    );

    m.method::<cardd_api::group::BatchGet, _, _>(
        "A batch with each card's outcome (the per-card report).",
        GROUP_READERS,
        false,
        |d, c, p: BatchIdParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |d, svc| {
                Ok(svc.batch(d.journal.as_deref(), &v, &p.batch_id)?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::AuditPendingList, _, _>(
        "What waits for an auditor: paid transfers to approve, failed recharges with their card evidence.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            blocking(&d, move |d, svc| {
                Ok(svc.audit_pending(d.journal.as_deref(), &namer(d))?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::AuditTopUp, _, _>(
        "Approve (the quota grows) or reject a paid transfer; each transfer is decided once.",
        AUDITORS,
        true,
        |d, c, p: AuditTopUpParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |_, svc| Ok(svc.audit_topup(&v, &p)?)).await
        },
    );

    m.method::<cardd_api::group::AuditEvidence, _, _>(
        "The card evidence of an order: did its load land (from the journal, decided from the card)? With reader_id, the card on that reader is read too.",
        AUDIT_READERS,
        false,
        |d, c, p: EvidenceParams| async move {
            let (v, order_id) = (viewer(&c)?, p.order_id.clone());
            let (order, mut ev) = blocking(&d, move |d, svc| {
                svc.reconcile(d.journal.as_deref())?;
                let order = svc.visible_order(&v, &order_id)?;
                let ev = svc.evidence(d.journal.as_deref(), &order, &namer(d))?;
                Ok((order, ev))
            })
            .await?;
            if let Some(reader_id) = &p.reader_id {
                ev.card = Some(card_check(&d, &c, &order, reader_id).await?);
            }
            Ok(ev)
        },
    );

    m.method::<cardd_api::group::AuditRefund, _, _>(
        "Return a failed order's quota; refused when the card shows the load landed or is unsettled; never twice.",
        AUDITORS,
        true,
        |d, c, p: OrderDecisionParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |d, svc| {
                Ok(svc.refund(d.journal.as_deref(), &v, &p, &namer(d))?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::AuditResolve, _, _>(
        "Resolve a failed order as succeeded when the card shows its load landed.",
        AUDITORS,
        true,
        |d, c, p: OrderDecisionParams| async move {
            let v = viewer(&c)?;
            blocking(&d, move |d, svc| {
                Ok(svc.resolve(d.journal.as_deref(), &v, &p, &namer(d))?)
            })
            .await
        },
    );

    m.method::<cardd_api::group::GroupsList, _, _>(
        "Every group with its quota.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            blocking(&d, |_, svc| Ok::<Vec<GroupView>, ApiError>(svc.groups()?)).await
        },
    );

    m.method::<cardd_api::group::GroupsUpsert, _, _>(
        "Create a group (no quota) or change its name or terminal number.",
        ADMIN,
        true,
        |d, _, p: GroupInput| async move {
            blocking(&d, move |_, svc| Ok(svc.upsert_group(&p)?)).await
        },
    );
}
