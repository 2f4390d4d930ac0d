//! `delay_many`: many calls written through pipelines, each task as `delay` writes it.

use tiger::{DelayMany, State};
use tiger_tests::*;

fn sorted<T: Ord + ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    items.sort();
    items
}

#[tokio::test]
async fn delay_many_writes_each_task_as_delay_does_and_a_worker_runs_them_all() {
    let fx = Fixture::new().await;
    let token = token();
    // Three pipelines, the last one short.
    let n = 2 * DelayMany::CHUNK + 7;
    let labels: Vec<String> = (0..n).map(|i| format!("call {i}")).collect();
    let ids = note::delay_many(labels.iter().map(|label| (token.clone(), label.clone())))
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(ids.len(), n);
    assert_eq!(sorted(fx.ids(State::Queued, "default").await), sorted(&ids));

    // Same fields as a single `delay` writes, and each call's own arguments.
    let single = note::delay(token.clone(), "single".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    let one = fx.body(ids[5].as_str()).await.unwrap();
    let alone = fx.body(single.as_str()).await.unwrap();
    assert_eq!(field_names(&one), field_names(&alone));
    assert_eq!(one["func"], alone["func"]);
    assert_eq!(one["args"], serde_json::json!([token, "call 5"]));
    assert_eq!(one["id"], ids[5].as_str());

    fx.drain().await;
    let want = sorted(labels.iter().map(String::as_str).chain(["single"]));
    assert_eq!(sorted(take::<String>(&token)), want);
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn delay_many_gives_unique_tasks_the_ids_delay_gives_them() {
    let fx = Fixture::new().await;
    let token = token();
    let ids = note::delay_many([
        (token.clone(), "a".to_owned()),
        (token.clone(), "b".to_owned()),
        (token.clone(), "a".to_owned()),
    ])
    .each(|call| call.unique(true).queue("bulk"))
    .on(&fx.tiger)
    .await
    .unwrap();
    assert_eq!(ids[0], ids[2], "the same call is the same unique task");
    assert_ne!(ids[0], ids[1]);
    let alone = note::delay(token.clone(), "a".into())
        .unique(true)
        .queue("bulk")
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(alone, ids[0]);
    assert_eq!(fx.ids(State::Queued, "bulk").await.len(), 2);
}

#[tokio::test]
async fn delay_many_writes_what_fits_and_names_each_refused_call() {
    let fx = Fixture::new().await;
    let token = token();
    let err = note::delay_many((0..5).map(|i| (token.clone(), format!("{i}"))))
        .each(|call| call.max_queue_size(3))
        .on(&fx.tiger)
        .await
        .unwrap_err();
    let message = err.to_string();
    match err {
        tiger::Error::PartlyEnqueued { enqueued, refused } => {
            assert_eq!(enqueued.len(), 3);
            assert_eq!(
                sorted(fx.ids(State::Queued, "default").await),
                sorted(&enqueued)
            );
            let positions: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
            assert_eq!(positions, [3, 4]);
            assert!(
                refused
                    .iter()
                    .all(|(_, e)| matches!(e, tiger::Error::QueueFull { max: 3, .. })),
                "{refused:?}"
            );
        }
        other => panic!("expected `PartlyEnqueued`, got {other:?}"),
    }
    assert!(message.starts_with("3 of 5 calls enqueued"), "{message}");
}

#[tokio::test]
async fn one_bad_call_fails_delay_many_before_anything_is_written() {
    let fx = Fixture::new().await;
    let token = token();
    let point = Point { x: 0.5, y: 2.0 };
    let calls = (0..10).map(|i| {
        let x = if i == 7 { f64::NAN } else { 1.0 };
        floats::delay(
            token.clone(),
            x,
            vec![],
            std::collections::BTreeMap::new(),
            point.clone(),
        )
    });
    let err = DelayMany::new(calls).on(&fx.tiger).await.unwrap_err();
    assert!(
        matches!(&err, tiger::Error::NonFiniteFloat { path, .. } if path == "x"),
        "{err:?}"
    );
    fx.assert_keys(Vec::new()).await;
}

/// The pipeline loads the script itself, and a single `delay` reloads it on `NOSCRIPT`.
#[tokio::test]
async fn delay_and_delay_many_work_after_the_script_cache_is_flushed() {
    let fx = Fixture::new().await;
    let token = token();
    let flush = || async {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut fx.tiger.connection())
            .await
            .unwrap();
    };
    flush().await;
    note::delay_many([(token.clone(), "many".to_owned())])
        .on(&fx.tiger)
        .await
        .unwrap();
    flush().await;
    note::delay(token.clone(), "one".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(sorted(take::<String>(&token)), ["many", "one"]);
}

/// Calls of several tasks in one batch, a task without parameters, and eager mode.
#[tokio::test]
async fn delay_many_takes_mixed_calls_and_runs_them_in_process_when_eager() {
    let fx = Fixture::new().await;
    let token = token();
    let ids = DelayMany::new([
        note::delay(token.clone(), "first".into()),
        sync_echo::delay(token.clone(), 2).queue("other"),
    ])
    .on(&fx.tiger)
    .await
    .unwrap();
    assert_eq!(fx.ids(State::Queued, "default").await, [ids[0].to_string()]);
    assert_eq!(fx.ids(State::Queued, "other").await, [ids[1].to_string()]);
    assert_eq!(
        no_arguments::delay_many([(), ()])
            .on(&fx.tiger)
            .await
            .unwrap()
            .len(),
        2
    );

    let eager = fx
        .redis
        .tiger_with(tiger::Config {
            always_eager: true,
            ..tiger::testing::test_config()
        })
        .await
        .unwrap();
    let eager_token = tiger_tests::token();
    note::delay_many([
        (eager_token.clone(), "x".to_owned()),
        (eager_token.clone(), "y".to_owned()),
    ])
    .on(&eager)
    .await
    .unwrap();
    assert_eq!(sorted(take::<String>(&eager_token)), ["x", "y"]);
    assert!(fx.redis.keys(&eager).await.unwrap().is_empty());
}

#[tokio::test]
async fn delay_many_announces_each_queue_once_per_script_call_not_once_per_task() {
    use futures_util::StreamExt;
    let fx = Fixture::new().await;
    let channel = fx.tiger.keys().activity();
    let mut pubsub = redis::Client::open(fx.redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let token = token();
    // 300 calls over three queues, interleaved: three script calls of 100 tasks each.
    let queues = ["b.one", "b.two", "b.three"];
    let calls: Vec<_> = (0..300)
        .map(|i| note::delay(token.clone(), format!("{i}")).queue(queues[i % 3]))
        .collect();
    DelayMany::new(calls).on(&fx.tiger).await.unwrap();
    // Messages come in order: once this one arrives, every announcement has.
    redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("sentinel")
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
            .await
            .expect("the sentinel within 5 s")
            .unwrap();
        let queue: String = message.get_payload().unwrap();
        if queue == "sentinel" {
            break;
        }
        seen.push(queue);
    }
    assert_eq!(seen.len(), 9, "each queue once per call: {seen:?}");
    for queue in queues {
        assert_eq!(seen.iter().filter(|q| *q == queue).count(), 3);
        assert_eq!(fx.ids(State::Queued, queue).await.len(), 100);
    }
    let queued: Vec<String> = redis::cmd("SMEMBERS")
        .arg(fx.tiger.keys().state_set(State::Queued))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(sorted(queued), sorted(queues));
}

#[tokio::test]
async fn a_redis_error_mid_call_leaves_the_tasks_written_before_it_findable() {
    let fx = Fixture::new().await;
    // A key of the wrong type where queue `bad` keeps its tasks.
    redis::cmd("SET")
        .arg(fx.tiger.keys().queue(State::Queued, "bad"))
        .arg("not a zset")
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let token = token();
    let mut calls: Vec<_> = (0..10)
        .map(|i| note::delay(token.clone(), format!("{i}")).queue("good"))
        .collect();
    calls.push(note::delay(token.clone(), "bad".into()).queue("bad"));
    calls.extend((10..20).map(|i| note::delay(token.clone(), format!("{i}")).queue("good")));
    assert!(DelayMany::new(calls).on(&fx.tiger).await.is_err());
    // What was written before the error is in the queue set, so workers and the operator's
    // commands find it.
    let stats = fx.tiger.queue_stats().await.unwrap();
    assert_eq!(stats["good"].queued, 10, "{stats:?}");
    fx.drain_with(|w| w.queues(["good"])).await;
    assert_eq!(take::<String>(&token).len(), 10);
}
