//! tiger's rows: every scenario run in this process, the worker included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tiger::{DelayMany, Tiger, Worker};
use tokio::sync::Notify;

use crate::{Args, Cell, Run, Scenario, System, redis_stats};

/// Enqueue → start delays seen by [`noop()`], in microseconds.
static DELAYS: LazyLock<Mutex<Vec<u64>>> = LazyLock::new(Default::default);
/// Tasks [`noop()`] ran since the last [`drain`] began.
static DONE: AtomicU64 = AtomicU64::new(0);
/// [`DONE`] at which [`REACHED`] is notified.
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static REACHED: Notify = Notify::const_new();

/// Above this, an argument is an enqueue time in microseconds since the epoch (S4).
pub(crate) const STAMPED: u64 = 1_000_000_000_000_000;

/// The benchmark task: does nothing but count. For a stamped argument it records the delay
/// from enqueue to start.
#[tiger::task(name = "tiger_bench:noop", queue = "bench")]
async fn noop(n: u64) {
    if n > STAMPED {
        let delay = micros_now().saturating_sub(n);
        DELAYS.lock().unwrap_or_else(|e| e.into_inner()).push(delay);
    }
    count_done();
}

/// `noop` as a unique task: its id is a hash of its argument, checked at enqueue and dequeue.
#[tiger::task(name = "tiger_bench:unique_noop", queue = "bench", unique)]
async fn unique_noop(n: u64) {
    let _ = n;
    count_done();
}

/// `noop` under a task lock (`lock_key`): each run takes and releases `t:lockv2:<id>`.
#[tiger::task(name = "tiger_bench:locked_noop", queue = "bench", lock_key = ["n"])]
async fn locked_noop(n: u64) {
    let _ = n;
    count_done();
}

/// Fails its first run when `n` is a multiple of 100 (1 %), then succeeds on the retry.
#[tiger::task(name = "tiger_bench:flaky_noop", queue = "bench", retry_method = fixed(0, 1))]
async fn flaky_noop(n: u64) -> Result<(), String> {
    if n.is_multiple_of(100) && tiger::current_task().is_some_and(|task| task.retries == 0) {
        return Err("the first run of every hundredth task fails".to_owned());
    }
    count_done();
    Ok(())
}

fn count_done() {
    if DONE.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        REACHED.notify_one();
    }
}

/// TaskTiger's benchmark task (`tiger-bench/peers/tasktiger_peer.py`), declared here only
/// so that tiger can fill TaskTiger's queues: the layout is the same, and `delay_many`
/// fills a million tasks in seconds where TaskTiger's `delay` would take minutes.
#[tiger::task(name = "tasktiger_peer:noop", queue = "bench")]
pub(crate) async fn python_noop(n: u64) {
    let _ = n;
}

pub(crate) fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Logs as `run_worker` does (info and up), into a sink: the worker pays for its log lines
/// as it would in production, and the table stays readable.
pub(crate) fn install_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .try_init();
}

/// Runs `scenario` for tiger's rows; returns the cells and the commands per task of the
/// last run.
pub(crate) async fn measure(
    tiger: &Tiger,
    args: &Args,
    scenario: Scenario,
) -> (Vec<(System, Cell)>, Vec<(String, f64)>) {
    let mut best = Vec::new();
    let mut one = Vec::new();
    let mut commands = Vec::new();
    let mut extra = Vec::new();
    let mut ceiling = Vec::new();
    let runs = args.runs;
    match scenario {
        Scenario::Enqueue | Scenario::Bulk | Scenario::Memory => {
            for _ in 0..runs {
                redis_stats::flush(tiger).await;
                let (run, tasks) = match scenario {
                    Scenario::Enqueue => (
                        rate(args.enqueue, enqueue(tiger, args.enqueue)).await,
                        args.enqueue,
                    ),
                    Scenario::Bulk => (rate(args.tasks, fill(tiger, args.tasks)).await, args.tasks),
                    _ => (memory(tiger, args.tasks).await, args.tasks),
                };
                best.push(run);
                commands = redis_stats::commands(tiger, tasks).await;
                if scenario == Scenario::Enqueue {
                    ceiling.push(rate(args.enqueue, pings(tiger, args.enqueue)).await);
                }
            }
        }
        Scenario::Drain => {
            for (concurrency, into) in [(1, &mut one), (args.concurrency, &mut best)] {
                for _ in 0..runs {
                    redis_stats::flush(tiger).await;
                    fill(tiger, args.tasks).await;
                    redis_stats::reset_stats(tiger).await;
                    let run = drain(tiger, concurrency, args.cap(), None).await;
                    commands = redis_stats::commands(tiger, DONE.load(Ordering::Relaxed)).await;
                    into.push(run);
                }
            }
            // The same drain with each option that costs Redis work per task.
            for (system, runs_of) in options(tiger, args).await {
                extra.push((system, Cell::Runs(runs_of)));
            }
        }
        Scenario::Latency => {
            for _ in 0..runs {
                redis_stats::flush(tiger).await;
                best.push(latency(tiger, args.latency).await);
                commands = redis_stats::commands(tiger, args.latency).await;
            }
        }
        Scenario::ManyQueues => {
            for _ in 0..runs {
                redis_stats::flush(tiger).await;
                let calls = (0..args.queues).flat_map(|queue| {
                    (0..args.per_queue).map(move |n| noop::delay(n).queue(format!("q{queue}")))
                });
                let calls: Vec<_> = calls.collect();
                DelayMany::new(calls).on(tiger).await.expect("fill");
                redis_stats::reset_stats(tiger).await;
                best.push(drain(tiger, args.concurrency, args.cap(), None).await);
                commands = redis_stats::commands(tiger, DONE.load(Ordering::Relaxed)).await;
            }
        }
        Scenario::Backlog => {
            redis_stats::flush(tiger).await;
            fill(tiger, args.backlog).await;
            for _ in 0..runs {
                redis_stats::reset_stats(tiger).await;
                let take = Some(args.backlog_take);
                best.push(drain(tiger, args.concurrency, args.cap(), take).await);
                commands = redis_stats::commands(tiger, DONE.load(Ordering::Relaxed)).await;
            }
        }
    }
    let mut cells = vec![(System::TigerBest, Cell::Runs(best))];
    if !one.is_empty() {
        cells.push((System::TigerOne, Cell::Runs(one)));
    }
    cells.extend(extra);
    if !ceiling.is_empty() {
        cells.push((System::RoundTrip, Cell::Runs(ceiling)));
    }
    (cells, commands)
}

/// S3 with unique tasks, with locked tasks, and with 1 % failing once and retried, at the
/// best concurrency.
async fn options(tiger: &Tiger, args: &Args) -> Vec<(System, Vec<Run>)> {
    let mut rows = Vec::new();
    for system in [
        System::TigerUnique,
        System::TigerLocked,
        System::TigerRetried,
    ] {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            redis_stats::flush(tiger).await;
            let mut start = 0;
            while start < args.tasks {
                let end = args.tasks.min(start + 100_000);
                let calls = start..end;
                let written = match system {
                    System::TigerUnique => unique_noop::delay_many(calls).on(tiger).await,
                    System::TigerLocked => locked_noop::delay_many(calls).on(tiger).await,
                    _ => flaky_noop::delay_many(calls).on(tiger).await,
                };
                written.expect("enqueue");
                start = end;
            }
            // The retries wait in `scheduled` for the sweep (every second) to queue them
            // again, so that drain runs until every task has succeeded.
            let take = (system == System::TigerRetried).then_some(args.tasks);
            runs.push(drain(tiger, args.concurrency, args.cap(), take).await);
        }
        rows.push((system, runs));
    }
    rows
}

/// `tasks` per second of what `work` took.
async fn rate(tasks: u64, work: impl Future<Output = ()>) -> Run {
    let clock = Instant::now();
    work.await;
    Run {
        value: tasks as f64 / clock.elapsed().as_secs_f64(),
        ..Run::default()
    }
}

/// S1: one producer awaiting each enqueue.
async fn enqueue(tiger: &Tiger, tasks: u64) {
    for n in 0..tasks {
        noop::delay(n % 1000).on(tiger).await.expect("enqueue");
    }
}

/// The bound on S1 for any client that awaits each call: one bare round trip at a time.
async fn pings(tiger: &Tiger, calls: u64) {
    let mut connection = tiger.connection();
    for _ in 0..calls {
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .expect("ping");
    }
}

/// S2, and the fill of the other scenarios: `delay_many`, 100 000 calls at a time.
async fn fill(tiger: &Tiger, tasks: u64) {
    let mut start = 0;
    while start < tasks {
        let end = tasks.min(start + 100_000);
        noop::delay_many((start..end).map(|n| n % 1000))
            .on(tiger)
            .await
            .expect("enqueue");
        start = end;
    }
}

/// One worker until the queues are empty (`take` = `None`) or it has run `take` tasks, or
/// `cap` has passed.
async fn drain(tiger: &Tiger, concurrency: usize, cap: Duration, take: Option<u64>) -> Run {
    DONE.store(0, Ordering::Relaxed);
    TARGET.store(take.unwrap_or(u64::MAX), Ordering::Relaxed);
    let stop = async move {
        tokio::select! {
            () = tokio::time::sleep(cap) => {}
            () = REACHED.notified() => {}
        }
    };
    let clock = Instant::now();
    Worker::new(tiger.clone())
        .concurrency(concurrency)
        .once(take.is_none())
        .shutdown_on(stop)
        .run()
        .await
        .expect("worker");
    let elapsed = clock.elapsed();
    let done = DONE.load(Ordering::Relaxed);
    Run {
        value: done as f64 / elapsed.as_secs_f64(),
        second: None,
        partial: elapsed >= cap,
    }
}

/// S4: an idle worker; tasks enqueued one by one 1 ms apart; p50 and p99 in ms.
async fn latency(tiger: &Tiger, tasks: u64) -> Run {
    let recorded = || DELAYS.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(tiger.clone())
            .shutdown_on(async { stopped.await.unwrap_or(()) })
            .run(),
    );
    // One task first, so the worker is idle and listening when the measured ones come.
    noop::delay(micros_now()).on(tiger).await.expect("enqueue");
    wait_for(|| recorded() >= 1).await;
    DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..tasks {
        tick.tick().await;
        noop::delay(micros_now()).on(tiger).await.expect("enqueue");
    }
    wait_for(|| recorded() >= tasks).await;
    let _ = stop.send(());
    worker.await.expect("worker task").expect("worker");
    let delays = DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    percentiles(delays)
}

/// p50 (the value) and p99 (the second figure), in ms, of delays in microseconds.
pub(crate) fn percentiles(mut delays: Vec<u64>) -> Run {
    delays.sort_unstable();
    let at = |q: f64| {
        let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
        delays.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Run {
        value: at(0.5),
        second: Some(at(0.99)),
        partial: false,
    }
}

/// Polls `done` every few milliseconds; gives up after two minutes.
async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the worker stopped making progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// S5: `used_memory` per task after `tasks` tasks are queued.
async fn memory(tiger: &Tiger, tasks: u64) -> Run {
    let before = redis_stats::used_memory(tiger).await;
    fill(tiger, tasks).await;
    let after = redis_stats::used_memory(tiger).await;
    Run {
        value: (after - before) / tasks as f64,
        ..Run::default()
    }
}
