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
        text.contains("task started") && text.contains("task succeeded"),
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
    wait_until(
        Duration::from_secs(10),
        "the stale run to end and be refused",
        || async {
            dir.path(&format!("finished-{frozen_pid}")).exists()
                && log_text(&log).contains("no longer active")
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
