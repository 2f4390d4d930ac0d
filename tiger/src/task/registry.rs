//! The tasks linked into this binary, collected through `inventory` and looked up by name.

use std::collections::HashMap;

use super::{
    TaskSpec,
    args::{ArgError, Args},
    outcome::Body,
};
use crate::{Error, Result};

/// What `#[tiger::task]` registers for each task.
#[derive(Debug)]
pub struct TaskEntry {
    /// Name and attribute options.
    pub spec: &'static TaskSpec,
    /// Source file of the function, for error messages.
    pub file: &'static str,
    /// Line of the function.
    pub line: u32,
    /// Decodes stored arguments and prepares the call.
    pub call: fn(&Args<'_>) -> Result<Body, ArgError>,
    /// For a `batch` task: how to decode one task's arguments, and to call the function with
    /// the decoded arguments of many.
    pub batch: Option<BatchCalls>,
}

/// The two halves of a `batch` task's call.
#[derive(Debug, Clone, Copy)]
pub struct BatchCalls {
    /// Decodes one task's arguments into the function's item type (boxed).
    pub decode: fn(&Args<'_>) -> Result<Box<dyn std::any::Any + Send>, ArgError>,
    /// Calls the function with the items of a group, in order.
    pub call: fn(Vec<Box<dyn std::any::Any + Send>>) -> Body,
}

inventory::collect!(TaskEntry);

impl TaskEntry {
    fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Every registered task by serialized name, built once at worker start.
#[derive(Debug)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, &'static TaskEntry>,
}

impl Registry {
    /// Collects the registered tasks; two with one name is an error naming both places.
    pub(crate) fn load() -> Result<Registry> {
        Registry::from_entries(inventory::iter::<TaskEntry>)
    }

    fn from_entries(entries: impl IntoIterator<Item = &'static TaskEntry>) -> Result<Registry> {
        let mut tasks: HashMap<&'static str, &'static TaskEntry> = HashMap::new();
        for entry in entries {
            if let Some(other) = tasks.insert(entry.spec.name, entry) {
                let mut places = [other.location(), entry.location()];
                places.sort();
                let [first, second] = places;
                return Err(Error::DuplicateTask {
                    name: entry.spec.name.to_owned(),
                    first,
                    second,
                });
            }
        }
        Ok(Registry { tasks })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'static TaskEntry> {
        self.tasks.get(name).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The specs of every registered task.
    pub(crate) fn specs(&self) -> impl Iterator<Item = &'static TaskSpec> + '_ {
        self.tasks.values().map(|entry| entry.spec)
    }

    /// Every registered name, sorted.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.tasks.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &Args<'_>) -> Result<Body, ArgError> {
        Err(ArgError::new("not called"))
    }

    static SPEC: TaskSpec = TaskSpec {
        name: "m:f",
        ..TaskSpec::DEFAULT
    };
    static A: TaskEntry = TaskEntry {
        spec: &SPEC,
        file: "src/a.rs",
        line: 3,
        call: never,
        batch: None,
    };
    static B: TaskEntry = TaskEntry {
        spec: &SPEC,
        file: "src/b.rs",
        line: 7,
        call: never,
        batch: None,
    };

    #[test]
    fn duplicate_names_fail_naming_both_places() {
        let err = Registry::from_entries([&B, &A]).unwrap_err().to_string();
        assert!(
            err.contains("`m:f`") && err.contains("src/a.rs:3") && err.contains("src/b.rs:7"),
            "{err}"
        );
        assert_eq!(Registry::from_entries([&A]).unwrap().len(), 1);
    }
}
