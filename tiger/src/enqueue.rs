//! [`Delay`]: what `my_task::delay(...)` returns. Awaiting it writes the task to Redis.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    Error, Result, RetryMethod, Tiger,
    keys::State,
    scripts::{self, Enqueue, Enqueued},
    task::{
        TaskId, TaskSpec, args::ArgsWriteError, current, ids::derived_id,
        outcome::exception_name_of,
    },
    time::now,
};

/// When a task should run: after a delay, or at a point in time. A time that is not in the
/// future means now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long from the moment the task is enqueued.
    In(Duration),
    /// At this time.
    At(SystemTime),
}

impl From<Duration> for When {
    fn from(delay: Duration) -> When {
        When::In(delay)
    }
}

impl From<SystemTime> for When {
    fn from(at: SystemTime) -> When {
        When::At(at)
    }
}

impl When {
    /// Unix seconds, given the current time `now`.
    pub(crate) fn timestamp(self, now: f64) -> f64 {
        match self {
            When::In(delay) => now + delay.as_secs_f64(),
            When::At(at) => match at.duration_since(UNIX_EPOCH) {
                Ok(since) => since.as_secs_f64(),
                Err(_) => 0.0,
            },
        }
    }
}

/// Per-call options; each overrides the attribute's value when set.
#[derive(Debug, Clone, Default)]
struct CallOptions {
    queue: Option<String>,
    when: Option<When>,
    unique: Option<bool>,
    unique_key: Option<Vec<String>>,
    lock: Option<bool>,
    lock_key: Option<Vec<String>>,
    retry: Option<bool>,
    retry_on: Option<Vec<String>>,
    retry_method: Option<RetryMethod>,
    hard_timeout: Option<Duration>,
    max_queue_size: Option<u64>,
    max_stored_executions: Option<u32>,
}

/// A task call waiting to be enqueued. Set per-call options on it, then `.await` it:
///
/// ```no_run
/// # use std::time::Duration;
/// # #[tiger::task(queue = "emails")]
/// # async fn send_welcome(user_id: u64) {}
/// # async fn demo(tiger: tiger::Tiger) -> tiger::Result<()> {
/// send_welcome::delay(42).await?;                                  // attribute options
/// send_welcome::delay(42).queue("emails.bulk").on(&tiger).await?;  // per-call options
/// send_welcome::delay(42).when(Duration::from_secs(60)).unique(true).await?;
/// # Ok(()) }
/// ```
///
/// Enqueueing is one round trip: one script writes the JSON, adds the id to the queue (or
/// to `scheduled`, for a time in the future), checks `max_queue_size` in the same step, and
/// publishes on the activity channel to wake idle workers.
#[must_use = "a `Delay` enqueues nothing until it is awaited"]
#[derive(Debug)]
pub struct Delay {
    spec: &'static TaskSpec,
    args: std::result::Result<Option<Box<RawValue>>, ArgsWriteError>,
    tiger: Option<Tiger>,
    options: CallOptions,
}

impl Delay {
    /// A call of the task `spec` with arguments already written as a JSON list. Generated
    /// code calls this; use `my_task::delay(...)`.
    #[doc(hidden)]
    pub fn new(
        spec: &'static TaskSpec,
        args: std::result::Result<Option<Box<RawValue>>, ArgsWriteError>,
    ) -> Delay {
        Delay {
            spec,
            args,
            tiger: None,
            options: CallOptions::default(),
        }
    }

    /// Enqueues through `tiger`. Without it, `delay` uses the handle of the worker running the
    /// current task (so follow-up tasks reach the same Redis and prefix), else the
    /// process-wide handle ([`Tiger::global`]).
    pub fn on(mut self, tiger: &Tiger) -> Delay {
        self.tiger = Some(tiger.clone());
        self
    }

    /// Enqueues on `queue` instead of the attribute's queue (or the default queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Delay {
        self.options.queue = Some(queue.into());
        self
    }

    /// Runs the task later: after a [`Duration`] or at a [`SystemTime`]. A time that is not
    /// in the future queues it now.
    pub fn when(mut self, when: impl Into<When>) -> Delay {
        self.options.when = Some(when.into());
        self
    }

    /// Makes the id a hash of the task's name and arguments, so enqueueing the same call
    /// again refers to the same task (and keeps its place in the queue).
    pub fn unique(mut self, unique: bool) -> Delay {
        self.options.unique = Some(unique);
        self
    }

    /// Makes the id a hash of the task's name and these parameters only (implies `unique`).
    pub fn unique_key<I: IntoIterator<Item = S>, S: Into<String>>(mut self, params: I) -> Delay {
        self.options.unique_key = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// Runs at most one task with the same lock id at a time; the lock id is a hash of the
    /// name and arguments. A task that finds its lock taken waits in `scheduled`.
    pub fn lock(mut self, lock: bool) -> Delay {
        self.options.lock = Some(lock);
        self
    }

    /// Makes the lock id a hash of the name and these parameters only (implies `lock`).
    pub fn lock_key<I: IntoIterator<Item = S>, S: Into<String>>(mut self, params: I) -> Delay {
        self.options.lock_key = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// Retries a failure with the task's retry method (or
    /// [`Config::default_retry_method`](crate::Config::default_retry_method)).
    pub fn retry(mut self, retry: bool) -> Delay {
        self.options.retry = Some(retry);
        self
    }

    /// Retries only errors of type `E` (adds to the per-call list, which replaces the
    /// attribute's `retry_on`). Implies `retry`. A per-call list is stored as names and
    /// matches the type the task returned; the attribute's types are also found inside the
    /// error's `source()` chain.
    pub fn retry_on<E: std::error::Error + 'static>(mut self) -> Delay {
        self.options
            .retry_on
            .get_or_insert_with(Vec::new)
            .push(exception_name_of::<E>());
        self
    }

    /// Retries with `method`. Implies `retry`.
    pub fn retry_method(mut self, method: RetryMethod) -> Delay {
        self.options.retry_method = Some(method);
        self
    }

    /// Stops the task after `limit` (stored in the task, as TaskTiger stores a per-call
    /// hard timeout).
    pub fn hard_timeout(mut self, limit: Duration) -> Delay {
        self.options.hard_timeout = Some(limit);
        self
    }

    /// Refuses to enqueue ([`Error::QueueFull`]) when the queue already holds this many
    /// queued, scheduled and active tasks.
    pub fn max_queue_size(mut self, size: u64) -> Delay {
        self.options.max_queue_size = Some(size);
        self
    }

    /// Keeps only the last `count` execution records of the task (0 keeps all).
    pub fn max_stored_executions(mut self, count: u32) -> Delay {
        self.options.max_stored_executions = Some(count);
        self
    }

    /// Checks the call and builds what will be written; touches no Redis.
    async fn prepare(self, tiger: Option<Tiger>) -> Result<Ready> {
        let spec = self.spec;
        let serialize_error = |source| Error::Serialize {
            task: spec.name.to_owned(),
            source,
        };
        // Before anything else, so that a refused call writes nothing, eager or not.
        let args = self.args.map_err(|err| match err {
            ArgsWriteError::Json(source) => serialize_error(source),
            ArgsWriteError::NonFinite { index, path, value } => {
                let argument = match spec.params.get(index) {
                    Some(name) => (*name).to_owned(),
                    None => format!("argument {}", index + 1),
                };
                Error::NonFiniteFloat {
                    task: spec.name.to_owned(),
                    path: format!("{argument}{path}"),
                    argument,
                    value,
                }
            }
        })?;
        let tiger = match tiger.or(self.tiger).or_else(current::current) {
            Some(tiger) => tiger,
            None => Tiger::global().await?,
        };
        let options = &self.options;
        let queue = match (&options.queue, spec.queue) {
            (Some(queue), _) => queue.as_str(),
            (None, Some(queue)) => queue,
            (None, None) => tiger.config().default_queue.as_str(),
        };
        if queue.is_empty() {
            return Err(Error::Config(format!(
                "`{}` was given an empty queue name",
                spec.name
            )));
        }
        let unique_key = key_list(spec, options.unique_key.as_deref(), spec.unique_key)?;
        let lock_key = key_list(spec, options.lock_key.as_deref(), spec.lock_key)?;
        let unique = options.unique.unwrap_or(spec.unique) || unique_key.is_some();
        let lock = options.lock.unwrap_or(spec.lock) || lock_key.is_some();

        // TaskTiger reads `unique_key` / `lock_key` fields from `kwargs` only, so a task that
        // names fields keeps its arguments there, by parameter name, and Python computes
        // the same ids.
        let (args, kwargs) = match args {
            Some(list) if unique_key.is_some() || lock_key.is_some() => {
                (None, Some(as_kwargs(spec, &list)?))
            }
            other => (other, None),
        };
        let id = if unique {
            let hashed = derived_id(
                spec.name,
                args.as_deref().map(RawValue::get),
                kwargs.as_deref().map(RawValue::get),
                unique_key.as_deref(),
            );
            TaskId::from_hash(hashed.map_err(|err| {
                Error::Config(format!(
                    "cannot hash the arguments of `{}`: {err}",
                    spec.name
                ))
            })?)
        } else {
            TaskId::random()
        };

        let config = tiger.config();
        let retry_on = options
            .retry_on
            .clone()
            .or_else(|| spec.retry_on.map(|r| (r.names)()));
        let retries = options.retry.unwrap_or(spec.retry)
            || retry_on.is_some()
            || options.retry_method.is_some()
            || spec.retry_method.is_some();
        let retry_method = retries.then(|| {
            options
                .retry_method
                .or(spec.retry_method)
                .unwrap_or(config.default_retry_method)
        });
        let max_queue_size = options
            .max_queue_size
            .or(spec.max_queue_size)
            .filter(|n| *n > 0);

        let now = now();
        let due = options
            .when
            .map(|when| when.timestamp(now))
            .filter(|at| *at > now);
        let (state, score) = match due {
            Some(at) => (State::Scheduled, at),
            None => (State::Queued, now),
        };
        let task = NewTask {
            id: id.as_str(),
            func: spec.name,
            unique: unique.then_some(true),
            unique_key: unique_key.as_deref(),
            lock: lock.then_some(true),
            lock_key: lock_key.as_deref(),
            args: args.as_deref(),
            kwargs: kwargs.as_deref(),
            hard_timeout: options
                .hard_timeout
                .map(|d| d.as_secs_f64())
                .filter(|s| *s > 0.0),
            retry_method: retry_method.map(RetryMethod::to_json),
            retry_on: retry_on.as_deref(),
            max_queue_size,
            max_stored_executions: options.max_stored_executions.or(spec.max_stored_executions),
            time_last_queued: now,
            scheduled_at: score,
        };
        let json = serde_json::to_string(&task).map_err(serialize_error)?;
        let hard_timeout = task.hard_timeout;
        let queue = queue.to_owned();
        Ok(Ready {
            spec,
            queue,
            id,
            state,
            score,
            json,
            unique,
            max_queue_size,
            args,
            kwargs,
            hard_timeout,
            tiger,
        })
    }
}

impl IntoFuture for Delay {
    type Output = Result<TaskId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<TaskId>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let ready = self.prepare(None).await?;
            if ready.eager() {
                return eager::run(ready).await;
            }
            let answer = scripts::enqueue(&ready.tiger, &ready.step()).await?;
            ready.outcome(answer)
        })
    }
}

/// A checked call: the JSON and where it goes, written by [`Delay`] or [`DelayMany`].
#[derive(Debug)]
struct Ready {
    spec: &'static TaskSpec,
    queue: String,
    id: TaskId,
    state: State,
    score: f64,
    json: String,
    unique: bool,
    max_queue_size: Option<u64>,
    /// What an eager run needs besides the JSON.
    args: Option<Box<RawValue>>,
    kwargs: Option<Box<RawValue>>,
    hard_timeout: Option<f64>,
    tiger: Tiger,
}

impl Ready {
    /// `ALWAYS_EAGER` runs a task due now in-process instead of writing it.
    fn eager(&self) -> bool {
        self.tiger.config().always_eager && self.state == State::Queued
    }

    fn step(&self) -> Enqueue<'_> {
        Enqueue {
            queue: &self.queue,
            id: self.id.as_str(),
            state: self.state,
            score: self.score,
            json: &self.json,
            unique: self.unique,
            max_queue_size: self.max_queue_size,
        }
    }

    /// The id when `enqueue.lua` wrote the task, else the refusal.
    fn outcome(self, answer: Enqueued) -> Result<TaskId> {
        match answer {
            Enqueued::Written => {
                tracing::debug!(
                    task_id = %self.id, func = self.spec.name, queue = self.queue,
                    state = %self.state, "task enqueued"
                );
                Ok(self.id)
            }
            Enqueued::QueueFull => Err(Error::QueueFull {
                queue: self.queue,
                max: self.max_queue_size.unwrap_or(0),
            }),
            Enqueued::UniqueInAnotherQueue => Err(Error::UniqueInAnotherQueue {
                id: self.id.to_string(),
                queue: self.queue,
            }),
        }
    }
}

/// Many task calls enqueued together: what `my_task::delay_many(...)` returns. Awaiting it
/// checks every call first (a bad argument or option fails the whole call with nothing
/// written), then writes them through pipelines of [`DelayMany::CHUNK`] calls of the same
/// script a single [`Delay`] runs, so each task gets exactly the keys, JSON and checks it
/// would get alone.
///
/// ```no_run
/// # #[tiger::task(queue = "emails")]
/// # async fn send_welcome(user_id: u64) {}
/// # #[tiger::task]
/// # async fn resize(photo: String, width: u32) {}
/// # async fn demo(tiger: tiger::Tiger) -> tiger::Result<()> {
/// send_welcome::delay_many(1..=10_000).on(&tiger).await?;
/// resize::delay_many([("a.jpg".to_owned(), 640), ("b.jpg".to_owned(), 1024)])
///     .each(|call| call.queue("photos.bulk"))
///     .await?;
/// // Calls of different tasks, each with its own options:
/// tiger::DelayMany::new([send_welcome::delay(1), send_welcome::delay(2).unique(true)]).await?;
/// # Ok(()) }
/// ```
///
/// The answer is every id in call order. When some calls are refused
/// ([`Error::QueueFull`], [`Error::UniqueInAnotherQueue`], or with
/// [`Config::always_eager`](crate::Config::always_eager) an eager task that failed) the
/// others are still written, and the answer is [`Error::PartlyEnqueued`]: its `refused`
/// holds each refused call's position and error, its `enqueued` the ids of the other calls
/// in call order (empty when every call was refused). A Redis error mid-way can leave
/// some pipelines written (up to four are in flight at once); enqueueing the same unique tasks again is safe.
#[must_use = "a `DelayMany` enqueues nothing until it is awaited"]
#[derive(Debug)]
pub struct DelayMany {
    calls: Vec<Delay>,
    tiger: Option<Tiger>,
}

impl DelayMany {
    /// Calls written per pipeline (one round trip each).
    pub const CHUNK: usize = 1_000;
    /// Pipelines in flight at once.
    const IN_FLIGHT: usize = 4;

    /// A batch of calls made with `my_task::delay(...)`, of one task or several, each with
    /// its own per-call options.
    pub fn new(calls: impl IntoIterator<Item = Delay>) -> DelayMany {
        DelayMany {
            calls: calls.into_iter().collect(),
            tiger: None,
        }
    }

    /// Enqueues every call through `tiger` (it overrides a call's own `.on`). Without it,
    /// the handle is chosen as for [`Delay::on`].
    pub fn on(mut self, tiger: &Tiger) -> DelayMany {
        self.tiger = Some(tiger.clone());
        self
    }

    /// Applies per-call options to every call: `.each(|call| call.queue("bulk"))`.
    pub fn each(mut self, options: impl FnMut(Delay) -> Delay) -> DelayMany {
        self.calls = self.calls.into_iter().map(options).collect();
        self
    }

    async fn enqueue(self) -> Result<Vec<TaskId>> {
        let tiger = match self.tiger.or_else(current::current) {
            Some(tiger) => Some(tiger),
            None if self.calls.iter().all(|call| call.tiger.is_none()) => {
                Some(Tiger::global().await?)
            }
            None => None,
        };
        let mut ready = Vec::with_capacity(self.calls.len());
        for call in self.calls {
            ready.push(call.prepare(tiger.clone()).await?);
        }
        // One pipeline per run of calls through the same handle, up to `CHUNK`; an eager call
        // runs alone, in the loop below. A few pipelines are in flight at once, so that
        // Redis works on one while the next is encoded.
        let mut pipelines: Vec<Option<std::ops::Range<usize>>> = Vec::new();
        let mut start = 0;
        while start < ready.len() {
            if ready[start].eager() {
                pipelines.push(None);
                start += 1;
                continue;
            }
            let handle = &ready[start].tiger;
            let end = ready[start..]
                .iter()
                .take(DelayMany::CHUNK)
                .position(|r| r.eager() || !r.tiger.same_handle(handle))
                .map_or((start + DelayMany::CHUNK).min(ready.len()), |n| start + n);
            pipelines.push(Some(start..end));
            start = end;
        }
        let ready_ref = &ready;
        let written: Vec<Result<Vec<Option<Enqueued>>>> = stream::iter(pipelines)
            .map(|pipeline| async move {
                let Some(range) = pipeline else {
                    return Ok(vec![None]);
                };
                let calls = &ready_ref[range];
                let steps: Vec<Enqueue<'_>> = calls.iter().map(Ready::step).collect();
                Ok(scripts::enqueue_many(&calls[0].tiger, &steps)
                    .await?
                    .into_iter()
                    .map(Some)
                    .collect())
            })
            .buffered(DelayMany::IN_FLIGHT)
            .collect()
            .await;
        let mut answers = Vec::with_capacity(ready.len());
        for pipeline in written {
            answers.extend(pipeline?);
        }
        let mut enqueued = Vec::with_capacity(ready.len());
        let mut refused = Vec::new();
        for (index, (ready, answer)) in ready.into_iter().zip(answers).enumerate() {
            let outcome = match answer {
                Some(answer) => ready.outcome(answer),
                None => eager::run(ready).await,
            };
            match outcome {
                Ok(id) => enqueued.push(id),
                Err(err) => refused.push((index, err)),
            }
        }
        if refused.is_empty() {
            Ok(enqueued)
        } else {
            Err(Error::PartlyEnqueued { enqueued, refused })
        }
    }
}

impl IntoFuture for DelayMany {
    type Output = Result<Vec<TaskId>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Vec<TaskId>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.enqueue())
    }
}

/// The JSON `delay` writes, with TaskTiger's field names in TaskTiger's order; unset fields
/// are left out, as TaskTiger leaves them out.
#[derive(Debug, Serialize)]
struct NewTask<'a> {
    id: &'a str,
    func: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique_key: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_key: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kwargs: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hard_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_method: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_on: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queue_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_stored_executions: Option<u32>,
    time_last_queued: f64,
    scheduled_at: f64,
}

/// The per-call key list if given, else the attribute's; every name must be a parameter.
fn key_list(
    spec: &TaskSpec,
    call: Option<&[String]>,
    attribute: Option<&'static [&'static str]>,
) -> Result<Option<Vec<String>>> {
    // An empty list means no key list, as in TaskTiger (`if unique_key:`).
    let keys: Option<Vec<String>> = match call {
        Some(keys) => Some(keys.to_vec()),
        None => attribute.map(|keys| keys.iter().map(|k| (*k).to_owned()).collect()),
    }
    .filter(|keys| !keys.is_empty());
    if let Some(bad) = keys
        .iter()
        .flatten()
        .find(|k| !spec.params.contains(&k.as_str()))
    {
        return Err(Error::Config(format!(
            "`{bad}` is not a parameter of `{}` (its parameters: {})",
            spec.name,
            spec.params.join(", ")
        )));
    }
    Ok(keys)
}

/// Re-writes a JSON list of arguments as an object keyed by parameter name.
fn as_kwargs(spec: &TaskSpec, list: &RawValue) -> Result<Box<RawValue>> {
    let values: Vec<&RawValue> =
        serde_json::from_str(list.get()).map_err(|source| Error::Serialize {
            task: spec.name.to_owned(),
            source,
        })?;
    let mut object = String::with_capacity(list.get().len() + 16 * values.len());
    object.push('{');
    for (i, (name, value)) in spec.params.iter().zip(values).enumerate() {
        if i > 0 {
            object.push(',');
        }
        object.push_str(
            &serde_json::to_string(name).map_err(|source| Error::Serialize {
                task: spec.name.to_owned(),
                source,
            })?,
        );
        object.push(':');
        object.push_str(value.get());
    }
    object.push('}');
    RawValue::from_string(object).map_err(|source| Error::Serialize {
        task: spec.name.to_owned(),
        source,
    })
}

/// `ALWAYS_EAGER`: the task runs here and now, through the same decoding and execution as
/// in a worker.
mod eager {
    use super::Ready;
    use crate::{
        Error, Result,
        keys::State,
        task::{
            TaskId,
            args::Args,
            current::{CurrentTask, Scope},
            registry::TaskEntry,
        },
        worker::execute,
    };

    pub(super) async fn run(ready: Ready) -> Result<TaskId> {
        let Ready {
            tiger,
            spec,
            queue,
            id,
            max_queue_size,
            args,
            kwargs,
            hard_timeout,
            ..
        } = ready;
        let queue = queue.as_str();
        if let Some(max) = max_queue_size {
            let keys = tiger.keys();
            let mut pipe = redis::pipe();
            for state in [State::Queued, State::Scheduled, State::Active] {
                pipe.cmd("ZCARD").arg(keys.queue(state, queue));
            }
            let sizes: Vec<u64> = pipe.query_async(&mut tiger.connection()).await?;
            if sizes.iter().sum::<u64>() >= max {
                return Err(Error::QueueFull {
                    queue: queue.to_owned(),
                    max,
                });
            }
        }
        let entry = inventory::iter::<TaskEntry>
            .into_iter()
            .find(|entry| std::ptr::eq(entry.spec, spec) || entry.spec.name == spec.name)
            .ok_or_else(|| Error::Config(format!("`{}` is not registered", spec.name)))?;
        let failed = |exception_name: String, traceback: String| Error::TaskFailed {
            task: spec.name.to_owned(),
            exception_name,
            traceback,
        };
        let body = Args::parse(args.as_deref(), kwargs.as_deref())
            .and_then(|args| (entry.call)(&args))
            .map_err(|err| failed(execute::INVALID_ARGUMENTS.to_owned(), err.to_string()))?;
        execute::install_panic_hook();
        let scope = Scope {
            tiger: tiger.clone(),
            task: CurrentTask {
                id: id.to_string(),
                queue: queue.to_owned(),
                func: spec.name,
                retries: 0,
            },
        };
        let limit = hard_timeout
            .or(spec.hard_timeout)
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            .unwrap_or(tiger.config().default_hard_timeout);
        match execute::run(body, scope, limit, &mut Vec::new()).await {
            Ok(()) => Ok(id),
            Err(failure) => Err(failed(failure.exception_name, failure.traceback)),
        }
    }
}
