//! `auth.*`: logging in and out, the session, one's own password.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::{redacted_debug, Done, NoParams};
use crate::Role;

/// `auth.login`
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginParams {
    pub username: String,
    pub password: String,
}
redacted_debug!(LoginParams, "LoginParams");

/// What `auth.login` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoginResult {
    /// Send as `Authorization: Bearer <token>` (or `?token=` on a WebSocket upgrade).
    pub token: String,
    pub operator: SessionView,
    /// The session ends after this many seconds without a request.
    pub idle_timeout_s: u64,
}

/// The logged-in operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionView {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// The role's zh-CN name.
    pub role_label: String,
    pub group_id: Option<String>,
}

/// What `auth.whoami` returns: the operator, the session rule a client warns about, and the
/// password rule 修改密码 states up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    #[serde(flatten)]
    pub operator: SessionView,
    /// The session ends after this many seconds without a request.
    pub idle_timeout_s: u64,
    /// The fewest characters a new password may have.
    pub password_chars_min: usize,
    /// The most characters a new password may have.
    pub password_chars_max: usize,
}

/// `auth.change_password`: the seed's 原密码 / 新密码 / 确认密码.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordParams {
    pub old_password: String,
    pub new_password: String,
    pub confirm_password: String,
}
redacted_debug!(ChangePasswordParams, "ChangePasswordParams");

/// Why a session ended; sent as the last notification of its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The operator logged out (`auth.logout`).
    LoggedOut,
    /// The session was unused for `auth.session_idle_timeout_s`.
    IdleTimeout,
    /// An administrator disabled the operator.
    OperatorDisabled,
    /// An administrator reset the operator's password.
    PasswordReset,
    /// The operator changed their password in another session.
    PasswordChanged,
    /// An administrator changed the operator's role or group.
    RoleChanged,
    /// The session was ended to make room for a new login.
    Evicted,
}

crate::method!(
    /// Log in with user name and password; returns a bearer token.
    Login, "auth.login", LoginParams => LoginResult
);
crate::method!(
    /// End the current session.
    Logout, "auth.logout", NoParams => Done
);
crate::method!(
    /// The logged-in operator, with the rule a new password must follow.
    Whoami, "auth.whoami", NoParams => WhoAmI
);
crate::method!(
    /// Change the logged-in operator's password; other sessions end.
    ChangePassword, "auth.change_password", ChangePasswordParams => Done
);
