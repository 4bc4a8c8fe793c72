//! 登录 / 退出 / 修改密码: the session's own account. `auth.login` and `auth.logout` are the
//! server's (they make and end sessions, [`crate::backoffice::BackOffice`]); these are the
//! logged-in operator's: who am I, and a new password (the old one checked first).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, Caller, Method, Stores, BACK_OFFICE_ROLES};
use crate::backoffice::error::BackOfficeError;

pub const METHODS: &[Method] = &[
    Method {
        name: "auth.whoami",
        roles: BACK_OFFICE_ROLES,
        changes: false,
        ends_sessions_of: None,
        run: whoami,
    },
    Method {
        name: "auth.change_password",
        roles: BACK_OFFICE_ROLES,
        changes: true,
        ends_sessions_of: None,
        run: change_password,
    },
];

/// The logged-in operator and the pages their role opens.
pub fn whoami(_: &Stores, caller: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    answer(json!({
        "username": caller.username,
        "display_name": caller.display_name,
        "role": caller.role.as_str(),
        "role_label": caller.role.label_zh(),
        "methods": super::PAGES.iter().flat_map(|p| p.iter())
            .filter(|m| m.roles.contains(&caller.role))
            .map(|m| m.name)
            .collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    old_password: String,
    new_password: String,
}

fn change_password(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: ChangePassword = params(p)?;
    stores
        .operators
        .verify(&caller.username, &p.old_password)
        .map_err(|e| match e {
            cardd_store_pg::OperatorError::InvalidCredentials => {
                BackOfficeError::Refused("原密码不正确，密码未修改".into())
            }
            other => other.into(),
        })?;
    stores
        .operators
        .reset_password(&caller.username, &p.new_password, &caller.actor())?;
    answer(json!({ "changed": true }))
}
