//! What a task is: its static description ([`TaskSpec`]), its id, how it is stored in Redis,
//! how its arguments travel, and the registry the worker looks tasks up in.

use std::fmt;

pub(crate) mod args;
pub(crate) mod current;
pub(crate) mod ids;
pub(crate) mod outcome;
pub(crate) mod pyjson;
pub(crate) mod registry;
pub(crate) mod stored;

/// What `#[tiger::task]` knows about a task at compile time: its name, its parameters and
/// the options of the attribute. Per-call options on [`Delay`](crate::Delay) override these.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec {
    /// The serialized name (`"module::path:fn_name"` unless `name = "..."` is given).
    pub name: &'static str,
    /// The parameter names, in order.
    pub params: &'static [&'static str],
    /// `queue = "..."`.
    pub queue: Option<&'static str>,
    /// `unique`: the id is a hash of the name and arguments.
    pub unique: bool,
    /// `unique_key = [...]`: the id is a hash of the name and these parameters only.
    pub unique_key: Option<&'static [&'static str]>,
    /// `lock`: at most one task with the same lock id runs at a time.
    pub lock: bool,
    /// `lock_key = [...]`: the lock id is a hash of the name and these parameters only.
    pub lock_key: Option<&'static [&'static str]>,
    /// `retry`: a failure is retried (with `retry_method`, else the default method).
    pub retry: bool,
    /// `retry_on = [...]`: only these errors are retried.
    pub retry_on: Option<RetryOn>,
    /// `retry_method = ...`.
    pub retry_method: Option<crate::RetryMethod>,
    /// `hard_timeout = ...` in seconds.
    pub hard_timeout: Option<f64>,
    /// `max_queue_size = ...`.
    pub max_queue_size: Option<u64>,
    /// `max_stored_executions = ...`.
    pub max_stored_executions: Option<u32>,
    /// `schedule = periodic(...)` or `schedule = cron("...")`: a periodic task.
    pub schedule: Option<crate::Schedule>,
}

impl TaskSpec {
    /// A task with every option at its default.
    pub const DEFAULT: TaskSpec = TaskSpec {
        name: "",
        params: &[],
        queue: None,
        unique: false,
        unique_key: None,
        lock: false,
        lock_key: None,
        retry: false,
        retry_on: None,
        retry_method: None,
        hard_timeout: None,
        max_queue_size: None,
        max_stored_executions: None,
        schedule: None,
    };
}

/// `retry_on = [...]` of the attribute: the error types' names, as stored, and a check that
/// finds one of the types in an error or its chain of sources.
#[derive(Debug, Clone, Copy)]
pub struct RetryOn {
    /// The stored names (`module:Name`) of the error types.
    pub names: fn() -> Vec<String>,
    /// Whether an error (or one of its sources) is one of the types.
    pub matches: fn(&(dyn std::error::Error + 'static)) -> bool,
}

/// A task's id: 64 lowercase hex characters, as TaskTiger makes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    /// A new random id (32 random bytes in hex).
    pub(crate) fn random() -> TaskId {
        let bytes: [u8; 32] = rand::random();
        TaskId(hex(&bytes))
    }

    /// An id computed from the task (a unique task's or a lock's hash).
    pub(crate) fn from_hash(hash: String) -> TaskId {
        TaskId(hash)
    }

    /// The id as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl AsRef<str> for TaskId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_64_lowercase_hex_and_differ() {
        let a = TaskId::random();
        let b = TaskId::random();
        assert_eq!(a.as_str().len(), 64);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }
}
