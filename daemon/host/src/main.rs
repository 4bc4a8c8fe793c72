//! `cardd-host`: the central issuer host (后台) of a cardd fleet. See README.md ("A fleet").

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cardd_authority::{Authority, GatedKeys};
use cardd_etc::{IssuerHost, VehicleInput};
use cardd_fleet::{CertFingerprint, SiteId};
use cardd_host::config::HostConfig;
use cardd_host::HostService;
use cardd_journal::clock::SystemClock;
use cardd_store_pg::{Database, HostAuditEntry, PgAudit, PgHost, PgLedger, PgSites, HOST_CHAIN};

/// The central issuer host: recharge records, load authorisations and sites on PostgreSQL;
/// the issuer's keys; HTTPS with mutual TLS for the sites.
#[derive(Debug, Parser)]
#[command(name = "cardd-host", version)]
struct Cli {
    /// The host's configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/cardd/cardd-host.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the sites until SIGINT or SIGTERM (migrates the database first).
    Serve,
    /// Checks the configuration, the TLS files, the keys and the database URL's syntax without
    /// starting or connecting. One line per finding; exits 1 when any is an error.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    /// Brings the database schema up to date and prints its version.
    Migrate,
    /// The sites that may connect.
    Sites {
        #[command(subcommand)]
        command: SitesCommand,
    },
    /// Adds the demo vehicle accounts (simulated cards only) and the demo groups (G001, G002,
    /// with their opening quotas); adds nothing twice.
    SeedDemo,
    /// The fleet's operators: one account for every site, disabled everywhere at once.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// The host's hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Lists a vehicle's recharge records (充值记录), newest first.
    Records {
        /// The plate (e.g. 陕A12345).
        #[arg(long)]
        plate: String,
        /// The plate colour code.
        #[arg(long, default_value_t = 0)]
        colour: u16,
    },
    /// Takes a payment at the host: a new 未圈存 recharge record for the vehicle's card, which
    /// any site can then load.
    Recharge {
        /// The plate (e.g. 陕A12345).
        #[arg(long)]
        plate: String,
        /// The plate colour code (0 blue, 1 yellow, 2 black, 3 white, 4 gradient green, …).
        #[arg(long, default_value_t = 0)]
        colour: u16,
        /// The amount in yuan, e.g. 50.00.
        #[arg(long)]
        amount: String,
        /// Who took the payment.
        #[arg(long, default_value = "host")]
        operator: String,
        /// The channel recorded on the record.
        #[arg(long, default_value = "发卡方后台")]
        channel: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Checks every chain (each record's hash and its link to the one before).
    Verify,
    /// The newest records, of one chain (a site id, or `host`) or all.
    List {
        #[arg(long)]
        chain: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorsCommand {
    /// Creates an operator. The password is read from the first line of standard input (a
    /// terminal shows a prompt), never from the command line.
    Add {
        /// teller, supervisor, auditor, admin, kiosk or group.
        #[arg(long)]
        role: String,
        /// With --role group: the group the operator belongs to.
        #[arg(long)]
        group: Option<String>,
        /// The name shown in the console and the records (default: the user name).
        #[arg(long)]
        display_name: Option<String>,
        /// The user name.
        username: String,
    },
    /// Disables an operator: refused at every site's next login, and its open sessions end
    /// within seconds.
    Disable { username: String },
    /// Lets a disabled operator log in again.
    Enable { username: String },
    /// Sets an operator's password (read from the first line of standard input).
    ResetPassword { username: String },
    /// Lists the operators.
    List,
}

#[derive(Debug, Subcommand)]
enum SitesCommand {
    /// Enrols a site with its certificate (or replaces its certificate), enabled.
    Enrol {
        /// The site id (the name its certificate was issued for).
        site: String,
        /// The site's certificate (PEM), as `cardd-fleet ca issue-site` wrote it.
        #[arg(long, conflicts_with = "fingerprint")]
        cert: Option<PathBuf>,
        /// Or the certificate's SHA-256 fingerprint as `cardd-fleet` printed it.
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Refuses the site from its next connection on.
    Disable { site: String },
    /// Lets a disabled site connect again.
    Enable { site: String },
    /// Lists the sites.
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The service logs what it does; a one-shot command only its warnings.
    let level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARDD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::CheckConfig { file } = &cli.command {
        return check_config(file.as_ref().unwrap_or(&cli.config));
    }
    let config = HostConfig::load(&cli.config)?;
    match cli.command {
        Command::Serve => serve(&config),
        Command::CheckConfig { .. } => unreachable!("handled above"),
        Command::Migrate => {
            let db = open(&config)?;
            let m = db.migrated();
            println!("database schema: version {} (was {})", m.to, m.from);
            Ok(())
        }
        Command::Sites { command } => sites(&config, command),
        Command::Operators { command } => operators(&config, command),
        Command::Audit { command } => {
            let audit = PgAudit::new(open(&config)?, Arc::new(SystemClock));
            match command {
                AuditCommand::Verify => {
                    let report = audit.verify()?;
                    println!(
                        "audit log intact: {} records in {} chains",
                        report.records, report.chains
                    );
                }
                AuditCommand::List { chain, limit } => {
                    for r in audit.list(chain.as_deref(), limit)? {
                        println!(
                            "{}\t{}#{}\t{}\t{}\t{}\t{}\t{}",
                            r.at,
                            r.chain,
                            r.seq,
                            r.actor,
                            r.action,
                            r.target.unwrap_or_default(),
                            r.outcome,
                            r.detail
                        );
                    }
                }
            }
            Ok(())
        }
        Command::SeedDemo => {
            let db = open(&config)?;
            audit(&db, "seed_demo", "demo vehicles", serde_json::json!({}))?;
            let groups = cardd_store_pg::PgGroupHost::new(db.clone(), Arc::new(SystemClock));
            println!("demo groups added: {}", groups.seed_demo()?);
            let records = PgHost::new(db, Arc::new(SystemClock));
            let mut added = 0;
            for v in cardd_store::demo::demo_vehicles() {
                if records.vehicle(&v.plate, v.plate_colour.code)?.is_some() {
                    continue;
                }
                records.upsert_vehicle(
                    &VehicleInput {
                        plate: v.plate,
                        plate_colour: v.plate_colour.code,
                        card_numbers: v.card_numbers,
                        owner_name: v.owner_name,
                        vehicle_class: v.vehicle_class,
                        obu_contract_serial: v.obu_contract_serial,
                        details: v.details,
                    },
                    "cardd-host",
                )?;
                added += 1;
            }
            println!("demo vehicles added: {added}");
            Ok(())
        }
        Command::Records { plate, colour } => {
            let records = PgHost::new(open(&config)?, Arc::new(SystemClock));
            let page = records.query_records(&cardd_etc::RecordQuery {
                plate,
                colour,
                from: None,
                to: None,
                page: 1,
                page_size: cardd_etc::PAGE_SIZE_MAX,
            })?;
            for r in page.records {
                println!(
                    "{}\t{}\t{} 元\t{}\t{}",
                    r.record_id,
                    r.card_number,
                    cardd_api::Fen(r.amount_fen).to_yuan_string(),
                    r.status.label(),
                    r.load_txn_id.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Recharge {
            plate,
            colour,
            amount,
            operator,
            channel,
        } => {
            let fen = cardd_api::Fen::parse_positive_yuan(&amount)
                .map_err(|e| anyhow::anyhow!("--amount {amount}: {e}"))?;
            let db = open(&config)?;
            audit(
                &db,
                "records.recharge",
                &plate,
                serde_json::json!({ "plate_colour": colour, "amount_fen": fen.0, "operator": operator, "channel": channel }),
            )?;
            let records = PgHost::new(db, Arc::new(SystemClock));
            let record = records.recharge(&plate, colour, fen.0, &operator, &channel)?;
            println!(
                "{}\t{}\t{}\t{} 元\t{}",
                record.record_id,
                record.plate,
                record.card_number,
                fen.to_yuan_string(),
                record.status.label()
            );
            Ok(())
        }
    }
}

/// Who runs this command, as the audit log names it.
fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cardd-host CLI ({user})")
}

/// The password: typed at a terminal without echo (twice, to catch a typo), or the first line
/// of standard input when it is a pipe. Never from the command line.
fn read_password() -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").context("reading the password")?;
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ; nothing was changed"
        );
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "no password given");
    Ok(password)
}

fn operators(config: &HostConfig, command: OperatorsCommand) -> Result<()> {
    let operators = cardd_store_pg::PgOperators::new(open(config)?, Arc::new(SystemClock));
    let actor = cli_actor();
    match command {
        OperatorsCommand::Add {
            role,
            group,
            display_name,
            username,
        } => {
            // `group` is the group operator's role as the help names it.
            let wire = if role == "group" {
                "group_operator"
            } else {
                role.as_str()
            };
            let Some(parsed) = cardd_api::Role::parse(wire) else {
                bail!("--role {role:?}: use teller, supervisor, auditor, admin, kiosk or group");
            };
            let password = read_password()?;
            // A host with real keys takes no guessable password from its command line; a demo
            // host (`[keys] source = "demo"`, public keys and public demo passwords) does.
            if config.keys.source != cardd_host::config::KeySource::Demo {
                if let Err(why) =
                    cardd_api::operators::check_password_strength(&password, &username)
                {
                    bail!("the password is refused: {why}; nothing was created");
                }
            }
            let created = operators.create(
                &cardd_api::operators::NewOperator {
                    display_name: display_name.unwrap_or_else(|| username.clone()),
                    username,
                    role: parsed,
                    group_id: group,
                    password,
                },
                &actor,
            )?;
            println!(
                "operator {} ({}) created at the host",
                created.username,
                created.role.as_str()
            );
        }
        OperatorsCommand::Disable { username } => {
            operators.set_disabled(&username, true, &actor)?;
            println!("operator {username} disabled at every site");
        }
        OperatorsCommand::Enable { username } => {
            operators.set_disabled(&username, false, &actor)?;
            println!("operator {username} enabled");
        }
        OperatorsCommand::ResetPassword { username } => {
            let password = read_password()?;
            operators.reset_password(&username, &password, &actor)?;
            println!("password of {username} reset");
        }
        OperatorsCommand::List => {
            for o in operators.list()? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    o.username,
                    o.role.as_str(),
                    o.group_id.unwrap_or_default(),
                    if o.disabled { "disabled" } else { "enabled" },
                    o.display_name
                );
            }
        }
    }
    Ok(())
}

/// Records a command of the host's operator in the `host` chain, before it acts.
fn audit(db: &Arc<Database>, action: &str, target: &str, detail: serde_json::Value) -> Result<()> {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    PgAudit::new(db.clone(), Arc::new(SystemClock)).append(&HostAuditEntry {
        chain: HOST_CHAIN.into(),
        actor: format!("cardd-host CLI ({user})"),
        action: action.into(),
        target: Some(target.into()),
        detail,
        outcome: "started".into(),
    })?;
    Ok(())
}

/// `check-config`: one `ok:` or `error:` line per part; nothing is started or connected to.
fn check_config(path: &std::path::Path) -> Result<()> {
    let config = match HostConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            println!("error: {e}");
            bail!("{}: the configuration cannot be used", path.display());
        }
    };
    println!(
        "ok: {}: the configuration is valid (listen {})",
        path.display(),
        config.listen
    );
    let mut errors = 0;
    let mut finding = |result: Result<String, String>| match result {
        Ok(line) => println!("ok: {line}"),
        Err(line) => {
            errors += 1;
            println!("error: {line}");
        }
    };
    finding(
        config
            .security_module()
            .map(|sam| match &config.keys.file {
                Some(file) if config.keys.source == cardd_host::config::KeySource::File => {
                    format!("keys: {} is owner-only and valid ({sam:?})", file.display())
                }
                _ => "keys: the public demo keys (simulated cards only)".to_owned(),
            })
            .map_err(|e| e.to_string()),
    );
    finding(
        cardd_fleet::host_server_config(&config.tls_files())
            .map(|_| {
                format!(
                    "TLS: CA {}, certificate {} and key {} (owner-only) are usable",
                    config.tls.ca_cert.display(),
                    config.tls.cert.display(),
                    config.tls.key.display()
                )
            })
            .map_err(|e| format!("TLS: {e}")),
    );
    // The URL's syntax only: the database is not contacted (`cardd-host migrate` does).
    finding(
        <tokio_postgres::Config as std::str::FromStr>::from_str(&config.database_url)
            .map(|c| {
                format!(
                    "database_url: a PostgreSQL URL (database {:?}, user {:?}); not connected",
                    c.get_dbname().unwrap_or("-"),
                    c.get_user().unwrap_or("-")
                )
            })
            .map_err(|e| {
                format!(
                    "database_url is not a PostgreSQL URL ({e}): write it as \
                     postgres://USER@HOST:PORT/DATABASE"
                )
            }),
    );
    if errors > 0 {
        bail!(
            "{}: {errors} error(s); fix them, then check again",
            path.display()
        );
    }
    Ok(())
}

fn open(config: &HostConfig) -> Result<Arc<Database>> {
    Ok(Arc::new(
        Database::open(&config.database_url)
            .with_context(|| "cannot open the host's database (database_url)")?,
    ))
}

fn sites(config: &HostConfig, command: SitesCommand) -> Result<()> {
    let db = open(config)?;
    let sites = PgSites::new(db.clone(), Arc::new(SystemClock));
    let site_id =
        |s: &str| -> Result<SiteId> { s.parse().map_err(|e| anyhow::anyhow!("site {s:?}: {e}")) };
    match command {
        SitesCommand::Enrol {
            site,
            cert,
            fingerprint,
        } => {
            let fingerprint: CertFingerprint = match (cert, fingerprint) {
                (Some(path), None) => {
                    use rustls::pki_types::pem::PemObject;
                    let der = rustls::pki_types::CertificateDer::from_pem_file(&path)
                        .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
                    let named = cardd_fleet::site_of_certificate(&der)?;
                    if named.as_str() != site {
                        bail!(
                            "{} is the certificate of site {named}, not {site}",
                            path.display()
                        );
                    }
                    CertFingerprint::of(&der)
                }
                (None, Some(hex)) => hex.parse()?,
                _ => {
                    bail!("give the site's certificate (--cert) or its fingerprint (--fingerprint)")
                }
            };
            audit(
                &db,
                "sites.enrol",
                &site,
                serde_json::json!({ "fingerprint": fingerprint.to_string() }),
            )?;
            sites.enrol(&site_id(&site)?, &fingerprint)?;
            println!("site {site} enrolled, certificate {fingerprint}");
        }
        SitesCommand::Disable { site } => {
            audit(&db, "sites.disable", &site, serde_json::json!({}))?;
            sites.set_enabled(&site_id(&site)?, false)?;
            println!("site {site} disabled");
        }
        SitesCommand::Enable { site } => {
            audit(&db, "sites.enable", &site, serde_json::json!({}))?;
            sites.set_enabled(&site_id(&site)?, true)?;
            println!("site {site} enabled");
        }
        SitesCommand::List => {
            for s in sites.list()? {
                // id, state, certificate, changed, last report, outbox length at that report.
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.site_id,
                    if s.enabled { "enabled" } else { "disabled" },
                    s.cert_fingerprint,
                    s.updated_at,
                    s.last_seen_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                    s.outbox_pending
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                );
            }
        }
    }
    Ok(())
}

fn serve(config: &HostConfig) -> Result<()> {
    let keys = Arc::new(config.security_module()?);
    let tls = Arc::new(cardd_fleet::host_server_config(&config.tls_files())?);
    let db = open(config)?;
    let clock = Arc::new(SystemClock);
    let records: Arc<dyn IssuerHost> = Arc::new(PgHost::new(db.clone(), clock.clone()));
    let ledger = Arc::new(PgLedger::new(db.clone(), clock.clone()));
    let (db_for_audit, clock_for_audit) = (db.clone(), clock.clone());
    let groups: Arc<dyn cardd_group::GroupHost> =
        Arc::new(cardd_store_pg::PgGroupHost::new(db.clone(), clock.clone()));
    let sites = Arc::new(PgSites::new(db.clone(), clock.clone()));
    let backoffice_stores = cardd_host::backoffice::pages::Stores {
        operators: Arc::new(cardd_store_pg::PgOperators::new(db.clone(), clock.clone())),
        audit: Arc::new(PgAudit::new(db.clone(), clock.clone())),
        groups: groups.clone(),
        ledger: ledger.clone(),
        sites: sites.clone(),
        records: records.clone(),
        review: Arc::new({
            let review = cardd_store_pg::PgReview::new(db.clone(), clock.clone());
            match config.backoffice.as_ref().and_then(|b| b.review_wait_min) {
                Some(min) => review.with_wait(std::time::Duration::from_secs(min * 60)),
                None => review,
            }
        }),
    };
    let service = Arc::new(HostService {
        tls,
        directory: sites.clone(),
        reports: Some(sites),
        authority: Arc::new(Authority::new(
            Arc::new(GatedKeys::new(keys, ledger.clone())),
            ledger,
        )),
        records,
        operators: Some(Arc::new(cardd_store_pg::PgOperators::new(
            db_for_audit.clone(),
            clock_for_audit.clone(),
        ))),
        audit: Some(Arc::new(cardd_store_pg::PgAudit::new(
            db_for_audit,
            clock_for_audit,
        ))),
        groups,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cardd-host")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "cardd-host serving the sites");
        let (stop_backoffice, backoffice_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(section) = &config.backoffice {
            let bo_listener = tokio::net::TcpListener::bind(section.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on backoffice.listen = {}", section.listen)
                })?;
            let bound = bo_listener.local_addr()?;
            let backoffice = cardd_host::backoffice::BackOffice::new(bound, backoffice_stores);
            tracing::info!(listen = %bound, "cardd-host serving the back office (后台)");
            println!("backoffice http://{bound}/");
            tokio::spawn(backoffice.serve(bo_listener, async {
                let _ = backoffice_stopped.await;
            }));
        }
        // The address, on stdout, for whoever started the host (tests, scripts).
        println!("listening {}", listener.local_addr()?);
        service
            .serve(listener, async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("cardd-host stopping");
            })
            .await;
        let _ = stop_backoffice.send(());
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
