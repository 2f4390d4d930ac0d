//! Running what a dequeue took: each task alone, or — on a queue listed in
//! [`Config::batch_queues`](crate::Config::batch_queues) — the popped tasks grouped by
//! function in order of first appearance. A `batch` function gets one call with every
//! task's arguments; other functions run their tasks one after another. Either way a
//! group shares its fate, as in TaskTiger: any failure fails every task of the group with
//! the same record, and each then retries or errors by its own options.

use std::collections::HashSet;
use std::time::Instant;

use tracing::Instrument;

use super::execute::{self, Plan, Prepared, Straggler, Work};
use super::finish::{self, Finished, RunTimes, Verdict};
use super::lease::Lease;
use super::locks::{self, HeldLock};
use super::periodic;
use crate::{
    Result, Tiger,
    task::{
        current::{CurrentTask, Scope},
        outcome::{Outcome, TaskFailure},
    },
    time::now,
};

/// One popped task.
pub(crate) struct Job {
    pub(crate) tiger: Tiger,
    pub(crate) queue: String,
    pub(crate) id: String,
    /// When it became active (Unix seconds), for the execution record.
    pub(crate) started: f64,
    /// Failed executions before this run (`executions_count`).
    pub(crate) failures: u32,
    /// This worker's claim on the task.
    pub(crate) lease: Lease,
}

/// Runs what one dequeue took. `None` stands for a task whose body was not found.
pub(crate) async fn run_group(members: Vec<(Job, Option<Prepared>)>) {
    let mut runs: Vec<Vec<(Job, Plan)>> = Vec::new();
    for (job, prepared) in members {
        match prepared {
            None => job.missing().await,
            Some(Prepared::Reject { unique, failure }) => job.reject(unique, &failure).await,
            Some(Prepared::Run(plan)) => {
                match runs.iter_mut().find(|group| group[0].1.func == plan.func) {
                    Some(group) => group.push((job, plan)),
                    None => runs.push(vec![(job, plan)]),
                }
            }
        }
    }
    for group in runs {
        run_function(group).await;
    }
}

/// Runs the tasks of one function: takes their locks, runs them, settles each.
async fn run_function(group: Vec<(Job, Plan)>) {
    let tiger = group[0].0.tiger.clone();
    let queue = group[0].0.queue.clone();
    let mut held: Vec<HeldLock> = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut ready: Vec<(Job, Plan)> = Vec::new();
    for (job, plan) in group {
        // Tasks of one group that share a lock id run together under one lock.
        if let Some(lock_id) = plan.lock_id.as_ref().filter(|id| !taken.contains(*id)) {
            match locks::acquire(&tiger, lock_id).await {
                Ok(Some(lock)) => {
                    taken.insert(lock_id.clone());
                    held.push(lock);
                }
                Ok(None) => {
                    let retry_at = now() + tiger.config().lock_retry.as_secs_f64();
                    tracing::info!(task_id = %job.id, %queue, "task lock is taken; trying again later");
                    let written = finish::defer(&tiger, job.finished(plan.unique), retry_at).await;
                    job.report(written);
                    continue;
                }
                Err(err) => {
                    job.report(Err(err));
                    continue;
                }
            }
        }
        ready.push((job, plan));
    }
    if let Some(spec) = ready.first().map(|(_, plan)| plan.spec) {
        if spec.schedule.is_some() {
            // Before the run, so that a failing run never stops the schedule.
            match periodic::queue_next(&tiger, spec, &queue).await {
                Ok(at) => tracing::debug!(func = spec.name, at, "queued the next period"),
                Err(err) => {
                    tracing::error!(func = spec.name, %err, "cannot queue the next period of a periodic task")
                }
            }
        }
        let mut stragglers = Vec::new();
        let outcome =
            locks::hold_during(&held, &tiger, execute_all(&mut ready, &mut stragglers)).await;
        let ended = now();
        for (job, plan) in ready {
            job.settle(&outcome, plan, ended).await;
        }
        if !stragglers.is_empty() && !held.is_empty() {
            // A plain fn past its hard timeout still runs: its locks stay held (and renewed)
            // until it returns, so no twin can start beside it.
            tokio::spawn(async move {
                locks::hold_during(&held, &tiger, futures_util::future::join_all(stragglers)).await;
                locks::release_all(held, &tiger).await;
            });
            return;
        }
    }
    locks::release_all(held, &tiger).await;
}

/// Runs the tasks: one call for a batch function, else one after another until one fails.
async fn execute_all(ready: &mut [(Job, Plan)], stragglers: &mut Vec<Straggler>) -> Outcome {
    // A batch task's work is always its decoded item (see `execute::prepare`).
    if let Some(batch) = ready[0].1.entry.batch {
        let items = ready
            .iter_mut()
            .filter_map(|(_, plan)| match plan.work.take() {
                Some(Work::Item(item)) => Some(item),
                _ => None,
            });
        let body = (batch.call)(items.collect());
        let limit = ready
            .iter()
            .map(|(_, plan)| plan.hard_timeout)
            .max()
            .unwrap_or_default();
        let (scope, span) = {
            let (job, plan) = &ready[0];
            (
                job.scope(plan),
                tracing::info_span!("batch", func = plan.func, queue = %job.queue, tasks = ready.len()),
            )
        };
        return timed(execute::run(body, scope, limit, stragglers))
            .instrument(span)
            .await;
    }
    for (job, plan) in ready.iter_mut() {
        let Some(Work::Body(body)) = plan.work.take() else {
            continue;
        };
        let span =
            tracing::info_span!("task", task_id = %job.id, func = plan.func, queue = %job.queue);
        timed(execute::run(
            body,
            job.scope(plan),
            plan.hard_timeout,
            stragglers,
        ))
        .instrument(span)
        .await?;
    }
    Ok(())
}

/// Logs the start and the end of a run with its duration.
async fn timed(run: impl std::future::Future<Output = Outcome>) -> Outcome {
    tracing::info!("task started");
    let clock = Instant::now();
    let outcome = run.await;
    let duration_ms = (clock.elapsed().as_micros() as f64) / 1000.0;
    match &outcome {
        Ok(()) => tracing::info!(duration_ms, "task succeeded"),
        Err(failure) => {
            tracing::info!(duration_ms, exception = %failure.exception_name, error = failure.summary(), "task failed")
        }
    }
    outcome
}

impl Job {
    fn finished(&self, unique: bool) -> Finished<'_> {
        Finished {
            queue: &self.queue,
            id: &self.id,
            unique,
            fence: None,
            lease: Some(self.lease.settle()),
        }
    }

    fn scope(&self, plan: &Plan) -> Scope {
        Scope {
            tiger: self.tiger.clone(),
            task: CurrentTask {
                id: self.id.clone(),
                queue: self.queue.clone(),
                func: plan.func,
                retries: self.failures,
            },
        }
    }

    /// Records the outcome of a run for this task: removed on success; on failure retried,
    /// kept in error or dropped, by its own options.
    async fn settle(self, outcome: &Outcome, plan: Plan, ended: f64) {
        let task = self.finished(plan.unique);
        let written = match outcome {
            Ok(()) => finish::succeed(&self.tiger, task).await,
            Err(failure) => {
                let n = self.failures.saturating_add(1);
                let verdict = finish::verdict(
                    &plan.retry,
                    plan.spec,
                    failure,
                    n,
                    self.tiger.config().default_retry_method,
                );
                let (id, queue, exception, error) = (
                    &self.id,
                    &self.queue,
                    &failure.exception_name,
                    failure.summary(),
                );
                match verdict {
                    Verdict::Retry(delay) => {
                        tracing::warn!(task_id = %id, %queue, exception, error, retry = n, retry_in_s = delay, "task failed; will retry")
                    }
                    Verdict::Error => {
                        tracing::error!(task_id = %id, %queue, exception, error, "task failed")
                    }
                    Verdict::Drop => {
                        tracing::warn!(task_id = %id, %queue, exception, error, "task failed and is out of retries; dropped as it asked")
                    }
                }
                let times = RunTimes {
                    started: self.started,
                    failed: ended,
                };
                finish::fail(
                    &self.tiger,
                    task,
                    times,
                    failure,
                    verdict,
                    plan.keep_records,
                )
                .await
            }
        };
        self.report(written);
    }

    /// A task that cannot run goes to the error state with `failure`.
    async fn reject(&self, unique: bool, failure: &TaskFailure) {
        tracing::error!(
            task_id = %self.id,
            queue = %self.queue,
            exception = %failure.exception_name,
            error = failure.summary(),
            "task cannot run; moved to the error state"
        );
        let times = RunTimes {
            started: self.started,
            failed: now(),
        };
        let written = finish::fail(
            &self.tiger,
            self.finished(unique),
            times,
            failure,
            Verdict::Error,
            None,
        )
        .await;
        self.report(written);
    }

    /// `MGET` found no body: either the key is gone (nothing can run; the id is removed, as
    /// TaskTiger does) or it holds something other than a string (kept, and the task goes to
    /// the error state saying so).
    async fn missing(&self) {
        let written = match finish::key_type(&self.tiger, &self.id).await {
            Ok(kind) if kind == "none" => {
                tracing::error!(task_id = %self.id, queue = %self.queue, "task body not found; removing the id from the queue");
                finish::succeed(&self.tiger, self.finished(false)).await
            }
            Ok(kind) => {
                let text = format!("the task key holds a Redis {kind}, not a JSON string");
                return self
                    .reject(false, &TaskFailure::message(execute::MALFORMED_TASK, text))
                    .await;
            }
            Err(err) => Err(err),
        };
        self.report(written);
    }

    fn report(&self, written: Result<bool>) {
        match written {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                task_id = %self.id,
                queue = %self.queue,
                "task was no longer active when it finished (moved by another worker or an operator); result not recorded"
            ),
            Err(err) => tracing::error!(
                task_id = %self.id,
                queue = %self.queue,
                %err,
                "cannot record the task's result; it stays active until recovered"
            ),
        }
    }
}
