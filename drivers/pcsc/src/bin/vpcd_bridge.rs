//! `cardd-vpcd-bridge`: serves a simulated card to vsmartcard's vpcd, so pcscd (and any PC/SC
//! application, cardd's `pcsc` driver included) sees it in `Virtual PCD 00 00`.
//!
//! Why a binary: to try cardd against the real PC/SC stack by hand (`pcsc_scan`, `scriptor`,
//! the daemon with `driver = "pcsc"`) without a card reader. The card is kept in a JSON state
//! file when `--state-file` is given, so balances and counters survive restarts. When vpcd drops
//! the connection (pcscd restarting), the bridge reconnects every second until stopped.
//!
//! ```text
//! cardd-vpcd-bridge [--card demo-etc|demo-etc-sm4|demo-city|CARD.json] [--host 127.0.0.1]
//!                   [--port 35963] [--state-file card.json]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cardd_pcsc::vpcd::{VpcdBridge, VPCD_PORT_DEFAULT};
use cardd_sim::{CardSource, SimCard};

/// Pause between two connection attempts while vpcd is not there.
const RETRY_MS: u64 = 1_000;
/// How often the serving loop wakes to check the connection.
const CHECK_MS: u64 = 5_000;

struct Args {
    card: String,
    host: IpAddr,
    port: u16,
    state_file: Option<PathBuf>,
}

const USAGE: &str = "usage: cardd-vpcd-bridge [--card demo-etc|demo-etc-sm4|demo-city|CARD.json] [--host 127.0.0.1] [--port 35963] [--state-file PATH]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        card: "demo-etc".into(),
        host: IpAddr::from([127, 0, 0, 1]),
        port: VPCD_PORT_DEFAULT,
        state_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--card" => args.card = value,
            "--host" => {
                args.host = value
                    .parse()
                    .map_err(|_| format!("--host {value:?} is not an IP address"))?
            }
            "--port" => {
                args.port = value
                    .parse()
                    .map_err(|_| format!("--port {value:?} is not a port number"))?
            }
            "--state-file" => args.state_file = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The card to serve: the state file when it exists, else `--card`.
fn load_card(args: &Args) -> Result<SimCard, String> {
    if let Some(path) = &args.state_file {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            return SimCard::from_json(&text)
                .map_err(|e| format!("{} is not a saved card: {e}", path.display()));
        }
    }
    let source = match serde_json::from_value::<CardSource>(serde_json::json!(args.card)) {
        Ok(source) => source,
        Err(_) => CardSource::JsonFile(PathBuf::from(&args.card)),
    };
    source
        .load()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "--card none serves no card".to_owned())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let card = match load_card(&args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("cardd-vpcd-bridge: {message}");
            return ExitCode::FAILURE;
        }
    };
    let number = card.card_number();
    let mut bridge = VpcdBridge::new(card).with_addr(SocketAddr::new(args.host, args.port));
    if let Some(path) = &args.state_file {
        bridge = bridge.with_state_file(path);
    }
    loop {
        match bridge.insert() {
            Ok(()) => {
                eprintln!(
                    "cardd-vpcd-bridge: card {number} inserted in vpcd at {}",
                    bridge.addr()
                );
                while !bridge.wait_until_out(Duration::from_millis(CHECK_MS)) {}
                let why = bridge.stats().last_end.unwrap_or_default();
                eprintln!("cardd-vpcd-bridge: card out ({why}); reconnecting");
            }
            Err(e) => eprintln!("cardd-vpcd-bridge: {e}; retrying"),
        }
        if let Some(e) = bridge.save_error() {
            eprintln!("cardd-vpcd-bridge: the card could not be saved: {e}");
        }
        bridge.remove();
        std::thread::sleep(Duration::from_millis(RETRY_MS));
    }
}
