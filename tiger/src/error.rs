//! [`Error`], what tiger's own calls return.
//!
//! A task's failure is not a [`Error`]: it is stored in Redis as an execution record
//! (see [`crate::worker`]).

/// Everything that can go wrong in tiger's API and worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// The Redis URL is malformed, or nothing answered there when connecting.
    #[error("cannot connect to Redis at {target}: {source}")]
    Connect {
        /// The URL, with any password replaced by `***`.
        target: String,
        /// What the Redis client reported.
        source: redis::RedisError,
    },

    /// A task argument could not be turned into JSON, so nothing was enqueued.
    #[error("cannot serialize the arguments of `{task}`: {source}")]
    Serialize {
        /// The task's serialized name.
        task: String,
        /// What serde_json reported.
        source: serde_json::Error,
    },

    /// A task argument is, or holds, a NaN or an infinite float. JSON has no such numbers
    /// and serde_json would have stored `null` in its place, so `delay` refuses the call.
    /// Nothing was written.
    #[error(
        "cannot enqueue `{task}`: `{path}` is {value}, and JSON has no NaN or infinity \
         (the float would be stored as null); nothing was written"
    )]
    NonFiniteFloat {
        /// The task's serialized name.
        task: String,
        /// The parameter whose argument holds the float.
        argument: String,
        /// Where the float sits: the parameter's name, then `[2]` for a list element,
        /// `.name` for a struct field or a map entry with a plain key, `["a key"]` for
        /// another key (`points[2].x`).
        path: String,
        /// The float: NaN, inf or -inf.
        value: f64,
    },

    /// Two `#[tiger::task]` functions linked into one binary have the same serialized name,
    /// so the worker could not tell them apart. It refuses to start.
    #[error(
        "two tasks are named `{name}`: one at {first}, one at {second}; \
         give one of them `#[tiger::task(name = \"...\")]`"
    )]
    DuplicateTask {
        /// The name both tasks have.
        name: String,
        /// `file:line` of one of them.
        first: String,
        /// `file:line` of the other.
        second: String,
    },

    /// `max_queue_size`: the queue already holds that many queued, scheduled and active
    /// tasks. Nothing was written.
    #[error("queue `{queue}` is full: it holds {max} or more tasks")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its `max_queue_size`.
        max: u64,
    },

    /// A unique task with this id is already stored for another queue. TaskTiger would
    /// share one stored task between the two queues and lose it when either finishes; tiger
    /// refuses instead. Nothing was written.
    #[error(
        "unique task `{id}` is already stored for a queue other than `{queue}`; \
         enqueue it on that queue, or wait until it has run there"
    )]
    UniqueInAnotherQueue {
        /// The task id.
        id: String,
        /// The queue the call asked for.
        queue: String,
    },

    /// Some calls of a [`DelayMany`](crate::DelayMany) were refused (a full queue, a unique
    /// task of another queue, an eager task that failed); the others were enqueued.
    #[error(
        "{} of {} calls enqueued; the first refusal (call {}): {}",
        enqueued.len(), enqueued.len() + refused.len(),
        refused.first().map_or(0, |r| r.0),
        refused.first().map_or(String::new(), |r| r.1.to_string())
    )]
    PartlyEnqueued {
        /// The ids written, in call order.
        enqueued: Vec<crate::TaskId>,
        /// Each refused call's position in the batch, with why.
        refused: Vec<(usize, Error)>,
    },

    /// With [`Config::always_eager`](crate::Config::always_eager), the task ran in-process
    /// and failed.
    #[error("task `{task}` failed: {traceback}")]
    TaskFailed {
        /// The task's serialized name.
        task: String,
        /// `module:Name` of the error.
        exception_name: String,
        /// The error and its sources, or the panic.
        traceback: String,
    },

    /// The inspection API found no such task: its id is not in the state's zset (or, for
    /// [`Task::n_executions`](crate::Task::n_executions), its JSON is gone).
    #[error("no task `{id}` in {place}")]
    TaskNotFound {
        /// The task id.
        id: String,
        /// Where it was looked for: `error on queue `emails``, say.
        place: String,
    },

    /// The task is in a state the operation does not apply to (retrying a queued task, say).
    /// Nothing was changed.
    #[error(
        "task `{id}` is {} on queue `{queue}`; this applies only to tasks that are {}",
        state.phrase(),
        expected.iter().map(|s| s.phrase()).collect::<Vec<_>>().join(" or ")
    )]
    WrongState {
        /// The task id.
        id: String,
        /// Its queue.
        queue: String,
        /// The state it is in.
        state: crate::State,
        /// The states the operation applies to.
        expected: Vec<crate::State>,
    },

    /// A task's stored JSON is not what the operation needs (not a JSON object, say), so
    /// it was left as it is.
    #[error("the task cannot be changed: {reason}")]
    UnreadableTask {
        /// What is wrong with it.
        reason: String,
    },

    /// The task's JSON kept being rewritten by others while an operation tried to change it
    /// (five times in a row). Nothing was changed; try again.
    #[error("task `{id}` kept changing while being updated; nothing was changed, try again")]
    Conflict {
        /// The task id.
        id: String,
    },

    /// A setting is out of range or malformed (an empty queue name, concurrency 0, …).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Starting or talking to a helper process (the test redis-server) failed.
    #[error("{context}: {source}")]
    Io {
        /// What tiger was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with tiger's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
