//! The worker as a user runs it: the `tiger::run_worker()` binary, driven by flags and
//! signals.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tiger::{State, testing::wait_until};
use tiger_tests::*;

const WORKER: &str = env!("CARGO_BIN_EXE_tiger-test-worker");

/// Starts the worker binary on the fixture's Redis (given through `REDIS_URL`, as a
/// deployment would) and prefix, logging to `log`.
fn start_worker(fx: &Fixture, log: &std::path::Path, extra: &[&str]) -> Child {
    let args = [&["--prefix", fx.tiger.keys().prefix()], extra].concat();
    spawn_binary(&[("REDIS_URL", fx.redis.url())], &args, log)
}

/// Starts the worker binary with `env` and `args`, logging at `info` to `log`.
fn spawn_binary(env: &[(&str, &str)], args: &[&str], log: &std::path::Path) -> Child {
    Command::new(WORKER)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the worker binary")
}

/// Sends `signal` (`TERM`, `STOP`, ...) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

async fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn log_text(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// SIGTERMs `worker` and asserts that it exits 0 within 10 s.
async fn stop_gracefully(worker: &mut Child, log: &std::path::Path) {
    stop_gracefully_within(worker, log, Duration::from_secs(10)).await;
}

/// SIGTERMs `worker` and asserts that it exits 0 within `limit`.
async fn stop_gracefully_within(worker: &mut Child, log: &std::path::Path, limit: Duration) {
    signal(worker, "TERM");
    let status = wait_for_exit(worker, limit).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(log)
    );
}

/// Enqueues an already released `file_gate` task 1 in `dir` and waits until the running
/// worker has run it: the worker still takes work.
async fn runs_next_task(fx: &Fixture, dir: &TempDir) {
    std::fs::write(dir.path("release"), b"").unwrap();
    let folder = dir.0.to_string_lossy().into_owned();
    file_gate::delay(folder, 1).on(&fx.tiger).await.unwrap();
    wait_until(Duration::from_secs(10), "the next task", || async {
        dir.path("finished-1").exists()
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_the_running_task_finish_takes_no_more_and_exits_zero() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let folder = dir.0.to_string_lossy().into_owned();
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.push(
            file_gate::delay(folder.clone(), n)
                .on(&fx.tiger)
                .await
                .unwrap(),
        );
    }
    let log = dir.path("worker.log");
    let mut worker = start_worker(&fx, &log, &["--concurrency", "1"]);

    wait_until(Duration::from_secs(20), "a task to start", || async {
        dir.path("started-1").exists() || dir.path("started-2").exists()
    })
    .await;
    let running = if dir.path("started-1").exists() { 1 } else { 2 };
    signal(&worker, "TERM");
    wait_until(
        Duration::from_secs(10),
        "the worker to log its shutdown",
        || async { log_text(&log).contains("shutting down") },
    )
    .await;
    std::fs::write(dir.path("release"), b"").unwrap();

    let status = wait_for_exit(&mut worker, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(&log)
    );
    assert!(
        dir.path(&format!("finished-{running}")).exists(),
        "the running task finished"
    );
    let waiting = 3 - running;
    assert!(
        !dir.path(&format!("started-{waiting}")).exists(),
        "no task was taken after SIGTERM"
    );
    let waiting_id = ids[waiting as usize - 1].to_string();
    assert_eq!(fx.ids(State::Queued, "files").await, [waiting_id.as_str()]);
    assert!(fx.ids(State::Active, "files").await.is_empty());
    assert_eq!(
        fx.keys().await,
        set(&["queued", "queued:files", &format!("task:{waiting_id}")])
    );
}

#[tokio::test]
async fn once_flag_drains_and_exits_zero() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    std::fs::write(dir.path("release"), b"").unwrap();
    let folder = dir.0.to_string_lossy().into_owned();
    for n in 1..=5 {
        file_gate::delay(folder.clone(), n)
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    note::delay(token(), "other".into())
        .queue("other")
        .on(&fx.tiger)
        .await
        .unwrap();
    let log = dir.path("worker.log");
    let mut worker = start_worker(&fx, &log, &["--once", "-q", "files", "--concurrency", "2"]);
    let status = wait_for_exit(&mut worker, Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(&log)
    );
    for n in 1..=5 {
        assert!(dir.path(&format!("finished-{n}")).exists(), "task {n} ran");
    }
    let other = fx.ids(State::Queued, "other").await;
    assert_eq!(other.len(), 1, "-q kept the worker off `other`");
    fx.assert_keys(
        state_keys(State::Queued, "other")
            .into_iter()
            .chain([task_key(&other[0])]),
    )
    .await;
    let text = log_text(&log);
    assert!(
        !text.contains("task started") && text.contains("task succeeded"),
        "{text}"
    );
    assert!(
        text.contains("task_id=") && text.contains("func=") && text.contains("queue=files"),
        "{text}"
    );
}

#[tokio::test]
async fn a_plain_fn_stuck_past_its_hard_timeout_does_not_hold_up_the_exit() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    stuck::delay(60).on(&fx.tiger).await.unwrap();
    let log = dir.path("worker.log");
    let mut worker = start_worker(&fx, &log, &["--once"]);
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(&log)
    );
    assert_eq!(
        fx.ids(State::Error, "stuck").await.len(),
        1,
        "recorded as timed out"
    );
}

#[test]
fn help_lists_the_flags() {
    let output = Command::new(WORKER).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--queues",
        "--exclude-queues",
        "--redis-url",
        "--prefix",
        "--concurrency",
        "--once",
        "REDIS_URL",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let output = Command::new(WORKER)
        .arg("--concurrency=0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be at least 1"));
}

/// Starts the worker binary on a task that holds until released, SIGKILLs it mid-task, and
/// returns once the task is active with no worker.
async fn kill_mid_task(fx: &Fixture, dir: &TempDir) {
    let log = dir.path("worker.log");
    let mut worker = start_worker(fx, &log, &["-q", "files"]);
    wait_until(Duration::from_secs(20), "the task to start", || async {
        dir.path("started-1").exists()
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(
        fx.ids(State::Active, "files").await.len(),
        1,
        "left active by the dead worker"
    );
}

#[tokio::test]
async fn a_task_whose_worker_is_killed_is_recovered_to_error_with_a_record() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let id = file_gate::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    kill_mid_task(&fx, &dir).await;
    // Another worker (test timers: lost after 2 s, looked for every 0.4 s) recovers it.
    let rescuer = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["elsewhere"]));
    wait_until(
        Duration::from_secs(10),
        "the lost task to be recovered",
        || async { fx.ids(State::Error, "files").await == [id.as_str()] },
    )
    .await;
    rescuer.stop().await;
    let records = fx.executions(id.as_str()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["exception_name"],
        "tasktiger.exceptions:JobTimeoutException"
    );
    assert!(
        records[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("worker lost")
    );
    fx.assert_only_errored("files", &[id.as_str()]).await;
}

#[tokio::test]
async fn a_retrying_task_whose_worker_is_killed_runs_again_and_the_run_counts() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let id = file_gate_retried::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    kill_mid_task(&fx, &dir).await;
    std::fs::write(dir.path("release"), b"").unwrap();
    let rescuer = spawn_worker(tiger::Worker::new(fx.tiger.clone()));
    wait_until(
        Duration::from_secs(10),
        "the task to run again and finish",
        || async { dir.path("finished-1").exists() && fx.keys().await.is_empty() },
    )
    .await;
    rescuer.stop().await;
    let _ = id;
}

#[tokio::test]
async fn a_frozen_worker_that_wakes_after_its_task_was_recovered_changes_nothing() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let id = pid_gate::delay(dir.0.to_string_lossy().into_owned())
        .on(&fx.tiger)
        .await
        .unwrap();
    let log = dir.path("frozen.log");
    let mut frozen = start_worker(&fx, &log, &["-q", "pid"]);
    let frozen_pid = frozen.id();
    wait_until(Duration::from_secs(20), "the task to start", || async {
        dir.path(&format!("started-{frozen_pid}")).exists()
    })
    .await;
    signal(&frozen, "STOP");

    // Another worker finds the task lost (no heartbeat for 2 s), retries it and runs it.
    let rescuer = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["pid"]));
    let me = std::process::id();
    wait_until(
        Duration::from_secs(15),
        "the rescuer to run the task again",
        || async { dir.path(&format!("started-{me}")).exists() },
    )
    .await;

    // The frozen worker wakes up and finishes its stale run while the rescuer's is active.
    std::fs::write(dir.path(&format!("release-{frozen_pid}")), b"").unwrap();
    signal(&frozen, "CONT");
    // Whichever comes first on waking: the stale run's result is refused, or its
    // heartbeat finds the task gone and the run is cancelled.
    wait_until(
        Duration::from_secs(10),
        "the stale run to end and be refused",
        || async {
            let log = log_text(&log);
            log.contains("no longer active") || log.contains("cancelling this run")
        },
    )
    .await;
    assert_eq!(
        fx.ids(State::Active, "pid").await,
        [id.as_str()],
        "still the rescuer's"
    );
    assert!(
        fx.body(id.as_str()).await.is_some(),
        "its body was not deleted"
    );

    std::fs::write(dir.path(&format!("release-{me}")), b"").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the rescuer's run to be recorded",
        || async { fx.keys().await.is_empty() },
    )
    .await;
    rescuer.stop().await;
    let _ = frozen.kill();
    let _ = frozen.wait();
}

#[tokio::test]
async fn a_worker_started_before_its_redis_waits_for_it() {
    let port = tiger::testing::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let prefix = tiger::testing::unique_prefix();
    let mut worker = spawn_binary(
        &[],
        &["--redis-url", &url, "--prefix", &prefix, "-q", "files"],
        &log,
    );
    wait_until(
        Duration::from_secs(10),
        "the worker to wait for Redis",
        || async { log_text(&log).contains("waiting for Redis") },
    )
    .await;
    assert!(worker.try_wait().unwrap().is_none(), "still running");

    let _server = tiger::testing::RedisServer::start_on(port).unwrap();
    let config = tiger::Config {
        redis_prefix: prefix,
        ..tiger::testing::test_config()
    };
    let tiger = tiger::Tiger::connect_with(&url, config).await.unwrap();
    std::fs::write(dir.path("release"), b"").unwrap();
    file_gate::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&tiger)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the task to run once Redis is up",
        || async { dir.path("finished-1").exists() },
    )
    .await;
    signal(&worker, "TERM");
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; log:\n{}", log_text(&log));
}

#[tokio::test]
async fn a_worker_waiting_for_redis_stops_on_sigterm() {
    let port = tiger::testing::free_port().unwrap();
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let mut worker = spawn_binary(
        &[],
        &["--redis-url", &format!("redis://127.0.0.1:{port}")],
        &log,
    );
    wait_until(
        Duration::from_secs(10),
        "the worker to wait for Redis",
        || async { log_text(&log).contains("waiting for Redis") },
    )
    .await;
    signal(&worker, "TERM");
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// Starts a worker on `file_gate` task 1 (no retries) and `file_gate_retried` task 2, both
/// held until released, and returns once both run. Their ids, in that order.
async fn two_running(fx: &Fixture, dir: &TempDir, flags: &[&str]) -> (Child, [String; 2]) {
    let folder = dir.0.to_string_lossy().into_owned();
    let once = file_gate::delay(folder.clone(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    let retried = file_gate_retried::delay(folder, 2)
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = start_worker(fx, &dir.path("worker.log"), flags);
    wait_until(Duration::from_secs(20), "both tasks to start", || async {
        dir.path("started-1").exists() && dir.path("started-2").exists()
    })
    .await;
    (worker, [once.to_string(), retried.to_string()])
}

/// After a hand-back: the task that does not retry is in error, the one that retries is
/// queued again, each with one record saying the worker stopped; nothing is active.
async fn assert_handed_back(fx: &Fixture, [once, retried]: &[String; 2]) {
    assert_eq!(fx.ids(State::Error, "files").await, [once.as_str()]);
    assert_eq!(fx.ids(State::Queued, "files").await, [retried.as_str()]);
    assert!(fx.ids(State::Active, "files").await.is_empty());
    for id in [once, retried] {
        let records = fx.executions(id).await;
        assert_eq!(records.len(), 1, "one record for {id}");
        assert!(
            records[0]["traceback"]
                .as_str()
                .unwrap()
                .contains("the worker stopped before the task finished"),
            "{records:?}"
        );
    }
    tiger::testing::Invariants::new().assert(&fx.tiger).await;
}

#[tokio::test]
async fn after_the_grace_period_tasks_in_flight_are_handed_back_before_exit() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let flags = ["-c", "2", "--grace-period", "1"];
    let (mut worker, ids) = two_running(&fx, &dir, &flags).await;
    signal(&worker, "TERM");
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).await;
    let log = log_text(&dir.path("worker.log"));
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("grace period is over"), "{log}");
    assert_handed_back(&fx, &ids).await;
    // The retried task runs to the end on the next worker, without waiting for recovery.
    std::fs::write(dir.path("release"), b"").unwrap();
    let next = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["files"]));
    wait_until(
        Duration::from_secs(10),
        "the handed-back task to run",
        || async { dir.path("finished-2").exists() },
    )
    .await;
    next.stop().await;
    assert!(
        !dir.path("finished-1").exists(),
        "the task that does not retry did not run again"
    );
}

#[tokio::test]
async fn a_second_signal_hands_back_at_once() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let flags = ["-c", "2", "--grace-period", "600"];
    let (mut worker, ids) = two_running(&fx, &dir, &flags).await;
    signal(&worker, "TERM");
    wait_until(Duration::from_secs(10), "the shutdown to begin", || async {
        log_text(&dir.path("worker.log")).contains("shutting down")
    })
    .await;
    signal(&worker, "INT");
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).await;
    let log = log_text(&dir.path("worker.log"));
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("stopping at once"), "{log}");
    assert_handed_back(&fx, &ids).await;
}

/// How many times the worker in `log` logged that it was ready.
fn starts(log: &std::path::Path) -> usize {
    log_text(log).matches("worker ready").count()
}

#[tokio::test]
async fn exit_after_restarts_the_process_in_place_and_work_goes_on() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    // 0.01 minutes: 0.6 s.
    let mut worker = start_worker(&fx, &log, &["--exit-after", "0.01"]);
    wait_until(Duration::from_secs(20), "two restarts", || async {
        starts(&log) >= 3
    })
    .await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "same process, still running"
    );
    runs_next_task(&fx, &dir).await;
    stop_gracefully(&mut worker, &log).await;
    assert!(log_text(&log).contains("restarting the worker process"));
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn a_plain_fn_stuck_past_its_hard_timeout_makes_the_worker_restart_and_go_on() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let stuck_id = stuck::delay(600).on(&fx.tiger).await.unwrap();
    let mut worker = start_worker(&fx, &log, &["-q", "stuck,files"]);
    wait_until(Duration::from_secs(20), "the restart", || async {
        starts(&log) >= 2
    })
    .await;
    assert_eq!(fx.ids(State::Error, "stuck").await, [stuck_id.as_str()]);
    runs_next_task(&fx, &dir).await;
    stop_gracefully(&mut worker, &log).await;
}

/// The pids of the processes that started a `pid_gate` task in `dir`.
fn gate_pids(dir: &TempDir) -> Vec<u32> {
    std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("started-")?
                .parse::<u32>()
                .ok()
        })
        .collect()
}

/// Waits until a `pid_gate` task in `dir` runs in a child process; returns its pid.
async fn gate_child(dir: &TempDir) -> u32 {
    wait_until(
        Duration::from_secs(20),
        "the task to start in a child",
        || async { !gate_pids(dir).is_empty() },
    )
    .await;
    gate_pids(dir)[0]
}

/// Enqueues a `pid_gate` task, starts the worker binary with `flags` (logging to
/// `worker.log` in `dir`) and returns it with the pid of the child running the task.
async fn gate_in_child(fx: &Fixture, dir: &TempDir, flags: &[&str]) -> (Child, u32) {
    pid_gate::delay(dir.0.to_string_lossy().into_owned())
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = start_worker(fx, &dir.path("worker.log"), flags);
    (worker, gate_child(dir).await)
}

/// `time_failed - time_started` of the only record of `id`, with the record.
async fn run_time(fx: &Fixture, id: &str) -> (f64, serde_json::Value) {
    let records = fx.executions(id).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = records[0].clone();
    let took = record["time_failed"].as_f64().unwrap() - record["time_started"].as_f64().unwrap();
    (took, record)
}

#[tokio::test]
async fn the_process_executor_kills_what_cannot_be_cancelled_at_its_hard_timeout() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let spinning = spin::delay().on(&fx.tiger).await.unwrap();
    let blocked = stuck::delay(600).on(&fx.tiger).await.unwrap();
    let flags = ["-q", "spin,stuck,files", "-c", "2", "--executor", "process"];
    let mut worker = start_worker(&fx, &log, &flags);
    wait_until(Duration::from_secs(20), "both to time out", || async {
        fx.ids(State::Error, "spin").await.len() == 1
            && fx.ids(State::Error, "stuck").await.len() == 1
    })
    .await;
    let grace = tiger::worker::KILL_GRACE.as_secs_f64();
    let (took, record) = run_time(&fx, spinning.as_str()).await;
    assert_eq!(
        record["exception_name"],
        "tasktiger.exceptions:JobTimeoutException"
    );
    assert!(
        record["traceback"]
            .as_str()
            .unwrap()
            .contains("killed (SIGKILL)"),
        "{record}"
    );
    assert!(
        (1.0..1.0 + grace + 1.0).contains(&took),
        "spin stopped after {took} s"
    );
    let (took, record) = run_time(&fx, blocked.as_str()).await;
    assert_eq!(
        record["exception_name"],
        "tasktiger.exceptions:JobTimeoutException"
    );
    assert!(
        (0.3..0.3 + grace + 1.0).contains(&took),
        "stuck stopped after {took} s"
    );
    // The worker goes on, in the same process, with its slots free.
    runs_next_task(&fx, &dir).await;
    stop_gracefully(&mut worker, &log).await;
    assert_eq!(starts(&log), 1, "never restarted");
    tiger::testing::Invariants::new().assert(&fx.tiger).await;
}

#[tokio::test]
async fn a_child_that_aborts_or_is_killed_fails_only_its_task() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let aborted = abort_process::delay().on(&fx.tiger).await.unwrap();
    // Retries after a failure: once its first child is killed, it runs again.
    pid_gate::delay(dir.0.to_string_lossy().into_owned())
        .on(&fx.tiger)
        .await
        .unwrap();
    let flags = ["-q", "spin,pid", "-c", "2", "--executor", "process"];
    let mut worker = start_worker(&fx, &log, &flags);
    wait_until(
        Duration::from_secs(20),
        "the abort to be recorded",
        || async { fx.ids(State::Error, "spin").await.len() == 1 },
    )
    .await;
    let (_, record) = run_time(&fx, aborted.as_str()).await;
    assert_eq!(record["exception_name"], tiger::worker::CHILD_DIED);
    assert!(
        record["traceback"].as_str().unwrap().contains("SIGABRT"),
        "{record}"
    );
    let started = || gate_pids(&dir);
    gate_child(&dir).await;
    let first = started()[0];
    assert_ne!(first, worker.id(), "runs in a child, not in the worker");
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_until(
        Duration::from_secs(20),
        "a second child to run it",
        || async { started().len() == 2 },
    )
    .await;
    let second = started().into_iter().find(|pid| *pid != first).unwrap();
    std::fs::write(dir.path(&format!("release-{second}")), b"").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the retried task to finish",
        || async {
            dir.path(&format!("finished-{second}")).exists()
                && fx.ids(State::Scheduled, "pid").await.is_empty()
                && fx.ids(State::Active, "pid").await.is_empty()
                && fx.ids(State::Queued, "pid").await.is_empty()
        },
    )
    .await;
    stop_gracefully(&mut worker, &log).await;
    fx.assert_only_errored("spin", &[aborted.as_str()]).await;
}

/// The kill loop (issue 4): `TIGER_SOAK_TASKS` tasks (default 10 000), half that run at most
/// once and half that retry, on three worker processes of which one is SIGKILLed and
/// restarted every 250 ms until the queue is nearly drained. Prints its figures; run
/// `cargo test -p tiger-tests --test process soak -- --nocapture` to see them.
#[tokio::test]
async fn soak_kill_loop_loses_nothing_and_runs_at_most_once_tasks_at_most_once() {
    use futures_util::future::join_all;
    use rand::Rng;
    use std::collections::HashMap;

    let tasks: u32 = std::env::var("TIGER_SOAK_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let clock = std::time::Instant::now();
    let mut task_of: HashMap<String, u32> = HashMap::new();
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(200) {
        let ids = join_all(chunk.iter().map(|&n| {
            let tiger = fx.tiger.clone();
            async move {
                let ms = u64::from(n % 4);
                let id = if n % 2 == 0 {
                    soak_once::delay(n, ms).on(&tiger).await
                } else {
                    soak_retried::delay(n, ms).on(&tiger).await
                };
                (id.unwrap().to_string(), n)
            }
        }))
        .await;
        task_of.extend(ids);
    }
    let mut spawned = 0;
    let mut spawn = || {
        spawned += 1;
        start_worker(
            &fx,
            &dir.path(&format!("worker-{spawned}.log")),
            &["-q", "soak", "-c", "20"],
        )
    };
    let mut workers: Vec<Child> = (0..3).map(|_| spawn()).collect();
    let remaining = || async {
        let mut n = 0;
        for state in [State::Queued, State::Active, State::Scheduled] {
            n += fx.ids(state, "soak").await.len();
        }
        n
    };
    let mut kills = 0;
    let deadline = clock + Duration::from_secs(300);
    loop {
        let left = remaining().await;
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} tasks still not settled"
        );
        if left > 50 {
            let victim = rand::rng().random_range(0..workers.len());
            workers[victim].kill().unwrap();
            workers[victim].wait().unwrap();
            kills += 1;
            workers[victim] = spawn();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for worker in &workers {
        signal(worker, "TERM");
    }
    for worker in &mut workers {
        let status = wait_for_exit(worker, Duration::from_secs(30)).await;
        assert!(status.success(), "a worker exited with {status}");
    }
    let done: HashMap<u32, u32> = redis::cmd("HGETALL")
        .arg(format!("soak-done:{}", fx.tiger.keys().prefix()))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    let errored: Vec<u32> = fx
        .ids(State::Error, "soak")
        .await
        .iter()
        .map(|id| task_of[id])
        .collect();
    let runs = |n: u32| done.get(&n).copied().unwrap_or(0);
    let lost: Vec<u32> = (0..tasks)
        .filter(|&n| runs(n) == 0 && !errored.contains(&n))
        .collect();
    let twice: Vec<u32> = (0..tasks).step_by(2).filter(|&n| runs(n) > 1).collect();
    let retried_errored = errored.iter().filter(|&&n| n % 2 == 1).count();
    let duplicates: u32 = (1..tasks)
        .step_by(2)
        .map(|n| runs(n).saturating_sub(1))
        .sum();
    let finished_then_errored = errored.iter().filter(|&&n| runs(n) == 1).count();
    println!(
        "soak: {tasks} tasks, {kills} kills, {:.1} s; lost {}; at-most-once tasks run twice {}; \
         at-most-once tasks interrupted and left in error {} (of which {} had finished their \
         work before the kill, outcome unknown to the worker); retrying tasks in error {}; \
         retrying tasks' extra runs {duplicates}",
        clock.elapsed().as_secs_f64(),
        lost.len(),
        twice.len(),
        errored.len(),
        finished_then_errored,
        retried_errored,
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        twice.is_empty(),
        "at-most-once tasks that ran twice: {twice:?}"
    );
    assert_eq!(retried_errored, 0, "a retrying task ended in error");
    tiger::testing::Invariants::new()
        .heartbeats_within(tiger::testing::recovery_bound(
            &tiger::testing::test_config(),
        ))
        .assert(&fx.tiger)
        .await;
}

#[tokio::test]
async fn sigterm_while_redis_is_down_exits_and_the_task_is_recovered_later() {
    let keys_under = |tiger: &tiger::Tiger| {
        let (tiger, pattern) = (tiger.clone(), format!("{}:*", tiger.keys().prefix()));
        async move {
            redis::cmd("KEYS")
                .arg(pattern)
                .query_async::<Vec<String>>(&mut tiger.connection())
                .await
                .map_or(usize::MAX, |keys| {
                    // Locks and the dashboard's keys expire by themselves.
                    keys.iter()
                        .filter(|k| !k.contains(":lockv2:") && !k.contains(":tiger:"))
                        .count()
                })
        }
    };
    let (data, dir) = (TempDir::new(), TempDir::new());
    let mut server = tiger::testing::RedisServer::start_persistent(&data.0).unwrap();
    let url = server.url();
    let config = tiger::Config {
        redis_prefix: tiger::testing::unique_prefix(),
        ..tiger::testing::test_config()
    };
    let prefix = config.redis_prefix.clone();
    let tiger = tiger::Tiger::connect_with(&url, config).await.unwrap();
    file_gate_retried::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&tiger)
        .await
        .unwrap();
    let log = dir.path("worker.log");
    let flags = ["--prefix", &prefix, "--grace-period", "1"];
    let mut worker = spawn_binary(&[("REDIS_URL", &url)], &flags, &log);
    wait_until(Duration::from_secs(20), "the task to start", || async {
        dir.path("started-1").exists()
    })
    .await;
    server.kill();
    stop_gracefully_within(&mut worker, &log, Duration::from_secs(30)).await;
    // The hand-back could not reach Redis: the task is still active there, and is
    // recovered once Redis is back.
    server.start_again().unwrap();
    std::fs::write(dir.path("release"), b"").unwrap();
    let rescuer = spawn_worker(tiger::Worker::new(tiger.clone()));
    wait_until(
        Duration::from_secs(20),
        "the task to run to the end",
        || async { dir.path("finished-1").exists() && keys_under(&tiger).await == 0 },
    )
    .await;
    rescuer.stop().await;
}

#[tokio::test]
async fn a_childs_output_and_its_own_children_do_not_change_its_outcome() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    print_partial::delay().on(&fx.tiger).await.unwrap();
    leave_a_sleeper::delay().on(&fx.tiger).await.unwrap();
    read_stdin::delay().on(&fx.tiger).await.unwrap();
    let clock = std::time::Instant::now();
    let flags = ["-q", "spin", "-c", "3", "--executor", "process"];
    let mut worker = start_worker(&fx, &log, &flags);
    wait_until(Duration::from_secs(20), "both to succeed", || async {
        fx.keys().await.is_empty()
    })
    .await;
    // Not held up until the sleeper (5 s) lets go of the output it inherited.
    assert!(
        clock.elapsed() < Duration::from_secs(4),
        "{:?}",
        clock.elapsed()
    );
    stop_gracefully(&mut worker, &log).await;
}

#[tokio::test]
async fn a_child_stops_when_its_worker_is_killed() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let (mut worker, child) =
        gate_in_child(&fx, &dir, &["-q", "pid", "--executor", "process"]).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the orphaned child to stop",
        || async {
            !std::path::Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z "))
        },
    )
    .await;
    assert!(!dir.path(&format!("finished-{child}")).exists());
}

#[tokio::test]
async fn a_signal_during_an_exit_after_wind_down_ends_the_process() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    file_gate::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    // The task runs past the --exit-after time (0.6 s): the worker waits for it to restart.
    let mut worker = start_worker(&fx, &log, &["--exit-after", "0.01", "--grace-period", "1"]);
    wait_until(Duration::from_secs(20), "the wind-down", || async {
        log_text(&log).contains("the --exit-after time has passed")
    })
    .await;
    stop_gracefully(&mut worker, &log).await;
    assert_eq!(starts(&log), 1, "no restart after the signal");
    assert!(!log_text(&log).contains("restarting the worker process"));
}

#[tokio::test]
async fn a_signal_to_the_whole_process_group_leaves_the_children_their_grace_period() {
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    file_gate::delay(dir.0.to_string_lossy().into_owned(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    // As a terminal's Ctrl-C or systemd's default stop: the signal goes to the group.
    let mut worker = Command::new(WORKER)
        .args([
            "--prefix",
            fx.tiger.keys().prefix(),
            "--executor",
            "process",
        ])
        .env("REDIS_URL", fx.redis.url())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the task to start", || async {
        dir.path("started-1").exists()
    })
    .await;
    let group = format!("-{}", worker.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    wait_until(Duration::from_secs(10), "the shutdown to begin", || async {
        log_text(&log).contains("shutting down")
    })
    .await;
    std::fs::write(dir.path("release"), b"").unwrap();
    let status = wait_for_exit(&mut worker, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(&log)
    );
    assert!(
        dir.path("finished-1").exists(),
        "the task finished in its grace period"
    );
    fx.assert_keys([]).await;
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.contains(") Z "))
}

#[tokio::test]
async fn what_a_task_started_is_killed_with_it_at_its_hard_timeout() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let id = sleeper_then_stuck::delay(dir.0.to_string_lossy().into_owned())
        .on(&fx.tiger)
        .await
        .unwrap();
    let mut worker = start_worker(&fx, &log, &["-q", "spin", "--executor", "process"]);
    wait_until(
        Duration::from_secs(20),
        "the timeout to be recorded",
        || async { fx.ids(State::Error, "spin").await == [id.as_str()] },
    )
    .await;
    let sleeper: u32 = std::fs::read_to_string(dir.path("sleeper"))
        .unwrap()
        .parse()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the task's own child to be killed",
        || async { ended(sleeper) },
    )
    .await;
    stop_gracefully(&mut worker, &log).await;
}

#[tokio::test]
async fn a_sigterm_to_every_process_of_the_worker_leaves_the_child_its_grace_period() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let log = dir.path("worker.log");
    let flags = ["-q", "pid", "--executor", "process", "--grace-period", "20"];
    let (mut worker, child) = gate_in_child(&fx, &dir, &flags).await;
    // What systemd's default KillMode does: SIGTERM to every process of the unit.
    for pid in [worker.id(), child] {
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    wait_until(Duration::from_secs(10), "the shutdown to begin", || async {
        log_text(&log).contains("shutting down")
    })
    .await;
    assert!(!ended(child), "the child ignores the signal");
    std::fs::write(dir.path(&format!("release-{child}")), b"").unwrap();
    let status = wait_for_exit(&mut worker, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text(&log)
    );
    assert!(dir.path(&format!("finished-{child}")).exists());
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn the_process_executor_leaves_nothing_in_the_temp_dir() {
    let fx = Fixture::new().await;
    let (dir, tmp) = (TempDir::new(), TempDir::new());
    let log = dir.path("worker.log");
    let tmp_path = tmp.0.to_string_lossy().into_owned();
    let env = [("REDIS_URL", fx.redis.url()), ("TMPDIR", tmp_path.as_str())];
    let flags = [
        "--prefix",
        fx.tiger.keys().prefix(),
        "--executor",
        "process",
    ];
    let mut worker = spawn_binary(&env, &flags, &log);
    runs_next_task(&fx, &dir).await;
    stop_gracefully(&mut worker, &log).await;
    let left: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
