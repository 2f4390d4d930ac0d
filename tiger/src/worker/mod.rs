//! The worker: [`Worker`] takes tasks off the queues it serves and runs up to `concurrency`
//! of them at once.
//!
//! One pass of the loop:
//! 1. absorb the queues the activity channel announced (and re-read `t:queued` when asked
//!    to, or every [`Config::queue_refresh_interval`](crate::Config::queue_refresh_interval));
//! 2. while slots are free, visit the known queues in random order and move as many tasks
//!    as there are free slots from queued to active in one script call, then fetch their
//!    bodies with one `MGET`; a queue that gives nothing is forgotten until announced again;
//! 3. run each task in its own Tokio task (a plain `fn` on the blocking pool); when it ends,
//!    one script call removes it (success) or records the failure and moves it to error;
//! 4. otherwise wait for whichever comes first: a finished task, an announcement, the
//!    refresh or heartbeat timer, or shutdown.
//!
//! Failure records use these `exception_name`s for failures that are not the task's own:
//! [`PANIC`], [`MALFORMED_TASK`], [`UNKNOWN_TASK`], [`INVALID_ARGUMENTS`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::task::JoinSet;

use crate::{
    Error, Result, Tiger,
    client::{self, retrying},
    keys::State,
    scripts,
    task::registry::Registry,
    time::now,
};

pub(crate) mod execute;
mod finish;
mod lease;
mod locks;
mod periodic;
mod queues;
mod recover;
mod run;
mod sweep;

pub use execute::{INVALID_ARGUMENTS, MALFORMED_TASK, PANIC, UNKNOWN_TASK};
pub use queues::queue_matches;

use lease::Lease;
use queues::{Activity, QueueFilter};
use run::Job;

/// How long the loop backs off after Redis failed a dequeue.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// A worker, configured with a builder and started with [`Worker::run`].
///
/// ```no_run
/// # async fn demo() -> tiger::Result<()> {
/// let tiger = tiger::Tiger::connect("redis://127.0.0.1:6379").await?;
/// tiger::Worker::new(tiger)
///     .queues(["emails"])
///     .exclude_queues(["emails.bulk"])
///     .concurrency(4)
///     .run()
///     .await
/// # }
/// ```
#[must_use = "a `Worker` does nothing until `run` is awaited"]
pub struct Worker {
    tiger: Tiger,
    only: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    concurrency: usize,
    once: bool,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("only", &self.only)
            .field("exclude", &self.exclude)
            .field("concurrency", &self.concurrency)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The default number of tasks one worker runs at once.
    pub const DEFAULT_CONCURRENCY: usize = 10;

    /// A worker on `tiger`'s Redis, serving every queue not excluded by the config.
    pub fn new(tiger: Tiger) -> Worker {
        Worker {
            tiger,
            only: None,
            exclude: None,
            concurrency: Self::DEFAULT_CONCURRENCY,
            once: false,
            shutdown: None,
        }
    }

    /// Serve only these queues and their subqueues (`-q`). Overrides
    /// [`Config::only_queues`](crate::Config::only_queues).
    pub fn queues<I: IntoIterator<Item = S>, S: Into<String>>(mut self, queues: I) -> Worker {
        self.only = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Skip these queues and their subqueues unless a more specific `queues` entry names
    /// them (`-e`). Overrides [`Config::exclude_queues`](crate::Config::exclude_queues).
    pub fn exclude_queues<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        queues: I,
    ) -> Worker {
        self.exclude = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// How many tasks run at once inside this process (default 10).
    pub fn concurrency(mut self, tasks: usize) -> Worker {
        self.concurrency = tasks;
        self
    }

    /// Drain: run what is queued, then return once the queues are empty and nothing is in
    /// flight.
    pub fn once(mut self, once: bool) -> Worker {
        self.once = once;
        self
    }

    /// Stop when `signal` resolves: take no more tasks, let those in flight finish, return.
    /// [`run_worker`](crate::run_worker) wires this to SIGINT and SIGTERM.
    pub fn shutdown_on<F: Future<Output = ()> + Send + 'static>(mut self, signal: F) -> Worker {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Runs until shutdown (or, with [`once`](Worker::once), until drained).
    ///
    /// Fails at start when two tasks share a name, the settings are invalid, or Redis cannot
    /// be reached. Once running, a failed Redis call is logged and retried; task failures
    /// never stop the worker.
    pub async fn run(self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        let registry = Arc::new(Registry::load()?);
        let config = self.tiger.config();
        let filter = QueueFilter {
            only: self
                .only
                .clone()
                .unwrap_or_else(|| config.only_queues.clone()),
            exclude: self
                .exclude
                .clone()
                .unwrap_or_else(|| config.exclude_queues.clone()),
        };
        execute::install_panic_hook();
        periodic::queue_missing(&self.tiger, &registry, &filter).await?;
        let queues = filter.queued(&self.tiger).await?;
        tracing::debug!(names = ?registry.names(), "registered tasks");
        tracing::info!(
            tasks = registry.len(),
            queues = ?filter.only,
            exclude_queues = ?filter.exclude,
            concurrency = self.concurrency,
            once = self.once,
            prefix = self.tiger.keys().prefix(),
            "worker ready"
        );
        let activity = Activity::start(self.tiger.clone(), filter.clone());
        let mut state = Loop {
            tiger: self.tiger,
            registry,
            group: sweep::worker_group(&filter),
            filter,
            queues,
            activity,
            in_flight: JoinSet::new(),
            running: HashMap::new(),
            concurrency: self.concurrency,
        };
        state.run(self.once, self.shutdown).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// One Tokio task in flight: the tasks it runs, for heartbeats, and how to cancel it.
struct InFlight {
    queue: String,
    leases: Vec<(String, Lease)>,
    abort: tokio::task::AbortHandle,
}

/// The worker's state while it runs.
struct Loop {
    tiger: Tiger,
    registry: Arc<Registry>,
    filter: QueueFilter,
    /// TaskTiger's worker group name (same queue filters), for the scheduled-sweep lock.
    group: String,
    /// Queues that may have queued tasks.
    queues: HashSet<String>,
    activity: Activity,
    in_flight: JoinSet<()>,
    /// Queue and ids of the tasks each Tokio task in flight runs, for heartbeats.
    running: HashMap<tokio::task::Id, InFlight>,
    concurrency: usize,
}

impl Loop {
    async fn run(
        &mut self,
        once: bool,
        shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) {
        let config = self.tiger.config().clone();
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut refresh = tokio::time::interval(config.queue_refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        let mut heartbeat = tokio::time::interval(config.active_task_update_timer);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut sweep = tokio::time::interval(config.select_timeout.max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut backoff_until: Option<tokio::time::Instant> = None;
        // Due scheduled tasks count as queued work, also for `once`.
        self.run_sweeps().await;
        sweep.reset();

        loop {
            if !stopping && backoff_until.is_none_or(|until| until <= tokio::time::Instant::now()) {
                backoff_until = None;
                self.absorb_activity().await;
                match self.take_work().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(%err, retry_in = ?REDIS_BACKOFF, "cannot take tasks from Redis");
                        backoff_until = Some(tokio::time::Instant::now() + REDIS_BACKOFF);
                    }
                }
                if once
                    && self.queues.is_empty()
                    && self.in_flight.is_empty()
                    && backoff_until.is_none()
                {
                    break;
                }
            }
            if stopping && self.in_flight.is_empty() {
                break;
            }
            let has_room = self.in_flight.len() < self.concurrency;
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    stopping = true;
                    tracing::info!(in_flight = self.in_flight.len(), "shutting down: taking no more tasks, finishing those in flight");
                }
                Some(done) = self.in_flight.join_next_with_id() => self.forget(done),
                () = self.activity.notified(), if !stopping && has_room => {}
                _ = refresh.tick(), if !stopping => self.refresh_queues().await,
                                _ = heartbeat.tick(), if !self.running.is_empty() => self.heartbeat().await,
                _ = sweep.tick(), if !stopping => self.run_sweeps().await,
                () = sleep_until(backoff_until), if backoff_until.is_some() && !stopping => {}
            }
        }
    }

    /// Adds the queues the activity channel announced; re-reads `t:queued` when the listener
    /// (re)subscribed.
    async fn absorb_activity(&mut self) {
        let pending = self.activity.take();
        self.queues.extend(pending.queues);
        if pending.resync {
            self.refresh_queues().await;
        }
    }

    /// The periodic chores: moves due scheduled tasks to their queues (see [`sweep`]),
    /// remembering those queues, and recovers lost tasks (see [`recover`]).
    async fn run_sweeps(&mut self) {
        match sweep::sweep(&self.tiger, &self.filter, &self.group).await {
            Ok(queues) => self.queues.extend(queues),
            Err(err) => tracing::warn!(%err, "cannot move due scheduled tasks"),
        }
        if let Err(err) = recover::sweep(&self.tiger, &self.registry).await {
            tracing::warn!(%err, "cannot look for lost tasks");
        }
    }

    async fn refresh_queues(&mut self) {
        match retrying("read the queue set", || self.filter.queued(&self.tiger)).await {
            Ok(queues) => self.queues.extend(queues),
            Err(err) => tracing::warn!(%err, "cannot read the queue set"),
        }
    }

    /// Fills free slots from the known queues. `Ok(true)` if any task was started. A queue
    /// whose own keys make Redis refuse (a key of the wrong type, say) is logged and set
    /// aside until announced again, so it does not hold up the others; a connection problem
    /// fails the whole pass.
    async fn take_work(&mut self) -> Result<bool> {
        let mut free = self.concurrency.saturating_sub(self.in_flight.len());
        if free == 0 || self.queues.is_empty() {
            return Ok(false);
        }
        let mut order: Vec<String> = self.queues.iter().cloned().collect();
        order.shuffle(&mut rand::rng());
        let mut started = false;
        for queue in order {
            if free == 0 {
                break;
            }
            let batch = self.tiger.config().batch_size(&queue);
            let limit = if batch > 1 { batch } else { free };
            match self.dequeue(&queue, limit).await {
                Ok(0) => {
                    self.queues.remove(&queue);
                }
                Ok(taken) => {
                    free -= if batch > 1 { 1 } else { taken };
                    started = true;
                }
                Err(err) if client::is_transient(&err) => return Err(err),
                Err(err) => {
                    tracing::error!(%queue, %err, "cannot take tasks from this queue; skipping it until it is announced again");
                    self.queues.remove(&queue);
                }
            }
        }
        Ok(started)
    }

    /// Moves up to `limit` tasks of `queue` to active and starts them; returns how many.
    async fn dequeue(&mut self, queue: &str, limit: usize) -> Result<usize> {
        let started = now();
        let ids = scripts::dequeue(&self.tiger, queue, limit, started).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let taken = ids.len();
        let mut valid = Vec::with_capacity(taken);
        for id in ids {
            match String::from_utf8(id) {
                Ok(id) => valid.push(id),
                Err(err) => {
                    let id = err.into_bytes();
                    tracing::error!(%queue, id = %String::from_utf8_lossy(&id), "a task id that is not UTF-8; moving it to the error state");
                    if let Err(err) = finish::quarantine(&self.tiger, queue, &id).await {
                        tracing::error!(%queue, %err, "cannot move the id to the error state; it stays active");
                    }
                }
            }
        }
        // Bodies and failure counts in one round trip: the count decides the retry delay.
        let keys = self.tiger.keys();
        let mut task_keys: Vec<String> = valid.iter().map(|id| keys.task(id)).collect();
        task_keys.extend(valid.iter().map(|id| keys.executions_count(id)));
        let read = retrying("read the task bodies", || async {
            Ok(redis::cmd("MGET")
                .arg(&task_keys)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut self.tiger.connection())
                .await?)
        });
        let bodies = match read.await {
            Ok(bodies) => bodies,
            Err(err) => {
                tracing::error!(%queue, ids = ?valid, %err, "took tasks but cannot read them; they stay active until recovered");
                return Err(err);
            }
        };
        let (bodies, counts) = bodies.split_at(valid.len());
        let mut members = Vec::with_capacity(valid.len());
        let mut leases = Vec::with_capacity(valid.len());
        for ((id, body), count) in valid.iter().zip(bodies).zip(counts) {
            let failures = count
                .as_deref()
                .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                .unwrap_or(0);
            let lease = Lease::new(started);
            leases.push((id.clone(), lease.clone()));
            let job = Job {
                tiger: self.tiger.clone(),
                queue: queue.to_owned(),
                id: id.clone(),
                started,
                failures,
                lease,
            };
            let prepared = body
                .as_deref()
                .map(|body| execute::prepare(&self.registry, self.tiger.config(), id, body));
            members.push((job, prepared));
        }
        // A batch queue runs what it took as one group (one slot); others, task by task.
        if self.tiger.config().batch_size(queue) > 1 {
            let abort = self.in_flight.spawn(run::run_group(members));
            self.running.insert(
                abort.id(),
                InFlight {
                    queue: queue.to_owned(),
                    leases,
                    abort,
                },
            );
        } else {
            for (member, lease) in members.into_iter().zip(leases) {
                let abort = self.in_flight.spawn(run::run_group(vec![member]));
                self.running.insert(
                    abort.id(),
                    InFlight {
                        queue: queue.to_owned(),
                        leases: vec![lease],
                        abort,
                    },
                );
            }
        }
        Ok(taken)
    }

    fn forget(&mut self, done: std::result::Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(err) => {
                tracing::error!(%err, "a task's bookkeeping ended abnormally");
                err.id()
            }
        };
        self.running.remove(&id);
    }

    /// Refreshes the active score of every task in flight, so no worker takes them for
    /// abandoned. `ZADD XX` never puts back a task that has already left the active set.
    async fn heartbeat(&mut self) {
        let now = now();
        let keys = self.tiger.keys();
        // Tasks already settling are left alone: their result is being written.
        let mut claims: Vec<(String, &str, scripts::Claim)> = Vec::new();
        let mut owners: Vec<&InFlight> = Vec::new();
        for running in self.running.values() {
            for (id, lease) in &running.leases {
                if let Some(claim) = lease.renew(now) {
                    claims.push((
                        keys.queue(State::Active, &running.queue),
                        id.as_str(),
                        claim,
                    ));
                    owners.push(running);
                }
            }
        }
        if claims.is_empty() {
            return;
        }
        match scripts::heartbeat(&self.tiger, &claims, now).await {
            Ok(flags) => {
                for (((_, id, _), running), kept) in claims.iter().zip(owners).zip(flags) {
                    if !kept {
                        // Recovered (and perhaps running elsewhere): stop our copy so it
                        // does no more work. A plain fn's thread cannot be stopped.
                        tracing::warn!(task_id = id, queue = %running.queue, "task is no longer this worker's (recovered after its heartbeat lapsed); cancelling this run");
                        running.abort.abort();
                    }
                }
            }
            Err(err) => tracing::warn!(%err, tasks = claims.len(), "heartbeat failed"),
        }
    }
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
