//! Task options end to end, asserting the state of each queue after each step. Timers are
//! turned down (`tiger::testing::test_config`): retries and lock waits take fractions of a
//! second.

use std::collections::BTreeMap;
use std::time::Duration;

use tiger::{State, Worker, testing::wait_until};
use tiger_tests::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_retried_task_runs_max_plus_one_times_then_errors_with_every_record() {
    let fx = Fixture::new().await;
    let token = token();
    let id = always_fails::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let body = fx.body(id.as_str()).await.unwrap();
    assert_eq!(
        body["retry_method"],
        serde_json::json!(["tasktiger.retry:_fixed", [0.2, 2]])
    );

    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "the task to end in error", || async {
        fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;

    // Each run saw how many failures came before it.
    assert_eq!(take::<u32>(&token), [0, 1, 2]);
    let records = fx.executions(id.as_str()).await;
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r["exception_name"] == "builtins:Exception")
    );
    fx.assert_only_errored("retry", &[id.as_str()]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn retries_wait_in_scheduled_with_their_delay() {
    let fx = Fixture::new().await;
    let token = token();
    let id = always_fails::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(fx.ids(State::Scheduled, "retry").await, [id.as_str()]);
    let due: f64 = redis::cmd("ZSCORE")
        .arg(fx.tiger.keys().queue(State::Scheduled, "retry"))
        .arg(id.as_str())
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    let failed = fx.executions(id.as_str()).await[0]["time_failed"]
        .as_f64()
        .unwrap();
    assert!(
        (due - failed - 0.2).abs() < 0.05,
        "due {due}, failed {failed}"
    );
    let mut keys = state_keys(State::Scheduled, "retry");
    keys.extend(errored_task_keys(id.as_str()));
    fx.assert_keys(keys).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn retry_on_retries_only_the_named_errors_found_through_the_chain() {
    let fx = Fixture::new().await;
    let (recovers, bad) = (token(), token());
    flaky::delay(recovers.clone(), 3, false)
        .on(&fx.tiger)
        .await
        .unwrap();
    let bad_id = flaky::delay(bad.clone(), 3, true)
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "the flaky task to succeed", || async {
        count(&recovers) == 3
    })
    .await;
    wait_until(WAIT, "the bad task to error", || async {
        fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;

    assert_eq!(
        take::<u32>(&recovers),
        [1, 2, 3],
        "retried on Flaky (inside io::Error) until it succeeded"
    );
    assert_eq!(take::<u32>(&bad), [1], "BadInput is not retried");
    fx.assert_only_errored("retry", &[bad_id.as_str()]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_task_can_ask_to_be_retried_and_to_be_dropped_quietly() {
    let fx = Fixture::new().await;
    let (succeeds, logged, quiet) = (token(), token(), token());
    asks_again::delay(succeeds.clone(), 2, false)
        .on(&fx.tiger)
        .await
        .unwrap();
    let logged_id = asks_again::delay(logged.clone(), 9, false)
        .on(&fx.tiger)
        .await
        .unwrap();
    asks_again::delay(quiet.clone(), 9, true)
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "all three to settle", || async {
        count(&succeeds) == 2
            && count(&logged) == 3
            && count(&quiet) == 3
            && fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;

    // fixed(0.1, 2): two retries, so three runs; the quiet one leaves nothing behind.
    let records = fx.executions(logged_id.as_str()).await;
    assert_eq!(records.len(), 3);
    assert_eq!(
        records[0]["exception_name"],
        "tasktiger.exceptions:RetryException"
    );
    assert_eq!(records[0]["retry"], true);
    assert_eq!(
        records[0]["retry_method"],
        serde_json::json!(["tasktiger.retry:_fixed", [0.1, 2]])
    );
    assert_eq!(records[0]["log_error"], true);
    fx.assert_only_errored("retry", &[logged_id.as_str()]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn max_stored_executions_keeps_the_last_records_but_counts_them_all() {
    let fx = Fixture::new().await;
    let token = token();
    let id = fails_four_times::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "the task to error", || async {
        fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(take::<()>(&token).len(), 4);
    assert_eq!(fx.executions(id.as_str()).await.len(), 2);
    let count: u32 = redis::cmd("GET")
        .arg(fx.tiger.keys().executions_count(id.as_str()))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(count, 4);
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn an_async_task_is_cancelled_at_its_hard_timeout() {
    let fx = Fixture::new().await;
    let token = token();
    let id = sleepy::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let clock = std::time::Instant::now();
    fx.drain().await;
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "{:?}",
        clock.elapsed()
    );
    assert_eq!(take::<String>(&token), ["started"]);
    let records = fx.executions(id.as_str()).await;
    assert_eq!(
        records[0]["exception_name"],
        "tasktiger.exceptions:JobTimeoutException"
    );
    assert!(
        records[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("hard timeout of 0.3 s")
    );
    assert_eq!(fx.ids(State::Error, "slow").await, [id.as_str()]);
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_per_call_hard_timeout_is_stored_and_wins() {
    let fx = Fixture::new().await;
    let token = token();
    let id = note::delay(token.clone(), "x".into())
        .hard_timeout(Duration::from_millis(1500))
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(fx.body(id.as_str()).await.unwrap()["hard_timeout"], 1.5);
    let plain = note::delay(token.clone(), "y".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert!(
        fx.body(plain.as_str())
            .await
            .unwrap()
            .get("hard_timeout")
            .is_none(),
        "the attribute's is not copied"
    );
}

#[tokio::test]
async fn when_in_the_future_schedules_and_the_sweep_queues_it_when_due() {
    let fx = Fixture::new().await;
    let token = token();
    let id = note::delay(token.clone(), "later".into())
        .when(Duration::from_millis(600))
        .on(&fx.tiger)
        .await
        .unwrap();
    let body = fx.body(id.as_str()).await.unwrap();
    let scheduled_at = body["scheduled_at"].as_f64().unwrap();
    assert!((scheduled_at - body["time_last_queued"].as_f64().unwrap() - 0.6).abs() < 0.01);
    fx.assert_keys(
        state_keys(State::Scheduled, "default")
            .into_iter()
            .chain([task_key(id.as_str())]),
    )
    .await;
    fx.drain().await;
    assert_eq!(take::<String>(&token).len(), 0, "not due yet");

    let past = note::delay(token.clone(), "now".into())
        .when(std::time::SystemTime::UNIX_EPOCH)
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(
        fx.ids(State::Queued, "default").await,
        [past.as_str()],
        "a past time queues now"
    );

    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "both to run", || async { count(&token) == 2 }).await;
    worker.stop().await;
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_unique_task_is_one_task_and_keeps_its_place() {
    let fx = Fixture::new().await;
    let token = token();
    let first = unique_note::delay(token.clone(), "same".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    let score = |fx: &Fixture, id: String| {
        let key = fx.tiger.keys().queue(State::Queued, "unique");
        let mut conn = fx.tiger.connection();
        async move {
            redis::cmd("ZSCORE")
                .arg(key)
                .arg(id)
                .query_async::<f64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let before = score(&fx, first.to_string()).await;
    let again = unique_note::delay(token.clone(), "same".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(
        score(&fx, first.to_string()).await,
        before,
        "re-queueing keeps the score"
    );
    let other = unique_note::delay(token.clone(), "different".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_ne!(first, other);
    assert_eq!(fx.ids(State::Queued, "unique").await.len(), 2);
    assert_eq!(fx.body(first.as_str()).await.unwrap()["unique"], true);
    fx.drain().await;
    let mut ran = take::<String>(&token);
    ran.sort();
    assert_eq!(ran, ["different", "same"]);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn unique_key_hashes_only_the_named_parameter_and_the_last_payload_wins() {
    let fx = Fixture::new().await;
    let a = keyed_note::delay(7, "first".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    let b = keyed_note::delay(7, "second".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    let c = keyed_note::delay(8, "first".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let body = fx.body(a.as_str()).await.unwrap();
    assert_eq!(body["unique_key"], serde_json::json!(["user"]));
    assert_eq!(
        body["kwargs"],
        serde_json::json!({"user": 7, "label": "second"}),
        "keyed tasks store kwargs"
    );
    assert!(body.get("args").is_none());
    fx.drain().await;
    assert_eq!(take::<String>("user-7"), ["second"]);
    assert_eq!(take::<String>("user-8"), ["first"]);
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_unique_task_queued_while_it_runs_is_not_run_twice_at_once() {
    let fx = Fixture::new().await;
    let token = token();
    let id = unique_note::delay(token.clone(), "x".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    // Pretend a worker has it active, then queue it again: the dequeue defers the copy.
    fx.drain_with(|w| w.queues(["nothing"])).await;
    let keys = fx.tiger.keys();
    let mut conn = fx.tiger.connection();
    redis::pipe()
        .cmd("ZADD")
        .arg(keys.queue(State::Active, "unique"))
        .arg(tiger_now())
        .arg(id.as_str())
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(State::Active))
        .arg("unique")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(
        take::<String>(&token).len(),
        0,
        "not run while the other copy is active"
    );
    assert_eq!(fx.ids(State::Scheduled, "unique").await, [id.as_str()]);
    assert_eq!(fx.ids(State::Active, "unique").await, [id.as_str()]);
    assert!(fx.ids(State::Queued, "unique").await.is_empty());
    faults::assert_idle_invariants(&fx.tiger).await;
}

fn tiger_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn a_unique_task_of_another_queue_is_refused_never_lost() {
    let fx = Fixture::new().await;
    let token = token();
    let id = unique_note::delay(token.clone(), "x".into())
        .queue("a")
        .on(&fx.tiger)
        .await
        .unwrap();
    let err = unique_note::delay(token.clone(), "x".into())
        .queue("b")
        .on(&fx.tiger)
        .await
        .unwrap_err();
    assert!(
        matches!(err, tiger::Error::UniqueInAnotherQueue { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(id.as_str()));
    fx.assert_keys(
        state_keys(State::Queued, "a")
            .into_iter()
            .chain([task_key(id.as_str())]),
    )
    .await;
    fx.drain().await;
    assert_eq!(take::<String>(&token), ["x"]);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn lock_key_runs_one_task_per_key_at_a_time_across_workers() {
    let fx = Fixture::new().await;
    let token = token();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            locked_hold::delay(1, token.clone())
                .on(&fx.tiger)
                .await
                .unwrap(),
        );
    }
    ids.push(
        locked_hold::delay(2, token.clone())
            .on(&fx.tiger)
            .await
            .unwrap(),
    );
    let workers: Vec<_> = (0..3)
        .map(|_| spawn_worker(Worker::new(fx.tiger.clone()).concurrency(2)))
        .collect();
    wait_until(WAIT, "user 1 and user 2 to run at once", || async {
        gate_peak(&token) == 2
    })
    .await;
    let lock_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:lockv2:*", fx.tiger.keys().prefix()))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(
        lock_keys
            .iter()
            .filter(|k| !k.contains("queue_scheduled_tasks") && !k.contains("queue_expired_tasks"))
            .count(),
        2,
        "{lock_keys:?}"
    );
    release(&format!("{token}-1"));
    release(&format!("{token}-2"));
    wait_until(WAIT, "every task to finish", || async {
        fx.keys().await.is_empty()
    })
    .await;
    for worker in workers {
        worker.stop().await;
    }
    let runs = take::<(u64, usize)>(&token);
    assert_eq!(runs.iter().filter(|(user, _)| *user == 1).count(), 3);
    assert_eq!(gate_peak(&token), 2, "never two of user 1 at once");
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn max_queue_size_is_checked_atomically_and_writes_nothing_when_full() {
    let fx = Fixture::new().await;
    bounded::delay(1).on(&fx.tiger).await.unwrap();
    bounded::delay(2)
        .when(Duration::from_secs(60))
        .on(&fx.tiger)
        .await
        .unwrap();
    let before = fx.keys().await;
    let err = bounded::delay(3).on(&fx.tiger).await.unwrap_err();
    assert!(
        matches!(err, tiger::Error::QueueFull { max: 2, .. }),
        "{err}"
    );
    assert_eq!(fx.keys().await, before, "nothing written");
    note::delay(token(), "x".into())
        .queue("bounded")
        .max_queue_size(3)
        .on(&fx.tiger)
        .await
        .unwrap();
    // Many producers racing for the last slots: exactly the room left gets in.
    let fx2 = Fixture::new().await;
    let results = futures_util::future::join_all(
        (0..20).map(|n| bounded::delay(n).on(&fx2.tiger).into_future()),
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
}

#[tokio::test]
async fn per_call_key_lists_must_name_parameters() {
    let fx = Fixture::new().await;
    let err = note::delay(token(), "x".into())
        .unique_key(["nope"])
        .on(&fx.tiger)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`nope` is not a parameter"),
        "{err}"
    );
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn ids_from_typed_rust_arguments_equal_python_tasktigers() {
    let fx = Fixture::new().await;
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("tests/data/unique_ids.json")).unwrap(),
    )
    .unwrap();
    let expected = |note: &str| {
        vectors["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["note"] == note)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let map = BTreeMap::from([("b".to_owned(), 1.0), ("a".to_owned(), 2.5)]);
    let a = typed_a::delay(1, "é".into(), 1e-5, 1 << 127, (true, None), map)
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(a.as_str(), expected("typed a"));
    let b = typed_b::delay(42, "ü@example.org".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(b.as_str(), expected("typed b"));
}

#[tokio::test]
async fn always_eager_runs_due_tasks_in_process_and_schedules_the_rest() {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let config = tiger::Config {
        always_eager: true,
        ..tiger::testing::test_config()
    };
    let tiger = redis.tiger_with(config).await.unwrap();
    let token = token();
    note::delay(token.clone(), "now".into())
        .on(&tiger)
        .await
        .unwrap();
    note::delay(token.clone(), "zero".into())
        .when(Duration::ZERO)
        .on(&tiger)
        .await
        .unwrap();
    note::delay(token.clone(), "past".into())
        .when(std::time::SystemTime::UNIX_EPOCH)
        .on(&tiger)
        .await
        .unwrap();
    assert_eq!(take::<String>(&token), ["now", "zero", "past"]);
    let later = note::delay(token.clone(), "later".into())
        .when(Duration::from_secs(60))
        .on(&tiger)
        .await
        .unwrap();
    assert_eq!(take::<String>(&token).len(), 0);

    let err = charge::delay(token.clone(), 5)
        .on(&tiger)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tiger::Error::TaskFailed { exception_name, .. } if exception_name == "tiger_tests:ChargeError"),
        "{err}"
    );
    let err = pairs::delay(BTreeMap::from([((1, 2), 3)]))
        .on(&tiger)
        .await
        .unwrap_err();
    assert!(
        matches!(err, tiger::Error::Serialize { .. }),
        "arguments are still serialized: {err}"
    );

    let prefix = tiger.keys().prefix();
    let keys = redis.keys(&tiger).await.unwrap();
    let expected: std::collections::BTreeSet<String> = [
        "scheduled".to_owned(),
        "scheduled:default".to_owned(),
        task_key(later.as_str()),
    ]
    .into_iter()
    .map(|k| format!("{prefix}:{k}"))
    .collect();
    assert_eq!(keys, expected);
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn a_locked_task_waits_in_scheduled_while_its_twin_runs_and_the_lock_is_renewed() {
    let fx = Fixture::new().await;
    let token = token();
    let first = locked_by_args::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let second = locked_by_args::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_ne!(first, second, "not unique: two tasks, one lock");
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "one to run and one to wait", || async {
        count(&token) == 1 && fx.ids(State::Scheduled, "locked").await.len() == 1
    })
    .await;
    // The lock lives for ACTIVE_TASK_UPDATE_TIMEOUT + REQUEUE_EXPIRED_TASKS_INTERVAL (2.4 s
    // in tests) and is renewed every 200 ms while the task runs.
    let lock_key = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:lockv2:*", fx.tiger.keys().prefix()))
            .query_async(&mut fx.tiger.connection())
            .await
            .unwrap();
        keys.into_iter()
            .find(|k| !k.contains("queue_scheduled_tasks") && !k.contains("queue_expired_tasks"))
            .expect("a task lock")
    };
    let ttl = || async {
        redis::cmd("PTTL")
            .arg(&lock_key)
            .query_async::<i64>(&mut fx.tiger.connection())
            .await
            .unwrap()
    };
    let early = ttl().await;
    assert!(early > 0 && early <= 2400, "{early}");
    // Without renewal the lock would have under 1.4 s left once a second has passed.
    let since = std::time::Instant::now();
    wait_until(
        WAIT,
        "a second to pass with the lock still fresh",
        || async { since.elapsed() > Duration::from_secs(1) && ttl().await > 1900 },
    )
    .await;
    release(&token);
    wait_until(WAIT, "both to finish", || async {
        fx.keys().await.is_empty()
    })
    .await;
    worker.stop().await;
    assert_eq!(
        take::<String>(&token).len(),
        2,
        "the second ran after the first released the lock"
    );
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn per_call_options_override_the_attribute() {
    let fx = Fixture::new().await;
    let token = token();
    let a = unique_note::delay(token.clone(), "same".into())
        .unique(false)
        .on(&fx.tiger)
        .await
        .unwrap();
    let b = unique_note::delay(token.clone(), "same".into())
        .unique(false)
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_ne!(a, b, "unique(false) gives random ids");
    assert!(fx.body(a.as_str()).await.unwrap().get("unique").is_none());
    let c = note::delay(token.clone(), "x".into())
        .lock_key(["label"])
        .retry_method(tiger::linear(1.0, 2.0, 3))
        .on(&fx.tiger)
        .await
        .unwrap();
    let body = fx.body(c.as_str()).await.unwrap();
    assert_eq!(body["lock"], true);
    assert_eq!(body["lock_key"], serde_json::json!(["label"]));
    assert_eq!(
        body["retry_method"],
        serde_json::json!(["tasktiger.retry:_linear", [1, 2, 3]])
    );
    assert_eq!(
        body["kwargs"],
        serde_json::json!({"token": token, "label": "x"})
    );
    let d = always_fails::delay(token.clone())
        .retry(false)
        .on(&fx.tiger)
        .await;
    let d = d.unwrap();
    assert_eq!(
        fx.body(d.as_str()).await.unwrap()["retry_method"],
        serde_json::json!(["tasktiger.retry:_fixed", [0.2, 2]]),
        "the attribute's method still applies: retry(false) only drops the plain flag"
    );
}

#[tokio::test]
async fn the_scheduled_sweep_moves_at_most_a_batch_per_queue_and_announces_it_once() {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let config = tiger::Config {
        scheduled_task_batch_size: 2,
        select_timeout: Duration::from_secs(3600),
        ..tiger::testing::test_config()
    };
    let tiger = redis.tiger_with(config).await.unwrap();
    let token = token();
    for i in 0..5 {
        note::delay(token.clone(), i.to_string())
            .when(Duration::from_millis(50))
            .on(&tiger)
            .await
            .unwrap();
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(tiger.keys().activity()).await.unwrap();
    let due = std::time::Instant::now() + Duration::from_millis(100);
    wait_until(WAIT, "the tasks to be due", || async move {
        std::time::Instant::now() > due
    })
    .await;
    // One sweep at start (the next is an hour away): two tasks move and run.
    Worker::new(tiger.clone()).once(true).run().await.unwrap();
    assert_eq!(take::<String>(&token).len(), 2);
    let scheduled: usize = redis::cmd("ZCARD")
        .arg(tiger.keys().queue(State::Scheduled, "default"))
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    assert_eq!(scheduled, 3);
    let mut messages = pubsub.on_message();
    let first = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut messages),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.get_payload::<String>().unwrap(), "default");
    let more = tokio::time::timeout(
        Duration::from_millis(200),
        futures_util::StreamExt::next(&mut messages),
    )
    .await;
    assert!(more.is_err(), "announced once");
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn a_user_retry_function_is_stored_by_name_and_used_by_the_worker() {
    let fx = Fixture::new().await;
    let token = token();
    let id = custom_retries::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(
        fx.body(id.as_str()).await.unwrap()["retry_method"],
        serde_json::json!(["tiger_tests:two_quick_retries", []])
    );
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(WAIT, "the task to error", || async {
        fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(take::<u32>(&token), [0, 1, 2]);
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_plain_fn_past_its_hard_timeout_keeps_its_lock_until_it_returns() {
    let fx = Fixture::new().await;
    let token = token();
    let first = slow_locked::delay(1, token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let twin = slow_locked::delay(1, token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()).concurrency(2));
    wait_until(WAIT, "the first to time out", || async {
        fx.ids(State::Error, "locked-slow").await == [first.as_str()]
    })
    .await;
    let timed_out = fx.executions(first.as_str()).await[0]["time_failed"]
        .as_f64()
        .unwrap();
    // The worker stops itself so that its process can restart and end the thread; here,
    // in-process, the thread lives on, and so does its lock.
    assert_eq!(worker.finished().await, tiger::Stopped::StuckThread);
    let restarted = spawn_worker(Worker::new(fx.tiger.clone()).concurrency(2));
    // When the twin comes due again it finds the lock still taken and is deferred once more
    // (LOCK_RETRY is 0.3 s in tests).
    let due = || async {
        redis::cmd("ZSCORE")
            .arg(fx.tiger.keys().queue(State::Scheduled, "locked-slow"))
            .arg(twin.as_str())
            .query_async::<Option<f64>>(&mut fx.tiger.connection())
            .await
            .unwrap()
    };
    wait_until(
        WAIT,
        "the twin to be deferred after the timeout",
        || async { due().await.is_some_and(|at| at > timed_out + 0.3) },
    )
    .await;
    assert_eq!(
        count(&token),
        1,
        "the twin did not start beside the overrunning thread"
    );
    release(&token);
    wait_until(WAIT, "the twin to run", || async { count(&token) == 2 }).await;
    restarted.stop().await;
    assert_eq!(gate_peak(&token), 1, "never two at once");
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn max_queue_size_counts_a_unique_task_coming_back_from_error() {
    let fx = Fixture::new().await;
    let id = bounded_unique::delay(0).on(&fx.tiger).await.unwrap();
    // Fail it by hand: it now sits in error only.
    let keys = fx.tiger.keys();
    redis::pipe()
        .cmd("ZREM")
        .arg(keys.queue(State::Queued, "bounded-unique"))
        .arg(id.as_str())
        .ignore()
        .cmd("ZADD")
        .arg(keys.queue(State::Error, "bounded-unique"))
        .arg(1)
        .arg(id.as_str())
        .ignore()
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    bounded_unique::delay(1).on(&fx.tiger).await.unwrap();
    let err = bounded_unique::delay(0).on(&fx.tiger).await.unwrap_err();
    assert!(matches!(err, tiger::Error::QueueFull { .. }), "{err}");
    assert_eq!(fx.ids(State::Queued, "bounded-unique").await.len(), 1);
    // Re-queueing the one already queued adds nothing, so it is allowed.
    bounded_unique::delay(1).on(&fx.tiger).await.unwrap();
}

#[tokio::test]
async fn an_empty_key_list_means_no_key_list() {
    let fx = Fixture::new().await;
    let a = note::delay("t".into(), "a".into())
        .unique_key(Vec::<String>::new())
        .on(&fx.tiger)
        .await
        .unwrap();
    let b = note::delay("t".into(), "b".into())
        .unique_key(Vec::<String>::new())
        .lock_key(Vec::<String>::new())
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_ne!(a, b);
    let body = fx.body(b.as_str()).await.unwrap();
    assert!(
        body.get("unique").is_none()
            && body.get("lock").is_none()
            && body.get("lock_key").is_none(),
        "{body}"
    );
}
