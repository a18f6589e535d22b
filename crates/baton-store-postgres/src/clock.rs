//! The database's clock as every replica reads it (DESIGN §4: state depends on time, never
//! on who looked when). Leases expire, backoffs end and events are stamped by "now"; if
//! each replica took it from its own host, one whose clock ran ahead would expire leases
//! other replicas had just granted. So a replica reads time as its wall clock plus an
//! offset to PostgreSQL's `clock_timestamp()`, measured when the store opens and again
//! every [`REFRESH`] on the listener's connection.

use baton_core::time::{Clock, Millis, SystemClock};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The query that reads the server's clock, in milliseconds since the epoch.
pub(crate) const QUERY: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How often the offset is measured again (host clocks drift, and get stepped).
pub(crate) const REFRESH: Duration = Duration::from_secs(30);

/// A reading slower than this says little about the offset (its error is up to half the
/// round trip); it is dropped.
const MAX_ROUND_TRIP_MS: i64 = 40;

/// Changes smaller than this are the measurement's own noise: time is not moved for them.
const JITTER_MS: i64 = 10;

/// The wall clock corrected to the database server's: see the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct DatabaseClock {
    offset_ms: Arc<AtomicI64>,
}

impl DatabaseClock {
    /// Takes a reading: the server said `server` between `before` and `after` (this
    /// host's wall clock). Returns whether the offset moved.
    pub(crate) fn observe(&self, before: Millis, server: Millis, after: Millis) -> bool {
        if after - before > MAX_ROUND_TRIP_MS || after < before {
            return false;
        }
        let offset = server - before - (after - before) / 2;
        let old = self.offset_ms.load(Ordering::Relaxed);
        if (offset - old).abs() < JITTER_MS {
            return false;
        }
        self.offset_ms.store(offset, Ordering::Relaxed);
        true
    }

    /// The offset to the server's clock, in milliseconds (positive: the server is ahead).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for DatabaseClock {
    fn now(&self) -> Millis {
        SystemClock.now() + self.offset_ms()
    }
}

/// This host's wall clock, for readings.
pub(crate) fn wall() -> Millis {
    SystemClock.now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_set_the_offset_from_the_midpoint_and_ignore_noise() {
        let clock = DatabaseClock::default();
        assert!(clock.observe(1_000, 21_004, 1_008), "20 s ahead");
        assert_eq!(clock.offset_ms(), 20_000);
        assert!(!clock.observe(2_000, 22_005, 2_002), "within the jitter");
        assert!(!clock.observe(3_000, 9_000, 3_100), "too slow a reading");
        assert!(clock.observe(4_000, 3_000, 4_000), "behind");
        assert_eq!(clock.offset_ms(), -1_000);
        let now = clock.now();
        assert!((now - (SystemClock.now() - 1_000)).abs() < 1_000);
    }
}
