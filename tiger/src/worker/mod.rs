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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::seq::IteratorRandom;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{
    Error, Result, Tiger,
    client::{self, retrying},
    keys::State,
    presence::{Presence, Reporter},
    scripts,
    task::registry::Registry,
    time::now,
};

mod child;
#[cfg(test)]
mod decode_props;
pub(crate) mod execute;
mod finish;
mod lease;
mod locks;
mod periodic;
mod queues;
mod recover;
mod run;
mod sweep;

pub use child::{CHILD_DIED, KILL_GRACE, serve_executor_child};
pub use execute::{INVALID_ARGUMENTS, MALFORMED_TASK, PANIC, UNKNOWN_TASK};
pub(crate) use finish::host;
pub use queues::queue_matches;

use lease::Lease;
use queues::{Activity, QueueFilter};
use run::{Control, Job};

/// How long the loop backs off after Redis failed a dequeue.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// How long the groups in flight get to hand their tasks back once told to; what is not
/// handed back by then stays active in Redis and is recovered later.
const HAND_BACK_TIME: Duration = Duration::from_secs(5);

/// The longest the loop waits for one heartbeat call (at most `ACTIVE_TASK_UPDATE_TIMER`).
const HEARTBEAT_WAIT: Duration = Duration::from_secs(2);

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a worker runs its tasks.
///
/// | | `Async` (default) | `Process` |
/// |---|---|---|
/// | runs a task | as a Tokio task in the worker (a plain `fn` on the blocking pool) | in a child process, one per task (or batch) |
/// | at the hard timeout | an `async fn` is cancelled at its next `.await`; a plain `fn` is recorded as timed out, its thread runs on, and the worker restarts itself to end it | the child cancels its own `async fn`; one that does not end within [`KILL_GRACE`] is killed (SIGKILL) |
/// | a crash (abort, segfault, out of memory) | takes the worker and every task in it down (recovered later as lost) | fails only that task, with a [`CHILD_DIED`] record |
/// | cost per task | none | starting a process (a few ms) |
///
/// Pick `Process` for tasks that block in code that cannot be cancelled, call native code,
/// or may exhaust memory; `Async` otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum Executor {
    /// In the worker's own Tokio runtime.
    #[default]
    Async,
    /// In a child process of the worker's program per task or batch.
    Process,
}

/// Why [`Worker::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// [`Worker::once`]: the queues were empty and nothing was in flight.
    Drained,
    /// The [`Worker::shutdown_on`] signal (or [`Worker::hand_back_on`]) came.
    Shutdown,
    /// [`Worker::exit_after`] passed.
    ExitAfter,
    /// The thread of a plain `fn` task ran past its hard timeout and cannot be stopped: the
    /// worker stopped so that its process can be restarted (which
    /// [`run_worker`](crate::run_worker) does) instead of leaking the thread.
    StuckThread,
}

impl Stopped {
    /// Whether the process should start again (by re-executing itself): after
    /// [`Stopped::ExitAfter`] and [`Stopped::StuckThread`].
    pub fn wants_restart(self) -> bool {
        matches!(self, Stopped::ExitAfter | Stopped::StuckThread)
    }
}

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
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a `Worker` does nothing until `run` is awaited"]
pub struct Worker {
    tiger: Tiger,
    only: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    concurrency: usize,
    once: bool,
    shutdown: Option<Signal>,
    hand_back: Option<Signal>,
    grace_period: Duration,
    exit_after: Option<Duration>,
    max_workers_per_queue: Option<usize>,
    executor: Executor,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("only", &self.only)
            .field("exclude", &self.exclude)
            .field("concurrency", &self.concurrency)
            .field("once", &self.once)
            .field("grace_period", &self.grace_period)
            .field("exit_after", &self.exit_after)
            .field("max_workers_per_queue", &self.max_workers_per_queue)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The default number of tasks one worker runs at once.
    pub const DEFAULT_CONCURRENCY: usize = 10;

    /// The default shutdown grace period: 25 s, inside the 30 s an orchestrator such as
    /// Kubernetes waits between SIGTERM and SIGKILL, so the hand-back is done in time.
    pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(25);

    /// A worker on `tiger`'s Redis, serving every queue not excluded by the config.
    pub fn new(tiger: Tiger) -> Worker {
        Worker {
            tiger,
            only: None,
            exclude: None,
            concurrency: Self::DEFAULT_CONCURRENCY,
            once: false,
            shutdown: None,
            hand_back: None,
            grace_period: Self::DEFAULT_GRACE_PERIOD,
            exit_after: None,
            max_workers_per_queue: None,
            executor: Executor::Async,
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

    /// At most `tasks` tasks of any one queue run at once across every worker that sets
    /// this (`-M`), counted through the queue's semaphore `t:qslock:<queue>`: each task in
    /// flight holds a place (a batch holds one), renewed by heartbeats and given back when
    /// it ends; a dead worker's places expire after `ACTIVE_TASK_UPDATE_TIMEOUT`. A queue
    /// whose semaphore is full is tried again later. Queues listed in
    /// [`Config::single_worker_queues`](crate::Config::single_worker_queues) get a size of 1
    /// whatever this says.
    pub fn max_workers_per_queue(mut self, tasks: usize) -> Worker {
        self.max_workers_per_queue = Some(tasks);
        self
    }

    /// Where tasks run (see [`Executor`]). With [`Executor::Process`] the program must
    /// serve its children: [`run_worker`](crate::run_worker) does, else call
    /// [`serve_executor_child`] first thing in `main`.
    pub fn executor(mut self, executor: Executor) -> Worker {
        self.executor = executor;
        self
    }

    /// Drain: run what is queued, then return once the queues are empty and nothing is in
    /// flight.
    pub fn once(mut self, once: bool) -> Worker {
        self.once = once;
        self
    }

    /// Stop when `signal` resolves: take no more tasks, let those in flight finish within
    /// the [grace period](Worker::grace_period), hand back the rest, return.
    /// [`run_worker`](crate::run_worker) wires this to the first SIGINT or SIGTERM.
    pub fn shutdown_on<F: Future<Output = ()> + Send + 'static>(mut self, signal: F) -> Worker {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Stop at once when `signal` resolves: cut the tasks in flight short and hand them back
    /// without waiting for the grace period. [`run_worker`](crate::run_worker) wires this to
    /// the second SIGINT or SIGTERM.
    ///
    /// Handing back a task: one that had not started goes back to its queue as it was; one
    /// that was running is cancelled, gets a `JobTimeoutException` record saying the worker
    /// stopped, and then follows its retry options as after a timeout — back to its queue at
    /// once if it retries, else to `error`. So a task that is not safe to run twice is never
    /// run again by a shutdown.
    pub fn hand_back_on<F: Future<Output = ()> + Send + 'static>(mut self, signal: F) -> Worker {
        self.hand_back = Some(Box::pin(signal));
        self
    }

    /// How long tasks in flight may go on after a shutdown signal before they are handed
    /// back (default [`Worker::DEFAULT_GRACE_PERIOD`]).
    pub fn grace_period(mut self, grace: Duration) -> Worker {
        self.grace_period = grace;
        self
    }

    /// Once the worker has run this long, take no more tasks, let those in flight finish
    /// (however long they take) and return [`Stopped::ExitAfter`];
    /// [`run_worker`](crate::run_worker) then starts the process again. TaskTiger's
    /// `--exit-after`: a bound on what a long-lived process can leak. A shutdown signal
    /// meanwhile turns it into a shutdown.
    pub fn exit_after(mut self, after: Duration) -> Worker {
        self.exit_after = Some(after);
        self
    }

    /// Runs until shutdown (or, with [`once`](Worker::once), until drained) and says why it
    /// stopped. Nothing it took is left active when it returns: tasks finished or were
    /// handed back (unless Redis was unreachable at the end; then they are recovered later).
    ///
    /// Fails at start when two tasks share a name, the settings are invalid, or Redis cannot
    /// be reached. Once running, a failed Redis call is logged and retried; task failures
    /// never stop the worker.
    pub async fn run(self) -> Result<Stopped> {
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.max_workers_per_queue == Some(0) {
            return Err(Error::Config(
                "max_workers_per_queue must be at least 1".into(),
            ));
        }
        if self.executor == Executor::Process {
            child::check_temp_dir()?;
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
        // A connection that dropped since the handle was made fails its first command.
        retrying("queue periodic tasks", || {
            periodic::queue_missing(&self.tiger, &registry, &filter)
        })
        .await?;
        let queues = retrying("read the queue set", || filter.queued(&self.tiger)).await?;
        tracing::debug!(names = ?registry.names(), "registered tasks");
        if registry.len() == 0 {
            tracing::warn!(
                "no #[tiger::task] is linked into this program, so every task it takes will fail as unknown: \
                 if the tasks live in a library crate, name it in the worker's code (`use my_tasks as _;`)"
            );
        }
        tracing::info!(
            tasks = registry.len(),
            queues = ?filter.only,
            exclude_queues = ?filter.exclude,
            concurrency = self.concurrency,
            once = self.once,
            max_workers_per_queue = ?self.max_workers_per_queue,
            executor = ?self.executor,
            grace_period = ?self.grace_period,
            exit_after = ?self.exit_after,
            prefix = self.tiger.keys().prefix(),
            "worker ready"
        );
        let presence = Presence::new(&filter.only, &filter.exclude, self.concurrency);
        let presence = Reporter::start(&self.tiger, presence, HEARTBEAT_WAIT).await;
        let activity = Activity::start(self.tiger.clone(), filter.clone());
        let finisher = finish::Finisher::spawn(self.tiger.clone());
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
            grace: self.grace_period,
            stuck: Arc::new(AtomicBool::new(false)),
            max_workers: self.max_workers_per_queue,
            executor: self.executor,
            holder_prefix: format!("{}:", crate::TaskId::random()),
            finisher,
            presence,
        };
        let signals = Signals {
            shutdown: self.shutdown,
            hand_back: self.hand_back,
            exit_after: self.exit_after,
        };
        let stopped = state.run(self.once, signals).await;
        state.presence.leave(&state.tiger, HEARTBEAT_WAIT).await;
        if self.executor == Executor::Process {
            child::remove_private_dir();
        }
        tracing::info!(reason = ?stopped, "worker stopped");
        Ok(stopped)
    }
}

/// What stops a worker, besides running dry with `once`.
struct Signals {
    shutdown: Option<Signal>,
    hand_back: Option<Signal>,
    exit_after: Option<Duration>,
}

/// One Tokio task in flight: the tasks it runs, for heartbeats, and how to stop it.
struct InFlight {
    queue: String,
    leases: Vec<(String, Lease)>,
    /// Set to true to stop the group and hand back what is still this worker's.
    stop: watch::Sender<Option<run::Halt>>,
    /// Its place in the queue's semaphore, if the queue has one.
    holder: Option<Vec<u8>>,
}

/// How many queues one round of dequeues asks at once (see [`Loop::take_work`]).
const DEQUEUES_PER_ROUND: usize = 16;

/// What one dequeue took, read and ready to start.
#[derive(Default)]
struct Taken {
    queue: String,
    /// Tasks moved to active (some may have been set aside as unreadable).
    taken: usize,
    members: Vec<(Job, Option<execute::Prepared>)>,
    leases: Vec<(String, Lease)>,
    /// A batch queue: everything is one group.
    batch: bool,
    /// The queue has a semaphore: each group holds a place.
    gated: bool,
    /// A batch group's place in the semaphore.
    group_holder: Option<Vec<u8>>,
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
    grace: Duration,
    /// Set by a group whose plain `fn` thread outlived its hard timeout.
    stuck: Arc<AtomicBool>,
    /// `-M`: the size of every queue's semaphore.
    max_workers: Option<usize>,
    executor: Executor,
    /// Starts the name of each place this worker holds in a queue semaphore: a random id
    /// per worker, then `:` and the group's first task id.
    holder_prefix: String,
    finisher: finish::Finisher,
    /// Its entry in the registry of live workers, and its counts of ended runs.
    presence: Reporter,
}

impl Loop {
    async fn run(&mut self, once: bool, signals: Signals) -> Stopped {
        let config = self.tiger.config().clone();
        let pending = || -> Signal { Box::pin(std::future::pending()) };
        let mut shutdown = signals.shutdown.unwrap_or_else(pending);
        let mut hand_back = signals.hand_back.unwrap_or_else(pending);
        let exit_at = signals
            .exit_after
            .map(|after| tokio::time::Instant::now() + after);
        let mut refresh = tokio::time::interval(config.queue_refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        let mut heartbeat = tokio::time::interval(config.active_task_update_timer);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut report = tokio::time::interval(config.active_task_update_timer);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        report.reset();
        let mut sweep = tokio::time::interval(config.select_timeout.max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once stopping: why. A signal (and only a signal) starts the grace period; once it
        // is over the groups in flight are stopped and given `HAND_BACK_TIME` to hand back.
        let mut stopping: Option<Stopped> = None;
        let mut signalled = false;
        let mut grace_ends: Option<tokio::time::Instant> = None;
        let mut give_up_at: Option<tokio::time::Instant> = None;
        let mut backoff_until: Option<tokio::time::Instant> = None;
        // Due scheduled tasks count as queued work, also for `once`.
        self.run_sweeps().await;
        sweep.reset();

        loop {
            if stopping.is_none() && self.stuck.load(Ordering::Relaxed) {
                tracing::warn!(
                    "a plain fn task is stuck past its hard timeout: taking no more tasks, restarting once those in flight finish"
                );
                stopping = Some(Stopped::StuckThread);
            }
            if stopping.is_none()
                && backoff_until.is_none_or(|until| until <= tokio::time::Instant::now())
            {
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
                    return Stopped::Drained;
                }
            }
            if let Some(reason) = stopping.filter(|_| self.in_flight.is_empty()) {
                return reason;
            }
            let has_room = self.in_flight.len() < self.concurrency;
            let running = stopping.is_none();
            let handing_back = give_up_at.is_some();
            // Biased: stopping comes first, whatever else is ready.
            tokio::select! {
                biased;
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    // A signal wins over a planned restart: the process is to end.
                    stopping = Some(Stopped::Shutdown);
                    if !handing_back {
                        tracing::info!(in_flight = self.in_flight.len(), grace_period = ?self.grace, "shutting down: taking no more tasks, finishing those in flight");
                        grace_ends = Some(tokio::time::Instant::now() + self.grace);
                    }
                }
                () = &mut hand_back, if !handing_back => {
                    signalled = true;
                    stopping = Some(Stopped::Shutdown);
                    grace_ends = None;
                    give_up_at = Some(self.stop_all(run::Halt::Now));
                }
                () = sleep_until(grace_ends), if grace_ends.is_some() => {
                    grace_ends = None;
                    give_up_at = Some(self.stop_all(run::Halt::Shutdown));
                }
                () = sleep_until(give_up_at), if handing_back && !self.in_flight.is_empty() => {
                    tracing::error!(groups = self.in_flight.len(), "could not hand back every task in time (is Redis answering?); they stay active until recovered");
                    self.in_flight.abort_all();
                    // Redis is not answering: the semaphore places lapse by themselves.
                    for running in self.running.values_mut() {
                        running.holder = None;
                    }
                    give_up_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                () = sleep_until(exit_at), if running => {
                    tracing::info!(in_flight = self.in_flight.len(), "the --exit-after time has passed: taking no more tasks, restarting once those in flight finish");
                    stopping = Some(Stopped::ExitAfter);
                }
                Some(done) = self.in_flight.join_next_with_id() => {
                    self.forget(done).await;
                    // Every group that ended meanwhile too, so the next dequeue fills all
                    // their slots in one call rather than one slot per call.
                    while let Some(done) = self.in_flight.try_join_next_with_id() {
                        self.forget(done).await;
                    }
                }
                _ = heartbeat.tick(), if !self.running.is_empty() => {
                    // Never hold up the loop (and a signal) long.
                    let limit = config.active_task_update_timer.min(HEARTBEAT_WAIT);
                    if tokio::time::timeout(limit, self.heartbeat()).await.is_err() {
                        tracing::warn!(?limit, "heartbeat took too long; gave up on it");
                    }
                }
                _ = report.tick() => {
                    let in_flight = self.running.values().flat_map(|running| {
                        running.leases.iter().map(|(id, _)| (running.queue.clone(), id.clone()))
                    }).collect();
                    self.presence.renew(&self.tiger, in_flight);
                }
                () = self.activity.notified(), if running && has_room => {}
                _ = refresh.tick(), if running => self.refresh_queues().await,
                _ = sweep.tick(), if running => self.run_sweeps().await,
                () = sleep_until(backoff_until), if backoff_until.is_some() && running => {}
            }
        }
    }

    /// Stops every group in flight: what is still this worker's is handed back. Returns
    /// when to give up waiting for that.
    fn stop_all(&self, halt: run::Halt) -> tokio::time::Instant {
        if !self.running.is_empty() {
            let why = match halt {
                run::Halt::Now => "stopping at once",
                _ => "the shutdown grace period is over",
            };
            tracing::warn!(
                in_flight = self.running.len(),
                "{why}: handing back the tasks in flight"
            );
        }
        for running in self.running.values() {
            running.stop.send_replace(Some(halt));
        }
        tokio::time::Instant::now() + HAND_BACK_TIME
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
        // Rounds of dequeues from a random sample of the known queues, so that no queue
        // starves the others and thousands of known queues cost no more than a few. The
        // dequeues of a round go out together (one round trip for all), and the free slots
        // are shared among them so that together they never take more than fits. Another
        // round follows while slots are free and untried queues remain.
        let mut started = false;
        let mut tried: HashSet<String> = HashSet::new();
        let mut failed = None;
        while free > 0 && failed.is_none() {
            let sample: Vec<String> = self
                .queues
                .iter()
                .filter(|queue| !tried.contains(*queue))
                .choose_multiple(&mut rand::rng(), free.min(DEQUEUES_PER_ROUND))
                .into_iter()
                .cloned()
                .collect();
            if sample.is_empty() {
                break;
            }
            let shares = sample.len();
            let calls = sample.iter().enumerate().map(|(i, queue)| {
                let batch = self.tiger.config().batch_size(queue);
                // `free` split into `shares` parts that add up to it.
                let share = free / shares + usize::from(i < free % shares);
                self.dequeue(queue, if batch > 1 { batch } else { share })
            });
            let results = futures_util::future::join_all(calls).await;
            for (queue, result) in sample.into_iter().zip(results) {
                match result {
                    // Paused, or its semaphore is full: kept, and tried again after the next
                    // event.
                    Ok(None) => {}
                    Ok(Some(taken)) if taken.taken == 0 => {
                        self.queues.remove(&queue);
                    }
                    Ok(Some(taken)) => {
                        free = free.saturating_sub(self.start_taken(taken));
                        started = true;
                    }
                    Err(err) if client::is_transient(&err) => failed = Some(err),
                    Err(err) => {
                        tracing::error!(%queue, %err, "cannot take tasks from this queue; skipping it until it is announced again");
                        self.queues.remove(&queue);
                    }
                }
                tried.insert(queue);
            }
        }
        if let Some(err) = failed {
            return Err(err);
        }
        Ok(started)
    }

    /// The size of `queue`'s semaphore: 1 for a single-worker queue (or subqueue of one),
    /// else `-M` if given.
    fn semaphore_size(&self, queue: &str) -> Option<usize> {
        let single = &self.tiger.config().single_worker_queues;
        let mut prefix = queue;
        loop {
            if single.iter().any(|q| q == prefix) {
                return Some(1);
            }
            match prefix.rfind('.') {
                Some(dot) => prefix = &prefix[..dot],
                None => return self.max_workers,
            }
        }
    }

    /// The name of the semaphore place of a group whose first task is `id`.
    fn holder(&self, id: &[u8]) -> Vec<u8> {
        [self.holder_prefix.as_bytes(), id].concat()
    }

    /// Moves up to `limit` tasks of `queue` to active and reads them; `None` when the queue
    /// is paused or its semaphore is full. [`Loop::start_taken`] starts them.
    async fn dequeue(&self, queue: &str, limit: usize) -> Result<Option<Taken>> {
        let started = now();
        let batch = self.tiger.config().batch_size(queue) > 1;
        let size = self.semaphore_size(queue);
        let gate = size.map(|size| scripts::Gate {
            size,
            expires: started + self.tiger.config().active_task_update_timeout.as_secs_f64(),
            holder_prefix: &self.holder_prefix,
            one_group: batch,
        });
        let taken = scripts::dequeue(&self.tiger, queue, limit, started, gate).await?;
        if taken.blocked {
            return Ok(None);
        }
        let ids = taken.ids;
        let Some(first) = ids.first() else {
            return Ok(Some(Taken::default()));
        };
        let group_holder = (size.is_some() && batch).then(|| self.holder(first));
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
                    if size.is_some() && !batch {
                        self.release(queue, Some(self.holder(&id))).await;
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
                finisher: self.finisher.clone(),
                counter: self.presence.counter(),
            };
            let prepared = body
                .as_deref()
                .map(|body| execute::prepare(&self.registry, self.tiger.config(), id, body));
            members.push((job, prepared));
        }
        Ok(Some(Taken {
            queue: queue.to_owned(),
            taken,
            members,
            leases,
            batch,
            gated: size.is_some(),
            group_holder,
        }))
    }

    /// Starts what a dequeue took: a batch queue's tasks as one group (one slot), others
    /// task by task. Returns the slots used.
    fn start_taken(&mut self, taken: Taken) -> usize {
        let Taken {
            queue,
            members,
            leases,
            batch,
            gated,
            group_holder,
            ..
        } = taken;
        if members.is_empty() {
            return 0;
        }
        if batch {
            self.start(&queue, members, leases, group_holder);
            return 1;
        }
        let slots = members.len();
        for (member, lease) in members.into_iter().zip(leases) {
            let holder = gated.then(|| self.holder(lease.0.as_bytes()));
            self.start(&queue, vec![member], vec![lease], holder);
        }
        slots
    }

    /// Gives back a place in `queue`'s semaphore. A failure only delays it: the place
    /// expires by itself.
    async fn release(&self, queue: &str, holder: Option<Vec<u8>>) {
        let Some(holder) = holder else {
            return;
        };
        let key = self.tiger.keys().queue_semaphore(queue);
        let mut connection = self.tiger.connection();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&key).arg(&holder);
        // Bounded: a Redis that hangs must not hold up the loop; the place expires anyway.
        let removed = tokio::time::timeout(
            Duration::from_secs(1),
            zrem.query_async::<i64>(&mut connection),
        )
        .await;
        if !matches!(removed, Ok(Ok(_))) {
            tracing::warn!(%queue, "cannot give back a place in the queue's semaphore; it expires by itself");
        }
    }

    /// Starts one group in its own Tokio task.
    fn start(
        &mut self,
        queue: &str,
        members: Vec<(Job, Option<execute::Prepared>)>,
        leases: Vec<(String, Lease)>,
        holder: Option<Vec<u8>>,
    ) {
        let (stop, stop_rx) = watch::channel(None);
        let control = Control {
            stop: stop_rx,
            stuck: self.stuck.clone(),
            grace: self.grace,
            executor: self.executor,
        };
        let handle = self.in_flight.spawn(run::run_group(members, control));
        crate::metrics::in_flight(self.in_flight.len());
        self.running.insert(
            handle.id(),
            InFlight {
                queue: queue.to_owned(),
                leases,
                stop,
                holder,
            },
        );
    }

    /// A group ended: forgets it and gives back its semaphore place.
    async fn forget(
        &mut self,
        done: std::result::Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match done {
            Ok((id, ())) => id,
            Err(err) => {
                tracing::error!(%err, "a task's bookkeeping ended abnormally");
                err.id()
            }
        };
        if let Some(ended) = self.running.remove(&id) {
            self.release(&ended.queue, ended.holder).await;
        }
        crate::metrics::in_flight(self.in_flight.len());
    }

    /// Refreshes the active score of every task in flight, so no worker takes them for
    /// abandoned. `ZADD XX` never puts back a task that has already left the active set.
    async fn heartbeat(&mut self) {
        let now = now();
        let keys = self.tiger.keys();
        // Tasks already settling are left alone: their result is being written.
        let mut claims: Vec<(String, &str, scripts::Claim, f64)> = Vec::new();
        let mut owners: Vec<(&InFlight, &Lease)> = Vec::new();
        for running in self.running.values() {
            for (id, lease) in &running.leases {
                if let Some((claim, score)) = lease.renew(now) {
                    claims.push((
                        keys.queue(State::Active, &running.queue),
                        id.as_str(),
                        claim,
                        score,
                    ));
                    owners.push((running, lease));
                }
            }
        }
        if claims.is_empty() {
            return;
        }
        let places: Vec<(String, &[u8])> = self
            .running
            .values()
            .filter_map(|running| {
                let holder = running.holder.as_deref()?;
                Some((keys.queue_semaphore(&running.queue), holder))
            })
            .collect();
        let expires = now + self.tiger.config().active_task_update_timeout.as_secs_f64();
        match scripts::heartbeat(&self.tiger, &claims, &places, now, expires).await {
            Ok(flags) => {
                for (((_, id, _, score), (running, lease)), kept) in
                    claims.iter().zip(owners).zip(flags)
                {
                    if kept {
                        lease.confirm(*score);
                    } else if lease.settling() {
                        // Its own result may have been written first; the fenced result
                        // write decides.
                        tracing::debug!(
                            task_id = id,
                            "heartbeat overtaken by the task's own result"
                        );
                    } else {
                        // Recovered (and perhaps running elsewhere): stop our copy so it
                        // does no more work. A plain fn's thread cannot be stopped.
                        tracing::warn!(task_id = id, queue = %running.queue, "task is no longer this worker's (recovered after its heartbeat lapsed); cancelling this run");
                        running.stop.send_replace(Some(run::Halt::Lost));
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
