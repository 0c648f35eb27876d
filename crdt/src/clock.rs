//! Hybrid logical clock (HLC): physical milliseconds plus a logical counter, so that
//! timestamps respect causality even when wall clocks disagree.
//!
//! The clock never reads the system time: callers pass the physical time in. A remote
//! timestamp further ahead of local physical time than the configured bound is refused
//! rather than adopted, so one peer with a broken clock (or a lie) cannot drag every
//! replica's clock into the year 9999.

use serde::{Deserialize, Serialize};

/// A point in hybrid time, ordered by physical milliseconds, then logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "(u64, u32)", into = "(u64, u32)")]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (or since any epoch all replicas share).
    pub millis: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
}

impl From<(u64, u32)> for Timestamp {
    fn from((millis, logical): (u64, u32)) -> Self {
        Timestamp { millis, logical }
    }
}

impl From<Timestamp> for (u64, u32) {
    fn from(t: Timestamp) -> Self {
        (t.millis, t.logical)
    }
}

impl Timestamp {
    /// The first timestamp of millisecond `millis`.
    pub fn at(millis: u64) -> Timestamp {
        Timestamp { millis, logical: 0 }
    }

    /// The next timestamp after this one within the same millisecond, rolling over into the
    /// next millisecond if the logical counter is exhausted.
    fn tick(self) -> Timestamp {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp {
                millis: self.millis,
                logical,
            },
            None => Timestamp {
                millis: self.millis.saturating_add(1),
                logical: 0,
            },
        }
    }
}

/// A remote timestamp the clock refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The timestamp is further in the future than the allowed drift.
    #[error("timestamp {remote_ms} ms is {ahead_ms} ms ahead of local time {now_ms} ms (allowed drift {max_drift_ms} ms)")]
    TooFarAhead {
        remote_ms: u64,
        now_ms: u64,
        ahead_ms: u64,
        max_drift_ms: u64,
    },
}

/// A hybrid logical clock owned by one replica.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_drift_ms: u64,
}

impl Hlc {
    /// A clock that refuses remote timestamps more than `max_drift_ms` ahead of local time.
    pub fn new(max_drift_ms: u64) -> Self {
        Hlc {
            last: Timestamp::default(),
            max_drift_ms,
        }
    }

    /// The last timestamp this clock issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A fresh timestamp for a local event at physical time `now_ms`: strictly greater than
    /// every timestamp issued or observed before.
    pub fn now(&mut self, now_ms: u64) -> Timestamp {
        self.last = if now_ms > self.last.millis {
            Timestamp {
                millis: now_ms,
                logical: 0,
            }
        } else {
            self.last.tick()
        };
        self.last
    }

    /// Moves the clock up to `ts` without the drift check: for timestamps read back from
    /// this node's own store after a restart.
    pub fn restore(&mut self, ts: Timestamp) {
        if ts > self.last {
            self.last = ts;
        }
    }

    /// Checks a remote timestamp without adopting it.
    pub fn check(&self, remote: Timestamp, now_ms: u64) -> Result<(), ClockError> {
        let bound = now_ms.saturating_add(self.max_drift_ms);
        if remote.millis > bound {
            return Err(ClockError::TooFarAhead {
                remote_ms: remote.millis,
                now_ms,
                ahead_ms: remote.millis - now_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Adopts a remote timestamp so later local timestamps order after it.
    /// On error the clock is unchanged.
    pub fn observe(&mut self, remote: Timestamp, now_ms: u64) -> Result<(), ClockError> {
        self.check(remote, now_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_even_when_physical_time_stalls_or_goes_back() {
        let mut c = Hlc::new(1000);
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(50);
        let e = c.now(200);
        assert!(a < b && b < d && d < e);
        assert_eq!(
            e,
            Timestamp {
                millis: 200,
                logical: 0
            }
        );
    }

    #[test]
    fn observed_timestamps_push_the_clock_forward() {
        let mut c = Hlc::new(1000);
        c.observe(
            Timestamp {
                millis: 900,
                logical: 5,
            },
            100,
        )
        .unwrap();
        let t = c.now(100);
        assert_eq!(
            t,
            Timestamp {
                millis: 900,
                logical: 6
            }
        );
    }

    #[test]
    fn timestamps_from_the_far_future_are_refused_and_not_adopted() {
        let mut c = Hlc::new(1000);
        let before = c.now(100);
        let year_9999 = Timestamp {
            millis: 253_402_300_799_000,
            logical: 0,
        };
        let err = c.observe(year_9999, 100).unwrap_err();
        assert!(matches!(
            err,
            ClockError::TooFarAhead {
                max_drift_ms: 1000,
                ..
            }
        ));
        assert_eq!(c.last(), before);
        assert!(c.now(100) < year_9999);
    }

    #[test]
    fn logical_overflow_rolls_into_the_next_millisecond() {
        let mut c = Hlc::new(1000);
        c.observe(
            Timestamp {
                millis: 10,
                logical: u32::MAX,
            },
            10,
        )
        .unwrap();
        assert_eq!(
            c.now(10),
            Timestamp {
                millis: 11,
                logical: 0
            }
        );
    }
}
