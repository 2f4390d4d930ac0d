//! Pausing a queue: TaskTiger's queue system lock, the `SYSTEM_LOCK` member of the queue's
//! semaphore `t:qslock:<queue>`, scored by when the pause ends.
//!
//! A tiger worker takes nothing from a paused queue (tasks already running go on); a Python
//! TaskTiger worker honours the pause only when it runs with `-M` or the queue is one of its
//! single-worker queues, as TaskTiger does. The pause covers the queue itself, not its
//! subqueues.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Result, Tiger, time::now};

/// The semaphore member that marks a pause.
const SYSTEM_LOCK: &str = "SYSTEM_LOCK";

impl Tiger {
    /// Pauses `queue` for `duration` from now (TaskTiger's `set_queue_system_lock`): no
    /// tiger worker takes a task from it until then. A later call replaces the end.
    pub async fn set_queue_system_lock(&self, queue: &str, duration: Duration) -> Result<()> {
        let key = self.keys().queue_semaphore(queue);
        let until = now() + duration.as_secs_f64();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(until)
            .arg(SYSTEM_LOCK)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(duration.as_secs().saturating_add(10))
            .ignore();
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// When the pause of `queue` ends, if it is paused (TaskTiger's
    /// `get_queue_system_lock`).
    pub async fn get_queue_system_lock(&self, queue: &str) -> Result<Option<SystemTime>> {
        let until: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys().queue_semaphore(queue))
            .arg(SYSTEM_LOCK)
            .query_async(&mut self.connection())
            .await?;
        Ok(until
            .filter(|until| *until > now())
            .and_then(|until| Duration::try_from_secs_f64(until).ok())
            .map(|since_epoch| UNIX_EPOCH + since_epoch))
    }

    /// When the pause of each of `queues` ends (Unix seconds), for those paused now; one
    /// round trip.
    pub(crate) async fn pauses(&self, queues: &[&str]) -> Result<Vec<Option<f64>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for queue in queues {
            pipe.cmd("ZSCORE")
                .arg(self.keys().queue_semaphore(queue))
                .arg(SYSTEM_LOCK);
        }
        let ends: Vec<redis::RedisResult<Option<f64>>> =
            pipe.query_async(&mut self.connection()).await?;
        let now = now();
        Ok(ends
            .into_iter()
            .map(|end| end.ok().flatten().filter(|until| *until > now))
            .collect())
    }
}
