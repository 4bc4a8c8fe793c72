//! `cardd check-config [FILE]`: everything the daemon would refuse at start, found without
//! starting anything and without opening the database.
//!
//! Beyond [`Config::load`] it checks the files the configuration names: the master key file
//! (exists, owner-only, parses as the daemon parses it: [`crate::keys::read_key_file`]), in
//! fleet mode the CA certificate and the site's certificate and key (as the daemon's TLS
//! client reads them), the data directory (or its parent), the flows directory, and each
//! reader's driver options ([`cardd_reader::Driver::check`]: no device opened). Each finding is
//! one line; an error means the daemon would not start or not work, a warning what deserves a
//! look. No secret is ever shown: not the ETC PIN, not a key.

use std::fmt;
use std::path::Path;

use crate::config::{Config, KeySource};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{prefix}: {}", self.message)
    }
}

/// Everything found about one configuration file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }

    /// Whether the daemon would start on this configuration (no error; warnings allowed).
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Error)
    }

    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }
}

/// Checks the configuration file at `path`.
pub fn check_config(path: &Path) -> Report {
    let mut report = Report::default();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            report.push(Level::Error, e.to_string());
            return report;
        }
    };
    report.push(
        Level::Ok,
        format!(
            "{}: the configuration is valid (listen {}, data dir {}, {} reader table(s))",
            path.display(),
            config.listen,
            config.data_dir.display(),
            config.readers.len()
        ),
    );
    check_keys(&config, &mut report);
    check_fleet(&config, &mut report);
    check_data_dir(&config.data_dir, &mut report);
    check_flows(&config, &mut report);
    check_readers(&config, &mut report);
    report
}

fn check_keys(config: &Config, report: &mut Report) {
    if config.fleet.is_some() {
        return;
    }
    match (config.keys.source, &config.keys.file) {
        (KeySource::Demo, _) => report.push(
            Level::Warning,
            "keys.source = \"demo\": the public demo keys, which only work with simulated cards; \
             for real cards set [keys] source = \"file\" and file = \"/etc/cardd/keys.toml\"",
        ),
        (KeySource::File, None) => report.push(
            Level::Error,
            "keys.source = \"file\" needs keys.file = \"/etc/cardd/keys.toml\"",
        ),
        (KeySource::File, Some(file)) => match crate::keys::read_key_file(file) {
            Ok(loaded) => {
                report.push(
                    Level::Ok,
                    format!(
                        "key file {}: owner-only, keys of {} loaded",
                        file.display(),
                        loaded.schemes.join(", ")
                    ),
                );
                if let Some(warning) = root_only_warning(file) {
                    report.push(Level::Warning, warning);
                }
            }
            Err(e) => report.push(Level::Error, e.to_string()),
        },
    }
}

/// Run as root, a root-owned owner-only file passes every check but the daemon's own user
/// (`cardd` in the package) cannot read it.
fn root_only_warning(file: &Path) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self").ok()?.uid();
        let owner = std::fs::metadata(file).ok()?.uid();
        if me == 0 && owner == 0 {
            return Some(format!(
                "{} belongs to root: if the daemon runs as another user (the package's unit runs \
                 it as cardd), run `chown cardd:cardd {}`; run check-config as that user to be \
                 sure (`sudo -u cardd cardd check-config`)",
                file.display(),
                file.display()
            ));
        }
    }
    let _ = file;
    None
}

fn check_fleet(config: &Config, report: &mut Report) {
    let Some(fleet) = &config.fleet else {
        return;
    };
    let files = cardd_fleet::TlsFiles {
        ca_cert: fleet.ca_cert.clone(),
        cert: fleet.cert.clone(),
        key: fleet.key.clone(),
    };
    match cardd_fleet::site_client_config(&files) {
        Ok(_) => report.push(
            Level::Ok,
            format!(
                "fleet: CA {}, site certificate {} and key {} (owner-only) are usable; issuer \
                 host {} ({}) is not contacted by this check",
                fleet.ca_cert.display(),
                fleet.cert.display(),
                fleet.key.display(),
                fleet.host_addr,
                fleet.host_name
            ),
        ),
        Err(e) => report.push(Level::Error, format!("fleet: {e}")),
    }
}

/// The data directory's format: current, older (upgraded, after a backup, at the next start)
/// or newer (refused: a newer cardd is needed).
fn check_data_format(dir: &Path, report: &mut Report) {
    use crate::datadir::{read_format, DATA_FORMAT};
    match read_format(dir) {
        Ok(Some(f)) if f.format == DATA_FORMAT => report.push(
            Level::Ok,
            format!(
                "data directory {}: format {DATA_FORMAT}, written by {}",
                dir.display(),
                f.written_by
            ),
        ),
        Ok(_) if dir.join("conf").exists() => report.push(
            Level::Warning,
            format!(
                "data directory {}: format 1; the next start backs it up into backups/ and \
                 upgrades it to format {DATA_FORMAT}",
                dir.display()
            ),
        ),
        Ok(_) => {}
        Err(e) => report.push(Level::Error, e.to_string()),
    }
}

fn check_data_dir(dir: &Path, report: &mut Report) {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => report.push(
            Level::Error,
            format!(
                "data.dir {} is not a directory: point data.dir at a directory",
                dir.display()
            ),
        ),
        Ok(meta) => {
            match writable(dir) {
                Ok(()) => report.push(
                    Level::Ok,
                    format!("data directory {} exists and is writable", dir.display()),
                ),
                Err(e) => report.push(
                    Level::Warning,
                    format!(
                        "data directory {} is not writable by this user ({e}); the daemon's user \
                         must own it (`chown cardd:cardd {}`): run check-config as that user to \
                         be sure",
                        dir.display(),
                        dir.display()
                    ),
                ),
            }
            #[cfg(unix)]
            {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    report.push(
                        Level::Warning,
                        format!(
                            "data directory {} is open to group or others (mode {mode:03o}); it \
                             holds the money journal and the operators: `chmod 700 {}`",
                            dir.display(),
                            dir.display()
                        ),
                    );
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            check_data_format(dir, report);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if parent.is_dir() {
                report.push(
                    Level::Ok,
                    format!(
                        "data directory {} does not exist yet; the daemon creates it in {}",
                        dir.display(),
                        parent.display()
                    ),
                );
            } else {
                report.push(
                    Level::Error,
                    format!(
                        "data directory {}: its parent {} does not exist; create it or change \
                         data.dir",
                        dir.display(),
                        parent.display()
                    ),
                );
            }
        }
        Err(e) => report.push(
            Level::Error,
            format!(
                "data directory {}: {e}; check the path and its permissions",
                dir.display()
            ),
        ),
    }
}

/// Whether this user can create a file in `dir`: a probe file is created and removed (the
/// database itself is not opened).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".cardd-check-config.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

fn check_flows(config: &Config, report: &mut Report) {
    let configured = config.flows.dir.is_some();
    let dir = config
        .flows
        .dir
        .clone()
        .unwrap_or_else(crate::flows::default_dir);
    let flows = std::fs::read_dir(&dir).map(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "lua"))
            .count()
    });
    match flows {
        Ok(0) | Err(_) => {
            let level = if configured {
                Level::Error
            } else {
                Level::Warning
            };
            report.push(
                level,
                format!(
                    "flows directory {} has no *.lua flows: 圈存 and the other flows are \
                     unavailable; set [flows] dir (the package installs them in \
                     /usr/share/cardd/scripts)",
                    dir.display()
                ),
            );
        }
        Ok(n) => report.push(
            Level::Ok,
            format!("flows directory {}: {n} flow file(s)", dir.display()),
        ),
    }
}

fn check_readers(config: &Config, report: &mut Report) {
    if config.readers.is_empty() {
        report.push(
            Level::Warning,
            "no [[readers]]: the daemon will serve no reader (add a [[readers]] table, e.g. \
             driver = \"pcsc\")",
        );
        return;
    }
    let registry = cardd_drivers::registry();
    for (i, reader) in config.readers.iter().enumerate() {
        let key = format!("readers[{i}] ({})", reader.driver);
        let Some(driver) = registry.get(&reader.driver) else {
            report.push(
                Level::Error,
                format!(
                    "{key}: no such driver; compiled-in drivers: {}",
                    registry.names().join(", ")
                ),
            );
            continue;
        };
        let options = cardd_reader::DriverOptions::new(&reader.driver, reader.options.clone());
        match driver.check(&options) {
            Ok(warnings) => {
                report.push(Level::Ok, format!("{key}: options are valid"));
                for warning in warnings {
                    report.push(Level::Warning, format!("{key}: {warning}"));
                }
            }
            Err(e) => report.push(Level::Error, format!("{key}: {e}")),
        }
        if let Some(trace) = &reader.trace {
            report.push(
                Level::Ok,
                format!(
                    "{key}: card traffic is recorded to {} (docs/traces.md)",
                    trace.path.display()
                ),
            );
            if !trace.redact {
                report.push(
                    Level::Warning,
                    format!(
                        "{key}: the trace keeps PINs, MACs and keys (redact = false): only for \
                         test cards; remove `redact = false` for real cards"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899AABBCCDDEEFF";

    struct Site {
        dir: tempfile::TempDir,
    }

    impl Site {
        fn new() -> Site {
            let site = Site {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir(site.path("scripts")).unwrap();
            std::fs::write(site.path("scripts/etc_load.lua"), "-- a flow\n").unwrap();
            site
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        fn keys(&self, mode: u32) {
            let text = format!(
                "[etc]\ntwo_level = true\nload = \"{KEY}\"\npurchase = \"{KEY}\"\ntac = \"{KEY}\"\n"
            );
            std::fs::write(self.path("keys.toml"), text).unwrap();
            #[cfg(unix)]
            std::fs::set_permissions(
                self.path("keys.toml"),
                std::os::unix::fs::PermissionsExt::from_mode(mode),
            )
            .unwrap();
            let _ = mode;
        }

        fn config(&self, readers: &str) -> std::path::PathBuf {
            let text = format!(
                "[data]\ndir = {:?}\n[keys]\nsource = \"file\"\nfile = {:?}\n[flows]\ndir = {:?}\n\
                 [cards]\netc_pin = \"987654\"\n{readers}",
                self.path("data"),
                self.path("keys.toml"),
                self.path("scripts")
            );
            let path = self.path("cardd.toml");
            std::fs::write(&path, text).unwrap();
            path
        }

        fn check(&self, readers: &str) -> (Report, String) {
            let report = check_config(&self.config(readers));
            let text = report
                .findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!text.contains(KEY), "a key is shown:\n{text}");
            assert!(!text.contains("987654"), "the PIN is shown:\n{text}");
            (report, text)
        }
    }

    const PCSC: &str = "[[readers]]\ndriver = \"pcsc\"\n";

    #[test]
    fn a_good_configuration_passes() {
        let site = Site::new();
        site.keys(0o600);
        let (report, text) = site.check(PCSC);
        assert!(report.passed(), "{text}");
        assert!(text.contains("ok: key file"), "{text}");
        assert!(text.contains("does not exist yet"), "{text}");
        assert!(
            text.contains("readers[0] (pcsc): options are valid"),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_key_file_fails_with_the_chmod_hint() {
        let site = Site::new();
        site.keys(0o644);
        let (report, text) = site.check(PCSC);
        assert!(!report.passed(), "{text}");
        assert!(text.contains("error: the key file"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn a_missing_key_file_fails() {
        let site = Site::new();
        let (report, text) = site.check(PCSC);
        assert!(!report.passed(), "{text}");
        assert!(text.contains("does not exist"), "{text}");
    }

    #[test]
    fn a_bad_reader_driver_or_option_fails_and_a_missing_port_warns() {
        let site = Site::new();
        site.keys(0o600);
        let (report, text) = site.check("[[readers]]\ndriver = \"pcsx\"\n");
        assert!(!report.passed(), "{text}");
        assert!(text.contains("readers[0].driver"), "{text}");
        let (report, text) =
            site.check("[[readers]]\ndriver = \"pcsc\"\n[readers.options]\nshare = \"shared\"\n");
        assert!(!report.passed(), "{text}");
        assert!(text.contains("unknown field `share`"), "{text}");
        let serial = "[[readers]]\ndriver = \"serial\"\n[[readers.options.devices]]\n\
                      id = \"desk\"\npath = \"/dev/cardd-no-such-port\"\n";
        let (report, text) = site.check(serial);
        assert!(report.passed(), "{text}");
        assert!(
            text.contains("warning: readers[0] (serial): serial device \"desk\""),
            "{text}"
        );
        let traced = format!("{PCSC}[readers.trace]\npath = \"t/r.jsonl\"\nredact = false\n");
        let (report, text) = site.check(&traced);
        assert!(report.passed(), "{text}");
        assert!(text.contains("card traffic is recorded to"), "{text}");
        assert!(
            text.contains("warning: readers[0] (pcsc): the trace keeps PINs"),
            "{text}"
        );
    }

    #[test]
    fn a_data_directory_of_a_newer_format_fails_naming_the_cardd_it_needs() {
        let site = Site::new();
        site.keys(0o600);
        let path = site.config(PCSC);
        let data = site.path("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join(crate::datadir::FORMAT_FILE),
            "format = 9\nwritten_by = \"cardd 7.0.0\"\nwritten_at = \"x\"\n",
        )
        .unwrap();
        let report = check_config(&path);
        assert!(!report.passed(), "{:?}", report.findings);
        let text = format!("{:?}", report.findings);
        assert!(text.contains("run cardd 7.0.0 or newer"), "{text}");
    }

    #[test]
    fn a_data_directory_without_parent_fails() {
        let site = Site::new();
        site.keys(0o600);
        let path = site.config(PCSC);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            &format!("{:?}", site.path("data")),
            &format!("{:?}", site.path("no/such/data")),
        );
        std::fs::write(&path, text).unwrap();
        let report = check_config(&path);
        assert!(!report.passed(), "{:?}", report.findings);
    }

    /// The package's `/etc/cardd/cardd.toml`, with a key file in place as the README says.
    #[test]
    fn the_packaged_configuration_passes_once_the_key_file_is_in_place() {
        let site = Site::new();
        site.keys(0o600);
        let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/cardd.toml");
        let text = std::fs::read_to_string(packaged)
            .unwrap()
            .replace(
                "/etc/cardd/keys.toml",
                &site.path("keys.toml").display().to_string(),
            )
            .replace("/var/lib/cardd", &site.path("data").display().to_string())
            .replace(
                "/usr/share/cardd/scripts",
                &site.path("scripts").display().to_string(),
            );
        let path = site.path("packaged.toml");
        std::fs::write(&path, text).unwrap();
        let report = check_config(&path);
        let text: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
        assert!(report.passed(), "{text:#?}");
        // Run as root, the test's key file belongs to root, which deserves the warning; the
        // package's check runs check-config as cardd on a key file cardd owns (no warning).
        let warnings = report
            .findings
            .iter()
            .filter(|f| f.level == Level::Warning && !f.message.contains("belongs to root"));
        assert_eq!(warnings.count(), 0, "{text:#?}");
    }
}
