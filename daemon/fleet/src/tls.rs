//! The rustls configurations of the fleet: the host requires a client certificate signed by the
//! fleet CA; a site presents its certificate and trusts only the fleet CA. TLS 1.3 only, on the
//! ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::files::{self, FileError, Secrecy, TlsFiles};

/// Most certificates read from one PEM file (a certificate and a few intermediates at most).
pub const PEM_CERTIFICATES_MAX: usize = 8;

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading a file.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file without the PEM contents expected.
    #[error(
        "{path} holds no PEM {what}; give the file `cardd-fleet ca` wrote (issue it again if lost)"
    )]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
    /// rustls refused the certificates or key.
    #[error(
        "TLS refused the certificate or key: {0}; check that the certificate and key are a pair \
         issued by the fleet CA"
    )]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("the fleet CA cannot verify clients: {0}; check the CA certificate file")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider of the fleet's TLS: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = files::read(path, Secrecy::Public)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .take(PEM_CERTIFICATES_MAX)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty());
    certs.ok_or_else(|| TlsError::BadPem {
        path: path.to_owned(),
        what: "certificate",
    })
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = files::read(path, Secrecy::Private)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::BadPem {
        path: path.to_owned(),
        what: "private key",
    })
}

fn fleet_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// The host's server configuration: it presents `files.cert` and accepts only clients whose
/// certificate the fleet CA (`files.ca_cert`) signed. Which site a client is, and whether it
/// may connect, is decided after the handshake (`directory::authorize`). Set ALPN and
/// the like on the result as the transport needs.
pub fn host_server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(fleet_roots(&files.ca_cert)?, provider.clone())
            .build()?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&files.cert)?, private_key(&files.key)?)?)
}

/// A site's client configuration: it presents the site's certificate (`files.cert`) and trusts
/// only a host whose certificate the fleet CA (`files.ca_cert`) signed.
pub fn site_client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(fleet_roots(&files.ca_cert)?)
        .with_client_auth_cert(certificates(&files.cert)?, private_key(&files.key)?)?)
}
