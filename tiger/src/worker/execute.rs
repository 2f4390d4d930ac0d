//! From a popped task to its outcome: decode the stored body, find the task, decode its
//! arguments, run it, and turn an error or a panic into a [`TaskFailure`].

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use crate::Tiger;
use crate::task::{
    args::Args,
    current,
    outcome::{Body, Outcome, TaskFailure},
    registry::Registry,
    stored::StoredTask,
};

/// `exception_name` of a task that panicked.
pub const PANIC: &str = "tiger:Panic";
/// `exception_name` of a task whose body is not task JSON (or names another id).
pub const MALFORMED_TASK: &str = "tiger:MalformedTask";
/// `exception_name` of a task whose name no `#[tiger::task]` in this worker has.
pub const UNKNOWN_TASK: &str = "tiger:UnknownTask";
/// `exception_name` of a task whose stored arguments do not fit its parameters.
pub const INVALID_ARGUMENTS: &str = "tiger:InvalidArguments";

/// A popped task, decoded as far as possible.
pub(crate) enum Prepared {
    /// Ready to run.
    Run {
        func: &'static str,
        unique: bool,
        body: Body,
    },
    /// Cannot run: it goes to the error state with this failure.
    Reject { unique: bool, failure: TaskFailure },
}

/// Decodes `body` (the JSON in `t:task:<id>`) and prepares the call.
pub(crate) fn prepare(registry: &Registry, id: &str, body: &[u8]) -> Prepared {
    let reject = |unique, name: &str, text: String| Prepared::Reject {
        unique,
        failure: TaskFailure::message(name, text),
    };
    let body = match std::str::from_utf8(body) {
        Ok(body) => body,
        Err(err) => {
            return reject(
                false,
                MALFORMED_TASK,
                format!("the task body is not valid UTF-8: {err}"),
            );
        }
    };
    let task: StoredTask<'_> = match serde_json::from_str(body) {
        Ok(task) => task,
        Err(err) => {
            return reject(
                false,
                MALFORMED_TASK,
                format!("the task body is not valid task JSON: {err}"),
            );
        }
    };
    if task.id != id {
        let text = format!(
            "the task body names id `{}`, but it is stored under `{id}`",
            task.id
        );
        return reject(false, MALFORMED_TASK, text);
    }
    let Some(entry) = registry.get(&task.func) else {
        let text = format!(
            "no task named `{}` is registered in this worker: is its `#[tiger::task]` linked \
             into the worker binary, and does its name (or `name = \"...\"`) match?",
            task.func
        );
        return reject(task.unique, UNKNOWN_TASK, text);
    };
    let call = Args::parse(task.args, task.kwargs).and_then(|args| (entry.call)(&args));
    match call {
        Ok(body) => Prepared::Run {
            func: entry.spec.name,
            unique: task.unique,
            body,
        },
        Err(err) => {
            let text = format!("the stored arguments do not fit `{}`: {err}", task.func);
            reject(task.unique, INVALID_ARGUMENTS, text)
        }
    }
}

/// Runs a prepared call to its outcome, with `tiger` as the handle that `delay` inside the
/// task uses. A panic is caught and becomes a failure; a plain `fn` runs on Tokio's blocking
/// pool so it never stalls the async threads.
pub(crate) async fn run(body: Body, tiger: Tiger) -> Outcome {
    match body {
        Body::Future(future) => current::scope(tiger, CatchPanic { future }).await,
        Body::Blocking(call) => {
            match tokio::task::spawn_blocking(move || current::blocking(tiger, || guarded(call)))
                .await
            {
                Ok(result) => result.and_then(|outcome| outcome),
                Err(err) => Err(TaskFailure::message(
                    PANIC,
                    format!("the task's thread ended early: {err}"),
                )),
            }
        }
    }
}

thread_local! {
    /// True while this thread runs task code, so the panic hook records instead of printing.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// What the hook recorded about the last task panic on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records panics of task code with their
/// location and, when `RUST_BACKTRACE` asks for one, a backtrace. Other panics go to the
/// hook that was installed before.
pub(crate) fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.get() {
                LAST_PANIC.set(Some(describe(info)));
            } else {
                previous(info);
            }
        }));
    });
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let message = payload_text(info.payload());
    let mut text = match info.location() {
        Some(location) => format!("panicked at {location}: {message}"),
        None => format!("panicked: {message}"),
    };
    let backtrace = Backtrace::capture();
    if backtrace.status() == BacktraceStatus::Captured {
        text.push_str("\n\nstack backtrace:\n");
        text.push_str(&backtrace.to_string());
    }
    text
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic payload that is not text)"
    }
}

/// Runs `f` with panics of task code caught and described.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, TaskFailure> {
    let was = CAPTURING.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    CAPTURING.set(was);
    result.map_err(|payload| {
        let text = LAST_PANIC
            .take()
            .unwrap_or_else(|| format!("panicked: {}", payload_text(&*payload)));
        TaskFailure::message(PANIC, text)
    })
}

/// A task future whose panics become failures. Each poll runs under [`guarded`].
struct CatchPanic {
    future: Pin<Box<dyn Future<Output = Outcome> + Send>>,
}

impl Future for CatchPanic {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let future = &mut self.get_mut().future;
        match guarded(|| future.as_mut().poll(cx)) {
            Ok(poll) => poll,
            Err(failure) => Poll::Ready(Err(failure)),
        }
    }
}
