//! `cardd support-bundle` on a real install (real `cardd` processes, a key file, an ETC PIN,
//! an operator, an open load): made with the daemon running (through its control socket) and
//! again with it stopped (its data directory read offline), each bundle holds every file it
//! should and none of the secrets: not the key bytes, the PIN, the password, the session token
//! or a full card number; the open load shows its card's last four digits only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::processes::{binary, run};
use crate::single::{rpc, write_key_file, Daemon, KEYS_HEX};

/// 11 digits: too short for the card-number masking, so only the configuration's redaction
/// keeps it out.
const ETC_PIN: &str = "97531864208";
const PASSWORD: &str = "Qv7#pL2!zX9m-bundle";
/// The demo ETC card in `sim:etc`.
const SIM_CARD: &str = "61011801000000000001";
/// The card of the open load written before the daemon starts.
const OPEN_CARD: &str = "61011801000000007777";
const OPEN_CARD_MASKED: &str = "****************7777";

const FILES: [&str; 9] = [
    "README.txt",
    "version.txt",
    "config.toml",
    "readers.json",
    "logs.txt",
    "metrics.txt",
    "health.json",
    "journal.json",
    "open_loads.json",
];

/// Writes an open load (an intent whose card never came back) for [`OPEN_CARD`] into the
/// stopped daemon's journal.
fn write_open_load(config: &Path) -> Result<()> {
    let config = cardd::config::Config::load(config)?;
    let store = cardd::server::open_store_offline(&config)?;
    let journal = cardd_journal::Journal::open(&store)?;
    let session = cardd_purse::LoadSession {
        plan: cardd_purse::LoadPlan {
            card: cardd_purse::CardKeyContext {
                scheme: cardd_purse::KeyScheme::Etc,
                algorithm: cardd_crypto::Algorithm::Tdes,
                issuer4: [0x61, 0x01, 0x61, 0x01],
                card8: [0x18, 0x01, 0, 0, 0, 0, 0x77, 0x77],
            },
            key_index: 1,
            terms: cardd_purse::LoadTerms {
                amount: 2_050,
                terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                date: [0x20, 0x26, 0x12, 0x07],
                time: [0x12, 0x00, 0x00],
            },
        },
        init: cardd_purse::InitLoadResponse {
            old_balance: 10_000,
            online_atc: 3,
            key_version: 1,
            alg_id: 0,
            random: [1, 2, 3, 4],
            mac1: [5, 6, 7, 8],
        },
        mac2: [9, 10, 11, 12],
    };
    let mut txn = cardd_journal::LoadTxn::intent("bundle-open-1", OPEN_CARD, "sim:etc", session);
    txn.funding = Some(cardd_purse::Funding::EtcRecord {
        record_id: "R-BUNDLE-1".into(),
    });
    journal.record_intent(&txn)?;
    Ok(())
}

/// Runs `cardd support-bundle` into `dir/name`, unpacks it into `dir/<name>.d`: the unpacked
/// directory and what the command printed.
fn bundle(config: &Path, dir: &Path, name: &str) -> Result<(PathBuf, String)> {
    let out = dir.join(name);
    let mut command = Command::new(binary("cardd"));
    command
        .arg("--config")
        .arg(config)
        .arg("support-bundle")
        .arg(&out);
    let printed = run(command, None)?;
    ensure!(
        printed.contains(&out.display().to_string()),
        "says where: {printed}"
    );
    let unpacked = dir.join(format!("{name}.d"));
    std::fs::create_dir(&unpacked)?;
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&out)
        .arg("-C")
        .arg(&unpacked)
        .status()?;
    ensure!(tar.success(), "tar -xzf {}", out.display());
    Ok((unpacked.join("cardd-support"), printed))
}

/// Every expected file is there and not empty, and no file holds a secret or a key (in any of
/// the encodings [`crate::keysearch`] knows).
fn check_bundle(dir: &Path, secrets: &[String]) -> Result<()> {
    let keys: Vec<Vec<u8>> = KEYS_HEX.iter().map(hex::decode).collect::<Result<_, _>>()?;
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let hits = crate::keysearch::find_key_material(dir, &keys)?;
    ensure!(hits.is_empty(), "key material in the bundle: {hits:?}");
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    let mut expected: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    expected.sort();
    ensure!(names == expected, "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name))?;
        ensure!(!text.trim().is_empty(), "{name} is empty");
        for secret in secrets {
            ensure!(
                !text.contains(secret.as_str()),
                "{name} holds {secret:?}:\n{text}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_support_bundle_holds_what_support_needs_and_no_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = cardd_fleet_launch::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = dir.path().join("data");
    let keys = dir.path().join("keys.toml");
    write_key_file(&keys)?;
    let config = dir.path().join("cardd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n\n[data]\ndir = {data:?}\n\n\
             [keys]\nsource = \"file\"\nfile = {keys:?}\n\n[cards]\netc_pin = \"{ETC_PIN}\"\n\n\
             [[readers]]\ndriver = \"sim\"\n[readers.options]\n\
             [[readers.options.readers]]\nid = \"etc\"\nkind = \"contact\"\ncard = \"demo-etc\"\n"
        ),
    )?;
    let log = dir.path().join("cardd.log");
    let mut add = Command::new(binary("cardd"));
    add.arg("--config")
        .arg(&config)
        .args(["operators", "add", "--role", "admin", "boss"]);
    run(add, Some(&format!("{PASSWORD}\n"))).context("the administrator")?;
    write_open_load(&config)?;

    let daemon = Daemon::start(&config, &log, addr)?;
    let socket = data.join("control.sock");
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(&socket).context("the control socket")?;
        ensure!(meta.file_type().is_socket());
        ensure!(
            meta.permissions().mode() & 0o777 == 0o600,
            "{:o}",
            meta.permissions().mode()
        );
    }
    let login = rpc(
        addr,
        "auth.login",
        json!({"username": "boss", "password": PASSWORD}),
        None,
    )?;
    let token = login["result"]["token"]
        .as_str()
        .with_context(|| format!("{login}"))?
        .to_owned();
    let readers = rpc(addr, "readers.list", json!({}), Some(&token))?;
    ensure!(readers.get("result").is_some(), "{readers}");

    let mut secrets: Vec<String> = vec![
        ETC_PIN.into(),
        PASSWORD.into(),
        token.clone(),
        SIM_CARD.into(),
        OPEN_CARD.into(),
    ];
    for key in KEYS_HEX {
        secrets.push(key.to_uppercase());
        secrets.push(key.to_lowercase());
    }

    let (running, printed) = bundle(&config, dir.path(), "running.tar.gz")?;
    ensure!(printed.contains("the daemon was running"), "{printed}");
    check_bundle(&running, &secrets)?;
    let live: Value =
        serde_json::from_str(&std::fs::read_to_string(running.join("readers.json"))?)?;
    ensure!(live["live"][0]["id"] == "sim:etc", "{live}");
    ensure!(live["live"][0]["card_present"] == true, "{live}");
    let metrics = std::fs::read_to_string(running.join("metrics.txt"))?;
    ensure!(metrics.contains("# EOF"), "OpenMetrics text: {metrics}");
    let logs = std::fs::read_to_string(running.join("logs.txt"))?;
    ensure!(
        logs.contains("control socket ready"),
        "the ring's lines: {logs}"
    );

    daemon.stop()?;
    ensure!(
        !socket.exists(),
        "the control socket is removed at shutdown"
    );
    let (stopped, printed) = bundle(&config, dir.path(), "stopped.tar.gz")?;
    ensure!(printed.contains("the daemon was stopped"), "{printed}");
    check_bundle(&stopped, &secrets)?;
    let logs = std::fs::read_to_string(stopped.join("logs.txt"))?;
    ensure!(logs.contains("journalctl -u cardd"), "{logs}");

    for bundle in [&running, &stopped] {
        let open: Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("open_loads.json"))?)?;
        let load = &open["open_loads"][0];
        ensure!(load["card_number"] == OPEN_CARD_MASKED, "{open}");
        ensure!(load["amount"] == "20.50", "{open}");
        ensure!(load["state"] == "intent", "{open}");
        ensure!(load["funding"] == "etc_record", "{open}");
        let journal: Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("journal.json"))?)?;
        ensure!(journal["journal"]["stats"]["open"] == 1, "{journal}");
        ensure!(journal["audit"]["chain_verified"] == true, "{journal}");
        ensure!(journal["audit"]["records"].as_u64() > Some(0), "{journal}");
        let config = std::fs::read_to_string(bundle.join("config.toml"))?;
        ensure!(config.contains("<removed>"), "{config}");
        ensure!(config.contains(&keys.display().to_string()), "{config}");
    }
    Ok(())
}
