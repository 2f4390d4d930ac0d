//! What a task is: its static description ([`TaskSpec`]), its id, how it is stored in Redis,
//! how its arguments travel, and the registry the worker looks tasks up in.

use std::fmt;

pub(crate) mod args;
pub(crate) mod current;
pub(crate) mod outcome;
pub(crate) mod registry;
pub(crate) mod stored;

/// What `#[tiger::task]` knows about a task at compile time.
#[derive(Debug)]
pub struct TaskSpec {
    /// The serialized name (`"module::path:fn_name"` unless `name = "..."` is given).
    pub name: &'static str,
    /// The queue from `queue = "..."`, if the attribute gave one.
    pub queue: Option<&'static str>,
}

/// A task's id: 64 lowercase hex characters, as TaskTiger makes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    /// A new random id (32 random bytes in hex).
    pub(crate) fn random() -> TaskId {
        let bytes: [u8; 32] = rand::random();
        let mut hex = String::with_capacity(64);
        for byte in bytes {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        TaskId(hex)
    }

    /// The id as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
