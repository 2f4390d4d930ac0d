//! Background tasks for Rust on Redis, wire-compatible with Python
//! [TaskTiger](https://github.com/closeio/tasktiger): the same keys, task JSON and execution
//! records, so Rust and Python workers can share one Redis.
//!
//! # A tour
//!
//! Mark a function as a task. It stays callable as before, and gains a handle of the same
//! name (see [`task`]) whose `delay` enqueues a call with the same, typed arguments:
//!
//! ```no_run
//! #[derive(Debug, thiserror::Error)]
//! #[error("mail server refused {0}")]
//! struct Refused(String);
//!
//! #[tiger::task(queue = "emails")]
//! async fn send_welcome(user_id: u64, address: String) -> Result<(), Refused> {
//!     println!("welcome, user {user_id} at {address}");
//!     Ok(())
//! }
//!
//! #[tiger::task]
//! fn resize(path: String, width: u32) {
//!     println!("resizing {path} to {width}px"); // plain fns run off the async threads
//! }
//!
//! # async fn demo() -> tiger::Result<()> {
//! send_welcome::delay(42, "a@example.org".into()).await?;          // enqueue
//! send_welcome::delay(7, "b@example.org".into()).queue("emails.vip").await?; // per call
//! resize::delay("cat.png".into(), 640).await?;
//! # Ok(()) }
//! ```
//!
//! A worker binary is one line; it finds every task linked into it by name:
//!
//! ```no_run
//! fn main() {
//!     tiger::run_worker() // flags: --help; Redis from REDIS_URL
//! }
//! ```
//!
//! # Where things live
//!
//! A task's life, one module per stage: [`Config`] and [`Tiger`] (settings, connection),
//! `keys` (every key name), `scripts` (the Lua), `task` (names, ids, stored JSON,
//! arguments, registry), [`Delay`] (enqueue), [`worker`] (dequeue, execute, finish, the
//! loop), [`Task`] (inspection: what the queues hold, and putting it right), [`run_worker`]
//! (the CLI, with the operator's subcommands of [`Command`]), [`testing`] (a throwaway Redis
//! for tests).

#![allow(
    clippy::needless_doctest_main,
    reason = "the examples show a user's whole `main`"
)]

/// Makes a function a tiger task.
///
/// ```no_run
/// #[tiger::task(queue = "emails", name = "app.mail:send_welcome")]
/// async fn send_welcome(user_id: u64, address: String) -> Result<(), std::io::Error> {
///     Ok(())
/// }
/// # async fn demo() -> tiger::Result<()> {
/// send_welcome::delay(42, "a@example.org".into()).await?;   // enqueue
/// send_welcome(42, "a@example.org".into()).await.ok();      // still a plain call
/// assert_eq!(send_welcome::NAME, "app.mail:send_welcome");
/// # Ok(()) }
/// ```
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `queue = "emails.bulk"` | the queue `delay` enqueues on; dots make subqueues (default [`Config::default_queue`]) |
/// | `name = "app.mail:send"` | the serialized name looked up by the worker (default `"<module_path>:<fn name>"`); a Python task's `"module:qualname"` takes over its tasks |
/// | `unique`, `unique_key = ["p"]` | the id is TaskTiger's hash of the name and the arguments (or these parameters) |
/// | `lock`, `lock_key = ["p"]` | at most one task with the same lock id runs at a time |
/// | `retry` | retry failures with [`Config::default_retry_method`] |
/// | `retry_method = fixed(60, 3)` | or `linear(d, inc, max)`, `exponential(d, factor, max)`, or a path to `fn(u32) -> Option<Duration>` |
/// | `retry_on = [MyError, tiger::JobTimeout]` | retry only these errors (also found in the error's `source()` chain) |
/// | `hard_timeout = 30` | seconds before the task is stopped and fails with [`JobTimeout`] |
/// | `max_queue_size = 1000` | `delay` fails with [`Error::QueueFull`] when the queue holds this many |
/// | `max_stored_executions = 10` | keep only the last n execution records |
/// | `batch` | the function takes `Vec<(A, B)>`; `delay(a, b)` queues one call |
/// | `schedule = periodic(hours = 1)` | or `cron("*/5 * * * *")`: a periodic task, with no parameters |
///
/// Each but `name`, `batch` and `schedule` can also be set per call on the [`Delay`]
/// (`.queue(..)`, `.unique(..)`, `.when(..)`, `.retry_method(tiger::fixed(60.0, 3))`, ...);
/// the README's "Task options" has the details and TaskTiger's semantics.
///
/// An unknown or repeated option is a compile error on that option.
///
/// # What it generates
///
/// The function is kept exactly as written. Next to it comes a type of the same name (an
/// empty braced struct, which lives only in the type namespace, so it does not clash with
/// the function) carrying:
/// - `delay(<the same parameters>) -> Delay`: typed; awaiting the [`Delay`] enqueues, and it
///   takes per-call options first (`.queue("...")`, `.on(&tiger)`);
/// - `NAME`: the serialized name.
///
/// The task is registered with `inventory`, so every worker binary it is linked into finds
/// it by name. Two tasks with one name stop the worker at start with both places named.
///
/// # Parameters and return type
///
/// Each parameter must be a plain name with an owned type that is `Serialize +
/// DeserializeOwned + Send + 'static`. Arguments travel as a JSON list in parameter order
/// (`args`), or, for a task with `unique_key` or `lock_key`, as an object by parameter name
/// (`kwargs`), which is where TaskTiger reads those keys. A stored task may carry both, as
/// Python producers write them; a missing `Option` parameter is `None`.
///
/// `async fn` tasks run on the worker's Tokio runtime; plain `fn` tasks run on Tokio's
/// blocking pool. A task returns `()` or `Result<T, E>` where `E` converts into
/// `Box<dyn Error + Send + Sync>` (any error type, `anyhow::Error`, `String`). An `Err` or
/// a panic fails the task: see [`worker`] for what is recorded.
///
/// Wrong argument types do not compile:
///
/// ```compile_fail
/// #[tiger::task]
/// async fn resize(path: String, width: u32) {}
///
/// # async fn demo() {
/// let _ = resize::delay("cat.png".into(), "wide");
/// # }
/// ```
///
/// Nor do parameter types that cannot travel as JSON:
///
/// ```compile_fail
/// #[tiger::task]
/// async fn borrowed(path: &'static str) {}
/// ```
///
/// ```compile_fail
/// #[tiger::task(queue = "a", retries = 3)] // unknown option
/// async fn t() {}
/// ```
pub use tiger_macros::task;

mod admin;
mod cli;
mod client;
mod config;
mod dashboard;
mod enqueue;
mod error;
mod inspect;
pub mod keys;
pub mod metrics;
mod pause;
pub mod presence;
pub mod retry;
pub mod schedule;
mod scripts;
mod task;
pub mod testing;
mod time;
pub mod worker;

pub use admin::{EXIT_DECLINED, EXIT_NOT_FOUND, EXIT_WRONG_STATE};
pub use cli::{
    Command, Selection, WorkerArgs, init_logging, run_worker, run_worker_async,
    run_worker_async_with, run_worker_with,
};
pub use client::{DEFAULT_REDIS_URL, Tiger};
pub use config::Config;
pub use dashboard::Dashboard;
pub use enqueue::When;
pub use enqueue::{Delay, DelayMany};
pub use error::{Error, Result};
pub use inspect::{Execution, StateCounts, Task, TaskData};
pub use keys::State;
pub use presence::{Minute, WorkerInfo};
pub use retry::{RetryMethod, exponential, fixed, linear};
pub use schedule::{Schedule, cron, periodic};
pub use task::TaskId;
pub use task::current::{CurrentTask, current_task, current_tiger};
pub use task::outcome::{JobTimeout, Retry};
pub use worker::{Executor, Stopped, Worker, queue_matches, serve_executor_child};

/// Used by the code `#[tiger::task]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::args::{ArgError, Args, ArgsWriter};
    pub use crate::task::outcome::{Body, BoxError, Outcome, TaskFailure, TaskReturn, outcome};
    pub use crate::task::outcome::{chain_has, exception_name_of};
    pub use crate::task::registry::{BatchCalls, TaskEntry};
    pub use crate::task::{RetryOn, TaskSpec};
    pub use inventory;

    /// What every task parameter type must be: it travels as JSON between processes.
    #[diagnostic::on_unimplemented(
        message = "task parameter type `{Self}` must be `Serialize + DeserializeOwned + Send + 'static`",
        label = "this type cannot travel through Redis as a task argument",
        note = "task arguments are stored as JSON; derive `serde::Serialize` and `serde::Deserialize` and use owned types (`String`, not `&str`)"
    )]
    pub trait TaskArg: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> TaskArg for T {}

    /// Generated once per parameter, spanned on its type, so a bad type is reported there.
    pub fn assert_task_arg<T: TaskArg>() {}
}
