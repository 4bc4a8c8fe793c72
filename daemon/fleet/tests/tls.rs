//! The fleet's mutual TLS over real loopback TCP: the host learns which site connected, and
//! refuses certificates of another CA, clients without a certificate, disabled sites and
//! certificates that were re-issued.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::directory::DirectoryError;
use cardd_fleet::{
    authorize, host_server_config, site_client_config, AccessError, FleetCa, SiteDirectory,
    SiteEntry, SiteId, SiteLookup, TlsFiles,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bound on every network step of a test.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const HOST: &str = "host.fleet.test";
const DAYS: u32 = 30;

/// A site directory in memory.
#[derive(Debug, Default)]
struct Sites(Mutex<HashMap<SiteId, SiteEntry>>);

impl Sites {
    fn set(&self, site: &SiteId, entry: SiteEntry) {
        self.0.lock().unwrap().insert(site.clone(), entry);
    }
}

impl SiteDirectory for Sites {
    fn site<'a>(&'a self, site_id: &'a SiteId) -> SiteLookup<'a> {
        let entry = self.0.lock().unwrap().get(site_id).cloned();
        Box::pin(async move { Ok::<_, DirectoryError>(entry) })
    }
}

fn site(id: &str) -> SiteId {
    id.parse().expect("site id")
}

/// A fleet CA in `dir` with the host's certificate (for `HOST` and 127.0.0.1).
fn fleet(dir: &Path) -> FleetCa {
    FleetCa::init(dir, DAYS).expect("init");
    let ca = FleetCa::open(dir).expect("open");
    ca.issue_host(HOST, &["127.0.0.1".to_owned()], DAYS, false)
        .expect("host");
    ca
}

/// What the host made of one connection: the handshake's error, or the directory's verdict.
#[derive(Debug)]
enum HostSaw {
    Handshake(std::io::Error),
    Refused(AccessError),
    Admitted(SiteId),
}

/// Runs the host for one connection and a site client against it; returns what the host saw
/// and what the client read back (the host answers `welcome <site>` to an admitted site).
async fn connect(
    ca_dir: &Path,
    directory: Arc<Sites>,
    client: ClientConfig,
) -> (HostSaw, std::io::Result<String>) {
    connect_to(host_files(ca_dir, HOST), directory, client).await
}

/// [`connect`] to a host serving with `host`'s files.
async fn connect_to(
    host: TlsFiles,
    directory: Arc<Sites>,
    client: ClientConfig,
) -> (HostSaw, std::io::Result<String>) {
    let server = host_server_config(&host).expect("host config");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let host = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = match acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(e) => return HostSaw::Handshake(e),
        };
        let peer = tls.get_ref().1.peer_certificates();
        match authorize(directory.as_ref(), peer).await {
            Ok(site) => {
                let mut line = [0u8; 4];
                tls.read_exact(&mut line).await.expect("request");
                assert_eq!(&line, b"ping");
                tls.write_all(format!("welcome {site}").as_bytes())
                    .await
                    .expect("answer");
                tls.shutdown().await.expect("shutdown");
                HostSaw::Admitted(site)
            }
            Err(e) => HostSaw::Refused(e),
        }
    });
    let client = async move {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(HOST).expect("server name");
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await?;
        if answer.is_empty() {
            return Err(std::io::Error::other("the host closed without answering"));
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(STEP_TIMEOUT, client)
        .await
        .expect("the client finishes in time");
    let saw = tokio::time::timeout(STEP_TIMEOUT, host)
        .await
        .expect("the host finishes in time")
        .expect("host task");
    (saw, answer)
}

fn enabled(fingerprint: cardd_fleet::CertFingerprint) -> SiteEntry {
    SiteEntry {
        enabled: true,
        cert_fingerprint: fingerprint,
    }
}

#[tokio::test]
async fn a_site_with_its_certificate_connects_and_the_host_learns_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fleet(dir.path());
    let s01 = site("S01");
    let issued = ca.issue_site(&s01, DAYS, false).unwrap();
    let sites = Arc::new(Sites::default());
    sites.set(&s01, enabled(issued.fingerprint));

    let client = site_client_config(&site_files(dir.path(), &s01)).unwrap();
    let (saw, answer) = connect(dir.path(), sites, client).await;
    assert!(
        matches!(saw, HostSaw::Admitted(ref s) if *s == s01),
        "{saw:?}"
    );
    assert_eq!(answer.expect("answer"), "welcome S01");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    fleet(dir.path());
    let stranger = FleetCa::init(other.path(), DAYS)
        .and_then(|_| FleetCa::open(other.path()))
        .unwrap();
    let s01 = site("S01");
    let issued = stranger.issue_site(&s01, DAYS, false).unwrap();
    let sites = Arc::new(Sites::default());
    // Even a directory that lists the stranger's fingerprint never gets asked.
    sites.set(&s01, enabled(issued.fingerprint));

    // The stranger's site trusts the real fleet CA (so the host is not what fails) but
    // presents its own CA's certificate.
    let mut files = site_files(other.path(), &s01);
    files.ca_cert = cardd_fleet::ca::ca_cert_path(dir.path());
    let client = site_client_config(&files).unwrap();
    let (saw, answer) = connect(dir.path(), sites, client).await;
    let HostSaw::Handshake(e) = saw else {
        panic!("the host must refuse the handshake, saw {saw:?}");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(answer.is_err(), "the stranger got an answer: {answer:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path());
    let mut roots = RootCertStore::empty();
    let ca_pem = std::fs::read(cardd_fleet::ca::ca_cert_path(dir.path())).unwrap();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let (saw, answer) = connect(dir.path(), Arc::new(Sites::default()), client).await;
    assert!(matches!(saw, HostSaw::Handshake(_)), "{saw:?}");
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test]
async fn a_disabled_or_unknown_site_is_refused_after_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fleet(dir.path());
    let s02 = site("S02");
    let issued = ca.issue_site(&s02, DAYS, false).unwrap();
    let sites = Arc::new(Sites::default());
    sites.set(
        &s02,
        SiteEntry {
            enabled: false,
            cert_fingerprint: issued.fingerprint,
        },
    );
    let client = || site_client_config(&site_files(dir.path(), &s02)).unwrap();

    let (saw, answer) = connect(dir.path(), sites.clone(), client()).await;
    assert!(
        matches!(saw, HostSaw::Refused(AccessError::Disabled(ref s)) if *s == s02),
        "{saw:?}"
    );
    assert!(answer.is_err(), "a disabled site got an answer: {answer:?}");

    let (saw, _) = connect(dir.path(), Arc::new(Sites::default()), client()).await;
    assert!(
        matches!(saw, HostSaw::Refused(AccessError::UnknownSite(ref s)) if *s == s02),
        "{saw:?}"
    );

    sites.set(&s02, enabled(issued.fingerprint));
    let (saw, answer) = connect(dir.path(), sites, client()).await;
    assert!(matches!(saw, HostSaw::Admitted(_)), "{saw:?}");
    assert_eq!(answer.unwrap(), "welcome S02");
}

#[tokio::test]
async fn a_reissued_certificate_makes_the_old_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fleet(dir.path());
    let s03 = site("S03");
    let first = ca.issue_site(&s03, DAYS, false).unwrap();
    let old_client = site_client_config(&site_files(dir.path(), &s03)).unwrap();

    let refused = ca.issue_site(&s03, DAYS, false).unwrap_err();
    assert!(refused.to_string().contains("--replace"), "{refused}");
    let second = ca.issue_site(&s03, DAYS, true).unwrap();
    assert_ne!(first.fingerprint, second.fingerprint);
    let sites = Arc::new(Sites::default());
    sites.set(&s03, enabled(second.fingerprint));

    let (saw, answer) = connect(dir.path(), sites.clone(), old_client).await;
    match saw {
        HostSaw::Refused(AccessError::NotCurrent {
            site,
            presented,
            issued,
        }) => {
            assert_eq!(site, s03);
            assert_eq!(presented, first.fingerprint);
            assert_eq!(issued, second.fingerprint);
        }
        other => panic!("the old certificate must be refused, host saw {other:?}"),
    }
    assert!(answer.is_err(), "{answer:?}");

    let new_client = site_client_config(&site_files(dir.path(), &s03)).unwrap();
    let (saw, answer) = connect(dir.path(), sites, new_client).await;
    assert!(matches!(saw, HostSaw::Admitted(_)), "{saw:?}");
    assert_eq!(answer.unwrap(), "welcome S03");
}

#[tokio::test]
async fn a_host_certificate_is_no_site_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fleet(dir.path());
    ca.issue_host("other.fleet.test", &[], DAYS, false).unwrap();
    // A client presenting a host's certificate (signed by the fleet CA, but for server use).
    let client = site_client_config(&host_files(dir.path(), "other.fleet.test")).unwrap();
    let (saw, answer) = connect(dir.path(), Arc::new(Sites::default()), client).await;
    assert!(matches!(saw, HostSaw::Handshake(_)), "{saw:?}");
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test]
async fn a_site_trusts_only_a_host_certified_by_its_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let ca = fleet(dir.path());
    fleet(other.path());
    let s01 = site("S01");
    let issued = ca.issue_site(&s01, DAYS, false).unwrap();
    let sites = Arc::new(Sites::default());
    sites.set(&s01, enabled(issued.fingerprint));
    // A host with another fleet's certificate, willing to accept this fleet's sites.
    let mut impostor = host_files(other.path(), HOST);
    impostor.ca_cert = cardd_fleet::ca::ca_cert_path(dir.path());
    let client = site_client_config(&site_files(dir.path(), &s01)).unwrap();
    let (saw, answer) = connect_to(impostor, sites, client).await;
    let err = answer.expect_err("the site must refuse the impostor host");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(matches!(saw, HostSaw::Handshake(_)), "{saw:?}");
}
