//! Periodic tasks: `#[tiger::task(schedule = periodic(hours = 1))]` or
//! `schedule = cron("*/5 * * * *")`.
//!
//! As in TaskTiger, a periodic task is unique and takes no arguments, so its id is the same
//! on every worker and every period (`gen_unique_id(name, [], {})`): queueing it twice is
//! harmless, and no lock is needed however many workers run. At start a worker queues each
//! periodic task of the queues it serves that is not queued, scheduled or running yet; before
//! each run it queues the next period, so a failing run never stops the schedule.

use chrono::{DateTime, Utc};

/// When a periodic task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period` seconds, counted from `start` (Unix seconds; TaskTiger's default start
    /// is 2000-01-01 00:00 UTC, a Saturday).
    Periodic {
        /// The period in seconds.
        period: u64,
        /// The first run, in Unix seconds.
        start: i64,
    },
    /// At the times a cron expression (in UTC) names.
    Cron(&'static str),
}

/// 2000-01-01 00:00:00 UTC, where TaskTiger counts periods from.
pub const START: i64 = 946_684_800;

/// Every `period` seconds from 2000-01-01 00:00 UTC. The attribute's
/// `periodic(hours = 1, minutes = 30)` adds its fields up into this.
pub const fn periodic(period: u64) -> Schedule {
    Schedule::Periodic {
        period,
        start: START,
    }
}

/// At the times of a five-field cron expression, in UTC.
pub const fn cron(expression: &'static str) -> Schedule {
    Schedule::Cron(expression)
}

impl Schedule {
    /// The first run strictly after `now` (Unix seconds), whole seconds as TaskTiger counts
    /// them. `Err` for a cron expression that does not parse.
    pub fn next_after(&self, now: f64) -> Result<f64, String> {
        let now = now.floor() as i64;
        match *self {
            Schedule::Periodic { period, start } => {
                if period == 0 {
                    return Err("a periodic schedule needs a positive period".into());
                }
                if now < start {
                    return Ok(start as f64);
                }
                let period = i64::try_from(period).unwrap_or(i64::MAX);
                let runs = (now - start) / period;
                Ok((start + (runs + 1) * period) as f64)
            }
            Schedule::Cron(expression) => {
                let cron: croner::Cron = expression
                    .parse()
                    .map_err(|err| format!("cron expression `{expression}`: {err}"))?;
                let now: DateTime<Utc> =
                    DateTime::from_timestamp(now, 0).ok_or("a time out of range")?;
                let next = cron
                    .find_next_occurrence(&now, false)
                    .map_err(|err| format!("cron expression `{expression}`: {err}"))?;
                Ok(next.timestamp() as f64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TaskTiger's `test_periodic` arithmetic: periods count from 2000-01-01, a Saturday.
    #[test]
    fn periodic_counts_from_the_start_date() {
        let saturday = START as f64;
        assert_eq!(periodic(60).next_after(saturday).unwrap(), saturday + 60.0);
        assert_eq!(
            periodic(60).next_after(saturday + 59.9).unwrap(),
            saturday + 60.0
        );
        assert_eq!(
            periodic(60).next_after(saturday + 60.0).unwrap(),
            saturday + 120.0
        );
        let week = 7 * 86_400;
        // 2026-12-03 (a Thursday) 13:00: the next weekly run is Saturday 00:00.
        let thursday = 1_796_302_800.0;
        assert_eq!(
            periodic(week).next_after(thursday).unwrap(),
            1_796_428_800.0
        );
        assert_eq!(
            Schedule::Periodic {
                period: 10,
                start: 2_000_000_000
            }
            .next_after(0.0)
            .unwrap(),
            2e9
        );
        assert!(periodic(0).next_after(0.0).is_err());
    }

    #[test]
    fn cron_finds_the_next_match_in_utc() {
        let t = 1_796_302_800.0; // 2026-12-03 13:00:00 UTC
        assert_eq!(cron("*/5 * * * *").next_after(t).unwrap(), t + 300.0);
        assert_eq!(cron("*/5 * * * *").next_after(t + 1.0).unwrap(), t + 300.0);
        assert_eq!(cron("0 0 * * *").next_after(t).unwrap(), t + 11.0 * 3600.0);
        assert!(cron("not a cron").next_after(t).is_err());
    }
}
