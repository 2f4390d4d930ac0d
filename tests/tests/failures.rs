//! What a failure leaves in Redis: errors, panics, and tasks that cannot run at all. The
//! worker records each and keeps going.

use tiger::{State, worker};
use tiger_tests::*;

const RECORD_FIELDS: [&str; 6] = [
    "exception_name",
    "host",
    "success",
    "time_failed",
    "time_started",
    "traceback",
];

#[tokio::test]
async fn success_removes_every_key_of_the_task() {
    let fx = Fixture::new().await;
    let token = token();
    for i in 0..3 {
        note::delay(token.clone(), format!("n{i}"))
            .queue("a.b")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    assert!(!fx.keys().await.is_empty());
    fx.drain().await;
    assert_eq!(take::<String>(&token).len(), 3);
    fx.assert_keys([]).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn an_error_leaves_exactly_the_task_its_record_and_its_count() {
    let fx = Fixture::new().await;
    let token = token();
    let id = charge::delay(token.clone(), 1999)
        .on(&fx.tiger)
        .await
        .unwrap();
    let id = id.as_str();
    fx.drain().await;
    assert_eq!(take::<u64>(&token), [1999]);

    let expected = [
        "error".to_owned(),
        "error:billing".to_owned(),
        format!("task:{id}"),
        format!("task:{id}:executions"),
        format!("task:{id}:executions_count"),
    ];
    assert_eq!(fx.keys().await, expected.into_iter().collect());
    assert_eq!(fx.ids(State::Error, "billing").await, [id]);
    let count: u64 = redis::cmd("GET")
        .arg(fx.tiger.keys().executions_count(id))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(count, 1);

    let records = fx.executions(id).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(field_names(record), RECORD_FIELDS);
    assert_eq!(record["success"], false);
    assert_eq!(record["exception_name"], "tiger_tests:ChargeError");
    let traceback = record["traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with("ChargeError: charging the card failed"),
        "{traceback}"
    );
    assert!(
        traceback.contains("Caused by:\n    0: card declined for 1999 cents"),
        "{traceback}"
    );
    let started = record["time_started"].as_f64().unwrap();
    let failed = record["time_failed"].as_f64().unwrap();
    assert!(started > 1.7e9 && started <= failed, "{started} {failed}");
    assert!(!record["host"].as_str().unwrap().is_empty());
    // The body is kept as it was, so the task can be inspected and retried.
    assert_eq!(
        fx.body(id).await.unwrap()["args"],
        serde_json::json!([token, 1999])
    );
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn panics_are_caught_recorded_and_the_worker_goes_on() {
    let fx = Fixture::new().await;
    let token = token();
    let async_id = explode::delay(token.clone()).on(&fx.tiger).await.unwrap();
    let sync_id = explode_sync::delay(token.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let after = tiger_tests::token();
    note::delay(after.clone(), "after".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain_with(|w| w.concurrency(1)).await;

    assert_eq!(take::<()>(&token).len(), 2);
    assert_eq!(
        take::<String>(&after),
        ["after"],
        "the worker went on after the panics"
    );
    for (id, kind) in [(&async_id, "async"), (&sync_id, "sync")] {
        let records = fx.executions(id.as_str()).await;
        assert_eq!(records.len(), 1, "{kind}");
        assert_eq!(records[0]["exception_name"], worker::PANIC);
        let traceback = records[0]["traceback"].as_str().unwrap();
        assert!(
            traceback.contains(&format!("boom in {kind} task {token}")),
            "{traceback}"
        );
        assert!(
            traceback.contains("panicked at tests/src/lib.rs:"),
            "{traceback}"
        );
    }
    let mut errored = fx.ids(State::Error, "default").await;
    errored.sort();
    let mut want = vec![async_id.to_string(), sync_id.to_string()];
    want.sort();
    assert_eq!(errored, want);
    let mut keys = state_keys(State::Error, "default");
    keys.extend(errored_task_keys(async_id.as_str()));
    keys.extend(errored_task_keys(sync_id.as_str()));
    fx.assert_keys(keys).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn tasks_that_cannot_run_end_in_error_with_a_record_saying_why() {
    let fx = Fixture::new().await;
    let token = token();
    let id = |n: u8| format!("{n:064x}");
    let cases = [
        (
            id(1),
            "{not json".to_owned(),
            worker::MALFORMED_TASK,
            "not valid task JSON",
        ),
        (
            id(2),
            r#"{"id": "0000", "func": "x:y"}"#.to_owned(),
            worker::MALFORMED_TASK,
            "stored under",
        ),
        (
            id(3),
            r#"[1, 2]"#.to_owned(),
            worker::MALFORMED_TASK,
            "not valid task JSON",
        ),
        (
            id(4),
            format!(r#"{{"id": "{}", "args": []}}"#, id(4)),
            worker::MALFORMED_TASK,
            "missing field `func`",
        ),
        (
            id(5),
            format!(r#"{{"id": "{}", "func": "nowhere:nothing"}}"#, id(5)),
            worker::UNKNOWN_TASK,
            "no task named `nowhere:nothing`",
        ),
        (
            id(6),
            format!(
                r#"{{"id": "{}", "func": "{}", "args": ["tok", "not a number"]}}"#,
                id(6),
                charge::NAME
            ),
            worker::INVALID_ARGUMENTS,
            "argument `cents` (`\"not a number\"`) does not decode as `u64`",
        ),
        (
            id(7),
            format!(
                r#"{{"id": "{}", "func": "{}", "args": "tok"}}"#,
                id(7),
                charge::NAME
            ),
            worker::INVALID_ARGUMENTS,
            "`args` must be a JSON list",
        ),
        (
            id(8),
            format!(
                r#"{{"id": "{}", "func": "{}", "args": ["tok"]}}"#,
                id(8),
                charge::NAME
            ),
            worker::INVALID_ARGUMENTS,
            "missing argument `cents`",
        ),
    ];
    for (id, body, _, _) in &cases {
        fx.inject("raw", id, Some(body)).await;
    }
    let missing = id(9);
    fx.inject("raw", &missing, None).await;
    note::delay(token.clone(), "still runs".into())
        .queue("raw")
        .on(&fx.tiger)
        .await
        .unwrap();

    fx.drain().await;

    assert_eq!(take::<String>(&token), ["still runs"]);
    let mut errored = fx.ids(State::Error, "raw").await;
    errored.sort();
    let mut want: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    want.sort();
    assert_eq!(errored, want);
    for (id, body, name, says) in &cases {
        let records = fx.executions(id).await;
        assert_eq!(records.len(), 1, "{id}");
        assert_eq!(records[0]["exception_name"], *name, "{id}");
        let traceback = records[0]["traceback"].as_str().unwrap();
        assert!(
            traceback.contains(says),
            "{id}: {traceback:?} should say {says:?}"
        );
        let kept: String = redis::cmd("GET")
            .arg(fx.tiger.keys().task(id))
            .query_async(&mut fx.tiger.connection())
            .await
            .unwrap();
        assert_eq!(&kept, body, "the body is kept byte for byte");
    }
    // An id whose body is gone cannot run or be retried: it is removed, not left active.
    let mut keys = state_keys(State::Error, "raw");
    for (id, _, _, _) in &cases {
        keys.extend(errored_task_keys(id));
    }
    fx.assert_keys(keys).await;
    faults::assert_idle_invariants(&fx.tiger).await;
}

#[tokio::test]
async fn tracebacks_can_be_turned_off() {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let config = tiger::Config {
        store_tracebacks: false,
        ..tiger::testing::test_config()
    };
    let tiger = redis.tiger_with(config).await.unwrap();
    let id = charge::delay(token(), 1).on(&tiger).await.unwrap();
    tiger::Worker::new(tiger.clone())
        .once(true)
        .run()
        .await
        .unwrap();
    let record: String = redis::cmd("LINDEX")
        .arg(tiger.keys().executions(id.as_str()))
        .arg(-1)
        .query_async(&mut tiger.connection())
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let fields = field_names(&record);
    assert_eq!(
        fields,
        [
            "exception_name",
            "host",
            "success",
            "time_failed",
            "time_started"
        ]
    );
    assert_eq!(record["exception_name"], "tiger_tests:ChargeError");
    let prefix = tiger.keys().prefix();
    let mut expected: Vec<String> = state_keys(State::Error, "billing");
    expected.extend(errored_task_keys(id.as_str()));
    let expected: std::collections::BTreeSet<String> = expected
        .into_iter()
        .map(|k| format!("{prefix}:{k}"))
        .collect();
    assert_eq!(redis.keys(&tiger).await.unwrap(), expected);
    faults::assert_idle_invariants(&tiger).await;
}
