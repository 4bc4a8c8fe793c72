//! Operators, password hashing, sessions with idle timeout, and login throttling.
//!
//! Every money method is done by a named operator with a role, so cardd must know who is at
//! the keyboard. Operators live in the sled tree `"operators"` (key: the user name) with an
//! argon2id PHC hash of their password that never leaves this module. A login gives an
//! in-memory [`Session`] token that ends after [`AuthConfig::session_idle_timeout`] without
//! use, so a teller who walks away is logged out (the seeds' "一段时间未操作" case); sessions do
//! not survive a restart.
//!
//! Login failures say only 用户和密码错误 (as the seeds do), whether the user name or the
//! password was wrong, and an unknown user costs the same argon2 verification as a known one.
//!
//! Throttling can slow a guesser down but cannot be turned against the operators: failures are
//! counted per user name and per login source ([`login_source`]: the connection's peer address
//! without its port, and whether the client is a browser page (its Origin, in lower case) or a
//! program without one). After [`AuthConfig::login_failures_free`] failures a key waits before
//! its next attempt; the wait doubles with each further failure up to
//! [`AuthConfig::login_delay_max`] and is never a lock-out: once it has passed, one attempt is
//! heard, whoever makes it. Attempts during a wait are refused without hashing and are not
//! counted, so nobody can extend another party's wait except by failing once per wait.
//!
//! Sessions are capped per user, per role (kiosks get few) and in total; a new session only
//! ever ends an older one of the same user or, when the role is full, of the same role.
//!
//! Time is passed in as `now: Instant` so tests can move it. Hashing and verifying block for
//! tens of milliseconds: call [`Auth::login`], [`Auth::change_password`],
//! [`Auth::create_operator`] and [`Auth::reset_password`] from a blocking task holding a
//! permit from [`Auth::hashing_permit`], which bounds the hashing done at once.

use cardd_api::auth::SessionView;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use cardd_api::{ErrorCode, Role};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::audit::utc_now_rfc3339;
use crate::store::{Store, StoreError};

/// The sled tree holding operators.
pub const OPERATORS_TREE: &str = "operators";

pub use cardd_api::operators::{
    DISPLAY_NAME_CHARS_MAX, GROUP_ID_CHARS_MAX, PASSWORD_CHARS_MAX, USERNAME_CHARS_MAX,
};

/// Most operators the database holds.
pub const OPERATORS_MAX: usize = 4096;

/// Most user names and clients whose login failures are tracked at once; when full, stale
/// entries go first, then the one whose last failure is oldest.
pub const LOGIN_TRACKED_KEYS_MAX: usize = 4096;

/// Longest user name or client address kept as a throttling key, in characters; longer ones
/// are cut (an over-long user name cannot log in anyway).
pub const THROTTLE_KEY_CHARS_MAX: usize = 64;

/// Random bytes in a session token (shown as twice as many hex digits).
pub const SESSION_TOKEN_BYTES: usize = 32;

/// Random bytes in a password salt.
const SALT_BYTES: usize = 16;

/// The password and salt of the hash that unknown users are verified against.
const DUMMY_PASSWORD: &[u8] = b"cardd: no such operator";
const DUMMY_SALT: &[u8] = b"cardd-dummy-salt";

/// Limits of operators, sessions and logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// A session unused for longer than this ends.
    pub session_idle_timeout: Duration,
    /// Failed logins per user name or per source that cost no wait.
    pub login_failures_free: u32,
    /// The wait after the first failure beyond the free ones; it doubles with each further one.
    pub login_delay_base: Duration,
    /// The longest wait between attempts of one user name or source (zero counts as the base).
    pub login_delay_max: Duration,
    /// Failures are forgotten this long after a key's last failure.
    pub login_failures_forget: Duration,
    /// Shortest password accepted when one is set, in characters.
    pub password_chars_min: usize,
    /// Most sessions kept in all (zero counts as one).
    pub sessions_max: usize,
    /// Most sessions of one user; a further login ends that user's least recently used one.
    pub sessions_per_user_max: usize,
    /// Most sessions of one role (other than kiosk); a further login ends that role's least
    /// recently used one.
    pub sessions_per_role_max: usize,
    /// Most sessions of the kiosk role.
    pub kiosk_sessions_max: usize,
    /// Most password hashes computed at once (zero counts as one).
    pub hashing_concurrent_max: usize,
    /// Longest wait for a hashing slot before a login is refused as busy.
    pub hashing_wait_max: Duration,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            session_idle_timeout: Duration::from_secs(15 * 60),
            login_failures_free: 3,
            login_delay_base: Duration::from_secs(1),
            login_delay_max: Duration::from_secs(30),
            login_failures_forget: Duration::from_secs(15 * 60),
            password_chars_min: cardd_api::operators::PASSWORD_CHARS_MIN_DEFAULT,
            sessions_max: 1024,
            sessions_per_user_max: 8,
            sessions_per_role_max: 256,
            kiosk_sessions_max: 16,
            hashing_concurrent_max: 2,
            hashing_wait_max: Duration::from_secs(5),
        }
    }
}

/// The client end of the connection a request came on, put into the request's extensions by
/// the code that accepts connections; methods read it for [`login_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The source a login is counted against: the connection's peer address without its port (a
/// new connection gets a new port, so counting ports would give every connection a fresh
/// count), IPv4-mapped IPv6 addresses as IPv4 and every loopback address as `loopback`; then
/// `browser <origin>` (the Origin in ASCII lower case) for pages, `program` for clients that
/// send no Origin. A client whose peer is unknown counts as `unknown`.
pub fn login_source(peer: Option<SocketAddr>, origin: Option<&str>) -> String {
    let address = match peer.map(|p| p.ip().to_canonical()) {
        None => "unknown".to_owned(),
        Some(ip) if ip.is_loopback() => "loopback".to_owned(),
        Some(IpAddr::V4(ip)) => ip.to_string(),
        Some(IpAddr::V6(ip)) => ip.to_string(),
    };
    let kind = match origin {
        Some(origin) => format!(
            "browser {}",
            origin
                .chars()
                .take(THROTTLE_KEY_CHARS_MAX)
                .collect::<String>()
                .to_ascii_lowercase()
        ),
        None => "program".to_owned(),
    };
    format!("{address} {kind}")
}

pub use cardd_api::auth::SessionEnd;
pub use cardd_api::operators::{NewOperator, Operator};

/// The stored form: the operator plus the argon2 PHC hash.
#[derive(Serialize, Deserialize)]
struct StoredOperator {
    operator: Operator,
    password_hash: String,
}

/// A logged-in operator.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Bearer token: 32 random bytes in hex.
    pub token: String,
    /// See [`Operator::username`].
    pub username: String,
    /// See [`Operator::display_name`].
    pub display_name: String,
    /// The operator's role at login.
    pub role: Role,
    /// See [`Operator::group_id`].
    pub group_id: Option<String>,
    /// When the session began.
    pub created_at: Instant,
    /// When the session was last used.
    pub last_seen: Instant,
}

impl std::fmt::Debug for Session {
    /// Leaves the token out, so sessions can be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("group_id", &self.group_id)
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// Session ends buffered for slow listeners (a listener that lags re-checks its session).
const SESSION_ENDS_BUFFERED: usize = 256;

/// Why an operator or session action failed. Messages are shown to operators as they are.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user name or password, or a disabled operator; deliberately not saying which.
    #[error("用户和密码错误")]
    InvalidCredentials,
    /// Too many failed logins for this user name or source: wait before the next attempt.
    #[error("登录失败次数过多，请 {retry_after_s} 秒后再试")]
    TooManyAttempts {
        /// Seconds until the next attempt is heard.
        retry_after_s: u64,
    },
    /// Every hashing slot stayed busy for the bounded wait.
    #[error("登录的人较多，系统繁忙，请稍后再试")]
    Busy,
    /// The role's and the daemon's sessions are all taken by other roles.
    #[error("登录会话已满（{0} 个），请稍后再试，或请其他人先退出登录")]
    SessionsFull(usize),
    /// No session for the token, or it expired after inactivity.
    #[error("未登录或登录已超时，请重新登录")]
    Unauthenticated,
    /// A new password was refused; the message says why.
    #[error("{0}")]
    PasswordRejected(String),
    /// No operator with this user name.
    #[error("操作员 {0} 不存在，请检查用户名")]
    OperatorNotFound(String),
    /// An operator with this user name already exists.
    #[error("操作员 {0} 已存在，请换一个用户名")]
    OperatorExists(String),
    /// The operator's fields are invalid; the message says which and how.
    #[error("{0}")]
    InvalidOperator(String),
    /// Fleet mode: the issuer host, which checks passwords, could not be reached (not a wrong
    /// password: not counted as a failed login).
    #[error("无法连接发卡方后台，暂时无法登录；请稍后重试，仍然失败请检查本站点与后台的网络连接或联系管理员（{0}）")]
    HostUnreachable(String),
    /// Fleet mode: operators are managed at the issuer host, not at a site.
    #[error("本站点的操作员由发卡方后台统一管理，请在后台用 cardd-host operators … 新建、停用、启用操作员或重置密码")]
    ManagedAtHost,
    /// The database failed.
    #[error("操作员数据读写失败，请重试一次；仍然失败请联系管理员查看日志（{0}）")]
    Store(#[from] StoreError),
    /// A stored record or hash is unreadable, or the system random source failed.
    #[error("内部错误，请重试一次；仍然失败请联系管理员查看日志（{0}）")]
    Internal(String),
}

impl From<sled::Error> for AuthError {
    fn from(error: sled::Error) -> AuthError {
        AuthError::Store(StoreError::from(error))
    }
}

impl AuthError {
    /// The API error code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::InvalidCredentials => ErrorCode::InvalidCredentials,
            AuthError::TooManyAttempts { .. } => ErrorCode::TooManyAttempts,
            AuthError::Busy | AuthError::SessionsFull(_) => ErrorCode::ServerBusy,
            AuthError::Unauthenticated => ErrorCode::Unauthenticated,
            AuthError::PasswordRejected(_) => ErrorCode::PasswordRejected,
            AuthError::OperatorNotFound(_) => ErrorCode::OperatorNotFound,
            AuthError::OperatorExists(_) => ErrorCode::OperatorExists,
            AuthError::InvalidOperator(_) => ErrorCode::InvalidParams,
            AuthError::HostUnreachable(_) => ErrorCode::IssuerHostUnreachable,
            AuthError::ManagedAtHost => ErrorCode::Forbidden,
            AuthError::Store(_) | AuthError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Operators, sessions and login throttling. Share it behind an `Arc`.
pub struct Auth {
    store: Store,
    tree: sled::Tree,
    config: AuthConfig,
    /// PHC hash that logins of unknown users are verified against, for equal timing.
    dummy_hash: String,
    sessions: Mutex<HashMap<String, Session>>,
    /// Tells subscriptions which session ended and why.
    ended: tokio::sync::broadcast::Sender<(String, SessionEnd)>,
    /// Notified when a session opens (see [`Auth::session_opened`]).
    opened: Arc<tokio::sync::Notify>,
    throttle: Mutex<Throttle>,
    /// Slots for password hashing ([`AuthConfig::hashing_concurrent_max`]).
    hashing: Arc<tokio::sync::Semaphore>,
    /// Serialises read-modify-write of operator records.
    writes: Mutex<()>,
}

impl std::fmt::Debug for Auth {
    /// Shows the configuration only; sled's `Debug` would dump the password hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        // Whoever waits for a session learns that there will be none.
        self.opened.notify_one();
    }
}

impl Auth {
    /// Opens the operator tree in `store`.
    pub fn open(store: &Store, config: AuthConfig) -> Result<Auth, AuthError> {
        let config = AuthConfig {
            login_delay_max: config.login_delay_max.max(config.login_delay_base),
            sessions_max: config.sessions_max.max(1),
            sessions_per_user_max: config.sessions_per_user_max.max(1),
            sessions_per_role_max: config.sessions_per_role_max.max(1),
            kiosk_sessions_max: config.kiosk_sessions_max.max(1),
            hashing_concurrent_max: config.hashing_concurrent_max.max(1),
            ..config
        };
        let dummy_salt = SaltString::encode_b64(DUMMY_SALT).map_err(internal)?;
        let dummy_hash = Argon2::default()
            .hash_password(DUMMY_PASSWORD, &dummy_salt)
            .map_err(internal)?;
        Ok(Auth {
            store: store.clone(),
            tree: store.tree(OPERATORS_TREE)?,
            throttle: Mutex::new(Throttle::new(&config)),
            hashing: Arc::new(tokio::sync::Semaphore::new(config.hashing_concurrent_max)),
            config,
            dummy_hash: dummy_hash.to_string(),
            sessions: Mutex::new(HashMap::new()),
            ended: tokio::sync::broadcast::channel(SESSION_ENDS_BUFFERED).0,
            opened: Arc::new(tokio::sync::Notify::new()),
            writes: Mutex::new(()),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Creates an operator, durably.
    pub fn create_operator(&self, new: NewOperator) -> Result<Operator, AuthError> {
        validate_operator(&new)?;
        self.check_password_length(&new.password, "密码")?;
        if self.tree.contains_key(&new.username)? {
            return Err(AuthError::OperatorExists(new.username));
        }
        let password_hash = hash_password(&new.password)?;
        let now = utc_now_rfc3339();
        let operator = Operator {
            username: new.username,
            display_name: new.display_name,
            role: new.role,
            group_id: new.group_id,
            disabled: false,
            created_at: now.clone(),
            password_changed_at: now,
        };
        self.insert_new(StoredOperator {
            operator: operator.clone(),
            password_hash,
        })?;
        Ok(operator)
    }

    /// Creates the operator unless one with that user name exists (which is left unchanged).
    /// Returns whether it was created. For seeding demo operators.
    pub fn ensure_operator(&self, new: NewOperator) -> Result<bool, AuthError> {
        if self.tree.contains_key(&new.username)? {
            return Ok(false);
        }
        let username = new.username.clone();
        match self.create_operator(new) {
            Ok(_) => {
                tracing::info!(username = %username, "created operator");
                Ok(true)
            }
            Err(AuthError::OperatorExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The operator called `username`: this daemon's, or, for an operator kept elsewhere (a
    /// fleet site's operators are the issuer host's), the operator as its most recent live
    /// session knows it (its role and group at login; no creation or password dates).
    pub fn get_operator(&self, username: &str) -> Result<Operator, AuthError> {
        if let Some(stored) = self.find(username)? {
            return Ok(stored.operator);
        }
        lock(&self.sessions)
            .values()
            .filter(|s| s.username == username)
            .max_by_key(|s| s.created_at)
            .map(|s| Operator {
                username: s.username.clone(),
                display_name: s.display_name.clone(),
                role: s.role,
                group_id: s.group_id.clone(),
                disabled: false,
                created_at: String::new(),
                password_changed_at: String::new(),
            })
            .ok_or_else(|| AuthError::OperatorNotFound(username.to_owned()))
    }

    /// Every operator, ordered by user name.
    /// Whether any operator exists (a new install has none until its first administrator is
    /// created); reads no record.
    pub fn has_operators(&self) -> bool {
        !self.tree.is_empty()
    }

    pub fn list_operators(&self) -> Result<Vec<Operator>, AuthError> {
        let mut operators = Vec::new();
        for item in self.tree.iter().take(OPERATORS_MAX) {
            let (key, value) = item?;
            operators.push(decode(&String::from_utf8_lossy(&key), &value)?.operator);
        }
        Ok(operators)
    }

    /// Enables or disables an operator; disabling ends their sessions.
    pub fn set_disabled(&self, username: &str, disabled: bool) -> Result<Operator, AuthError> {
        let operator = self.modify(username, |stored| stored.operator.disabled = disabled)?;
        if disabled {
            self.end_sessions(username, None, SessionEnd::OperatorDisabled);
        }
        Ok(operator)
    }

    /// Sets a new password for an operator (an administrator's action) and ends their sessions.
    pub fn reset_password(&self, username: &str, new_password: &str) -> Result<(), AuthError> {
        self.check_password_length(new_password, "新密码")?;
        self.load(username)?;
        let password_hash = hash_password(new_password)?;
        self.modify(username, |stored| set_password(stored, password_hash))?;
        self.end_sessions(username, None, SessionEnd::PasswordReset);
        Ok(())
    }

    /// A permit to hash or verify one password, waiting at most
    /// [`AuthConfig::hashing_wait_max`] for a slot; [`AuthError::Busy`] when none came free.
    /// Hold it in the blocking task that hashes.
    pub async fn hashing_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AuthError> {
        let acquire = self.hashing.clone().acquire_owned();
        match tokio::time::timeout(self.config.hashing_wait_max, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(AuthError::Busy),
        }
    }

    /// Fails with [`AuthError::TooManyAttempts`] while `username` or `source` must still wait;
    /// cheap, so callers check it before queueing for a hashing slot.
    pub fn check_login_allowed(
        &self,
        username: &str,
        source: &str,
        now: Instant,
    ) -> Result<(), AuthError> {
        lock(&self.throttle).check(
            &[ThrottleKey::user(username), ThrottleKey::source(source)],
            now,
        )
    }

    /// Changes an operator's role (and group, for group operators) and ends their sessions, so
    /// nothing keeps running with the old role.
    pub fn set_role(
        &self,
        username: &str,
        role: Role,
        group_id: Option<String>,
    ) -> Result<Operator, AuthError> {
        let current = self.load(username)?.operator;
        validate_operator(&NewOperator {
            username: current.username,
            display_name: current.display_name,
            role,
            group_id: group_id.clone(),
            password: String::new(),
        })?;
        let operator = self.modify(username, |stored| {
            stored.operator.role = role;
            stored.operator.group_id = group_id;
        })?;
        self.end_sessions(username, None, SessionEnd::RoleChanged);
        Ok(operator)
    }

    /// Listens for ended sessions: `(token, why)`.
    pub fn session_ends(&self) -> tokio::sync::broadcast::Receiver<(String, SessionEnd)> {
        self.ended.subscribe()
    }

    /// The live session for `token` without refreshing it.
    pub fn peek(&self, token: &str, now: Instant) -> Option<Session> {
        lock(&self.sessions)
            .get(token)
            .filter(|s| {
                now.saturating_duration_since(s.last_seen) <= self.config.session_idle_timeout
            })
            .cloned()
    }

    fn announce_end(&self, token: &str, why: SessionEnd) {
        // No listener is not an error.
        let _ = self.ended.send((token.to_owned(), why));
    }

    /// Checks the credentials and opens a session.
    ///
    /// `source` is where the attempt came from ([`login_source`]), for throttling. Every
    /// failure, whatever its cause, is [`AuthError::InvalidCredentials`]; while the user name
    /// or the source must wait, the attempt is [`AuthError::TooManyAttempts`] (not hashed, not
    /// counted).
    pub fn login(
        &self,
        username: &str,
        password: &str,
        source: &str,
        now: Instant,
    ) -> Result<Session, AuthError> {
        self.login_verified_by(username, source, now, || {
            self.verify_credentials(username, password)
        })
    }

    /// [`Auth::login`] with the password checked by `verify` instead of this store (a fleet
    /// site asks the issuer host): `Ok(None)` is a wrong user name or password or a disabled
    /// operator, counted and refused as [`AuthError::InvalidCredentials`]; an error (the host
    /// unreachable) is returned as it is and not counted. Throttling and session limits are
    /// this daemon's, as for a local login.
    pub fn login_verified_by(
        &self,
        username: &str,
        source: &str,
        now: Instant,
        verify: impl FnOnce() -> Result<Option<Operator>, AuthError>,
    ) -> Result<Session, AuthError> {
        let keys = [ThrottleKey::user(username), ThrottleKey::source(source)];
        lock(&self.throttle).check(&keys, now)?;
        let Some(operator) = verify()? else {
            lock(&self.throttle).record_failure(&keys, now);
            return Err(AuthError::InvalidCredentials);
        };
        lock(&self.throttle).clear(&keys[0]);
        self.open_session(operator, now)
    }

    /// Notified when a session opens; a notification sent while nobody waits is kept for the
    /// next wait. Lets a watch on the sessions wait without a timer while there are none.
    pub fn session_opened(&self) -> Arc<tokio::sync::Notify> {
        self.opened.clone()
    }

    /// The user names that hold a session now (each once, sorted).
    pub fn session_usernames(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.sessions)
            .values()
            .map(|s| s.username.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Ends every session of `username` as a disabling does (a fleet site whose operator was
    /// disabled or removed at the issuer host); returns how many ended.
    pub fn end_sessions_of(&self, username: &str, why: SessionEnd) -> usize {
        let before = lock(&self.sessions).len();
        self.end_sessions(username, None, why);
        before.saturating_sub(lock(&self.sessions).len())
    }

    /// The session for `token`, refreshed; fails if it is unknown or idle for too long.
    pub fn authenticate(&self, token: &str, now: Instant) -> Result<Session, AuthError> {
        let mut sessions = lock(&self.sessions);
        let Some(session) = sessions.get_mut(token) else {
            return Err(AuthError::Unauthenticated);
        };
        if now.saturating_duration_since(session.last_seen) > self.config.session_idle_timeout {
            sessions.remove(token);
            self.announce_end(token, SessionEnd::IdleTimeout);
            return Err(AuthError::Unauthenticated);
        }
        session.last_seen = session.last_seen.max(now);
        Ok(session.clone())
    }

    /// Ends the session; returns whether there was one.
    pub fn logout(&self, token: &str) -> bool {
        let ended = lock(&self.sessions).remove(token).is_some();
        if ended {
            self.announce_end(token, SessionEnd::LoggedOut);
        }
        ended
    }

    /// The fewest characters a new password may have (the longest is [`PASSWORD_CHARS_MAX`]).
    pub fn password_chars_min(&self) -> usize {
        self.config.password_chars_min
    }

    /// Changes the session's operator's password and ends their other sessions.
    ///
    /// `confirm` is the re-typed new password. Wrong old passwords count as login failures of
    /// the user name, so a left-open session cannot be used to guess the password.
    pub fn change_password(
        &self,
        token: &str,
        old: &str,
        new: &str,
        confirm: &str,
        now: Instant,
    ) -> Result<(), AuthError> {
        let session = self.authenticate(token, now)?;
        if new != confirm {
            return Err(AuthError::PasswordRejected("两次输入的新密码不一致".into()));
        }
        self.check_password_length(new, "新密码")?;
        if new == old {
            return Err(AuthError::PasswordRejected("新密码不能与原密码相同".into()));
        }
        let key = [ThrottleKey::user(&session.username)];
        lock(&self.throttle).check(&key, now)?;
        if !verify_password(old, &self.load(&session.username)?.password_hash)? {
            lock(&self.throttle).record_failure(&key, now);
            return Err(AuthError::PasswordRejected("原密码错误，请重新输入".into()));
        }
        let password_hash = hash_password(new)?;
        self.modify(&session.username, |stored| {
            set_password(stored, password_hash)
        })?;
        self.end_sessions(&session.username, Some(token), SessionEnd::PasswordChanged);
        Ok(())
    }

    /// The operator if `username` and `password` match an enabled one. Always runs exactly one
    /// argon2 verification, against a dummy hash when there is no such operator.
    fn verify_credentials(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Operator>, AuthError> {
        let stored = if valid_username(username) {
            self.find(username)?
        } else {
            None
        };
        let hash = stored
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |s| s.password_hash.as_str());
        let within_bounds = password.chars().count() <= PASSWORD_CHARS_MAX;
        let matches = verify_password(if within_bounds { password } else { "" }, hash)?;
        Ok(stored
            .filter(|s| within_bounds && matches && !s.operator.disabled)
            .map(|s| s.operator))
    }

    /// The most sessions `role` may hold.
    fn role_sessions_max(&self, role: Role) -> usize {
        if role == Role::Kiosk {
            self.config.kiosk_sessions_max
        } else {
            self.config.sessions_per_role_max
        }
    }

    /// Starts a session. When the user holds its most sessions, its own least recently used
    /// one ends; when the role does, the role's least recently used one ends; when the daemon
    /// does, the role's least recently used one ends, or, if the role holds none, the login is
    /// refused: a session never ends for another role's login.
    fn open_session(&self, operator: Operator, now: Instant) -> Result<Session, AuthError> {
        let session = Session {
            token: random_token()?,
            username: operator.username,
            display_name: operator.display_name,
            role: operator.role,
            group_id: operator.group_id,
            created_at: now,
            last_seen: now,
        };
        let mut sessions = lock(&self.sessions);
        let idle_timeout = self.config.session_idle_timeout;
        sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) <= idle_timeout);
        let role_max = self.role_sessions_max(session.role);
        loop {
            let of_user = sessions
                .values()
                .filter(|s| s.username == session.username)
                .count();
            let of_role = sessions.values().filter(|s| s.role == session.role).count();
            let evict = if of_user >= self.config.sessions_per_user_max {
                least_recently_used(&sessions, |s| s.username == session.username)
            } else if of_role >= role_max || sessions.len() >= self.config.sessions_max {
                least_recently_used(&sessions, |s| s.role == session.role)
            } else {
                break;
            };
            let Some(token) = evict else {
                return Err(AuthError::SessionsFull(sessions.len()));
            };
            sessions.remove(&token);
            self.announce_end(&token, SessionEnd::Evicted);
        }
        sessions.insert(session.token.clone(), session.clone());
        self.opened.notify_one();
        Ok(session)
    }

    /// Ends every session of `username` except `keep`, telling their subscriptions `why`.
    fn end_sessions(&self, username: &str, keep: Option<&str>, why: SessionEnd) {
        let mut ended = Vec::new();
        lock(&self.sessions).retain(|token, s| {
            let stays = s.username != username || Some(token.as_str()) == keep;
            if !stays {
                ended.push(token.clone());
            }
            stays
        });
        for token in ended {
            self.announce_end(&token, why);
        }
    }

    /// Fails with [`AuthError::PasswordRejected`] unless `password` has an allowed length.
    fn check_password_length(&self, password: &str, what: &str) -> Result<(), AuthError> {
        cardd_api::operators::check_password(password, self.config.password_chars_min, what)
            .map_err(AuthError::PasswordRejected)
    }

    /// The stored operator, if any.
    fn find(&self, username: &str) -> Result<Option<StoredOperator>, AuthError> {
        self.tree
            .get(username)?
            .map(|value| decode(username, &value))
            .transpose()
    }

    /// The stored operator, or [`AuthError::OperatorNotFound`].
    fn load(&self, username: &str) -> Result<StoredOperator, AuthError> {
        self.find(username)?
            .ok_or_else(|| AuthError::OperatorNotFound(username.to_owned()))
    }

    /// Writes a new operator durably, unless the name is taken or the table is full.
    fn insert_new(&self, stored: StoredOperator) -> Result<(), AuthError> {
        let _writes = lock(&self.writes);
        if self.tree.len() >= OPERATORS_MAX {
            return Err(AuthError::InvalidOperator(format!(
                "操作员数量已达上限（{OPERATORS_MAX} 个），无法再新建"
            )));
        }
        let username = stored.operator.username.clone();
        let bytes = encode(&stored)?;
        if self
            .tree
            .compare_and_swap(&username, None::<&[u8]>, Some(bytes))?
            .is_err()
        {
            return Err(AuthError::OperatorExists(username));
        }
        self.store.durable_flush()?;
        Ok(())
    }

    /// Applies `change` to a stored operator and writes it back durably.
    fn modify(
        &self,
        username: &str,
        change: impl FnOnce(&mut StoredOperator),
    ) -> Result<Operator, AuthError> {
        let _writes = lock(&self.writes);
        let mut stored = self.load(username)?;
        change(&mut stored);
        self.tree.insert(username, encode(&stored)?)?;
        self.store.durable_flush()?;
        Ok(stored.operator)
    }
}

/// The token of the least recently used session matching `pick`.
fn least_recently_used(
    sessions: &HashMap<String, Session>,
    pick: impl Fn(&Session) -> bool,
) -> Option<String> {
    sessions
        .values()
        .filter(|s| pick(s))
        .min_by_key(|s| s.last_seen)
        .map(|s| s.token.clone())
}

/// Replaces the password hash and stamps the change.
fn set_password(stored: &mut StoredOperator, password_hash: String) {
    stored.password_hash = password_hash;
    stored.operator.password_changed_at = utc_now_rfc3339();
}

use cardd_api::operators::valid_username;

/// Checks a new operator's user name, display name and group (the rules of
/// [`cardd_api::operators::check_new_operator`]).
fn validate_operator(new: &NewOperator) -> Result<(), AuthError> {
    cardd_api::operators::check_new_operator(new).map_err(AuthError::InvalidOperator)
}

/// Hashes a password with argon2id (default parameters) and a random salt.
fn hash_password(password: &str) -> Result<String, AuthError> {
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
fn verify_password(password: &str, hash: &str) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(hash).map_err(internal)?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// A fresh session token.
fn random_token() -> Result<String, AuthError> {
    let mut token = [0u8; SESSION_TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut token)
        .map_err(internal)?;
    Ok(hex::encode(token))
}

fn encode(stored: &StoredOperator) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(stored).map_err(internal)
}

fn decode(username: &str, value: &[u8]) -> Result<StoredOperator, AuthError> {
    serde_json::from_slice(value)
        .map_err(|e| AuthError::Internal(format!("操作员 {username} 的记录已损坏：{e}")))
}

fn internal(error: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(error.to_string())
}

/// Locks `mutex`, carrying on after a panic elsewhere: every critical section here leaves its
/// data consistent at each step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What login failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    User(String),
    Source(String),
}

impl ThrottleKey {
    fn user(username: &str) -> ThrottleKey {
        ThrottleKey::User(username.chars().take(THROTTLE_KEY_CHARS_MAX).collect())
    }

    fn source(source: &str) -> ThrottleKey {
        ThrottleKey::Source(source.chars().take(THROTTLE_KEY_CHARS_MAX * 2).collect())
    }
}

/// Recent failures of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_failure: Instant,
}

/// Failed-login counters per user name and per source, bounded by [`LOGIN_TRACKED_KEYS_MAX`].
#[derive(Debug)]
struct Throttle {
    failures_free: u32,
    delay_base: Duration,
    delay_max: Duration,
    forget: Duration,
    entries: HashMap<ThrottleKey, Failures>,
}

impl Throttle {
    fn new(config: &AuthConfig) -> Throttle {
        Throttle {
            failures_free: config.login_failures_free,
            delay_base: config.login_delay_base,
            delay_max: config.login_delay_max.max(config.login_delay_base),
            forget: config.login_failures_forget,
            entries: HashMap::new(),
        }
    }

    /// The wait after `count` failures: none for the free ones, then the base doubling with
    /// each further failure, at most the maximum.
    fn delay(&self, count: u32) -> Duration {
        if count <= self.failures_free {
            return Duration::ZERO;
        }
        let doublings = (count - self.failures_free - 1).min(30);
        self.delay_base
            .saturating_mul(1u32 << doublings)
            .min(self.delay_max)
    }

    /// Fails with [`AuthError::TooManyAttempts`] while any of `keys` must still wait.
    fn check(&self, keys: &[ThrottleKey], now: Instant) -> Result<(), AuthError> {
        let wait = keys
            .iter()
            .filter_map(|key| self.entries.get(key))
            .filter(|f| !self.is_stale(f, now))
            .map(|f| {
                self.delay(f.count)
                    .saturating_sub(now.saturating_duration_since(f.last_failure))
            })
            .max();
        match wait {
            Some(wait) if !wait.is_zero() => {
                let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(AuthError::TooManyAttempts { retry_after_s })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure against each key.
    fn record_failure(&mut self, keys: &[ThrottleKey], now: Instant) {
        for key in keys {
            if !self.entries.contains_key(key) {
                self.make_room(now);
            }
            let stale = self.entries.get(key).is_some_and(|f| self.is_stale(f, now));
            let fresh = Failures {
                count: 0,
                last_failure: now,
            };
            let failures = self.entries.entry(key.clone()).or_insert(fresh);
            if stale {
                *failures = fresh;
            }
            failures.count = failures.count.saturating_add(1);
            failures.last_failure = now;
        }
    }

    /// Forgets the failures of `key` (after a successful login).
    fn clear(&mut self, key: &ThrottleKey) {
        self.entries.remove(key);
    }

    /// Whether `failures` no longer matters: its last failure is older than the forget period.
    fn is_stale(&self, failures: &Failures, now: Instant) -> bool {
        now.saturating_duration_since(failures.last_failure) >= self.forget
    }

    /// Makes room for one more key: drops stale entries, then the oldest one.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < LOGIN_TRACKED_KEYS_MAX {
            return;
        }
        let forget = self.forget;
        self.entries
            .retain(|_, f| now.saturating_duration_since(f.last_failure) < forget);
        while self.entries.len() >= LOGIN_TRACKED_KEYS_MAX {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| f.last_failure)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            username: s.username.clone(),
            display_name: s.display_name.clone(),
            role: s.role,
            role_label: s.role.label_zh().into(),
            group_id: s.group_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "127.0.0.1:50000";

    fn new_op(username: &str, role: Role, group_id: Option<&str>, password: &str) -> NewOperator {
        NewOperator {
            username: username.into(),
            display_name: format!("{username} 的名字"),
            role,
            group_id: group_id.map(String::from),
            password: password.into(),
        }
    }

    fn teller(username: &str, password: &str) -> NewOperator {
        new_op(username, Role::Teller, None, password)
    }

    fn auth_with(config: AuthConfig) -> (Store, Auth) {
        let store = Store::temporary().expect("store");
        let auth = Auth::open(&store, config).expect("auth");
        (store, auth)
    }

    fn auth() -> (Store, Auth) {
        auth_with(AuthConfig::default())
    }

    #[test]
    fn create_login_authenticate_logout() {
        let (_store, auth) = auth();
        let op = auth
            .create_operator(new_op(
                "group.op-1",
                Role::GroupOperator,
                Some("G001"),
                "secret1",
            ))
            .expect("create");
        assert_eq!(
            (op.role, op.group_id.as_deref(), op.disabled),
            (Role::GroupOperator, Some("G001"), false)
        );
        assert_eq!(auth.get_operator("group.op-1").expect("get"), op);
        let t0 = Instant::now();
        let session = auth
            .login("group.op-1", "secret1", PEER, t0)
            .expect("login");
        assert_eq!(session.token.len(), SESSION_TOKEN_BYTES * 2);
        assert!(session.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            (session.username.as_str(), session.role),
            ("group.op-1", Role::GroupOperator)
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            auth.authenticate(&session.token, later)
                .expect("authenticate")
                .last_seen,
            later
        );
        assert!(
            !format!("{session:?}").contains(&session.token),
            "Debug must not print the token"
        );
        assert!(auth.logout(&session.token));
        assert!(!auth.logout(&session.token));
        assert!(matches!(
            auth.authenticate(&session.token, later),
            Err(AuthError::Unauthenticated)
        ));
    }

    #[test]
    fn a_login_verified_elsewhere_keeps_throttling_and_an_unreachable_verifier_is_not_a_failure() {
        let (_store, auth) = auth();
        let t0 = Instant::now();
        let remote = Operator {
            username: "central".into(),
            display_name: "后台操作员".into(),
            role: Role::Auditor,
            group_id: None,
            disabled: false,
            created_at: utc_now_rfc3339(),
            password_changed_at: utc_now_rfc3339(),
        };
        // No answer: refused as such, and never counted as a failed login.
        for _ in 0..10 {
            let err = auth
                .login_verified_by("central", PEER, t0, || {
                    Err(AuthError::HostUnreachable("timeout".into()))
                })
                .unwrap_err();
            assert!(err.to_string().starts_with("无法连接发卡方后台"), "{err}");
            assert_eq!(err.code(), ErrorCode::IssuerHostUnreachable);
        }
        // Refused by the verifier: counted, so the fourth costs a wait.
        for _ in 0..4 {
            assert!(matches!(
                auth.login_verified_by("central", PEER, t0, || Ok(None)),
                Err(AuthError::InvalidCredentials)
            ));
        }
        assert!(matches!(
            auth.login_verified_by("central", PEER, t0, || Ok(Some(remote.clone()))),
            Err(AuthError::TooManyAttempts { .. })
        ));
        let later = t0 + Duration::from_secs(2);
        let session = auth
            .login_verified_by("central", "elsewhere", later, || Ok(Some(remote.clone())))
            .expect("verified elsewhere");
        assert_eq!(session.role, Role::Auditor);
        let second = auth
            .login_verified_by("central", "elsewhere", later, || Ok(Some(remote.clone())))
            .expect("a second session");
        assert_eq!(auth.session_usernames(), vec!["central".to_owned()]);
        let known = auth.get_operator("central").expect("known by its session");
        assert_eq!(
            (known.role, known.display_name.as_str()),
            (Role::Auditor, "后台操作员")
        );

        // Ended as a disabling ends them, with the events the console listens to.
        let mut ends = auth.session_ends();
        assert_eq!(
            auth.end_sessions_of("central", SessionEnd::OperatorDisabled),
            2
        );
        let ended = [
            ends.try_recv().expect("event"),
            ends.try_recv().expect("event"),
        ];
        for token in [&session.token, &second.token] {
            assert!(
                ended.contains(&(token.clone(), SessionEnd::OperatorDisabled)),
                "{ended:?}"
            );
        }
        assert!(auth.session_usernames().is_empty());
        assert!(matches!(
            auth.get_operator("central"),
            Err(AuthError::OperatorNotFound(_))
        ));
        assert!(matches!(
            auth.authenticate(&session.token, later),
            Err(AuthError::Unauthenticated)
        ));
    }

    #[test]
    fn wrong_password_unknown_user_and_disabled_operator_look_the_same() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        auth.create_operator(teller("bob", "secret2"))
            .expect("create");
        auth.set_disabled("bob", true).expect("disable");
        let now = Instant::now();
        let long = "x".repeat(PASSWORD_CHARS_MAX + 1);
        let attempts = [
            ("alice", "wrong!!"),
            ("nobody", "secret1"),
            ("bob", "secret2"),
            ("", "secret1"),
            ("alice", long.as_str()),
        ];
        for (i, (user, password)) in attempts.iter().enumerate() {
            let err = auth
                .login(user, password, &format!("peer{i}"), now)
                .unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidCredentials),
                "{user}: {err:?}"
            );
            assert_eq!(err.to_string(), "用户和密码错误");
            assert_eq!(err.code(), ErrorCode::InvalidCredentials);
        }
        auth.set_disabled("bob", false).expect("enable");
        auth.login("bob", "secret2", PEER, now)
            .expect("enabled again");
    }

    #[test]
    fn failures_per_user_cost_a_growing_capped_wait_never_a_lockout() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Three free failures, from different sources.
        for i in 0..3 {
            let err = auth
                .login("alice", "wrong", &format!("peer{i}"), t0)
                .unwrap_err();
            assert!(matches!(err, AuthError::InvalidCredentials), "{err:?}");
        }
        // The fourth costs the base wait (1 s), the fifth twice that, and so on.
        assert!(matches!(
            auth.login("alice", "wrong", "peer3", t0),
            Err(AuthError::InvalidCredentials)
        ));
        let err = auth
            .login("alice", "secret1", "other", at(500))
            .unwrap_err();
        assert!(
            matches!(err, AuthError::TooManyAttempts { retry_after_s: 1 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "登录失败次数过多，请 1 秒后再试");
        assert_eq!(err.code(), ErrorCode::TooManyAttempts);
        let mut last = 1_000;
        for expected_s in [2, 4, 8, 16, 30, 30, 30] {
            assert!(matches!(
                auth.login("alice", "wrong", "peer9", at(last)),
                Err(AuthError::InvalidCredentials)
            ));
            let err = auth.login("alice", "secret1", "p", at(last)).unwrap_err();
            assert!(
                matches!(err, AuthError::TooManyAttempts { retry_after_s } if retry_after_s == expected_s),
                "{err:?}"
            );
            last += expected_s * 1000;
        }
        // Refused attempts neither count nor extend the wait: after the capped wait the
        // owner is heard.
        for ms in [last - 20_000, last - 10_000, last - 1] {
            assert!(matches!(
                auth.login("alice", "secret1", "p", at(ms)),
                Err(AuthError::TooManyAttempts { .. })
            ));
        }
        auth.login("alice", "secret1", "p", at(last))
            .expect("heard after the capped wait");
    }

    #[test]
    fn success_resets_the_user_counter_and_old_failures_expire() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let t0 = Instant::now();
        let fail = |at: Instant, peer: &str| auth.login("alice", "wrong", peer, at).unwrap_err();
        for i in 0..3 {
            fail(t0, &format!("a{i}"));
        }
        auth.login("alice", "secret1", "a9", t0).expect("success");
        for i in 0..3 {
            fail(t0, &format!("b{i}"));
        }
        // After the forget period the count starts again.
        let t1 = t0 + AuthConfig::default().login_failures_forget;
        for i in 0..3 {
            assert!(matches!(
                fail(t1, &format!("c{i}")),
                AuthError::InvalidCredentials
            ));
        }
        auth.login("alice", "secret1", "c9", t1)
            .expect("no wait yet");
    }

    #[test]
    fn failures_per_source_across_user_names_delay_only_that_source() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let now = Instant::now();
        for i in 0..4 {
            let err = auth
                .login(&format!("guess{i}"), "pw", "10.0.0.9 program", now)
                .unwrap_err();
            assert!(matches!(err, AuthError::InvalidCredentials), "{err:?}");
        }
        let err = auth
            .login("alice", "secret1", "10.0.0.9 program", now)
            .unwrap_err();
        assert!(
            matches!(err, AuthError::TooManyAttempts { retry_after_s: 1 }),
            "{err:?}"
        );
        auth.login("alice", "secret1", "10.0.0.10 program", now)
            .expect("other source unaffected");
        auth.login(
            "alice",
            "secret1",
            "10.0.0.9 program",
            now + Duration::from_secs(1),
        )
        .expect("the source is heard after its wait");
    }

    #[test]
    fn login_sources_are_normalised() {
        let v4: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        let v4_other_port: SocketAddr = "127.0.0.1:50001".parse().expect("addr");
        let v6: SocketAddr = "[::1]:50000".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:192.168.1.5]:1234".parse().expect("addr");
        let lan: SocketAddr = "192.168.1.5:999".parse().expect("addr");
        assert_eq!(login_source(Some(v4), None), "loopback program");
        assert_eq!(
            login_source(Some(v4), None),
            login_source(Some(v4_other_port), None)
        );
        assert_eq!(login_source(Some(v6), None), login_source(Some(v4), None));
        assert_eq!(
            login_source(Some(mapped), None),
            login_source(Some(lan), None)
        );
        assert_eq!(
            login_source(Some(v4), Some("HTTP://127.0.0.1:7878")),
            login_source(Some(v6), Some("http://127.0.0.1:7878"))
        );
        assert_ne!(
            login_source(Some(v4), Some("http://127.0.0.1:7878")),
            login_source(Some(v4), None)
        );
        assert_eq!(login_source(None, None), "unknown program");
    }

    #[test]
    fn the_failure_map_is_bounded() {
        let mut throttle = Throttle::new(&AuthConfig::default());
        let t0 = Instant::now();
        throttle.record_failure(&[ThrottleKey::user("first")], t0);
        for i in 0..LOGIN_TRACKED_KEYS_MAX + 10 {
            throttle.record_failure(
                &[ThrottleKey::source(&format!("p{i}"))],
                t0 + Duration::from_millis(1),
            );
        }
        assert_eq!(throttle.entries.len(), LOGIN_TRACKED_KEYS_MAX);
        assert!(
            !throttle.entries.contains_key(&ThrottleKey::user("first")),
            "the oldest goes first"
        );
        let long = "u".repeat(10_000);
        throttle.record_failure(&[ThrottleKey::user(&long), ThrottleKey::source(&long)], t0);
        assert!(throttle.entries.keys().all(|k| match k {
            ThrottleKey::User(s) | ThrottleKey::Source(s) =>
                s.chars().count() <= THROTTLE_KEY_CHARS_MAX * 2,
        }));
    }

    #[test]
    fn idle_sessions_expire_and_are_removed() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let t0 = Instant::now();
        let token = auth
            .login("alice", "secret1", PEER, t0)
            .expect("login")
            .token;
        let idle = AuthConfig::default().session_idle_timeout;
        auth.authenticate(&token, t0 + idle)
            .expect("exactly at the timeout is still fine");
        let late = t0 + idle + idle + Duration::from_secs(1);
        let err = auth.authenticate(&token, late).unwrap_err();
        assert!(matches!(err, AuthError::Unauthenticated));
        assert_eq!(err.to_string(), "未登录或登录已超时，请重新登录");
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
        assert!(!auth.logout(&token), "the expired session was removed");
        assert!(matches!(
            auth.authenticate("not-a-token", t0),
            Err(AuthError::Unauthenticated)
        ));
    }

    #[test]
    fn change_password_checks_then_ends_other_sessions() {
        let (_store, auth) = auth();
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let now = Instant::now();
        let current = auth
            .login("alice", "secret1", PEER, now)
            .expect("login")
            .token;
        let other = auth
            .login("alice", "secret1", PEER, now)
            .expect("login")
            .token;
        let rejected = |old: &str, new: &str, confirm: &str| match auth
            .change_password(&current, old, new, confirm, now)
        {
            Err(AuthError::PasswordRejected(reason)) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        };
        assert_eq!(
            rejected("secret1", "newpass1", "newpass2"),
            "两次输入的新密码不一致"
        );
        assert_eq!(
            rejected("wrong", "newpass1", "newpass1"),
            "原密码错误，请重新输入"
        );
        assert_eq!(
            rejected("secret1", "short", "short"),
            "新密码至少需要 6 个字符"
        );
        let long = "x".repeat(PASSWORD_CHARS_MAX + 1);
        assert_eq!(
            rejected("secret1", &long, &long),
            format!("新密码不能超过 {PASSWORD_CHARS_MAX} 个字符")
        );
        assert_eq!(
            rejected("secret1", "secret1", "secret1"),
            "新密码不能与原密码相同"
        );
        assert!(
            auth.authenticate(&other, now).is_ok(),
            "rejections change nothing"
        );

        auth.change_password(&current, "secret1", "新的密码abc", "新的密码abc", now)
            .expect("change");
        auth.authenticate(&current, now)
            .expect("the current session stays");
        assert!(matches!(
            auth.authenticate(&other, now),
            Err(AuthError::Unauthenticated)
        ));
        assert!(matches!(
            auth.login("alice", "secret1", PEER, now),
            Err(AuthError::InvalidCredentials)
        ));
        auth.login("alice", "新的密码abc", PEER, now)
            .expect("new password works");
        let err = auth
            .change_password("bogus", "a", "b", "b", now)
            .unwrap_err();
        assert!(matches!(err, AuthError::Unauthenticated));
    }

    #[test]
    fn operators_are_validated() {
        let (_store, auth) = auth();
        let long_name = "a".repeat(USERNAME_CHARS_MAX + 1);
        let invalid = [
            teller("", "secret1"),
            teller(&long_name, "secret1"),
            teller("has space", "secret1"),
            teller("中文", "secret1"),
            teller("semi;colon", "secret1"),
            NewOperator {
                display_name: String::new(),
                ..teller("okname", "secret1")
            },
            NewOperator {
                display_name: "x".repeat(DISPLAY_NAME_CHARS_MAX + 1),
                ..teller("okname", "secret1")
            },
            NewOperator {
                display_name: "tab\there".into(),
                ..teller("okname", "secret1")
            },
            new_op("grp", Role::GroupOperator, None, "secret1"),
            new_op("grp", Role::GroupOperator, Some(""), "secret1"),
            new_op("tel", Role::Teller, Some("G001"), "secret1"),
        ];
        for new in invalid {
            let err = auth.create_operator(new.clone()).unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidOperator(_)),
                "{new:?}: {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::InvalidParams);
        }
        let err = auth.create_operator(teller("okname", "12345")).unwrap_err();
        assert!(
            matches!(&err, AuthError::PasswordRejected(r) if r == "密码至少需要 6 个字符"),
            "{err:?}"
        );
        let max_name = "Az0_.-".repeat(5) + "ab";
        assert_eq!(max_name.len(), USERNAME_CHARS_MAX);
        auth.create_operator(teller(&max_name, "secret1"))
            .expect("32 characters of the allowed set");
        let err = auth
            .create_operator(teller(&max_name, "secret1"))
            .unwrap_err();
        assert!(matches!(err, AuthError::OperatorExists(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::OperatorExists);
        assert!(matches!(
            auth.get_operator("ghost"),
            Err(AuthError::OperatorNotFound(_))
        ));
        assert!(matches!(
            auth.set_disabled("ghost", true),
            Err(AuthError::OperatorNotFound(_))
        ));
    }

    #[test]
    fn sessions_are_bounded_least_recently_used_first() {
        let (_store, auth) = auth_with(AuthConfig {
            sessions_per_user_max: 2,
            ..AuthConfig::default()
        });
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = auth
            .login("alice", "secret1", PEER, at(0))
            .expect("login")
            .token;
        let second = auth
            .login("alice", "secret1", PEER, at(1))
            .expect("login")
            .token;
        auth.authenticate(&first, at(2)).expect("touch the first");
        let third = auth
            .login("alice", "secret1", PEER, at(3))
            .expect("login")
            .token;
        assert!(matches!(
            auth.authenticate(&second, at(4)),
            Err(AuthError::Unauthenticated)
        ));
        auth.authenticate(&first, at(4))
            .expect("recently used stays");
        auth.authenticate(&third, at(4)).expect("newest stays");
        assert_eq!(lock(&auth.sessions).len(), 2);
    }

    #[test]
    fn a_user_or_role_over_its_cap_ends_only_its_own_sessions() {
        let (_store, auth) = auth_with(AuthConfig {
            sessions_max: 6,
            sessions_per_user_max: 3,
            kiosk_sessions_max: 4,
            ..AuthConfig::default()
        });
        auth.create_operator(teller("alice", "secret1"))
            .expect("create");
        auth.create_operator(teller("bob", "secret2"))
            .expect("create");
        for name in ["kiosk1", "kiosk2"] {
            auth.create_operator(new_op(name, Role::Kiosk, None, "kiosk-pw"))
                .expect("create");
        }
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let alice = auth
            .login("alice", "secret1", PEER, at(0))
            .expect("login")
            .token;
        let bob = auth
            .login("bob", "secret2", PEER, at(1))
            .expect("login")
            .token;
        let mut kiosk2 = Vec::new();
        for i in 0..2 {
            kiosk2.push(
                auth.login("kiosk2", "kiosk-pw", PEER, at(2 + i))
                    .expect("login")
                    .token,
            );
        }
        // kiosk1 loops: it first ends its own sessions (user cap 3), then other kiosks' (role
        // cap 4), never a teller's.
        for i in 0..20 {
            auth.login("kiosk1", "kiosk-pw", PEER, at(10 + i))
                .expect("login");
        }
        auth.authenticate(&alice, at(40)).expect("teller stays");
        auth.authenticate(&bob, at(41)).expect("teller stays");
        let sessions = lock(&auth.sessions).clone();
        assert_eq!(
            sessions.values().filter(|s| s.username == "kiosk1").count(),
            3
        );
        assert_eq!(
            sessions.values().filter(|s| s.role == Role::Kiosk).count(),
            4
        );
        assert_eq!(
            kiosk2.iter().filter(|t| sessions.contains_key(*t)).count(),
            1,
            "the role cap ended the other kiosk's least recently used session"
        );
        // The daemon is full (6): a teller's login ends the tellers' oldest, not a kiosk's.
        let carol_op = auth
            .create_operator(teller("carol", "secret3"))
            .expect("create");
        assert_eq!(carol_op.role, Role::Teller);
        auth.login("carol", "secret3", PEER, at(42)).expect("login");
        assert!(
            auth.authenticate(&alice, at(43)).is_err(),
            "the oldest teller session ended"
        );
        auth.authenticate(&bob, at(43))
            .expect("the newer teller session stays");
        assert_eq!(
            lock(&auth.sessions)
                .values()
                .filter(|s| s.role == Role::Kiosk)
                .count(),
            4
        );
        // A role with no session to give up is refused when the daemon is full.
        auth.create_operator(new_op("root", Role::Admin, None, "admin-pw"))
            .expect("create");
        let err = auth.login("root", "admin-pw", PEER, at(44)).unwrap_err();
        assert!(matches!(err, AuthError::SessionsFull(6)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::ServerBusy);
    }

    #[test]
    fn admin_actions_end_sessions_and_ensure_is_idempotent() {
        let (_store, auth) = auth();
        assert!(auth
            .ensure_operator(teller("alice", "secret1"))
            .expect("ensure"));
        assert!(!auth
            .ensure_operator(teller("alice", "different"))
            .expect("ensure again"));
        let now = Instant::now();
        let token = auth
            .login("alice", "secret1", PEER, now)
            .expect("the first password stays")
            .token;
        auth.reset_password("alice", "reset-pw").expect("reset");
        assert!(matches!(
            auth.authenticate(&token, now),
            Err(AuthError::Unauthenticated)
        ));
        let token = auth
            .login("alice", "reset-pw", PEER, now)
            .expect("login")
            .token;
        assert!(auth.set_disabled("alice", true).expect("disable").disabled);
        assert!(matches!(
            auth.authenticate(&token, now),
            Err(AuthError::Unauthenticated)
        ));
        assert!(matches!(
            auth.reset_password("alice", "x"),
            Err(AuthError::PasswordRejected(_))
        ));
        assert!(matches!(
            auth.reset_password("ghost", "secret1"),
            Err(AuthError::OperatorNotFound(_))
        ));
    }

    #[test]
    fn operators_persist_across_reopen_without_exposing_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let auth = Auth::open(&store, AuthConfig::default()).expect("auth");
            auth.create_operator(teller("alice", "secret1"))
                .expect("create");
            auth.create_operator(new_op("root", Role::Admin, None, "admin-pw"))
                .expect("create");
            auth.set_disabled("root", true).expect("disable");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let auth = Auth::open(&store, AuthConfig::default()).expect("auth");
        let operators = auth.list_operators().expect("list");
        assert_eq!(
            operators
                .iter()
                .map(|o| o.username.as_str())
                .collect::<Vec<_>>(),
            ["alice", "root"]
        );
        assert!(operators[1].disabled);
        let json = serde_json::to_string(&operators).expect("json");
        assert!(
            !json.contains("argon2") && !json.contains("password_hash"),
            "{json}"
        );
        assert!(!format!("{auth:?} {store:?}").contains("argon2"));
        auth.login("alice", "secret1", PEER, Instant::now())
            .expect("login after reopen");
    }

    #[test]
    fn a_new_operator_serialises_without_its_password() {
        let json = serde_json::to_value(teller("alice", "secret1")).expect("json");
        assert_eq!(json["username"], "alice");
        assert!(json.get("password").is_none(), "{json}");
        let parsed: NewOperator = serde_json::from_value(serde_json::json!({
            "username": "bob", "display_name": "Bob", "role": "teller", "group_id": null, "password": "pw1234",
        }))
        .expect("parse");
        assert_eq!(parsed.password, "pw1234");
    }

    #[test]
    fn every_error_has_its_code() {
        let cases = [
            (AuthError::InvalidCredentials, ErrorCode::InvalidCredentials),
            (
                AuthError::TooManyAttempts { retry_after_s: 1 },
                ErrorCode::TooManyAttempts,
            ),
            (AuthError::Unauthenticated, ErrorCode::Unauthenticated),
            (AuthError::Busy, ErrorCode::ServerBusy),
            (AuthError::SessionsFull(1), ErrorCode::ServerBusy),
            (
                AuthError::PasswordRejected(String::new()),
                ErrorCode::PasswordRejected,
            ),
            (
                AuthError::OperatorNotFound(String::new()),
                ErrorCode::OperatorNotFound,
            ),
            (
                AuthError::OperatorExists(String::new()),
                ErrorCode::OperatorExists,
            ),
            (
                AuthError::InvalidOperator(String::new()),
                ErrorCode::InvalidParams,
            ),
            (AuthError::Internal(String::new()), ErrorCode::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
        }
    }
}
