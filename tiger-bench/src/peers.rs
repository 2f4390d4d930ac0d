//! The peers' rows: Python TaskTiger and BullMQ, run as their own processes against the
//! same redis-server. `scripts/bench-peers` installs them under `target/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tiger::{DelayMany, Tiger};
use tokio::process::{Child, Command};

use crate::tiger_side::{micros_now, percentiles, python_noop};
use crate::{Args, Cell, Run, Scenario, System, redis_stats};

/// Where the installed peers are.
#[derive(Debug)]
pub(crate) struct Peers {
    /// This crate's `peers/` folder: the drivers.
    drivers: PathBuf,
    /// The venv's python, with TaskTiger 0.26.3.
    python: PathBuf,
    /// `node_modules` with BullMQ.
    node_modules: PathBuf,
}

type Cells = Vec<(System, Cell)>;

impl Peers {
    /// Runs `scripts/bench-peers`, which installs what is missing and prints the paths.
    pub(crate) fn install() -> Result<Peers, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let output = std::process::Command::new(root.join("scripts/bench-peers"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/bench-peers: {e}"))?;
        if !output.status.success() {
            return Err(format!("scripts/bench-peers failed ({})", output.status));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let (Some(python), Some(node_modules)) = (lines.next(), lines.next()) else {
            return Err(format!("scripts/bench-peers printed {text:?}"));
        };
        Ok(Peers {
            drivers: root.join("tiger-bench/peers"),
            python: python.into(),
            node_modules: node_modules.into(),
        })
    }

    pub(crate) async fn measure(
        &self,
        tiger: &Tiger,
        port: u16,
        args: &Args,
        scenario: Scenario,
    ) -> Result<Cells, String> {
        let mut cells = self.tasktiger(tiger, port, args, scenario).await?;
        cells.extend(self.bullmq(tiger, port, args, scenario).await?);
        Ok(cells)
    }

    async fn tasktiger(
        &self,
        tiger: &Tiger,
        port: u16,
        args: &Args,
        scenario: Scenario,
    ) -> Result<Cells, String> {
        let runs = args.runs;
        let mut sync = Vec::new();
        let mut fork = Vec::new();
        match scenario {
            Scenario::Enqueue => {
                for _ in 0..runs {
                    redis_stats::flush(tiger).await;
                    let values = self.python_driver(port, "enqueue", args.enqueue).await?;
                    sync.push(first(&values));
                }
            }
            Scenario::Bulk => {
                return Ok(vec![(
                    System::TaskTigerSync,
                    Cell::Skipped("TaskTiger has no bulk enqueue API".to_owned()),
                )]);
            }
            Scenario::Drain => {
                for (executor, tasks, into) in [
                    ("sync", args.tasks, &mut sync),
                    ("fork", args.fork_tasks, &mut fork),
                ] {
                    for _ in 0..runs {
                        redis_stats::flush(tiger).await;
                        fill_for_tasktiger(tiger, tasks, None).await;
                        let mut worker = self.tasktiger_worker(port, executor, true)?;
                        into.push(drained(tiger, tasks, tasks, args.cap(), true).await);
                        stop(&mut worker).await;
                    }
                }
            }
            Scenario::Latency => {
                for _ in 0..runs {
                    redis_stats::flush(tiger).await;
                    sync.push(self.tasktiger_latency(tiger, port, args.latency).await?);
                }
            }
            Scenario::Memory => {
                for _ in 0..runs {
                    redis_stats::flush(tiger).await;
                    let before = redis_stats::used_memory(tiger).await;
                    self.python_driver(port, "enqueue", args.tasks).await?;
                    let after = redis_stats::used_memory(tiger).await;
                    sync.push(per_task(before, after, args.tasks));
                }
            }
            Scenario::ManyQueues => {
                let tasks = args.queues * args.per_queue;
                for _ in 0..runs {
                    redis_stats::flush(tiger).await;
                    fill_for_tasktiger(tiger, args.per_queue, Some(args.queues)).await;
                    let mut worker = self.tasktiger_worker(port, "sync", false)?;
                    sync.push(drained(tiger, tasks, tasks, args.cap(), false).await);
                    stop(&mut worker).await;
                }
            }
            Scenario::Backlog => {
                redis_stats::flush(tiger).await;
                fill_for_tasktiger(tiger, args.backlog, None).await;
                let mut worker = self.tasktiger_worker(port, "sync", true)?;
                let mut left = args.backlog;
                for _ in 0..runs {
                    sync.push(drained(tiger, left, args.backlog_take, args.cap(), true).await);
                    left = redis_stats::tasktiger_pending(tiger).await;
                }
                stop(&mut worker).await;
            }
        }
        let mut cells = vec![(System::TaskTigerSync, Cell::Runs(sync))];
        if !fork.is_empty() {
            cells.push((System::TaskTigerFork, Cell::Runs(fork)));
        }
        Ok(cells)
    }

    /// `tasktiger_peer.py SCENARIO COUNT`; its values.
    async fn python_driver(
        &self,
        port: u16,
        scenario: &str,
        count: u64,
    ) -> Result<Vec<f64>, String> {
        let mut command = Command::new(&self.python);
        command
            .arg(self.drivers.join("tasktiger_peer.py"))
            .arg(scenario)
            .arg(count.to_string());
        self.driver_output(command, port).await
    }

    /// A TaskTiger worker over queue `bench` (or every queue), logging into the void.
    fn tasktiger_worker(
        &self,
        port: u16,
        executor: &str,
        bench_only: bool,
    ) -> Result<Child, String> {
        let tasktiger = self.python.with_file_name("tasktiger");
        let mut command = Command::new(tasktiger);
        command
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", "tasktiger_peer", "--executor", executor]);
        if bench_only {
            command.args(["-q", "bench"]);
        }
        command
            .env("PYTHONPATH", &self.drivers)
            .env("BENCH_REDIS_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the TaskTiger worker: {e}"))
    }

    /// S4 for TaskTiger: an idle sync worker, a Python producer one `delay` per ms; the task
    /// pushes its delay to `bench:delays`.
    async fn tasktiger_latency(&self, tiger: &Tiger, port: u16, tasks: u64) -> Result<Run, String> {
        let mut worker = self.tasktiger_worker(port, "sync", true)?;
        let recorded = || async {
            redis::cmd("LLEN")
                .arg("bench:delays")
                .query_async::<u64>(&mut tiger.connection())
                .await
                .unwrap_or(0)
        };
        // One task first, so the worker is idle and listening when the measured ones come.
        python_noop::delay(micros_now())
            .on(tiger)
            .await
            .map_err(|e| e.to_string())?;
        poll(Duration::from_secs(60), || async { recorded().await >= 1 }).await?;
        let _: () = redis::cmd("DEL")
            .arg("bench:delays")
            .query_async(&mut tiger.connection())
            .await
            .map_err(|e| e.to_string())?;
        self.python_driver(port, "latency", tasks).await?;
        poll(Duration::from_secs(300), || async {
            recorded().await >= tasks
        })
        .await?;
        stop(&mut worker).await;
        let delays: Vec<u64> = redis::cmd("LRANGE")
            .arg("bench:delays")
            .arg(0)
            .arg(-1)
            .query_async(&mut tiger.connection())
            .await
            .map_err(|e| e.to_string())?;
        Ok(percentiles(delays))
    }

    async fn bullmq(
        &self,
        tiger: &Tiger,
        port: u16,
        args: &Args,
        scenario: Scenario,
    ) -> Result<Cells, String> {
        let best = args.bullmq_concurrency.to_string();
        let cap = args.cap.to_string();
        let runs = args.runs.to_string();
        let runs_of = |values: Vec<f64>, partial: bool| {
            Cell::Runs(
                values
                    .into_iter()
                    .map(|value| Run {
                        value,
                        second: None,
                        partial,
                    })
                    .collect(),
            )
        };
        let cells = match scenario {
            Scenario::Enqueue | Scenario::Bulk => {
                let (name, count) = match scenario {
                    Scenario::Enqueue => ("enqueue", args.enqueue),
                    _ => ("bulk", args.tasks),
                };
                let mut values = Vec::new();
                for _ in 0..args.runs {
                    redis_stats::flush(tiger).await;
                    let (got, _) = self.node(port, &[name, &count.to_string()]).await?;
                    values.push(first(&got).value);
                }
                vec![(System::BullMqBest, runs_of(values, false))]
            }
            Scenario::Drain => {
                let mut cells = Vec::new();
                for (system, concurrency) in [
                    (System::BullMqBest, best.as_str()),
                    (System::BullMqOne, "1"),
                ] {
                    redis_stats::flush(tiger).await;
                    let count = args.tasks.to_string();
                    let (values, partial) = self
                        .node(port, &["drain", &count, concurrency, &cap, &runs])
                        .await?;
                    cells.push((system, runs_of(values, partial)));
                }
                cells
            }
            Scenario::Latency => {
                let mut cell = Vec::new();
                for _ in 0..args.runs {
                    redis_stats::flush(tiger).await;
                    let count = args.latency.to_string();
                    let (delays, _) = self.node(port, &["latency", &count, &best]).await?;
                    cell.push(percentiles(delays.into_iter().map(|d| d as u64).collect()));
                }
                vec![(System::BullMqBest, Cell::Runs(cell))]
            }
            Scenario::Memory => {
                let mut cell = Vec::new();
                for _ in 0..args.runs {
                    redis_stats::flush(tiger).await;
                    let before = redis_stats::used_memory(tiger).await;
                    self.node(port, &["fill", &args.tasks.to_string()]).await?;
                    let after = redis_stats::used_memory(tiger).await;
                    cell.push(per_task(before, after, args.tasks));
                }
                vec![(System::BullMqBest, Cell::Runs(cell))]
            }
            Scenario::ManyQueues => vec![(
                System::BullMqBest,
                Cell::Skipped(format!(
                    "a BullMQ Worker serves one queue and holds its own blocking connection, \
                     so one worker process over {n} queues would need {n} of them",
                    n = args.queues
                )),
            )],
            Scenario::Backlog => {
                redis_stats::flush(tiger).await;
                let (values, partial) = self
                    .node(
                        port,
                        &[
                            "backlog",
                            &args.backlog.to_string(),
                            &args.backlog_take.to_string(),
                            &best,
                            &cap,
                            &runs,
                        ],
                    )
                    .await?;
                vec![(System::BullMqBest, runs_of(values, partial))]
            }
        };
        Ok(cells)
    }

    /// `node bullmq_peer.js ARGS…`; its values and whether a drain was cut at the cap.
    async fn node(&self, port: u16, args: &[&str]) -> Result<(Vec<f64>, bool), String> {
        let mut command = Command::new("node");
        command
            .arg(self.drivers.join("bullmq_peer.js"))
            .args(args)
            .env("NODE_PATH", &self.node_modules);
        let output = self.driver_json(command, port).await?;
        let partial = output["partial"].as_bool().unwrap_or(false);
        Ok((values_of(&output), partial))
    }

    async fn driver_output(&self, command: Command, port: u16) -> Result<Vec<f64>, String> {
        Ok(values_of(&self.driver_json(command, port).await?))
    }

    /// Runs a driver; parses the JSON line it prints.
    async fn driver_json(
        &self,
        mut command: Command,
        port: u16,
    ) -> Result<serde_json::Value, String> {
        let output = command
            .env("BENCH_REDIS_PORT", port.to_string())
            .env("PYTHONPATH", &self.drivers)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("{command:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!("{command:?} failed ({})", output.status));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().last().unwrap_or("");
        serde_json::from_str(line).map_err(|e| format!("{command:?} printed {line:?}: {e}"))
    }
}

fn values_of(output: &serde_json::Value) -> Vec<f64> {
    output["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect()
        })
        .unwrap_or_default()
}

fn first(values: &[f64]) -> Run {
    Run {
        value: values.first().copied().unwrap_or(0.0),
        ..Run::default()
    }
}

fn per_task(before: f64, after: f64, tasks: u64) -> Run {
    Run {
        value: (after - before) / tasks as f64,
        ..Run::default()
    }
}

/// Queues `per_queue` tasks of TaskTiger's `tasktiger_peer:noop` on queue `bench`, or on
/// each of `queues` queues `q0`, `q1`, …, through tiger's `delay_many` (the layout is the
/// same), 100 000 at a time.
async fn fill_for_tasktiger(tiger: &Tiger, per_queue: u64, queues: Option<u64>) {
    let calls: Vec<(Option<u64>, u64)> = match queues {
        None => (0..per_queue).map(|n| (None, n % 1000)).collect(),
        Some(queues) => (0..queues)
            .flat_map(|q| (0..per_queue).map(move |n| (Some(q), n)))
            .collect(),
    };
    for chunk in calls.chunks(100_000) {
        let delays = chunk.iter().map(|(queue, n)| match queue {
            None => python_noop::delay(*n),
            Some(q) => python_noop::delay(*n).queue(format!("q{q}")),
        });
        DelayMany::new(delays).on(tiger).await.expect("fill");
    }
}

/// Waits while a TaskTiger worker drains: from `pending` tasks left, until `take` are done
/// or `cap` has passed. The clock starts when the worker takes its first task (`from_first`,
/// one queue) or now (many queues, where polling the queue sizes costs too much to do
/// often).
async fn drained(tiger: &Tiger, pending: u64, take: u64, cap: Duration, from_first: bool) -> Run {
    let single = from_first;
    let queued = || async {
        redis::cmd("ZCARD")
            .arg("t:queued:bench")
            .query_async::<u64>(&mut tiger.connection())
            .await
            .unwrap_or(0)
    };
    if single {
        // The worker process starting up is not part of the drain.
        let deadline = Instant::now() + Duration::from_secs(60);
        while queued().await >= pending && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let clock = Instant::now();
    let every = if single {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(1)
    };
    loop {
        let left = redis_stats::tasktiger_pending(tiger).await;
        let done = pending.saturating_sub(left);
        let elapsed = clock.elapsed();
        if done >= take || elapsed >= cap {
            return Run {
                value: done as f64 / elapsed.as_secs_f64(),
                second: None,
                partial: done < take,
            };
        }
        tokio::time::sleep(every).await;
    }
}

async fn poll<F: Future<Output = bool>>(
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done().await {
        if Instant::now() >= deadline {
            return Err(format!("no progress within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn stop(worker: &mut Child) {
    let _ = worker.kill().await;
}
