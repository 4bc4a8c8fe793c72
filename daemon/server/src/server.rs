//! `run(config, listener, shutdown)`: the daemon's entry point, bounded everywhere, with
//! graceful drain.
//!
//! Modelled on mini-redis: no globals; the caller owns the listener (tests bind `127.0.0.1:0`)
//! and the shutdown future. Start-up opens the database, verifies the audit chain (a broken
//! chain makes the daemon *fail closed*: it keeps serving reads but refuses state-changing
//! methods), loads the key material, starts the readers and serves JSON-RPC behind the
//! [`crate::transport::guard`]. Shutdown stops accepting, lets in-flight calls finish, stops the reader
//! threads after their current command and flushes the database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_api::Role;
use cardd_purse::{SamConfig, SecurityModule, SoftSam};
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, PingConfig, Server, ServerConfig, ServerHandle};
use serde_json::json;

use crate::audit::{AuditLog, RefusalDigest};
use crate::auth::{Auth, AuthConfig, NewOperator};
use crate::config::{Config, KeySource};
use crate::events::EventBus;
use crate::readers::ReaderManager;
use crate::store::Store;
use crate::transport::connections::{ConnectionLimits, ConnectionPool};
use crate::transport::guard::{CallShapeLayer, GuardConfig, GuardLayer, RateLimitLayer};
use cardd_journal::Journal;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the data directory {dir}: {reason}; check it exists and is writable by the daemon's user")]
    Store { dir: String, reason: String },
    #[error("cannot load the key material: {0}")]
    Keys(String),
    #[error("cannot set up the link to the issuer host ([fleet]): {0}")]
    Fleet(String),
    #[error("cannot start the readers: {0}")]
    Readers(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot seed the demo data: {0}")]
    Seed(String),
    #[error("this site is in fleet mode ([fleet]): its operators are managed at the issuer host; create them there with `cardd-host operators add` (本站点的操作员由发卡方后台统一管理)")]
    OperatorsAtHost,
    #[error("the password is refused: {0}; nothing was created")]
    WeakPassword(String),
}

pub use crate::daemon::Daemon;

/// A started daemon.
pub struct Running {
    pub addr: SocketAddr,
    pub daemon: Arc<Daemon>,
    /// The open connections (see [`crate::transport::connections`]).
    pub connections: Arc<ConnectionPool>,
    handle: ServerHandle,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stops accepting, drains in-flight calls, stops the readers and flushes the database.
    pub async fn stop(self) {
        let _ = self.handle.stop();
        self.handle.stopped().await;
        let daemon = self.daemon.clone();
        let _ = tokio::task::spawn_blocking(move || {
            daemon.audit_refusals(daemon.refusals.drain());
            daemon.readers.shutdown()
        })
        .await;
        if let Err(e) = self.daemon.store.durable_flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!("stopped");
    }
}

/// Runs the daemon on `listener` until `shutdown` completes, with its control socket
/// ([`crate::control`]) in the data directory; `logs` is the ring of recent log lines the
/// control socket shows (the binary's logging fills it).
pub async fn run(
    config: Config,
    listener: std::net::TcpListener,
    logs: Option<crate::log_ring::LogRing>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let running = start(config, listener).await?;
    #[cfg(unix)]
    let control = {
        let path = crate::control::socket_path(&running.daemon.config.data_dir);
        match crate::control::listen(&path, &running.daemon, logs) {
            Ok(control) => Some(control),
            Err(e) => {
                // The daemon serves without it; only `cardd support-bundle` misses it.
                tracing::error!(error = %e, "no control socket: `cardd support-bundle` cannot reach this daemon");
                None
            }
        }
    };
    #[cfg(not(unix))]
    let _ = logs;
    shutdown.await;
    tracing::info!("shutting down");
    #[cfg(unix)]
    if let Some(control) = control {
        control.stop().await;
    }
    running.stop().await;
    Ok(())
}

/// Starts the daemon on `listener` and returns once it is ready.
pub async fn start(
    mut config: Config,
    listener: std::net::TcpListener,
) -> Result<Running, ServerError> {
    let addr = listener.local_addr()?;
    let extra_origins: Vec<String> = config
        .allowed_origins
        .iter()
        .filter(|o| !o.contains("127.0.0.1") && !o.contains("localhost") && !o.contains("[::1]"))
        .cloned()
        .collect();
    config.bind_port(addr.port(), &extra_origins);
    let daemon = Arc::new(open(config)?);
    // The flows' service modules (card, host, group, obu), bound to this daemon.
    if let Some(flows) = &daemon.flows {
        flows.register_modules(Arc::new(crate::lua::DaemonModules(Arc::downgrade(&daemon))));
    }
    let limits = daemon.config.limits.clone();
    let (module, specs) = methods(daemon.clone());
    tracing::debug!(methods = specs.len(), "methods registered");

    let health_daemon = Arc::downgrade(&daemon);
    let session_daemon = Arc::downgrade(&daemon);
    let metrics = daemon.metrics.clone();
    let metrics_daemon = Arc::downgrade(&daemon);
    let guard = GuardConfig {
        allowed_hosts: daemon.config.allowed_hosts.clone(),
        allowed_origins: daemon.config.allowed_origins.clone(),
        health: Arc::new(move || {
            health_daemon
                .upgrade()
                .map(|d| d.health())
                .unwrap_or_else(|| json!({"status": "stopping"}))
        }),
        metrics: Some(Arc::new(move || {
            if let Some(d) = metrics_daemon.upgrade() {
                metrics.plugins(&d.readers.plugins());
            }
            metrics.render()
        })),
        session_is_live: Arc::new(move |token| {
            session_daemon.upgrade().is_some_and(|d| {
                d.auth
                    .authenticate(token, std::time::Instant::now())
                    .is_ok()
            })
        }),
    };
    let server_config = ServerConfig::builder()
        .max_request_body_size(limits.request_body_bytes_max)
        .max_response_body_size(limits.response_body_bytes_max)
        .max_subscriptions_per_connection(limits.subscriptions_per_connection_max)
        .set_batch_request_config(BatchRequestConfig::Disabled)
        .set_message_buffer_capacity(64)
        .enable_ws_ping(PingConfig::new())
        .build();
    let services = Server::builder()
        .set_config(server_config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(GuardLayer::new(Arc::new(guard))))
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer(RateLimitLayer::new(
                    limits.requests_per_second_per_connection,
                    limits.request_burst_per_connection,
                ))
                .layer(CallShapeLayer),
        )
        .to_service_builder()
        .max_connections(limits.connections_max);
    let methods: jsonrpsee::Methods = module.into();
    let (stop, handle) = jsonrpsee::server::stop_channel();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let connections = Arc::new(ConnectionPool::new(ConnectionLimits {
        unauthenticated_max: limits.unauthenticated_connections_max as usize,
        unauthenticated_per_process_max: limits.unauthenticated_connections_per_process_max
            as usize,
        unauthenticated_idle: std::time::Duration::from_secs(limits.unauthenticated_idle_timeout_s),
        authenticated_idle: std::time::Duration::from_secs(limits.connection_idle_timeout_s),
    }));
    {
        let stop_for_services = stop.clone();
        tokio::spawn(crate::transport::connections::accept_loop(
            listener,
            connections.clone(),
            move || {
                services
                    .clone()
                    .build(methods.clone(), stop_for_services.clone())
            },
            stop,
        ));
    }
    crate::recovery::spawn(&daemon);
    crate::methods::group::spawn_reconciler(&daemon);
    spawn_refusal_audit(&daemon);
    spawn_outbox_delivery(&daemon);
    spawn_operator_status(&daemon);
    spawn_site_report(&daemon);
    if let Some(Ok(Some(mode))) = daemon.journal.as_deref().map(Journal::restored_mode) {
        tracing::warn!(
            backup_created_at = %mode.backup_created_at,
            restored_at = %mode.restored_at,
            suspects = mode.suspects,
            "restored mode: this data was restored from a backup; before a recharge record the backup shows as not loaded is loaded, its card's own log is checked for a load made after the backup (journal.restored lists what waits and what was found)"
        );
    }
    if daemon.fleet.is_none() && !daemon.auth.has_operators() {
        tracing::warn!(
            data_dir = %daemon.config.data_dir.display(),
            "no operator account yet: nobody can log in. Stop cardd and create the first administrator with `cardd --config FILE operators add --role admin USER` (the password is read from the terminal or standard input), then start it again; /health says needs_setup until then"
        );
    }
    tracing::info!(
        addr = %addr,
        config = %daemon.config.source,
        readers = daemon.readers.list().len(),
        demo = daemon.config.demo,
        "cardd ready: JSON-RPC over HTTP and WebSocket at http://{addr}/"
    );
    Ok(Running {
        addr,
        daemon,
        connections,
        handle,
    })
}

/// Every method set this daemon serves, in the order the OpenRPC document lists them.
fn methods(
    daemon: Arc<Daemon>,
) -> (
    jsonrpsee::RpcModule<Arc<Daemon>>,
    Vec<crate::rpc::MethodSpec>,
) {
    use crate::methods::{audit, auth, etc, events, flows, group, journal, readers, sim, system};
    // The 模拟读卡器 panel exists on the embedded default only; elsewhere its methods do not.
    let has_sim_panel = daemon.sim_panel.is_some();
    let mut m = crate::rpc::Methods::new(daemon);
    system::add(&mut m);
    auth::add(&mut m);
    audit::add(&mut m);
    readers::add(&mut m);
    events::add(&mut m);
    flows::add(&mut m);
    etc::add(&mut m);
    journal::add(&mut m);
    group::add(&mut m);
    if has_sim_panel {
        sim::add(&mut m);
    }
    flows::add_subscription(&mut m);
    events::add_subscription(&mut m);
    m.finish()
}

fn open(config: Config) -> Result<Daemon, ServerError> {
    let store = crate::upgrade::open_store(&config.data_dir).map_err(|e| ServerError::Store {
        dir: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let a = &config.auth;
    let auth_config = auth_config(&config);
    let refusals = RefusalDigest::new(Duration::from_secs(a.login_failure_audit_interval_s));
    let store_error = |e: &dyn std::fmt::Display| ServerError::Store {
        dir: config.data_dir.display().to_string(),
        reason: e.to_string(),
    };
    let auth = Auth::open(&store, auth_config).map_err(|e| store_error(&e))?;
    let audit = Arc::new(
        AuditLog::open_with(&store, config.audit.segment_records).map_err(|e| store_error(&e))?,
    );
    let (journal, journal_failure) = match Journal::open(&store) {
        Ok(journal) => (Some(Arc::new(journal)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut fleet_link = None;
    let mut foreign: Option<Arc<dyn cardd_journal::ForeignIntents>> = None;
    let fleet = match &config.fleet {
        Some(fleet) => Some((fleet, fleet_client(fleet)?)),
        None => None,
    };
    // A fleet site's groups, quotas and orders are the issuer host's; its sandbox bank is
    // still its own.
    let (group_stores, group_failure) = match &fleet {
        Some((_, client)) => crate::methods::group::open_fleet(&config, &store, client.clone()),
        None => crate::methods::group::open(&config, &store),
    };
    let (host, host_failure, sam): RecordsAndKeys = match fleet {
        // A fleet site: the records, the groups and the keys are the issuer host's.
        Some((fleet, client)) => {
            let outbox = cardd_store::SledOutbox::open(&store).map_err(|e| store_error(&e))?;
            let link = cardd_hostlink::HttpsLink(client.clone());
            foreign = Some(Arc::new(link.clone()));
            let remote = Arc::new(cardd_authority::RemoteSam::with_outbox(
                Arc::new(link),
                Arc::new(outbox.clone()),
            ));
            tracing::info!(host = %fleet.host_addr, name = %fleet.host_name, outbox_pending = outbox.len(), "fleet mode: records, group quotas and orders, and load authorisations at the issuer host");
            fleet_link = Some(crate::daemon::FleetLink {
                host: fleet.host_addr,
                sam: remote.clone(),
                outbox,
                intents: foreign.clone().expect("set above"),
                operators: cardd_hostlink::RemoteOperators::new(client.clone()),
                sites: cardd_hostlink::RemoteSites::new(client.clone()),
            });
            (
                Some(Arc::new(cardd_hostlink::RemoteRecords::new(client))),
                None,
                remote,
            )
        }
        None => {
            let keys = load_keys(&config)?;
            let (host, host_failure): (Option<Arc<dyn cardd_etc::IssuerHost>>, Option<String>) =
                match cardd_store::EmbeddedHost::open(&store) {
                    Ok(host) => {
                        if config.demo {
                            host.seed_demo()
                                .map_err(|e| ServerError::Seed(e.to_string()))?;
                        }
                        (Some(Arc::new(host)), None)
                    }
                    Err(e) => (None, Some(e.to_string())),
                };
            // No MAC2 without a funded record: the keys sit behind the funding check.
            let sam: Arc<dyn SecurityModule> = Arc::new(crate::funded_sam::FundedSam::new(
                keys,
                host.clone(),
                group_stores.as_ref().map(|(h, _)| h.clone()),
                config.flows.unfunded_test_loads && config.keys.source == KeySource::Demo,
            ));
            (host, host_failure, sam)
        }
    };
    // Who each open load belongs to, in both domains: every new credit is checked against all
    // of them (exactly once per customer intent).
    let mut owners: Vec<Arc<dyn cardd_journal::IntentOwners>> = Vec::new();
    if let Some(records) = &host {
        owners.push(Arc::new(cardd_etc::RecordOwners(records.clone())));
    }
    if let Some((orders, _)) = &group_stores {
        owners.push(Arc::new(cardd_group::GroupOwners(orders.clone())));
    }
    let owners: Arc<dyn cardd_journal::IntentOwners> = Arc::new(owners);
    let group = crate::methods::group::service(group_stores, &sam, owners.clone(), foreign.clone());
    let etc = host.clone().map(|records| {
        Arc::new(crate::methods::etc::service(
            records,
            journal.clone(),
            sam.clone(),
            owners.clone(),
            audit.clone(),
            foreign.clone(),
            &config,
        ))
    });
    let events = Arc::new(EventBus::new(config.limits.events_buffered_max));
    let registry = cardd_drivers::registry();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let flows = open_flows(&config, &store, &metrics);
    {
        let metrics = metrics.clone();
        store.observe_flushes(Box::new(move |took| metrics.journal_flush(took)));
    }
    let (factories, sim_panel) = crate::sim_panel::instantiate(
        &config.readers,
        &registry,
        config.demo || config.sim_panel,
        &metrics,
    )
    .map_err(|e| ServerError::Readers(e.to_string()))?;
    let readers =
        ReaderManager::start_factories(factories, &config.limits, events.clone(), metrics.clone())
            .map_err(|e| ServerError::Readers(e.to_string()))?;
    let daemon = Daemon {
        config,
        store,
        auth,
        audit,
        refusals,
        journal,
        host,
        etc,
        group,
        flows,
        flows_checked: crate::flows_reload::ReloadGate::new(),
        events,
        readers,
        sam,
        metrics,
        sim_panel,
        fleet: fleet_link,
        started: Instant::now(),
        failed_closed: AtomicBool::new(false),
    };
    match daemon.audit.verify_chain() {
        Ok(records) => tracing::info!(records, "audit chain verified"),
        Err(e) => daemon.fail_closed(&e.to_string()),
    }
    if let Some(reason) = journal_failure {
        daemon.fail_closed(&reason);
    }
    if let Some(reason) = host_failure {
        daemon.fail_closed(&reason);
    }
    if let Some(reason) = group_failure {
        daemon.fail_closed(&reason);
    }
    if let Some(journal) = &daemon.journal {
        match journal.list_open() {
            Ok(open) if !open.is_empty() => {
                for txn in &open {
                    tracing::warn!(txn = %txn.txn_id, card = %txn.card_number, state = ?txn.state, "unresolved load: it is checked when its card is presented");
                }
            }
            Ok(_) => tracing::info!("journal verified: no unresolved loads"),
            Err(e) => daemon.fail_closed(&e.to_string()),
        }
    }
    let settled = daemon.etc.as_ref().map(|etc| etc.settle_at_start());
    for record in settled.into_iter().flatten() {
        tracing::info!(record = %record.record_id, status = record.status.label(), "recharge record settled from the journal");
    }
    if daemon.config.demo {
        seed_demo(&daemon)?;
    }
    Ok(daemon)
}

/// Writes the counts of refusals whose interval ended; ends with the daemon. Its timer is armed
/// only for the end of a pending interval: with no refusal pending it waits for one without a
/// timer (an idle daemon does not wake for it).
fn spawn_refusal_audit(daemon: &Arc<Daemon>) {
    let armed = daemon.refusals.armed();
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        loop {
            let next = match weak.upgrade() {
                Some(daemon) => daemon.refusals.next_due(),
                None => return,
            };
            let Some(at) = next else {
                // Woken by the first refusal of an interval, or when the daemon goes.
                armed.notified().await;
                continue;
            };
            tokio::time::sleep_until(at.into()).await;
            let Some(daemon) = weak.upgrade() else { return };
            let _ = tokio::task::spawn_blocking(move || {
                daemon.audit_refusals(daemon.refusals.due(Instant::now()));
            })
            .await;
        }
    });
}

/// How often a fleet site tries to deliver its held confirmations to the host.
const OUTBOX_RETRY: Duration = Duration::from_secs(5);

/// Delivers a fleet site's held confirmations whenever the host answers again, trying every
/// [`OUTBOX_RETRY`] while some are held; with the outbox empty it waits for a confirmation to
/// be held, without a timer. Ends with the daemon.
fn spawn_outbox_delivery(daemon: &Arc<Daemon>) {
    let Some(fleet) = daemon.fleet.clone() else {
        return;
    };
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        loop {
            if weak.upgrade().is_none() {
                return;
            }
            if !fleet.outbox.is_empty() {
                let sam = fleet.sam.clone();
                match tokio::task::spawn_blocking(move || sam.deliver_outbox()).await {
                    Ok(Ok(done)) if done.booked + done.refused > 0 => {
                        tracing::info!(
                            booked = done.booked,
                            refused = done.refused,
                            waiting = done.waiting,
                            "outbox delivered to the issuer host"
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "the outbox could not be read"),
                    Err(e) => tracing::error!(error = %e, "outbox delivery stopped"),
                }
            }
            if fleet.outbox.is_empty() {
                // Watched only while empty (the watch's queue is bounded), and looked at again
                // once watched, so a confirmation held in between is not missed. A held
                // confirmation is tried OUTBOX_RETRY later: the host just did not answer.
                let watch = fleet.outbox.watch();
                if fleet.outbox.is_empty() && watch.await.is_none() {
                    return;
                }
            }
            tokio::time::sleep(OUTBOX_RETRY).await;
        }
    });
}

/// How often a fleet site reports to the host (alive, outbox length), in seconds: the back
/// office's "last spoke" is at most about this old for a site that runs.
pub const SITE_REPORT_INTERVAL_S: u64 = 10;

/// A fleet site's report to the host: at start and every [`SITE_REPORT_INTERVAL_S`], how many
/// changes wait in its outbox (`sites.report`). A report the host does not take is logged and
/// sent again at the next tick. Ends with the daemon's runtime.
fn spawn_site_report(daemon: &Arc<Daemon>) {
    let Some(fleet) = daemon.fleet.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(SITE_REPORT_INTERVAL_S));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let pending = u64::try_from(fleet.outbox.len()).unwrap_or(u64::MAX);
            let sites = fleet.sites.clone();
            match tokio::task::spawn_blocking(move || sites.report(pending)).await {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the issuer host did not take this site's report; sent again later");
                }
                Ok(Err(_)) => {}
                Err(e) => tracing::error!(error = %e, "the site report stopped"),
            }
        }
    });
}

/// How often a fleet site asks the host about the operators it has sessions for, in seconds:
/// an operator disabled at the host loses its sessions here within about this long.
pub const OPERATOR_STATUS_INTERVAL_S: u64 = 5;

/// A fleet site's watch on its logged-in operators: every [`OPERATOR_STATUS_INTERVAL_S`] while
/// any session is open (with none, it waits for a login without a timer) the host is asked
/// (`operators.status`) about the operators holding a session, and the sessions
/// of those disabled or removed there end (with [`crate::auth::SessionEnd::OperatorDisabled`],
/// as a local disabling ends them), each recorded in the audit log. No answer ends nothing.
/// Ends with the daemon.
fn spawn_operator_status(daemon: &Arc<Daemon>) {
    let Some(fleet) = daemon.fleet.clone() else {
        return;
    };
    let weak = Arc::downgrade(daemon);
    let opened = daemon.auth.session_opened();
    tokio::spawn(async move {
        loop {
            let anyone = match weak.upgrade() {
                Some(daemon) => !daemon.auth.session_usernames().is_empty(),
                None => return,
            };
            if !anyone {
                // Nobody to ask about: wait for a login, without a timer.
                opened.notified().await;
            }
            tokio::time::sleep(Duration::from_secs(OPERATOR_STATUS_INTERVAL_S)).await;
            let Some(daemon) = weak.upgrade() else {
                return;
            };
            let usernames = daemon.auth.session_usernames();
            if usernames.is_empty() {
                continue;
            }
            let operators = fleet.operators.clone();
            let answer = tokio::task::spawn_blocking(move || operators.status(&usernames)).await;
            let status = match answer {
                Ok(Ok(status)) => status,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the issuer host could not say which operators are disabled; sessions kept");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the operator status check stopped");
                    continue;
                }
            };
            let ended: Vec<(String, &str, usize)> = status
                .disabled
                .iter()
                .map(|u| (u, "disabled at the issuer host"))
                .chain(
                    status
                        .gone
                        .iter()
                        .map(|u| (u, "removed at the issuer host")),
                )
                .map(|(u, why)| {
                    let n = daemon
                        .auth
                        .end_sessions_of(u, crate::auth::SessionEnd::OperatorDisabled);
                    (u.clone(), why, n)
                })
                .filter(|(_, _, n)| *n > 0)
                .collect();
            if ended.is_empty() {
                continue;
            }
            let audit = daemon.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for (username, why, sessions) in ended {
                    tracing::info!(operator = %username, sessions, why, "sessions ended");
                    let entry = crate::audit::AuditEntry {
                        operator: None,
                        role: None,
                        action: "auth.sessions_ended".into(),
                        target: Some(username),
                        detail: json!({ "why": why, "sessions": sessions }),
                        outcome: "ok".into(),
                    };
                    if let Err(e) = audit.audit.append(entry) {
                        tracing::error!(error = %e, "could not audit ended sessions");
                    }
                }
            })
            .await;
        }
    });
}

fn open_flows(
    config: &Config,
    store: &Store,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Option<Arc<crate::flows::FlowEngine>> {
    let dir = config
        .flows
        .dir
        .clone()
        .unwrap_or_else(crate::flows::default_dir);
    let limits = cardd_script::Limits {
        wall_ms_max: config.flows.run_s_max.saturating_mul(1000),
        instructions_max: config.flows.instructions_max,
        memory_bytes_max: config.flows.memory_bytes_max,
        ..cardd_script::Limits::default()
    };
    let prompt_timeout = std::time::Duration::from_secs(config.flows.prompt_timeout_s);
    match crate::flows::FlowEngine::open(&dir, store, limits, prompt_timeout, metrics.clone()) {
        Ok(engine) => {
            tracing::info!(dir = %dir.display(), flows = engine.list().len(), "flows loaded");
            Some(engine)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no flows: the flows directory could not be read");
            None
        }
    }
}

/// The records (or why they could not be opened) and the security module a daemon works with.
type RecordsAndKeys = (
    Option<Arc<dyn cardd_etc::IssuerHost>>,
    Option<String>,
    Arc<dyn SecurityModule>,
);

/// The operator accounts' settings of `config`.
fn auth_config(config: &Config) -> AuthConfig {
    let a = &config.auth;
    AuthConfig {
        session_idle_timeout: Duration::from_secs(a.session_idle_timeout_s),
        login_failures_free: a.login_failures_free,
        login_delay_base: Duration::from_millis(a.login_delay_base_ms),
        login_delay_max: Duration::from_secs(a.login_delay_max_s),
        login_failures_forget: Duration::from_secs(a.login_failures_forget_s),
        password_chars_min: a.password_chars_min,
        sessions_max: a.sessions_max,
        sessions_per_user_max: a.sessions_per_user_max,
        sessions_per_role_max: a.sessions_per_role_max,
        kiosk_sessions_max: a.kiosk_sessions_max,
        hashing_concurrent_max: a.hashing_concurrent_max,
        hashing_wait_max: Duration::from_millis(a.hashing_wait_ms_max),
    }
}

/// Creates an operator in the data directory of `config` while the daemon is stopped (the
/// first administrator of a new install): the password is checked like any other and hashed,
/// and the creation is audited. Refused while a daemon holds the data directory.
pub fn add_operator_offline(
    config: &Config,
    new: cardd_api::operators::NewOperator,
) -> Result<cardd_api::operators::Operator, ServerError> {
    if config.fleet.is_some() {
        return Err(ServerError::OperatorsAtHost);
    }
    // An account made at the command line (the first administrator of an install, with no one
    // to reset it) takes no guessable password.
    cardd_api::operators::check_password_strength(&new.password, &new.username)
        .map_err(ServerError::WeakPassword)?;
    let store_error = |e: &dyn std::fmt::Display| ServerError::Store {
        dir: config.data_dir.display().to_string(),
        reason: format!("{e} (is cardd running on it? stop it first)"),
    };
    let store = open_store_offline(config)?;
    let auth = Auth::open(&store, auth_config(config)).map_err(|e| store_error(&e))?;
    let audit =
        AuditLog::open_with(&store, config.audit.segment_records).map_err(|e| store_error(&e))?;
    let (username, role) = (new.username.clone(), new.role);
    audit
        .append(crate::audit::AuditEntry {
            operator: None,
            role: None,
            action: "operators.create".into(),
            target: Some(username.clone()),
            detail: json!({ "role": role.as_str(), "via": "cardd operators add (offline)" }),
            outcome: crate::rpc::AUDIT_STARTED.into(),
        })
        .map_err(|e| store_error(&e))?;
    let created = auth
        .create_operator(new)
        .map_err(|e| ServerError::Seed(e.to_string()))?;
    store.durable_flush().map_err(|e| store_error(&e))?;
    Ok(created)
}

/// Opens the database of `config` while the daemon is stopped (the command line's offline
/// work: operators, support bundles). Refused while a daemon holds it.
pub fn open_store_offline(config: &Config) -> Result<Store, ServerError> {
    crate::upgrade::open_store(&config.data_dir).map_err(|e| ServerError::Store {
        dir: config.data_dir.display().to_string(),
        reason: format!("{e} (is cardd running on it? stop it first)"),
    })
}

/// A fleet site's client of the issuer host, with the site's certificate.
fn fleet_client(
    fleet: &crate::config::FleetConfig,
) -> Result<Arc<cardd_hostlink::HostClient>, ServerError> {
    let tls = cardd_fleet::site_client_config(&cardd_fleet::TlsFiles {
        ca_cert: fleet.ca_cert.clone(),
        cert: fleet.cert.clone(),
        key: fleet.key.clone(),
    })
    .map_err(|e| ServerError::Fleet(e.to_string()))?;
    let client = cardd_hostlink::HostClient::new(
        fleet.host_addr,
        &fleet.host_name,
        Arc::new(tls),
        fleet.call_timeout,
    )
    .map_err(|e| ServerError::Fleet(e.to_string()))?;
    Ok(Arc::new(client))
}

fn load_keys(config: &Config) -> Result<Arc<dyn SecurityModule>, ServerError> {
    let sam_config = match (config.keys.source, &config.keys.file) {
        (KeySource::Demo, _) => {
            if !config.demo {
                tracing::warn!(
                    "keys.source = \"demo\": the public demo keys only work with simulated cards"
                );
            }
            SamConfig::demo()
        }
        (KeySource::File, Some(path)) => {
            let loaded =
                crate::keys::read_key_file(path).map_err(|e| ServerError::Keys(e.to_string()))?;
            tracing::info!(file = %path.display(), schemes = ?loaded.schemes, "master keys loaded");
            return Ok(Arc::new(loaded.sam));
        }
        (KeySource::File, None) => return Err(ServerError::Keys("keys.file is not set".into())),
    };
    let sam = SoftSam::new(&sam_config).map_err(|e| ServerError::Keys(e.to_string()))?;
    Ok(Arc::new(sam))
}

/// The embedded default's operators (documented in the README).
pub const DEMO_OPERATORS: &[(&str, &str, Role, Option<&str>, &str)] = &[
    ("admin", "系统管理员", Role::Admin, None, "admin123"),
    ("teller", "柜员小王", Role::Teller, None, "teller123"),
    ("supervisor", "主管老李", Role::Supervisor, None, "super123"),
    ("auditor", "审核员小陈", Role::Auditor, None, "audit123"),
    ("kiosk", "自助终端01", Role::Kiosk, None, "kiosk123"),
    (
        "group1",
        "集团操作员张三",
        Role::GroupOperator,
        Some("G001"),
        "group123",
    ),
];

fn seed_demo(daemon: &Daemon) -> Result<(), ServerError> {
    for (username, display_name, role, group, password) in DEMO_OPERATORS {
        let created = daemon
            .auth
            .ensure_operator(NewOperator {
                username: (*username).into(),
                display_name: (*display_name).into(),
                role: *role,
                group_id: group.map(str::to_owned),
                password: (*password).into(),
            })
            .map_err(|e| ServerError::Seed(e.to_string()))?;
        if created {
            tracing::info!(username, role = role.as_str(), "demo operator created");
        }
    }
    Ok(())
}
