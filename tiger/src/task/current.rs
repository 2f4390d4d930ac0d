//! The handle of the worker that runs the current task, so that a task which enqueues more
//! work (`other::delay(...)` without `.on(...)`) reaches the Redis and prefix it came from,
//! not whatever the process-wide handle happens to be.
//!
//! `async fn` tasks see it through a Tokio task-local, plain `fn` tasks through a
//! thread-local set on the blocking thread for the duration of the call. Work a task spawns
//! onto other Tokio tasks does not inherit it and falls back to the process-wide handle.

use std::cell::RefCell;
use std::future::Future;

use crate::Tiger;

tokio::task_local! {
    static CURRENT: Tiger;
}

thread_local! {
    static CURRENT_BLOCKING: RefCell<Option<Tiger>> = const { RefCell::new(None) };
}

/// The handle of the worker running the task this code is part of, if any.
pub(crate) fn current() -> Option<Tiger> {
    CURRENT
        .try_with(Tiger::clone)
        .ok()
        .or_else(|| CURRENT_BLOCKING.with_borrow(Clone::clone))
}

/// Runs `future` (an async task) with `tiger` as its current handle.
pub(crate) async fn scope<F: Future>(tiger: Tiger, future: F) -> F::Output {
    CURRENT.scope(tiger, future).await
}

/// Runs `call` (a plain fn task, on a blocking thread) with `tiger` as its current handle.
/// `call` must not unwind: the worker passes it already guarded against panics.
pub(crate) fn blocking<R>(tiger: Tiger, call: impl FnOnce() -> R) -> R {
    let previous = CURRENT_BLOCKING.replace(Some(tiger));
    let result = call();
    CURRENT_BLOCKING.set(previous);
    result
}
