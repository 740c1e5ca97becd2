//! The one wall-clock type. Sans-IO cores never read the clock; the caller
//! hands them the wall time (storage lifetimes, RFC 6940 §7; certificate
//! validity, §11.3; digest nonces) as a [`WallTime`], so milliseconds and
//! seconds cannot be mixed up at a call site. Wire fields keep the units
//! the RFC gives them (`storage_time` u64 ms, `lifetime` u32 s) and are
//! converted where they are read or written.
//!
//! This module imports nothing from the crate (docs/architecture.md).

use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch (1970-01-01T00:00:00Z), UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(u64);

impl WallTime {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: WallTime = WallTime(0);

    pub const fn from_millis(ms: u64) -> Self {
        WallTime(ms)
    }

    /// Seconds since the epoch (saturating at the far future).
    pub const fn from_secs(s: u64) -> Self {
        WallTime(s.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        WallTime(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        WallTime(self.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: WallTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// RFC 3339 in UTC with milliseconds: `2027-01-15T08:00:00.000Z`.
impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, ms) = (self.0 / 1000, self.0 % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_do_not_mix() {
        let t = WallTime::from_secs(1_800_000_000);
        assert_eq!(t.as_millis(), 1_800_000_000_000);
        assert_eq!(WallTime::from_millis(1_800_000_000_999).as_secs(), 1_800_000_000);
        assert_eq!(t.saturating_add(Duration::from_millis(1500)).as_millis(), 1_800_000_001_500);
        assert_eq!(WallTime::from_millis(5).saturating_sub(Duration::from_secs(1)), WallTime::UNIX_EPOCH);
        assert_eq!(WallTime::from_secs(u64::MAX).saturating_add(Duration::MAX).as_millis(), u64::MAX);
        assert_eq!(t.saturating_duration_since(WallTime::from_secs(1_799_999_999)), Duration::from_secs(1));
        assert_eq!(WallTime::UNIX_EPOCH.saturating_duration_since(t), Duration::ZERO);
    }

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(WallTime::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(WallTime::from_millis(1_800_000_000_123).to_string(), "2027-01-15T08:00:00.123Z");
        // A leap day and the last millisecond of a leap year.
        assert_eq!(WallTime::from_secs(951_782_400).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(WallTime::from_millis(4_107_542_399_999).to_string(), "2100-02-28T23:59:59.999Z");
    }
}
