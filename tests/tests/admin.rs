//! The operator's subcommands of the worker program, run as a user runs them: the test
//! worker binary (`tiger::run_worker_with`) with a subcommand, against a real Redis.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tiger::{State, Task};
use tiger_tests::*;

const WORKER: &str = env!("CARGO_BIN_EXE_tiger-test-worker");

/// The worker program with `args`, on the fixture's Redis and prefix, `stdin` as its input.
fn admin(fx: &Fixture, args: &[&str], stdin: &str) -> Output {
    let mut child = command(fx, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker program");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn command(fx: &Fixture, args: &[&str]) -> Command {
    let mut command = Command::new(WORKER);
    command
        .args(args)
        .env("REDIS_URL", fx.redis.url())
        .env("TIGER_PREFIX", fx.tiger.keys().prefix())
        .env("RUST_LOG", "warn");
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `args`, expects exit status `code`, returns stdout.
fn expect(fx: &Fixture, args: &[&str], code: i32) -> String {
    let output = admin(fx, args, "");
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A task of `queue` that failed (the `charge` task always does).
async fn failed_task(fx: &Fixture, queue: &str, cents: u64) -> String {
    let id = charge::delay(token(), cents)
        .queue(queue)
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain_with(|w| w.queues([queue])).await;
    id.as_str().to_owned()
}

fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{text}"))
}

#[tokio::test]
async fn stats_and_list_show_what_is_queued() {
    let fx = Fixture::new().await;
    let token = token();
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = note::delay(token.clone(), format!("n{n}"))
            .queue("adm.mail")
            .on(&fx.tiger)
            .await
            .unwrap();
        ids.push(id.as_str().to_owned());
    }
    note::delay(token.clone(), "later".into())
        .queue("adm.mail")
        .when(Duration::from_secs(600))
        .on(&fx.tiger)
        .await
        .unwrap();
    let failed = failed_task(&fx, "adm.billing", 99).await;

    let table = expect(&fx, &["stats"], 0);
    assert_eq!(
        row(&table, "queue"),
        ["queue", "queued", "active", "scheduled", "error"]
    );
    assert_eq!(row(&table, "adm.mail"), ["adm.mail", "3", "0", "1", "0"]);
    assert_eq!(
        row(&table, "adm.billing"),
        ["adm.billing", "0", "0", "0", "1"]
    );
    assert_eq!(row(&table, "(all)"), ["(all)", "3", "0", "1", "1"]);
    let json: serde_json::Value =
        serde_json::from_str(&expect(&fx, &["stats", "--json"], 0)).unwrap();
    assert_eq!(
        json["adm.mail"],
        serde_json::json!({"queued": 3, "active": 0, "scheduled": 1, "error": 0})
    );

    let listed = expect(&fx, &["list", "adm.mail", "queued", "--limit", "2"], 0);
    assert!(
        listed.starts_with("3 tasks queued on queue `adm.mail`, newest first; 1 to 2"),
        "{listed}"
    );
    // Newest first: the last enqueued comes first.
    let rows: Vec<&str> = listed.lines().filter(|l| l.contains(note::NAME)).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows[0].trim_start().starts_with(&ids[2]) && rows[1].trim_start().starts_with(&ids[1]));
    assert!(
        rows[0].contains(&format!(r#"["{token}","n2"]"#)),
        "{listed}"
    );
    let json: serde_json::Value = serde_json::from_str(&expect(
        &fx,
        &["list", "adm.mail", "queued", "--skip", "1", "--json"],
        0,
    ))
    .unwrap();
    assert_eq!(json["total"], 3);
    let listed_ids: Vec<&str> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, [ids[1].as_str(), ids[0].as_str()]);
    let errors = expect(&fx, &["list", "adm.billing", "error"], 0);
    assert!(
        errors.contains(&failed) && errors.contains("failed"),
        "{errors}"
    );

    // Usage errors exit 2, as clap does.
    expect(&fx, &["list", "adm.mail", "stuck"], 2);
}

#[tokio::test]
async fn stats_watch_refreshes_until_interrupted() {
    let fx = Fixture::new().await;
    note::delay(token(), "x".into())
        .queue("w")
        .on(&fx.tiger)
        .await
        .unwrap();
    let mut child = command(&fx, &["stats", "--watch", "0.1", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first).unwrap()["w"]["queued"],
        1
    );
    note::delay(token(), "y".into())
        .queue("w")
        .on(&fx.tiger)
        .await
        .unwrap();
    // Refreshes come until one shows the second task.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = lines.next().unwrap().unwrap();
        let seen: serde_json::Value = serde_json::from_str(&line).unwrap();
        if seen["w"]["queued"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh showed the new task"
        );
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn show_prints_the_task_and_its_tracebacks() {
    let fx = Fixture::new().await;
    let failed = failed_task(&fx, "adm.show", 4321).await;
    let shown = expect(&fx, &["show", &failed], 0);
    assert!(shown.contains(&format!("task {failed}")), "{shown}");
    assert!(shown.contains("queue:       adm.show"), "{shown}");
    assert!(shown.contains(charge::NAME), "{shown}");
    assert!(shown.contains("failed runs: 1 (1 shown)"), "{shown}");
    assert!(shown.contains("ChargeError"), "{shown}");
    assert!(shown.contains("card declined for 4321 cents"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&expect(&fx, &["show", &failed, "--json"], 0)).unwrap();
    assert_eq!(json[0]["state"], "error");
    assert_eq!(json[0]["data"]["args"][1], 4321);
    let bounded = expect(&fx, &["show", &failed, "--executions", "0"], 0);
    assert!(bounded.contains("failed runs: 1 (0 shown)"), "{bounded}");

    let missing = admin(&fx, &["show", "0123"], "");
    assert_eq!(missing.status.code(), Some(tiger::EXIT_NOT_FOUND));
    assert!(
        stderr(&missing).contains("no task `0123` in any queue"),
        "{}",
        stderr(&missing)
    );
    // A task whose JSON is gone is shown as such.
    redis::cmd("DEL")
        .arg(fx.tiger.keys().task(&failed))
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert!(expect(&fx, &["show", &failed], 0).contains("JSON:        gone"));
}

#[tokio::test]
async fn retry_delete_and_cancel_one_task_with_exit_codes_for_scripts() {
    let fx = Fixture::new().await;
    let failed = failed_task(&fx, "adm.one", 1).await;
    let out: serde_json::Value =
        serde_json::from_str(&expect(&fx, &["retry", &failed, "--json"], 0)).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"done": "retry", "tasks": 1, "ids": [failed], "queue": "adm.one"})
    );
    assert_eq!(fx.ids(State::Queued, "adm.one").await, [failed.as_str()]);
    // Now it is queued: retrying or deleting it again is the wrong state.
    let again = admin(&fx, &["retry", &failed], "");
    assert_eq!(again.status.code(), Some(tiger::EXIT_WRONG_STATE));
    assert!(
        stderr(&again).contains("is queued on queue `adm.one`"),
        "{}",
        stderr(&again)
    );
    expect(&fx, &["delete", &failed], tiger::EXIT_WRONG_STATE);
    // Cancel takes it off its queue (only the states it names, when given).
    expect(
        &fx,
        &["cancel", &failed, "--state", "scheduled"],
        tiger::EXIT_WRONG_STATE,
    );
    expect(&fx, &["cancel", &failed], 0);
    assert!(Task::find(&fx.tiger, &failed).await.unwrap().is_empty());
    expect(&fx, &["delete", &failed], tiger::EXIT_NOT_FOUND);

    let again = failed_task(&fx, "adm.one", 2).await;
    expect(
        &fx,
        &["delete", &again, "--queues", "elsewhere"],
        tiger::EXIT_NOT_FOUND,
    );
    expect(&fx, &["delete", &again, "-q", "adm"], 0);
    assert_eq!(fx.keys().await, set(&[]));
}

#[tokio::test]
async fn all_asks_first_unless_told_yes() {
    let fx = Fixture::new().await;
    let mut failed = Vec::new();
    for (queue, n) in [("adm.a", 1), ("adm.a.sub", 2), ("other", 3)] {
        failed.push(failed_task(&fx, queue, n).await);
    }
    let declined = admin(&fx, &["delete", "--all", "--queues", "adm.a"], "n\n");
    assert_eq!(declined.status.code(), Some(tiger::EXIT_DECLINED));
    assert!(
        stderr(&declined).contains("delete 2 tasks in error on 2 queues (adm.a, adm.a.sub)?"),
        "{}",
        stderr(&declined)
    );
    assert_eq!(
        fx.tiger.queue_stats().await.unwrap().len(),
        3,
        "nothing changed"
    );

    let agreed = admin(&fx, &["retry", "--all", "-q", "adm.a"], "yes\n");
    assert_eq!(agreed.status.code(), Some(0), "{}", stderr(&agreed));
    assert_eq!(fx.ids(State::Queued, "adm.a").await, [failed[0].as_str()]);
    assert_eq!(
        fx.ids(State::Queued, "adm.a.sub").await,
        [failed[1].as_str()]
    );
    assert_eq!(fx.ids(State::Error, "other").await, [failed[2].as_str()]);

    expect(&fx, &["cancel", "--all", "--state", "queued", "--yes"], 0);
    assert!(fx.ids(State::Queued, "adm.a").await.is_empty());
    let out = expect(&fx, &["delete", "--all", "-y", "--json"], 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"done": "delete", "tasks": 1, "queues": ["other"]})
    );
    assert_eq!(fx.keys().await, set(&[]));
    assert!(expect(&fx, &["delete", "--all", "-y"], 0).contains("no tasks in error to delete"));
    // --state is checked against what the command does.
    expect(&fx, &["retry", "--all", "--state", "queued", "-y"], 2);
}

#[tokio::test]
async fn reschedule_pause_and_purge() {
    let fx = Fixture::new().await;
    let later = note::delay(token(), "later".into())
        .queue("adm.r")
        .when(Duration::from_secs(60))
        .on(&fx.tiger)
        .await
        .unwrap();
    let score = |fx: &Fixture, id: String| {
        let tiger = fx.tiger.clone();
        async move {
            redis::cmd("ZSCORE")
                .arg(tiger.keys().queue(State::Scheduled, "adm.r"))
                .arg(id)
                .query_async::<f64>(&mut tiger.connection())
                .await
                .unwrap()
        }
    };
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    expect(&fx, &["reschedule", later.as_str(), "2h"], 0);
    assert!((score(&fx, later.as_str().to_owned()).await - (now() + 7200.0)).abs() < 30.0);
    expect(
        &fx,
        &["reschedule", later.as_str(), "2030-01-01T00:00:00Z"],
        0,
    );
    assert_eq!(score(&fx, later.as_str().to_owned()).await, 1_893_456_000.0);
    let body = fx.body(later.as_str()).await.unwrap();
    assert_eq!(body["scheduled_at"], 1_893_456_000.0);
    expect(&fx, &["reschedule", later.as_str(), "whenever"], 2);
    expect(&fx, &["reschedule", "nope", "1h"], tiger::EXIT_NOT_FOUND);

    expect(&fx, &["pause", "adm.r", "60"], 0);
    let table = expect(&fx, &["stats"], 0);
    assert!(
        row(&table, "queue").ends_with(&["paused", "until"]),
        "{table}"
    );
    assert_eq!(row(&table, "adm.r").len(), 5 + 3, "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&expect(&fx, &["stats", "--json"], 0)).unwrap();
    assert!(json["adm.r"]["paused_until"].as_f64().is_some());
    let until = fx
        .tiger
        .get_queue_system_lock("adm.r")
        .await
        .unwrap()
        .unwrap();
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
    expect(&fx, &["pause", "adm.r", "0"], 0);
    assert_eq!(fx.tiger.get_queue_system_lock("adm.r").await.unwrap(), None);

    let old = failed_task(&fx, "adm.p", 1).await;
    let recent = failed_task(&fx, "adm.p", 2).await;
    redis::cmd("ZADD")
        .arg(fx.tiger.keys().queue(State::Error, "adm.p"))
        .arg(now() - 7200.0)
        .arg(&old)
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let declined = admin(&fx, &["purge-errored", "--older-than", "1h"], "\n");
    assert_eq!(declined.status.code(), Some(tiger::EXIT_DECLINED));
    let out = expect(
        &fx,
        &["purge-errored", "--older-than", "1h", "-q", "adm", "--yes"],
        0,
    );
    assert!(out.contains("purged 1 task in error"), "{out}");
    let out = expect(
        &fx,
        &["purge-errored", "--older-than", "1h", "--yes", "--json"],
        0,
    );
    assert_eq!(out.trim(), r#"{"purged":0}"#);
    assert_eq!(fx.ids(State::Error, "adm.p").await, [recent.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_takes_each_counted_task_once_while_a_worker_fails_them_again() {
    let fx = Fixture::new().await;
    let token = token();
    let calls = (0..1200).map(|n| (token.clone(), n));
    charge::delay_many(calls)
        .each(|call| call.queue("adm.busy"))
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(fx.tiger.queue_sizes("adm.busy").await.unwrap().error, 1200);
    // A worker runs (and fails again) what the retry puts back, while it is still at work.
    let worker = spawn_worker(tiger::Worker::new(fx.tiger.clone()).concurrency(50));
    let out = expect(&fx, &["retry", "--all", "--yes", "--json"], 0);
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["tasks"], 1200);
    tiger::testing::wait_until(
        Duration::from_secs(60),
        "every retried task to fail again",
        || async {
            let sizes = fx.tiger.queue_sizes("adm.busy").await.unwrap();
            sizes.error == 1200 && sizes.queued == 0 && sizes.active == 0
        },
    )
    .await;
    worker.stop().await;
    let ids = fx.ids(State::Error, "adm.busy").await;
    for id in &ids {
        assert_eq!(
            Task::n_executions(&fx.tiger, id).await.unwrap(),
            2,
            "task {id} ran again"
        );
    }
}

#[tokio::test]
async fn out_of_range_input_is_a_usage_error_not_a_crash() {
    let fx = Fixture::new().await;
    let later = note::delay(token(), "later".into())
        .queue("adm.range")
        .when(Duration::from_secs(60))
        .on(&fx.tiger)
        .await
        .unwrap();
    expect(&fx, &["reschedule", later.as_str(), "1e19"], 2);
    expect(&fx, &["reschedule", later.as_str(), "300000000000y"], 2);
    expect(
        &fx,
        &["purge-errored", "--older-than", "300000000000y", "--yes"],
        0,
    );
    let out = expect(
        &fx,
        &[
            "list",
            "adm.range",
            "scheduled",
            "--skip",
            "18446744073709551615",
            "--limit",
            "2",
        ],
        0,
    );
    assert!(out.contains("none past the first"), "{out}");
    expect(
        &fx,
        &[
            "list",
            "adm.range",
            "scheduled",
            "--limit",
            "18446744073709551615",
        ],
        0,
    );
    expect(&fx, &["pause", "adm.range", "1h 30m"], 0);
    expect(&fx, &["--redis-url", "not a url", "stats"], 2);
}

#[tokio::test]
async fn stats_watch_ends_when_its_reader_goes_away() {
    let fx = Fixture::new().await;
    let mut child = command(&fx, &["stats", "--watch", "0.05"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    drop(lines);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still watching a closed pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
