//! `cargo run --release -p tiger-bench`: tiger's speed, measured on a private redis-server
//! (a free loopback port, no persistence), one fresh Redis state per scenario, a no-op task
//! with one small integer argument. Prints one table with the median of `--runs` runs and
//! their spread, then the Redis commands each scenario issued per task (`INFO
//! commandstats`), so the next optimisation is visible.
//!
//! Scenarios (the numbering of issue 5):
//! - S1 enqueue: one producer, one task at a time, awaiting each → tasks/s.
//! - S3 drain: pre-queued tasks, one worker until empty → tasks/s, at concurrency 1 and at
//!   `--concurrency`.
//! - S4 latency: an idle worker; tasks enqueued one by one 1 ms apart; enqueue → start p50
//!   and p99.
//! - S5 memory: Redis `used_memory` per queued task.
//!
//! The comparison with Python TaskTiger and BullMQ in the same run is still to come.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::future::join_all;
use tiger::{Tiger, Worker, testing::RedisServer};

/// Flags of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "Measures tiger on a private redis-server")]
struct Args {
    /// Runs per scenario; the table shows their median and spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tasks for S1.
    #[arg(long, default_value_t = 20_000)]
    enqueue: u64,
    /// Tasks for S3 and S5.
    #[arg(long, default_value_t = 100_000)]
    drain: u64,
    /// Tasks for S4.
    #[arg(long, default_value_t = 2_000)]
    latency: u64,
    /// The worker's concurrency for S3's second row.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
}

/// Enqueue → start delays seen by [`noop()`], in microseconds.
static DELAYS: LazyLock<Mutex<Vec<u64>>> = LazyLock::new(Default::default);

/// The benchmark task: does nothing. With `n` above 1e15 it is an enqueue time in
/// microseconds since the epoch, and the delay until the task started is recorded (S4).
#[tiger::task(queue = "bench")]
async fn noop(n: u64) {
    if n > 1_000_000_000_000_000 {
        let delay = micros_now().saturating_sub(n);
        DELAYS.lock().unwrap_or_else(|e| e.into_inner()).push(delay);
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One figure of one run, and the Redis commands it issued per task.
struct Measure {
    value: f64,
    commands: Vec<(String, f64)>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = RedisServer::start().unwrap_or_else(|err| {
        eprintln!("error: {err}");
        std::process::exit(1);
    });
    let tiger = Tiger::connect(&redis.url()).await.unwrap_or_else(|err| {
        eprintln!("error: {err}");
        std::process::exit(1);
    });
    println!(
        "tiger-bench: redis-server on port {}, {} runs per scenario, {} cores",
        redis.port(),
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| scenario | median | spread (min–max) | unit |");
    println!("|---|---|---|---|");
    let mut profiles = Vec::new();
    let rows: [(&str, &str); 5] = [
        ("S1 enqueue, one at a time", "tasks/s"),
        ("S3 drain, concurrency 1", "tasks/s"),
        ("S3 drain, best concurrency", "tasks/s"),
        ("S4 latency p50 / p99", "ms"),
        ("S5 memory per queued task", "bytes"),
    ];
    for (row, (name, unit)) in rows.iter().enumerate() {
        let mut measures = Vec::new();
        let mut second = Vec::new();
        for _ in 0..args.runs {
            flush(&tiger).await;
            let (measure, other) = match row {
                0 => (enqueue(&tiger, args.enqueue).await, None),
                1 => (drain(&tiger, args.drain, 1).await, None),
                2 => (drain(&tiger, args.drain, args.concurrency).await, None),
                3 => {
                    let (p50, p99) = latency(&tiger, args.latency).await;
                    (p50, Some(p99))
                }
                _ => (memory(&tiger, args.drain).await, None),
            };
            second.extend(other);
            measures.push(measure);
        }
        let (median, min, max) = summary(measures.iter().map(|m| m.value).collect());
        let cell = match summary_of(&second) {
            Some((p99, _, _)) => format!("{median:.2} / {p99:.2}"),
            None => format!("{median:.0}"),
        };
        let digits = if *unit == "ms" { 2 } else { 0 };
        println!("| {name} | {cell} | {min:.digits$}–{max:.digits$} | {unit} |");
        if let Some(last) = measures.pop() {
            profiles.push((*name, last.commands));
        }
    }
    println!();
    println!("Redis commands per task (last run of each scenario, INFO commandstats):");
    for (name, commands) in profiles {
        let listed: Vec<String> = commands
            .iter()
            .map(|(cmd, per_task)| format!("{cmd} {per_task:.2}"))
            .collect();
        println!("- {name}: {}", listed.join(", "));
    }
}

/// Median, min and max.
fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    let min = values.first().copied().unwrap_or(0.0);
    let max = values.last().copied().unwrap_or(0.0);
    (median, min, max)
}

fn summary_of(values: &[f64]) -> Option<(f64, f64, f64)> {
    (!values.is_empty()).then(|| summary(values.to_vec()))
}

/// A fresh state: the server's data and its command statistics.
async fn flush(tiger: &Tiger) {
    for command in [&["FLUSHALL"][..], &["CONFIG", "RESETSTAT"][..]] {
        let _: () = redis::cmd(command[0])
            .arg(&command[1..])
            .query_async(&mut tiger.connection())
            .await
            .expect("reset Redis");
    }
}

/// Calls per task of each Redis command since the last [`flush`].
async fn commands(tiger: &Tiger, tasks: u64) -> Vec<(String, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut tiger.connection())
        .await
        .unwrap_or_default();
    let mut found: Vec<(String, f64)> = info
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls: f64 = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (name != "info" && name != "config" && name != "flushall")
                .then(|| (name.to_owned(), calls / tasks as f64))
        })
        .collect();
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    found
}

/// S1: one producer awaiting each enqueue.
async fn enqueue(tiger: &Tiger, tasks: u64) -> Measure {
    let clock = Instant::now();
    for n in 0..tasks {
        noop::delay(n % 1000).on(tiger).await.expect("enqueue");
    }
    let rate = tasks as f64 / clock.elapsed().as_secs_f64();
    Measure {
        value: rate,
        commands: commands(tiger, tasks).await,
    }
}

/// Enqueues `tasks` tasks with many enqueues in flight at once.
async fn fill(tiger: &Tiger, tasks: u64) {
    let all: Vec<u64> = (0..tasks).collect();
    for chunk in all.chunks(500) {
        let sent = join_all(
            chunk
                .iter()
                .map(|n| noop::delay(n % 1000).on(tiger).into_future()),
        );
        for result in sent.await {
            result.expect("enqueue");
        }
    }
}

/// S3: drains `tasks` pre-queued tasks with one worker.
async fn drain(tiger: &Tiger, tasks: u64, concurrency: usize) -> Measure {
    fill(tiger, tasks).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut tiger.connection())
        .await
        .expect("reset stats");
    let clock = Instant::now();
    Worker::new(tiger.clone())
        .concurrency(concurrency)
        .once(true)
        .run()
        .await
        .expect("worker");
    let rate = tasks as f64 / clock.elapsed().as_secs_f64();
    Measure {
        value: rate,
        commands: commands(tiger, tasks).await,
    }
}

/// S4: an idle worker; tasks enqueued one by one 1 ms apart. Returns p50 and p99 in ms.
async fn latency(tiger: &Tiger, tasks: u64) -> (Measure, f64) {
    DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(tiger.clone())
            .shutdown_on(async { stopped.await.unwrap_or(()) })
            .run(),
    );
    // Let the worker subscribe and go idle.
    noop::delay(micros_now()).on(tiger).await.expect("enqueue");
    while DELAYS.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..tasks {
        tick.tick().await;
        noop::delay(micros_now()).on(tiger).await.expect("enqueue");
    }
    while (DELAYS.lock().unwrap_or_else(|e| e.into_inner()).len() as u64) < tasks {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    worker.await.expect("worker task").expect("worker");
    let mut delays = DELAYS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    delays.sort_unstable();
    let at = |q: f64| {
        let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
        delays.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let measure = Measure {
        value: at(0.5),
        commands: commands(tiger, tasks).await,
    };
    (measure, at(0.99))
}

/// S5: `used_memory` per task after `tasks` tasks are queued.
async fn memory(tiger: &Tiger, tasks: u64) -> Measure {
    let used = || async {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut tiger.connection())
            .await
            .unwrap_or_default();
        info.lines()
            .find_map(|line| {
                line.strip_prefix("used_memory:")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let before = used().await;
    fill(tiger, tasks).await;
    let after = used().await;
    Measure {
        value: (after - before) / tasks as f64,
        commands: commands(tiger, tasks).await,
    }
}
