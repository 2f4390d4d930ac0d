//! The end of a run: a success removes the task from Redis; a failure appends an execution
//! record and then retries the task (to `scheduled`, after the retry delay), moves it to
//! `error`, or — for a [`Retry`](crate::Retry) with `log_error(false)` out of retries —
//! drops it. A task whose lock is taken goes back to `scheduled` without a record.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::execute::RetryPolicy;
use crate::{
    Result, RetryMethod, Tiger,
    client::retrying,
    keys::State,
    retry::StoredRetry,
    scripts::{self, Move, Zadd},
    task::{
        TaskSpec,
        outcome::{Retry, TaskFailure},
    },
    time::now,
};

static HOST: LazyLock<String> =
    LazyLock::new(|| gethostname::gethostname().to_string_lossy().into_owned());

/// The host name, as execution records and the worker registry give it.
pub(crate) fn host() -> &'static str {
    &HOST
}

/// One failed execution, as TaskTiger stores it in `t:task:<id>:executions`.
#[derive(Debug, Serialize)]
struct ExecutionRecord<'a> {
    time_started: f64,
    time_failed: f64,
    exception_name: &'a str,
    success: bool,
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceback: Option<&'a str>,
    /// Set for a [`Retry`] request, as TaskTiger sets it for a `RetryException`.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_method: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_error: Option<bool>,
}

/// Which task a finish is about.
#[derive(Debug, Clone)]
pub(crate) struct Finished<'a> {
    pub(crate) queue: &'a str,
    pub(crate) id: &'a str,
    pub(crate) unique: bool,
    /// Change nothing unless the task's active score (its last heartbeat) is at most this:
    /// set when recovering a lost task.
    pub(crate) fence: Option<f64>,
    /// Change nothing unless the task's active score is in this range: the heartbeats the
    /// worker that ran it wrote (its lease on the task).
    pub(crate) lease: Option<scripts::Claim>,
}

/// What happens to a task after a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Verdict {
    /// Run it again this many seconds from now.
    Retry(f64),
    /// Put it back in its queue now: a run the worker's shutdown cut short, of a task that
    /// would retry.
    Requeue,
    /// Keep it in the error state.
    Error,
    /// Out of retries and asked not to be logged: delete it.
    Drop,
}

/// Decides what a failure means for the task, as TaskTiger's worker does: a [`Retry`]
/// request always retries (its own method, else the task's, else the default); otherwise a
/// task with a retry method retries unless `retry_on` names other errors. `n` is the number
/// of failed executions including this one.
pub(crate) fn verdict(
    policy: &RetryPolicy,
    spec: &TaskSpec,
    failure: &TaskFailure,
    n: u32,
    default: RetryMethod,
) -> Verdict {
    let request = failure
        .error
        .as_deref()
        .and_then(|error| error.downcast_ref::<Retry>());
    let delay = match request {
        Some(request) => match request.method {
            Some(method) => method.delay(n),
            None => match &policy.method {
                Some(stored) => stored_delay(stored, spec, n),
                None => default.delay(n),
            },
        },
        None => {
            let Some(stored) = &policy.method else {
                return Verdict::Error;
            };
            if policy
                .retry_on
                .as_deref()
                .is_some_and(|names| !retries_on(names, spec, failure))
            {
                return Verdict::Error;
            }
            stored_delay(stored, spec, n)
        }
    };
    match (delay, request) {
        (Some(seconds), _) => Verdict::Retry(seconds.max(0.0)),
        (None, Some(request)) if !request.log_error => Verdict::Drop,
        (None, _) => Verdict::Error,
    }
}

/// Whether the failure is one `retry_on` lists: by its stored name, or, when the list is
/// the attribute's own, by finding one of the attribute's types in the error's chain.
fn retries_on(names: &[String], spec: &TaskSpec, failure: &TaskFailure) -> bool {
    if names.contains(&failure.exception_name) {
        return true;
    }
    match (spec.retry_on, failure.error.as_deref()) {
        (Some(retry_on), Some(error)) => (retry_on.names)() == names && (retry_on.matches)(error),
        _ => false,
    }
}

fn stored_delay(stored: &StoredRetry, spec: &TaskSpec, n: u32) -> Option<f64> {
    match stored {
        StoredRetry::Builtin(method) => method.delay(n),
        StoredRetry::Named(name) => match spec.retry_method {
            Some(method @ RetryMethod::Custom { name: own, .. }) if own == name => method.delay(n),
            _ => {
                tracing::warn!(method = %name, "unknown retry method; the task will not be retried");
                None
            }
        },
    }
}

/// Removes a task that ran successfully. `Ok(false)`: it was no longer active here.
pub(crate) async fn succeed(tiger: &Tiger, task: Finished<'_>) -> Result<bool> {
    move_from_active(tiger, task, None, "record the task's success").await
}

/// Records successes for the tasks of one worker, many per script call: while one call is
/// on its way, the successes that come in meanwhile wait and go together in the next. At
/// low load each success goes alone, at once; under load a call carries up to
/// [`Finisher::BATCH`], which saves Redis the cost of a script call per task.
#[derive(Debug, Clone)]
pub(crate) struct Finisher {
    sender: mpsc::UnboundedSender<(Success, oneshot::Sender<Result<bool>>)>,
}

/// A success to record: [`Finished`], owned.
#[derive(Debug)]
struct Success {
    queue: String,
    id: String,
    unique: bool,
    lease: Option<scripts::Claim>,
}

impl Success {
    fn of(task: Finished<'_>) -> Success {
        Success {
            queue: task.queue.to_owned(),
            id: task.id.to_owned(),
            unique: task.unique,
            lease: task.lease,
        }
    }

    fn finished(&self) -> Finished<'_> {
        Finished {
            queue: &self.queue,
            id: &self.id,
            unique: self.unique,
            fence: None,
            lease: self.lease.clone(),
        }
    }
}

impl Finisher {
    /// Successes per script call at most.
    const BATCH: usize = 200;

    /// Starts the task that writes the successes; it ends when the last clone is dropped.
    pub(crate) fn spawn(tiger: Tiger) -> Finisher {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(Finisher::BATCH);
            while receiver.recv_many(&mut batch, Finisher::BATCH).await > 0 {
                write_successes(&tiger, std::mem::take(&mut batch)).await;
            }
        });
        Finisher { sender }
    }

    /// Removes a task that ran successfully, as [`succeed`] does.
    pub(crate) async fn succeed(&self, tiger: &Tiger, task: Finished<'_>) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        let success = Success::of(task);
        if let Err(mpsc::error::SendError((success, _))) = self.sender.send((success, reply)) {
            return succeed(tiger, success.finished()).await;
        }
        match answer.await {
            Ok(written) => written,
            // The writer is gone (the runtime is shutting down): write it here.
            Err(_) => Err(crate::Error::Config(
                "the worker stopped before the task's success was recorded".to_owned(),
            )),
        }
    }
}

/// One script call for the whole batch; if it fails, each success alone, so each gets its
/// own answer.
async fn write_successes(tiger: &Tiger, batch: Vec<(Success, oneshot::Sender<Result<bool>>)>) {
    let moves: Vec<Move<'_>> = batch
        .iter()
        .map(|(success, _)| success_move(success.finished()))
        .collect();
    match retrying("record the tasks' success", || {
        scripts::move_tasks(tiger, &moves)
    })
    .await
    {
        Ok(written) if written.len() == batch.len() => {
            for ((_, reply), written) in batch.into_iter().zip(written) {
                let _ = reply.send(Ok(written));
            }
        }
        _ => {
            for (success, reply) in batch {
                let _ = reply.send(succeed(tiger, success.finished()).await);
            }
        }
    }
}

fn success_move(task: Finished<'_>) -> Move<'_> {
    Move {
        id: task.id,
        queue: task.queue,
        from: State::Active,
        to: None,
        unique: task.unique,
        record: None,
        keep_records: None,
        if_score_at_most: task.fence,
        if_score_is: task.lease,
    }
}

/// Moves an active task back to `scheduled` at `at` (keeping an earlier due time), without
/// a record: its lock was taken, so it did not run.
pub(crate) async fn defer(tiger: &Tiger, task: Finished<'_>, at: f64) -> Result<bool> {
    move_from_active(
        tiger,
        task,
        Some((State::Scheduled, at, Zadd::Min)),
        "defer the task",
    )
    .await
}

/// A move out of active without a record, fenced as `task` says.
async fn move_from_active(
    tiger: &Tiger,
    task: Finished<'_>,
    to: Option<(State, f64, Zadd)>,
    what: &str,
) -> Result<bool> {
    let step = Move {
        id: task.id,
        queue: task.queue,
        from: State::Active,
        to,
        unique: task.unique,
        record: None,
        keep_records: None,
        if_score_at_most: task.fence,
        if_score_is: task.lease,
    };
    retrying(what, || scripts::move_task(tiger, &step)).await
}

/// Puts an active task back in its queue at `score` (keeping an earlier one), without a
/// record: it did not run.
pub(crate) async fn requeue(tiger: &Tiger, task: Finished<'_>, score: f64) -> Result<bool> {
    move_from_active(
        tiger,
        task,
        Some((State::Queued, score, Zadd::Min)),
        "hand the task back",
    )
    .await
}

/// The times of a failed run, shared by every task of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunTimes {
    pub(crate) started: f64,
    pub(crate) failed: f64,
}

/// What an execution record says of a failure, apart from the times and the host: the
/// part a child process of the process executor reports to its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FailureRecord {
    pub(crate) exception_name: String,
    pub(crate) traceback: String,
    /// For a [`Retry`] request: its method (as stored) and `log_error`.
    pub(crate) retry_request: Option<(Option<serde_json::Value>, bool)>,
}

impl FailureRecord {
    pub(crate) fn of(failure: &TaskFailure) -> FailureRecord {
        let request = failure
            .error
            .as_deref()
            .and_then(|error| error.downcast_ref::<Retry>());
        FailureRecord {
            exception_name: failure.exception_name.clone(),
            traceback: failure.traceback.clone(),
            retry_request: request.map(|r| (r.method.map(RetryMethod::to_json), r.log_error)),
        }
    }
}

/// Settles a failed run: records `failure` and applies `verdict`. `Ok(false)`: the task
/// was no longer active here, and nothing was written.
pub(crate) async fn fail(
    tiger: &Tiger,
    task: Finished<'_>,
    times: RunTimes,
    failure: &TaskFailure,
    verdict: Verdict,
    keep_records: Option<u32>,
) -> Result<bool> {
    let record = FailureRecord::of(failure);
    fail_recorded(tiger, task, times, &record, verdict, keep_records).await
}

/// [`fail`] with the failure already described.
pub(crate) async fn fail_recorded(
    tiger: &Tiger,
    task: Finished<'_>,
    times: RunTimes,
    failure: &FailureRecord,
    verdict: Verdict,
    keep_records: Option<u32>,
) -> Result<bool> {
    let RunTimes { started, failed } = times;
    let request = failure.retry_request.as_ref();
    let record = ExecutionRecord {
        time_started: started,
        time_failed: failed,
        exception_name: &failure.exception_name,
        success: false,
        host: &HOST,
        traceback: tiger
            .config()
            .store_tracebacks
            .then_some(failure.traceback.as_str()),
        retry: request.map(|_| true),
        retry_method: request.and_then(|(method, _)| method.clone()),
        log_error: request.map(|(_, log_error)| *log_error),
    };
    let record = serde_json::to_string(&record).map_err(|source| crate::Error::Serialize {
        task: task.id.to_owned(),
        source,
    })?;
    let (to, record) = match verdict {
        Verdict::Retry(delay) => (
            Some((State::Scheduled, failed + delay, Zadd::Min)),
            Some(record.as_str()),
        ),
        Verdict::Requeue => (
            Some((State::Queued, failed, Zadd::Min)),
            Some(record.as_str()),
        ),
        Verdict::Error => (
            Some((State::Error, failed, Zadd::Plain)),
            Some(record.as_str()),
        ),
        Verdict::Drop => (None, None),
    };
    let step = Move {
        id: task.id,
        queue: task.queue,
        from: State::Active,
        to,
        unique: task.unique,
        record,
        keep_records,
        if_score_at_most: task.fence,
        if_score_is: task.lease,
    };
    retrying("record the task's failure", || {
        scripts::move_task(tiger, &step)
    })
    .await
}

/// Moves an id that is not UTF-8 from active to error as it is. Nothing else can be done
/// with it: no task of tiger's or TaskTiger's has such an id, and its keys cannot be named.
pub(crate) async fn quarantine(tiger: &Tiger, queue: &str, id: &[u8]) -> Result<()> {
    let keys = tiger.keys();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZREM")
        .arg(keys.queue(State::Active, queue))
        .arg(id)
        .ignore()
        .cmd("ZADD")
        .arg(keys.queue(State::Error, queue))
        .arg(now())
        .arg(id)
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(State::Error))
        .arg(queue)
        .ignore();
    retrying("move an id to error", || async {
        Ok(pipe.query_async::<()>(&mut tiger.connection()).await?)
    })
    .await
}

/// What a task key holds when `GET` found no string there: `none` when it does not exist.
pub(crate) async fn key_type(tiger: &Tiger, id: &str) -> Result<String> {
    let key = tiger.keys().task(id);
    retrying("inspect a task key", || async {
        Ok(redis::cmd("TYPE")
            .arg(&key)
            .query_async::<String>(&mut tiger.connection())
            .await?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::fixed;
    use crate::task::outcome::outcome;

    fn failure<E: Into<crate::task::outcome::BoxError>>(error: E) -> TaskFailure {
        outcome(Err::<(), E>(error)).unwrap_err()
    }

    #[derive(Debug, thiserror::Error)]
    #[error("flaky")]
    struct Flaky;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapper(#[source] Flaky);

    static SPEC: TaskSpec = TaskSpec {
        name: "m:f",
        retry_on: Some(crate::task::RetryOn {
            names: || vec![crate::task::outcome::exception_name_of::<Flaky>()],
            matches: |error| crate::task::outcome::chain_has::<Flaky>(error),
        }),
        ..TaskSpec::DEFAULT
    };

    fn policy(method: Option<RetryMethod>, retry_on: Option<Vec<String>>) -> RetryPolicy {
        RetryPolicy {
            method: method.map(StoredRetry::Builtin),
            retry_on,
        }
    }

    #[test]
    fn no_method_means_no_retry_and_a_method_retries_until_used_up() {
        let default = fixed(60.0, 3);
        let boom = failure("boom".to_owned());
        assert_eq!(
            verdict(&policy(None, None), &TaskSpec::DEFAULT, &boom, 1, default),
            Verdict::Error
        );
        let p = policy(Some(fixed(2.0, 2)), None);
        assert_eq!(
            verdict(&p, &TaskSpec::DEFAULT, &boom, 1, default),
            Verdict::Retry(2.0)
        );
        assert_eq!(
            verdict(&p, &TaskSpec::DEFAULT, &boom, 2, default),
            Verdict::Retry(2.0)
        );
        assert_eq!(
            verdict(&p, &TaskSpec::DEFAULT, &boom, 3, default),
            Verdict::Error
        );
    }

    #[test]
    fn retry_on_matches_names_and_the_attributes_types_through_the_chain() {
        let default = fixed(60.0, 3);
        let names = (SPEC.retry_on.unwrap().names)();
        let p = policy(Some(fixed(1.0, 5)), Some(names.clone()));
        assert_eq!(
            verdict(&p, &SPEC, &failure(Flaky), 1, default),
            Verdict::Retry(1.0)
        );
        assert_eq!(
            verdict(&p, &SPEC, &failure(Wrapper(Flaky)), 1, default),
            Verdict::Retry(1.0),
            "found in the chain"
        );
        assert_eq!(
            verdict(&p, &SPEC, &failure("other".to_owned()), 1, default),
            Verdict::Error
        );
        let python = policy(Some(fixed(1.0, 5)), Some(vec!["builtins:Exception".into()]));
        assert_eq!(
            verdict(&python, &SPEC, &failure("other".to_owned()), 1, default),
            Verdict::Retry(1.0),
            "by name"
        );
    }

    #[test]
    fn a_retry_request_always_retries_and_may_drop_quietly() {
        let default = fixed(60.0, 1);
        let request = failure(Retry::new());
        assert_eq!(
            verdict(
                &policy(None, None),
                &TaskSpec::DEFAULT,
                &request,
                1,
                default
            ),
            Verdict::Retry(60.0)
        );
        assert_eq!(
            verdict(
                &policy(None, None),
                &TaskSpec::DEFAULT,
                &request,
                2,
                default
            ),
            Verdict::Error
        );
        let own = failure(Retry::new().method(fixed(5.0, 1)).log_error(false));
        assert_eq!(
            verdict(
                &policy(Some(fixed(9.0, 9)), None),
                &TaskSpec::DEFAULT,
                &own,
                1,
                default
            ),
            Verdict::Retry(5.0)
        );
        assert_eq!(
            verdict(&policy(None, None), &TaskSpec::DEFAULT, &own, 2, default),
            Verdict::Drop
        );
        let tasks = failure(Retry::new());
        assert_eq!(
            verdict(
                &policy(Some(fixed(9.0, 9)), Some(vec!["x:Y".into()])),
                &TaskSpec::DEFAULT,
                &tasks,
                1,
                default
            ),
            Verdict::Retry(9.0)
        );
    }
}
