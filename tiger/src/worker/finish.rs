//! The end of a run: a success removes the task from Redis, a failure appends an execution
//! record and moves the task to the error state.

use std::sync::LazyLock;

use serde::Serialize;

use crate::{
    Result, Tiger,
    client::retrying,
    keys::State,
    scripts::{self, Move, Zadd},
    task::outcome::TaskFailure,
    time::now,
};

static HOST: LazyLock<String> =
    LazyLock::new(|| gethostname::gethostname().to_string_lossy().into_owned());

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
}

/// Which task a finish is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished<'a> {
    pub(crate) queue: &'a str,
    pub(crate) id: &'a str,
    pub(crate) unique: bool,
}

/// Removes a task that ran successfully. `Ok(false)`: it was no longer active here.
pub(crate) async fn succeed(tiger: &Tiger, task: Finished<'_>) -> Result<bool> {
    let step = Move {
        id: task.id,
        queue: task.queue,
        from: State::Active,
        to: None,
        unique: task.unique,
        record: None,
        keep_records: None,
    };
    retrying("record the task's success", || {
        scripts::move_task(tiger, &step)
    })
    .await
}

/// Records `failure` and moves the task to the error state. `Ok(false)`: it was no longer
/// active here, and nothing was written.
pub(crate) async fn fail(
    tiger: &Tiger,
    task: Finished<'_>,
    started: f64,
    failure: &TaskFailure,
) -> Result<bool> {
    let failed = now();
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
    };
    let record = serde_json::to_string(&record).map_err(|source| crate::Error::Serialize {
        task: task.id.to_owned(),
        source,
    })?;
    let step = Move {
        id: task.id,
        queue: task.queue,
        from: State::Active,
        to: Some((State::Error, failed, Zadd::Plain)),
        unique: task.unique,
        record: Some(&record),
        keep_records: None,
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
