//! [`Delay`]: what `my_task::delay(...)` returns. Awaiting it writes the task to Redis.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use serde_json::value::RawValue;

use crate::{
    Error, Result, Tiger,
    keys::State,
    task::{TaskId, TaskSpec, current, stored::NewTask},
    time::now,
};

/// A task call waiting to be enqueued. Set per-call options on it, then `.await` it:
///
/// ```no_run
/// # #[tiger::task(queue = "emails")]
/// # async fn send_welcome(user_id: u64) {}
/// # async fn demo(tiger: tiger::Tiger) -> tiger::Result<()> {
/// send_welcome::delay(42).await?;                               // attribute options
/// send_welcome::delay(42).queue("emails.bulk").on(&tiger).await?; // per-call options
/// # Ok(()) }
/// ```
///
/// Enqueueing is one round trip: a `MULTI` of `SET` (the JSON), `ZADD NX` (the queue),
/// `SADD` (the queue set) and `PUBLISH` (wake idle workers).
#[must_use = "a `Delay` enqueues nothing until it is awaited"]
#[derive(Debug)]
pub struct Delay {
    spec: &'static TaskSpec,
    args: std::result::Result<Option<Box<RawValue>>, serde_json::Error>,
    queue: Option<String>,
    tiger: Option<Tiger>,
}

impl Delay {
    /// A call of the task `spec` with arguments already written as JSON. Generated code calls
    /// this; use `my_task::delay(...)`.
    #[doc(hidden)]
    pub fn new(
        spec: &'static TaskSpec,
        args: std::result::Result<Option<Box<RawValue>>, serde_json::Error>,
    ) -> Delay {
        Delay {
            spec,
            args,
            queue: None,
            tiger: None,
        }
    }

    /// Enqueues on `queue` instead of the attribute's queue (or the default queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Delay {
        self.queue = Some(queue.into());
        self
    }

    /// Enqueues through `tiger`. Without it, `delay` uses the handle of the worker running the
    /// current task (so follow-up tasks reach the same Redis and prefix), else the
    /// process-wide handle ([`Tiger::global`]).
    pub fn on(mut self, tiger: &Tiger) -> Delay {
        self.tiger = Some(tiger.clone());
        self
    }

    async fn enqueue(self) -> Result<TaskId> {
        let args = self.args.map_err(|source| Error::Serialize {
            task: self.spec.name.to_owned(),
            source,
        })?;
        let tiger = match self.tiger.or_else(current::current) {
            Some(tiger) => tiger,
            None => Tiger::global().await?,
        };
        let config = tiger.config();
        let queue = match (&self.queue, self.spec.queue) {
            (Some(queue), _) => queue.as_str(),
            (None, Some(queue)) => queue,
            (None, None) => config.default_queue.as_str(),
        };
        if queue.is_empty() {
            return Err(Error::Config(format!(
                "`{}` was given an empty queue name",
                self.spec.name
            )));
        }
        let id = TaskId::random();
        let now = now();
        let json = serde_json::to_string(&NewTask {
            id: id.as_str(),
            func: self.spec.name,
            args: args.as_deref(),
            time_last_queued: now,
            scheduled_at: now,
        })
        .map_err(|source| Error::Serialize {
            task: self.spec.name.to_owned(),
            source,
        })?;

        let keys = tiger.keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg(keys.state_set(State::Queued))
            .arg(queue)
            .ignore()
            .cmd("SET")
            .arg(keys.task(id.as_str()))
            .arg(json)
            .ignore()
            .cmd("ZADD")
            .arg(keys.queue(State::Queued, queue))
            .arg("NX")
            .arg(now)
            .arg(id.as_str())
            .ignore();
        if config.publish_queued_tasks {
            pipe.cmd("PUBLISH").arg(keys.activity()).arg(queue).ignore();
        }
        pipe.query_async::<()>(&mut tiger.connection()).await?;
        tracing::debug!(task_id = %id, func = self.spec.name, queue, "task queued");
        Ok(id)
    }
}

impl IntoFuture for Delay {
    type Output = Result<TaskId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<TaskId>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.enqueue())
    }
}
