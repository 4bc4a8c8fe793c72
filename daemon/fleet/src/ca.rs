//! The fleet's certificate authority: one CA per fleet, which issues the host's server
//! certificates and each site's client certificate.
//!
//! A CA directory holds `ca.crt` and `ca.key`, `hosts/<name>.{crt,key}` and
//! `sites/<site id>.{crt,key}`. Keys are ECDSA P-256, written owner-only (0600).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::der;
use crate::files::{self, FileError, Secrecy, TlsFiles};
use crate::identity::{CertFingerprint, SiteId};

/// Longest validity of the fleet CA, in days (20 years).
pub const CA_VALIDITY_DAYS_MAX: u32 = 7300;
/// Longest validity of a host's or a site's certificate, in days (10 years).
pub const LEAF_VALIDITY_DAYS_MAX: u32 = 3650;
/// Most subject alternative names on a host certificate (its name included).
pub const HOST_SANS_MAX: usize = 16;
/// Longest host name, in characters (a DNS name's limit).
pub const HOST_NAME_CHARS_MAX: usize = 253;
/// How far back a new certificate's validity starts, in minutes, so a machine whose clock is a
/// little behind the CA's accepts it at once.
pub const CLOCK_SKEW_MINUTES: i64 = 60;

/// The CA's distinguished name. Issuing rebuilds it (rather than parsing `ca.crt`), and checks
/// that the certificates it issues name `ca.crt`'s subject as their issuer.
const CA_COMMON_NAME: &str = "cardd fleet CA";
const CA_ORGANIZATION: &str = "cardd";

/// What went wrong making or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `init` found a CA.
    #[error(
        "a fleet CA already exists in {0}; every certificate of the fleet depends on it, so it is \
         never overwritten: use another directory for a new fleet"
    )]
    AlreadyExists(PathBuf),
    /// No CA where one was expected.
    #[error("no fleet CA in {0}; create one with `cardd-fleet ca init --dir {0}`")]
    Missing(PathBuf),
    /// `ca.key` does not belong to `ca.crt`.
    #[error(
        "{key} is not the key of {cert}; restore the CA's own key and certificate from the backup"
    )]
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// `ca.crt` is not the CA this crate makes, so what it would issue would not chain to it.
    #[error(
        "{0} is not a fleet CA made by cardd-fleet (the issued certificate would not name it as \
         issuer); issue with the tool that made it, or make a new fleet"
    )]
    ForeignCa(PathBuf),
    /// A validity out of range.
    #[error("a validity of {days} days is out of range: give 1 to {max} days")]
    Validity {
        /// Asked.
        days: u32,
        /// Allowed at most.
        max: u32,
    },
    /// A host name or subject alternative name that cannot be used.
    #[error(
        "`{0}` cannot name a host: give a DNS name (letters, digits, `-`, `.`, at most \
         {HOST_NAME_CHARS_MAX} characters) or an IP address"
    )]
    BadHostName(String),
    /// Too many subject alternative names.
    #[error("{0} names for one host certificate; give at most {HOST_SANS_MAX}")]
    TooManyNames(usize),
    /// A PEM file that is not what it should be.
    #[error("{path} is not a PEM {what}; restore it from the backup or issue it again")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
    /// Reading or writing a file.
    #[error(transparent)]
    File(#[from] FileError),
    /// The certificate library refused.
    #[error("the certificate could not be made: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and key just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The certificate's fingerprint: what the host's site directory records for a site.
    pub fingerprint: CertFingerprint,
}

/// The CA certificate's path in a CA directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// The files a host serves with, as `issue_host` writes them into a CA directory.
pub fn host_files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca_cert: ca_cert_path(dir),
        cert: dir.join("hosts").join(format!("{name}.crt")),
        key: dir.join("hosts").join(format!("{name}.key")),
    }
}

/// The files a site connects with, as `issue_site` writes them into a CA directory.
pub fn site_files(dir: &Path, site: &SiteId) -> TlsFiles {
    TlsFiles {
        ca_cert: ca_cert_path(dir),
        cert: dir.join("sites").join(format!("{site}.crt")),
        key: dir.join("sites").join(format!("{site}.key")),
    }
}

fn validity(params: &mut CertificateParams, days: u32, max: u32) -> Result<(), CaError> {
    if days == 0 || days > max {
        return Err(CaError::Validity { days, max });
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(CLOCK_SKEW_MINUTES);
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn pem_der(path: &Path, pem: &[u8], what: &'static str) -> Result<Vec<u8>, CaError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    CertificateDer::from_pem_slice(pem)
        .map(|c| c.to_vec())
        .map_err(|_| CaError::BadPem {
            path: path.to_owned(),
            what,
        })
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= HOST_NAME_CHARS_MAX
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The fleet's CA, opened from its directory, ready to issue.
pub struct FleetCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// `ca.crt`'s subject name (DER), which every issued certificate must name as issuer.
    subject: Vec<u8>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FleetCa {
    /// Creates a fleet CA in `dir` (created if missing), valid for `days`; refuses a directory
    /// that already has one. Returns where the CA's certificate and key were written.
    pub fn init(dir: &Path, days: u32) -> Result<Issued, CaError> {
        let (cert_path, key_path) = (ca_cert_path(dir), ca_key_path(dir));
        if cert_path.exists() || key_path.exists() {
            return Err(CaError::AlreadyExists(dir.to_owned()));
        }
        let mut params = ca_params();
        validity(&mut params, days, CA_VALIDITY_DAYS_MAX)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        files::create_dir(dir)?;
        files::write(
            &key_path,
            key.serialize_pem().as_bytes(),
            Secrecy::Private,
            false,
        )?;
        files::write(&cert_path, cert.pem().as_bytes(), Secrecy::Public, false)?;
        Ok(Issued {
            cert: cert_path,
            key: key_path,
            fingerprint: CertFingerprint::of(cert.der()),
        })
    }

    /// Opens the fleet CA in `dir`, checking that its key is its certificate's and owner-only.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (ca_cert_path(dir), ca_key_path(dir));
        if !cert_path.exists() || !key_path.exists() {
            return Err(CaError::Missing(dir.to_owned()));
        }
        let cert_pem = files::read(&cert_path, Secrecy::Public)?;
        let cert_der = pem_der(&cert_path, &cert_pem, "certificate")?;
        let key_pem = files::read(&key_path, Secrecy::Private)?;
        let key = std::str::from_utf8(&key_pem)
            .ok()
            .and_then(|pem| KeyPair::from_pem(pem).ok())
            .ok_or_else(|| CaError::BadPem {
                path: key_path.clone(),
                what: "private key",
            })?;
        let spki = key.subject_public_key_info();
        if !cert_der.windows(spki.len()).any(|w| w == spki) {
            return Err(CaError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let subject = der::issuer_and_subject(&cert_der)
            .map(|(_, subject)| subject.to_vec())
            .ok_or(CaError::BadPem {
                path: cert_path,
                what: "certificate",
            })?;
        Ok(FleetCa {
            dir: dir.to_owned(),
            issuer: Issuer::new(ca_params(), key),
            subject,
        })
    }

    /// Issues the host's server certificate for `name` and the other names it is reached by
    /// (`sans`: DNS names or IP addresses), valid for `days`, into `hosts/<name>.{crt,key}`.
    pub fn issue_host(
        &self,
        name: &str,
        sans: &[String],
        days: u32,
        replace: bool,
    ) -> Result<Issued, CaError> {
        if !is_host_name(name) {
            return Err(CaError::BadHostName(name.to_owned()));
        }
        let mut names: Vec<&str> = vec![name];
        names.extend(sans.iter().map(String::as_str).filter(|s| *s != name));
        if names.len() > HOST_SANS_MAX {
            return Err(CaError::TooManyNames(names.len()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        for san in names {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if is_host_name(san) => SanType::DnsName(san.try_into()?),
                Err(_) => return Err(CaError::BadHostName(san.to_owned())),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, days, &host_files(&self.dir, name), replace)
    }

    /// Issues `site`'s client certificate (common name `cardd site <id>`, subject alternative
    /// name URI `cardd-site:<id>`), valid for `days`, into `sites/<id>.{crt,key}`. With
    /// `replace`, a site's earlier certificate is replaced: record the new fingerprint in the
    /// host's site directory, and the old certificate is refused from then on.
    pub fn issue_site(&self, site: &SiteId, days: u32, replace: bool) -> Result<Issued, CaError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("cardd site {site}"));
        params
            .subject_alt_names
            .push(SanType::URI(site.uri().as_str().try_into()?));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, days, &site_files(&self.dir, site), replace)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        days: u32,
        files: &TlsFiles,
        replace: bool,
    ) -> Result<Issued, CaError> {
        validity(&mut params, days, LEAF_VALIDITY_DAYS_MAX)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        if !replace {
            for path in [&files.cert, &files.key] {
                if path.exists() {
                    return Err(FileError::Exists(path.clone()).into());
                }
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        if der::issuer_and_subject(cert.der()).map(|(issuer, _)| issuer) != Some(&self.subject[..])
        {
            return Err(CaError::ForeignCa(ca_cert_path(&self.dir)));
        }
        if let Some(parent) = files.cert.parent() {
            files::create_dir(parent)?;
        }
        files::write(
            &files.key,
            key.serialize_pem().as_bytes(),
            Secrecy::Private,
            replace,
        )?;
        files::write(&files.cert, cert.pem().as_bytes(), Secrecy::Public, replace)?;
        Ok(Issued {
            cert: files.cert.clone(),
            key: files.key.clone(),
            fingerprint: CertFingerprint::of(cert.der()),
        })
    }
}
