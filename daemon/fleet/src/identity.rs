//! Who a certificate names: a site's id (carried in the certificate as the subject alternative
//! name URI `cardd-site:<site id>`) and a certificate's fingerprint (SHA-256 of its DER).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::der;

/// The URI scheme of a site's identity in its certificate: `cardd-site:S01`.
pub const SITE_URI_SCHEME: &str = "cardd-site:";

/// Longest site id, in characters.
pub const SITE_ID_CHARS_MAX: usize = 32;

/// A site's id: 1 to [`SITE_ID_CHARS_MAX`] ASCII letters, digits, `-` or `_` (so it is also a
/// file name and a URI without escaping).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(String);

/// Why a text is not a site id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a site id: use 1 to {SITE_ID_CHARS_MAX} ASCII letters, digits, `-` or `_` \
     (for example S01)"
)]
pub struct SiteIdError(pub String);

impl SiteId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI that names this site in its certificate.
    pub fn uri(&self) -> String {
        format!("{SITE_URI_SCHEME}{}", self.0)
    }
}

impl FromStr for SiteId {
    type Err = SiteIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= SITE_ID_CHARS_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(SiteId(s.to_owned()))
        } else {
            Err(SiteIdError(s.chars().take(SITE_ID_CHARS_MAX * 2).collect()))
        }
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate's SHA-256 fingerprint (of its DER encoding), shown as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a certificate fingerprint: give the 64 hex digits `cardd-fleet fingerprint` prints")]
pub struct FingerprintError;

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(cert_der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for CertFingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| FingerprintError)?;
        Ok(CertFingerprint(out))
    }
}

/// Why a certificate does not name one site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteIdentityError {
    /// Not a certificate this crate can read.
    #[error(
        "the certificate cannot be read; issue the site a new one with `cardd-fleet ca issue-site`"
    )]
    Unreadable,
    /// No `cardd-site:` URI.
    #[error(
        "the certificate names no site (no `{SITE_URI_SCHEME}` subject alternative name); \
         issue the site's certificate with `cardd-fleet ca issue-site`"
    )]
    NoSite,
    /// More than one `cardd-site:` URI.
    #[error("the certificate names more than one site; issue each site its own certificate")]
    SeveralSites,
    /// A `cardd-site:` URI whose id is not a site id.
    #[error("the certificate's site identity is malformed: {0}")]
    BadSiteId(#[from] SiteIdError),
}

/// The site a DER-encoded certificate names, from its one `cardd-site:` URI.
pub fn site_of_certificate(cert_der: &[u8]) -> Result<SiteId, SiteIdentityError> {
    let uris = der::san_uris(cert_der).ok_or(SiteIdentityError::Unreadable)?;
    let mut sites = uris.iter().filter_map(|u| u.strip_prefix(SITE_URI_SCHEME));
    let site = sites.next().ok_or(SiteIdentityError::NoSite)?;
    if sites.next().is_some() {
        return Err(SiteIdentityError::SeveralSites);
    }
    Ok(site.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_short_plain_names() {
        for ok in ["S01", "kiosk-7", "a_b", &"x".repeat(SITE_ID_CHARS_MAX)] {
            assert_eq!(ok.parse::<SiteId>().expect(ok).as_str(), ok);
        }
        for bad in [
            "",
            "a b",
            "../x",
            "站点",
            "a/b",
            &"x".repeat(SITE_ID_CHARS_MAX + 1),
        ] {
            assert!(bad.parse::<SiteId>().is_err(), "{bad}");
        }
        assert_eq!("S01".parse::<SiteId>().unwrap().uri(), "cardd-site:S01");
    }

    #[test]
    fn fingerprints_print_and_parse_as_hex() {
        let f = CertFingerprint::of(b"certificate");
        assert_eq!(f.to_string().len(), 64);
        assert_eq!(f.to_string().parse::<CertFingerprint>(), Ok(f));
        assert_eq!("00".parse::<CertFingerprint>(), Err(FingerprintError));
    }
}
