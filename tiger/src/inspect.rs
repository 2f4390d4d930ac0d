//! Inspection: what the queues hold and putting it right, as TaskTiger's `Task` API and
//! queue statistics do it, on the same keys.
//!
//! ```no_run
//! use tiger::{State, Task};
//! # async fn demo(tiger: tiger::Tiger) -> tiger::Result<()> {
//! let (total, page) = Task::tasks_from_queue(&tiger, "emails", State::Error, 0, 20, 1).await?;
//! println!("{total} tasks in error on emails");
//! for task in page {
//!     let func = task.data.as_ref().map_or("?", |data| data.func.as_str());
//!     println!("{} {func} failed {} times", task.id, task.n_executions);
//!     task.retry(&tiger).await?; // back to its queue
//! }
//! # Ok(()) }
//! ```
//!
//! Differences from TaskTiger, each on purpose:
//! - [`Task::tasks_from_queue`] pages newest first, and really in that order (TaskTiger's
//!   page is in ascending order despite its docs); a task whose JSON is gone is listed with
//!   [`Task::json`] `None` rather than skipped or mixed up with its neighbour.
//! - [`Task::from_id`] finds a task whose JSON is gone as long as its id is in the state's
//!   zset, so it can still be deleted; TaskTiger reports it as not found.
//! - [`Task::cancel`] also takes a queued task off its queue (TaskTiger only cancels
//!   scheduled ones).
//! - [`Task::update_scheduled_time`] replaces only the bytes of `scheduled_at` in the
//!   stored JSON; TaskTiger re-encodes the whole JSON in Lua, which can distort big numbers
//!   and turn `[]` into `{}`.
//! - [`Tiger::purge_errored_tasks`] removes everything that matches in one call (TaskTiger's
//!   paging while deleting skips some).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    Error, Result, Tiger, When,
    keys::State,
    queue_matches,
    scripts::{self, Move},
    time::now,
};

/// How many ids one purge or bulk step reads and moves per round trip.
const PAGE: usize = 500;

/// A task as it sits in one state of one queue, read from Redis.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Task {
    /// The task id.
    pub id: String,
    /// The queue it is on.
    pub queue: String,
    /// The state it is in.
    pub state: State,
    /// Its score in that state's zset, Unix seconds (TaskTiger's `ts`): when it was queued,
    /// its last heartbeat, when it is due, or when it failed.
    pub ts: f64,
    /// The stored JSON exactly as it is in Redis; `None` when `t:task:<id>` is gone.
    pub json: Option<String>,
    /// What the JSON says; `None` when it is gone or is not a task's JSON.
    pub data: Option<TaskData>,
    /// Failed executions that were loaded, oldest first (see the call that read the task).
    pub executions: Vec<Execution>,
    /// How many executions failed (`executions_count`); may exceed the records kept.
    pub n_executions: u64,
    /// What is wrong with the task's keys when they cannot be read as TaskTiger writes them
    /// (a key of another type, say); `None` when nothing is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The fields of a task's JSON. Every field but `func` may be missing, as Python TaskTiger
/// writes them only when set; `{}` or `null` where a list belongs (Lua cjson's way of writing
/// an empty list) reads as empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskData {
    /// The serialized function name, `module:name`.
    pub func: String,
    /// Positional arguments.
    #[serde(default, deserialize_with = "lenient_list")]
    pub args: Vec<Value>,
    /// Keyword arguments (tiger writes these for tasks with `unique_key` or `lock_key`).
    #[serde(default, deserialize_with = "lenient_map")]
    pub kwargs: Map<String, Value>,
    /// The id is a hash of the name and arguments.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub unique: bool,
    /// The parameters the unique id is a hash of.
    #[serde(default, deserialize_with = "lenient_names")]
    pub unique_key: Option<Vec<String>>,
    /// At most one task with this lock id runs at a time.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub lock: bool,
    /// The parameters the lock id is a hash of.
    #[serde(default, deserialize_with = "lenient_names")]
    pub lock_key: Option<Vec<String>>,
    /// Seconds before the task is stopped (an integer or a float in the JSON).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub hard_timeout: Option<f64>,
    /// `["module:function", [arguments]]` when the task retries.
    #[serde(default)]
    pub retry_method: Option<Value>,
    /// Error names the task retries on.
    #[serde(default, deserialize_with = "lenient_names")]
    pub retry_on: Option<Vec<String>>,
    /// The queue size `delay` checked.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_queue_size: Option<u64>,
    /// How many execution records are kept.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_stored_executions: Option<u64>,
    /// A Python runner class; tiger does not use it.
    #[serde(default)]
    pub runner_class: Option<String>,
    /// When the task was last enqueued by `delay`, Unix seconds.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub time_last_queued: Option<f64>,
    /// When the task was asked to run, Unix seconds.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub scheduled_at: Option<f64>,
}

/// One failed execution, as TaskTiger records it. Records written by other producers may
/// lack any field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Execution {
    /// When the run started, Unix seconds.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub time_started: Option<f64>,
    /// When it failed, Unix seconds.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub time_failed: Option<f64>,
    /// `module:Name` of the error.
    #[serde(default)]
    pub exception_name: Option<String>,
    /// The traceback, or the error and its sources for a tiger task.
    #[serde(default)]
    pub traceback: Option<String>,
    /// The host the worker ran on.
    #[serde(default)]
    pub host: Option<String>,
    /// Set when the task asked to be retried (TaskTiger's `RetryException`).
    #[serde(default)]
    pub retry: Option<bool>,
    /// The retry method the request carried.
    #[serde(default)]
    pub retry_method: Option<Value>,
    /// Whether the request asked for the failure to be logged.
    #[serde(default)]
    pub log_error: Option<bool>,
    /// The record itself, when it is not a JSON object (the other fields are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl TaskData {
    /// The task JSON's fields, if it is a JSON object with a `func`.
    fn parse(json: &str) -> Option<TaskData> {
        serde_json::from_value(object(json.as_bytes())?).ok()
    }
}

impl Execution {
    fn parse(record: &[u8]) -> Execution {
        object(record)
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_else(|| Execution {
                unreadable: Some(String::from_utf8_lossy(record).into_owned()),
                ..Execution::default()
            })
    }
}

/// How many tasks a queue has in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StateCounts {
    /// Waiting to run now.
    pub queued: u64,
    /// Being run.
    pub active: u64,
    /// Waiting for their due time.
    pub scheduled: u64,
    /// Failed for good.
    pub error: u64,
}

impl StateCounts {
    /// The count for `state`.
    pub fn get(&self, state: State) -> u64 {
        let mut counts = *self;
        *counts.slot(state)
    }

    fn slot(&mut self, state: State) -> &mut u64 {
        match state {
            State::Queued => &mut self.queued,
            State::Active => &mut self.active,
            State::Scheduled => &mut self.scheduled,
            State::Error => &mut self.error,
        }
    }
}

impl Task {
    /// The task `id` in `state` on `queue`, with every execution record. Fails with
    /// [`Error::TaskNotFound`] when the id is not in that state's zset. A task whose JSON is
    /// gone is still returned (with [`Task::json`] `None`), so it can be deleted.
    pub async fn from_id(tiger: &Tiger, queue: &str, state: State, id: &str) -> Result<Task> {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(tiger.keys().queue(state, queue))
            .arg(id)
            .query_async(&mut tiger.connection())
            .await?;
        let Some(score) = score else {
            return Err(Error::TaskNotFound {
                id: id.to_owned(),
                place: format!("{state} on queue `{queue}`"),
            });
        };
        let mut tasks = load(tiger, queue, state, vec![(id.to_owned(), score)], None).await?;
        Ok(tasks.remove(0))
    }

    /// Every place the task `id` is in: one entry per queue and state whose zset holds it
    /// (a unique task can be queued and active at once, say), with every execution record.
    /// Empty when it is nowhere.
    pub async fn find(tiger: &Tiger, id: &str) -> Result<Vec<Task>> {
        Task::find_loading(tiger, id, None).await
    }

    /// [`Task::find`], loading the last `executions` records of each (`None`: all).
    pub(crate) async fn find_loading(
        tiger: &Tiger,
        id: &str,
        executions: Option<usize>,
    ) -> Result<Vec<Task>> {
        let places = queues_by_state(tiger).await?;
        if places.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // Each queue answers for itself: one whose key is not a zset holds no task, and the
        // others are still searched.
        pipe.ignore_errors();
        for (state, queue) in &places {
            pipe.cmd("ZSCORE")
                .arg(tiger.keys().queue(*state, queue))
                .arg(id);
        }
        let scores: Vec<redis::RedisResult<Option<f64>>> =
            pipe.query_async(&mut tiger.connection()).await?;
        let mut found = Vec::new();
        for ((state, queue), score) in places.into_iter().zip(scores) {
            if let Ok(Some(score)) = score {
                let tasks = load(
                    tiger,
                    &queue,
                    state,
                    vec![(id.to_owned(), score)],
                    executions,
                )
                .await?;
                found.extend(tasks);
            }
        }
        Ok(found)
    }

    /// A page of the tasks in `state` on `queue`, newest first (highest score first): skips
    /// the `skip` newest, then takes up to `limit`. Each task carries its last
    /// `load_executions` execution records (0: none). Also returns how many tasks the state
    /// holds in all.
    pub async fn tasks_from_queue(
        tiger: &Tiger,
        queue: &str,
        state: State,
        skip: usize,
        limit: usize,
        load_executions: usize,
    ) -> Result<(u64, Vec<Task>)> {
        let key = tiger.keys().queue(state, queue);
        if limit == 0 {
            let total: u64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut tiger.connection())
                .await?;
            return Ok((total, Vec::new()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("ZREVRANGE")
            .arg(&key)
            .arg(index(skip))
            .arg(index(skip.saturating_add(limit - 1)))
            .arg("WITHSCORES");
        let (total, page): (u64, Vec<(Vec<u8>, f64)>) =
            pipe.query_async(&mut tiger.connection()).await?;
        let page = page
            .into_iter()
            .map(|(id, score)| (String::from_utf8_lossy(&id).into_owned(), score))
            .collect();
        let tasks = load(tiger, queue, state, page, Some(load_executions)).await?;
        Ok((total, tasks))
    }

    /// How many executions of task `id` failed (`executions_count`). Fails with
    /// [`Error::TaskNotFound`] when its JSON is gone, as TaskTiger does.
    pub async fn n_executions(tiger: &Tiger, id: &str) -> Result<u64> {
        let keys = tiger.keys();
        let (exists, count): (bool, Option<u64>) = redis::pipe()
            .cmd("EXISTS")
            .arg(keys.task(id))
            .cmd("GET")
            .arg(keys.executions_count(id))
            .query_async(&mut tiger.connection())
            .await?;
        if !exists {
            return Err(Error::TaskNotFound {
                id: id.to_owned(),
                place: "any queue (its JSON is gone)".to_owned(),
            });
        }
        Ok(count.unwrap_or(0))
    }

    /// Removes a scheduled or queued task before it runs (with its JSON and records, unless
    /// a unique task is still referenced from another state of its queue). Fails with
    /// [`Error::WrongState`] for an active or errored task, and with
    /// [`Error::TaskNotFound`] when the task has left meanwhile.
    pub async fn cancel(&self, tiger: &Tiger) -> Result<()> {
        self.transition(tiger, &[State::Scheduled, State::Queued], None)
            .await
    }

    /// Removes a task in error, with its JSON and records (TaskTiger's `delete`).
    pub async fn delete(&self, tiger: &Tiger) -> Result<()> {
        self.transition(tiger, &[State::Error], None).await
    }

    /// Puts a task in error back in its queue to run now, and wakes the workers (TaskTiger's
    /// `retry`). Its execution records and count stay.
    pub async fn retry(&self, tiger: &Tiger) -> Result<()> {
        self.transition(tiger, &[State::Error], Some((State::Queued, now())))
            .await
    }

    /// Moves a scheduled task to a new due time (a time not in the future: due now) and sets
    /// `scheduled_at` in its JSON to match. Only the bytes of that one field change: the rest
    /// of the JSON stays exactly as its producer wrote it. Fails with [`Error::WrongState`]
    /// unless the task is scheduled.
    pub async fn update_scheduled_time(&self, tiger: &Tiger, when: impl Into<When>) -> Result<()> {
        if self.state != State::Scheduled {
            return Err(self.wrong_state(&[State::Scheduled]));
        }
        let due = when.into().timestamp(now());
        let keys = tiger.keys();
        // Compare-and-set on the JSON: a producer that rewrote it meanwhile wins, and we
        // patch the new text instead.
        for _ in 0..5 {
            let current: Option<String> = redis::cmd("GET")
                .arg(keys.task(&self.id))
                .query_async(&mut tiger.connection())
                .await?;
            let patched = match &current {
                Some(json) => Some(set_number_field(json, "scheduled_at", due)?),
                None => None,
            };
            match scripts::reschedule(tiger, &self.queue, &self.id, due, current, patched).await? {
                scripts::Rescheduled::Done => return Ok(()),
                scripts::Rescheduled::NotScheduled => return Err(self.moved(tiger).await),
                scripts::Rescheduled::Changed => continue,
            }
        }
        Err(Error::Conflict {
            id: self.id.clone(),
        })
    }

    /// Moves this task out of one of `allowed` states: to `to`, or out of Redis.
    async fn transition(
        &self,
        tiger: &Tiger,
        allowed: &[State],
        to: Option<(State, f64)>,
    ) -> Result<()> {
        if !allowed.contains(&self.state) {
            return Err(self.wrong_state(allowed));
        }
        let moved = scripts::move_task(tiger, &self.as_move(to)).await?;
        if moved {
            Ok(())
        } else {
            Err(self.moved(tiger).await)
        }
    }

    fn as_move(&self, to: Option<(State, f64)>) -> Move<'_> {
        Move {
            id: &self.id,
            queue: &self.queue,
            from: self.state,
            to: to.map(|(state, score)| (state, score, scripts::Zadd::Plain)),
            // A JSON that cannot be read may be a unique task's: the unique path deletes only
            // what no other state of the queue still needs, which is right for any task.
            unique: self.data.as_ref().is_none_or(|data| data.unique),
            record: None,
            keep_records: None,
            if_score_at_most: None,
            if_score_is: None,
        }
    }

    pub(crate) fn wrong_state(&self, allowed: &[State]) -> Error {
        Error::WrongState {
            id: self.id.clone(),
            queue: self.queue.clone(),
            state: self.state,
            expected: allowed.to_vec(),
        }
    }

    /// The error for a task that left its state before we could move it: where it is now.
    async fn moved(&self, tiger: &Tiger) -> Error {
        let here = Task::find_loading(tiger, &self.id, Some(0))
            .await
            .ok()
            .and_then(|found| {
                found
                    .into_iter()
                    .find(|task| task.queue == self.queue && task.state != self.state)
            });
        match here {
            Some(task) => task.wrong_state(&[self.state]),
            None => Error::TaskNotFound {
                id: self.id.clone(),
                place: format!("{} on queue `{}`", self.state, self.queue),
            },
        }
    }
}

/// Reads the JSON, execution count and execution records (`executions`: the last n, or all
/// for `None`) of `ids` with their scores, in one round trip.
async fn load(
    tiger: &Tiger,
    queue: &str,
    state: State,
    ids: Vec<(String, f64)>,
    executions: Option<usize>,
) -> Result<Vec<Task>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys = tiger.keys();
    let wanted = executions != Some(0);
    let mut pipe = redis::pipe();
    for (id, _) in &ids {
        pipe.cmd("GET").arg(keys.task(id));
        pipe.cmd("GET").arg(keys.executions_count(id));
        if wanted {
            let first = executions.map_or(0, |n| -i64::try_from(n).unwrap_or(i64::MAX));
            pipe.cmd("LRANGE")
                .arg(keys.executions(id))
                .arg(first)
                .arg(-1);
        }
    }
    // One key of the wrong type must not hide the others: each reply is taken on its own.
    pipe.ignore_errors();
    let replies: Vec<redis::RedisResult<redis::Value>> =
        pipe.query_async(&mut tiger.connection()).await?;
    let mut replies = replies.into_iter();
    let mut tasks = Vec::with_capacity(ids.len());
    for (id, ts) in ids {
        let mut problems = Vec::new();
        let mut next = |what: &str| -> Option<redis::Value> {
            match replies.next()? {
                Ok(value) => Some(value),
                Err(err) => {
                    problems.push(format!("cannot read its {what}: {err}"));
                    None
                }
            }
        };
        let json: Option<Vec<u8>> = next("JSON").and_then(|v| parse(v).ok()).flatten();
        let count: Option<Vec<u8>> = next("execution count")
            .and_then(|v| parse(v).ok())
            .flatten();
        let records: Vec<Vec<u8>> = if wanted {
            next("execution records")
                .and_then(|v| parse(v).ok())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let json = json.map(|json| String::from_utf8_lossy(&json).into_owned());
        let count = count.map(|c| String::from_utf8_lossy(&c).trim().to_owned());
        tasks.push(Task {
            data: json.as_deref().and_then(TaskData::parse),
            json,
            n_executions: count.and_then(|c| c.parse().ok()).unwrap_or(0),
            executions: records.iter().map(|r| Execution::parse(r)).collect(),
            id,
            queue: queue.to_owned(),
            state,
            ts,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        });
    }
    Ok(tasks)
}

/// A rank as Redis takes it (a signed 64-bit integer).
fn index(rank: usize) -> i64 {
    i64::try_from(rank).unwrap_or(i64::MAX)
}

fn parse<T: redis::FromRedisValue>(value: redis::Value) -> Result<T> {
    Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
}

/// `text` as a JSON object (duplicate keys: the last wins, as in Python), or `None`.
fn object(text: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(text) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

/// Every `(state, queue)` pair the state sets name, states in TaskTiger's order.
async fn queues_by_state(tiger: &Tiger) -> Result<Vec<(State, String)>> {
    let mut pipe = redis::pipe();
    for state in State::ALL {
        pipe.cmd("SMEMBERS").arg(tiger.keys().state_set(state));
    }
    let sets: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut tiger.connection()).await?;
    let mut places = Vec::new();
    for (state, mut queues) in State::ALL.into_iter().zip(sets) {
        queues.sort();
        places.extend(
            queues
                .into_iter()
                .map(|queue| (state, String::from_utf8_lossy(&queue).into_owned())),
        );
    }
    Ok(places)
}

impl Tiger {
    /// Every queue named in a state set, with its count in each state (TaskTiger's
    /// `get_queue_stats`), sorted by queue name.
    pub async fn queue_stats(&self) -> Result<BTreeMap<String, StateCounts>> {
        let places = queues_by_state(self).await?;
        let sizes = self.sizes_for_queues_and_states(&places).await?;
        let mut stats: BTreeMap<String, StateCounts> = BTreeMap::new();
        for ((state, queue), size) in places.into_iter().zip(sizes) {
            *stats.entry(queue).or_default().slot(state) = size;
        }
        Ok(stats)
    }

    /// The counts of `queue` in each state (TaskTiger's `get_queue_sizes`, which leaves out
    /// `error`; here it is included).
    pub async fn queue_sizes(&self, queue: &str) -> Result<StateCounts> {
        let places: Vec<(State, &str)> = State::ALL.iter().map(|s| (*s, queue)).collect();
        let sizes = self.sizes_for_queues_and_states(&places).await?;
        let mut counts = StateCounts::default();
        for (state, size) in State::ALL.into_iter().zip(sizes) {
            *counts.slot(state) = size;
        }
        Ok(counts)
    }

    /// Tasks of `queue` that are queued, active or scheduled (TaskTiger's
    /// `get_total_queue_size`: errored tasks do not count).
    pub async fn total_queue_size(&self, queue: &str) -> Result<u64> {
        let sizes = self.queue_sizes(queue).await?;
        Ok(sizes.queued + sizes.active + sizes.scheduled)
    }

    /// The count of each `(state, queue)`, in one round trip.
    pub async fn sizes_for_queues_and_states<Q: AsRef<str>>(
        &self,
        places: &[(State, Q)],
    ) -> Result<Vec<u64>> {
        if places.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (state, queue) in places {
            pipe.cmd("ZCARD")
                .arg(self.keys().queue(*state, queue.as_ref()));
        }
        let sizes: Vec<redis::RedisResult<u64>> = pipe.query_async(&mut self.connection()).await?;
        // A key of another type (someone else's data under the prefix) counts as empty.
        let mut counts = Vec::with_capacity(sizes.len());
        for ((state, queue), size) in places.iter().zip(sizes) {
            counts.push(size.unwrap_or_else(|err| {
                tracing::warn!(queue = queue.as_ref(), %state, %err, "cannot count this queue's tasks");
                0
            }));
        }
        Ok(counts)
    }

    /// Deletes tasks in error, with their JSON and records, and returns how many. Only
    /// queues that `queues` / `exclude_queues` select (as a worker's `-q` / `-e`, subqueues
    /// included; both empty: the config's lists); only tasks that failed before
    /// `failed_before`, if given; at most `limit`, if given. Tasks whose JSON is gone are
    /// deleted too. Everything that matches goes in this one call.
    pub async fn purge_errored_tasks(
        &self,
        queues: &[String],
        exclude_queues: &[String],
        failed_before: Option<SystemTime>,
        limit: Option<usize>,
    ) -> Result<u64> {
        let (only, exclude) = if queues.is_empty() && exclude_queues.is_empty() {
            (
                self.config().only_queues.clone(),
                self.config().exclude_queues.clone(),
            )
        } else {
            (queues.to_vec(), exclude_queues.to_vec())
        };
        // Only what had failed when the call began: a task that fails again meanwhile (a
        // worker retrying it) is not chased.
        let started = now();
        let cutoff =
            Some(failed_before.map_or(started, |at| When::At(at).timestamp(0.0).min(started)));
        let mut left = limit.unwrap_or(usize::MAX);
        let mut purged = 0;
        let errored = queues_by_state(self)
            .await?
            .into_iter()
            .filter(|(state, queue)| {
                *state == State::Error && queue_matches(queue, &only, &exclude)
            });
        for (_, queue) in errored {
            if left == 0 {
                break;
            }
            let moved = self
                .move_all(&queue, State::Error, None, cutoff, left)
                .await?;
            purged += moved;
            left -= usize::try_from(moved).unwrap_or(left).min(left);
        }
        Ok(purged)
    }

    /// Moves up to `limit` tasks in `from` on `queue` whose score is at most `cutoff` (if
    /// given), oldest first, to `to` (scored now) or out of Redis; returns how many moved.
    /// A page at a time: what moves leaves the zset, so the next page starts where this one
    /// ended and nothing is skipped.
    pub(crate) async fn move_all(
        &self,
        queue: &str,
        from: State,
        to: Option<State>,
        cutoff: Option<f64>,
        limit: usize,
    ) -> Result<u64> {
        let max = cutoff.map_or_else(|| "+inf".to_owned(), |c| c.to_string());
        let zset = self.keys().queue(from, queue);
        let mut left = limit;
        let mut total = 0;
        // Ids that are not UTF-8 and cannot be moved stay at the front: later pages skip them.
        let mut stuck = 0;
        while left > 0 {
            let found: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
                .arg(&zset)
                .arg("-inf")
                .arg(&max)
                .arg("LIMIT")
                .arg(stuck)
                .arg(left.min(PAGE))
                .query_async(&mut self.connection())
                .await?;
            if found.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(found.len());
            let mut raw = Vec::new();
            for id in found {
                match String::from_utf8(id) {
                    Ok(id) => ids.push((id, 0.0)),
                    Err(err) => raw.push(err.into_bytes()),
                }
            }
            let mut moved = 0;
            if !ids.is_empty() {
                let tasks = load(self, queue, from, ids, Some(0)).await?;
                let score = now();
                let moves: Vec<Move<'_>> = tasks
                    .iter()
                    .map(|task| task.as_move(to.map(|state| (state, score))))
                    .collect();
                let flags = scripts::move_tasks(self, &moves).await?;
                moved += flags.into_iter().filter(|m| *m).count();
            }
            if !raw.is_empty() {
                if to.is_none() {
                    moved += self.remove_raw(&zset, &raw).await?;
                } else {
                    tracing::warn!(%queue, ids = raw.len(), "skipping task ids that are not UTF-8: they can only be deleted");
                    stuck += raw.len();
                }
            }
            // A page whose tasks all left meanwhile, or could not be moved: done.
            if moved == 0 && raw.is_empty() {
                break;
            }
            total += moved as u64;
            left -= moved.min(left);
        }
        Ok(total)
    }

    /// Deletes ids that are not UTF-8 (a foreign producer's) from `zset`, with their keys;
    /// returns how many were still there.
    async fn remove_raw(&self, zset: &str, ids: &[Vec<u8>]) -> Result<usize> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.cmd("ZREM").arg(zset).arg(id);
            pipe.cmd("DEL")
                .arg(&self.keys().task_keys_raw(id)[..])
                .ignore();
        }
        let removed: Vec<u64> = pipe.query_async(&mut self.connection()).await?;
        Ok(removed.into_iter().filter(|n| *n > 0).count())
    }
}

/// `json` with the top-level field `name` set to `value`: only the bytes of that field's
/// value change (or, when it is missing, the field is added before the closing brace), so
/// every other byte the producer wrote survives.
fn set_number_field(json: &str, name: &str, value: f64) -> Result<String> {
    let not_a_task = |why: &str| Error::UnreadableTask {
        reason: format!("its JSON cannot be patched ({why})"),
    };
    let fields: BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_str(json).map_err(|e| not_a_task(&e.to_string()))?;
    let number = serde_json::to_string(&value).map_err(|e| not_a_task(&e.to_string()))?;
    if let Some(raw) = fields.get(name) {
        // The raw value borrows from `json`, so its place there is where its text starts.
        let start = raw.get().as_ptr() as usize - json.as_ptr() as usize;
        let end = start + raw.get().len();
        return Ok(format!("{}{number}{}", &json[..start], &json[end..]));
    }
    let close = json
        .rfind('}')
        .ok_or_else(|| not_a_task("no closing brace"))?;
    let separator = if fields.is_empty() { "" } else { ", " };
    Ok(format!(
        "{}{separator}\"{name}\": {number}{}",
        json[..close].trim_end(),
        &json[close..]
    ))
}

fn lenient_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    })
}

fn lenient_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    })
}

/// A number, or `None` for anything else (a Python producer may have stored a string).
fn lenient_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(|v| v.as_f64()))
}

/// A whole number from 0 up, or `None` for anything else.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(|v| v.as_u64()))
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(
        Option::<Value>::deserialize(d)?,
        Some(Value::Bool(true))
    ))
}

fn lenient_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Array(items)) if !items.is_empty() => Some(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patching_scheduled_at_keeps_every_other_byte() {
        let python = r#"{"id": "ab", "func": "m:f", "args": [123456789012345678901234567890, 0.1000000000000000055511151231257827], "retry_method": ["tasktiger.retry:_fixed", []], "scheduled_at": 1700000000.5, "x": "\/"}"#;
        let patched = set_number_field(python, "scheduled_at", 1800000000.25).unwrap();
        assert_eq!(patched, python.replace("1700000000.5", "1800000000.25"));
        let without = r#"{"id": "ab", "func": "m:f", "kwargs": {}}"#;
        assert_eq!(
            set_number_field(without, "scheduled_at", 2.5).unwrap(),
            r#"{"id": "ab", "func": "m:f", "kwargs": {}, "scheduled_at": 2.5}"#
        );
        assert!(set_number_field("[1]", "scheduled_at", 1.0).is_err());
    }

    #[test]
    fn reads_python_shapes_leniently() {
        let data: TaskData = serde_json::from_str(
            r#"{"id": "ab", "func": "m:f", "args": {}, "kwargs": [], "retry_on": {}, "lock_key": null, "hard_timeout": 30, "unique": true}"#,
        )
        .unwrap();
        assert!(data.args.is_empty() && data.kwargs.is_empty());
        assert_eq!((data.retry_on, data.lock_key), (None, None));
        assert_eq!(data.hard_timeout, Some(30.0));
        assert!(data.unique);
        let record = Execution::parse(b"not json");
        assert_eq!(record.unreadable.as_deref(), Some("not json"));
    }
}
