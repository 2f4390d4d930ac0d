//! `cargo run --release -p tiger-bench -- --compare`: tiger side by side with Python
//! TaskTiger and BullMQ, on one private redis-server (a free loopback port, no persistence)
//! in one run. Without `--compare`, tiger alone.
//!
//! Every scenario starts from a fresh Redis (`FLUSHALL`); the task is a no-op with one small
//! integer argument. Scenarios (README "Benchmarks" describes them and how they are fair):
//! - S1 enqueue: one producer, one task at a time, awaiting each → tasks/s.
//! - S2 bulk enqueue through the system's bulk API (tiger: `delay_many`) → tasks/s.
//! - S3 drain: pre-queued tasks, one worker process until empty → tasks/s.
//! - S4 latency: an idle worker; tasks enqueued one by one 1 ms apart; enqueue → start p50
//!   and p99 in ms.
//! - S5 memory: Redis `used_memory` per queued task, in bytes.
//! - S6 many queues: many queues of a few tasks each, drained by one worker → tasks/s.
//! - S7 backlog: a large backlog, then a part of it drained → tasks/s.
//!
//! Each figure is the median of `--runs` runs, with its spread. A drain that runs past
//! `--cap` seconds is stopped; its rate is over the tasks done by then, and the table marks
//! it. After the table come the Redis commands tiger issued per task in each scenario (`INFO
//! commandstats`), so the next optimisation is visible.

mod peers;
mod redis_stats;
mod tiger_side;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use tiger::testing::RedisServer;

/// Flags of the benchmark.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Measures tiger, and with --compare Python TaskTiger and BullMQ, on a private redis-server"
)]
pub(crate) struct Args {
    /// Also run Python TaskTiger and BullMQ (installed under target/ when missing).
    #[arg(long)]
    compare: bool,
    /// Only these scenarios (S1 … S7), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Runs per scenario; the table shows their median and spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds after which a drain is stopped and its rate taken over what it did.
    #[arg(long, default_value_t = 30)]
    cap: u64,
    /// Tasks for S1.
    #[arg(long, default_value_t = 20_000)]
    enqueue: u64,
    /// Tasks for S2, S3 and S5.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Tasks for S3 with TaskTiger's fork executor.
    #[arg(long, default_value_t = 2_000)]
    fork_tasks: u64,
    /// Tasks for S4.
    #[arg(long, default_value_t = 2_000)]
    latency: u64,
    /// Queues for S6 (each gets `--per-queue` tasks).
    #[arg(long, default_value_t = 10_000)]
    queues: u64,
    /// Tasks per queue for S6.
    #[arg(long, default_value_t = 10)]
    per_queue: u64,
    /// Tasks queued before S7's drain.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Tasks S7 drains from the backlog per run.
    #[arg(long, default_value_t = 100_000)]
    backlog_take: u64,
    /// tiger's concurrency for its best row (200: S3 measured about 29 000 tasks/s at 50,
    /// 41 000–52 000 at 200, no more at 500 or 1 000).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// BullMQ's concurrency for its best row.
    #[arg(long, default_value_t = 50)]
    bullmq_concurrency: usize,
}

impl Args {
    fn wants(&self, scenario: Scenario) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scenario.code()))
    }

    pub(crate) fn cap(&self) -> Duration {
        Duration::from_secs(self.cap)
    }
}

/// The columns of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scenario {
    Enqueue,
    Bulk,
    Drain,
    Latency,
    Memory,
    ManyQueues,
    Backlog,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Enqueue,
        Scenario::Bulk,
        Scenario::Drain,
        Scenario::Latency,
        Scenario::Memory,
        Scenario::ManyQueues,
        Scenario::Backlog,
    ];

    fn code(self) -> &'static str {
        match self {
            Scenario::Enqueue => "S1",
            Scenario::Bulk => "S2",
            Scenario::Drain => "S3",
            Scenario::Latency => "S4",
            Scenario::Memory => "S5",
            Scenario::ManyQueues => "S6",
            Scenario::Backlog => "S7",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Scenario::Enqueue => "S1 enqueue (tasks/s)",
            Scenario::Bulk => "S2 bulk enqueue (tasks/s)",
            Scenario::Drain => "S3 drain (tasks/s)",
            Scenario::Latency => "S4 latency p50 / p99 (ms)",
            Scenario::Memory => "S5 memory (bytes/task)",
            Scenario::ManyQueues => "S6 many queues (tasks/s)",
            Scenario::Backlog => "S7 backlog (tasks/s)",
        }
    }

    /// Lower is better for latency and memory.
    fn lower_is_better(self) -> bool {
        matches!(self, Scenario::Latency | Scenario::Memory)
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub(crate) value: f64,
    /// The second figure of the cell (S4's p99).
    pub(crate) second: Option<f64>,
    /// The run was stopped at `--cap`.
    pub(crate) partial: bool,
}

/// A cell of the table: the runs, or why there are none.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    Runs(Vec<Run>),
    Skipped(String),
}

impl Cell {
    fn median(&self) -> Option<(f64, Option<f64>)> {
        let Cell::Runs(runs) = self else { return None };
        let first = median(runs.iter().map(|r| r.value).collect())?;
        let second = median(runs.iter().filter_map(|r| r.second).collect());
        Some((first, second))
    }

    fn show(&self, scenario: Scenario) -> String {
        let Cell::Runs(runs) = self else {
            return "skipped".to_owned();
        };
        let Some((value, second)) = self.median() else {
            return "·".to_owned();
        };
        let values: Vec<f64> = runs.iter().map(|r| r.value).collect();
        let (min, max) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let spread = if value > 0.0 {
            100.0 * (max - min) / value / 2.0
        } else {
            0.0
        };
        let mark = if runs.iter().any(|r| r.partial) {
            " †"
        } else {
            ""
        };
        let figure = match (scenario, second) {
            (Scenario::Latency, Some(p99)) => format!("{value:.2} / {p99:.2}"),
            _ => thousands(value),
        };
        format!("{figure} ±{spread:.0}%{mark}")
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// `1234567.8` → `1 234 568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// The rows of the table, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum System {
    TigerBest,
    TigerOne,
    TigerUnique,
    TigerLocked,
    TigerRetried,
    TaskTigerSync,
    TaskTigerFork,
    RoundTrip,
    BullMqBest,
    BullMqOne,
}

impl System {
    fn label(self, args: &Args) -> String {
        match self {
            System::TigerBest => format!("tiger, concurrency {}", args.concurrency),
            System::TigerOne => "tiger, concurrency 1".to_owned(),
            System::TigerUnique => format!("tiger, concurrency {}, unique tasks", args.concurrency),
            System::TigerLocked => format!(
                "tiger, concurrency {}, a task lock each (`lock_key`)",
                args.concurrency
            ),
            System::TigerRetried => format!(
                "tiger, concurrency {}, 1 % fail once and retry",
                args.concurrency
            ),
            System::TaskTigerSync => "TaskTiger 0.26.3, sync executor".to_owned(),
            System::TaskTigerFork => format!(
                "TaskTiger 0.26.3, fork executor (S3: {} tasks)",
                args.fork_tasks
            ),
            System::BullMqBest => format!("BullMQ 6.7.6, concurrency {}", args.bullmq_concurrency),
            System::BullMqOne => "BullMQ 6.7.6, concurrency 1".to_owned(),
            System::RoundTrip => {
                "for scale: one `PING` at a time through tiger's connection".to_owned()
            }
        }
    }
}

type Table = BTreeMap<(System, Scenario), Cell>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(err) = run(&args).await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    if args.backlog_take > args.backlog {
        return Err(format!(
            "--backlog-take {} is more than the --backlog {} it drains from",
            args.backlog_take, args.backlog
        ));
    }
    let peers = if args.compare {
        Some(peers::Peers::install().map_err(|e| format!("installing the peers: {e}"))?)
    } else {
        None
    };
    let redis = RedisServer::start().map_err(|e| e.to_string())?;
    let tiger = tiger::Tiger::connect(&redis.url())
        .await
        .map_err(|e| e.to_string())?;
    tiger_side::install_logging();
    println!(
        "tiger-bench: redis-server {} on port {}, {} runs per scenario, cap {} s, {} cores",
        redis_stats::server_version(&tiger).await,
        redis.port(),
        args.runs,
        args.cap,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut table = Table::new();
    let mut profiles = Vec::new();
    for scenario in Scenario::ALL {
        if !args.wants(scenario) {
            continue;
        }
        eprintln!("--- {}", scenario.heading());
        let (cells, commands) = tiger_side::measure(&tiger, args, scenario).await;
        table.extend(
            cells
                .into_iter()
                .map(|(system, cell)| ((system, scenario), cell)),
        );
        profiles.push((scenario, commands));
        if let Some(peers) = &peers {
            let cells = peers.measure(&tiger, redis.port(), args, scenario).await?;
            table.extend(
                cells
                    .into_iter()
                    .map(|(system, cell)| ((system, scenario), cell)),
            );
        }
    }
    print_table(args, &table);
    println!();
    println!(
        "Redis commands per task that tiger issued (last run of each scenario, INFO commandstats):"
    );
    for (scenario, commands) in profiles {
        let listed: Vec<String> = commands
            .iter()
            .filter(|(_, per_task)| *per_task >= 0.005)
            .map(|(cmd, per_task)| format!("{cmd} {per_task:.2}"))
            .collect();
        println!("- {}: {}", scenario.code(), listed.join(", "));
    }
    Ok(())
}

fn print_table(args: &Args, table: &Table) {
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| args.wants(*s))
        .collect();
    let systems: Vec<System> = {
        let mut found: Vec<System> = table.keys().map(|(system, _)| *system).collect();
        found.dedup();
        found
    };
    println!();
    let headings: Vec<&str> = scenarios.iter().map(|s| s.heading()).collect();
    println!("| system | {} |", headings.join(" | "));
    println!("|---|{}", "---|".repeat(scenarios.len()));
    for system in &systems {
        let cells: Vec<String> = scenarios
            .iter()
            .map(|scenario| {
                table
                    .get(&(*system, *scenario))
                    .map_or_else(|| "·".to_owned(), |cell| cell.show(*scenario))
            })
            .collect();
        println!("| {} | {} |", system.label(args), cells.join(" | "));
    }
    // tiger's best row against each peer's best row, per scenario.
    let best = |scenario: Scenario, rows: &[System]| {
        rows.iter()
            .filter_map(|system| table.get(&(*system, scenario))?.median())
            .map(|(value, second)| match scenario {
                Scenario::Latency => second.unwrap_or(value),
                _ => value,
            })
            .reduce(if scenario.lower_is_better() {
                f64::min
            } else {
                f64::max
            })
    };
    let tiger_rows = [System::TigerBest, System::TigerOne];
    for (name, rows) in [
        (
            "TaskTiger",
            &[System::TaskTigerSync, System::TaskTigerFork][..],
        ),
        ("BullMQ", &[System::BullMqBest, System::BullMqOne][..]),
    ] {
        if !systems.iter().any(|s| rows.contains(s)) {
            continue;
        }
        let ratios: Vec<String> = scenarios
            .iter()
            .map(
                |scenario| match (best(*scenario, &tiger_rows), best(*scenario, rows)) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        let ratio = if scenario.lower_is_better() {
                            theirs / ours
                        } else {
                            ours / theirs
                        };
                        format!("**{ratio:.2}×**")
                    }
                    _ => "·".to_owned(),
                },
            )
            .collect();
        println!(
            "| tiger's best ÷ {name}'s best (>1: tiger ahead) | {} |",
            ratios.join(" | ")
        );
    }
    println!();
    let capped = table
        .values()
        .any(|cell| matches!(cell, Cell::Runs(runs) if runs.iter().any(|r| r.partial)));
    let runs = match args.runs {
        1 => "One run".to_owned(),
        n => format!(
            "Median of {n} runs; ±: half the spread between the fastest and slowest run, as a \
             share of the median"
        ),
    };
    let cap = if capped {
        format!(
            " †: a run was stopped at {} s; its rate is over the tasks done by then.",
            args.cap
        )
    } else {
        String::new()
    };
    println!("{runs}.{cap} S4 ratios compare p99. ·: not run in this mode.");
    let skipped: Vec<String> = table
        .iter()
        .filter_map(|((system, scenario), cell)| match cell {
            Cell::Skipped(why) => Some(format!(
                "{} {}: skipped, {why}",
                system.label(args),
                scenario.code()
            )),
            Cell::Runs(_) => None,
        })
        .collect();
    for line in skipped {
        println!("{line}.");
    }
}
