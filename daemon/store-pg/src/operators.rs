//! [`PgOperators`]: the fleet's operators at the issuer host (`operators`). In a fleet an
//! operator is one account for every site: a site asks the host to check a password
//! ([`PgOperators::verify`]) and asks which of its logged-in operators were disabled or
//! removed ([`PgOperators::status`]), so that disabling an operator here ends it everywhere.
//!
//! **Invariants.**
//! * New operators and passwords follow the rules a site's own operator store follows
//!   ([`cardd_api::operators::check_new_operator`], [`cardd_api::operators::check_password`]
//!   with [`PASSWORD_CHARS_MIN_DEFAULT`]).
//! * Passwords are kept as argon2id PHC strings and never leave this module: no method returns
//!   a hash. Hashing and verifying run on the caller's thread, outside any transaction.
//! * [`PgOperators::verify`] has one refusal, [`OperatorError::InvalidCredentials`] (用户和密码错误),
//!   for an unknown user, a wrong password and a disabled operator, and runs exactly one argon2
//!   verification in each case (against a dummy hash for an unknown user).
//! * Every change is recorded in the host's audit chain ([`HOST_CHAIN`]) in the transaction
//!   that makes it: no change without its record, no record without its change.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use cardd_api::operators::{
    check_new_operator, check_password, valid_username, NewOperator, Operator, PASSWORD_CHARS_MAX,
    PASSWORD_CHARS_MIN_DEFAULT,
};
use cardd_api::{ErrorCode, Role};
use cardd_journal::clock::{china_seconds, Clock};
use rand::RngCore;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::audit::{append_in, AuditError, HostAuditEntry, HOST_CHAIN};
use crate::db::{body, Database, DbFailure, Mode, TxError};

/// Most operators the host keeps.
pub const HOST_OPERATORS_MAX: i64 = 4096;

/// Most user names one [`PgOperators::status`] asks about (a site's sessions are fewer).
pub const STATUS_USERNAMES_MAX: usize = 1024;

/// Random bytes in a password salt.
const SALT_BYTES: usize = 16;

/// The password and salt of the hash unknown users are verified against.
const DUMMY_PASSWORD: &[u8] = b"cardd-host: no such operator";
const DUMMY_SALT: &[u8] = b"cardd-host-dummy";

/// Why an operator could not be created, changed or logged in. Messages are zh-CN, shown to
/// the operator or administrator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// Unknown user, wrong password or disabled operator; deliberately not saying which.
    #[error("用户和密码错误")]
    InvalidCredentials,
    /// The operator's fields break a rule; the message says which and how.
    #[error("{0}")]
    Invalid(String),
    /// The password breaks a rule; the message says which.
    #[error("{0}")]
    PasswordRejected(String),
    #[error("操作员 {0} 不存在，请检查用户名")]
    NotFound(String),
    #[error("操作员 {0} 已存在，请换一个用户名")]
    Exists(String),
    #[error(
        "操作员数量已达上限（{HOST_OPERATORS_MAX} 个），无法再新建；请先停用或清理不再使用的操作员"
    )]
    Full,
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Db(#[from] DbFailure),
    /// A stored hash is unreadable, or the system random source failed.
    #[error("发卡方后台内部错误，请重试一次；仍然失败请联系管理员查看日志（{0}）")]
    Internal(String),
}

impl OperatorError {
    /// The API code a site reports this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            OperatorError::InvalidCredentials => ErrorCode::InvalidCredentials,
            OperatorError::Invalid(_) | OperatorError::Full => ErrorCode::InvalidParams,
            OperatorError::PasswordRejected(_) => ErrorCode::PasswordRejected,
            OperatorError::NotFound(_) => ErrorCode::OperatorNotFound,
            OperatorError::Exists(_) => ErrorCode::OperatorExists,
            OperatorError::Audit(_) | OperatorError::Db(_) | OperatorError::Internal(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// Whether the request itself was refused (as opposed to the host failing).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            OperatorError::Audit(_) | OperatorError::Db(_) | OperatorError::Internal(_)
        )
    }
}

/// A change [`PgOperators::change`] makes.
#[derive(Clone, Copy)]
enum Change<'a> {
    Disabled(bool),
    /// The new password's hash.
    Password(&'a str),
}

/// What [`PgOperators::status`] found of the user names asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStatus {
    /// Known and disabled.
    pub disabled: Vec<String>,
    /// Not (or no longer) known at the host.
    pub gone: Vec<String>,
}

/// The fleet's operators on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOperators {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    /// The hash unknown users are verified against, made at first use.
    dummy_hash: Arc<OnceLock<String>>,
}

const COLUMNS: &str =
    "username, display_name, role, group_id, disabled, created_at, password_changed_at";

fn rfc3339_utc(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn operator_of(r: &tokio_postgres::Row) -> Result<Operator, OperatorError> {
    let role: String = r.get(2);
    Ok(Operator {
        username: r.get(0),
        display_name: r.get(1),
        role: Role::parse(&role).ok_or_else(|| {
            OperatorError::Internal(format!("operator {} has an unknown role {role:?}", {
                r.get::<_, String>(0)
            }))
        })?,
        group_id: r.get(3),
        disabled: r.get(4),
        created_at: rfc3339_utc(r.get(5)),
        password_changed_at: rfc3339_utc(r.get(6)),
    })
}

fn internal(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Internal(e.to_string())
}

/// Hashes `password` with argon2id (default parameters) and a random salt.
fn hash_password(password: &str) -> Result<String, OperatorError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(internal)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(internal)?
        .to_string())
}

/// Whether `password` matches the PHC `hash`.
fn verify_password(password: &str, hash: &str) -> Result<bool, OperatorError> {
    let parsed = PasswordHash::new(hash).map_err(internal)?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

impl PgOperators {
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgOperators {
        PgOperators {
            db,
            clock,
            dummy_hash: Arc::new(OnceLock::new()),
        }
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    fn dummy_hash(&self) -> Result<&str, OperatorError> {
        if let Some(hash) = self.dummy_hash.get() {
            return Ok(hash);
        }
        let salt = SaltString::encode_b64(DUMMY_SALT).map_err(internal)?;
        let hash = Argon2::default()
            .hash_password(DUMMY_PASSWORD, &salt)
            .map_err(internal)?
            .to_string();
        Ok(self.dummy_hash.get_or_init(|| hash))
    }

    /// Creates an operator (enabled), recorded in the host's chain as done by `actor`.
    pub fn create(&self, new: &NewOperator, actor: &str) -> Result<Operator, OperatorError> {
        check_new_operator(new).map_err(OperatorError::Invalid)?;
        check_password(&new.password, PASSWORD_CHARS_MIN_DEFAULT, "密码")
            .map_err(OperatorError::PasswordRejected)?;
        let hash = hash_password(&new.password)?;
        let at = self.now();
        let entry = HostAuditEntry {
            chain: HOST_CHAIN.into(),
            actor: actor.chars().take(64).collect(),
            action: "operators.create".into(),
            target: Some(new.username.clone()),
            detail: serde_json::json!({
                "display_name": new.display_name,
                "role": new.role.as_str(),
                "group_id": new.group_id,
            }),
            outcome: "ok".into(),
        };
        let (hash, entry) = (&hash, &entry);
        self.db.call(self.db.transaction(
            Mode::Write,
            "新建操作员",
            body!(|c| async {
                let count: i64 = c
                    .query_one("SELECT count(*) FROM operators", &[])
                    .await?
                    .get(0);
                if count >= HOST_OPERATORS_MAX {
                    return Err(TxError::Refused(OperatorError::Full));
                }
                let inserted = c
                    .query_opt(
                        &format!(
                            "INSERT INTO operators (username, display_name, role, group_id, \
                               disabled, password_hash, created_at, password_changed_at, \
                               updated_at) \
                             VALUES ($1, $2, $3, $4, false, $5, $6, $6, $6) \
                             ON CONFLICT (username) DO NOTHING RETURNING {COLUMNS}"
                        ),
                        &[
                            &new.username,
                            &new.display_name,
                            &new.role.as_str(),
                            &new.group_id,
                            hash,
                            &at,
                        ],
                    )
                    .await?;
                let Some(row) = inserted else {
                    return Err(TxError::Refused(OperatorError::Exists(
                        new.username.clone(),
                    )));
                };
                let operator = operator_of(&row).map_err(TxError::Refused)?;
                append_in::<OperatorError>(c, entry, at).await?;
                Ok(operator)
            }),
        ))
    }

    /// The operator if `username` and `password` match an enabled one; every other case is
    /// [`OperatorError::InvalidCredentials`]. Verifies on the calling thread.
    pub fn verify(&self, username: &str, password: &str) -> Result<Operator, OperatorError> {
        let found = if valid_username(username) {
            self.find(username)?
        } else {
            None
        };
        let hash = match &found {
            Some((_, hash)) => hash.as_str(),
            None => self.dummy_hash()?,
        };
        let within_bounds = password.chars().count() <= PASSWORD_CHARS_MAX;
        let matches = verify_password(if within_bounds { password } else { "" }, hash)?;
        match found {
            Some((operator, _)) if within_bounds && matches && !operator.disabled => Ok(operator),
            _ => Err(OperatorError::InvalidCredentials),
        }
    }

    /// The operator and its hash, if any.
    fn find(&self, username: &str) -> Result<Option<(Operator, String)>, OperatorError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取操作员",
            body!(|c| async {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {COLUMNS}, password_hash FROM operators WHERE username = $1"
                        ),
                        &[&username],
                    )
                    .await?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some((
                        operator_of(&r).map_err(TxError::Refused)?,
                        r.get::<_, String>(7),
                    ))),
                }
            }),
        ))
    }

    /// The operator called `username`.
    pub fn get(&self, username: &str) -> Result<Operator, OperatorError> {
        self.find(username)?
            .map(|(operator, _)| operator)
            .ok_or_else(|| OperatorError::NotFound(username.to_owned()))
    }

    /// Every operator, by user name (at most [`HOST_OPERATORS_MAX`]).
    pub fn list(&self) -> Result<Vec<Operator>, OperatorError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取操作员",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!("SELECT {COLUMNS} FROM operators ORDER BY username LIMIT $1"),
                        &[&HOST_OPERATORS_MAX],
                    )
                    .await?;
                rows.iter()
                    .map(|r| operator_of(r).map_err(TxError::Refused))
                    .collect::<Result<Vec<_>, _>>()
            }),
        ))
    }

    /// Disables or enables `username`, recorded as done by `actor`. A disabled operator is
    /// refused at its next login and its sessions end at every site at the sites' next
    /// [`PgOperators::status`] question.
    pub fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &str,
    ) -> Result<Operator, OperatorError> {
        let action = if disabled {
            "operators.disable"
        } else {
            "operators.enable"
        };
        self.change(username, actor, action, Change::Disabled(disabled))
    }

    /// Sets a new password for `username` (an administrator's action), recorded as done by
    /// `actor`. Hashes on the calling thread.
    pub fn reset_password(
        &self,
        username: &str,
        new_password: &str,
        actor: &str,
    ) -> Result<Operator, OperatorError> {
        check_password(new_password, PASSWORD_CHARS_MIN_DEFAULT, "新密码")
            .map_err(OperatorError::PasswordRejected)?;
        let hash = hash_password(new_password)?;
        self.change(
            username,
            actor,
            "operators.reset_password",
            Change::Password(&hash),
        )
    }

    /// Makes `change` to `username` with its audit record, in one transaction; the operator
    /// as it is after.
    fn change(
        &self,
        username: &str,
        actor: &str,
        action: &str,
        change: Change<'_>,
    ) -> Result<Operator, OperatorError> {
        let at = self.now();
        let entry = HostAuditEntry {
            chain: HOST_CHAIN.into(),
            actor: actor.chars().take(64).collect(),
            action: action.into(),
            target: Some(username.to_owned()),
            detail: serde_json::json!({}),
            outcome: "ok".into(),
        };
        let entry = &entry;
        self.db.call(self.db.transaction(
            Mode::Write,
            "修改操作员",
            body!(|c| async {
                let changed = match change {
                    Change::Disabled(disabled) => {
                        c.execute(
                            "UPDATE operators SET disabled = $2, updated_at = $3 \
                             WHERE username = $1",
                            &[&username, &disabled, &at],
                        )
                        .await?
                    }
                    Change::Password(hash) => {
                        c.execute(
                            "UPDATE operators SET password_hash = $2, password_changed_at = $3, \
                               updated_at = $3 WHERE username = $1",
                            &[&username, &hash, &at],
                        )
                        .await?
                    }
                };
                if changed == 0 {
                    return Err(TxError::Refused(OperatorError::NotFound(
                        username.to_owned(),
                    )));
                }
                let row = c
                    .query_one(
                        &format!("SELECT {COLUMNS} FROM operators WHERE username = $1"),
                        &[&username],
                    )
                    .await?;
                let operator = operator_of(&row).map_err(TxError::Refused)?;
                append_in::<OperatorError>(c, entry, at).await?;
                Ok(operator)
            }),
        ))
    }

    /// Which of `usernames` are disabled or unknown (at most [`STATUS_USERNAMES_MAX`]).
    pub fn status(&self, usernames: &[String]) -> Result<OperatorStatus, OperatorError> {
        if usernames.len() > STATUS_USERNAMES_MAX {
            return Err(OperatorError::Invalid(format!(
                "一次最多查询 {STATUS_USERNAMES_MAX} 个操作员的状态"
            )));
        }
        let known: Vec<(String, bool)> = self.db.call(self.db.transaction(
            Mode::Read,
            "读取操作员状态",
            body!(|c| async {
                let rows = c
                    .query(
                        "SELECT username, disabled FROM operators WHERE username = ANY($1)",
                        &[&usernames],
                    )
                    .await?;
                Ok::<_, TxError<OperatorError>>(
                    rows.iter()
                        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
                        .collect(),
                )
            }),
        ))?;
        let mut status = OperatorStatus::default();
        for name in usernames {
            match known.iter().find(|(n, _)| n == name) {
                None => status.gone.push(name.clone()),
                Some((_, true)) => status.disabled.push(name.clone()),
                Some((_, false)) => {}
            }
        }
        status.disabled.dedup();
        status.gone.dedup();
        Ok(status)
    }
}
