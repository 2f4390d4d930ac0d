//! Input no tiger producer writes but a Redis shared with other producers (or hands) may
//! hold. Each bad entry ends in a defined state, and the tasks around it still run.

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
        note::delay(token.clone(), label.into())
            .queue("mixed")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    fx.drain().await;

    let mut ran = take::<String>(&token);
    ran.sort();
    assert_eq!(ran, ["after", "before"]);
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
