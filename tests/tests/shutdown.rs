//! Stopping a worker from code: the hand-back of what it took (the worker program's
//! signals and grace period are tested in `process.rs`).

use std::time::Duration;

use tiger::{Config, State, Stopped, Worker, testing::Invariants};
use tiger_tests::*;

#[tokio::test]
async fn a_hand_back_cancels_the_running_group_and_requeues_the_groups_not_started() {
    let fx = Fixture::new().await;
    let config = Config {
        batch_queues: [("handback".to_owned(), 4)].into(),
        ..tiger::testing::test_config()
    };
    let tiger = fx.redis.tiger_with(config).await.unwrap();
    let (held, noted) = (token(), token());
    // One dequeue takes both: `hold` runs first, `note` waits for its group's turn.
    let running = hold::delay(held.clone())
        .queue("handback")
        .on(&tiger)
        .await
        .unwrap();
    let waiting = note::delay(noted.clone(), "never".to_owned())
        .queue("handback")
        .on(&tiger)
        .await
        .unwrap();
    let (now, hand_back) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(tiger.clone())
            .hand_back_on(async { hand_back.await.unwrap_or(()) })
            .run(),
    );
    tiger::testing::wait_until(Duration::from_secs(10), "hold to start", || async {
        count(&held) == 1
    })
    .await;
    now.send(()).unwrap();
    let stopped = worker.await.unwrap().unwrap();
    assert_eq!(stopped, Stopped::Shutdown);

    let keys = tiger.keys();
    let ids = |state| {
        let tiger = tiger.clone();
        async move {
            redis::cmd("ZRANGE")
                .arg(tiger.keys().queue(state, "handback"))
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut tiger.connection())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        ids(State::Error).await,
        [running.to_string()],
        "cut short, no retries"
    );
    assert_eq!(
        ids(State::Queued).await,
        [waiting.to_string()],
        "not started: back as it was"
    );
    assert!(ids(State::Active).await.is_empty(), "nothing left active");
    let records: i64 = redis::cmd("LLEN")
        .arg(keys.executions(waiting.as_str()))
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    assert_eq!(records, 0, "a task that did not start gets no record");
    assert_eq!(count(&noted), 0);
    Invariants::new().assert(&tiger).await;
}

/// S13, the graceful path: a task cut short by the end of the grace period gives its lock
/// back, so its next run need not wait for the lock to lapse.
#[tokio::test]
async fn a_task_cut_short_by_the_shutdown_releases_its_lock() {
    let fx = Fixture::new().await;
    let token = token();
    let id = locked_by_args::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let (now, shutdown) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(fx.tiger.clone())
            .grace_period(Duration::from_millis(200))
            .shutdown_on(async { shutdown.await.unwrap_or(()) })
            .run(),
    );
    tiger::testing::wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) == 1
    })
    .await;
    now.send(()).unwrap();
    assert_eq!(worker.await.unwrap().unwrap(), Stopped::Shutdown);
    // Only the error entry is left: no lock (`Fixture::keys` would list one that lapses
    // by itself only if it had no TTL, so look for it directly).
    fx.assert_only_errored("locked", &[id.as_str()]).await;
    let locks = fx.task_locks().await;
    assert!(locks.is_empty(), "the task lock was given back: {locks:?}");
    Invariants::new().assert(&fx.tiger).await;
}
