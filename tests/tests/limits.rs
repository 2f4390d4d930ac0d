//! Queue limits through the queue semaphore `t:qslock:<queue>`: `max_workers_per_queue`
//! (`-M`), single-worker queues, and pausing a queue (the system lock).

use std::time::{Duration, SystemTime};

use tiger::{Config, Worker, testing::Invariants};
use tiger_tests::*;

const WAIT: Duration = Duration::from_secs(20);

/// Enqueues `n` crowd tasks of `ms` on `tiger`, runs `workers` workers made by `worker`
/// until they are all done, and returns the most that ran at once.
async fn crowd_peak(
    fx: &Fixture,
    tiger: &tiger::Tiger,
    n: usize,
    ms: u64,
    worker: impl Fn() -> Worker,
) -> usize {
    let token = token();
    for _ in 0..n {
        crowd::delay(token.clone(), ms).on(tiger).await.unwrap();
    }
    let workers: Vec<_> = (0..2).map(|_| spawn_worker(worker())).collect();
    tiger::testing::wait_until(WAIT, "every crowd task to run", || async {
        count(&token) == n && fx.redis.keys(tiger).await.unwrap().is_empty()
    })
    .await;
    for worker in workers {
        worker.stop().await;
    }
    Invariants::new().assert(tiger).await;
    gate_peak(&token)
}

#[tokio::test]
async fn max_workers_per_queue_caps_tasks_in_flight_across_the_fleet() {
    let fx = Fixture::new().await;
    let tiger = fx.tiger.clone();
    let capped = crowd_peak(&fx, &tiger, 6, 200, || {
        Worker::new(tiger.clone())
            .concurrency(4)
            .max_workers_per_queue(2)
    })
    .await;
    assert_eq!(capped, 2, "two workers of four slots each, -M 2");
    let free = crowd_peak(&fx, &tiger, 6, 200, || {
        Worker::new(tiger.clone()).concurrency(4)
    })
    .await;
    assert!(free > 2, "without -M more run at once ({free})");
}

#[tokio::test]
async fn a_single_worker_queue_runs_one_task_at_a_time_with_places_renewed() {
    let fx = Fixture::new().await;
    let config = Config {
        single_worker_queues: vec!["crowd".into()],
        ..tiger::testing::test_config()
    };
    let tiger = fx.redis.tiger_with(config).await.unwrap();
    // Each task outlives ACTIVE_TASK_UPDATE_TIMEOUT (2 s in tests): only heartbeats keep
    // its place, so a second one never starts beside it.
    let peak = crowd_peak(&fx, &tiger, 2, 2_500, || {
        Worker::new(tiger.clone()).concurrency(4)
    })
    .await;
    assert_eq!(peak, 1);
}

#[tokio::test]
async fn a_paused_queue_is_not_taken_from_until_the_pause_ends() {
    let fx = Fixture::new().await;
    let token = token();
    fx.tiger
        .set_queue_system_lock("crowd", Duration::from_millis(1_500))
        .await
        .unwrap();
    let until = fx
        .tiger
        .get_queue_system_lock("crowd")
        .await
        .unwrap()
        .expect("paused");
    assert!(until > SystemTime::now());
    crowd::delay(token.clone(), 1).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    tiger::testing::wait_until(WAIT, "the task to run", || async { count(&token) == 1 }).await;
    worker.stop().await;
    let started = take::<SystemTime>(&token)[0];
    assert!(
        started >= until,
        "started {started:?}, pause until {until:?}"
    );
    assert_eq!(fx.tiger.get_queue_system_lock("crowd").await.unwrap(), None);
    Invariants::new().assert(&fx.tiger).await;
}

#[tokio::test]
async fn the_place_of_a_dead_worker_expires() {
    let fx = Fixture::new().await;
    let token = token();
    // A worker that died holding the only place, until 1.5 s from now.
    let held_until = SystemTime::now() + Duration::from_millis(1_500);
    let score = held_until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let key = fx.tiger.keys().queue_semaphore("crowd");
    redis::cmd("ZADD")
        .arg(&key)
        .arg(score)
        .arg("dead-worker:some-task")
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    redis::cmd("EXPIRE")
        .arg(&key)
        .arg(60)
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    crowd::delay(token.clone(), 1).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()).max_workers_per_queue(1));
    tiger::testing::wait_until(WAIT, "the task to run", || async { count(&token) == 1 }).await;
    worker.stop().await;
    let started = take::<SystemTime>(&token)[0];
    assert!(
        started >= held_until,
        "started {started:?} before the dead place expired"
    );
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn a_run_that_loses_its_task_lock_is_stopped_and_recorded() {
    let fx = Fixture::new().await;
    let token = token();
    let id = locked_by_args::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    tiger::testing::wait_until(WAIT, "the task to start", || async { count(&token) == 1 }).await;
    let locks = fx.task_locks().await;
    let lock = locks.first().expect("the task lock");
    // The lock vanishes under the run (an operator, or a shorter lock of another worker):
    // it must not go on beside a twin that could now take the lock.
    redis::cmd("DEL")
        .arg(lock)
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    tiger::testing::wait_until(WAIT, "the run to be stopped", || async {
        fx.ids(tiger::State::Error, "locked").await == [id.as_str()]
    })
    .await;
    worker.stop().await;
    let records = fx.executions(id.as_str()).await;
    assert!(
        records[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("task lock expired or was taken"),
        "{records:?}"
    );
    fx.assert_only_errored("locked", &[id.as_str()]).await;
    Invariants::new().assert(&fx.tiger).await;
}
