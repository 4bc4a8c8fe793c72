//! The back office's sessions and its login throttle, in memory (a restarted host logs
//! everyone out).
//!
//! A login gives a random token (32 bytes, hex) that the page keeps in `sessionStorage` and
//! sends as `Authorization: Bearer <token>` on every call. A header rather than a cookie: a
//! browser never attaches it by itself, so a page elsewhere cannot make a logged-in call
//! (CSRF) even before the Origin check, and a cross-origin page cannot set it without the
//! CORS preflight the back office refuses.
//!
//! **Invariants.** At most [`SESSIONS_PER_USER_MAX`] sessions per user (a new login ends the
//! oldest) and [`SESSIONS_MAX`] in all; a session unused for [`SESSION_IDLE_MS`] or older than
//! [`SESSION_LIFETIME_MS`] is ended; disabling an operator or resetting their password ends
//! their sessions. A user name that failed [`LOGIN_FAILURES_MAX`] logins within
//! [`LOGIN_WINDOW_MS`] is refused for [`LOGIN_LOCK_MS`] whatever the password (the throttle
//! keeps at most [`THROTTLED_USERS_MAX`] names).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cardd_api::Role;
use rand::RngCore;

/// Sessions one user may hold at once; a new login ends the oldest.
pub const SESSIONS_PER_USER_MAX: usize = 4;
/// Sessions held at once in all; a login beyond ends the least recently used.
pub const SESSIONS_MAX: usize = 256;
/// A session unused this long ends.
pub const SESSION_IDLE_MS: u64 = 15 * 60 * 1000;
/// A session ends this long after its login, however busy.
pub const SESSION_LIFETIME_MS: u64 = 12 * 60 * 60 * 1000;
/// Failed logins of one user name within [`LOGIN_WINDOW_MS`] that lock it.
pub const LOGIN_FAILURES_MAX: u32 = 5;
/// The window failures are counted in.
pub const LOGIN_WINDOW_MS: u64 = 15 * 60 * 1000;
/// How long a locked user name is refused.
pub const LOGIN_LOCK_MS: u64 = 5 * 60 * 1000;
/// User names the throttle remembers (the oldest are forgotten beyond).
pub const THROTTLED_USERS_MAX: usize = 4096;
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A logged-in back-office operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    started: Instant,
    last_used: Instant,
}

/// The live sessions, by token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// A new session for `username`; its token.
    pub fn open(&mut self, username: &str, display_name: &str, role: Role, now: Instant) -> String {
        self.sweep(now);
        let mut mine: Vec<(String, Instant)> = self
            .by_token
            .iter()
            .filter(|(_, s)| s.username == username)
            .map(|(t, s)| (t.clone(), s.started))
            .collect();
        mine.sort_by_key(|(_, started)| *started);
        while mine.len() >= SESSIONS_PER_USER_MAX {
            let (oldest, _) = mine.remove(0);
            self.by_token.remove(&oldest);
        }
        while self.by_token.len() >= SESSIONS_MAX {
            let Some(idle) = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            self.by_token.remove(&idle);
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.by_token.insert(
            token.clone(),
            Session {
                username: username.to_owned(),
                display_name: display_name.to_owned(),
                role,
                started: now,
                last_used: now,
            },
        );
        token
    }

    /// The session of `token`, marked used; `None` when unknown or ended.
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<Session> {
        self.sweep(now);
        let session = self.by_token.get_mut(token)?;
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends the session of `token`.
    pub fn close(&mut self, token: &str) {
        self.by_token.remove(token);
    }

    /// Ends every session of `username` (disabled, or their password reset).
    pub fn close_user(&mut self, username: &str) {
        self.by_token.retain(|_, s| s.username != username);
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let idle = Duration::from_millis(SESSION_IDLE_MS);
        let lifetime = Duration::from_millis(SESSION_LIFETIME_MS);
        self.by_token.retain(|_, s| {
            now.saturating_duration_since(s.last_used) < idle
                && now.saturating_duration_since(s.started) < lifetime
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    first: Instant,
    count: u32,
    locked_until: Option<Instant>,
}

/// Failed logins per user name.
#[derive(Debug, Default)]
pub struct Throttle {
    by_user: HashMap<String, Failures>,
}

impl Throttle {
    /// `Err(minutes to wait)` while `username` is locked.
    pub fn check(&mut self, username: &str, now: Instant) -> Result<(), u64> {
        match self.by_user.get(username).and_then(|f| f.locked_until) {
            Some(until) if until > now => {
                let ms = until.duration_since(now).as_millis() as u64;
                Err(ms.div_ceil(60_000).max(1))
            }
            Some(_) => {
                self.by_user.remove(username);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed login; locks the name at [`LOGIN_FAILURES_MAX`] within the window.
    pub fn failed(&mut self, username: &str, now: Instant) {
        if self.by_user.len() >= THROTTLED_USERS_MAX && !self.by_user.contains_key(username) {
            if let Some(oldest) = self
                .by_user
                .iter()
                .min_by_key(|(_, f)| f.first)
                .map(|(u, _)| u.clone())
            {
                self.by_user.remove(&oldest);
            }
        }
        let window = Duration::from_millis(LOGIN_WINDOW_MS);
        let f = self.by_user.entry(username.to_owned()).or_insert(Failures {
            first: now,
            count: 0,
            locked_until: None,
        });
        if now.saturating_duration_since(f.first) >= window {
            *f = Failures {
                first: now,
                count: 0,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= LOGIN_FAILURES_MAX {
            f.locked_until = Some(now + Duration::from_millis(LOGIN_LOCK_MS));
        }
    }

    /// Forgets the failures of `username` (a successful login).
    pub fn succeeded(&mut self, username: &str) {
        self.by_user.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let token = s.open("auditor1", "审核员一", Role::Auditor, t0);
        assert_eq!(token.len(), 64);
        let at = t0 + MS(SESSION_IDLE_MS - 1);
        assert_eq!(s.touch(&token, at).map(|x| x.role), Some(Role::Auditor));
        assert!(s.touch(&token, at + MS(SESSION_IDLE_MS - 1)).is_some());
        assert!(s.touch(&token, at + MS(2 * SESSION_IDLE_MS)).is_none());
        assert!(s.touch("nonsense", t0).is_none());
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_busy() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let token = s.open("a", "a", Role::Admin, t0);
        let mut at = t0;
        while at < t0 + MS(SESSION_LIFETIME_MS - SESSION_IDLE_MS) {
            at += MS(SESSION_IDLE_MS / 2);
            assert!(s.touch(&token, at).is_some());
        }
        assert!(s.touch(&token, t0 + MS(SESSION_LIFETIME_MS)).is_none());
    }

    #[test]
    fn sessions_per_user_are_bounded_and_the_oldest_goes() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let tokens: Vec<String> = (0..=SESSIONS_PER_USER_MAX as u64)
            .map(|i| s.open("a", "a", Role::Admin, t0 + MS(i)))
            .collect();
        let now = t0 + MS(100);
        assert!(s.touch(&tokens[0], now).is_none(), "the oldest ended");
        for t in &tokens[1..] {
            assert!(s.touch(t, now).is_some());
        }
        let other = s.open("b", "b", Role::Auditor, now);
        assert_eq!(s.len(), SESSIONS_PER_USER_MAX + 1);
        s.close_user("a");
        assert_eq!(s.len(), 1);
        s.close(&other);
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_in_all_are_bounded() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        for i in 0..SESSIONS_MAX as u64 + 10 {
            s.open(&format!("u{i}"), "u", Role::Auditor, t0 + MS(i));
        }
        assert_eq!(s.len(), SESSIONS_MAX);
    }

    #[test]
    fn a_user_name_is_locked_after_too_many_failures_then_free_again() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..LOGIN_FAILURES_MAX as u64 {
            assert_eq!(t.check("a", t0 + MS(i)), Ok(()));
            t.failed("a", t0 + MS(i));
        }
        let minutes = t.check("a", t0 + MS(10)).expect_err("locked");
        assert_eq!(minutes, LOGIN_LOCK_MS.div_ceil(60_000));
        assert_eq!(t.check("b", t0), Ok(()), "other names are not locked");
        assert_eq!(t.check("a", t0 + MS(LOGIN_LOCK_MS + 100)), Ok(()));
        // Failures spread beyond the window do not lock.
        for i in 0..(2 * LOGIN_FAILURES_MAX as u64) {
            t.failed("c", t0 + MS(i * LOGIN_WINDOW_MS / 2));
            t.succeeded("c");
        }
        assert_eq!(t.check("c", t0 + MS(LOGIN_WINDOW_MS * 10)), Ok(()));
    }
}
