//! Time, read in one place.
//!
//! The server uses two clocks and never mixes them up:
//! * **wall time** (Unix milliseconds, UTC) for everything stored or shown: when a user was
//!   invited, when a session ends, `expires_at` in answers. It can jump (NTP, an operator).
//! * **monotonic time** (milliseconds since the reactor started) for everything the reactor
//!   waits on: timers, heartbeats, deadlines. It never goes back.
//!
//! Only the reactor reads the clocks, once per use, and hands the value down as a [`Now`]: the
//! application, the session clock and the commands take `now` as an argument, so their rules can
//! be tested with any time at all and no sleeping.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds (UTC). Before 1970 (a broken clock) reads as 0.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One reading of both clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Unix milliseconds (UTC).
    pub wall_ms: i64,
    /// Milliseconds since the reactor started.
    pub mono_ms: u64,
}

impl Now {
    /// The monotonic instant at which wall time `wall_ms` will be reached, assuming the wall
    /// clock keeps pace from here. A time already past maps to now (timers fire late, never
    /// early; whoever acts on the timer re-checks against the wall clock).
    pub fn mono_at(self, wall_ms: i64) -> u64 {
        self.mono_ms + wall_ms.saturating_sub(self.wall_ms).max(0) as u64
    }
}

/// The reactor's clock: monotonic time counts from its creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            started: Instant::now(),
        }
    }
}

impl Clock {
    /// Milliseconds since the clock was created.
    pub fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Both clocks, read now.
    pub fn now(&self) -> Now {
        Now {
            wall_ms: wall_ms(),
            mono_ms: self.mono_ms(),
        }
    }
}

/// `2026-11-26T00:16:18Z` from Unix milliseconds (proleptic Gregorian, UTC; RFC 3339 §5.6,
/// whole seconds).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_652_178_999), "2026-11-26T00:16:18Z");
    }

    #[test]
    fn wall_deadlines_map_to_monotonic_ones() {
        let now = Now {
            wall_ms: 1_000_000,
            mono_ms: 50,
        };
        assert_eq!(now.mono_at(1_000_500), 550);
        assert_eq!(now.mono_at(999_000), 50, "a past deadline is due now");
    }
}
