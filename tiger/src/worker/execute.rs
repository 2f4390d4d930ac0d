//! From a popped task to its outcome: decode the stored body, find the task, decode its
//! arguments, run it, and turn an error or a panic into a [`TaskFailure`].

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use std::time::Duration;

use serde_json::value::RawValue;

use crate::Config;
use crate::retry::StoredRetry;
use crate::task::{
    TaskSpec,
    args::Args,
    current::{self, Scope},
    ids::derived_id,
    outcome::{Body, Outcome, TaskFailure},
    outcome::{JOB_TIMEOUT, JobTimeout},
    registry::{Registry, TaskEntry},
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
    Run(Plan),
    /// Cannot run: it goes to the error state with this failure.
    Reject { unique: bool, failure: TaskFailure },
}

/// What running a task takes: a call ready to go, or, for a `batch` function, the decoded
/// arguments waiting to be gathered with the group's others.
pub(crate) enum Work {
    Body(Body),
    Item(Box<dyn std::any::Any + Send>),
}

/// Everything the worker needs to run a task and settle its outcome.
pub(crate) struct Plan {
    pub(crate) func: &'static str,
    pub(crate) spec: &'static TaskSpec,
    pub(crate) entry: &'static TaskEntry,
    pub(crate) unique: bool,
    /// The lock to hold while running (`lock` / `lock_key`), as a lock id.
    pub(crate) lock_id: Option<String>,
    pub(crate) hard_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// `max_stored_executions`.
    pub(crate) keep_records: Option<u32>,
    /// Taken when the task runs.
    pub(crate) work: Option<Work>,
    /// The stored body, for a child process of the process executor to decode again.
    pub(crate) body: Box<str>,
}

/// A task's stored retry options.
#[derive(Debug, Default)]
pub(crate) struct RetryPolicy {
    /// `retry_method`, when the task retries.
    pub(crate) method: Option<StoredRetry>,
    /// `retry_on`: only these exception names retry.
    pub(crate) retry_on: Option<Vec<String>>,
}

/// Decodes `body` (the JSON in `t:task:<id>`) and prepares the call.
pub(crate) fn prepare(registry: &Registry, config: &Config, id: &str, body: &[u8]) -> Prepared {
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
    /// The literal (`NaN`, `Infinity`, `-Infinity`) that Python's `json` writes for a
    /// non-finite float, when one outside a string is where `err` stopped the parse.
    fn python_literal(body: &str, err: &serde_json::Error) -> Option<&'static str> {
        if !err.is_syntax() {
            return None;
        }
        // serde_json's column counts bytes from the start of the line, from 1.
        let line_start: usize = body
            .split_inclusive('\n')
            .take(err.line().saturating_sub(1))
            .map(str::len)
            .sum();
        let stopped = line_start + err.column();
        let bytes = body.as_bytes();
        let (mut in_string, mut escaped) = (false, false);
        for (at, &byte) in bytes.iter().enumerate().take(stopped) {
            if in_string {
                (in_string, escaped) = (escaped || byte != b'"', !escaped && byte == b'\\');
                continue;
            }
            let rest = &bytes[at..];
            let literal = match byte {
                b'"' => {
                    in_string = true;
                    continue;
                }
                b'N' if rest.starts_with(b"NaN") => "NaN",
                b'I' if rest.starts_with(b"Infinity") => "Infinity",
                b'-' if rest.starts_with(b"-Infinity") => "-Infinity",
                _ => continue,
            };
            return Some(literal);
        }
        None
    }
    let task: StoredTask<'_> = match serde_json::from_str(body) {
        Ok(task) => task,
        Err(err) => {
            let text = match python_literal(body, &err) {
                Some(literal) => format!(
                    "the task body holds `{literal}`, a non-standard JSON literal (Python's \
                     json writes NaN, Infinity and -Infinity for non-finite floats), which \
                     tiger does not accept: {err}"
                ),
                None => format!("the task body is not valid task JSON: {err}"),
            };
            return reject(false, MALFORMED_TASK, text);
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
    let args_text = task.args.map(RawValue::get);
    let kwargs_text = task.kwargs.map(RawValue::get);
    let lock_id = if task.lock || task.lock_key.is_some() {
        match derived_id(&task.func, args_text, kwargs_text, task.lock_key.as_deref()) {
            Ok(lock_id) => Some(lock_id),
            Err(err) => {
                return reject(
                    task.unique,
                    MALFORMED_TASK,
                    format!("cannot derive the lock id: {err}"),
                );
            }
        }
    } else {
        None
    };
    let retry = retry_policy(&task, id);
    let hard_timeout = task
        .hard_timeout
        .or(entry.spec.hard_timeout)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|limit| !limit.is_zero())
        .unwrap_or(config.default_hard_timeout);
    let work = Args::parse(task.args, task.kwargs).and_then(|args| match entry.batch {
        Some(batch) => (batch.decode)(&args).map(Work::Item),
        None => (entry.call)(&args).map(Work::Body),
    });
    match work {
        Ok(work) => Prepared::Run(Plan {
            func: entry.spec.name,
            spec: entry.spec,
            entry,
            unique: task.unique,
            lock_id,
            hard_timeout,
            retry,
            keep_records: task.max_stored_executions,
            work: Some(work),
            body: body.into(),
        }),
        Err(err) => {
            let text = format!("the stored arguments do not fit `{}`: {err}", task.func);
            reject(task.unique, INVALID_ARGUMENTS, text)
        }
    }
}

/// The thread of a plain `fn` task that ran past its hard timeout and is still going.
pub(crate) type Straggler = tokio::task::JoinHandle<Result<Outcome, TaskFailure>>;

/// The stored retry options of `task`. A malformed `retry_method` is logged and treated as
/// none.
pub(crate) fn retry_policy(task: &StoredTask<'_>, id: &str) -> RetryPolicy {
    let method = task.retry_method.as_ref().and_then(|stored| match StoredRetry::from_json(stored) {
        Ok(method) => Some(method),
        Err(err) => {
            tracing::warn!(task_id = id, %err, "ignoring a malformed `retry_method`; the task will not be retried");
            None
        }
    });
    RetryPolicy {
        method,
        retry_on: task.retry_on.clone(),
    }
}

/// Runs a prepared call to its outcome inside `scope` (what `current_task()` and `delay`
/// see), for at most `limit`. A panic is caught and becomes a failure. A plain `fn` runs on
/// Tokio's blocking pool so it never stalls the async threads.
///
/// At the limit an `async fn` is cancelled (dropped at its next await) and the run fails
/// with [`JobTimeout`]. A plain `fn` cannot be stopped from outside: the run fails with
/// [`JobTimeout`] all the same, and its thread, which goes on until the function returns, is
/// added to `stragglers` so the caller can keep the task's locks until then.
pub(crate) async fn run(
    body: Body,
    scope: Scope,
    limit: Duration,
    stragglers: &mut Vec<Straggler>,
) -> Outcome {
    let timed_out = || {
        let error = JobTimeout {
            seconds: limit.as_secs_f64(),
        };
        let traceback = format!("JobTimeoutException: {error}");
        TaskFailure {
            exception_name: JOB_TIMEOUT.to_owned(),
            traceback,
            error: Some(Box::new(error)),
        }
    };
    match body {
        Body::Future(future) => {
            match tokio::time::timeout(limit, current::scope(scope, CatchPanic { future })).await {
                Ok(outcome) => outcome,
                Err(_) => Err(timed_out()),
            }
        }
        Body::Blocking(call) => {
            let mut thread =
                tokio::task::spawn_blocking(move || current::blocking(scope, || guarded(call)));
            match tokio::time::timeout(limit, &mut thread).await {
                Ok(Ok(result)) => result.and_then(|outcome| outcome),
                Ok(Err(err)) => Err(TaskFailure::message(
                    PANIC,
                    format!("the task's thread ended early: {err}"),
                )),
                Err(_) => {
                    tracing::warn!(
                        ?limit,
                        "a plain fn task ran past its hard timeout; its thread keeps running until the function returns, and keeps the task's lock until then"
                    );
                    stragglers.push(thread);
                    Err(timed_out())
                }
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
