//! Which sites may connect: the host maps a peer's certificate to its site id, then asks its
//! site directory whether that site is known and enabled, and whether this certificate is the
//! one issued to it. A disabled site, or a certificate that is no longer the one issued (the
//! site's certificate was re-issued or revoked), is refused even though the fleet CA signed it.

use std::future::Future;
use std::pin::Pin;

use rustls::pki_types::CertificateDer;

use crate::identity::{site_of_certificate, CertFingerprint, SiteId, SiteIdentityError};

/// What the host's directory knows of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteEntry {
    /// Whether the site may connect.
    pub enabled: bool,
    /// The fingerprint of the certificate issued to the site last (what `cardd-fleet ca
    /// issue-site` printed); any other certificate naming the site is refused.
    pub cert_fingerprint: CertFingerprint,
}

/// A site directory that could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the site directory could not be read: {0}; check the host's database, then reconnect")]
pub struct DirectoryError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What [`SiteDirectory::site`] returns: a future, boxed so the directory can be a trait object
/// and an implementation may be asynchronous (a database) or not.
pub type SiteLookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<SiteEntry>, DirectoryError>> + Send + 'a>>;

/// The host's registry of sites, asked once per connection after the TLS handshake.
pub trait SiteDirectory: Send + Sync {
    /// The site's entry, `None` if the site is not registered.
    fn site<'a>(&'a self, site_id: &'a SiteId) -> SiteLookup<'a>;
}

/// A peer the host refuses, or could not check.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No client certificate (the host's TLS configuration requires one, so this is a
    /// connection not made with [`crate::tls::host_server_config`]).
    #[error("the peer presented no client certificate; give the site its certificate (`cardd-fleet ca issue-site`)")]
    NoCertificate,
    /// The certificate does not name exactly one site.
    #[error(transparent)]
    Identity(#[from] SiteIdentityError),
    /// The site is not in the directory.
    #[error(
        "site {0} is not registered at the host; register it with its certificate fingerprint"
    )]
    UnknownSite(SiteId),
    /// The site is disabled.
    #[error("site {0} is disabled at the host; enable it there to let it connect again")]
    Disabled(SiteId),
    /// Not the certificate issued to the site last.
    #[error(
        "site {site} presented a certificate (SHA-256 {presented}) that is not the one issued to \
         it ({issued}): it was re-issued or revoked; install the site's current certificate"
    )]
    NotCurrent {
        /// The site.
        site: SiteId,
        /// The certificate it presented.
        presented: CertFingerprint,
        /// The one the directory records.
        issued: CertFingerprint,
    },
    /// The directory could not answer.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// The site a peer's certificate names and the certificate's fingerprint, before the directory
/// is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePeer {
    /// The site the certificate names.
    pub site_id: SiteId,
    /// The certificate's fingerprint.
    pub fingerprint: CertFingerprint,
}

impl SitePeer {
    /// The peer of a verified TLS connection, from its certificates (rustls's
    /// `peer_certificates()`: the end-entity certificate first).
    pub fn of(peer_certificates: Option<&[CertificateDer<'_>]>) -> Result<Self, AccessError> {
        let cert = peer_certificates
            .and_then(<[_]>::first)
            .ok_or(AccessError::NoCertificate)?;
        Ok(SitePeer {
            site_id: site_of_certificate(cert)?,
            fingerprint: CertFingerprint::of(cert),
        })
    }

    /// Admits the peer if `entry` (the directory's entry for its site) lets it connect.
    pub fn admit(self, entry: Option<SiteEntry>) -> Result<SiteId, AccessError> {
        let entry = entry.ok_or_else(|| AccessError::UnknownSite(self.site_id.clone()))?;
        if !entry.enabled {
            return Err(AccessError::Disabled(self.site_id));
        }
        if entry.cert_fingerprint != self.fingerprint {
            return Err(AccessError::NotCurrent {
                site: self.site_id,
                presented: self.fingerprint,
                issued: entry.cert_fingerprint,
            });
        }
        Ok(self.site_id)
    }
}

/// The site id of a peer whose TLS handshake with [`crate::tls::host_server_config`] succeeded,
/// if the directory lets it connect: call it once per connection, before serving any request.
pub async fn authorize(
    directory: &dyn SiteDirectory,
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<SiteId, AccessError> {
    let peer = SitePeer::of(peer_certificates)?;
    let entry = directory.site(&peer.site_id).await?;
    peer.admit(entry)
}
