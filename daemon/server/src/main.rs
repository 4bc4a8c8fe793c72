//! The `cardd` binary: parses the command line, sets up logging and runs the daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cardd::config::{Config, LogFormat};
use clap::Parser;

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
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if cli.list_drivers {
        let registry = cardd_drivers::registry();
        for name in registry.names() {
            let summary = registry.get(name).map(|d| d.summary()).unwrap_or_default();
            println!("{name}\t{summary}");
        }
        return Ok(());
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
    init_logging(&config);
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
        cardd::server::run(config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
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
