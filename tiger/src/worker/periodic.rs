//! Queues periodic tasks: at worker start, each one of the served queues that is not queued,
//! scheduled or running yet; before each run, the next period. See [`crate::schedule`].

use std::time::{Duration, UNIX_EPOCH};

use super::queues::QueueFilter;
use crate::{
    Delay, Error, Result, Tiger,
    keys::State,
    task::{TaskSpec, ids::derived_id, registry::Registry},
    time::now,
};

/// At start: queues the next period of every periodic task on a served queue that has no
/// copy queued, active or scheduled. A schedule that cannot be computed (a cron expression
/// that does not parse, or never matches) is logged and that task is skipped.
pub(crate) async fn queue_missing(
    tiger: &Tiger,
    registry: &Registry,
    filter: &QueueFilter,
) -> Result<()> {
    for spec in registry.specs().filter(|spec| spec.schedule.is_some()) {
        let queue = spec.queue.unwrap_or(&tiger.config().default_queue);
        if !filter.matches(queue) {
            continue;
        }
        let id = derived_id(spec.name, None, None, None)
            .map_err(|err| Error::Config(err.to_string()))?;
        let keys = tiger.keys();
        let mut pipe = redis::pipe();
        for state in [State::Queued, State::Active, State::Scheduled] {
            pipe.cmd("ZSCORE").arg(keys.queue(state, queue)).arg(&id);
        }
        let scores: Vec<Option<f64>> = pipe.query_async(&mut tiger.connection()).await?;
        if scores.iter().any(Option::is_some) {
            continue;
        }
        match queue_next(tiger, spec, queue).await {
            Ok(at) => tracing::info!(func = spec.name, %queue, at, "queued periodic task"),
            Err(Error::Config(err)) => {
                tracing::error!(func = spec.name, %queue, %err, "periodic task skipped")
            }
            // Python declared the same periodic task on another queue: one copy is enough,
            // and this worker's other work must not wait on it.
            Err(err @ Error::UniqueInAnotherQueue { .. }) => {
                tracing::warn!(func = spec.name, %queue, %err, "periodic task already queued for another queue; not queued here")
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Queues the period after now of the periodic task `spec` on `queue`; returns its time.
pub(crate) async fn queue_next(tiger: &Tiger, spec: &'static TaskSpec, queue: &str) -> Result<f64> {
    let schedule = spec
        .schedule
        .ok_or_else(|| Error::Config(format!("`{}` is not periodic", spec.name)))?;
    let at = schedule
        .next_after(now())
        .map_err(|err| Error::Config(format!("the schedule of `{}`: {err}", spec.name)))?;
    let when = UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
    Delay::new(spec, Ok(None))
        .queue(queue)
        .when(when)
        .on(tiger)
        .await?;
    Ok(at)
}
