//! The CA tool's files: keys owner-only, nothing overwritten, certificates naming what they
//! should.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cardd_fleet::ca::{ca_cert_path, host_files, site_files, CaError};
use cardd_fleet::files::FileError;
use cardd_fleet::{site_of_certificate, CertFingerprint, FleetCa, SiteId, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[test]
fn key_files_are_not_readable_by_group_or_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("fleet");
    let ca_issued = FleetCa::init(&ca_dir, 365).unwrap();
    let ca = FleetCa::open(&ca_dir).unwrap();
    let host = ca.issue_host("host.example", &[], 30, false).unwrap();
    let s01: SiteId = "S01".parse().unwrap();
    let site = ca.issue_site(&s01, 30, false).unwrap();
    let reissued = ca.issue_site(&s01, 30, true).unwrap();
    for key in [&ca_issued.key, &host.key, &site.key, &reissued.key] {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    assert_eq!(mode(&ca_dir) & 0o077, 0);
    assert_eq!(mode(&site.cert), 0o644);
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::init(dir.path(), 365).unwrap();
    let ca = FleetCa::open(dir.path()).unwrap();
    let s01: SiteId = "S01".parse().unwrap();
    let issued = ca.issue_site(&s01, 30, false).unwrap();
    std::fs::set_permissions(&issued.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = cardd_fleet::site_client_config(&site_files(dir.path(), &s01)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::File(FileError::KeyReadableByOthers { mode: 0o644, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::set_permissions(
        dir.path().join("ca.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let err = FleetCa::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, CaError::File(FileError::KeyReadableByOthers { .. })),
        "{err}"
    );
}

#[test]
fn an_existing_ca_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let first = FleetCa::init(dir.path(), 365).unwrap();
    let before = std::fs::read(&first.key).unwrap();
    let err = FleetCa::init(dir.path(), 365).unwrap_err();
    assert!(matches!(err, CaError::AlreadyExists(_)), "{err}");
    assert_eq!(std::fs::read(&first.key).unwrap(), before);
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        FleetCa::open(empty.path()),
        Err(CaError::Missing(_))
    ));
}

#[test]
fn a_ca_key_that_is_not_the_certificates_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    FleetCa::init(a.path(), 365).unwrap();
    FleetCa::init(b.path(), 365).unwrap();
    std::fs::copy(b.path().join("ca.key"), a.path().join("ca.key")).unwrap();
    let err = FleetCa::open(a.path()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
}

#[test]
fn certificates_name_their_site_and_carry_the_printed_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::init(dir.path(), 365).unwrap();
    let ca = FleetCa::open(dir.path()).unwrap();
    let kiosk: SiteId = "kiosk-07".parse().unwrap();
    let issued = ca.issue_site(&kiosk, 30, false).unwrap();
    let der = cert_der(&issued.cert);
    assert_eq!(site_of_certificate(&der).unwrap(), kiosk);
    assert_eq!(CertFingerprint::of(&der), issued.fingerprint);
    // Neither the CA's nor a host's certificate names a site.
    assert!(site_of_certificate(&cert_der(&ca_cert_path(dir.path()))).is_err());
    ca.issue_host("h.example", &["10.0.0.1".into()], 30, false)
        .unwrap();
    assert!(site_of_certificate(&cert_der(&host_files(dir.path(), "h.example").cert)).is_err());
}

#[test]
fn out_of_range_inputs_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        FleetCa::init(dir.path(), 0),
        Err(CaError::Validity { .. })
    ));
    FleetCa::init(dir.path(), 365).unwrap();
    let ca = FleetCa::open(dir.path()).unwrap();
    let s: SiteId = "S01".parse().unwrap();
    let err = ca.issue_site(&s, 100_000, false).unwrap_err();
    assert!(err.to_string().contains("1 to 3650 days"), "{err}");
    for bad in ["../etc", "", "a b", "-x"] {
        assert!(
            matches!(
                ca.issue_host(bad, &[], 30, false),
                Err(CaError::BadHostName(_))
            ),
            "{bad}"
        );
    }
    let many: Vec<String> = (0..20).map(|i| format!("h{i}.example")).collect();
    assert!(matches!(
        ca.issue_host("h.example", &many, 30, false),
        Err(CaError::TooManyNames(21))
    ));
}
