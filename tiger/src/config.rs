//! [`Config`]: TaskTiger's settings, with TaskTiger's names and defaults.
//!
//! Every field maps to the TaskTiger config key in its doc, so a team moving from Python
//! sets the same values. Durations are `Duration`s instead of float seconds.

use std::time::Duration;

/// Settings shared by producers and workers.
///
/// `Config::default()` is TaskTiger's defaults. Fields are public so that a struct literal
/// with `..Config::default()` reads like a TaskTiger config dict:
///
/// ```
/// use std::time::Duration;
/// let config = tiger::Config {
///     redis_prefix: "myapp".into(),
///     lock_retry: Duration::from_secs(5),
///     ..tiger::Config::default()
/// };
/// assert_eq!(config.default_queue, "default");
/// ```
///
/// New settings arrive as new fields, so always end a literal with `..Config::default()`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `REDIS_PREFIX`: the first part of every key. Default `"t"`.
    pub redis_prefix: String,
    /// `DEFAULT_QUEUE`: the queue of a task that names none. Default `"default"`.
    pub default_queue: String,
    /// `PUBLISH_QUEUED_TASKS`: publish the queue name on `<prefix>:activity` whenever a task
    /// becomes queued, so idle workers wake at once. Default `true`.
    pub publish_queued_tasks: bool,
    /// `STORE_TRACEBACKS`: put the error chain (or panic message and backtrace) in the
    /// execution record's `traceback`. Default `true`.
    pub store_tracebacks: bool,
    /// `ACTIVE_TASK_UPDATE_TIMER`: how often a worker refreshes the heartbeat (the score in
    /// `<prefix>:active:<queue>`) of the tasks it runs. Default 10 s.
    pub active_task_update_timer: Duration,
    /// `ACTIVE_TASK_UPDATE_TIMEOUT`: a heartbeat older than this marks an active task as
    /// lost, and the recovery sweep settles it. Also the time to live of task locks.
    /// Default 60 s.
    pub active_task_update_timeout: Duration,
    /// `DEFAULT_RETRY_METHOD`: how a task that retries but names no method is retried.
    /// Default `fixed(60, 3)`: three retries a minute apart.
    pub default_retry_method: crate::RetryMethod,
    /// `SELECT_TIMEOUT`: how often a worker runs its periodic chores (the scheduled sweep).
    /// Default 1 s.
    pub select_timeout: Duration,
    /// `SCHEDULED_TASK_BATCH_SIZE`: at most this many due tasks move from scheduled to
    /// queued per queue per sweep. Default 1000.
    pub scheduled_task_batch_size: usize,
    /// `QUEUE_SCHEDULED_TASKS_TIME`: one worker per group (same queue filters) sweeps
    /// scheduled tasks per this interval. Zero lets every worker sweep. Default 1 s.
    pub queue_scheduled_tasks_time: Duration,
    /// `DEFAULT_HARD_TIMEOUT`: how long a task may run when neither the call nor the
    /// attribute says. Default 300 s.
    pub default_hard_timeout: Duration,
    /// `ALWAYS_EAGER`: `delay` runs a task that is due now in-process, right away, instead
    /// of writing it to Redis (the arguments are still serialized and decoded, so bad input
    /// surfaces). Tasks for later still go to Redis. For tests and local development.
    /// Default `false`.
    pub always_eager: bool,
    /// `BATCH_QUEUES`: `{queue: size}`. A worker takes up to `size` tasks at once from such a
    /// queue (or a subqueue of it; the most specific dotted prefix wins) and runs them as one
    /// group: a `batch` task gets them in one call. Default none.
    pub batch_queues: std::collections::HashMap<String, usize>,
    /// `REQUEUE_EXPIRED_TASKS_INTERVAL`: one worker at a time looks for lost tasks (active
    /// with a heartbeat older than `ACTIVE_TASK_UPDATE_TIMEOUT`), at most this often.
    /// Default 30 s.
    pub requeue_expired_tasks_interval: Duration,
    /// `REQUEUE_EXPIRED_TASKS_BATCH_SIZE`: at most this many lost tasks per look. Default 10.
    pub requeue_expired_tasks_batch_size: usize,
    /// `LOCK_RETRY`: a task whose lock is taken, or a unique task popped while another copy
    /// runs, goes to `scheduled` this far in the future. Default 1 s.
    pub lock_retry: Duration,
    /// `ONLY_QUEUES`: the queues a worker takes when it is given none. Empty means all.
    pub only_queues: Vec<String>,
    /// `EXCLUDE_QUEUES`: the queues a worker skips when it is given none.
    pub exclude_queues: Vec<String>,
    /// `SINGLE_WORKER_QUEUES`: queues (with their subqueues) of which at most one task runs
    /// at a time across the fleet, through the queue semaphore; see
    /// [`Worker::max_workers_per_queue`](crate::Worker::max_workers_per_queue).
    pub single_worker_queues: Vec<String>,
    /// tiger only: how often a worker re-reads `<prefix>:queued` besides listening on the
    /// activity channel, so that a missed message (a reconnect, a producer with publishing
    /// off) never strands a queue. Default 5 s.
    pub queue_refresh_interval: Duration,
    /// tiger only: the longest a single Redis command may take before it counts as failed.
    /// Default 10 s.
    pub redis_response_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_prefix: "t".to_owned(),
            default_queue: "default".to_owned(),
            publish_queued_tasks: true,
            store_tracebacks: true,
            active_task_update_timer: Duration::from_secs(10),
            active_task_update_timeout: Duration::from_secs(60),
            default_retry_method: crate::retry::fixed(60.0, 3),
            always_eager: false,
            requeue_expired_tasks_interval: Duration::from_secs(30),
            requeue_expired_tasks_batch_size: 10,
            batch_queues: std::collections::HashMap::new(),
            lock_retry: Duration::from_secs(1),
            select_timeout: Duration::from_secs(1),
            scheduled_task_batch_size: 1000,
            queue_scheduled_tasks_time: Duration::from_secs(1),
            default_hard_timeout: Duration::from_secs(300),
            only_queues: Vec::new(),
            exclude_queues: Vec::new(),
            single_worker_queues: Vec::new(),
            queue_refresh_interval: Duration::from_secs(5),
            redis_response_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// How many tasks a worker takes at once from `queue` (`BATCH_QUEUES`, the most specific
    /// dotted prefix of `queue` listed there), 1 when none is listed.
    pub fn batch_size(&self, queue: &str) -> usize {
        let mut prefix = queue;
        loop {
            if let Some(&size) = self.batch_queues.get(prefix) {
                return size.max(1);
            }
            match prefix.rfind('.') {
                Some(dot) => prefix = &prefix[..dot],
                None => return 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_batch_queue_wins() {
        let config = Config {
            batch_queues: [("batch".to_owned(), 3), ("batch.small".to_owned(), 2)].into(),
            ..Config::default()
        };
        assert_eq!(config.batch_size("batch"), 3);
        assert_eq!(config.batch_size("batch.sub"), 3);
        assert_eq!(config.batch_size("batch.small.x"), 2);
        assert_eq!(config.batch_size("batches"), 1);
        assert_eq!(config.batch_size("default"), 1);
    }
}
