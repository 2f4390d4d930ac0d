//! Input no tiger producer writes but a Redis shared with other producers (or hands) may
//! hold. Each bad entry ends in a defined state, and the tasks around it still run.

use std::collections::BTreeMap;

use tiger::{State, worker};
use tiger_tests::*;

/// Runs a raw Redis command on the fixture's connection.
async fn raw(fx: &Fixture, args: &[&[u8]]) {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
}

fn id(n: u8) -> String {
    format!("{n:064x}")
}

/// Enqueues a `note` labelled `label` on `queue`: a good task beside the bad ones.
async fn note_on(fx: &Fixture, queue: &str, token: &str, label: &str) {
    note::delay(token.to_owned(), label.to_owned())
        .queue(queue)
        .on(&fx.tiger)
        .await
        .unwrap();
}

/// Asserts that the good tasks labelled `before` and `after` both ran.
fn assert_neighbours_ran(token: &str) {
    let mut ran = take::<String>(token);
    ran.sort();
    assert_eq!(ran, ["after", "before"]);
}

#[tokio::test]
async fn a_body_that_is_not_utf8_errors_alone() {
    let fx = Fixture::new().await;
    let token = token();
    let bad = id(1);
    let mut body = format!(
        r#"{{"id": "{bad}", "func": "{}", "args": ["x", ""#,
        note::NAME
    )
    .into_bytes();
    body.extend_from_slice(b"\xff\xfe\"]}");
    let key = fx.tiger.keys().task(&bad);
    raw(&fx, &[b"SET", key.as_bytes(), &body]).await;
    fx.inject("mixed", &bad, None).await;
    for label in ["before", "after"] {
        note_on(&fx, "mixed", &token, label).await;
    }
    fx.drain().await;
    assert_neighbours_ran(&token);
    let record = &fx.executions(&bad).await[0];
    assert_eq!(record["exception_name"], worker::MALFORMED_TASK);
    assert!(
        record["traceback"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8")
    );
    let kept: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(kept, body, "the body is kept byte for byte");
    fx.assert_only_errored("mixed", &[&bad]).await;
}

#[tokio::test]
async fn an_id_that_is_not_utf8_goes_to_error_and_the_rest_run() {
    let fx = Fixture::new().await;
    let token = token();
    let queued = fx.tiger.keys().queue(State::Queued, "ids");
    raw(&fx, &[b"ZADD", queued.as_bytes(), b"0", b"ab\xffcd"]).await;
    raw(
        &fx,
        &[
            b"SADD",
            fx.tiger.keys().state_set(State::Queued).as_bytes(),
            b"ids",
        ],
    )
    .await;
    note::delay(token.clone(), "good".into())
        .queue("ids")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;

    assert_eq!(take::<String>(&token), ["good"]);
    let errored: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(fx.tiger.keys().queue(State::Error, "ids"))
        .arg(0)
        .arg(-1)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(errored, [b"ab\xffcd".to_vec()]);
    fx.assert_keys(state_keys(State::Error, "ids")).await;
}

#[tokio::test]
async fn a_queue_name_that_is_not_utf8_is_skipped() {
    let fx = Fixture::new().await;
    let token = token();
    raw(
        &fx,
        &[
            b"SADD",
            fx.tiger.keys().state_set(State::Queued).as_bytes(),
            b"bad\xffq",
        ],
    )
    .await;
    note::delay(token.clone(), "served".into())
        .queue("fine")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(take::<String>(&token), ["served"]);
}

#[tokio::test]
async fn a_queue_whose_key_has_the_wrong_type_does_not_hold_up_the_others() {
    let fx = Fixture::new().await;
    let token = token();
    raw(
        &fx,
        &[
            b"SET",
            fx.tiger.keys().queue(State::Queued, "broken").as_bytes(),
            b"x",
        ],
    )
    .await;
    raw(
        &fx,
        &[
            b"SADD",
            fx.tiger.keys().state_set(State::Queued).as_bytes(),
            b"broken",
        ],
    )
    .await;
    for i in 0..50 {
        note::delay(token.clone(), i.to_string())
            .queue(["a", "b", "c"][i % 3])
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    // Without setting the queue aside, each pass would stop at it and back off 1 s, and
    // `once` would never return.
    let clock = std::time::Instant::now();
    fx.drain().await;
    assert_eq!(take::<String>(&token).len(), 50);
    assert!(
        clock.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        clock.elapsed()
    );
    fx.assert_keys(["queued".to_owned(), "queued:broken".to_owned()])
        .await;
}

#[tokio::test]
async fn a_task_key_of_the_wrong_type_is_kept_and_errors() {
    let fx = Fixture::new().await;
    let bad = id(7);
    let key = fx.tiger.keys().task(&bad);
    raw(
        &fx,
        &[
            b"HSET",
            key.as_bytes(),
            b"id",
            bad.as_bytes(),
            b"func",
            note::NAME.as_bytes(),
        ],
    )
    .await;
    fx.inject("typed", &bad, None).await;
    fx.drain().await;

    let record = &fx.executions(&bad).await[0];
    assert_eq!(record["exception_name"], worker::MALFORMED_TASK);
    assert!(
        record["traceback"]
            .as_str()
            .unwrap()
            .contains("holds a Redis hash")
    );
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(kind, "hash", "the key is left as it was");
    fx.assert_only_errored("typed", &[&bad]).await;
}

/// `delay` with a NaN or an infinity anywhere in its arguments: serde_json would store `null`
/// in its place, so the call is refused with `Error::NonFiniteFloat`, naming the task and
/// where the float sits, before anything reaches Redis (eager mode too).
#[tokio::test]
async fn delay_refuses_non_finite_floats_and_writes_nothing() {
    let fx = Fixture::new().await;
    let token = token();
    let map = |value: f64| BTreeMap::from([("x".to_owned(), value)]);
    let point = Point { x: 0.5, y: 2.0 };
    let calls = [
        (
            floats::delay(token.clone(), f64::NAN, vec![], map(1.0), point.clone()),
            "x",
            "NaN",
        ),
        (
            floats::delay(
                token.clone(),
                1.0,
                vec![0.0, f64::INFINITY],
                map(1.0),
                point.clone(),
            ),
            "list[1]",
            "inf",
        ),
        (
            floats::delay(
                token.clone(),
                1.0,
                vec![],
                map(f64::NEG_INFINITY),
                point.clone(),
            ),
            "map.x",
            "-inf",
        ),
        (
            floats::delay(
                token.clone(),
                1.0,
                vec![],
                map(1.0),
                Point {
                    x: 1.0,
                    y: f32::NEG_INFINITY,
                },
            ),
            "point.y",
            "-inf",
        ),
    ];
    for (delay, at, shown) in calls {
        let err = delay.on(&fx.tiger).await.unwrap_err();
        let message = err.to_string();
        match err {
            tiger::Error::NonFiniteFloat {
                task,
                argument,
                path,
                value,
            } => {
                assert_eq!(task, floats::NAME);
                assert_eq!(path, at);
                assert_eq!(argument, at.split(['.', '[']).next().unwrap());
                assert_eq!(value.to_string(), shown);
            }
            other => panic!("expected `NonFiniteFloat`, got {other:?}"),
        }
        assert!(
            message.contains(floats::NAME) && message.contains(&format!("`{at}` is {shown}")),
            "{message}"
        );
    }
    fx.assert_keys(Vec::new()).await;

    let eager = fx
        .redis
        .tiger_with(tiger::Config {
            always_eager: true,
            ..tiger::testing::test_config()
        })
        .await
        .unwrap();
    let err = floats::delay(token.clone(), f64::INFINITY, vec![], map(1.0), point)
        .on(&eager)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tiger::Error::NonFiniteFloat { path, .. } if path == "x"),
        "{err:?}"
    );
    assert_eq!(count(&token), 0, "the eager task did not run");
    assert!(fx.redis.keys(&eager).await.unwrap().is_empty());
}

/// A real `null` and the word "null" send an argument to the second look, which lets it
/// through; finite extremes arrive as they were sent.
#[tokio::test]
async fn finite_floats_beside_nulls_are_enqueued() {
    let fx = Fixture::new().await;
    let token = token();
    let sent = (
        f64::MAX,
        vec![f64::MIN_POSITIVE, -0.0, 1e-300],
        BTreeMap::from([("null".to_owned(), f64::MIN)]),
        Point {
            x: f64::EPSILON,
            y: f32::MAX,
        },
    );
    floats::delay(
        token.clone(),
        sent.0,
        sent.1.clone(),
        sent.2.clone(),
        sent.3.clone(),
    )
    .on(&fx.tiger)
    .await
    .unwrap();
    fx.drain().await;
    assert_eq!(
        take::<(f64, Vec<f64>, BTreeMap<String, f64>, Point)>(&token),
        [sent]
    );
}

/// Python's `json.dumps` writes NaN, Infinity and -Infinity for non-finite floats. Such a
/// body goes to error once, as `tiger:MalformedTask` with a reason that says so, and the
/// tasks queued around it run.
#[tokio::test]
async fn python_nan_literals_error_with_a_clear_reason() {
    let fx = Fixture::new().await;
    let token = token();
    let literals = ["NaN", "Infinity", "-Infinity"];
    let ids: Vec<String> = (10..13).map(id).collect();
    note_on(&fx, "py", &token, "before").await;
    for (bad, literal) in ids.iter().zip(literals) {
        let body = format!(
            r#"{{"id": "{bad}", "func": "{}", "args": ["{token}", {literal}], "time_last_queued": 1.5}}"#,
            note::NAME
        );
        fx.inject("py", bad, Some(&body)).await;
    }
    note_on(&fx, "py", &token, "after").await;
    fx.drain().await;
    assert_neighbours_ran(&token);
    for (bad, literal) in ids.iter().zip(literals) {
        let records = fx.executions(bad).await;
        assert_eq!(records.len(), 1, "one record for {literal}");
        assert_eq!(records[0]["exception_name"], worker::MALFORMED_TASK);
        let reason = records[0]["traceback"].as_str().unwrap();
        assert!(
            reason.contains(&format!("holds `{literal}`, a non-standard JSON literal"))
                && reason.contains("NaN, Infinity and -Infinity")
                && reason.contains("tiger does not accept"),
            "{reason}"
        );
    }
    let bad: Vec<&str> = ids.iter().map(String::as_str).collect();
    fx.assert_only_errored("py", &bad).await;
}

/// A 10 MB argument (multi-byte characters, escapes, the word "null") is enqueued, run and
/// handed to the task byte for byte.
#[tokio::test]
async fn a_ten_megabyte_argument_round_trips() {
    let fx = Fixture::new().await;
    let token = token();
    let piece = "naïve \"null\" \\ 🐯\n\t\u{1}";
    let big = piece.repeat(10 * 1024 * 1024 / piece.len() + 1);
    assert!(big.len() >= 10 * 1024 * 1024);
    note::delay(token.clone(), big.clone())
        .queue("big")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    let got = take::<String>(&token);
    assert_eq!(got.len(), 1);
    assert!(
        got[0] == big,
        "{} bytes came back for {}",
        got[0].len(),
        big.len()
    );
    fx.assert_keys(Vec::new()).await;
}
