//! `cargo xtask package [--check]`: the Debian package, and its check.
//!
//! [`build`] compiles the release binaries (`cargo build --release -p cardd -p cardctl -p
//! cardd-host`) and assembles `target/debian/cardd_VERSION_ARCH.deb` with `dpkg-deb --build
//! --root-owner-group` from the files in `packaging/` (the configurations, the systemd units,
//! the maintainer scripts, the copyright file), the README and the Lua flows. xtask writes
//! `DEBIAN/control` itself: the version is the workspace's, the architecture
//! `dpkg --print-architecture`'s, `Depends` the Debian packages owning the shared libraries the
//! binaries link (`ldd`, then `dpkg -S`) plus `passwd` (postinst's `useradd`), `Recommends:
//! pcscd`. `DEBIAN/conffiles` lists the two configurations, `DEBIAN/md5sums` every file.
//!
//! `cargo xtask test` packages the debug binaries it has just built and tested instead
//! ([`Profile::Check`]: debug info stripped, gzip, in `target/debian-check/`), so that the
//! suite does not pay for a release build; the package's files, scripts and checks are the
//! same.
//!
//! [`check`] (`--check`, a step of `cargo xtask test`) reads the package back (`dpkg-deb -c`,
//! `-I`) and asserts its paths, modes, control fields and conffiles; then, as root only, installs
//! it, verifies the units with `systemd-analyze verify`, puts a key file of random keys in place
//! (no key generation command exists for a site: the issuer provides the file, docs/keys.md),
//! runs `cardd check-config` and the daemon as the `cardd` user, asks `/health`, creates the
//! first administrator with `cardd operators add`, logs in with `auth.login`, stops the daemon
//! with SIGTERM, removes the package (data and configuration kept), purges it (data still kept)
//! and cleans up what it created, so that a second run starts from the same state. A machine
//! with a cardd installation of its own is left alone: the install part is skipped with a
//! message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The package's name (also its user, group, configuration and state directories).
const PACKAGE: &str = "cardd";
/// The binaries the package installs in /usr/bin, with their cargo packages.
const BINARIES: &[&str] = &["cardd", "cardctl", "cardd-host"];
/// The configuration files: dpkg conffiles, never overwritten once changed.
const CONFFILES: &[&str] = &["/etc/cardd/cardd.toml", "/etc/cardd/cardd-host.toml"];
/// The systemd units.
const UNITS: &[&str] = &["cardd.service", "cardd-host.service"];
/// Where the units go (Debian bookworm's unit directory for packages).
const UNIT_DIR: &str = "lib/systemd/system";
/// Where the Lua flows go (`[flows] dir` of the packaged configuration).
const FLOWS_DIR: &str = "usr/share/cardd/scripts";
/// The template plugin a reader vendor copies, with the protocol it speaks (`cardd conformance
/// --plugin python3 /usr/share/cardd/plugin-template/plugin.py` passes on an installed system).
const PLUGIN_TEMPLATE_DIR: &str = "usr/share/cardd/plugin-template";
/// What goes there, relative to drivers/plugin.
const PLUGIN_TEMPLATE_FILES: &[&str] = &[
    "template/plugin.py",
    "template/cardd_plugin.py",
    "template/sdk_stub.py",
    "template/test_hooks.py",
    "PROTOCOL.md",
    "README.md",
];
/// The maintainer scripts.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];
/// The packaged daemon's address (`[server] listen` of packaging/cardd.toml).
const LISTEN: &str = "127.0.0.1:7420";
/// The data directory the package creates.
const DATA_DIR: &str = "/var/lib/cardd";
/// The key file the packaged configuration names.
const KEY_FILE: &str = "/etc/cardd/keys.toml";
/// Written by the check next to the data directory it created: a later run may clean up a
/// data directory that carries it, and only such a one.
const MARKER: &str = "/var/lib/cardd.xtask-package-check";
/// How long the daemon may take to answer `/health` after it was started.
const START_WAIT_MS: u64 = 30_000;
/// How long the daemon may take to exit after SIGTERM.
const STOP_WAIT_MS: u64 = 30_000;
/// Pause between two polls while waiting for the daemon.
const POLL_EVERY_MS: u64 = 100;
/// Largest HTTP answer read from the daemon.
const HTTP_ANSWER_BYTES_MAX: u64 = 1024 * 1024;
/// The administrator the check creates, and its password (a throw-away installation).
const ADMIN: &str = "pkgcheck";
const ADMIN_PASSWORD: &str = "Pkg-check-9b7Q-cardd";

/// Which binaries a package holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The release binaries, built here: the package to install.
    Release,
    /// The debug binaries `cargo xtask test` built (`cargo build -p cardd -p cardctl -p
    /// cardd-host`), stripped of debug info: the package the test command checks.
    Check,
}

/// `cargo xtask package [--check] [--debug]`.
pub fn run(root: &Path, target: &Path, args: &[String]) -> Result<()> {
    let mut check_too = false;
    let mut profile = Profile::Release;
    for arg in args {
        match arg.as_str() {
            "--check" => check_too = true,
            // The debug binaries already built (`cargo build -p cardd -p cardctl -p
            // cardd-host`): a quick check of the packaging, not a package to install.
            "--debug" => profile = Profile::Check,
            _ => bail!("usage: cargo xtask package [--check] [--debug]"),
        }
    }
    let deb = build(root, target, profile)?;
    if check_too {
        check(root, &deb)?;
    }
    Ok(())
}

/// Builds the binaries of `profile` (the release build; [`Profile::Check`] uses what is built)
/// and the .deb; returns the .deb's path.
pub fn build(root: &Path, target: &Path, profile: Profile) -> Result<PathBuf> {
    let started = Instant::now();
    if profile == Profile::Release {
        let mut cargo = super::cargo();
        cargo
            .current_dir(root)
            .args(["build", "--release", "--locked"])
            .stdin(Stdio::null());
        for binary in BINARIES {
            cargo.args(["-p", binary]);
        }
        super::run_checked(cargo, "cargo build --release (the package's binaries)")?;
    }
    let built_s = started.elapsed().as_secs_f64();

    let version = workspace_version(root)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("{PACKAGE}_{version}_{arch}");
    let out_dir = target.join(match profile {
        Profile::Release => "debian",
        Profile::Check => "debian-check",
    });
    let stage = out_dir.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("{}", stage.display()))?;
    }
    let release = target.join(match profile {
        Profile::Release => "release",
        Profile::Check => "debug",
    });
    let packaging = root.join("packaging");
    for binary in BINARIES {
        let to = stage.join("usr/bin").join(binary);
        install(&release.join(binary), &to, 0o755)?;
        if profile == Profile::Check {
            let mut strip = Command::new("strip");
            strip.arg("--strip-debug").arg(&to);
            super::run_checked(
                strip,
                "strip --strip-debug (the checked package's binaries)",
            )?;
        }
    }
    for conf in CONFFILES {
        let file = Path::new(conf).file_name().context("conffile name")?;
        install(&packaging.join(file), &stage.join(&conf[1..]), 0o644)?;
    }
    for unit in UNITS {
        install(
            &packaging.join(unit),
            &stage.join(UNIT_DIR).join(unit),
            0o644,
        )?;
    }
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    install(&packaging.join("copyright"), &doc.join("copyright"), 0o644)?;
    let mut flows: Vec<PathBuf> = std::fs::read_dir(root.join("scripts"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    flows.retain(|p| p.extension().is_some_and(|x| x == "lua"));
    flows.sort();
    ensure!(!flows.is_empty(), "scripts/ holds no *.lua flow");
    for flow in &flows {
        let file = flow.file_name().context("flow name")?;
        install(flow, &stage.join(FLOWS_DIR).join(file), 0o644)?;
    }
    for file in PLUGIN_TEMPLATE_FILES {
        let from = root.join("drivers/plugin").join(file);
        let name = Path::new(file).file_name().context("template file name")?;
        let mode = if *file == "template/plugin.py" {
            0o755
        } else {
            0o644
        };
        install(&from, &stage.join(PLUGIN_TEMPLATE_DIR).join(name), mode)?;
    }

    let control_dir = stage.join("DEBIAN");
    for script in SCRIPTS {
        install(&packaging.join(script), &control_dir.join(script), 0o755)?;
    }
    let conffiles: String = CONFFILES.iter().map(|c| format!("{c}\n")).collect();
    write(&control_dir.join("conffiles"), &conffiles, 0o644)?;
    let mut files = Vec::new();
    walk(&stage, &mut files)?;
    files.retain(|f| !f.starts_with(&control_dir));
    files.sort();
    let mut md5sums = String::new();
    let mut size_bytes = 0u64;
    for file in &files {
        let relative = file.strip_prefix(&stage)?.display().to_string();
        let sum = output(Command::new("md5sum").arg(file))?;
        let sum = sum.split_whitespace().next().context("md5sum's output")?;
        md5sums.push_str(&format!("{sum}  {relative}\n"));
        size_bytes += std::fs::metadata(file)?.len();
    }
    write(&control_dir.join("md5sums"), &md5sums, 0o644)?;
    let binaries: Vec<PathBuf> = BINARIES.iter().map(|b| release.join(b)).collect();
    let depends = depends(&binaries)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: cardd maintainers <cardd@example.invalid>\n\
         Installed-Size: {}\n\
         Depends: {}\n\
         Recommends: pcscd\n\
         Suggests: pcsc-tools, postgresql\n\
         Section: misc\n\
         Priority: optional\n\
         Homepage: https://example.invalid/cardd\n\
         Description: card-reader daemon for ETC and city one-card loads\n \
         cardd drives PC/SC readers and serial OBU programmers, loads money onto ETC user\n \
         cards and city one-cards (圈存) and serves the teller console and the kiosk screen\n \
         on loopback. cardd-host is a fleet's central issuer host; cardctl the command line.\n",
        size_bytes.div_ceil(1024),
        depends.join(", ")
    );
    write(&control_dir.join("control"), &control, 0o644)?;

    let deb = out_dir.join(format!("{name}.deb"));
    let mut dpkg_deb = Command::new("dpkg-deb");
    if profile == Profile::Check {
        // Checked, then thrown away: fast compression.
        dpkg_deb.args(["-Zgzip", "-z1"]);
    }
    dpkg_deb
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb)
        .stdout(Stdio::null());
    super::run_checked(dpkg_deb, "dpkg-deb --build")?;
    let deb_bytes = std::fs::metadata(&deb)?.len();
    println!(
        "xtask: built {} ({} KiB; release build {built_s:.1} s, whole package {:.1} s)",
        deb.display(),
        deb_bytes / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// The workspace's `version` (`[workspace.package]` of the root Cargo.toml).
fn workspace_version(root: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(value) = line.strip_prefix("version") {
                let value = value.trim_start().trim_start_matches('=').trim();
                return Ok(value.trim_matches('"').to_owned());
            }
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// The Debian packages owning the shared libraries `binaries` link, plus `passwd`.
fn depends(binaries: &[PathBuf]) -> Result<Vec<String>> {
    let mut packages = vec!["passwd".to_owned()];
    for binary in binaries {
        let ldd = output(Command::new("ldd").arg(binary))?;
        for line in ldd.lines() {
            // "libpcsclite.so.1 => /lib/x86_64-linux-gnu/libpcsclite.so.1 (0x…)"
            let Some(path) = line.split("=> ").nth(1).and_then(|r| r.split(' ').next()) else {
                continue;
            };
            let owner = Command::new("dpkg").args(["-S", path]).output()?;
            let owner = if owner.status.success() {
                String::from_utf8_lossy(&owner.stdout).into_owned()
            } else {
                // usrmerge: dpkg knows /lib/… where ldd says /usr/lib/… (or the other way).
                let other = match path.strip_prefix("/usr") {
                    Some(rest) => rest.to_owned(),
                    None => format!("/usr{path}"),
                };
                output(Command::new("dpkg").args(["-S", &other]))
                    .with_context(|| format!("which package holds {path} ({})", binary.display()))?
            };
            // "libpcsclite1:amd64: /lib/x86_64-linux-gnu/libpcsclite.so.1"
            let package = owner
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            ensure!(!package.is_empty(), "dpkg -S {path}: no package");
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    packages.sort();
    Ok(packages)
}

/// Checks the package at `deb`: its contents, then (as root) an install, a start and a removal.
pub fn check(root: &Path, deb: &Path) -> Result<()> {
    let started = Instant::now();
    check_contents(deb)?;
    if !is_root()? {
        println!(
            "xtask: package check: SKIPPED the install part (dpkg -i, the daemon as user cardd, \
             dpkg -r/--purge): it needs root; run `cargo xtask package --check` as root"
        );
        return Ok(());
    }
    let found = if dpkg_known(PACKAGE)? {
        Some("the package cardd")
    } else {
        [DATA_DIR, "/etc/cardd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
    };
    if let (Some(found), false) = (found, Path::new(MARKER).exists()) {
        println!(
            "xtask: package check: SKIPPED the install part: this machine has a cardd \
             installation ({found}) the check did not create; it is left alone"
        );
        return Ok(());
    }
    // A previous run that failed half-way: start from a clean machine.
    clean_up()?;
    let result = install_and_run(root, deb);
    let cleaned = clean_up();
    result?;
    cleaned?;
    println!(
        "xtask: package check: ok ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `dpkg-deb -c` and `-I`: the paths, modes, control fields and conffiles.
fn check_contents(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    // "-rwxr-xr-x root/root   1234 2026-12-07 11:00 ./usr/bin/cardd"
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 6).then(|| (fields[0], fields[1], fields[5]))
        })
        .collect();
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(_, _, p)| p.trim_start_matches('.') == path)
            .map(|(mode, owner, _)| (*mode, *owner))
    };
    let mut expected: Vec<(String, &[&str])> = Vec::new();
    for binary in BINARIES {
        expected.push((format!("/usr/bin/{binary}"), &["-rwxr-xr-x"]));
    }
    for conf in CONFFILES {
        expected.push(((*conf).to_owned(), &["-rw-r--r--", "-rw-r-----"]));
    }
    for unit in UNITS {
        expected.push((format!("/{UNIT_DIR}/{unit}"), &["-rw-r--r--"]));
    }
    for doc in ["README.md", "copyright"] {
        expected.push((format!("/usr/share/doc/{PACKAGE}/{doc}"), &["-rw-r--r--"]));
    }
    expected.push((format!("/{FLOWS_DIR}/etc_load.lua"), &["-rw-r--r--"]));
    expected.push((format!("/{PLUGIN_TEMPLATE_DIR}/plugin.py"), &["-rwxr-xr-x"]));
    expected.push((
        format!("/{PLUGIN_TEMPLATE_DIR}/test_hooks.py"),
        &["-rw-r--r--"],
    ));
    for (path, modes) in &expected {
        let Some((mode, owner)) = mode_of(path) else {
            bail!("the package lacks {path}:\n{listing}");
        };
        ensure!(
            modes.contains(&mode),
            "{path} has mode {mode}, expected one of {modes:?}"
        );
        ensure!(
            owner == "root/root",
            "{path} belongs to {owner}, expected root/root"
        );
        println!("ok: {path} {mode} {owner}");
    }
    let info = output(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    for field in [
        format!("Package: {PACKAGE}"),
        "Architecture: ".into(),
        "Version: ".into(),
        "Depends: ".into(),
        "Recommends: pcscd".into(),
    ] {
        let line = info.lines().find(|l| l.trim_start().starts_with(&field));
        let Some(line) = line else {
            bail!("dpkg-deb -I: no {field:?} in the control file:\n{info}");
        };
        println!("ok: control: {}", line.trim());
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends: "))
        .unwrap_or_default();
    for needed in ["libc6", "libpcsclite1", "passwd"] {
        ensure!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }
    // "    2276 bytes,    55 lines   *  postinst             #!/bin/sh" (* = executable)
    let member = |name: &str| {
        info.lines()
            .filter(|l| l.contains(" bytes, "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.get(4) == Some(&name) || w.get(5) == Some(&name))
    };
    for name in SCRIPTS.iter().chain(&["conffiles", "md5sums", "control"]) {
        let Some(words) = member(name) else {
            bail!("dpkg-deb -I: no {name} in the control archive:\n{info}");
        };
        let executable = words.get(4) == Some(&"*");
        ensure!(
            executable == SCRIPTS.contains(name),
            "{name}: executable {executable}, expected {}",
            !executable
        );
    }
    println!(
        "ok: control archive: {}, conffiles, md5sums",
        SCRIPTS.join(", ")
    );
    let conffiles = output(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"))?;
    let listed: Vec<&str> = conffiles.lines().map(str::trim).collect();
    ensure!(
        listed == CONFFILES,
        "conffiles is {listed:?}, expected {CONFFILES:?}"
    );
    println!("ok: conffiles: {}", listed.join(" "));
    Ok(())
}

/// The install part of the check; [`clean_up`] runs after it whatever the outcome.
fn install_and_run(root: &Path, deb: &Path) -> Result<()> {
    let user_existed = Command::new("getent")
        .args(["passwd", PACKAGE])
        .stdout(Stdio::null())
        .status()?
        .success();
    // Written first, so an interrupted run's leftovers are recognised as the check's.
    let marker = if user_existed {
        "user kept\n"
    } else {
        "user created\n"
    };
    write(Path::new(MARKER), marker, 0o644)?;
    let mut dpkg = Command::new("dpkg");
    dpkg.arg("-i").arg(deb).stdin(Stdio::null());
    super::run_checked(dpkg, "dpkg -i")?;
    let data = std::fs::metadata(DATA_DIR).context("postinst created no data directory")?;
    ensure!(
        data.is_dir() && data.permissions().mode() & 0o777 == 0o700,
        "{DATA_DIR} mode"
    );
    ensure!(
        owner_name(Path::new(DATA_DIR))? == PACKAGE,
        "{DATA_DIR} is not owned by cardd"
    );
    let conf = std::fs::metadata(CONFFILES[0])?.permissions().mode() & 0o777;
    ensure!(
        conf == 0o640,
        "{} has mode {conf:03o}, expected 640",
        CONFFILES[0]
    );
    println!(
        "ok: dpkg -i: user cardd, {DATA_DIR} 0700 cardd, {} 0640",
        CONFFILES[0]
    );

    // The units reference /usr/bin/cardd and /usr/bin/cardd-host, now installed.
    let units: Vec<String> = UNITS.iter().map(|u| format!("/{UNIT_DIR}/{u}")).collect();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .stdin(Stdio::null())
        .output()
        .context("running systemd-analyze (package systemd)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    ensure!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{said}",
        units.join(" "),
        verify.status
    );
    println!("ok: systemd-analyze verify {}: no finding", units.join(" "));

    // A key file of random keys, as the issuer's would be: owner-only, owned by cardd.
    let mut random = [0u8; 16 * 4];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let hex = |i: usize| -> String {
        random[i * 16..(i + 1) * 16]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    let keys = format!(
        "[etc]\nalgorithm = \"tdes\"\ntwo_level = true\nload = \"{}\"\npurchase = \"{}\"\n\
         tac = \"{}\"\nmaintenance = \"{}\"\n",
        hex(0),
        hex(1),
        hex(2),
        hex(3)
    );
    write(Path::new(KEY_FILE), &keys, 0o600)?;
    let mut chown = Command::new("chown");
    chown.args(["cardd:cardd", KEY_FILE]);
    super::run_checked(chown, "chown cardd:cardd (key file)")?;

    let check = as_cardd(&["/usr/bin/cardd", "check-config"]).output()?;
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    for line in said.lines() {
        println!("  cardd check-config: {line}");
    }
    ensure!(
        check.status.success(),
        "cardd check-config as cardd failed ({}):\n{said}{}",
        check.status,
        String::from_utf8_lossy(&check.stderr)
    );
    ensure!(!said.contains("error:"), "check-config reported an error");
    println!("ok: cardd check-config (as cardd) passes on the packaged configuration");

    ensure!(
        TcpStream::connect(LISTEN).is_err(),
        "something already listens on {LISTEN}: stop it (another cardd?) and run again"
    );
    let log = super::target_dir(root).join("xtask-package-cardd.log");
    let mut daemon = start_daemon(&log)?;
    let health = wait_health(&mut daemon, &log);
    let health = match health {
        Ok(health) => health,
        Err(e) => {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(e);
        }
    };
    let stopped = stop_daemon(daemon);
    ensure!(health["status"] == "ok", "/health: {health}");
    ensure!(
        health["needs_setup"] == true,
        "/health without needs_setup: {health}"
    );
    println!("ok: GET /health as started by cardd: status ok, needs_setup true");
    stopped?;
    println!("ok: SIGTERM: cardd stopped cleanly");

    let mut add = as_cardd(&[
        "/usr/bin/cardd",
        "operators",
        "add",
        "--role",
        "admin",
        ADMIN,
    ]);
    add.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())?;
    let added = child.wait_with_output()?;
    ensure!(
        added.status.success(),
        "cardd operators add: {}\n{}",
        added.status,
        String::from_utf8_lossy(&added.stderr)
    );
    println!("ok: cardd operators add --role admin {ADMIN} (as cardd)");

    let mut daemon = start_daemon(&log)?;
    let logged_in = wait_health(&mut daemon, &log).and_then(|health| {
        ensure!(
            health["needs_setup"] == false,
            "/health after operators add: {health}"
        );
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "auth.login",
            "params": {"username": ADMIN, "password": ADMIN_PASSWORD},
        });
        let (status, body) = http("POST", "/", Some(&request.to_string()), None)?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("auth.login answered {status}: {body}"))?;
        let token = answer["result"]["token"]
            .as_str()
            .with_context(|| format!("auth.login: {status} {answer}"))?
            .to_owned();
        println!("ok: restarted; auth.login as {ADMIN} returns a session token");
        // The README's reader step: with pcscd up (the test command runs it with its virtual
        // reader), the packaged configuration serves its readers.
        if Path::new(super::pcscd::SOCKET).exists() {
            let request = serde_json::json!({
                "jsonrpc": "2.0", "id": 2, "method": "readers.list", "params": {},
            });
            let (status, body) = http("POST", "/", Some(&request.to_string()), Some(&token))?;
            let answer: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("readers.list answered {status}: {body}"))?;
            let readers = answer["result"].as_array().cloned().unwrap_or_default();
            let pcsc: Vec<&str> = readers
                .iter()
                .filter(|r| r["driver"] == "pcsc")
                .filter_map(|r| r["name"].as_str())
                .collect();
            ensure!(
                !pcsc.is_empty(),
                "readers.list shows no PC/SC reader though pcscd runs: {answer}"
            );
            println!("ok: readers.list: the PC/SC readers {pcsc:?}");
        } else {
            println!("skip: pcscd is not running, so no PC/SC reader is expected");
        }
        // The README's backup step, through the running daemon.
        let backup = as_cardd(&["/usr/bin/cardd", "backup"]).output()?;
        let printed = String::from_utf8_lossy(&backup.stdout).into_owned();
        ensure!(
            backup.status.success() && printed.contains("the running daemon"),
            "cardd backup: {}\n{printed}{}",
            backup.status,
            String::from_utf8_lossy(&backup.stderr)
        );
        let manifests = std::fs::read_dir(Path::new(DATA_DIR).join("backups"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("manifest.json").is_file())
            .count();
        ensure!(
            manifests == 1,
            "one backup with its manifest in {DATA_DIR}/backups"
        );
        println!(
            "ok: cardd backup (as cardd) through the running daemon: {}",
            printed.trim()
        );
        Ok(())
    });
    let stopped = stop_daemon(daemon);
    logged_in?;
    stopped?;
    println!("ok: SIGTERM: cardd stopped cleanly");

    let mut remove = Command::new("dpkg");
    remove.args(["-r", PACKAGE]).stdin(Stdio::null());
    super::run_checked(remove, "dpkg -r cardd")?;
    ensure!(
        !Path::new("/usr/bin/cardd").exists(),
        "dpkg -r left /usr/bin/cardd"
    );
    ensure!(Path::new(DATA_DIR).is_dir(), "dpkg -r removed {DATA_DIR}");
    ensure!(
        Path::new(CONFFILES[0]).is_file(),
        "dpkg -r removed {}",
        CONFFILES[0]
    );
    println!(
        "ok: dpkg -r: binaries gone; {DATA_DIR} and {} kept",
        CONFFILES[0]
    );
    let mut purge = Command::new("dpkg");
    purge.args(["--purge", PACKAGE]).stdin(Stdio::null());
    super::run_checked(purge, "dpkg --purge cardd")?;
    ensure!(
        Path::new(DATA_DIR).is_dir(),
        "dpkg --purge removed {DATA_DIR}"
    );
    ensure!(
        !Path::new(CONFFILES[0]).exists(),
        "dpkg --purge left {}",
        CONFFILES[0]
    );
    println!("ok: dpkg --purge: configuration gone; {DATA_DIR} (the money records) kept");
    Ok(())
}

/// Removes what the check created: the package, the data directory, /etc/cardd (the key file),
/// the user when the check created it, and the marker. Only called when the marker is there or
/// none of these is.
fn clean_up() -> Result<()> {
    if dpkg_known(PACKAGE)? {
        let mut purge = Command::new("dpkg");
        purge
            .args(["--purge", PACKAGE])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        super::run_checked(purge, "dpkg --purge cardd (clean-up)")?;
    }
    for dir in [DATA_DIR, "/etc/cardd"] {
        if Path::new(dir).exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {dir}"))?;
        }
    }
    if let Ok(marker) = std::fs::read_to_string(MARKER) {
        if marker.contains("user created") {
            let exists = Command::new("getent")
                .args(["passwd", PACKAGE])
                .stdout(Stdio::null())
                .status()?
                .success();
            if exists {
                let mut userdel = Command::new("userdel");
                userdel.arg(PACKAGE);
                super::run_checked(userdel, "userdel cardd (clean-up)")?;
            }
            let group = Command::new("getent")
                .args(["group", PACKAGE])
                .stdout(Stdio::null())
                .status()?
                .success();
            if group {
                let mut groupdel = Command::new("groupdel");
                groupdel.arg(PACKAGE);
                super::run_checked(groupdel, "groupdel cardd (clean-up)")?;
            }
        }
        std::fs::remove_file(MARKER)?;
    }
    Ok(())
}

/// `command` run as the `cardd` user and group (with its supplementary groups), exec'd
/// directly (`setpriv`), so the child's pid is the program's own.
fn as_cardd(command: &[&str]) -> Command {
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args([
            "--reuid",
            PACKAGE,
            "--regid",
            PACKAGE,
            "--init-groups",
            "--",
        ])
        .args(command)
        .current_dir("/")
        .stdin(Stdio::null());
    setpriv
}

fn start_daemon(log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    as_cardd(&["/usr/bin/cardd", "--config", CONFFILES[0]])
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("starting /usr/bin/cardd as cardd")
}

/// Waits until `/health` answers 200; returns its JSON.
fn wait_health(daemon: &mut Child, log: &Path) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "cardd exited at start ({status}); its log ({}):\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok((200, body)) = http("GET", "/health", None, None) {
            return serde_json::from_str(&body).with_context(|| format!("/health: {body}"));
        }
        if Instant::now() > deadline {
            bail!(
                "cardd did not answer /health on {LISTEN} within {START_WAIT_MS} ms; its log \
                 ({}):\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(POLL_EVERY_MS));
    }
}

/// SIGTERM, then waits (bounded) for a clean exit; kills it after the wait.
fn stop_daemon(mut daemon: Child) -> Result<()> {
    let mut kill = Command::new("kill");
    kill.args(["-TERM", &daemon.id().to_string()]);
    super::run_checked(kill, "kill -TERM cardd")?;
    let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
    loop {
        if let Some(status) = daemon.try_wait()? {
            ensure!(status.success(), "cardd exited with {status} after SIGTERM");
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            bail!("cardd did not stop within {STOP_WAIT_MS} ms of SIGTERM; killed");
        }
        std::thread::sleep(Duration::from_millis(POLL_EVERY_MS));
    }
}

/// One HTTP/1.1 request to the packaged daemon; returns the status and the body.
fn http(
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(LISTEN)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {LISTEN}\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream
        .take(HTTP_ANSWER_BYTES_MAX)
        .read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

fn is_root() -> Result<bool> {
    Ok(output(Command::new("id").arg("-u"))? == "0")
}

/// Whether dpkg knows `package` at all (installed, or removed with its conffiles left).
fn dpkg_known(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()?;
    let status = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && !status.contains("not-installed"))
}

fn owner_name(path: &Path) -> Result<String> {
    output(Command::new("stat").args(["-c", "%U"]).arg(path))
}

/// A command's standard output, trimmed; an error with its standard error when it fails.
fn output(command: &mut Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Copies `from` to `to` (creating its directory, 0755) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        create_dirs(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("{} → {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `create_dir_all`, every directory 0755 whatever the umask.
fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_workspace_version() {
        let version = workspace_version(&crate::project_root()).unwrap();
        assert!(version.split('.').count() == 3, "{version}");
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(dechunk("4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"), "abcdef");
    }

    #[test]
    fn every_packaged_file_exists() {
        let packaging = crate::project_root().join("packaging");
        let names = CONFFILES
            .iter()
            .filter_map(|c| Path::new(c).file_name())
            .chain(UNITS.iter().map(|u| u.as_ref()))
            .chain(SCRIPTS.iter().map(|s| s.as_ref()))
            .chain([std::ffi::OsStr::new("copyright")]);
        for name in names {
            assert!(packaging.join(name).is_file(), "packaging/{name:?}");
        }
    }
}
