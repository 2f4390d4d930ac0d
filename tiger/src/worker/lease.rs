//! A worker's claim on a task it runs: the active score (heartbeat) it last wrote. Every
//! heartbeat and the final result check it, so a worker that was frozen past the timeout —
//! while its task was recovered and perhaps taken by another worker — changes nothing when it
//! wakes up, and logs that it lost the task.
//!
//! A heartbeat in flight may or may not have reached Redis when the task finishes, so a
//! lease holds the score last confirmed and the one being written, and Redis accepts either.

use std::sync::{Arc, Mutex, PoisonError};

/// The scores this worker may have written for one task, shared by its job and the heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct Lease(Arc<Mutex<Scores>>);

#[derive(Debug, Clone, Copy)]
struct Scores {
    confirmed: f64,
    /// A heartbeat's score, from before it is sent until it is confirmed.
    pending: Option<f64>,
}

impl Lease {
    pub(crate) fn new(score: f64) -> Lease {
        Lease(Arc::new(Mutex::new(Scores {
            confirmed: score,
            pending: None,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Scores) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The scores Redis may hold for this task if it is still this worker's.
    pub(crate) fn scores(&self) -> crate::scripts::Claim {
        self.with(|s| (s.confirmed, s.pending))
    }

    /// Before a heartbeat writes `score`.
    pub(crate) fn renewing(&self, score: f64) {
        self.with(|s| s.pending = Some(score));
    }

    /// After the heartbeat wrote it.
    pub(crate) fn renewed(&self, score: f64) {
        self.with(|s| {
            s.confirmed = score;
            s.pending = None;
        });
    }
}
