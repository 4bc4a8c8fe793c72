//! cardd's fleet mutual TLS: how the issuer host and its sites (teller PCs, kiosks) know each
//! other.
//!
//! * [`ca`]: the fleet's own certificate authority (rcgen): `ca.crt`/`ca.key`, the host's server
//!   certificates and one client certificate per site, whose identity is the subject
//!   alternative name URI `cardd-site:<site id>` ([`identity::SITE_URI_SCHEME`]).
//! * [`tls`]: the rustls configurations: the host's (a client certificate signed by the fleet CA
//!   is required) and a site's (its certificate; it trusts only the fleet CA).
//! * [`directory`]: after the handshake, the host maps the peer's certificate to a site id and
//!   asks its [`directory::SiteDirectory`] whether the site is enabled and whether this is the
//!   certificate issued to it.
//! * [`identity`]: site ids and certificate fingerprints; `der` reads the few certificate
//!   fields the fleet needs itself; [`files`]: keys written and read owner-only.
//! * The `cardd-fleet` binary (`src/main.rs`) is the command line over [`ca`].
//!
//! **Architecture Invariants:**
//! * A site is known by its certificate alone: the host takes the site id from the verified
//!   certificate, never from anything the peer says later. A connection is served only after
//!   [`directory::authorize`] admitted it: signed by the fleet CA, naming exactly one site, that
//!   site enabled, and the certificate's SHA-256 fingerprint the one the directory records, so
//!   re-issuing a site's certificate revokes the old one without a revocation list.
//! * Private keys are never readable by group or others: written with mode 0600 from the
//!   moment they exist, and refused when read back otherwise. A fleet CA is never overwritten.
//! * TLS 1.3 only, on the ring provider, chosen explicitly (no process-wide default provider).
//! * Knows no domain, storage or transport: the host's directory is a trait, its server and
//!   database live above.
//! * Every input is bounded: validities ([`ca::LEAF_VALIDITY_DAYS_MAX`]), names
//!   ([`identity::SITE_ID_CHARS_MAX`]), PEM files ([`files::PEM_FILE_BYTES_MAX`]).
#![forbid(unsafe_code)]

pub mod ca;
mod der;
pub mod directory;
pub mod files;
pub mod identity;
pub mod tls;

pub use ca::{FleetCa, Issued};
pub use directory::{
    authorize, AccessError, DirectoryError, SiteDirectory, SiteEntry, SiteLookup, SitePeer,
};
pub use files::TlsFiles;
pub use identity::{site_of_certificate, CertFingerprint, SiteId};
pub use tls::{host_server_config, site_client_config, TlsError};
