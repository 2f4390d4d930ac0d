//! What running a task gives back: [`Body`] is the call ready to run, [`TaskFailure`] what a
//! failed run reports, and [`TaskReturn`] turns the function's return value into either.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;

/// A boxed error, the shape every task error is turned into.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A task call with its arguments decoded, ready to run.
pub enum Body {
    /// An `async fn` task: polled on the worker's runtime.
    Future(Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>),
    /// A plain `fn` task: run on Tokio's blocking thread pool, off the async threads.
    Blocking(Box<dyn FnOnce() -> Outcome + Send + 'static>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Body::Future(_) => "Body::Future",
            Body::Blocking(_) => "Body::Blocking",
        })
    }
}

impl Body {
    /// Wraps the future of an `async fn` task.
    pub fn future<F: Future<Output = Outcome> + Send + 'static>(future: F) -> Body {
        Body::Future(Box::pin(future))
    }

    /// Wraps the call of a plain `fn` task.
    pub fn blocking<F: FnOnce() -> Outcome + Send + 'static>(call: F) -> Body {
        Body::Blocking(Box::new(call))
    }
}

/// The result of one run.
pub type Outcome = Result<(), TaskFailure>;

/// Why a run failed: what goes into the execution record.
#[derive(Debug)]
pub struct TaskFailure {
    /// `module:Name` of the error type (TaskTiger's `exception_name`).
    pub exception_name: String,
    /// The error and its chain of sources (or the panic message and backtrace).
    pub traceback: String,
    /// The error itself, when the task returned one.
    pub error: Option<BoxError>,
}

impl TaskFailure {
    /// A failure that carries only text (panics, undecodable tasks).
    pub(crate) fn message(exception_name: &str, traceback: String) -> TaskFailure {
        TaskFailure {
            exception_name: exception_name.to_owned(),
            traceback,
            error: None,
        }
    }

    /// The first line of the traceback, for logs.
    pub fn summary(&self) -> &str {
        self.traceback.lines().next().unwrap_or("")
    }
}

/// A return type a task function may have: `()` or `Result<T, E>` with an error that
/// converts into `Box<dyn Error + Send + Sync>` (any `std::error::Error`, `anyhow::Error`,
/// `String`, `&'static str`). The value inside `Ok` is ignored, as in TaskTiger.
#[diagnostic::on_unimplemented(
    message = "a tiger task must return `()` or `Result<T, E>` where `E` converts into `Box<dyn Error + Send + Sync>`",
    label = "this return type"
)]
pub trait TaskReturn {
    /// Converts the value the function returned.
    fn into_outcome(self) -> Outcome;
}

impl TaskReturn for () {
    fn into_outcome(self) -> Outcome {
        Ok(())
    }
}

impl<T, E: Into<BoxError>> TaskReturn for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        self.map(drop).map_err(|err| {
            let exception_name = exception_name(std::any::type_name::<E>());
            let error: BoxError = err.into();
            TaskFailure {
                traceback: error_chain(&exception_name, &*error),
                exception_name,
                error: Some(error),
            }
        })
    }
}

/// The error a task fails with when it runs past its hard timeout. Stored with TaskTiger's
/// name, `tasktiger.exceptions:JobTimeoutException`, so `retry_on = [tiger::JobTimeout]`
/// and Python's `retry_on=[JobTimeoutException]` mean the same.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the task ran longer than its hard timeout of {seconds} s")]
pub struct JobTimeout {
    /// The limit, in seconds.
    pub seconds: f64,
}

/// TaskTiger's name for [`JobTimeout`].
pub(crate) const JOB_TIMEOUT: &str = "tasktiger.exceptions:JobTimeoutException";

/// Returned by a task (as its error) to ask to be retried, whatever its retry options:
/// TaskTiger's `RetryException`. The delay comes from [`Retry::method`], else the task's
/// retry method, else [`Config::default_retry_method`](crate::Config::default_retry_method).
///
/// ```
/// # use std::time::Duration;
/// #[tiger::task]
/// async fn poll_upstream(job: u64) -> Result<(), tiger::Retry> {
///     let ready = false; // ask the upstream service
///     if !ready {
///         // Try again in 30 s, at most 10 times; then drop the task quietly.
///         return Err(tiger::Retry::new().method(tiger::fixed(30.0, 10)).log_error(false));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("the task asked to be retried")]
pub struct Retry {
    pub(crate) method: Option<crate::RetryMethod>,
    pub(crate) log_error: bool,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::new()
    }
}

impl Retry {
    /// A retry with the task's own method.
    pub fn new() -> Retry {
        Retry {
            method: None,
            log_error: true,
        }
    }

    /// Retries with `method` instead of the task's.
    pub fn method(mut self, method: crate::RetryMethod) -> Retry {
        self.method = Some(method);
        self
    }

    /// With `false`, a task out of retries is dropped with a warning instead of moving to the
    /// error state.
    pub fn log_error(mut self, log_error: bool) -> Retry {
        self.log_error = log_error;
        self
    }
}

/// TaskTiger's name for [`Retry`].
pub(crate) const RETRY: &str = "tasktiger.exceptions:RetryException";

/// The stored `exception_name` of error type `E`.
pub fn exception_name_of<E: ?Sized>() -> String {
    exception_name(std::any::type_name::<E>())
}

/// Whether `error` or one of its sources is an `E`. An `std::io::Error` made from another
/// error (`io::Error::other(e)`) counts `e` as its source, although `io::Error::source`
/// skips it.
pub fn chain_has<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<E>() {
            return true;
        }
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if wrapped.is_some_and(|inner| chain_has::<E>(inner)) {
            return true;
        }
        next = error.source();
    }
    false
}

/// `exception_name` of errors that have no type of their own (`String`, `&str`,
/// `Box<dyn Error>`): Python's base class, so a Python `retry_on=[Exception]` matches them.
pub(crate) const UNTYPED_ERROR: &str = "builtins:Exception";

/// Called by generated code on the value a task returned.
pub fn outcome<R: TaskReturn>(returned: R) -> Outcome {
    returned.into_outcome()
}

/// `error` with its sources, one per line: `Name: message` (the type's own name, as the
/// last line of a Python traceback has it), then `Caused by:` lines.
fn error_chain(exception_name: &str, error: &(dyn StdError + 'static)) -> String {
    let name = exception_name
        .rsplit_once(':')
        .map_or(exception_name, |(_, name)| name);
    let mut text = format!("{name}: {error}");
    let mut source = error.source();
    if source.is_some() {
        text.push_str("\n\nCaused by:");
    }
    let mut depth = 0;
    while let Some(cause) = source {
        let _ = write!(text, "\n    {depth}: {cause}");
        depth += 1;
        source = cause.source();
    }
    text
}

/// Turns a Rust type path into TaskTiger's `module:Name` shape: the last `::` outside angle
/// brackets becomes `:` (`my_app::mail::SendError` → `my_app::mail:SendError`). Error types
/// that say nothing (`String`, `&str`, `Box<dyn Error>`) become [`UNTYPED_ERROR`].
pub(crate) fn exception_name(type_name: &str) -> String {
    if type_name == std::any::type_name::<JobTimeout>() {
        return JOB_TIMEOUT.to_owned();
    }
    if type_name == std::any::type_name::<Retry>() {
        return RETRY.to_owned();
    }
    if ["alloc::string::String", "&str", "alloc::boxed::Box<dyn "]
        .iter()
        .any(|t| type_name.starts_with(t))
    {
        return UNTYPED_ERROR.to_owned();
    }
    let mut depth = 0usize;
    let mut split = None;
    let bytes = type_name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => split = Some(i),
            _ => {}
        }
    }
    match split {
        Some(i) => format!("{}:{}", &type_name[..i], &type_name[i + 2..]),
        None => type_name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("mail server said no")]
    struct Refused(#[source] std::io::Error);

    #[test]
    fn names_are_module_colon_type() {
        assert_eq!(
            exception_name("my_app::mail::SendError"),
            "my_app::mail:SendError"
        );
        assert_eq!(exception_name("anyhow::Error"), "anyhow:Error");
        assert_eq!(
            exception_name("my::Wrapper<other::Inner>"),
            "my:Wrapper<other::Inner>"
        );
        assert_eq!(exception_name("u8"), "u8");
        for untyped in [
            "alloc::string::String",
            "&str",
            "alloc::boxed::Box<dyn core::error::Error + Send + Sync>",
        ] {
            assert_eq!(exception_name(untyped), UNTYPED_ERROR);
        }
    }

    #[test]
    fn an_error_result_keeps_its_chain_and_type() {
        let result: Result<(), Refused> = Err(Refused(std::io::Error::other("timed out")));
        let failure = outcome(result).unwrap_err();
        assert!(
            failure.exception_name.ends_with(":Refused"),
            "{}",
            failure.exception_name
        );
        assert!(
            failure
                .traceback
                .starts_with("Refused: mail server said no\n\nCaused by:\n    0: timed out"),
            "{}",
            failure.traceback
        );
        assert!(failure.error.unwrap().downcast_ref::<Refused>().is_some());
        assert!(outcome(()).is_ok());
        assert!(outcome(Ok::<u8, String>(3)).is_ok());
        let untyped = outcome(Err::<(), _>("ninety-nine".to_owned())).unwrap_err();
        assert_eq!(
            (untyped.exception_name.as_str(), untyped.traceback.as_str()),
            (UNTYPED_ERROR, "Exception: ninety-nine")
        );
    }
}
