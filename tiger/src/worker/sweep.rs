//! The scheduled sweep: moves due tasks (future `when`, retries, lock and unique deferrals)
//! from `scheduled` to `queued`. One worker per group of workers with the same queue
//! filters sweeps per `QUEUE_SCHEDULED_TASKS_TIME`, as in TaskTiger; each queue moves at
//! most `SCHEDULED_TASK_BATCH_SIZE` tasks per sweep and is announced once.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::locks::try_lock;
use super::queues::QueueFilter;
use crate::{
    Result, Tiger,
    client::retrying,
    keys::State,
    scripts,
    task::{hex, pyjson::PyValue},
    time::now,
};

/// TaskTiger's worker group name: sha256 of `json.dumps([sorted(only), sorted(exclude)])`.
pub(crate) fn worker_group(filter: &QueueFilter) -> String {
    let sorted = |names: &[String]| {
        let mut names = names.to_vec();
        names.sort();
        PyValue::List(names.into_iter().map(PyValue::Str).collect())
    };
    let text = PyValue::List(vec![sorted(&filter.only), sorted(&filter.exclude)]).dumps();
    hex(&Sha256::digest(text.as_bytes()))
}

/// Runs one sweep if no worker of the group ran one within `QUEUE_SCHEDULED_TASKS_TIME`.
/// Returns the queues that got tasks.
pub(crate) async fn sweep(
    tiger: &Tiger,
    filter: &QueueFilter,
    group: &str,
) -> Result<HashSet<String>> {
    let config = tiger.config();
    let ttl = u64::try_from(config.queue_scheduled_tasks_time.as_millis()).unwrap_or(u64::MAX);
    if ttl > 0 {
        // Never released: it lapses, which is what limits the rate.
        if try_lock(tiger, &tiger.keys().scheduled_sweep_lock(group), ttl)
            .await?
            .is_none()
        {
            return Ok(HashSet::new());
        }
    }
    let queues = filter.members(tiger, State::Scheduled).await?;
    let now = now();
    let mut announced = HashSet::new();
    for queue in queues {
        let batch = config.scheduled_task_batch_size;
        let moved = match retrying("move due tasks", || {
            scripts::schedule(tiger, &queue, now, batch)
        })
        .await
        {
            Ok(moved) => moved,
            Err(err) if crate::client::is_transient(&err) => return Err(err),
            Err(err) => {
                tracing::error!(%queue, %err, "cannot move this queue's due tasks; skipping it this sweep");
                continue;
            }
        };
        if moved > 0 {
            tracing::debug!(%queue, moved, "scheduled tasks are due");
            announced.insert(queue);
        }
    }
    Ok(announced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_group_matches_tasktiger() {
        // python3 -c 'import hashlib, json; print(hashlib.sha256(json.dumps([sorted(["b", "a"]), []]).encode()).hexdigest())'
        let filter = QueueFilter {
            only: vec!["b".into(), "a".into()],
            exclude: vec![],
        };
        assert_eq!(
            worker_group(&filter),
            "0c76ba67840f679c9d257c0d6ceaff229e01c846fdd094fa910dbaa787b80bda"
        );
    }
}
