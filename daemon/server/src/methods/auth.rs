//! `auth.*` and `operators.*`: logging in and out, passwords, and the operators an
//! administrator manages. Every password is hashed off the async threads ([`hashing`]).
//!
//! A fleet site keeps no operators: a login's password is checked at the issuer host
//! (`operators.verify`) and then a session opens here as for a local login (this site's
//! throttling, session limits and audit); a host that does not answer refuses the login with
//! 无法连接发卡方后台…, never as a wrong password. Operator administration (create, disable,
//! role, password resets and changes) is refused: it is done at the host (`cardd-host
//! operators …`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::audit::AuditEntry;
use crate::auth::{AuthError, NewOperator, Operator, Session};
use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::rpc::{
    audit_as_json, hashing, Access, AuditDetail, Methods, NoParams, ADMIN, ALL_OPERATORS,
};
use cardd_api::auth::{ChangePasswordParams, LoginParams, LoginResult, SessionView, WhoAmI};
use cardd_api::operators::{ResetPasswordParams, SetDisabledParams, SetRoleParams};
use cardd_api::Done;

impl AuditDetail for LoginParams {
    fn audit_detail(&self) -> Value {
        Value::Null
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.chars().take(64).collect())
    }
}

/// An operator's display name (姓名) as people read it, for views that name who acted; the
/// daemon's own actions are 系统's, and an unknown user name is shown as it is.
pub(crate) fn operator_name(d: &Daemon, username: &str) -> String {
    if username == "cardd" {
        return "系统".into();
    }
    d.auth
        .get_operator(username)
        .map(|o| o.display_name)
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| username.to_owned())
}

impl AuditDetail for ChangePasswordParams {
    fn audit_detail(&self) -> Value {
        Value::Null
    }
}

impl AuditDetail for NewOperator {
    fn audit_detail(&self) -> Value {
        json!({ "username": self.username, "display_name": self.display_name, "role": self.role, "group_id": self.group_id })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.clone())
    }
}

audit_as_json!(SetDisabledParams, username);

audit_as_json!(SetRoleParams, username);

impl AuditDetail for ResetPasswordParams {
    fn audit_detail(&self) -> Value {
        json!({ "username": self.username })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.clone())
    }
}

/// A login as `action` (`auth.login`, `group.login`), audited by itself: the throttle is asked
/// first (a growing, capped wait per user name and per source), the password is checked off the
/// async threads within the hashing slots, a session `accept` refuses is ended at once and
/// counted as a wrong password, every failure is counted into one audit record per source and
/// interval (`RefusalDigest`), and a success is one audit record, without which there is no
/// session.
pub(crate) async fn login(
    d: &Arc<Daemon>,
    source: &str,
    username: String,
    password: String,
    action: &'static str,
    accept: impl FnOnce(&Session) -> bool,
) -> Result<Session, ApiError> {
    let shown: String = username.chars().take(64).collect();
    let attempt = async {
        d.auth
            .check_login_allowed(&username, source, Instant::now())?;
        let source = source.to_owned();
        let session = hashing(d, move |d| match &d.fleet {
            // A fleet site: the issuer host checks the password; throttling and sessions stay
            // this site's.
            Some(fleet) => d
                .auth
                .login_verified_by(&username, &source, Instant::now(), || {
                    fleet
                        .operators
                        .verify(&username, &password)
                        .map_err(host_login_error)
                }),
            None => d.auth.login(&username, &password, &source, Instant::now()),
        })
        .await?;
        if accept(&session) {
            Ok(session)
        } else {
            d.auth.logout(&session.token);
            Err(ApiError::from(AuthError::InvalidCredentials))
        }
    };
    let session = match attempt.await {
        Ok(session) => session,
        Err(e) => {
            let audit = d.clone();
            let (code, user, source) = (e.code.name().to_owned(), shown.clone(), source.to_owned());
            let _ = tokio::task::spawn_blocking(move || {
                let entries =
                    audit
                        .refusals
                        .refused(&source, action, Some(&user), &code, Instant::now());
                audit.audit_refusals(entries);
            })
            .await;
            return Err(e);
        }
    };
    let entry = AuditEntry {
        operator: Some(session.username.clone()),
        role: Some(session.role),
        action: action.into(),
        target: Some(shown),
        detail: json!({ "source": source }),
        outcome: "ok".into(),
    };
    let record = {
        let d = d.clone();
        tokio::task::spawn_blocking(move || d.audit.append(entry)).await
    };
    if !matches!(record, Ok(Ok(_))) {
        // No audit record, no session.
        d.auth.logout(&session.token);
        return Err(ApiError::internal(
            "could not write the audit log, the login was not completed",
        ));
    }
    Ok(session)
}

/// The issuer host's failure to check a password as the login's error: no answer is
/// [`AuthError::HostUnreachable`] (never a wrong password); another refusal keeps its message.
fn host_login_error(e: cardd_hostlink::RemoteOperatorError) -> AuthError {
    match e {
        cardd_hostlink::RemoteOperatorError::Unreachable(detail) => {
            tracing::warn!(%detail, "login: the issuer host did not answer");
            AuthError::HostUnreachable(detail)
        }
        cardd_hostlink::RemoteOperatorError::Remote { message, .. } => {
            AuthError::Internal(format!("发卡方后台：{message}"))
        }
    }
}

/// Fails with [`AuthError::ManagedAtHost`] at a fleet site: its operators are the host's.
fn managed_here(d: &Daemon) -> Result<(), AuthError> {
    if d.fleet.is_some() {
        return Err(AuthError::ManagedAtHost);
    }
    Ok(())
}

/// Adds these methods.
pub fn add(m: &mut Methods) {
    // Audited here, not by the generic path (see `call`): a success is one record, failures are
    // counted into one record per source and interval (`RefusalDigest`).
    m.method::<cardd_api::auth::Login, _, _>(
        "Log in with user name and password; returns a bearer token.",
        Access::Public,
        true,
        |d, c, p: LoginParams| async move {
            let session =
                login(&d, &c.peer, p.username, p.password, "auth.login", |_| true).await?;
            tracing::info!(operator = %session.username, role = session.role.as_str(), "login");
            Ok(LoginResult {
                token: session.token.clone(),
                operator: SessionView::from(&session),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
            })
        },
    );

    m.method::<cardd_api::auth::Logout, _, _>(
        "End the current session.",
        ALL_OPERATORS,
        true,
        |d, c, _: NoParams| async move {
            d.auth.logout(&c.session()?.token);
            Ok(Done {
                ok: true,
                message: "已退出登录".into(),
            })
        },
    );

    m.method::<cardd_api::auth::Whoami, _, _>(
        "The logged-in operator, with the rule a new password must follow.",
        ALL_OPERATORS,
        false,
        |d, c, _: NoParams| async move {
            Ok(WhoAmI {
                operator: SessionView::from(c.session()?),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
                password_chars_min: d.auth.password_chars_min(),
                password_chars_max: crate::auth::PASSWORD_CHARS_MAX,
            })
        },
    );

    m.method::<cardd_api::auth::ChangePassword, _, _>(
        "Change the logged-in operator's password (原密码, 新密码, 确认密码); other sessions end.",
        ALL_OPERATORS,
        true,
        |d, c, p: ChangePasswordParams| async move {
            let token = c.session()?.token.clone();
            managed_here(&d)?;
            hashing(&d, move |d| {
                d.auth.change_password(
                    &token,
                    &p.old_password,
                    &p.new_password,
                    &p.confirm_password,
                    Instant::now(),
                )
            })
            .await?;
            Ok(Done {
                ok: true,
                message: "密码已修改".into(),
            })
        },
    );

    m.method::<cardd_api::operators::List, _, _>(
        "All operators.",
        ADMIN,
        false,
        |d, _, _: NoParams| async move { Ok::<Vec<Operator>, ApiError>(d.auth.list_operators()?) },
    );

    m.method::<cardd_api::operators::Create, _, _>(
        "Create an operator with a role (and a group for group operators).",
        ADMIN,
        true,
        |d, _, p: NewOperator| async move {
            managed_here(&d)?;
            hashing(&d, move |d| d.auth.create_operator(p)).await
        },
    );

    m.method::<cardd_api::operators::SetDisabled, _, _>(
        "Disable or re-enable an operator; a disabled operator cannot log in.",
        ADMIN,
        true,
        |d, _, p: SetDisabledParams| async move {
            managed_here(&d)?;
            Ok(d.auth.set_disabled(&p.username, p.disabled)?)
        },
    );

    m.method::<cardd_api::operators::SetRole, _, _>(
        "Change an operator's role (and group, for group operators); their sessions end.",
        ADMIN,
        true,
        |d, _, p: SetRoleParams| async move {
            managed_here(&d)?;
            Ok(d.auth.set_role(&p.username, p.role, p.group_id)?)
        },
    );

    m.method::<cardd_api::operators::ResetPassword, _, _>(
        "Set an operator's password (their sessions end).",
        ADMIN,
        true,
        |d, _, p: ResetPasswordParams| async move {
            managed_here(&d)?;
            hashing(&d, move |d| {
                d.auth.reset_password(&p.username, &p.new_password)
            })
            .await?;
            Ok(Done {
                ok: true,
                message: "密码已重置".into(),
            })
        },
    );
}
