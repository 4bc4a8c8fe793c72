//! `operators.*`: the operators an administrator manages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::{redacted_debug, Done, NoParams};
use crate::Role;

/// An operator as the API shows it (the password hash stays inside the daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Operator {
    /// Login name: 1 to 32 of `[A-Za-z0-9_.-]`.
    pub username: String,
    /// Name shown to people, at most 64 characters.
    pub display_name: String,
    /// What the operator may do.
    pub role: Role,
    /// The group a group operator acts for; `None` for every other role.
    pub group_id: Option<String>,
    /// A disabled operator cannot log in.
    pub disabled: bool,
    /// When the operator was created, RFC 3339 UTC.
    pub created_at: String,
    /// When the password was last set, RFC 3339 UTC.
    pub password_changed_at: String,
}

/// What an administrator supplies to create an operator. Serialising it leaves the password
/// out, so it can go into the audit log as it is.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOperator {
    /// See [`Operator::username`].
    pub username: String,
    /// See [`Operator::display_name`].
    pub display_name: String,
    /// See [`Operator::role`].
    pub role: Role,
    /// See [`Operator::group_id`].
    pub group_id: Option<String>,
    /// The initial password (never serialised).
    #[serde(skip_serializing)]
    pub password: String,
}

impl std::fmt::Debug for NewOperator {
    /// Leaves the password out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOperator")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

/// `operators.set_disabled`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDisabledParams {
    pub username: String,
    pub disabled: bool,
}

/// `operators.set_role`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleParams {
    pub username: String,
    pub role: Role,
    /// The group, for a group operator only.
    #[serde(default)]
    pub group_id: Option<String>,
}

/// `operators.reset_password`
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordParams {
    pub username: String,
    pub new_password: String,
}
redacted_debug!(ResetPasswordParams, "ResetPasswordParams");

crate::method!(
    /// All operators.
    List, "operators.list", NoParams => Vec<Operator>
);
crate::method!(
    /// Create an operator with a role (and a group for group operators).
    Create, "operators.create", NewOperator => Operator
);
crate::method!(
    /// Disable or re-enable an operator.
    SetDisabled, "operators.set_disabled", SetDisabledParams => Operator
);
crate::method!(
    /// Change an operator's role (and group); their sessions end.
    SetRole, "operators.set_role", SetRoleParams => Operator
);
crate::method!(
    /// Set an operator's password (their sessions end).
    ResetPassword, "operators.reset_password", ResetPasswordParams => Done
);
