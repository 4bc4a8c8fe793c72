//! The back office's methods, one module per page: each module owns its page's methods
//! ([`Method`]: name, roles, whether it changes something, the work). Adding a page is one
//! module here plus one entry in [`PAGES`] (and its script under `clients/web/host/pages/`).
//!
//! Every method runs on a thread of its own (never on the async threads): the stores block.
//! A method that changes something is recorded in the `host` audit chain by the caller
//! ([`super::BackOffice`]) before [`Method::run`] is called.

use std::sync::Arc;

use cardd_api::Role;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::BackOfficeError;

pub mod account;
pub mod audit;
pub mod operators;
pub mod records;
pub mod refunds;
pub mod review;
pub mod sites;
pub mod topups;

/// What the methods work on: the host's stores.
#[derive(Clone)]
pub struct Stores {
    pub operators: Arc<cardd_store_pg::PgOperators>,
    pub audit: Arc<cardd_store_pg::PgAudit>,
    pub groups: Arc<dyn cardd_group::GroupHost>,
    pub ledger: Arc<cardd_store_pg::PgLedger>,
    pub sites: Arc<cardd_store_pg::PgSites>,
    pub records: Arc<dyn cardd_etc::IssuerHost>,
    /// 待核对: people's verdicts on loads no card settled.
    pub review: Arc<cardd_store_pg::PgReview>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// Who calls: the session's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub display_name: String,
    pub role: Role,
}

impl Caller {
    /// The audit log's actor: `后台:<user>`.
    pub fn actor(&self) -> String {
        format!("后台:{}", self.username)
    }
}

/// One back-office method.
#[derive(Debug)]
pub struct Method {
    pub name: &'static str,
    /// The roles that may call it.
    pub roles: &'static [Role],
    /// Whether it changes something (recorded in the audit log before it acts).
    pub changes: bool,
    /// When it succeeds, the sessions of the user its params name under this key end
    /// (an operator disabled or given a new password).
    pub ends_sessions_of: Option<&'static str>,
    pub run: fn(&Stores, &Caller, Value) -> Result<Value, BackOfficeError>,
}

/// The roles that may log in to the back office.
pub const BACK_OFFICE_ROLES: &[Role] = &[Role::Admin, Role::Auditor, Role::Supervisor];
/// Auditors.
pub const AUDITORS: &[Role] = &[Role::Auditor];
/// Administrators.
pub const ADMINS: &[Role] = &[Role::Admin];
/// Auditors and administrators.
pub const AUDITORS_AND_ADMINS: &[Role] = &[Role::Auditor, Role::Admin];

/// Every page's methods.
pub const PAGES: &[&[Method]] = &[
    account::METHODS,
    topups::METHODS,
    refunds::METHODS,
    review::METHODS,
    records::METHODS,
    operators::METHODS,
    sites::METHODS,
    audit::METHODS,
];

/// The method called `name`.
pub fn find(name: &str) -> Option<&'static Method> {
    PAGES.iter().flat_map(|p| p.iter()).find(|m| m.name == name)
}

/// Whether `role` may call `method`; the refusal says who may.
pub fn authorize(method: &Method, role: Role) -> Result<(), BackOfficeError> {
    if method.roles.contains(&role) {
        return Ok(());
    }
    Err(BackOfficeError::Forbidden {
        role: role.label_zh(),
        needs: method
            .roles
            .iter()
            .map(|r| r.label_zh())
            .collect::<Vec<_>>()
            .join("或"),
    })
}

/// The params of a method, or the refusal naming what is wrong.
pub fn params<P: DeserializeOwned>(value: Value) -> Result<P, BackOfficeError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    serde_json::from_value(value).map_err(|e| BackOfficeError::InvalidParams(e.to_string()))
}

/// A JSON answer.
pub fn answer<T: serde::Serialize>(value: T) -> Result<Value, BackOfficeError> {
    serde_json::to_value(value).map_err(|e| BackOfficeError::Internal(e.to_string()))
}

/// Fen as the pages show money: decimal yuan.
pub fn yuan(fen: i64) -> String {
    cardd_api::Fen(fen).to_yuan_string()
}

/// A time as the pages show it: RFC 3339 at +08:00.
pub fn when(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A required text param: trimmed, not empty, at most `chars_max` characters.
pub fn text(value: &str, what: &str, chars_max: usize) -> Result<String, BackOfficeError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(BackOfficeError::InvalidParams(format!("请填写{what}")));
    }
    if value.chars().count() > chars_max || value.chars().any(char::is_control) {
        return Err(BackOfficeError::InvalidParams(format!(
            "{what}最多 {chars_max} 个字符，且不能含控制字符"
        )));
    }
    Ok(value.to_owned())
}

/// Longest reason (审核意见) an auditor writes, in characters.
pub const REASON_CHARS_MAX: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique_and_every_change_is_named_as_such() {
        let mut names: Vec<&str> = PAGES
            .iter()
            .flat_map(|p| p.iter())
            .map(|m| m.name)
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate method names");
        for m in PAGES.iter().flat_map(|p| p.iter()) {
            assert!(!m.roles.is_empty(), "{}", m.name);
            for r in m.roles {
                assert!(BACK_OFFICE_ROLES.contains(r), "{}: {r:?}", m.name);
            }
            let reads = [".list", ".pending", ".query", ".verify", ".whoami"];
            assert_eq!(
                m.changes,
                !reads.iter().any(|s| m.name.ends_with(s)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn roles_are_checked_per_method() {
        let audit = find("topups.audit").expect("topups.audit");
        assert!(authorize(audit, Role::Auditor).is_ok());
        for role in [Role::Admin, Role::Supervisor, Role::Teller] {
            let e = authorize(audit, role).expect_err("refused");
            assert!(e.to_string().contains("需要审核员"), "{e}");
        }
        let enrol = find("sites.enrol").expect("sites.enrol");
        assert!(authorize(enrol, Role::Admin).is_ok());
        assert!(authorize(enrol, Role::Auditor).is_err());
        let records = find("records.query").expect("records.query");
        for role in BACK_OFFICE_ROLES {
            assert!(authorize(records, *role).is_ok());
        }
        let log = find("audit.list").expect("audit.list");
        assert!(authorize(log, Role::Supervisor).is_err());
        assert!(find("nothing.here").is_none());
    }
}
