//! 操作员管理 (administrators): the fleet's operators (one account for every site): list,
//! create (with a group for a group operator), disable/enable, reset a password. The store
//! keeps the rules (names, passwords, roles) and records every change in the host chain too;
//! disabling an operator or resetting their password ends their back-office sessions, and the
//! sites end theirs within seconds (`operators.status`).

use cardd_api::operators::NewOperator;
use cardd_api::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, Caller, Method, Stores, ADMINS};
use crate::backoffice::error::BackOfficeError;

pub const METHODS: &[Method] = &[
    Method {
        name: "operators.list",
        roles: ADMINS,
        changes: false,
        ends_sessions_of: None,
        run: list,
    },
    Method {
        name: "operators.create",
        roles: ADMINS,
        changes: true,
        ends_sessions_of: None,
        run: create,
    },
    Method {
        name: "operators.set_disabled",
        roles: ADMINS,
        changes: true,
        ends_sessions_of: Some("username"),
        run: set_disabled,
    },
    Method {
        name: "operators.reset_password",
        roles: ADMINS,
        changes: true,
        ends_sessions_of: Some("username"),
        run: reset_password,
    },
];

fn list(stores: &Stores, _: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    let rows: Vec<Value> = stores
        .operators
        .list()?
        .into_iter()
        .map(|o| {
            json!({
                "username": o.username,
                "display_name": o.display_name,
                "role": o.role.as_str(),
                "role_label": o.role.label_zh(),
                "group_id": o.group_id,
                "disabled": o.disabled,
                "created_at": o.created_at,
            })
        })
        .collect();
    answer(json!({
        "operators": rows,
        "roles": Role::ALL.iter().map(|r| json!({"role": r.as_str(), "label": r.label_zh()})).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    username: String,
    display_name: String,
    role: String,
    #[serde(default)]
    group_id: Option<String>,
    password: String,
}

fn create(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Create = params(p)?;
    let role = Role::parse(&p.role)
        .ok_or_else(|| BackOfficeError::InvalidParams(format!("没有角色 {}", p.role)))?;
    let group_id = p.group_id.filter(|g| !g.trim().is_empty());
    let created = stores.operators.create(
        &NewOperator {
            username: p.username.trim().to_owned(),
            display_name: if p.display_name.trim().is_empty() {
                p.username.trim().to_owned()
            } else {
                p.display_name.trim().to_owned()
            },
            role,
            group_id,
            password: p.password,
        },
        &caller.actor(),
    )?;
    answer(json!({ "username": created.username, "role_label": created.role.label_zh() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDisabled {
    username: String,
    disabled: bool,
}

fn set_disabled(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: SetDisabled = params(p)?;
    if p.disabled && p.username == caller.username {
        return Err(BackOfficeError::Refused(
            "不能停用自己：请由另一位管理员停用".into(),
        ));
    }
    stores
        .operators
        .set_disabled(&p.username, p.disabled, &caller.actor())?;
    answer(json!({ "username": p.username, "disabled": p.disabled }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetPassword {
    username: String,
    password: String,
}

fn reset_password(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: ResetPassword = params(p)?;
    stores
        .operators
        .reset_password(&p.username, &p.password, &caller.actor())?;
    answer(json!({ "username": p.username }))
}
