//! Background tasks for Rust on Redis, wire-compatible with Python
//! [TaskTiger](https://github.com/closeio/tasktiger): the same keys, task JSON and execution
//! records, so Rust and Python workers can share one Redis.
//!
//! # A tour
//!
//! Mark a function as a task. It stays callable as before, and gains a module of the same
//! name whose `delay` enqueues a call with the same, typed arguments:
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
//! loop), [`run_worker`] (the CLI), [`testing`] (a throwaway Redis for tests).

pub use tiger_macros::task;

mod cli;
mod client;
mod config;
mod enqueue;
mod error;
pub mod keys;
mod scripts;
mod task;
pub mod testing;
mod time;
pub mod worker;

pub use cli::{WorkerArgs, init_logging, run_worker, run_worker_async};
pub use client::{DEFAULT_REDIS_URL, Tiger};
pub use config::Config;
pub use enqueue::Delay;
pub use error::{Error, Result};
pub use task::{TaskId, TaskSpec};
pub use keys::State;
pub use worker::{Worker, queue_matches};

/// Used by the code `#[tiger::task]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::TaskSpec;
    pub use crate::task::args::{ArgError, Args, ArgsWriter};
    pub use crate::task::outcome::{Body, BoxError, Outcome, TaskFailure, TaskReturn, outcome};
    pub use crate::task::registry::TaskEntry;
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
