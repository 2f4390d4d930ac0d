//! Periodic tasks. They live in this test binary only: every worker queues the periodic
//! tasks linked into it, which the other tests should not see.

use std::sync::Mutex;
use std::time::Duration;

use tiger::{State, Worker, testing::wait_until};
use tiger_tests::*;

/// Run times (whole Unix seconds) of `every_second`, per prefix-free global list.
static RUNS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Named like the Python vector with empty args, so its id can be checked against Python's.
#[tiger::task(name = "tasks:empty", queue = "periodic", schedule = periodic(seconds = 1))]
async fn every_second() {
    let prefix = tiger::current_task().map(|t| t.queue).unwrap_or_default();
    RUNS.lock().unwrap().push((prefix, now_secs()));
}

static FLAKY_RUNS: Mutex<u32> = Mutex::new(0);

/// Fails on its second run only.
#[tiger::task(queue = "periodic-flaky", schedule = periodic(seconds = 1))]
async fn fails_once() -> Result<(), String> {
    let run = {
        let mut runs = FLAKY_RUNS.lock().unwrap();
        *runs += 1;
        *runs
    };
    if run == 2 {
        Err("second run fails".into())
    } else {
        Ok(())
    }
}

/// A cron task; its first run is minutes away, so it only shows up scheduled.
#[tiger::task(queue = "periodic-cron", schedule = cron("*/5 * * * *"))]
async fn every_five_minutes() {}

fn runs_of(queue: &str) -> Vec<u64> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| q == queue)
        .map(|(_, t)| *t)
        .collect()
}

#[tokio::test]
async fn a_periodic_task_runs_once_per_period_across_workers_with_pythons_id() {
    let fx = Fixture::new().await;
    // The id TaskTiger gives "tasks:empty" with no arguments (tests/data/unique_ids.json).
    let id = "62fb3dbd268674c20ddb78b75c69f10da60730f4ad98bdcc8b7089c8d206d67d";
    let workers: Vec<_> = (0..3)
        .map(|_| spawn_worker(Worker::new(fx.tiger.clone()).queues(["periodic"])))
        .collect();
    wait_until(Duration::from_secs(10), "three runs", || async {
        runs_of("periodic").len() >= 3
    })
    .await;
    for worker in workers {
        worker.stop().await;
    }
    let runs = runs_of("periodic");
    let mut seconds = runs.clone();
    seconds.dedup();
    assert_eq!(seconds, runs, "never two runs in one period: {runs:?}");
    // Between runs the next period waits in scheduled, under the same id, with no history.
    assert_eq!(fx.ids(State::Scheduled, "periodic").await, [id]);
    assert!(fx.ids(State::Error, "periodic").await.is_empty());
    fx.assert_keys(
        state_keys(State::Scheduled, "periodic")
            .into_iter()
            .chain([task_key(id)]),
    )
    .await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_failed_period_does_not_stop_the_schedule() {
    let fx = Fixture::new().await;
    let worker = spawn_worker(Worker::new(fx.tiger.clone()).queues(["periodic-flaky"]));
    wait_until(Duration::from_secs(10), "four runs", || async {
        *FLAKY_RUNS.lock().unwrap() >= 4
    })
    .await;
    worker.stop().await;
    let errored = fx.ids(State::Error, "periodic-flaky").await;
    assert_eq!(errored.len(), 1, "the failed run is kept in error");
    assert_eq!(
        fx.ids(State::Scheduled, "periodic-flaky").await,
        errored,
        "and the next period is scheduled"
    );
    assert_eq!(fx.executions(&errored[0]).await.len(), 1);
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_cron_task_is_scheduled_at_its_next_match() {
    let fx = Fixture::new().await;
    fx.drain_with(|w| w.queues(["periodic-cron"])).await;
    let ids = fx.ids(State::Scheduled, "periodic-cron").await;
    assert_eq!(ids.len(), 1);
    let due: f64 = redis::cmd("ZSCORE")
        .arg(fx.tiger.keys().queue(State::Scheduled, "periodic-cron"))
        .arg(&ids[0])
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    let due = due as u64;
    assert_eq!(due % 300, 0, "on a five-minute mark");
    assert!(due > now_secs() && due <= now_secs() + 300);
    // A second worker start does not queue it again.
    fx.drain_with(|w| w.queues(["periodic-cron"])).await;
    assert_eq!(fx.ids(State::Scheduled, "periodic-cron").await, ids);
    faults::assert_idle_invariants(&fx.tiger).await;
}

/// Never valid: minute 61.
#[tiger::task(queue = "periodic-bad", schedule = cron("61 * * * *"))]
async fn bad_cron() {}

#[tokio::test]
async fn a_bad_cron_expression_skips_its_task_not_the_worker() {
    let fx = Fixture::new().await;
    fx.drain_with(|w| w.queues(["periodic-bad", "periodic-cron"]))
        .await;
    assert!(fx.ids(State::Scheduled, "periodic-bad").await.is_empty());
    assert_eq!(
        fx.ids(State::Scheduled, "periodic-cron").await.len(),
        1,
        "the others are queued"
    );
    faults::assert_idle_invariants(&fx.tiger).await;
}
