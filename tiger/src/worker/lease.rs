//! A worker's claim on a task it runs: the active scores (heartbeats) it wrote. Every
//! heartbeat and the final result apply only while Redis holds one of those scores, so a
//! worker that was frozen past the timeout — while its task was recovered and perhaps taken
//! by another worker — changes nothing when it wakes up.
//!
//! What the worker knows it wrote is a range, from the dequeue to the latest heartbeat Redis
//! confirmed (a range rather than the last score alone, because Redis may come back from a
//! restart with an older heartbeat of the same worker). A heartbeat sent but not answered
//! (in flight, or its answer lost) may or may not have been written: its exact score counts
//! too, but not the stretch of time before it, where another worker's scores may lie. Once
//! the task starts settling, heartbeats leave it alone, so the claim a result is written
//! with cannot move under it.

use std::sync::{Arc, Mutex, PoisonError};

use crate::scripts::Claim;

/// How many unanswered heartbeats a lease remembers: more than fit in
/// `ACTIVE_TASK_UPDATE_TIMEOUT` with TaskTiger's timers (6) or the test settings (10), after
/// which the task would have been recovered anyway. Forgetting the oldest only ever makes
/// the worker give a task up, never take one that is not its own.
const UNCONFIRMED_KEPT: usize = 16;

/// The scores this worker may have written for one task, shared by its job and the heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct Lease(Arc<Mutex<Scores>>);

#[derive(Debug)]
struct Scores {
    claim: Claim,
    /// The job is writing the task's result: no more heartbeats.
    settling: bool,
}

impl Lease {
    pub(crate) fn new(score: f64) -> Lease {
        Lease(Arc::new(Mutex::new(Scores {
            claim: Claim {
                first: score,
                latest: score,
                unconfirmed: Vec::new(),
            },
            settling: false,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Scores) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// For a heartbeat at `now`: the claim to check and the score to write, or `None` when
    /// the task is settling and must not be touched. The score never goes below one already
    /// sent, so a wall clock stepped back does not make the worker disown its own task.
    pub(crate) fn renew(&self, now: f64) -> Option<(Claim, f64)> {
        self.with(|s| {
            if s.settling {
                return None;
            }
            let claim = s.claim.clone();
            let score = claim
                .unconfirmed
                .iter()
                .fold(now.max(claim.latest), |a, b| a.max(*b));
            // From now on this score may be in Redis, until Redis says it is.
            s.claim.unconfirmed.push(score);
            if s.claim.unconfirmed.len() > UNCONFIRMED_KEPT {
                s.claim.unconfirmed.remove(0);
            }
            Some((claim, score))
        })
    }

    /// Redis answered that the heartbeat with `score` was written: anything sent before is
    /// superseded.
    pub(crate) fn confirm(&self, score: f64) {
        self.with(|s| {
            s.claim.latest = s.claim.latest.max(score);
            s.claim.unconfirmed.retain(|sent| *sent > score);
        });
    }

    /// For the job about to write the result: stops heartbeats and gives the claim to check.
    pub(crate) fn settle(&self) -> Claim {
        self.with(|s| {
            s.settling = true;
            s.claim.clone()
        })
    }

    /// Whether the job is writing the result (so a heartbeat that found the task gone may
    /// have been overtaken by that very write).
    pub(crate) fn settling(&self) -> bool {
        self.with(|s| s.settling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(first: f64, latest: f64, unconfirmed: &[f64]) -> Claim {
        Claim {
            first,
            latest,
            unconfirmed: unconfirmed.to_vec(),
        }
    }

    #[test]
    fn confirmed_heartbeats_grow_the_range_and_unanswered_ones_count_exactly() {
        let lease = Lease::new(10.0);
        assert_eq!(lease.renew(11.0), Some((claim(10.0, 10.0, &[]), 11.0)));
        // Unanswered: 11 counts as itself, not the stretch from 10 to 11.
        assert_eq!(lease.renew(12.0), Some((claim(10.0, 10.0, &[11.0]), 12.0)));
        assert_eq!(
            lease.renew(13.0),
            Some((claim(10.0, 10.0, &[11.0, 12.0]), 13.0)),
            "every unanswered one is kept"
        );
        lease.confirm(12.0);
        assert_eq!(lease.settle(), claim(10.0, 12.0, &[13.0]));
        assert!(lease.settling());
        assert_eq!(lease.renew(14.0), None, "no heartbeat once settling");
    }

    #[test]
    fn a_clock_stepped_back_writes_no_lower_score() {
        let lease = Lease::new(10.0);
        let (_, score) = lease.renew(12.0).unwrap();
        lease.confirm(score);
        assert_eq!(lease.renew(9.0).map(|(_, score)| score), Some(12.0));
    }
}
