//! `cardd-fleet`: makes a fleet's certificates (see the crate README).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use cardd_fleet::{CertFingerprint, FleetCa, Issued, SiteId};

/// The fleet's certificates: a CA, the host's server certificates, one client certificate per
/// site.
#[derive(Debug, Parser)]
#[command(name = "cardd-fleet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The fleet's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Prints the SHA-256 fingerprint of a PEM certificate (what the host's site directory
    /// records).
    Fingerprint {
        /// The certificate file.
        cert: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Creates the fleet CA (ca.crt, ca.key) in a new directory; never overwrites one.
    Init {
        /// The CA directory (keep it offline and backed up).
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issues a host's server certificate: hosts/<name>.crt and .key.
    IssueHost {
        #[arg(long)]
        dir: PathBuf,
        /// The host's DNS name (also the file name).
        #[arg(long)]
        name: String,
        /// Another name or IP address the sites reach the host by (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Replace an existing certificate and key of this name.
        #[arg(long)]
        replace: bool,
    },
    /// Issues a site's client certificate: sites/<site>.crt and .key.
    IssueSite {
        #[arg(long)]
        dir: PathBuf,
        /// The site id (letters, digits, `-`, `_`).
        #[arg(long)]
        site: String,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Re-issue: replace the site's certificate and key (the old one is refused once the
        /// host records the new fingerprint).
        #[arg(long)]
        replace: bool,
    },
}

fn report(what: &str, issued: &Issued) {
    println!("{what}");
    println!("  certificate: {}", issued.cert.display());
    println!("  key (0600):  {}", issued.key.display());
    println!("  sha256:      {}", issued.fingerprint);
}

fn fingerprint(path: &Path) -> Result<CertFingerprint> {
    let cert = CertificateDer::from_pem_file(path)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(CertFingerprint::of(&cert))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Ca { command } => match command {
            CaCommand::Init { dir, days } => {
                let issued = FleetCa::init(&dir, days)?;
                report("fleet CA created; back up ca.key offline", &issued);
            }
            CaCommand::IssueHost {
                dir,
                name,
                sans,
                days,
                replace,
            } => {
                let issued = FleetCa::open(&dir)?.issue_host(&name, &sans, days, replace)?;
                report(&format!("host certificate for {name}"), &issued);
            }
            CaCommand::IssueSite {
                dir,
                site,
                days,
                replace,
            } => {
                let site: SiteId = site.parse()?;
                let issued = FleetCa::open(&dir)?.issue_site(&site, days, replace)?;
                report(
                    &format!(
                        "site certificate for {site}; record its fingerprint in the host's site \
                         directory"
                    ),
                    &issued,
                );
            }
        },
        Command::Fingerprint { cert } => println!("{}", fingerprint(&cert)?),
    }
    Ok(())
}
