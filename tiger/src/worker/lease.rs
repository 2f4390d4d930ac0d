//! A worker's claim on a task it runs: the active scores (heartbeats) it wrote, from the
//! dequeue to the latest. Every heartbeat and the final result apply only while Redis holds a
//! score in that range, so a worker that was frozen past the timeout — while its task was
//! recovered and perhaps taken by another worker, whose scores are all later — changes
//! nothing when it wakes up. A range rather than the last score alone, because Redis may come
//! back from a restart with an older heartbeat of the same worker.
//!
//! A heartbeat in flight may or may not have reached Redis, so its score counts from before
//! it is sent. Once the task starts settling, heartbeats leave it alone, so the range a
//! result is written with cannot move under it.

use std::sync::{Arc, Mutex, PoisonError};

use crate::scripts::Claim;

/// The scores this worker may have written for one task, shared by its job and the heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct Lease(Arc<Mutex<Scores>>);

#[derive(Debug, Clone, Copy)]
struct Scores {
    /// The dequeue time: the first score.
    first: f64,
    /// The latest score written or being written.
    latest: f64,
    /// The job is writing the task's result: no more heartbeats.
    settling: bool,
}

impl Lease {
    pub(crate) fn new(score: f64) -> Lease {
        Lease(Arc::new(Mutex::new(Scores {
            first: score,
            latest: score,
            settling: false,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Scores) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// For a heartbeat at `now`: the range to check and the score to write, or `None` when
    /// the task is settling and must not be touched. The score never goes below one already
    /// written, so a wall clock stepped back does not make the worker disown its own task.
    pub(crate) fn renew(&self, now: f64) -> Option<(Claim, f64)> {
        self.with(|s| {
            if s.settling {
                return None;
            }
            let claim = (s.first, s.latest);
            s.latest = s.latest.max(now);
            Some((claim, s.latest))
        })
    }

    /// For the job about to write the result: stops heartbeats and gives the range to check.
    pub(crate) fn settle(&self) -> Claim {
        self.with(|s| {
            s.settling = true;
            (s.first, s.latest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_grows_with_heartbeats_and_freezes_when_settling() {
        let lease = Lease::new(10.0);
        assert_eq!(
            lease.renew(11.0),
            Some(((10.0, 10.0), 11.0)),
            "checked against what was written so far"
        );
        assert_eq!(
            lease.renew(12.0),
            Some(((10.0, 11.0), 12.0)),
            "a heartbeat in flight counts"
        );
        assert_eq!(
            lease.renew(9.0),
            Some(((10.0, 12.0), 12.0)),
            "a clock stepped back writes no lower score"
        );
        assert_eq!(lease.settle(), (10.0, 12.0));
        assert_eq!(
            lease.renew(13.0),
            None,
            "no heartbeat once the result is being written"
        );
        assert_eq!(lease.settle(), (10.0, 12.0));
    }
}
