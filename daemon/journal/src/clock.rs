//! Where the host's times come from.
//!
//! Recharge times decide record numbers (the China date), the order of a vehicle's records and
//! which records a time-range query finds, so tests must be able to set them: the host reads
//! time only through [`Clock`]. Every time is kept to whole seconds at +08:00, so that the
//! stored RFC 3339 text is exactly what a teller sees.

use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

use crate::CHINA_OFFSET;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to: for tests and reproducible demos.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.saturating_add(by);
    }

    /// Sets the clock.
    pub fn set(&self, to: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `t` at +08:00, without its fraction of a second.
pub fn china_seconds(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(CHINA_OFFSET);
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A time as a person reads it: China time, `YYYY-MM-DD HH:MM:SS`.
pub fn china_time_text(t: OffsetDateTime) -> String {
    let t = china_seconds(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The China calendar date of `t` as `YYYYMMDD`.
pub fn china_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA_OFFSET);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_are_china_seconds_and_dates_follow_china() {
        let t = datetime!(2024-06-14 16:30:00.75 UTC);
        let c = china_seconds(t);
        assert_eq!(c, datetime!(2024-06-15 00:30:00 +8));
        assert_eq!(c.offset(), CHINA_OFFSET);
        assert_eq!(china_date(t), "20240615");
        let clock = ManualClock::new(t);
        clock.advance(Duration::hours(1));
        assert_eq!(clock.now(), datetime!(2024-06-14 17:30:00.75 UTC));
    }
}
