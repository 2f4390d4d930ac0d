//! The inspection API against a real Redis: reading tasks (also ones Python TaskTiger
//! wrote, and ones whose JSON is gone), fixing them, and the queue statistics.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tiger::{Error, State, StateCounts, Task};
use tiger_tests::*;

/// Puts `id` in `state` on `queue` at `score`, with `body` as its JSON (none: JSON gone),
/// as another producer would.
async fn place(fx: &Fixture, state: State, queue: &str, id: &str, body: Option<&str>, score: f64) {
    let keys = fx.tiger.keys();
    let mut pipe = redis::pipe();
    if let Some(body) = body {
        pipe.cmd("SET").arg(keys.task(id)).arg(body).ignore();
    }
    pipe.cmd("ZADD")
        .arg(keys.queue(state, queue))
        .arg(score)
        .arg(id)
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(state))
        .arg(queue)
        .ignore();
    pipe.query_async::<()>(&mut fx.tiger.connection())
        .await
        .expect("place a task");
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn body(id: &str) -> String {
    format!(r#"{{"id": "{id}", "func": "legacy.tasks:minimal"}}"#)
}

async fn raw_body(fx: &Fixture, id: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(fx.tiger.keys().task(id))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap()
}

async fn score(fx: &Fixture, state: State, queue: &str, id: &str) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(fx.tiger.keys().queue(state, queue))
        .arg(id)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failed_task_reads_back_with_its_records_and_retry_puts_it_back_to_run() {
    let fx = Fixture::new().await;
    let token = token();
    let failed = charge::delay(token.clone(), 250)
        .queue("insp")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;

    let task = Task::from_id(&fx.tiger, "insp", State::Error, failed.as_str())
        .await
        .unwrap();
    let data = task.data.as_ref().expect("the JSON reads");
    assert_eq!(data.func, charge::NAME);
    assert_eq!(
        data.args,
        [serde_json::json!(token), serde_json::json!(250)]
    );
    assert!(data.time_last_queued.is_some() && data.scheduled_at.is_some());
    assert_eq!(task.n_executions, 1);
    let record = &task.executions[0];
    assert!(
        record
            .exception_name
            .as_deref()
            .unwrap()
            .ends_with("ChargeError"),
        "{record:?}"
    );
    assert!(
        record
            .traceback
            .as_deref()
            .unwrap()
            .contains("card declined for 250 cents")
    );
    assert_eq!(
        Task::n_executions(&fx.tiger, failed.as_str())
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        Task::from_id(&fx.tiger, "insp", State::Queued, failed.as_str()).await,
        Err(Error::TaskNotFound { .. })
    ));

    // Retry publishes the queue on the activity channel, so idle workers wake.
    let mut pubsub = redis::Client::open(fx.redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(fx.tiger.keys().activity()).await.unwrap();
    task.retry(&fx.tiger).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .expect("a message within 5 s")
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "insp");
    assert_eq!(fx.ids(State::Queued, "insp").await, [failed.as_str()]);
    assert!(fx.ids(State::Error, "insp").await.is_empty());

    // The stale copy still says error: retrying it again names where the task is now.
    match task.retry(&fx.tiger).await {
        Err(Error::WrongState { state, .. }) => assert_eq!(state, State::Queued),
        other => panic!("expected WrongState, got {other:?}"),
    }
    // A worker runs it again; it fails again and keeps both records.
    fx.drain().await;
    assert_eq!(take::<u64>(&token), [250, 250]);
    let again = Task::from_id(&fx.tiger, "insp", State::Error, failed.as_str())
        .await
        .unwrap();
    assert_eq!((again.n_executions, again.executions.len()), (2, 2));
}

#[tokio::test]
async fn pages_are_newest_first_with_the_total() {
    let fx = Fixture::new().await;
    for n in 1..=5 {
        let id = id(n);
        place(
            &fx,
            State::Error,
            "pages",
            &id,
            Some(&body(&id)),
            f64::from(n) * 10.0,
        )
        .await;
    }
    let page = |skip, limit| {
        let tiger = fx.tiger.clone();
        async move {
            let (total, tasks) =
                Task::tasks_from_queue(&tiger, "pages", State::Error, skip, limit, 0)
                    .await
                    .unwrap();
            let ids: Vec<String> = tasks.into_iter().map(|t| t.id).collect();
            (total, ids)
        }
    };
    assert_eq!(page(0, 2).await, (5, vec![id(5), id(4)]));
    assert_eq!(page(2, 2).await, (5, vec![id(3), id(2)]));
    assert_eq!(page(4, 10).await, (5, vec![id(1)]));
    assert_eq!(page(9, 10).await, (5, vec![]));
    assert_eq!(page(0, 0).await, (5, vec![]));
    let (_, tasks) = Task::tasks_from_queue(&fx.tiger, "pages", State::Error, 0, 1, 0)
        .await
        .unwrap();
    assert_eq!(tasks[0].ts, 50.0);
    assert_eq!(tasks[0].data.as_ref().unwrap().func, "legacy.tasks:minimal");
}

#[tokio::test]
async fn python_shapes_read_leniently_and_a_reschedule_changes_only_scheduled_at() {
    let fx = Fixture::new().await;
    let full = id(1);
    // As Python wrote it, then Lua's cjson touched it: `{}` for empty lists, an integer
    // timeout, a number too big for 64 bits, Python's separators and `\/` escapes.
    let full_json = format!(
        r#"{{"id": "{full}", "func": "legacy.tasks:full", "unique": true, "args": {{}}, "kwargs": {{"user": 123456789012345678901234567890, "path": "a\/b"}}, "hard_timeout": 30, "retry_method": ["tasktiger.retry:_fixed", []], "retry_on": {{}}, "lock_key": null, "time_last_queued": 1700000000.123456, "scheduled_at": 1700000000.5}}"#
    );
    let float = id(2);
    let float_json = format!(
        r#"{{"id": "{float}", "func": "legacy.tasks:float", "args": [1], "hard_timeout": 2.5}}"#
    );
    let minimal = id(3);
    place(&fx, State::Scheduled, "py", &full, Some(&full_json), 3.0).await;
    place(&fx, State::Scheduled, "py", &float, Some(&float_json), 2.0).await;
    place(
        &fx,
        State::Scheduled,
        "py",
        &minimal,
        Some(&body(&minimal)),
        1.0,
    )
    .await;

    let (total, tasks) = Task::tasks_from_queue(&fx.tiger, "py", State::Scheduled, 0, 10, 5)
        .await
        .unwrap();
    assert_eq!(total, 3);
    let data: Vec<_> = tasks
        .iter()
        .map(|t| t.data.clone().expect("reads"))
        .collect();
    assert!(data[0].unique && data[0].args.is_empty());
    assert_eq!(data[0].kwargs["path"], "a/b");
    assert_eq!(data[0].hard_timeout, Some(30.0));
    assert_eq!(
        (data[0].retry_on.clone(), data[0].lock_key.clone()),
        (None, None)
    );
    assert_eq!(data[1].hard_timeout, Some(2.5));
    assert_eq!(data[1].args, [serde_json::json!(1)]);
    assert_eq!(data[2].func, "legacy.tasks:minimal");
    assert_eq!((data[2].scheduled_at, data[2].hard_timeout), (None, None));
    assert!(
        tasks
            .iter()
            .all(|t| t.executions.is_empty() && t.n_executions == 0)
    );

    let due = UNIX_EPOCH + Duration::from_secs_f64(1_800_000_000.25);
    tasks[0]
        .update_scheduled_time(&fx.tiger, due)
        .await
        .unwrap();
    assert_eq!(
        raw_body(&fx, &full).await.unwrap(),
        full_json.replace("1700000000.5", "1800000000.25"),
        "every byte but scheduled_at's survives"
    );
    assert_eq!(
        score(&fx, State::Scheduled, "py", &full).await,
        Some(1_800_000_000.25)
    );
    // A task without the field gets it; a due time in the past means due now.
    tasks[2]
        .update_scheduled_time(&fx.tiger, UNIX_EPOCH)
        .await
        .unwrap();
    let minimal_json = raw_body(&fx, &minimal).await.unwrap();
    assert_eq!(
        minimal_json,
        body(&minimal).replace('}', r#", "scheduled_at": 0.0}"#)
    );

    // Only scheduled tasks can be rescheduled.
    let queued = id(4);
    place(&fx, State::Queued, "py", &queued, Some(&body(&queued)), 1.0).await;
    let task = Task::from_id(&fx.tiger, "py", State::Queued, &queued)
        .await
        .unwrap();
    assert!(matches!(
        task.update_scheduled_time(&fx.tiger, Duration::from_secs(60))
            .await,
        Err(Error::WrongState {
            state: State::Queued,
            ..
        })
    ));
}

#[tokio::test]
async fn tasks_queued_by_python_tasktiger_are_read_and_rescheduled_for_python_to_see() {
    let fx = Fixture::new().await;
    let python = |args: &[&str]| fx.python_json("produce_tasks.py", args);
    let ids = python(&[]);
    let scheduled_id = ids["scheduled"].as_str().unwrap();
    let queued_id = ids["queued"].as_str().unwrap();

    let found = Task::find(&fx.tiger, scheduled_id).await.unwrap();
    assert_eq!(found.len(), 1);
    let task = &found[0];
    assert_eq!(
        (task.queue.as_str(), task.state),
        ("py.reports", State::Scheduled)
    );
    let data = task.data.as_ref().unwrap();
    assert_eq!(data.func, "legacy.reports:report");
    assert!(data.unique && data.args.is_empty());
    assert_eq!(data.kwargs["amount"], 0.1);
    assert_eq!(data.hard_timeout, Some(30.0));
    assert_eq!(
        data.retry_method,
        Some(serde_json::json!(["tasktiger.retry:_fixed", [60, 3]]))
    );
    let queued = Task::from_id(&fx.tiger, "py", State::Queued, queued_id)
        .await
        .unwrap();
    assert_eq!(queued.data.as_ref().unwrap().hard_timeout, Some(2.5));
    assert_eq!(
        queued.data.as_ref().unwrap().args,
        [serde_json::json!(7), serde_json::json!(2.5)]
    );

    let before = raw_body(&fx, scheduled_id).await.unwrap();
    let due = SystemTime::now() + Duration::from_secs(7200);
    task.update_scheduled_time(&fx.tiger, due).await.unwrap();
    let seen = python(&["read", "py.reports", scheduled_id]);
    let due_secs = due.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        (seen["ts"].as_f64().unwrap() - due_secs).abs() < 1e-3,
        "{seen}"
    );
    assert!((seen["data"]["scheduled_at"].as_f64().unwrap() - due_secs).abs() < 1e-3);
    // The big integer came through unchanged, as Python reads it.
    assert_eq!(seen["user_id"], "12345678901234567890123");
    let old_scheduled_at = data.scheduled_at.unwrap();
    let after = raw_body(&fx, scheduled_id).await.unwrap();
    assert_eq!(
        before.replace(&serde_json::to_string(&old_scheduled_at).unwrap(), "X"),
        after.replace(&serde_json::to_string(&due_secs).unwrap(), "X")
    );

    task.cancel(&fx.tiger).await.unwrap();
    assert!(
        Task::find(&fx.tiger, scheduled_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(raw_body(&fx, scheduled_id).await, None);
}

#[tokio::test]
async fn a_task_whose_json_is_gone_is_listed_and_can_be_deleted() {
    let fx = Fixture::new().await;
    let gone = id(7);
    place(&fx, State::Error, "lost", &gone, None, 5.0).await;
    let task = Task::from_id(&fx.tiger, "lost", State::Error, &gone)
        .await
        .unwrap();
    assert!(task.json.is_none() && task.data.is_none());
    let (total, listed) = Task::tasks_from_queue(&fx.tiger, "lost", State::Error, 0, 10, 10)
        .await
        .unwrap();
    assert_eq!((total, listed.len()), (1, 1));
    assert!(listed[0].json.is_none());
    assert!(matches!(
        Task::n_executions(&fx.tiger, &gone).await,
        Err(Error::TaskNotFound { .. })
    ));
    // Not JSON at all is shown as it is.
    let broken = id(8);
    place(&fx, State::Error, "lost", &broken, Some("{not json"), 6.0).await;
    let task_b = Task::from_id(&fx.tiger, "lost", State::Error, &broken)
        .await
        .unwrap();
    assert_eq!(
        (task_b.json.as_deref(), task_b.data.is_none()),
        (Some("{not json"), true)
    );

    task.delete(&fx.tiger).await.unwrap();
    task_b.delete(&fx.tiger).await.unwrap();
    assert_eq!(fx.keys().await, set(&[]));
    assert!(matches!(
        task.delete(&fx.tiger).await,
        Err(Error::TaskNotFound { .. })
    ));
}

#[tokio::test]
async fn cancel_and_delete_refuse_tasks_in_other_states() {
    let fx = Fixture::new().await;
    let token = token();
    let later = note::delay(token.clone(), "later".into())
        .queue("c")
        .when(Duration::from_secs(3600))
        .on(&fx.tiger)
        .await
        .unwrap();
    let now = note::delay(token.clone(), "now".into())
        .queue("c")
        .on(&fx.tiger)
        .await
        .unwrap();
    let running = id(9);
    place(
        &fx,
        State::Active,
        "c",
        &running,
        Some(&body(&running)),
        1.0,
    )
    .await;

    let active = Task::from_id(&fx.tiger, "c", State::Active, &running)
        .await
        .unwrap();
    assert!(matches!(
        active.cancel(&fx.tiger).await,
        Err(Error::WrongState {
            state: State::Active,
            ..
        })
    ));
    let queued = Task::from_id(&fx.tiger, "c", State::Queued, now.as_str())
        .await
        .unwrap();
    assert!(matches!(
        queued.delete(&fx.tiger).await,
        Err(Error::WrongState {
            state: State::Queued,
            ..
        })
    ));
    assert!(matches!(
        queued.retry(&fx.tiger).await,
        Err(Error::WrongState { .. })
    ));
    queued.cancel(&fx.tiger).await.unwrap();
    let scheduled = Task::from_id(&fx.tiger, "c", State::Scheduled, later.as_str())
        .await
        .unwrap();
    scheduled.cancel(&fx.tiger).await.unwrap();
    // Only the active task is left, with its JSON.
    assert_eq!(
        fx.keys().await,
        set(&["active", "active:c", &format!("task:{running}")])
    );
    fx.drain().await;
    assert!(
        take::<String>(&token).is_empty(),
        "cancelled tasks never run"
    );
}

#[tokio::test]
async fn stats_and_sizes_count_every_state() {
    let fx = Fixture::new().await;
    let layout: &[(State, &str, u32)] = &[
        (State::Queued, "a", 3),
        (State::Active, "a", 1),
        (State::Scheduled, "a", 2),
        (State::Error, "a", 4),
        (State::Queued, "a.b", 1),
        (State::Error, "z", 2),
    ];
    let mut n = 0;
    for (state, queue, count) in layout {
        for _ in 0..*count {
            n += 1;
            let id = id(n);
            place(&fx, *state, queue, &id, Some(&body(&id)), 1.0).await;
        }
    }
    let counts = |queued, active, scheduled, error| {
        let mut c = StateCounts::default();
        (c.queued, c.active, c.scheduled, c.error) = (queued, active, scheduled, error);
        c
    };
    let stats = fx.tiger.queue_stats().await.unwrap();
    assert_eq!(
        stats,
        BTreeMap::from([
            ("a".to_owned(), counts(3, 1, 2, 4)),
            ("a.b".to_owned(), counts(1, 0, 0, 0)),
            ("z".to_owned(), counts(0, 0, 0, 2)),
        ])
    );
    assert_eq!(fx.tiger.queue_sizes("a").await.unwrap(), counts(3, 1, 2, 4));
    assert_eq!(fx.tiger.total_queue_size("a").await.unwrap(), 6);
    assert_eq!(fx.tiger.total_queue_size("nothing").await.unwrap(), 0);
    assert_eq!(
        fx.tiger
            .sizes_for_queues_and_states(&[
                (State::Error, "a"),
                (State::Queued, "a.b"),
                (State::Error, "q")
            ])
            .await
            .unwrap(),
        [4, 1, 0]
    );
}

#[tokio::test]
async fn purge_removes_everything_that_matches_in_one_call() {
    let fx = Fixture::new().await;
    let mut pipe = redis::pipe();
    let keys = fx.tiger.keys().clone();
    let mut n = 0u32;
    let mut add = |queue: &str, score: f64, with_body: bool, unique: bool| {
        n += 1;
        let id = id(n);
        if with_body {
            let json = format!(r#"{{"id": "{id}", "func": "m:f", "unique": {unique}}}"#);
            pipe.cmd("SET").arg(keys.task(&id)).arg(json).ignore();
            pipe.cmd("RPUSH")
                .arg(keys.executions(&id))
                .arg("{}")
                .ignore();
            pipe.cmd("SET")
                .arg(keys.executions_count(&id))
                .arg(1)
                .ignore();
        }
        pipe.cmd("ZADD")
            .arg(keys.queue(State::Error, queue))
            .arg(score)
            .arg(&id)
            .ignore();
        pipe.cmd("SADD")
            .arg(keys.state_set(State::Error))
            .arg(queue)
            .ignore();
    };
    // 1 200 old tasks on p.a (more than one page; some with JSON gone, some unique), 10
    // recent ones there, 30 on the excluded p.b, 20 on an unselected queue.
    for i in 0..1200 {
        add("p.a", 100.0 + f64::from(i), i % 7 != 0, i % 5 == 0);
    }
    for i in 0..10 {
        add("p.a", 5000.0 + f64::from(i), true, false);
    }
    for i in 0..30 {
        add("p.b", 100.0 + f64::from(i), true, false);
    }
    for i in 0..20 {
        add("keep", 100.0 + f64::from(i), true, false);
    }
    pipe.query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();

    let cutoff = Some(UNIX_EPOCH + Duration::from_secs(2000));
    let only = ["p".to_owned()];
    let exclude = ["p.b".to_owned()];
    let purged = fx
        .tiger
        .purge_errored_tasks(&only, &exclude, cutoff, None)
        .await
        .unwrap();
    assert_eq!(purged, 1200);
    let sizes = fx
        .tiger
        .sizes_for_queues_and_states(&[
            (State::Error, "p.a"),
            (State::Error, "p.b"),
            (State::Error, "keep"),
        ])
        .await
        .unwrap();
    assert_eq!(sizes, [10, 30, 20]);
    // Their JSON and records went with them: 60 tasks × 3 keys remain, plus 3 zsets and
    // the state set.
    assert_eq!(fx.keys().await.len(), 60 * 3 + 3 + 1);

    assert_eq!(
        fx.tiger
            .purge_errored_tasks(&only, &[], None, Some(15))
            .await
            .unwrap(),
        15
    );
    assert_eq!(
        fx.tiger
            .purge_errored_tasks(&only, &[], None, None)
            .await
            .unwrap(),
        25
    );
    assert_eq!(
        fx.tiger.queue_stats().await.unwrap().len(),
        1,
        "only `keep` is left"
    );
}

#[tokio::test]
async fn odd_keys_are_reported_not_fatal_and_can_still_be_removed() {
    let fx = Fixture::new().await;
    let keys = fx.tiger.keys().clone();
    // A unique task in error and queued whose JSON does not parse strictly: deleting it from
    // error must keep the JSON the queued copy needs.
    let unique = id(1);
    let odd_json = format!(
        r#"{{"id": "{unique}", "func": "m:f", "unique": true, "max_queue_size": -1, "func": "m:g"}}"#
    );
    place(&fx, State::Error, "odd", &unique, Some(&odd_json), 1.0).await;
    place(&fx, State::Queued, "odd", &unique, Some(&odd_json), 1.0).await;
    let errored = Task::from_id(&fx.tiger, "odd", State::Error, &unique)
        .await
        .unwrap();
    assert_eq!(
        errored.data.as_ref().unwrap().func,
        "m:g",
        "the last key wins, as in Python"
    );
    assert_eq!(errored.data.as_ref().unwrap().max_queue_size, None);
    errored.delete(&fx.tiger).await.unwrap();
    assert_eq!(
        raw_body(&fx, &unique).await.as_deref(),
        Some(odd_json.as_str())
    );

    // A task key of another type and a JSON array: listed with what is wrong, the page
    // still read.
    let hashed = id(2);
    place(&fx, State::Error, "odd", &hashed, None, 2.0).await;
    redis::cmd("HSET")
        .arg(keys.task(&hashed))
        .arg("a")
        .arg("b")
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let array = id(3);
    place(
        &fx,
        State::Error,
        "odd",
        &array,
        Some(r#"["m:f", [1]]"#),
        3.0,
    )
    .await;
    let (total, tasks) = Task::tasks_from_queue(&fx.tiger, "odd", State::Error, 0, 10, 10)
        .await
        .unwrap();
    assert_eq!((total, tasks.len()), (2, 2));
    assert!(tasks[0].data.is_none(), "a JSON array is not a task");
    assert!(
        tasks[1].problem.as_deref().unwrap().contains("WRONGTYPE"),
        "{:?}",
        tasks[1]
    );

    // An id that is not UTF-8 (a foreign producer's) is purged too, keys and all.
    let raw_id: &[u8] = b"bad\xff-id";
    let raw_task = [keys.prefix().as_bytes(), b":task:", raw_id].concat();
    redis::pipe()
        .cmd("ZADD")
        .arg(keys.queue(State::Error, "odd"))
        .arg(0.5)
        .arg(raw_id)
        .ignore()
        .cmd("SET")
        .arg(&raw_task)
        .arg("{}")
        .ignore()
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let purged = fx
        .tiger
        .purge_errored_tasks(&[], &[], None, None)
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&raw_task)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(fx.tiger.queue_sizes("odd").await.unwrap().error, 0);
}
