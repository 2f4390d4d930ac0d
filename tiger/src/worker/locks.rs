//! Task locks (`lock`, `lock_key`): the redis-py Lock protocol on `t:lockv2:<lock_id>`, so
//! Python and Rust workers exclude each other. `SET NX PX` with a random token takes the
//! lock; while the task runs, the lock is renewed every `ACTIVE_TASK_UPDATE_TIMER` when it
//! still holds the token; it is released the same way. A worker that dies leaves a lock that
//! expires on its own.
//!
//! The lock lives `ACTIVE_TASK_UPDATE_TIMEOUT + REQUEUE_EXPIRED_TASKS_INTERVAL` (TaskTiger:
//! the timeout alone), the longest a stalled worker's task can stay active before it is
//! recovered. So a worker that stalls and wakes up before its task was recovered still
//! holds the lock; one that wakes up later finds the task gone and stops. If a renewal finds
//! the lock gone anyway (deleted by hand, or a Python worker's shorter lock), the run is
//! stopped rather than go on beside a twin.

use std::time::Duration;

use crate::{Result, Tiger, client::retrying, scripts, task::TaskId};

/// A lock this worker holds.
#[derive(Debug)]
pub(crate) struct HeldLock {
    key: String,
    token: String,
}

/// Tries to take the task lock `lock_id`. `Ok(None)`: someone else holds it.
pub(crate) async fn acquire(tiger: &Tiger, lock_id: &str) -> Result<Option<HeldLock>> {
    let key = tiger.keys().lock(lock_id);
    let token = try_lock(tiger, &key, ttl_ms(tiger)).await?;
    Ok(token.map(|token| HeldLock { key, token }))
}

/// `SET key <random token> NX PX ttl_ms`: the token when the lock was free.
pub(crate) async fn try_lock(tiger: &Tiger, key: &str, ttl_ms: u64) -> Result<Option<String>> {
    let token = TaskId::random().to_string();
    let taken: Option<String> = retrying("take a lock", || async {
        Ok(redis::cmd("SET")
            .arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut tiger.connection())
            .await?)
    })
    .await?;
    Ok(taken.map(|_| token))
}

/// Keeps `locks` alive while `work` runs, renewing them every `ACTIVE_TASK_UPDATE_TIMER`.
/// `None` when a lock was found lost: `work` was dropped then.
pub(crate) async fn hold_during<F: std::future::Future>(
    locks: &[HeldLock],
    tiger: &Tiger,
    work: F,
) -> Option<F::Output> {
    if locks.is_empty() {
        return Some(work.await);
    }
    let period = tiger
        .config()
        .active_task_update_timer
        .max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            _ = renew.tick() => for lock in locks {
                if !lock.renew(tiger).await {
                    return None;
                }
            },
        }
    }
}

impl HeldLock {
    /// Renews the lock; `false` when it is no longer this worker's. A renewal that fails
    /// for want of Redis is only logged: the lock may well still be held.
    async fn renew(&self, tiger: &Tiger) -> bool {
        match scripts::lock_renew(tiger, &self.key, &self.token, ttl_ms(tiger)).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(lock = %self.key, "task lock lost (expired or taken over) while the task runs; stopping the run");
                false
            }
            Err(err) => {
                tracing::warn!(lock = %self.key, %err, "cannot renew the task lock");
                true
            }
        }
    }

    /// Releases the lock if it is still ours.
    pub(crate) async fn release(self, tiger: &Tiger) {
        match retrying("release a task lock", || {
            scripts::lock_release(tiger, &self.key, &self.token)
        })
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lock = %self.key, "task lock had expired or was taken over before release")
            }
            Err(err) => {
                tracing::warn!(lock = %self.key, %err, "cannot release the task lock; it expires on its own")
            }
        }
    }
}

/// Releases every lock in `locks`.
pub(crate) async fn release_all(locks: Vec<HeldLock>, tiger: &Tiger) {
    for lock in locks {
        lock.release(tiger).await;
    }
}

/// How long a task lock lives unless renewed (see the module's text).
fn ttl_ms(tiger: &Tiger) -> u64 {
    let config = tiger.config();
    let ttl = config.active_task_update_timeout + config.requeue_expired_tasks_interval;
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
