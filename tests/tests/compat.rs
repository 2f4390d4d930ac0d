//! A mixed fleet: Python TaskTiger 0.26.3 (the real one, from PyPI) and tiger on one Redis.
//! The Python half is `tests/python/compat_tasks.py` (its tasks) and `compat.py` (a driver
//! for producing, working and inspecting); the tasks here carry the same names
//! (`compat_tasks:<name>`). They live in this test binary only, for its periodic task.
//!
//! Every run of a task, in either language, appends a JSON line (`who`, `task`, its
//! arguments) to the Redis list `<prefix>:compat:<token>`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tiger::{Config, State, Task, Tiger, Worker, fixed, testing::wait_until};
use tiger_tests::*;

/// Appends what ran to `<prefix>:compat:<token>`, as the Python tasks do.
async fn note(token: &str, what: Value) {
    let tiger = tiger::current_tiger().expect("inside a task");
    let mut line = json!({ "who": "rust" });
    line.as_object_mut()
        .unwrap()
        .extend(what.as_object().unwrap().clone());
    redis::cmd("RPUSH")
        .arg(format!("{}:compat:{token}", tiger.keys().prefix()))
        .arg(line.to_string())
        .query_async::<()>(&mut tiger.connection())
        .await
        .expect("note");
}

#[tiger::task(name = "compat_tasks:record")]
async fn record(token: String, n: i64, label: Option<String>) {
    note(&token, json!({ "task": "record", "n": n, "label": label })).await;
}

#[tiger::task(name = "compat_tasks:fails")]
async fn fails(token: String, n: i64) -> Result<(), String> {
    note(&token, json!({ "task": "fails", "n": n })).await;
    Err(format!("rust refused {n}"))
}

#[tiger::task(name = "compat_tasks:any")]
async fn any(token: String, n: Value) {
    note(&token, json!({ "task": "any", "n": n })).await;
}

/// `any` under a lock keyed by its argument.
#[tiger::task(name = "compat_tasks:any_locked", lock_key = ["n"])]
async fn any_locked(token: String, n: Value) {
    note(&token, json!({ "task": "any_locked", "n": n })).await;
}

/// Counts runs for one user that overlap another, whichever language runs them.
#[tiger::task(name = "compat_tasks:exclusive", lock_key = ["user"])]
async fn exclusive(token: String, user: u64) {
    let tiger = tiger::current_tiger().expect("inside a task");
    let prefix = tiger.keys().prefix().to_owned();
    let running = format!("{prefix}:compat:{token}:running:{user}");
    let mut conn = tiger.connection();
    // When the run began, before its work.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let now: i64 = redis::cmd("INCR")
        .arg(&running)
        .query_async(&mut conn)
        .await
        .unwrap();
    if now > 1 {
        redis::cmd("INCR")
            .arg(format!("{prefix}:compat:{token}:overlaps"))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis::cmd("DECR")
        .arg(&running)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    note(
        &token,
        json!({ "task": "exclusive", "user": user, "at": at }),
    )
    .await;
}

#[tiger::task(name = "compat_tasks:batch", batch)]
async fn batch(calls: Vec<(String, i64)>) {
    for (token, n) in calls {
        note(&token, json!({ "task": "batch", "n": n })).await;
    }
}

/// A parameter whose name is a Rust keyword travels under its plain name.
#[tiger::task(name = "compat_tasks:kind", lock_key = ["type"])]
async fn kind(token: String, r#type: String) {
    note(&token, json!({ "task": "kind", "type": r#type })).await;
}

/// Python declares it on `compat.periodic-py`.
#[tiger::task(name = "compat_tasks:elsewhere", queue = "compat.periodic-rs", schedule = periodic(hours = 1))]
async fn elsewhere() {
    note("elsewhere", json!({ "task": "elsewhere" })).await;
}

/// Declared on both sides with the same name and schedule.
#[tiger::task(name = "compat_tasks:hourly", queue = "compat.periodic", schedule = periodic(hours = 1))]
async fn hourly() {
    note("hourly", json!({ "task": "hourly" })).await;
}

/// A fixture whose handle has the batch queue Python declares too.
async fn fixture() -> Fixture {
    let mut fx = Fixture::new().await;
    let config = Config {
        batch_queues: [("compat.batch".to_owned(), 10)].into(),
        ..tiger::testing::test_config()
    };
    let prefix = fx.tiger.keys().prefix().to_owned();
    fx.tiger = fx
        .redis
        .tiger_with(Config {
            redis_prefix: prefix,
            ..config
        })
        .await
        .unwrap();
    fx
}

/// Runs `compat.py <command> <argument>` and returns what it printed.
fn py(fx: &Fixture, command: &str, argument: Value) -> Value {
    fx.python_json("compat.py", &[command, &argument.to_string()])
}

/// Starts a long-running Python worker (`spec` as for `compat.py work`) in the background.
fn python_worker(fx: &Fixture, spec: Value) -> std::process::Child {
    std::process::Command::new(python())
        .arg(workspace_root().join("tests/python/compat.py"))
        .args([
            fx.port().as_str(),
            fx.tiger.keys().prefix(),
            "work",
            &spec.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a python worker")
}

/// Runs a Python worker (`python`, as for `compat.py work`) and then `tiger` until `runs`
/// runs are noted for `token`; returns the notes. The Python worker goes first (it starts
/// slower), so that both fleets take part.
async fn both_fleets(
    fx: &Fixture,
    token: &str,
    python: Value,
    tiger: Worker,
    runs: usize,
) -> Vec<Value> {
    let mut python = python_worker(fx, python);
    wait_until(
        Duration::from_secs(20),
        "the python worker to start",
        || async { !notes(fx, token).await.is_empty() },
    )
    .await;
    let worker = spawn_worker(tiger);
    wait_until(Duration::from_secs(60), "every run", || async {
        notes(fx, token).await.len() == runs
    })
    .await;
    worker.stop().await;
    let _ = python.kill();
    let _ = python.wait();
    notes(fx, token).await
}

/// How many runs of `exclusive` for `token` overlapped another of the same user.
async fn overlaps(fx: &Fixture, token: &str) -> u64 {
    let count: Option<u64> = redis::cmd("GET")
        .arg(format!(
            "{}:compat:{token}:overlaps",
            fx.tiger.keys().prefix()
        ))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    count.unwrap_or(0)
}

/// What ran for `token`, in order.
async fn notes(fx: &Fixture, token: &str) -> Vec<Value> {
    let lines: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}:compat:{token}", fx.tiger.keys().prefix()))
        .arg(0)
        .arg(-1)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `n`s that `who` ran for `token`, sorted.
async fn ran_by(fx: &Fixture, token: &str, who: &str) -> Vec<i64> {
    let mut ns: Vec<i64> = notes(fx, token)
        .await
        .iter()
        .filter(|n| n["who"] == who)
        .filter_map(|n| n["n"].as_i64())
        .collect();
    ns.sort();
    ns
}

/// A worker over the compat queues but the periodic one, in the background.
fn tiger_worker(tiger: &Tiger) -> RunningWorker {
    spawn_worker(
        Worker::new(tiger.clone())
            .queues(["default", "compat"])
            .exclude_queues(["compat.periodic"])
            .concurrency(4),
    )
}

async fn nothing_left_but_errors(fx: &Fixture, queues: &[&str]) -> bool {
    for queue in queues {
        let sizes = fx.tiger.queue_sizes(queue).await.unwrap();
        if sizes.queued + sizes.active + sizes.scheduled > 0 {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn python_producers_tasks_run_on_a_tiger_worker_with_their_arguments() {
    let fx = fixture().await;
    let t = token();
    let specs = json!([
        {"func": "record", "args": [t, 1]},
        {"func": "record", "args": [t, 2], "kwargs": {"label": "keyword"}},
        {"func": "record", "kwargs": {"token": t, "n": 3, "label": "all by name"}},
        {"func": "record", "args": [t, 4], "unique": true},
        {"func": "record", "kwargs": {"token": t, "n": 5}, "unique_key": ["n"]},
        {"func": "record", "kwargs": {"token": t, "n": 6}, "lock_key": ["token"]},
        {"func": "record", "args": [t, 7], "queue": "compat.sub.deeper"},
        {"func": "record", "args": [t, 8], "when": 0.3},
        {"func": "fails", "args": [t, 9], "retry_method": ["fixed", [0.1, 2]]},
        {"func": "fails", "args": [t, 10], "retry_method": ["linear", [0.1, 0.1, 2]]},
        {"func": "fails", "args": [t, 11], "retry_method": ["exponential", [0.1, 2, 2]]},
        {"func": "batch", "args": [t, 12], "queue": "compat.batch"},
        {"func": "batch", "args": [t, 13], "queue": "compat.batch"},
    ]);
    let ids = py(&fx, "delay", specs);
    let worker = tiger_worker(&fx.tiger);
    wait_until(
        Duration::from_secs(30),
        "every task to run or fail for good",
        || async {
            ran_by(&fx, &t, "rust").await.len() == 10 + 9
                && nothing_left_but_errors(&fx, &["default", "compat.sub.deeper", "compat.batch"])
                    .await
        },
    )
    .await;
    worker.stop().await;

    let mut records: BTreeMap<i64, Value> = BTreeMap::new();
    for line in notes(&fx, &t).await {
        assert_eq!(line["who"], "rust");
        if line["task"] == "record" {
            records.insert(line["n"].as_i64().unwrap(), line["label"].clone());
        }
    }
    assert_eq!(records.len(), 8, "{records:?}");
    assert_eq!(records[&2], "keyword");
    assert_eq!(records[&3], "all by name");
    assert!(records[&1].is_null() && records[&8].is_null());
    // Each retry method ran the task three times (two retries), then left it in error with
    // its records, as Python would.
    assert_eq!(
        ran_by(&fx, &t, "rust")
            .await
            .iter()
            .filter(|n| (9..=11).contains(*n))
            .count(),
        9
    );
    let failed = ids.as_array().unwrap()[8..11].to_vec();
    let mut errored = fx.ids(State::Error, "default").await;
    errored.sort();
    let mut expected: Vec<String> = failed
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(errored, expected);
    for id in &expected {
        assert_eq!(Task::n_executions(&fx.tiger, id).await.unwrap(), 3);
    }
    let seen = py(&fx, "tasks", json!({"queue": "default", "state": "error"}));
    assert_eq!(seen["total"], 3);
    for task in seen["tasks"].as_array().unwrap() {
        assert_eq!(task["n_executions"], 3);
        assert_eq!(task["executions"].as_array().unwrap().len(), 3);
    }
}

#[tokio::test]
async fn pythons_retry_on_meets_rusts_error_names_as_the_readme_says() {
    let fx = fixture().await;
    let t = token();
    let ids = py(
        &fx,
        "delay",
        json!([
            {"func": "fails", "args": [t, 1], "retry_method": ["fixed", [0.1, 1]], "retry_on": ["builtins:Exception"]},
            {"func": "fails", "args": [t, 2], "retry_method": ["fixed", [0.1, 1]], "retry_on": ["builtins:ValueError"]},
        ]),
    );
    let worker = tiger_worker(&fx.tiger);
    wait_until(Duration::from_secs(20), "both to fail for good", || async {
        fx.tiger.queue_sizes("default").await.unwrap().error == 2
            && nothing_left_but_errors(&fx, &["default"]).await
    })
    .await;
    worker.stop().await;
    // A Rust `String` error is `builtins:Exception`: retried under `retry_on=[Exception]`,
    // not under `retry_on=[ValueError]`.
    assert_eq!(ran_by(&fx, &t, "rust").await, [1, 1, 2]);
    let runs = |i: usize| {
        let id = ids[i].as_str().unwrap().to_owned();
        let tiger = fx.tiger.clone();
        async move { Task::n_executions(&tiger, &id).await.unwrap() }
    };
    assert_eq!((runs(0).await, runs(1).await), (2, 1));
}

#[tokio::test]
async fn tigers_tasks_run_on_python_workers_with_both_executors() {
    for executor in ["sync", "fork"] {
        let fx = fixture().await;
        let t = token();
        record::delay(t.clone(), 1, None)
            .on(&fx.tiger)
            .await
            .unwrap();
        record::delay(t.clone(), 2, Some("x".into()))
            .queue("compat.sub")
            .on(&fx.tiger)
            .await
            .unwrap();
        record::delay(t.clone(), 3, None)
            .unique(true)
            .on(&fx.tiger)
            .await
            .unwrap();
        exclusive::delay(t.clone(), 7).on(&fx.tiger).await.unwrap();
        let failing = fails::delay(t.clone(), 4)
            .retry_method(fixed(0.1, 1))
            .on(&fx.tiger)
            .await
            .unwrap();
        // A Python worker drains; the retry waits in scheduled for a moment, so drain again
        // until it has failed for good.
        wait_until(
            Duration::from_secs(60),
            "the python worker to finish",
            || async {
                py(
                    &fx,
                    "work",
                    json!({"executor": executor, "queues": ["default", "compat"]}),
                );
                nothing_left_but_errors(&fx, &["default", "compat.sub"]).await
            },
        )
        .await;
        assert_eq!(
            ran_by(&fx, &t, "python").await,
            [1, 2, 3, 4, 4],
            "{executor}"
        );
        let labels: Vec<Value> = notes(&fx, &t)
            .await
            .iter()
            .map(|n| n["label"].clone())
            .collect();
        assert!(labels.contains(&json!("x")));
        assert!(
            notes(&fx, &t)
                .await
                .iter()
                .any(|n| n["task"] == "exclusive" && n["user"] == 7)
        );
        // Python's records of the failure, read by Python and by tiger.
        let seen = py(&fx, "tasks", json!({"queue": "default", "state": "error"}));
        assert_eq!(seen["tasks"][0]["id"], failing.as_str());
        assert_eq!(seen["tasks"][0]["n_executions"], 2);
        let task = Task::from_id(&fx.tiger, "default", State::Error, failing.as_str())
            .await
            .unwrap();
        assert_eq!(task.n_executions, 2);
        let record = task.executions.last().unwrap();
        assert_eq!(
            record.exception_name.as_deref(),
            Some("builtins:ValueError")
        );
        assert!(
            record
                .traceback
                .as_deref()
                .unwrap()
                .contains("python refused 4")
        );
    }
}

#[tokio::test]
async fn failures_cross_over_and_a_retry_on_one_side_runs_on_the_other() {
    let fx = fixture().await;
    let t = token();
    // tiger fails it; Python reads the failure and retries it; tiger runs it again.
    let by_rust = fails::delay(t.clone(), 1).on(&fx.tiger).await.unwrap();
    fx.drain_with(|w| w.queues(["default"])).await;
    let seen = py(&fx, "tasks", json!({"queue": "default", "state": "error"}));
    let execution = &seen["tasks"][0]["executions"][0];
    assert_eq!(seen["tasks"][0]["id"], by_rust.as_str());
    // A Rust error without a type of its own is Python's base class, which a Python
    // `retry_on=[Exception]` matches.
    assert_eq!(execution["exception_name"], "builtins:Exception");
    assert!(
        execution["traceback"]
            .as_str()
            .unwrap()
            .contains("rust refused 1")
    );
    assert_eq!(execution["success"], false);
    py(
        &fx,
        "retry",
        json!({"queue": "default", "id": by_rust.as_str()}),
    );
    assert_eq!(fx.ids(State::Queued, "default").await, [by_rust.as_str()]);
    fx.drain_with(|w| w.queues(["default"])).await;
    assert_eq!(ran_by(&fx, &t, "rust").await, [1, 1]);
    assert_eq!(
        Task::n_executions(&fx.tiger, by_rust.as_str())
            .await
            .unwrap(),
        2
    );

    // Python fails one; tiger's API retries it; Python runs it again.
    let t2 = token();
    let by_python = py(
        &fx,
        "delay",
        json!([{"func": "fails", "args": [t2, 2], "queue": "compat.py"}]),
    );
    let id = by_python[0].as_str().unwrap().to_owned();
    py(&fx, "work", json!({"queues": ["compat.py"]}));
    let task = Task::from_id(&fx.tiger, "compat.py", State::Error, &id)
        .await
        .unwrap();
    assert_eq!(
        task.executions[0].exception_name.as_deref(),
        Some("builtins:ValueError")
    );
    task.retry(&fx.tiger).await.unwrap();
    py(&fx, "work", json!({"queues": ["compat.py"]}));
    assert_eq!(ran_by(&fx, &t2, "python").await, [2, 2]);
    let seen = py(
        &fx,
        "tasks",
        json!({"queue": "compat.py", "state": "error"}),
    );
    assert_eq!(seen["tasks"][0]["n_executions"], 2);
}

#[tokio::test]
async fn unique_and_lock_ids_are_pythons_for_a_corpus_of_arguments() {
    let fx = fixture().await;
    let t = "corpus".to_owned();
    let corpus = [
        json!(0),
        json!(-17),
        json!(u64::MAX),
        json!(0.1),
        json!(1e16),
        json!(-0.0),
        json!("ünïcödé 🐯 \"quoted\" \\ /"),
        json!(null),
        json!(true),
        json!([1, "two", [3.5]]),
        json!({"b": 1, "a": {"d": [], "c": {}}}),
        json!(""),
    ];
    let mut ours = Vec::new();
    for n in &corpus {
        let id = any::delay(t.clone(), n.clone())
            .unique(true)
            .on(&fx.tiger)
            .await
            .unwrap();
        ours.push(id.as_str().to_owned());
    }
    let specs: Vec<Value> = corpus
        .iter()
        .map(|n| json!({"func": "any", "args": [t, n]}))
        .collect();
    let theirs = py(&fx, "ids", json!(specs));
    for ((n, ours), theirs) in corpus.iter().zip(&ours).zip(theirs.as_array().unwrap()) {
        assert_eq!(theirs["unique"], ours.as_str(), "unique id for {n}");
    }

    // Lock ids: the locks Python computes for the same corpus (as Python workers would hold
    // them) stop tiger's runs, and once they are gone every task runs.
    let specs: Vec<Value> = corpus
        .iter()
        .map(|n| json!({"func": "any_locked", "kwargs": {"token": "locks", "n": n}, "lock_key": ["n"]}))
        .collect();
    let theirs = py(&fx, "ids", json!(specs));
    let locks: Vec<String> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| fx.tiger.keys().lock(ids["lock"].as_str().unwrap()))
        .collect();
    for lock in &locks {
        redis::cmd("SET")
            .arg(lock)
            .arg("held-by-a-python-worker")
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut fx.tiger.connection())
            .await
            .unwrap();
    }
    for n in &corpus {
        any_locked::delay("locks".into(), n.clone())
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    fx.drain_with(|w| w.queues(["default"])).await;
    assert!(
        notes(&fx, "locks").await.is_empty(),
        "ran despite a lock Python holds"
    );
    assert_eq!(
        fx.ids(State::Scheduled, "default").await.len(),
        corpus.len()
    );
    redis::cmd("DEL")
        .arg(&locks)
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let worker = tiger_worker(&fx.tiger);
    wait_until(
        Duration::from_secs(10),
        "every task to run once the locks are free",
        || async { notes(&fx, "locks").await.len() == corpus.len() },
    )
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_queue_limits_hold_across_python_and_tiger_workers() {
    let fx = fixture().await;
    let t = token();
    // 40 runs for two users, half queued by each side, on queues both fleets serve.
    let mut specs = Vec::new();
    for i in 0..20 {
        exclusive::delay(t.clone(), i % 2)
            .on(&fx.tiger)
            .await
            .unwrap();
        specs.push(json!({"func": "exclusive", "kwargs": {"token": t, "user": i % 2}, "lock_key": ["user"]}));
    }
    py(&fx, "delay", json!(specs));
    let python = json!({"queues": ["default"], "seconds": 30});
    let tiger = Worker::new(fx.tiger.clone())
        .queues(["default"])
        .concurrency(8);
    let runs = both_fleets(&fx, &t, python, tiger, 40).await;
    let by = |who: &str| runs.iter().filter(|n| n["who"] == who).count();
    assert!(
        by("rust") > 0 && by("python") > 0,
        "both fleets ran some: {runs:?}"
    );
    assert_eq!(
        overlaps(&fx, &t).await,
        0,
        "two runs of one user overlapped"
    );

    // A queue limit of 1 (-M 1) counts both: plain tasks, no lock, never two at once.
    let t = token();
    let specs: Vec<Value> = (0..20)
        .map(|_| json!({"func": "exclusive", "kwargs": {"token": t, "user": 0}, "queue": "compat.one"}))
        .collect();
    py(&fx, "delay", json!(specs));
    let python = json!({"queues": ["compat.one"], "max_workers_per_queue": 1, "seconds": 30});
    let tiger = Worker::new(fx.tiger.clone())
        .queues(["compat.one"])
        .concurrency(8)
        .max_workers_per_queue(1);
    both_fleets(&fx, &t, python, tiger, 20).await;
    assert_eq!(
        overlaps(&fx, &t).await,
        0,
        "the queue limit let two run at once"
    );

    // Which fleet wins the one place is up to timing; that tiger counts a Python worker's
    // place is not: while one is held (as Python's semaphore script writes it, here for one
    // more second), tiger's worker takes nothing from the queue.
    let t = token();
    exclusive::delay(t.clone(), 0)
        .queue("compat.one")
        .on(&fx.tiger)
        .await
        .unwrap();
    let semaphore = format!("{}:qslock:compat.one", fx.tiger.keys().prefix());
    let held_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 1.0;
    redis::cmd("ZADD")
        .arg(&semaphore)
        .arg(held_until)
        .arg("a-python-worker-uuid")
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    fx.drain_with(|w| w.queues(["compat.one"]).max_workers_per_queue(1))
        .await;
    let ran = notes(&fx, &t).await;
    assert_eq!(ran.len(), 1);
    assert!(
        ran[0]["at"].as_f64().unwrap() >= held_until,
        "ran while a Python worker held the only place"
    );
}

#[tokio::test]
async fn a_periodic_task_declared_on_both_sides_is_queued_once() {
    let fx = fixture().await;
    // Each side's worker queues its periodic tasks when it starts.
    py(&fx, "work", json!({"queues": ["compat.periodic"]}));
    fx.drain_with(|w| w.queues(["compat.periodic"])).await;
    py(&fx, "work", json!({"queues": ["compat.periodic"]}));
    let scheduled = fx.ids(State::Scheduled, "compat.periodic").await;
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    assert!(fx.ids(State::Queued, "compat.periodic").await.is_empty());
}

#[tokio::test]
async fn a_periodic_task_python_keeps_on_another_queue_does_not_stop_a_tiger_worker() {
    let fx = fixture().await;
    py(&fx, "work", json!({"queues": ["compat.periodic-py"]}));
    assert_eq!(
        fx.ids(State::Scheduled, "compat.periodic-py").await.len(),
        1
    );
    let t = token();
    record::delay(t.clone(), 1, None)
        .on(&fx.tiger)
        .await
        .unwrap();
    // This worker would queue the same periodic task on its own queue: it leaves it, warns,
    // and does its work.
    fx.drain_with(|w| w.queues(["default", "compat.periodic-rs"]))
        .await;
    assert_eq!(ran_by(&fx, &t, "rust").await, [1]);
    assert!(
        fx.ids(State::Scheduled, "compat.periodic-rs")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_parameter_named_like_a_rust_keyword_travels_under_its_python_name() {
    let fx = fixture().await;
    let t = token();
    py(
        &fx,
        "delay",
        json!([{"func": "kind", "kwargs": {"token": t, "type": "from python"}}]),
    );
    fx.drain_with(|w| w.queues(["default"])).await;
    // tiger writes it as `type` in kwargs (the task has a lock_key), so Python runs it.
    kind::delay(t.clone(), "from rust".into())
        .queue("compat.py")
        .on(&fx.tiger)
        .await
        .unwrap();
    py(&fx, "work", json!({"queues": ["compat.py"]}));
    let seen: Vec<(Value, Value)> = notes(&fx, &t)
        .await
        .iter()
        .map(|n| (n["who"].clone(), n["type"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("rust"), json!("from python")),
            (json!("python"), json!("from rust"))
        ]
    );
}
