//! The `cardd` binary: parses the command line, sets up logging and runs the daemon.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cardd::config::{Config, LogFormat};
use cardd::log_ring::LogRing;
use cardd_api::Role;
use clap::{Parser, Subcommand};

/// cardd: the card-reader daemon for loading money onto ETC and city one-cards.
#[derive(Debug, Parser)]
#[command(name = "cardd", version, about)]
struct Cli {
    /// Configuration file (TOML); see docs/config.md.
    #[arg(long, value_name = "FILE", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Run the embedded default: simulated readers and cards, demo keys, demo operators and data.
    #[arg(long)]
    demo: bool,
    /// With --demo: where to keep the demo database.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".cardd-data",
        requires = "demo"
    )]
    data_dir: PathBuf,
    /// Override the listening address (loopback only unless the configuration allows otherwise).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Log format: human or json (overrides the configuration).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// List the compiled-in reader drivers and exit.
    #[arg(long)]
    list_drivers: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The configuration file of the subcommands when `--config` is not given (the package's).
const DEFAULT_CONFIG: &str = "/etc/cardd/cardd.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a configuration without starting anything or opening the database: every value,
    /// the key file (present, owner-only, valid), fleet certificates, the data directory and
    /// the readers' options. One line per finding; exits 1 when any is an error.
    CheckConfig {
        /// The file to check (default: --config, else /etc/cardd/cardd.toml).
        file: Option<PathBuf>,
    },
    /// Operator accounts, on the data directory of --config while the daemon is stopped.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// Writes a support bundle (a .tar.gz): version, configuration without secrets, readers,
    /// recent logs, metrics, journal and audit statistics, open loads with masked card numbers.
    /// Never keys, passwords, tokens or full card numbers. Works with the daemon running (run
    /// it as the daemon's user or root) or stopped.
    SupportBundle {
        /// The file to write (must not exist), e.g. cardd-support.tar.gz.
        out: PathBuf,
    },
    /// Makes a backup of the data directory of --config: a copy of one moment with a
    /// manifest. With the daemon running, the daemon makes it (DEST must be writable by its
    /// user; the default is inside the data directory, in backups/); with it stopped, this
    /// command does.
    Backup {
        /// A new or empty directory (default: <data_dir>/backups/backup-<UTC time>).
        dest: Option<PathBuf>,
    },
    /// Restores a backup into the data directory of --config. The daemon must be stopped.
    /// Refuses to replace data newer than the backup unless --force; the replaced data is kept
    /// in <data_dir>/backups/. The daemon then starts in restored mode: every card is checked
    /// against its own transaction log before a record the backup shows unloaded is loaded.
    Restore {
        /// A directory `cardd backup` made.
        src: PathBuf,
        /// Replace data newer than the backup.
        #[arg(long)]
        force: bool,
    },
    /// Runs the driver conformance kit against a reader: a plugin program (--plugin COMMAND
    /// [ARGS...], no configuration needed) or a reader of --config (--reader ID). A plugin
    /// announcing test_hooks has its simulated card moved for it; with any other reader a
    /// person is asked to remove and put back the card (请移走卡片 / 请放回卡片), each step
    /// bounded by --step-timeout-s. One line (or JSON entry) per check. Exit 0: every check
    /// passed or was skipped; 1: a check failed; 2: the kit could not run.
    Conformance(ConformanceArgs),
}

#[derive(Debug, clap::Args)]
struct ConformanceArgs {
    /// The configuration whose `[[readers]]` hold the reader to test (with --reader; default
    /// /etc/cardd/cardd.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: the cardd reader id to test (as readers.list shows it). With --plugin:
    /// the plugin's own reader id (default: the first reader it lists).
    #[arg(long, value_name = "ID")]
    reader: Option<String>,
    /// How long a guided step (请移走卡片 / 请放回卡片) waits for the card to move.
    #[arg(long, value_name = "SECONDS", default_value_t = cardd_conformance::STEP_TIMEOUT_S_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    step_timeout_s: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Test a plugin program without a configuration: its command and arguments, e.g.
    /// `--plugin python3 my_plugin.py`. Put it last: everything after it belongs to the plugin.
    #[arg(long, value_name = "COMMAND", num_args = 1.., allow_hyphen_values = true)]
    plugin: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
enum OperatorsCommand {
    /// Creates an operator (the first administrator of a new install). The password is read
    /// from the terminal, or from the first line of standard input; never from the command line.
    Add {
        /// teller, supervisor, auditor, admin, kiosk or group.
        #[arg(long)]
        role: String,
        /// The name shown in the console and the records (default: the user name).
        #[arg(long)]
        display_name: Option<String>,
        /// With --role group: the group the operator belongs to.
        #[arg(long)]
        group: Option<String>,
        /// The user name.
        username: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Conformance(args)) = &cli.command {
        return conformance(args.config.as_deref().or(cli.config.as_deref()), args);
    }
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if cli.list_drivers {
        let registry = cardd_drivers::registry();
        for name in registry.names() {
            let summary = registry.get(name).map(|d| d.summary()).unwrap_or_default();
            println!("{name}\t{summary}");
        }
        return Ok(());
    }
    // Subcommands work on --config, by default the package's /etc/cardd/cardd.toml.
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match &cli.command {
        Some(Command::Operators { command }) => {
            return operators(&Config::load(&config_path)?, command)
        }
        Some(Command::CheckConfig { file }) => {
            return check_config(file.as_deref().unwrap_or(&config_path))
        }
        // The daemon itself, and any other subcommand, below.
        _ => {}
    }
    // Backups and restores also work on the embedded default's data directory (--demo).
    let subcommand_config = || -> Result<Config> {
        if cli.demo {
            Ok(Config::demo(cli.data_dir.clone()))
        } else {
            Ok(Config::load(&config_path)?)
        }
    };
    match &cli.command {
        Some(Command::Backup { dest }) => return backup(&subcommand_config()?, dest.as_deref()),
        Some(Command::Restore { src, force }) => {
            return restore(&subcommand_config()?, src, *force)
        }
        Some(Command::SupportBundle { out }) => return support_bundle(&config_path, out),
        _ => {}
    }
    let mut config = match (&cli.config, cli.demo) {
        (Some(path), _) => Config::load(path)?,
        (None, true) => Config::demo(cli.data_dir.clone()),
        (None, false) => {
            anyhow::bail!("give --config FILE, or --demo for the embedded default (see README.md)")
        }
    };
    if let Some(format) = &cli.log_format {
        config.log_format = match format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => anyhow::bail!("--log-format {other:?}: use human or json"),
        };
    }
    if let Some(listen) = &cli.listen {
        let addr: std::net::SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen:?} is not address:port"))?;
        anyhow::ensure!(
            addr.ip().is_loopback() || config.source != "--demo",
            "--listen {addr}: the demo listens on loopback only"
        );
        config.listen = addr;
    }
    let logs = init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind(config.listen).with_context(|| {
            format!(
                "cannot listen on {} (is another cardd running?)",
                config.listen
            )
        })?;
        listener.set_nonblocking(true)?;
        cardd::server::run(config, listener, Some(logs), shutdown_signal()).await?;
        Ok(())
    })
}

/// `cardd conformance`: prints the report (text or JSON) on stdout, prompts and logs on stderr.
fn conformance(config: Option<&Path>, args: &ConformanceArgs) -> std::process::ExitCode {
    use cardd::conformance::{self as kit, Subject};
    use std::process::ExitCode;
    // The plugin's log lines and the driver's warnings go to stderr, apart from the report.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,cardd_plugin=info")),
        )
        .try_init();
    let subject = match (&args.plugin, config, &args.reader) {
        (Some(command), None, reader) => Ok(Subject::Plugin {
            command: command.clone(),
            reader: reader.clone(),
        }),
        (None, path, Some(reader)) => Config::load(path.unwrap_or(Path::new(DEFAULT_CONFIG)))
            .map(|config| Subject::Configured {
                config: Box::new(config),
                reader: reader.clone(),
            })
            .map_err(|e| e.to_string()),
        (Some(_), Some(_), _) => Err("give either --plugin or --config, not both".to_owned()),
        (None, _, None) => Err(
            "give --plugin COMMAND [ARGS...] to test a plugin, or --reader ID (with --config FILE, \
             default /etc/cardd/cardd.toml) to test a configured reader"
                .into(),
        ),
    };
    let report = subject.and_then(|subject| {
        kit::run_subject(
            &subject,
            std::time::Duration::from_secs(args.step_timeout_s),
            Box::new(|line: &str| eprintln!(">>> {line}")),
        )
        .map_err(|e| e.to_string())
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cardd conformance: {e}");
            return ExitCode::from(kit::EXIT_ERROR);
        }
    };
    if args.json {
        println!("{:#}", kit::report_json(&report));
    } else {
        println!("{report}");
    }
    if report.passed_all() {
        ExitCode::from(kit::EXIT_PASSED)
    } else {
        ExitCode::from(kit::EXIT_FAILED)
    }
}

/// Prints one line per finding; fails (exit 1) when any finding is an error.
fn check_config(path: &std::path::Path) -> Result<()> {
    let report = cardd::check::check_config(path);
    for finding in &report.findings {
        println!("{finding}");
    }
    use cardd::check::Level;
    if report.passed() {
        return Ok(());
    }
    anyhow::bail!(
        "{}: {} error(s), {} warning(s); fix the errors above, then check again",
        path.display(),
        report.count(Level::Error),
        report.count(Level::Warning)
    )
}

fn operators(config: &Config, command: &OperatorsCommand) -> Result<()> {
    let OperatorsCommand::Add {
        role,
        display_name,
        group,
        username,
    } = command;
    // `group` is the group operator's role as the help names it (`group_operator` as stored).
    let stored = if role == "group" {
        "group_operator".to_owned()
    } else {
        role.clone()
    };
    let role: Role = serde_json::from_value(serde_json::Value::String(stored)).map_err(|_| {
        anyhow::anyhow!("--role {role:?}: use teller, supervisor, auditor, admin, kiosk or group")
    })?;
    let password = read_password()?;
    let created = cardd::server::add_operator_offline(
        config,
        cardd_api::operators::NewOperator {
            username: username.clone(),
            display_name: display_name.clone().unwrap_or_else(|| username.clone()),
            role,
            group_id: group.clone(),
            password,
        },
    )?;
    cardd::datadir::hand_back(&config.data_dir)?;
    println!(
        "operator {} ({}) created in {}",
        created.username,
        created.role.as_str(),
        config.data_dir.display()
    );
    Ok(())
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

/// Logs to standard error (human or JSON) and keeps the recent lines in memory for the control
/// socket's `logs` request (`cardd support-bundle`).
fn init_logging(config: &Config) -> LogRing {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let ring = LogRing::new();
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ring.layer());
    match config.log_format {
        LogFormat::Json => registry.with(output.json()).init(),
        LogFormat::Human => registry.with(output).init(),
    }
    ring
}

/// `cardd backup [DEST]`: asks the running daemon, or makes the backup itself when the daemon
/// is stopped.
fn backup(config: &Config, dest: Option<&Path>) -> Result<()> {
    let dest = match dest {
        Some(dest) => std::path::absolute(dest)
            .with_context(|| format!("the backup directory {}", dest.display()))?,
        None => std::path::absolute(&config.data_dir)?
            .join(cardd::datadir::BACKUPS_DIR)
            .join(format!("backup-{}", cardd::datadir::stamp())),
    };
    let socket = cardd::control::socket_path(&config.data_dir);
    let request = cardd::control::Request::Backup { dest: dest.clone() };
    let (manifest, by) = match cardd::control::call(&socket, &request) {
        Ok(value) => (
            serde_json::from_value::<cardd::backup::Manifest>(value)
                .context("the daemon's answer is not a backup manifest")?,
            "the running daemon",
        ),
        Err(cardd::control::ControlError::NotRunning(_)) => {
            let store = cardd::server::open_store_offline(config)?;
            let manifest = cardd::backup::make_backup(&store, &dest, cardd::datadir::DATA_FORMAT)?;
            drop(store);
            cardd::datadir::hand_back(&config.data_dir)?;
            (manifest, "this command (the daemon is stopped)")
        }
        Err(e) => return Err(e).context("asking the running daemon for a backup"),
    };
    println!(
        "backup made by {by} in {}: {} load transactions ({} open), {} audit records, {} bytes",
        dest.display(),
        manifest.journal.transactions,
        manifest.journal.open,
        manifest.audit.records,
        manifest.bytes
    );
    println!(
        "restore it (the daemon stopped) with: cardd restore {}",
        dest.display()
    );
    Ok(())
}

/// `cardd restore SRC [--force]`, the daemon stopped.
fn restore(config: &Config, src: &Path, force: bool) -> Result<()> {
    let socket = cardd::control::socket_path(&config.data_dir);
    if cardd::control::call(&socket, &cardd::control::Request::Status {}).is_ok() {
        anyhow::bail!(
            "cardd is running on {}: stop it first (systemctl stop cardd); nothing was changed",
            config.data_dir.display()
        );
    }
    let report = cardd::restore::restore(&config.data_dir, src, force, config.fleet.is_some())?;
    cardd::datadir::hand_back(&config.data_dir)?;
    println!(
        "restored the backup made at {} into {}",
        report.backup_created_at,
        config.data_dir.display()
    );
    if let Some(kept) = &report.replaced_to {
        println!("the data it replaced is kept in {}", kept.display());
    }
    println!(
        "restored mode: before any of the {} recharge records the backup shows as not loaded is \
         loaded, its card's own log is checked for a load made after the backup \
         (journal.restored lists them). Start cardd now.",
        report.suspects
    );
    Ok(())
}

/// `cardd support-bundle OUT`: writes the bundle and says what is in it.
fn support_bundle(config: &Path, out: &Path) -> Result<()> {
    let report = cardd::bundle::write(config, out)?;
    // Run as root on a stopped daemon, the store was opened by root: give it back.
    if let Ok(loaded) = Config::load(config) {
        cardd::datadir::hand_back(&loaded.data_dir)?;
    }
    println!(
        "support bundle written to {} ({} bytes); the daemon was {}",
        report.path.display(),
        report.bytes,
        report.daemon
    );
    for (name, bytes) in &report.files {
        println!("  {name} ({bytes} bytes)");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "it holds no keys, passwords, tokens or full card numbers; check it before sending it"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
