//! `operators.*`: the operators an administrator manages, and the rules every operator store
//! (a site's own, the issuer host's) checks a new operator and a new password against
//! ([`check_new_operator`], [`check_password`]), so that the rules are one wherever operators
//! are kept. The checks are pure: messages are zh-CN, for the administrator who typed the value.

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

/// Longest password accepted, in characters; bounds hashing cost and request size.
pub const PASSWORD_CHARS_MAX: usize = 256;

/// Shortest password accepted by default, in characters (a site's `auth.password_chars_min`
/// may raise it; the issuer host uses this).
pub const PASSWORD_CHARS_MIN_DEFAULT: usize = 6;

/// Longest user name, in characters (`[A-Za-z0-9_.-]`, at least one).
pub const USERNAME_CHARS_MAX: usize = 32;

/// Longest display name, in characters.
pub const DISPLAY_NAME_CHARS_MAX: usize = 64;

/// Longest group id of a group operator, in characters.
pub const GROUP_ID_CHARS_MAX: usize = 64;

/// Whether `username` is 1 to [`USERNAME_CHARS_MAX`] of `[A-Za-z0-9_.-]`.
pub fn valid_username(username: &str) -> bool {
    (1..=USERNAME_CHARS_MAX).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `text` has 1 to `chars_max` characters and no control characters.
pub fn valid_name(text: &str, chars_max: usize) -> bool {
    (1..=chars_max).contains(&text.chars().count()) && !text.chars().any(char::is_control)
}

/// Checks an operator's user name, display name, role and group (not the password): the
/// message says what is wrong and how to fix it.
pub fn check_new_operator(new: &NewOperator) -> Result<(), String> {
    if !valid_username(&new.username) {
        return Err(format!(
            "用户名须为 1 到 {USERNAME_CHARS_MAX} 个字符，只能包含字母、数字、下划线、点和连字符"
        ));
    }
    if !valid_name(&new.display_name, DISPLAY_NAME_CHARS_MAX) {
        return Err(format!(
            "显示名称须为 1 到 {DISPLAY_NAME_CHARS_MAX} 个字符，且不能包含控制字符"
        ));
    }
    match (&new.group_id, new.role) {
        (None, Role::GroupOperator) => Err("集团操作员必须指定所属集团（group_id）".into()),
        (Some(_), role) if role != Role::GroupOperator => Err(format!(
            "只有集团操作员可以指定所属集团（group_id），{}不可以",
            role.label_zh()
        )),
        (Some(group_id), _) if !valid_name(group_id, GROUP_ID_CHARS_MAX) => Err(format!(
            "集团编号须为 1 到 {GROUP_ID_CHARS_MAX} 个字符，且不能包含控制字符"
        )),
        _ => Ok(()),
    }
}

/// Shortest password an account created at the command line takes (the first administrator of
/// an install is created there), in characters.
pub const OFFLINE_PASSWORD_CHARS_MIN: usize = 10;

/// Passwords tried first by anyone guessing (lower-cased), refused for accounts created at the
/// command line.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "passw0rd",
    "password1",
    "password123",
    "qwerty",
    "qwertyuiop",
    "qwerty123",
    "1q2w3e4r",
    "1qaz2wsx",
    "iloveyou",
    "admin",
    "admin123",
    "administrator",
    "root",
    "toor",
    "letmein",
    "welcome",
    "changeme",
    "cardd",
    "cardd123",
];

/// Refuses a weak password for an account created at the command line (`cardd operators add`,
/// `cardd-host operators add`): shorter than [`OFFLINE_PASSWORD_CHARS_MIN`], the user name
/// (or contains it), one repeated character, a run of consecutive digits or letters
/// (`1234567890`, `abcdefghij`), or a common password. The message says what to do.
pub fn check_password_strength(password: &str, username: &str) -> Result<(), String> {
    let chars: Vec<char> = password.chars().collect();
    let again = "；请换一个更难猜的密码（至少 10 个字符，字母、数字和符号混合）";
    if chars.len() < OFFLINE_PASSWORD_CHARS_MIN {
        return Err(format!("密码太短{again}"));
    }
    let lower = password.to_lowercase();
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return Err(format!("密码不能包含用户名{again}"));
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return Err(format!("密码不能是同一个字符的重复{again}"));
    }
    const RUNS: &[&str] = &[
        "01234567890123456789",
        "98765432109876543210",
        "abcdefghijklmnopqrstuvwxyz",
        "zyxwvutsrqponmlkjihgfedcba",
    ];
    if RUNS.iter().any(|run| run.contains(lower.as_str())) {
        return Err(format!("密码不能是连续的数字或字母{again}"));
    }
    let trimmed = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c == '!');
    if COMMON_PASSWORDS.contains(&lower.as_str()) || COMMON_PASSWORDS.contains(&trimmed) {
        return Err(format!("这是常见密码{again}"));
    }
    Ok(())
}

/// Checks a new password's length: at least `chars_min`, at most [`PASSWORD_CHARS_MAX`]
/// characters. `what` names the field in the message (密码, 新密码).
pub fn check_password(password: &str, chars_min: usize, what: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < chars_min {
        return Err(format!("{what}至少需要 {chars_min} 个字符"));
    }
    if chars > PASSWORD_CHARS_MAX {
        return Err(format!("{what}不能超过 {PASSWORD_CHARS_MAX} 个字符"));
    }
    Ok(())
}

#[cfg(test)]
mod strength_tests {
    use super::check_password_strength;

    #[test]
    fn weak_passwords_are_refused_at_the_command_line_and_strong_ones_taken() {
        for weak in [
            "short1!",
            "admin-root-2026",
            "aaaaaaaaaaaa",
            "1234567890",
            "abcdefghijk",
            "password123",
            "Password2026!!",
            "qwertyuiop",
        ] {
            assert!(check_password_strength(weak, "admin").is_err(), "{weak}");
        }
        for strong in ["Lz8#mQ2!vR4t", "teller-desk-7fj2", "冬天里的圈存机器人9k"] {
            assert!(check_password_strength(strong, "admin").is_ok(), "{strong}");
        }
    }
}
