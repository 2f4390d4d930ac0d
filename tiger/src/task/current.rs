//! What code inside a running task can know: the task ([`current_task`]) and the handle of
//! the worker running it, so that a task which enqueues more work (`other::delay(...)`
//! without `.on(...)`) reaches the Redis and prefix it came from.
//!
//! `async fn` tasks see it through a Tokio task-local, plain `fn` tasks through a
//! thread-local set on the blocking thread for the duration of the call. Work a task spawns
//! onto other Tokio tasks does not inherit it.

use std::cell::RefCell;
use std::future::Future;

use crate::Tiger;

/// The task this code runs in, as [`current_task`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentTask {
    /// The task id.
    pub id: String,
    /// The queue it was taken from.
    pub queue: String,
    /// Its serialized name.
    pub func: &'static str,
    /// How many times it failed before this run (0 on the first run); the retry number of
    /// this run when it is a retry.
    pub retries: u32,
}

/// The scope of one task run.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) tiger: Tiger,
    pub(crate) task: CurrentTask,
}

tokio::task_local! {
    static CURRENT: Scope;
}

thread_local! {
    static CURRENT_BLOCKING: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

fn with_scope<R>(read: impl Fn(&Scope) -> R) -> Option<R> {
    CURRENT
        .try_with(&read)
        .ok()
        .or_else(|| CURRENT_BLOCKING.with_borrow(|scope| scope.as_ref().map(&read)))
}

/// The task this code is running in, when called from inside a task run by a worker.
///
/// ```
/// #[tiger::task]
/// async fn report(day: String) {
///     if let Some(task) = tiger::current_task() {
///         println!("task {} on {} (retry {})", task.id, task.queue, task.retries);
///     }
/// }
/// ```
pub fn current_task() -> Option<CurrentTask> {
    with_scope(|scope| scope.task.clone())
}

/// The handle of the worker running the task this code is part of, if any.
pub(crate) fn current() -> Option<Tiger> {
    with_scope(|scope| scope.tiger.clone())
}

/// The [`Tiger`] handle of the worker running the current task (its Redis, prefix and
/// settings), or `None` outside a task: what a task uses to reach the same Redis.
pub fn current_tiger() -> Option<Tiger> {
    current()
}

/// Runs `future` (an async task) inside `scope`.
pub(crate) async fn scope<F: Future>(scope: Scope, future: F) -> F::Output {
    CURRENT.scope(scope, future).await
}

/// Runs `call` (a plain fn task, on a blocking thread) inside `scope`. `call` must not
/// unwind: the worker passes it already guarded against panics.
pub(crate) fn blocking<R>(scope: Scope, call: impl FnOnce() -> R) -> R {
    let previous = CURRENT_BLOCKING.replace(Some(scope));
    let result = call();
    CURRENT_BLOCKING.set(previous);
    result
}
