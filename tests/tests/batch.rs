//! Batch queues: TaskTiger's `test_batch_*` cases, with `BATCH_QUEUES = {"batch": 3}` and
//! one group at a time (`concurrency(1)`), as TaskTiger's worker runs them.

use tiger::{Config, State, Worker};
use tiger_tests::*;

async fn fixture() -> (tiger::testing::TestRedis, tiger::Tiger) {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let config = Config {
        batch_queues: [("batch".to_owned(), 3)].into(),
        ..tiger::testing::test_config()
    };
    let tiger = redis.tiger_with(config).await.unwrap();
    (redis, tiger)
}

async fn drain(tiger: &tiger::Tiger) {
    Worker::new(tiger.clone())
        .concurrency(1)
        .once(true)
        .run()
        .await
        .unwrap();
}

async fn count(tiger: &tiger::Tiger, state: State, queue: &str) -> usize {
    redis::cmd("ZCARD")
        .arg(tiger.keys().queue(state, queue))
        .query_async(&mut tiger.connection())
        .await
        .unwrap()
}

#[tokio::test]
async fn batch_1_groups_up_to_the_batch_size() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    for n in 1..=4 {
        batch_task::delay(t.clone(), n).on(&tiger).await.unwrap();
    }
    drain(&tiger).await;
    assert_eq!(
        take::<Ran>(&t),
        [Ran::Batch(vec![1, 2, 3]), Ran::Batch(vec![4])]
    );
    assert_eq!(count(&tiger, State::Queued, "batch").await, 0);
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_2_groups_by_function_in_order_of_first_appearance() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    batch_task::delay(t.clone(), 1).on(&tiger).await.unwrap();
    non_batch_task::delay(t.clone(), 5)
        .on(&tiger)
        .await
        .unwrap();
    batch_task::delay(t.clone(), 2).on(&tiger).await.unwrap();
    batch_task::delay(t.clone(), 3).on(&tiger).await.unwrap();
    batch_task::delay(t.clone(), 4).on(&tiger).await.unwrap();
    non_batch_task::delay(t.clone(), 6)
        .on(&tiger)
        .await
        .unwrap();
    non_batch_task::delay(t.clone(), 7)
        .on(&tiger)
        .await
        .unwrap();
    drain(&tiger).await;
    assert_eq!(
        take::<Ran>(&t),
        [
            Ran::Batch(vec![1, 2]),
            Ran::Single(5),
            Ran::Batch(vec![3, 4]),
            Ran::Single(6),
            Ran::Single(7)
        ]
    );
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_3_a_queue_not_listed_runs_one_task_per_call() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    for n in 1..=4 {
        batch_task::delay(t.clone(), n)
            .queue("default")
            .on(&tiger)
            .await
            .unwrap();
    }
    drain(&tiger).await;
    let mut ran = take::<Ran>(&t);
    ran.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(ran, [1, 2, 3, 4].map(|n| Ran::Batch(vec![n])));
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_4_subqueues_inherit_the_batch_size() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    for n in 1..=4 {
        batch_task::delay(t.clone(), n)
            .queue("batch.sub")
            .on(&tiger)
            .await
            .unwrap();
    }
    drain(&tiger).await;
    assert_eq!(
        take::<Ran>(&t),
        [Ran::Batch(vec![1, 2, 3]), Ran::Batch(vec![4])]
    );
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_exception_1_fails_the_whole_batch() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    for n in [1, 10, 2, 3] {
        batch_task::delay(t.clone(), n).on(&tiger).await.unwrap();
    }
    drain(&tiger).await;
    assert_eq!(count(&tiger, State::Queued, "batch").await, 0);
    assert_eq!(count(&tiger, State::Error, "batch").await, 3);
    // Every task of the failed group got the same record.
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(tiger.keys().queue(State::Error, "batch"))
        .arg(0)
        .arg(-1)
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    let mut records = Vec::new();
    for id in &ids {
        let record: String = redis::cmd("LINDEX")
            .arg(tiger.keys().executions(id))
            .arg(0)
            .query_async(&mut tiger.connection())
            .await
            .unwrap();
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        records.push((record["traceback"].clone(), record["time_failed"].clone()));
    }
    assert!(records.windows(2).all(|w| w[0] == w[1]), "{records:?}");
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_exception_2_plain_tasks_in_a_batch_queue_share_their_fate() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    for n in [1, 10, 2, 3] {
        non_batch_task::delay(t.clone(), n)
            .on(&tiger)
            .await
            .unwrap();
    }
    drain(&tiger).await;
    assert_eq!(count(&tiger, State::Queued, "batch").await, 0);
    assert_eq!(count(&tiger, State::Error, "batch").await, 3);
    // The group stopped at the failure: 2 never ran in it.
    assert_eq!(
        take::<Ran>(&t),
        [Ran::Single(1), Ran::Single(10), Ran::Single(3)]
    );
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn batch_exception_3_only_the_failing_functions_group_fails() {
    let (_redis, tiger) = fixture().await;
    let t = token();
    batch_task::delay(t.clone(), 1).on(&tiger).await.unwrap();
    non_batch_task::delay(t.clone(), 2)
        .on(&tiger)
        .await
        .unwrap();
    batch_task::delay(t.clone(), 10).on(&tiger).await.unwrap();
    drain(&tiger).await;
    assert_eq!(count(&tiger, State::Queued, "batch").await, 0);
    assert_eq!(count(&tiger, State::Error, "batch").await, 2);
    faults::assert_idle_invariants(&tiger).await;
}
