//! The server's notion of "now" for action times, lifecycle windows and rate limits.
//! Production uses the system clock; tests drive a [`ManualClock`] so that a three-day
//! timeout or a one-hour quota is checked exactly, without waiting.
//!
//! Token and link expiry are checked by `jsonwebtoken` against the system clock.

use std::sync::Mutex;
use std::time::Duration;

use casefile_proto::time::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start))
    }

    /// Starts at the system time, so tokens minted now are valid against it.
    pub fn starting_now() -> Self {
        Self::new(chrono::Utc::now())
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let by = chrono::Duration::from_std(by).expect("a test advances the clock by a sane amount");
        *now = now.checked_add_signed(by).expect("the clock stays within chrono's range");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `seconds` before `at`, saturating at the earliest representable time (a window of
/// "forever" in the configuration must not overflow).
pub fn seconds_before(at: Timestamp, seconds: u64) -> Timestamp {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}
