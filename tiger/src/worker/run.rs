//! Running what a dequeue took: each task alone, or — on a queue listed in
//! [`Config::batch_queues`](crate::Config::batch_queues) — the popped tasks grouped by
//! function in order of first appearance. A `batch` function gets one call with every
//! task's arguments; other functions run their tasks one after another. Either way a
//! group shares its fate, as in TaskTiger: any failure fails every task of the group with
//! the same record, and each then retries or errors by its own options.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use tracing::Instrument;

use super::Executor;
use super::child;
use super::execute::{self, Plan, Prepared, Straggler, Work};
use super::finish::{self, FailureRecord, Finished, RunTimes, Verdict};
use super::lease::Lease;
use super::locks::{self, HeldLock};
use super::periodic;
use crate::{
    Result, Tiger,
    task::{
        current::{CurrentTask, Scope},
        outcome::{Body, JOB_TIMEOUT, JobTimeout, Outcome, TaskFailure},
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
    /// Writes the success of the worker's tasks, many at a time.
    pub(crate) finisher: finish::Finisher,
    /// Counts the run's end for the dashboard.
    pub(crate) counter: crate::presence::Counter,
}

/// Why the worker stops a group in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
    /// The shutdown grace period is over.
    Shutdown,
    /// A second signal: stop at once.
    Now,
    /// A heartbeat found that another worker holds one of its tasks.
    Lost,
}

/// How the worker steers a group in flight.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// Turns true when the group must stop: at the end of the shutdown grace period, or when
    /// a heartbeat found that another worker holds one of its tasks. What is still this
    /// worker's is then handed back (see [`Job::hand_back`]).
    pub(crate) stop: watch::Receiver<Option<Halt>>,
    /// Set when the thread of a plain `fn` outlived its hard timeout: the worker should
    /// restart so the thread does not run on for ever.
    pub(crate) stuck: Arc<AtomicBool>,
    /// The shutdown grace period, for the record of an interrupted run.
    pub(crate) grace: std::time::Duration,
    /// Where the tasks run.
    pub(crate) executor: Executor,
}

impl Control {
    fn stopped(&self) -> bool {
        self.stop.borrow().is_some()
    }

    async fn until_stopped(&self) -> Halt {
        let mut stop = self.stop.clone();
        // An error means the worker dropped the sender: it never asks to stop then.
        match stop.wait_for(Option::is_some).await.map(|halt| *halt) {
            Ok(Some(halt)) => halt,
            _ => std::future::pending().await,
        }
    }
}

/// Runs what one dequeue took. `None` stands for a task whose body was not found.
pub(crate) async fn run_group(members: Vec<(Job, Option<Prepared>)>, control: Control) {
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
        run_function(group, &control).await;
    }
}

/// Runs the tasks of one function: takes their locks, runs them, settles each.
async fn run_function(group: Vec<(Job, Plan)>, control: &Control) {
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
        if control.stopped() {
            // Stopping before the run began: the tasks go back as they were.
            for (job, plan) in ready {
                job.hand_back(plan.unique).await;
            }
            locks::release_all(held, &tiger).await;
            return;
        }
        let mut stragglers = Vec::new();
        let in_child = (control.executor == Executor::Process).then(|| child::prepare(&ready));
        // A plain fn's thread cannot be stopped: if the run is cut short, it runs on.
        let threads = in_child.is_none()
            && ready
                .iter()
                .any(|(_, plan)| matches!(plan.work, Some(Work::Body(Body::Blocking(_)))));
        let work = async {
            match in_child {
                Some(group) => child::run(group).await,
                None => Ending::Ran(execute_all(&mut ready, &mut stragglers).await),
            }
        };
        let run = locks::hold_during(&held, &tiger, work);
        let (ending, interrupted) = tokio::select! {
            ending = run => match ending {
                Some(ending) => (ending, false),
                None => (Ending::Ran(Err(interrupted(LOCK_LOST))), true),
            },
            halt = control.until_stopped() => {
                (Ending::Ran(Err(interrupted(&halted(halt, control)))), true)
            }
        };
        let ended = now();
        for (i, (job, plan)) in ready.into_iter().enumerate() {
            match &ending {
                Ending::Ran(outcome) => job.settle(outcome, plan, ended, interrupted).await,
                Ending::Reported(Ok(())) => job.settle(&Ok(()), plan, ended, false).await,
                Ending::Reported(Err((record, verdicts))) => {
                    let verdict = verdicts.get(i).copied().unwrap_or(Verdict::Error);
                    job.settle_reported(record, verdict, plan, ended).await;
                }
            }
        }
        if interrupted && threads {
            // The thread goes on beside a run that may start elsewhere: keep its locks (they
            // lapse by themselves) and restart the worker to end it.
            tracing::warn!(%queue, "a plain fn task was cut short but its thread runs on; its locks are kept until they lapse, and the worker restarts");
            control.stuck.store(true, Ordering::Relaxed);
            drop(held);
            return;
        }
        if !stragglers.is_empty() {
            control.stuck.store(true, Ordering::Relaxed);
        }
        if !stragglers.is_empty() && !held.is_empty() {
            // A plain fn past its hard timeout still runs: its locks stay held (and renewed)
            // until it returns, so no twin can start beside it.
            tokio::spawn(async move {
                let _ =
                    locks::hold_during(&held, &tiger, futures_util::future::join_all(stragglers))
                        .await;
                locks::release_all(held, &tiger).await;
            });
            return;
        }
    }
    locks::release_all(held, &tiger).await;
}

/// How the run of a group ended.
pub(crate) enum Ending {
    /// Run here (or stopped, or its child process died): the parent decides each verdict.
    Ran(Outcome),
    /// Reported by the child process that ran it, with the verdict of each task.
    Reported(std::result::Result<(), (FailureRecord, Vec<Verdict>)>),
}

/// Runs the tasks: one call for a batch function, else one after another until one fails.
pub(crate) async fn execute_all(
    ready: &mut [(Job, Plan)],
    stragglers: &mut Vec<Straggler>,
) -> Outcome {
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
        let (scope, span, func, queue) = {
            let (job, plan) = &ready[0];
            (
                job.scope(plan),
                tracing::info_span!("batch", func = plan.func, queue = %job.queue, tasks = ready.len()),
                plan.func,
                job.queue.clone(),
            )
        };
        return timed(func, &queue, execute::run(body, scope, limit, stragglers))
            .instrument(span)
            .await;
    }
    for (job, plan) in ready.iter_mut() {
        let Some(Work::Body(body)) = plan.work.take() else {
            continue;
        };
        let span =
            tracing::info_span!("task", task_id = %job.id, func = plan.func, queue = %job.queue);
        timed(
            plan.func,
            &job.queue,
            execute::run(body, job.scope(plan), plan.hard_timeout, stragglers),
        )
        .instrument(span)
        .await?;
    }
    Ok(())
}

/// The failure of a run the worker stopped, saying why: a [`JobTimeout`], so that a task
/// that retries on timeouts is handed back to its queue. (When another worker holds the
/// task, the fenced write of this failure changes nothing.)
fn interrupted(why: &str) -> TaskFailure {
    TaskFailure {
        exception_name: JOB_TIMEOUT.to_owned(),
        traceback: format!(
            "JobTimeoutException: the worker stopped before the task finished: {why}; the run \
             was cancelled and its outcome is unknown"
        ),
        error: Some(Box::new(JobTimeout { seconds: 0.0 })),
    }
}

/// Why the worker stopped a run.
fn halted(halt: Halt, control: &Control) -> String {
    match halt {
        Halt::Shutdown => format!(
            "its shutdown grace period of {} s ran out",
            control.grace.as_secs_f64()
        ),
        Halt::Now => "a second signal asked the worker to stop at once".to_owned(),
        Halt::Lost => "another worker recovered the task after its heartbeat lapsed".to_owned(),
    }
}

/// Why a run stopped when its task lock was found lost.
const LOCK_LOST: &str = "its task lock expired or was taken by another worker";

/// Logs the start (at debug level) and the end of a run with its duration: one info line
/// per task; counts both in the metrics.
async fn timed(
    func: &'static str,
    queue: &str,
    run: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    tracing::debug!("task started");
    crate::metrics::started(func, queue);
    let clock = Instant::now();
    let outcome = run.await;
    let elapsed = clock.elapsed();
    crate::metrics::ended(func, queue, outcome.is_ok(), elapsed.as_secs_f64());
    let duration_ms = (elapsed.as_micros() as f64) / 1000.0;
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
    /// kept in error or dropped, by its own options. A run `interrupted` by the worker
    /// that would retry goes straight back to its queue instead of waiting out the retry
    /// delay.
    async fn settle(self, outcome: &Outcome, plan: Plan, ended: f64, interrupted: bool) {
        match outcome {
            Ok(()) => {
                self.counter.ended(false);
                let written = self
                    .finisher
                    .succeed(&self.tiger, self.finished(plan.unique))
                    .await;
                self.report(written);
            }
            Err(failure) => {
                let verdict = match self.verdict(failure, &plan) {
                    Verdict::Retry(_) if interrupted => Verdict::Requeue,
                    verdict => verdict,
                };
                let record = FailureRecord::of(failure);
                self.settle_reported(&record, verdict, plan, ended).await;
            }
        }
    }

    /// What a failure of this run means for the task, by its own options.
    pub(crate) fn verdict(&self, failure: &TaskFailure, plan: &Plan) -> Verdict {
        finish::verdict(
            &plan.retry,
            plan.spec,
            failure,
            self.failures.saturating_add(1),
            self.tiger.config().default_retry_method,
        )
    }

    /// Records a failed run described by `failure` and applies `verdict`.
    async fn settle_reported(
        self,
        failure: &FailureRecord,
        verdict: Verdict,
        plan: Plan,
        ended: f64,
    ) {
        self.counter.ended(true);
        let times = RunTimes {
            started: self.started,
            failed: ended,
        };
        let written = finish::fail_recorded(
            &self.tiger,
            self.finished(plan.unique),
            times,
            failure,
            verdict,
            plan.keep_records,
        )
        .await;
        // Said once the outcome is written: a run whose task is no longer this worker's
        // (recovered elsewhere) is logged by `report` alone.
        if !matches!(written, Ok(true)) {
            return self.report(written);
        }
        let n = self.failures.saturating_add(1);
        let (id, queue, exception, error) = (
            &self.id,
            &self.queue,
            &failure.exception_name,
            failure.traceback.lines().next().unwrap_or_default(),
        );
        if matches!(verdict, Verdict::Retry(_) | Verdict::Requeue) {
            crate::metrics::retried(plan.func, queue);
        }
        match verdict {
            Verdict::Retry(delay) => {
                tracing::warn!(task_id = %id, %queue, exception, error, retry = n, retry_in_s = delay, "task failed; will retry")
            }
            Verdict::Requeue => {
                tracing::warn!(task_id = %id, %queue, exception, error, retry = n, "task interrupted before it finished; handed back to its queue")
            }
            Verdict::Error => {
                tracing::error!(task_id = %id, %queue, exception, error, "task failed; moved to the error state")
            }
            Verdict::Drop => {
                tracing::warn!(task_id = %id, %queue, exception, error, "task failed and is out of retries; dropped as it asked")
            }
        }
    }

    /// Puts a task that did not start back in its queue (at its dequeue time, so it keeps
    /// its place), without a record: the worker is stopping.
    async fn hand_back(&self, unique: bool) {
        tracing::info!(task_id = %self.id, queue = %self.queue, "handing back a task that did not start");
        let written = finish::requeue(&self.tiger, self.finished(unique), self.started).await;
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
        crate::metrics::started(crate::metrics::CANNOT_RUN, &self.queue);
        crate::metrics::ended(crate::metrics::CANNOT_RUN, &self.queue, false, 0.0);
        self.counter.ended(true);
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
