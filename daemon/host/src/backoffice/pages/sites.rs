//! 站点管理 (administrators): the sites that may connect (enabled, certificate fingerprint, when
//! each last reported to the host and what then waited in its outbox),
//! enrolling one from its certificate (the site id must be the certificate's, as `cardd-host
//! sites enrol --cert` checks) and 吊销 (revoking: disabling, refused from its next
//! connection on) or enabling it again.

use cardd_fleet::{CertFingerprint, SiteId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, when, Caller, Method, Stores, ADMINS};
use crate::backoffice::error::BackOfficeError;

/// Longest certificate PEM accepted, in bytes.
pub const CERT_PEM_BYTES_MAX: usize = 16 * 1024;

pub const METHODS: &[Method] = &[
    Method {
        name: "sites.list",
        roles: ADMINS,
        changes: false,
        ends_sessions_of: None,
        run: list,
    },
    Method {
        name: "sites.enrol",
        roles: ADMINS,
        changes: true,
        ends_sessions_of: None,
        run: enrol,
    },
    Method {
        name: "sites.set_enabled",
        roles: ADMINS,
        changes: true,
        ends_sessions_of: None,
        run: set_enabled,
    },
];

fn list(stores: &Stores, _: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    let rows: Vec<Value> = stores
        .sites
        .list()?
        .into_iter()
        .map(|s| {
            json!({
                "site_id": s.site_id,
                "enabled": s.enabled,
                "cert_fingerprint": s.cert_fingerprint,
                "updated_at": when(s.updated_at),
                "last_seen_at": s.last_seen_at.map(when),
                "outbox_pending": s.outbox_pending,
            })
        })
        .collect();
    answer(rows)
}

fn site_id(text: &str) -> Result<SiteId, BackOfficeError> {
    text.trim()
        .parse()
        .map_err(|e| BackOfficeError::InvalidParams(format!("站点编号 {text:?} 不正确：{e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrol {
    site_id: String,
    cert_pem: String,
}

/// The fingerprint of `pem` when it is the certificate of `site`.
pub fn certificate_of(site: &SiteId, pem: &str) -> Result<CertFingerprint, BackOfficeError> {
    use rustls::pki_types::pem::PemObject;
    if pem.len() > CERT_PEM_BYTES_MAX {
        return Err(BackOfficeError::InvalidParams(format!(
            "证书过长（最多 {CERT_PEM_BYTES_MAX} 字节）：请只粘贴站点的证书"
        )));
    }
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        BackOfficeError::InvalidParams(
            "不是 PEM 格式的证书：请粘贴 cardd-fleet ca issue-site 生成的 site.crt 全文（以 -----BEGIN CERTIFICATE----- 开头）".into(),
        )
    })?;
    let named = cardd_fleet::site_of_certificate(&der)
        .map_err(|e| BackOfficeError::InvalidParams(format!("证书中没有站点编号：{e}")))?;
    if named != *site {
        return Err(BackOfficeError::Refused(format!(
            "这是站点 {named} 的证书，不是 {site} 的：请粘贴该站点自己的证书"
        )));
    }
    Ok(CertFingerprint::of(&der))
}

fn enrol(stores: &Stores, _: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Enrol = params(p)?;
    let site = site_id(&p.site_id)?;
    let fingerprint = certificate_of(&site, &p.cert_pem)?;
    stores.sites.enrol(&site, &fingerprint)?;
    answer(json!({ "site_id": site.as_str(), "cert_fingerprint": fingerprint.to_string() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetEnabled {
    site_id: String,
    enabled: bool,
}

fn set_enabled(stores: &Stores, _: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: SetEnabled = params(p)?;
    let site = site_id(&p.site_id)?;
    stores.sites.set_enabled(&site, p.enabled)?;
    answer(json!({ "site_id": site.as_str(), "enabled": p.enabled }))
}
