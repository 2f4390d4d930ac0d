//! Every Redis key name tiger uses, built in this one place.
//!
//! The layout is TaskTiger's, so Python and Rust workers can share a Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `t:queued`, `t:active`, `t:scheduled`, `t:error` | set | names of queues that have tasks in that state |
//! | `t:<state>:<queue>` | zset | task ids; the score is when queued, the last heartbeat, when due, or when failed |
//! | `t:task:<id>` | string | the task JSON |
//! | `t:task:<id>:executions` | list | one JSON record per failed execution, oldest first |
//! | `t:task:<id>:executions_count` | string | number of failed executions |
//! | `t:activity` | pub/sub channel | a queue name, each time a task becomes queued |
//!
//! tiger adds keys of its own under `t:tiger:`, which TaskTiger never reads (see
//! [`presence`](crate::presence)):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `t:tiger:workers` | zset | ids of workers that reported lately; the score is the last report; expires once none reports |
//! | `t:tiger:worker:<id>` | string | that worker's JSON ([`WorkerInfo`](crate::presence::WorkerInfo)); expires unless renewed |
//! | `t:tiger:minute:<start>` | hash | `processed` and `failed` runs that ended in the minute that starts at Unix second `<start>` (a multiple of 60); expires two hours after |
//!
//! `t` is [`Config::redis_prefix`](crate::Config::redis_prefix). Nothing is escaped, as in
//! TaskTiger, so queue names should not contain `:`.

use std::fmt;

/// One of the four states a stored task can be in. A finished task is deleted, not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting to run now.
    Queued,
    /// Being run by a worker.
    Active,
    /// Waiting until its due time.
    Scheduled,
    /// Failed for good; kept with its execution records until retried or deleted.
    Error,
}

impl State {
    /// All four states, in TaskTiger's order.
    pub const ALL: [State; 4] = [State::Queued, State::Active, State::Scheduled, State::Error];

    /// The name used in keys: `queued`, `active`, `scheduled` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Active => "active",
            State::Scheduled => "scheduled",
            State::Error => "error",
        }
    }
}

impl State {
    /// How a sentence says a task is in it: `queued`, `active`, `scheduled`, `in error`.
    pub fn phrase(self) -> &'static str {
        match self {
            State::Error => "in error",
            other => other.as_str(),
        }
    }
}

impl std::str::FromStr for State {
    type Err = crate::Error;

    /// `queued`, `active`, `scheduled` or `error`.
    fn from_str(name: &str) -> crate::Result<State> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "`{name}` is not a state: use queued, active, scheduled or error"
                ))
            })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (TaskTiger's `REDIS_PREFIX`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `t:<state>`: the set of queue names that have tasks in `state`.
    pub fn state_set(&self, state: State) -> String {
        format!("{}:{}", self.prefix, state)
    }

    /// `t:<state>:<queue>`: the zset of task ids in `state` on `queue`.
    pub fn queue(&self, state: State, queue: &str) -> String {
        format!("{}:{}:{}", self.prefix, state, queue)
    }

    /// `t:qslock:<queue>`: the queue's semaphore (a zset of holders scored by expiry, plus
    /// `SYSTEM_LOCK` while the queue is paused).
    pub fn queue_semaphore(&self, queue: &str) -> String {
        format!("{}:qslock:{}", self.prefix, queue)
    }

    /// `t:task:<id>`: the task JSON.
    pub fn task(&self, id: &str) -> String {
        format!("{}:task:{}", self.prefix, id)
    }

    /// `t:task:<id>:executions`: the failed-execution records.
    pub fn executions(&self, id: &str) -> String {
        format!("{}:task:{}:executions", self.prefix, id)
    }

    /// `t:task:<id>:executions_count`: the number of failed executions.
    pub fn executions_count(&self, id: &str) -> String {
        format!("{}:task:{}:executions_count", self.prefix, id)
    }

    /// The task, executions and count keys of an id that is not UTF-8 (a foreign
    /// producer's), as bytes.
    pub(crate) fn task_keys_raw(&self, id: &[u8]) -> [Vec<u8>; 3] {
        let task = [self.prefix.as_bytes(), b":task:", id].concat();
        [
            task.clone(),
            [&task[..], b":executions"].concat(),
            [&task[..], b":executions_count"].concat(),
        ]
    }

    /// `t:lockv2:<lock_id>`: a task lock (the redis-py Lock protocol, shared with Python
    /// workers).
    pub fn lock(&self, lock_id: &str) -> String {
        format!("{}:lockv2:{}", self.prefix, lock_id)
    }

    /// `t:lockv2:queue_scheduled_tasks:<group>`: lets one worker of a group (workers with
    /// the same queue filters) run the scheduled sweep per interval.
    pub fn scheduled_sweep_lock(&self, worker_group: &str) -> String {
        format!(
            "{}:lockv2:queue_scheduled_tasks:{}",
            self.prefix, worker_group
        )
    }

    /// `t:lockv2:queue_expired_tasks`: lets one worker at a time recover lost tasks.
    pub fn expired_sweep_lock(&self) -> String {
        format!("{}:lockv2:queue_expired_tasks", self.prefix)
    }

    /// `t:tiger:workers`: the ids of live workers, scored by their last report.
    pub fn workers(&self) -> String {
        format!("{}:tiger:workers", self.prefix)
    }

    /// `t:tiger:worker:<id>`: a live worker's JSON.
    pub fn worker(&self, id: &str) -> String {
        format!("{}:tiger:worker:{}", self.prefix, id)
    }

    /// `t:tiger:minute:<minute>`: the runs that ended in the minute starting at Unix second
    /// `minute`.
    pub fn minute(&self, minute: i64) -> String {
        format!("{}:tiger:minute:{}", self.prefix, minute)
    }

    /// `t:activity`: the channel a queue name is published on when a task is queued.
    pub fn activity(&self) -> String {
        format!("{}:activity", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_tasktiger() {
        let keys = Keys::new("t");
        assert_eq!(keys.state_set(State::Queued), "t:queued");
        assert_eq!(keys.queue(State::Error, "a.b"), "t:error:a.b");
        assert_eq!(keys.task("ab"), "t:task:ab");
        assert_eq!(keys.executions("ab"), "t:task:ab:executions");
        assert_eq!(keys.executions_count("ab"), "t:task:ab:executions_count");
        assert_eq!(keys.activity(), "t:activity");
        assert_eq!(keys.minute(120), "t:tiger:minute:120");
        assert_eq!(keys.worker("w"), "t:tiger:worker:w");
    }
}
