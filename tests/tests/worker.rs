//! The worker loop: queue filters, concurrency, waking on activity, and draining.

use std::time::Duration;

use tiger::{Config, State, Worker, testing::wait_until};
use tiger_tests::*;

#[tokio::test]
async fn queue_filters_follow_dotted_subqueues() {
    let fx = Fixture::new().await;
    let token = token();
    let queues = ["a", "a.x", "a.b", "a.b.c", "a.b.keep.me", "b", "ab"];
    for queue in queues {
        note::delay(token.clone(), queue.into())
            .queue(queue)
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    fx.drain_with(|w| w.queues(["a", "a.b.keep"]).exclude_queues(["a.b"]))
        .await;

    let mut ran = take::<String>(&token);
    ran.sort();
    assert_eq!(ran, ["a", "a.b.keep.me", "a.x"]);
    let mut keys = vec!["queued".to_owned()];
    for queue in ["a.b", "a.b.c", "b", "ab"] {
        let ids = fx.ids(State::Queued, queue).await;
        assert_eq!(ids.len(), 1, "{queue} stays queued");
        keys.extend([format!("queued:{queue}"), task_key(&ids[0])]);
    }
    fx.assert_keys(keys).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn config_queue_lists_apply_when_the_worker_names_none() {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let config = Config {
        exclude_queues: vec!["slow".into()],
        ..tiger::testing::test_config()
    };
    let tiger = redis.tiger_with(config).await.unwrap();
    let token = token();
    for queue in ["fast", "slow.big"] {
        note::delay(token.clone(), queue.into())
            .queue(queue)
            .on(&tiger)
            .await
            .unwrap();
    }
    Worker::new(tiger.clone()).once(true).run().await.unwrap();
    assert_eq!(take::<String>(&token), ["fast"]);
    let left = redis.keys(&tiger).await.unwrap();
    let prefix = tiger.keys().prefix();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.contains(&format!("{prefix}:queued:slow.big")),
        "{left:?}"
    );
    faults::assert_idle_invariants(&tiger).await;
}

#[tokio::test]
async fn concurrency_n_runs_n_tasks_at_once_and_never_more() {
    let fx = Fixture::new().await;
    // Each gate task waits until four run at once: with concurrency 4 they all pass.
    let all = token();
    for _ in 0..4 {
        gate::delay(all.clone(), 4).on(&fx.tiger).await.unwrap();
    }
    // Eight tasks that would like to run together, under concurrency 4: never more than 4.
    let capped = token();
    for _ in 0..8 {
        gate::delay(capped.clone(), 4).on(&fx.tiger).await.unwrap();
    }
    fx.drain_with(|w| w.concurrency(4)).await;

    assert_eq!(gate_peak(&all), 4);
    assert_eq!(gate_peak(&capped), 4);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn concurrency_one_runs_tasks_one_after_another() {
    let fx = Fixture::new().await;
    let token = token();
    for _ in 0..3 {
        gate::delay(token.clone(), 1).on(&fx.tiger).await.unwrap();
    }
    fx.drain_with(|w| w.concurrency(1)).await;
    assert_eq!(take::<usize>(&token), [1, 1, 1]);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

/// Enqueues (with publishing on) until the running worker has picked a task up, so that its
/// start-up reads and its subscription are behind it.
async fn warm_up(tiger: &tiger::Tiger) {
    let token = token();
    wait_until(
        Duration::from_secs(10),
        "the worker to take a first task",
        || async {
            note::delay(token.clone(), "warm-up".into())
                .queue("warm-up")
                .on(tiger)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            count(&token) > 0
        },
    )
    .await;
}

/// Enqueues one task on `queue` through `producer` and waits (up to 5 s) until it has run.
async fn runs_soon(producer: &tiger::Tiger, queue: &str) {
    let token = token();
    note::delay(token.clone(), queue.into())
        .queue(queue)
        .on(producer)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the task to run", || async {
        count(&token) > 0
    })
    .await;
}

#[tokio::test]
async fn an_idle_worker_wakes_on_the_activity_channel() {
    let fx = Fixture::new().await;
    // A refresh interval far longer than the test: only the channel can announce `late`.
    let config = Config {
        queue_refresh_interval: Duration::from_secs(3600),
        ..tiger::testing::test_config()
    };
    let tiger = fx.redis.tiger_with(config).await.unwrap();
    let worker = spawn_worker(Worker::new(tiger.clone()));
    warm_up(&tiger).await;
    runs_soon(&tiger, "late").await;
    worker.stop().await;
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_missed_activity_message_does_not_strand_a_queue() {
    let fx = Fixture::new().await;
    let worker_tiger = fx
        .redis
        .tiger_with(tiger::testing::test_config())
        .await
        .unwrap();
    // A producer with publishing off never announces its queue; only the periodic re-read
    // of the queue set (500 ms in tests) can find it.
    let silent = Config {
        redis_prefix: worker_tiger.keys().prefix().to_owned(),
        publish_queued_tasks: false,
        ..tiger::testing::test_config()
    };
    let producer = tiger::Tiger::connect_with(fx.redis.url(), silent)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(worker_tiger.clone()));
    warm_up(&worker_tiger).await;
    runs_soon(&producer, "quiet").await;
    worker.stop().await;
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn once_returns_when_drained_even_with_nothing_queued() {
    let fx = Fixture::new().await;
    fx.drain().await;
    let token = token();
    for i in 0..25 {
        note::delay(token.clone(), i.to_string())
            .queue(["q1", "q2", "q3"][i % 3])
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    fx.drain_with(|w| w.concurrency(3)).await;
    assert_eq!(take::<String>(&token).len(), 25);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_zero_concurrency_is_refused() {
    let fx = Fixture::new().await;
    let err = Worker::new(fx.tiger.clone())
        .concurrency(0)
        .run()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("concurrency must be at least 1"),
        "{err}"
    );
}

#[tokio::test]
async fn heartbeats_advance_the_active_score_of_running_tasks() {
    let fx = Fixture::new().await;
    let token = token();
    let id = hold::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) > 0
    })
    .await;
    let score = || async {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(fx.tiger.keys().queue(State::Active, "hold"))
            .arg(id.as_str())
            .query_async(&mut fx.tiger.connection())
            .await
            .unwrap();
        score.expect("the task is active")
    };
    let first = score().await;
    // The test config beats every 200 ms.
    wait_until(
        Duration::from_secs(5),
        "a heartbeat to move the active score",
        || async { score().await > first },
    )
    .await;
    release(&token);
    wait_until(Duration::from_secs(10), "the task to finish", || async {
        fx.keys().await.is_empty()
    })
    .await;
    worker.stop().await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn shutdown_waits_for_tasks_in_flight() {
    let fx = Fixture::new().await;
    let token = token();
    hold::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) > 0
    })
    .await;
    let mut worker = worker;
    worker.request_stop();
    // Still running: the worker must not return while its task holds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!worker.is_finished());
    release(&token);
    worker.stop().await;
    fx.assert_keys([]).await; // finished and recorded before exit
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn results_are_recorded_after_the_workers_connection_is_killed() {
    let fx = Fixture::new().await;
    // The worker gets connections of its own, so the test's can survive the kill.
    let config = Config {
        redis_prefix: fx.tiger.keys().prefix().to_owned(),
        ..tiger::testing::test_config()
    };
    let worker_tiger = tiger::Tiger::connect_with(fx.redis.url(), config)
        .await
        .unwrap();
    let token = token();
    for _ in 0..3 {
        hold::delay(token.clone()).on(&fx.tiger).await.unwrap();
    }
    let worker = spawn_worker(Worker::new(worker_tiger));
    wait_until(Duration::from_secs(10), "three tasks to start", || async {
        count(&token) == 3
    })
    .await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert!(killed >= 1, "the worker's connection was killed");
    release(&token);
    wait_until(
        Duration::from_secs(10),
        "every result to be recorded",
        || async { fx.keys().await.is_empty() },
    )
    .await;
    worker.stop().await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn a_long_task_with_live_heartbeats_is_not_taken_for_lost() {
    let fx = Fixture::new().await;
    let token = token();
    hold::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) > 0
    })
    .await;
    // Longer than ACTIVE_TASK_UPDATE_TIMEOUT (2 s in tests), with recovery looking every 0.4 s.
    let since = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "3 s to pass", || async {
        since.elapsed() > Duration::from_secs(3)
    })
    .await;
    assert_eq!(
        fx.ids(State::Active, "hold").await.len(),
        1,
        "still running, not recovered"
    );
    release(&token);
    wait_until(Duration::from_secs(10), "the task to finish", || async {
        fx.keys().await.is_empty()
    })
    .await;
    worker.stop().await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn an_older_heartbeat_of_the_same_worker_is_still_its_own() {
    let fx = Fixture::new().await;
    let token = token();
    let id = hold::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()));
    wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) > 0
    })
    .await;
    let key = fx.tiger.keys().queue(State::Active, "hold");
    let score = || async {
        redis::cmd("ZSCORE")
            .arg(&key)
            .arg(id.as_str())
            .query_async::<f64>(&mut fx.tiger.connection())
            .await
            .unwrap()
    };
    let first = score().await;
    wait_until(Duration::from_secs(5), "a heartbeat", || async {
        score().await > first
    })
    .await;
    // As after Redis restarts from a slightly older snapshot: the score goes back.
    redis::cmd("ZADD")
        .arg(&key)
        .arg(first)
        .arg(id.as_str())
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the heartbeat to go on", || async {
        score().await > first
    })
    .await;
    release(&token);
    wait_until(
        Duration::from_secs(10),
        "the result to be recorded",
        || async { fx.keys().await.is_empty() },
    )
    .await;
    worker.stop().await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn more_lost_tasks_than_a_batch_are_all_recovered_without_waiting_an_interval() {
    let fx = Fixture::new().await;
    // Twenty-five tasks left active by a worker that died long ago.
    for n in 0..25u8 {
        let id = format!("{n:064x}");
        let body = format!(
            r#"{{"id": "{id}", "func": "{}", "args": ["t", "x"]}}"#,
            note::NAME
        );
        fx.inject("lost", &id, Some(&body)).await;
        let keys = fx.tiger.keys();
        redis::pipe()
            .cmd("ZREM")
            .arg(keys.queue(State::Queued, "lost"))
            .arg(&id)
            .ignore()
            .cmd("ZADD")
            .arg(keys.queue(State::Active, "lost"))
            .arg(1.0)
            .arg(&id)
            .ignore()
            .cmd("SADD")
            .arg(keys.state_set(State::Active))
            .arg("lost")
            .ignore()
            .query_async::<()>(&mut fx.tiger.connection())
            .await
            .unwrap();
    }
    // Ten per sweep, and an hour between sweeps unless a full batch lets the next one go.
    let config = Config {
        redis_prefix: fx.tiger.keys().prefix().to_owned(),
        requeue_expired_tasks_batch_size: 10,
        requeue_expired_tasks_interval: Duration::from_secs(3600),
        ..tiger::testing::test_config()
    };
    let tiger = tiger::Tiger::connect_with(fx.redis.url(), config)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(tiger).queues(["elsewhere"]));
    wait_until(
        Duration::from_secs(10),
        "all 25 to be recovered",
        || async { fx.ids(State::Error, "lost").await.len() == 25 },
    )
    .await;
    worker.stop().await;
    assert!(fx.ids(State::Active, "lost").await.is_empty());
    faults::assert_idle_invariants(&fx.tiger).await;
}

/// A worker that knows of thousands of queues, nearly all of them empty, still finds the
/// few with tasks in the same pass: it samples the queues it knows a few at a time and
/// keeps sampling while slots are free and untried queues remain.
#[tokio::test]
async fn a_worker_finds_the_busy_queues_among_thousands_of_empty_ones() {
    let fx = Fixture::new().await;
    let token = token();
    // Announced in `t:queued` but empty (their tasks ran or were deleted elsewhere).
    let mut announce = redis::cmd("SADD");
    announce.arg(fx.tiger.keys().state_set(State::Queued));
    for n in 0..3000 {
        announce.arg(format!("empty{n}"));
    }
    announce
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let busy = ["busy1", "busy2", "busy3"];
    tiger::DelayMany::new(
        busy.iter()
            .map(|queue| note::delay(token.clone(), (*queue).to_owned()).queue(*queue)),
    )
    .on(&fx.tiger)
    .await
    .unwrap();
    fx.drain_with(|w| w.concurrency(1)).await;
    let mut ran = take::<String>(&token);
    ran.sort();
    assert_eq!(ran, busy);
}

/// Under load, the worker writes the successes of many tasks in one script call instead of
/// one call each (on a private redis-server, whose command counts are this test's alone).
#[tokio::test]
async fn a_busy_worker_records_many_successes_per_script_call() {
    let server = tiger::testing::RedisServer::start().unwrap();
    let tiger = tiger::Tiger::connect_with(&server.url(), tiger::testing::test_config())
        .await
        .unwrap();
    let token = token();
    let tasks = 1000;
    note::delay_many((0..tasks).map(|n| (token.clone(), n.to_string())))
        .on(&tiger)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        Worker::new(tiger.clone()).concurrency(100).once(true).run(),
    )
    .await
    .expect("drained within 60 s")
    .unwrap();
    assert_eq!(count(&token), tasks);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    let calls = |command: &str| -> usize {
        info.lines()
            .find_map(|line| {
                let stats = line.strip_prefix(&format!("cmdstat_{command}:calls="))?;
                stats.split(',').next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    // Every success removes its task (one DEL each, and one more as the worker leaves the
    // registry of live workers); the script calls (dequeues and finishes together) are far
    // fewer than the tasks.
    assert_eq!(calls("del"), tasks + 1);
    assert!(
        calls("evalsha") + calls("eval") < tasks / 2,
        "{} script calls for {tasks} tasks",
        calls("evalsha") + calls("eval")
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:task:*", tiger.keys().prefix()))
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
