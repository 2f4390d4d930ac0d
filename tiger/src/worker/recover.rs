//! Recovery of lost tasks: an active task whose heartbeat is older than
//! `ACTIVE_TASK_UPDATE_TIMEOUT` lost its worker (killed, frozen, cut off from Redis).
//!
//! One worker at a time sweeps (the `t:lockv2:queue_expired_tasks` lock, held for
//! `REQUEUE_EXPIRED_TASKS_INTERVAL` and given back early after a full batch, as in TaskTiger),
//! looks at every active queue, and settles at most `REQUEUE_EXPIRED_TASKS_BATCH_SIZE` lost
//! tasks per sweep. Unlike TaskTiger, a lost run counts as a failed execution: it gets a
//! record (`JobTimeoutException`, "worker lost"), the failure count goes up, and the task's
//! own retry options decide, as for a timeout — so a task that keeps crashing its worker
//! ends in `error` instead of looping. Each move only happens if the heartbeat is still the
//! old one, so a worker that was only slow keeps its task.

use super::execute::{self, RetryPolicy};
use super::finish::{self, Finished, RunTimes, Verdict};
use super::locks::try_lock;
use crate::{
    Result, Tiger,
    client::retrying,
    keys::State,
    scripts,
    task::{
        TaskSpec,
        outcome::{JOB_TIMEOUT, JobTimeout, TaskFailure},
        registry::Registry,
        stored::StoredTask,
    },
    time::now,
};

/// One recovery sweep, if no other worker ran one within `REQUEUE_EXPIRED_TASKS_INTERVAL`.
/// Returns how many lost tasks it settled.
pub(crate) async fn sweep(tiger: &Tiger, registry: &Registry) -> Result<usize> {
    let config = tiger.config();
    let key = tiger.keys().expired_sweep_lock();
    let ttl = u64::try_from(config.requeue_expired_tasks_interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let Some(token) = try_lock(tiger, &key, ttl).await? else {
        return Ok(0);
    };
    let cutoff = now() - config.active_task_update_timeout.as_secs_f64();
    let batch = config.requeue_expired_tasks_batch_size.max(1);
    let lost = find_lost(tiger, cutoff, batch).await?;
    for (queue, id) in &lost {
        settle_lost(tiger, registry, queue, id, cutoff).await;
    }
    if lost.len() >= batch {
        // A full batch: there may be more, so let the next sweep come at once.
        let _ = scripts::lock_release(tiger, &key, &token).await;
    }
    Ok(lost.len())
}

/// Up to `batch` `(queue, id)` pairs of active tasks whose heartbeat is at most `cutoff`.
async fn find_lost(tiger: &Tiger, cutoff: f64, batch: usize) -> Result<Vec<(String, String)>> {
    let keys = tiger.keys();
    let queues: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg(keys.state_set(State::Active))
        .query_async(&mut tiger.connection())
        .await?;
    let queues: Vec<String> = queues
        .into_iter()
        .filter_map(|q| String::from_utf8(q).ok())
        .collect();
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for queue in &queues {
        pipe.cmd("ZRANGEBYSCORE")
            .arg(keys.queue(State::Active, queue))
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(batch);
    }
    let ids: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut tiger.connection()).await?;
    // An id that is not UTF-8 cannot be a task of ours (the dequeue moves such ids to error).
    let lost = queues.into_iter().zip(ids).flat_map(|(queue, ids)| {
        ids.into_iter().filter_map(move |id| match String::from_utf8(id) {
            Ok(id) => Some((queue.clone(), id)),
            Err(err) => {
                tracing::warn!(%queue, id = %String::from_utf8_lossy(err.as_bytes()), "skipping an active id that is not UTF-8");
                None
            }
        })
    });
    Ok(lost.take(batch).collect())
}

/// Records the lost run and retries, errors or removes the task.
async fn settle_lost(tiger: &Tiger, registry: &Registry, queue: &str, id: &str, cutoff: f64) {
    let keys = tiger.keys();
    let read = retrying("read a lost task", || async {
        Ok(redis::cmd("MGET")
            .arg(keys.task(id))
            .arg(keys.executions_count(id))
            .query_async::<(Option<String>, Option<u32>)>(&mut tiger.connection())
            .await?)
    });
    let (body, count) = match read.await {
        Ok(read) => read,
        Err(err) => {
            tracing::error!(%queue, task_id = id, %err, "cannot read a lost task; trying again next sweep");
            return;
        }
    };
    let task = body
        .as_deref()
        .and_then(|body| serde_json::from_str::<StoredTask<'_>>(body).ok());
    let unique = task.as_ref().is_some_and(|t| t.unique);
    let finished = Finished {
        queue,
        id,
        unique,
        fence: Some(cutoff),
        lease: None,
    };
    let Some(task) = task else {
        // Nothing to run again: a missing body is removed (a malformed one kept in error).
        let written = match body {
            None => finish::succeed(tiger, finished).await,
            Some(_) => {
                let failure = lost_failure(tiger);
                finish::fail(
                    tiger,
                    finished,
                    RunTimes {
                        started: cutoff,
                        failed: now(),
                    },
                    &failure,
                    Verdict::Error,
                    None,
                )
                .await
            }
        };
        log(queue, id, written, "removed a lost task whose body is gone");
        return;
    };
    let spec: &TaskSpec = registry
        .get(&task.func)
        .map_or(&TaskSpec::DEFAULT, |entry| entry.spec);
    let policy: RetryPolicy = execute::retry_policy(&task, id);
    let failure = lost_failure(tiger);
    let n = count.unwrap_or(0).saturating_add(1);
    let verdict = finish::verdict(
        &policy,
        spec,
        &failure,
        n,
        tiger.config().default_retry_method,
    );
    let started = cutoff;
    let written = finish::fail(
        tiger,
        finished,
        RunTimes {
            started,
            failed: now(),
        },
        &failure,
        verdict,
        task.max_stored_executions,
    )
    .await;
    let what = match verdict {
        Verdict::Retry(_) | Verdict::Requeue => "recovered a lost task; it will run again",
        Verdict::Error => "recovered a lost task; moved to the error state",
        Verdict::Drop => "recovered a lost task; dropped as it asked",
    };
    log(queue, id, written, what);
}

fn lost_failure(tiger: &Tiger) -> TaskFailure {
    let seconds = tiger.config().active_task_update_timeout.as_secs_f64();
    let traceback = format!(
        "JobTimeoutException: worker lost: the worker running this task sent no heartbeat for {seconds} s \
         (it was killed, stalled, or cut off from Redis); the run's outcome is unknown"
    );
    TaskFailure {
        exception_name: JOB_TIMEOUT.to_owned(),
        traceback,
        error: Some(Box::new(JobTimeout { seconds })),
    }
}

fn log(queue: &str, id: &str, written: Result<bool>, what: &str) {
    match written {
        Ok(true) => tracing::warn!(%queue, task_id = id, "{what}"),
        Ok(false) => {
            tracing::debug!(%queue, task_id = id, "a lost task came back to life or was settled by another worker")
        }
        Err(err) => {
            tracing::error!(%queue, task_id = id, %err, "cannot settle a lost task; trying again next sweep")
        }
    }
}
