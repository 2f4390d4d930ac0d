//! The fault scenarios of `fault-scenarios.md` that tiger supports today, each ending with
//! the invariants checker (`tiger::testing::Invariants`), and the checker's own tests: each
//! broken state built by hand is reported, and real runs are clean.
//!
//! Timers are the tests' (`tiger::testing::test_config`): a task is lost after 2 s without a
//! heartbeat, and someone looks for lost tasks every 0.4 s.
//!
//! Periodic tasks live here, not in the shared library, since every worker queues the
//! periodic tasks linked into it; so every worker below names its queues.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tiger::testing::{
    Invariants, RedisServer, TestRedis, check_invariants, recovery_bound, test_config,
    unique_prefix, wait_until,
};
use tiger::{Config, State, Tiger, Worker};
use tiger_tests::faults::*;
use tiger_tests::*;

const WORKER: &str = env!("CARGO_BIN_EXE_tiger-test-worker");

// ---------------------------------------------------------------------------------------
// Helpers

/// A worker child process, killed (if still running) when dropped.
struct Process {
    child: Child,
}

impl Process {
    /// Starts the worker binary on `tiger`'s Redis and prefix with `args`, logging to `log`.
    fn start(redis_url: &str, tiger: &Tiger, log: &Path, args: &[&str]) -> Process {
        let child = Command::new(WORKER)
            .args(["--prefix", tiger.keys().prefix()])
            .args(args)
            .env("REDIS_URL", redis_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start the worker binary");
        Process { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A handle on `url` under `prefix` with the test timers (and `adjust`), with a connection
/// of its own.
async fn handle(url: &str, prefix: &str, adjust: impl FnOnce(&mut Config)) -> Tiger {
    let mut config = Config {
        redis_prefix: prefix.to_owned(),
        ..test_config()
    };
    adjust(&mut config);
    Tiger::connect_with(url, config).await.unwrap()
}

/// The ids in `<state>:<queue>`.
async fn ids(tiger: &Tiger, state: State, queue: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(tiger.keys().queue(state, queue))
        .arg(0)
        .arg(-1)
        .query_async(&mut tiger.connection())
        .await
        .unwrap()
}

/// The keys matching `pattern` (SCAN, as the server may be shared).
async fn scan(tiger: &Tiger, pattern: &str) -> Vec<String> {
    let mut conn = tiger.connection();
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(batch);
        if next == 0 {
            found.sort();
            return found;
        }
        cursor = next;
    }
}

/// Every key under `tiger`'s prefix (prefix stripped) but those that expire on their own
/// (the sweeps' rate limits, live locks).
async fn keys_left(tiger: &Tiger) -> Vec<String> {
    let prefix = format!("{}:", tiger.keys().prefix());
    let mut left = Vec::new();
    for key in scan(tiger, &format!("{prefix}*")).await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut tiger.connection())
            .await
            .unwrap();
        if ttl == -1 {
            left.push(key[prefix.len()..].to_owned());
        }
    }
    left
}

/// The task locks (`lockv2:*` but the sweeps' rate limits) under `tiger`'s prefix.
async fn task_locks(tiger: &Tiger) -> Vec<String> {
    let locks = scan(tiger, &format!("{}:lockv2:*", tiger.keys().prefix())).await;
    locks
        .into_iter()
        .filter(|k| !k.contains("queue_scheduled_tasks") && !k.contains("queue_expired_tasks"))
        .collect()
}

/// Writes `id` as a task lost long ago: its body, an active entry with a heartbeat a minute
/// old, and the active set naming its queue.
async fn plant_lost(tiger: &Tiger, queue: &str, id: &str, body: &str) {
    let keys = tiger.keys();
    redis::pipe()
        .cmd("SET")
        .arg(keys.task(id))
        .arg(body)
        .ignore()
        .cmd("ZADD")
        .arg(keys.queue(State::Active, queue))
        .arg(now() - 60.0)
        .arg(id)
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(State::Active))
        .arg(queue)
        .ignore()
        .query_async::<()>(&mut tiger.connection())
        .await
        .unwrap();
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How many times each label was recorded under `token`, sorted by label.
fn tallies(token: &str) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for label in take::<String>(token) {
        *counts.entry(label).or_default() += 1;
    }
    counts.into_iter().collect()
}

fn once_each(labels: &[&str]) -> Vec<(String, usize)> {
    let mut labels: Vec<(String, usize)> = labels.iter().map(|l| (l.to_string(), 1)).collect();
    labels.sort();
    labels
}

// ---------------------------------------------------------------------------------------
// The checker, on states built by hand

/// Runs `commands` (an argument starting with `@` is a key under a fresh prefix) and
/// returns what the checker says.
async fn violations_after(
    redis: &TestRedis,
    invariants: &Invariants,
    commands: &[&[&str]],
) -> Vec<String> {
    let tiger = redis.tiger().await.unwrap();
    let prefix = tiger.keys().prefix().to_owned();
    let mut pipe = redis::pipe();
    for command in commands {
        let mut args = command.iter().map(|arg| match arg.strip_prefix('@') {
            Some(key) => format!("{prefix}:{key}"),
            None => (*arg).to_owned(),
        });
        let mut cmd = redis::cmd(&args.next().unwrap());
        for arg in args {
            cmd.arg(arg);
        }
        pipe.add_command(cmd).ignore();
    }
    if !commands.is_empty() {
        pipe.query_async::<()>(&mut tiger.connection())
            .await
            .unwrap();
    }
    match check_invariants(&tiger, invariants).await {
        Ok(()) => Vec::new(),
        Err(lines) => lines
            .into_iter()
            .map(|line| line.replace(&prefix, "P"))
            .collect(),
    }
}

/// Asserts that the checker reports exactly one line per entry of `expected`, each
/// containing its entry.
async fn reports(
    redis: &TestRedis,
    invariants: &Invariants,
    commands: &[&[&str]],
    expected: &[&str],
) {
    let found = violations_after(redis, invariants, commands).await;
    assert_eq!(
        found.len(),
        expected.len(),
        "expected {expected:#?}, found {found:#?}"
    );
    for needle in expected {
        assert!(
            found.iter().any(|line| line.contains(needle)),
            "no violation says {needle:?}: {found:#?}"
        );
    }
}

const A: &str = "aaaa";
const BODY: &str = r#"{"id": "aaaa", "func": "m:f"}"#;
const UNIQUE_BODY: &str = r#"{"id": "aaaa", "func": "m:f", "unique": true}"#;
const CAPPED_BODY: &str = r#"{"id": "aaaa", "func": "m:f", "max_stored_executions": 2}"#;

#[tokio::test]
async fn the_checker_reports_each_broken_rule() {
    let redis = TestRedis::start().unwrap();
    let all = Invariants::new();

    // 1. An id without a body; a body in no state.
    let queued = [
        &["ZADD", "@queued:q", "1", A][..],
        &["SADD", "@queued", "q"],
    ];
    reports(
        &redis,
        &all,
        &queued,
        &["`P:queued:q` holds `aaaa`, which has no body (`P:task:aaaa` is missing)"],
    )
    .await;
    reports(
        &redis,
        &all,
        &[&["SET", "@task:bbbb", BODY]],
        &["`P:task:bbbb` is in no queue's queued, active, scheduled or error zset"],
    )
    .await;

    // 2. A task that is not unique in two states; a unique one in two queues.
    let two_states = [
        &["SET", "@task:aaaa", BODY][..],
        &["ZADD", "@queued:q", "1", A],
        &["ZADD", "@active:q", "1", A],
        &["SADD", "@queued", "q"],
        &["SADD", "@active", "q"],
    ];
    reports(
        &redis,
        &all,
        &two_states,
        &["task `aaaa` is not unique but is in 2 places: active:q, queued:q"],
    )
    .await;
    let two_queues = [
        &["SET", "@task:aaaa", UNIQUE_BODY][..],
        &["ZADD", "@queued:a", "1", A],
        &["ZADD", "@queued:b", "1", A],
        &["SADD", "@queued", "a", "b"],
    ];
    reports(
        &redis,
        &all,
        &two_queues,
        &["unique task `aaaa` is in the states of 2 queues: queued:a, queued:b"],
    )
    .await;

    // 3. Locks and queue semaphores that never expire (one that does is fine).
    let locks = [
        &["SET", "@lockv2:forever", "token"][..],
        &["SET", "@lockv2:fine", "token", "PX", "60000"],
        &["ZADD", "@qslock:q", "1", "worker"],
    ];
    reports(
        &redis,
        &all,
        &locks,
        &["`P:lockv2:forever` has no TTL", "`P:qslock:q` has no TTL"],
    )
    .await;

    // 4. An old heartbeat, only when asked about.
    let old = (now() - 100.0).to_string();
    let stale = [
        &["SET", "@task:aaaa", BODY][..],
        &["ZADD", "@active:q", &old, A],
        &["SADD", "@active", "q"],
    ];
    reports(&redis, &all, &stale, &[]).await;
    reports(
        &redis,
        &Invariants::new().heartbeats_within(Duration::from_secs(10)),
        &stale,
        &["`P:active:q` holds `aaaa` with a heartbeat 100"],
    )
    .await;

    // 5. History over its cap, below its count, not a count, or without a body.
    let over_cap = [
        &["SET", "@task:aaaa", CAPPED_BODY][..],
        &["ZADD", "@scheduled:q", "1", A],
        &["SADD", "@scheduled", "q"],
        &["RPUSH", "@task:aaaa:executions", "{}", "{}", "{}"],
        &["SET", "@task:aaaa:executions_count", "7"],
    ];
    reports(
        &redis,
        &all,
        &over_cap,
        &["`P:task:aaaa:executions` holds 3 records, over the task's max_stored_executions of 2"],
    )
    .await;
    let undercounted = [
        &["SET", "@task:aaaa", BODY][..],
        &["ZADD", "@error:q", "1", A],
        &["SADD", "@error", "q"],
        &["RPUSH", "@task:aaaa:executions", "{}", "{}"],
        &["SET", "@task:aaaa:executions_count", "1"],
    ];
    reports(
        &redis,
        &all,
        &undercounted,
        &["`P:task:aaaa:executions_count` is 1, below the 2 records its list holds"],
    )
    .await;
    let not_a_count = [
        &["SET", "@task:aaaa", BODY][..],
        &["ZADD", "@error:q", "1", A],
        &["SADD", "@error", "q"],
        &["SET", "@task:aaaa:executions_count", "many"],
    ];
    reports(
        &redis,
        &all,
        &not_a_count,
        &["`P:task:aaaa:executions_count` is not a count"],
    )
    .await;
    let dangling = [
        &["RPUSH", "@task:cccc:executions", "{}"][..],
        &["SET", "@task:cccc:executions_count", "1"],
    ];
    reports(
        &redis,
        &all,
        &dangling,
        &[
            "`P:task:cccc:executions` (1 records) belongs to no task body",
            "`P:task:cccc:executions_count` belongs to no task body",
        ],
    )
    .await;

    // 6. A queue with ids that its state set does not name (naming an empty one is fine).
    let unnamed = [
        &["SET", "@task:aaaa", BODY][..],
        &["ZADD", "@scheduled:q", "1", A],
        &["SADD", "@queued", "gone"],
    ];
    reports(
        &redis,
        &all,
        &unnamed,
        &["`P:scheduled:q` holds ids but `P:scheduled` does not name `q`"],
    )
    .await;

    // And keys of the wrong type, or outside the layout.
    let odd = [
        &["RPUSH", "@queued:q", "x"][..],
        &["HSET", "@task:dddd", "f", "v"],
        &["ZADD", "@dddd", "1", "x"],
        &["SET", "@stray", "1"],
    ];
    reports(
        &redis,
        &all,
        &odd,
        &[
            "`P:queued:q` is a list, not a zset",
            "`P:task:dddd` is a hash, not a string",
            "`P:task:dddd` is in no queue's",
            "`P:dddd` (zset) is not a key of tiger's layout",
            "`P:stray` (string) is not a key of tiger's layout",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_checker_accepts_what_tasktiger_allows() {
    let redis = TestRedis::start().unwrap();
    let fresh = now().to_string();
    // A unique task running, with its next period scheduled, a failed copy in error and
    // a copy queued again; its history; a state set naming an empty queue; expiring locks.
    let unique_everywhere = [
        &["SET", "@task:aaaa", UNIQUE_BODY][..],
        &["ZADD", "@queued:q", "1", A],
        &["ZADD", "@active:q", &fresh, A],
        &["ZADD", "@scheduled:q", "1", A],
        &["ZADD", "@error:q", "1", A],
        &["SADD", "@queued", "q", "empty"],
        &["SADD", "@active", "q"],
        &["SADD", "@scheduled", "q"],
        &["SADD", "@error", "q"],
        &["RPUSH", "@task:aaaa:executions", "{}"],
        &["SET", "@task:aaaa:executions_count", "3"],
        &["SET", "@lockv2:queue_expired_tasks", "t", "PX", "60000"],
        &["ZADD", "@qslock:q", "1", "worker"],
        &["EXPIRE", "@qslock:q", "60"],
    ];
    let idle = Invariants::idle_fleet(&test_config());
    reports(&redis, &idle, &unique_everywhere, &[]).await;
    reports(&redis, &idle, &[], &[]).await;
}

#[tokio::test]
async fn the_checker_finds_real_runs_clean_while_workers_heartbeat_and_after() {
    let fx = Fixture::new().await;
    let idle = Invariants::idle_fleet(fx.tiger.config());
    let token = token();
    for label in ["a", "b"] {
        tally_and_hold::delay(token.clone(), label.into())
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    tally::delay(token.clone(), "later".into())
        .when(Duration::from_secs(60))
        .on(&fx.tiger)
        .await
        .unwrap();
    tally::delay(token.clone(), "unique".into())
        .queue("faults-idle")
        .unique(true)
        .on(&fx.tiger)
        .await
        .unwrap();
    let (charged, failing) = (tiger_tests::token(), tiger_tests::token());
    charge::delay(charged.clone(), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    always_fails::delay(failing.clone())
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(
        Worker::new(fx.tiger.clone())
            .queues(["faults", "billing", "retry"])
            .concurrency(4),
    );
    wait_until(
        Duration::from_secs(10),
        "both holds to run and the others to fail",
        || async { count(&token) == 2 && count(&charged) == 1 && count(&failing) >= 1 },
    )
    .await;
    // Heartbeats every 0.2 s while the checker reads.
    for _ in 0..5 {
        idle.assert(&fx.tiger).await;
    }
    let_go(&token);
    wait_until(Duration::from_secs(10), "the holds to finish", || async {
        fx.ids(State::Active, "faults").await.is_empty()
            && fx.ids(State::Error, "retry").await.len() == 1
    })
    .await;
    worker.stop().await;
    idle.assert(&fx.tiger).await;
}

// ---------------------------------------------------------------------------------------
// S03 (b): the recovery sweeper dies holding its lock

#[tokio::test]
async fn s03b_a_dead_sweepers_lock_delays_recovery_by_at_most_its_ttl() {
    let fx = Fixture::new().await;
    let token = token();
    let retried = format!("{:064x}", 1);
    let plain = format!("{:064x}", 2);
    let body = |id: &str, label: &str, retry: &str| {
        format!(
            r#"{{"id": "{id}", "func": "{}", "args": ["{token}", "{label}"]{retry}}}"#,
            tally::NAME
        )
    };
    let retry = r#", "retry_method": ["tasktiger.retry:_fixed", [0.1, 3]]"#;
    plant_lost(&fx.tiger, "faults", &retried, &body(&retried, "t1", retry)).await;
    plant_lost(&fx.tiger, "faults", &plain, &body(&plain, "t2", "")).await;
    // The sweeper that died held the lock for 2 s (its own REQUEUE_EXPIRED_TASKS_INTERVAL).
    let lock = fx.tiger.keys().expired_sweep_lock();
    let lock_ttl = Duration::from_secs(2);
    redis::cmd("SET")
        .arg(&lock)
        .arg("dead-sweeper")
        .arg("PX")
        .arg(lock_ttl.as_millis() as u64)
        .query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let planted = Instant::now();

    let worker = spawn_worker(Worker::new(fx.tiger.clone()).queues(["faults"]));
    let bound = lock_ttl + recovery_bound(fx.tiger.config());
    wait_until(bound, "the lost tasks to be recovered", || async {
        let active = fx.ids(State::Active, "faults").await;
        let holder: Option<String> = redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut fx.tiger.connection())
            .await
            .unwrap();
        if holder.as_deref() == Some("dead-sweeper") {
            assert_eq!(
                active.len(),
                2,
                "recovered while the dead sweeper's lock lived"
            );
        }
        active.is_empty()
    })
    .await;
    assert!(
        planted.elapsed() >= lock_ttl - Duration::from_millis(100),
        "recovered after {:?}, before the lock's TTL",
        planted.elapsed()
    );
    wait_until(Duration::from_secs(5), "t1 to run again", || async {
        count(&token) == 1
    })
    .await;
    wait_until(Duration::from_secs(5), "t1 to be done", || async {
        fx.body(&retried).await.is_none()
    })
    .await;
    worker.stop().await;

    assert_eq!(take::<String>(&token), ["t1"], "t1 ran once more, t2 never");
    assert_eq!(fx.ids(State::Error, "faults").await, [plain.as_str()]);
    let records = fx.executions(&plain).await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("worker lost"),
        "{records:?}"
    );
    fx.assert_only_errored("faults", &[plain.as_str()]).await;
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

// ---------------------------------------------------------------------------------------
// S03 (c): Redis restarts while tasks are active, queued and scheduled

/// A private Redis that keeps its data across [`RedisServer::restart`], with a producer's
/// and a worker's handle on one fresh prefix.
struct Restartable {
    _data: TempDir,
    server: RedisServer,
    producer: Tiger,
    worker_tiger: Tiger,
}

impl Restartable {
    async fn start() -> Restartable {
        let data = TempDir::new();
        let server = RedisServer::start_persistent(&data.0).unwrap();
        let url = server.url();
        let prefix = unique_prefix();
        Restartable {
            producer: handle(&url, &prefix, |_| {}).await,
            worker_tiger: handle(&url, &prefix, |_| {}).await,
            server,
            _data: data,
        }
    }
}

#[tokio::test]
async fn s03c_a_redis_restart_loses_no_active_queued_or_scheduled_task() {
    let Restartable {
        _data,
        mut server,
        producer,
        worker_tiger,
    } = Restartable::start().await;
    let token = token();
    for label in ["active-1", "active-2"] {
        tally_and_hold::delay(token.clone(), label.into())
            .on(&producer)
            .await
            .unwrap();
    }
    let worker = spawn_worker(Worker::new(worker_tiger).queues(["faults"]).concurrency(2));
    wait_until(Duration::from_secs(10), "both slots to be busy", || async {
        count(&token) == 2
    })
    .await;
    for label in ["queued-1", "queued-2", "queued-3"] {
        tally::delay(token.clone(), label.into())
            .on(&producer)
            .await
            .unwrap();
    }
    for label in ["scheduled-1", "scheduled-2"] {
        tally::delay(token.clone(), label.into())
            .when(Duration::from_secs(2))
            .on(&producer)
            .await
            .unwrap();
    }
    // Sizes of active, queued and scheduled; `None` while Redis does not answer.
    let sizes = || async {
        let mut pipe = redis::pipe();
        for state in [State::Active, State::Queued, State::Scheduled] {
            pipe.cmd("ZCARD")
                .arg(producer.keys().queue(state, "faults"));
        }
        pipe.query_async::<Vec<usize>>(&mut producer.connection())
            .await
            .ok()
    };
    assert_eq!(sizes().await, Some(vec![2, 3, 2]));

    let restarted = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    });
    let server = restarted.await.unwrap();
    wait_until(Duration::from_secs(5), "Redis to answer again", || async {
        sizes().await.is_some()
    })
    .await;
    assert_eq!(sizes().await, Some(vec![2, 3, 2]), "everything came back");

    let_go(&token);
    wait_until(
        Duration::from_secs(15),
        "every task to run and be recorded",
        || async { count(&token) == 7 && keys_left(&producer).await.is_empty() },
    )
    .await;
    worker.stop().await;
    assert_eq!(
        tallies(&token),
        once_each(&[
            "active-1",
            "active-2",
            "queued-1",
            "queued-2",
            "queued-3",
            "scheduled-1",
            "scheduled-2"
        ])
    );
    Invariants::idle_fleet(producer.config())
        .assert(&producer)
        .await;
    drop(server);
}

// ---------------------------------------------------------------------------------------
// S05: a periodic task that retries keeps a capped history and gets its full budget

/// (retry number, stored records) seen by each attempt of `fails_twice_per_period`.
static BUDGET_ATTEMPTS: Mutex<Vec<(u32, usize)>> = Mutex::new(Vec::new());

/// The test's handle, for the task to look at its own history.
static BUDGET_TIGER: OnceLock<Tiger> = OnceLock::new();

/// Every second; fails its first two attempts of each period and succeeds on the third.
/// Two retries allowed, one record kept.
#[tiger::task(
    queue = "faults-periodic-retry",
    schedule = periodic(seconds = 1),
    retry_method = fixed(0.1, 2),
    max_stored_executions = 1
)]
async fn fails_twice_per_period() -> Result<(), String> {
    let task = tiger::current_task().expect("runs as a task");
    let tiger = BUDGET_TIGER.get().expect("the test's handle");
    let stored: usize = redis::cmd("LLEN")
        .arg(tiger.keys().executions(&task.id))
        .query_async(&mut tiger.connection())
        .await
        .map_err(|e| e.to_string())?;
    let attempt = {
        let mut attempts = BUDGET_ATTEMPTS.lock().unwrap();
        attempts.push((task.retries, stored));
        attempts.len()
    };
    if attempt.is_multiple_of(3) {
        Ok(())
    } else {
        Err(format!("attempt {attempt} fails"))
    }
}

#[tokio::test]
async fn s05_a_retried_periodic_task_gets_its_full_budget_every_period_with_capped_history() {
    let fx = Fixture::new().await;
    BUDGET_TIGER.set(fx.tiger.clone()).unwrap();
    let queue = "faults-periodic-retry";
    let worker = spawn_worker(Worker::new(fx.tiger.clone()).queues([queue]));
    wait_until(Duration::from_secs(15), "three periods", || async {
        BUDGET_ATTEMPTS.lock().unwrap().len() >= 9
    })
    .await;
    worker.stop().await;
    let attempts = BUDGET_ATTEMPTS.lock().unwrap().clone();
    // Each period starts from retry 0 with no history (cleared by the last success); the
    // third attempt has counted two failures but keeps only the last record.
    assert_eq!(
        attempts[..9],
        [
            (0, 0),
            (1, 1),
            (2, 1),
            (0, 0),
            (1, 1),
            (2, 1),
            (0, 0),
            (1, 1),
            (2, 1)
        ]
    );
    assert!(
        fx.ids(State::Error, queue).await.is_empty(),
        "no period ran out of retries"
    );
    let scheduled = fx.ids(State::Scheduled, queue).await;
    assert_eq!(scheduled.len(), 1, "the next period waits");
    if attempts.len().is_multiple_of(3) {
        // Stopped after a success: nothing but the next period is left.
        fx.assert_keys(
            state_keys(State::Scheduled, queue)
                .into_iter()
                .chain([task_key(&scheduled[0])]),
        )
        .await;
    }
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

// ---------------------------------------------------------------------------------------
// S07: periodic tasks on two queues, each served by its own workers

static PERIOD_RUNS: Mutex<Vec<(&str, f64)>> = Mutex::new(Vec::new());

#[tiger::task(queue = "faults-periodic-a", schedule = periodic(seconds = 1))]
async fn tick_a() {
    PERIOD_RUNS.lock().unwrap().push(("a", now()));
}

#[tiger::task(queue = "faults-periodic-b", schedule = periodic(seconds = 1))]
async fn tick_b() {
    PERIOD_RUNS.lock().unwrap().push(("b", now()));
}

fn period_runs(name: &str) -> Vec<f64> {
    PERIOD_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, at)| *at)
        .collect()
}

#[tokio::test]
async fn s07_periodic_tasks_of_two_queues_run_once_per_period_under_queue_filters() {
    let fx = Fixture::new().await;
    // Two workers serve only `a`; the one serving only `b` joins once `a` has run twice.
    let mut workers: Vec<_> = (0..2)
        .map(|_| spawn_worker(Worker::new(fx.tiger.clone()).queues(["faults-periodic-a"])))
        .collect();
    wait_until(Duration::from_secs(10), "a to run twice", || async {
        period_runs("a").len() >= 2
    })
    .await;
    assert!(period_runs("b").is_empty(), "no worker serves b yet");
    let joined = now();
    workers.push(spawn_worker(
        Worker::new(fx.tiger.clone()).queues(["faults-periodic-b"]),
    ));
    wait_until(Duration::from_secs(15), "four periods of b", || async {
        period_runs("b").len() >= 4
    })
    .await;
    for worker in workers {
        worker.stop().await;
    }
    for name in ["a", "b"] {
        let runs = period_runs(name);
        let seconds: Vec<u64> = runs.iter().map(|at| *at as u64).collect();
        let mut distinct = seconds.clone();
        distinct.dedup();
        assert_eq!(distinct, seconds, "{name}: two runs in one period");
        // Under load a run may start late enough to skip one period, no more.
        let span = seconds.last().unwrap() - seconds.first().unwrap() + 1;
        assert!(
            span <= seconds.len() as u64 + 1,
            "{name}: {} runs over {span} periods: {seconds:?}",
            seconds.len()
        );
    }
    assert!(
        period_runs("b")[0] < joined + 2.5,
        "b's first period came within about a second of its worker"
    );
    let idle = Invariants::idle_fleet(fx.tiger.config());
    idle.assert(&fx.tiger).await;
}

// ---------------------------------------------------------------------------------------
// S08: the script cache is flushed under a running worker

#[tokio::test]
async fn s08_script_flush_under_a_running_worker_loses_nothing() {
    let fx = Fixture::new().await;
    let worker_tiger = handle(fx.redis.url(), fx.tiger.keys().prefix(), |_| {}).await;
    let worker = spawn_worker(Worker::new(worker_tiger).queues(["faults"]));
    let token = token();
    let flush = || async {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut fx.tiger.connection())
            .await
            .unwrap();
    };
    // One flush per step, each once the step before has settled (a storm of flushes is the
    // next test).
    // A task in flight when the scripts go: its heartbeats and result need them back.
    tally_and_hold::delay(token.clone(), "running".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the task to start", || async {
        count(&token) == 1
    })
    .await;
    flush().await;
    let_go(&token);
    let settled = || async { keys_left(&fx.tiger).await.is_empty() };
    wait_until(
        Duration::from_secs(10),
        "its result to be recorded",
        settled,
    )
    .await;
    // Enqueueing, taking and finishing.
    flush().await;
    for label in ["queued-1", "queued-2"] {
        tally::delay(token.clone(), label.into())
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(10), "both to run", || async {
        count(&token) == 3 && settled().await
    })
    .await;
    // The scheduled sweep.
    tally::delay(token.clone(), "scheduled".into())
        .when(Duration::from_millis(500))
        .on(&fx.tiger)
        .await
        .unwrap();
    flush().await;
    wait_until(
        Duration::from_secs(10),
        "the scheduled one to run",
        || async { count(&token) == 4 && settled().await },
    )
    .await;
    worker.stop().await;
    assert_eq!(
        tallies(&token),
        once_each(&["running", "queued-1", "queued-2", "scheduled"])
    );
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

/// `redis::Script` answers a `NOSCRIPT` with one `SCRIPT LOAD` and one retry; a flush (or a
/// restart) between the reload and the retry fails that call with `NOSCRIPT` again. tiger
/// counts that as transient and tries again, so no result is lost: without that, a task
/// whose result write failed stayed active, was recovered as lost, and one without retries
/// ended in error although it succeeded.
#[tokio::test]
async fn s08_a_storm_of_script_flushes_loses_no_result() {
    let fx = Fixture::new().await;
    // Heartbeats are not retried (the next one comes soon), so under such a storm on a busy
    // machine a task could go without one for the 2 s of the test settings and be taken for
    // lost: give heartbeats room, so that only the result writes are tested.
    let worker_tiger = handle(fx.redis.url(), fx.tiger.keys().prefix(), |config| {
        config.active_task_update_timeout = Duration::from_secs(60);
    })
    .await;
    let worker = spawn_worker(Worker::new(worker_tiger).queues(["faults"]));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let storm = {
        let tiger = fx.tiger.clone();
        tokio::spawn(async move {
            loop {
                let _ = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async::<()>(&mut tiger.connection())
                    .await;
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        })
    };
    let token = token();
    for n in 0..100 {
        // An enqueue that meets the race fails before writing anything: try again.
        wait_until(
            Duration::from_secs(5),
            "an enqueue to go through",
            || async {
                tally::delay(token.clone(), format!("n{n}"))
                    .on(&fx.tiger)
                    .await
                    .is_ok()
            },
        )
        .await;
    }
    wait_until(Duration::from_secs(20), "all hundred to run", || async {
        count(&token) == 100
    })
    .await;
    stop.send(()).unwrap();
    storm.await.unwrap();
    let bound = recovery_bound(fx.tiger.config()) + Duration::from_secs(1);
    wait_until(bound, "nothing to be left active", || async {
        fx.ids(State::Active, "faults").await.is_empty()
    })
    .await;
    worker.stop().await;
    let errored = fx.ids(State::Error, "faults").await;
    assert!(
        errored.is_empty(),
        "{} tasks that succeeded ended in error; the first's record: {:?}",
        errored.len(),
        fx.executions(&errored[0]).await
    );
}

/// Starts a worker process on `queue`, waits until it has started step 1 (see
/// `file_step`), SIGKILLs it, and returns when it was killed and its pid.
async fn kill_mid_step(fx: &Fixture, dir: &TempDir, queue: &str) -> (Instant, u32) {
    let mut w1 = Process::start(
        fx.redis.url(),
        &fx.tiger,
        &dir.path("w1.log"),
        &["-q", queue],
    );
    wait_until(Duration::from_secs(20), "w1 to start the task", || async {
        marked(&dir.0, "started", 1) == [w1.pid()]
    })
    .await;
    w1.kill();
    (Instant::now(), w1.pid())
}

// ---------------------------------------------------------------------------------------
// S09 (B): a lost task is recovered by a worker of another queue

#[tokio::test]
async fn s09b_a_task_whose_worker_is_killed_is_recovered_by_a_worker_of_another_queue() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let id = file_step::delay(dir_arg(&dir.0), 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    let (killed, w1) = kill_mid_step(&fx, &dir, "faults-files").await;

    let other = spawn_worker(Worker::new(fx.tiger.clone()).queues(["faults-elsewhere"]));
    let bound = recovery_bound(fx.tiger.config());
    wait_until(bound, "the task to be recovered for a retry", || async {
        fx.ids(State::Scheduled, "faults-files").await == [id.as_str()]
    })
    .await;
    let recovered_after = killed.elapsed();
    assert!(fx.ids(State::Active, "faults-files").await.is_empty());
    let records = fx.executions(id.as_str()).await;
    assert_eq!(records.len(), 1, "one failed attempt counted");
    assert!(
        records[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("worker lost")
    );
    other.stop().await;
    Invariants::new().assert(&fx.tiger).await;

    // A worker of its own queue runs the retry, which sees the lost attempt.
    release_step(&dir.0, 1);
    let own = spawn_worker(Worker::new(fx.tiger.clone()).queues(["faults-files"]));
    wait_until(Duration::from_secs(10), "the retry to finish", || async {
        !marked(&dir.0, "finished", 1).is_empty() && keys_left(&fx.tiger).await.is_empty()
    })
    .await;
    own.stop().await;
    let mut runs = vec![w1, std::process::id()];
    runs.sort_unstable();
    assert_eq!(
        marked(&dir.0, "started", 1),
        runs,
        "the lost run and the retry"
    );
    assert!(recovered_after <= bound, "{recovered_after:?}");
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

// ---------------------------------------------------------------------------------------
// S10: a task due later is not leased before it is due, however short the lease

#[tokio::test]
async fn s10_a_task_due_later_runs_once_with_a_short_active_timeout_and_three_workers() {
    let fx = Fixture::new().await;
    let short = |config: &mut Config| {
        config.active_task_update_timer = Duration::from_millis(100);
        config.active_task_update_timeout = Duration::from_secs(1);
        config.requeue_expired_tasks_interval = Duration::from_millis(200);
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        let tiger = handle(fx.redis.url(), fx.tiger.keys().prefix(), short).await;
        workers.push(spawn_worker(Worker::new(tiger).queues(["faults"])));
    }
    let token = token();
    let lead = Duration::from_secs(2);
    let due = now() + lead.as_secs_f64();
    // Runs for longer than the active timeout, so only heartbeats keep it.
    tally_slowly::delay(token.clone(), "e".into(), 1500)
        .when(lead)
        .on(&fx.tiger)
        .await
        .unwrap();
    let settled = due + 1.5 + 2.0 * (1.0 + 0.2) + 0.5;
    wait_until(
        Duration::from_secs(15),
        "the task to run, and two lease periods to pass",
        || async {
            if now() < due - 0.05 {
                assert!(
                    fx.ids(State::Active, "faults").await.is_empty(),
                    "leased before it was due"
                );
            }
            now() > settled && keys_left(&fx.tiger).await.is_empty()
        },
    )
    .await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(tallies(&token), once_each(&["e"]));
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

// ---------------------------------------------------------------------------------------
// S11: connections killed, then Redis restarted, under a steady stream of tasks

#[tokio::test]
async fn s11_the_worker_takes_work_again_after_killed_connections_and_a_restart() {
    // The producer's connection sends the kills, which spare it (`SKIPME yes`).
    let Restartable {
        _data,
        mut server,
        producer,
        worker_tiger,
    } = Restartable::start().await;
    let worker = spawn_worker(Worker::new(worker_tiger).queues(["faults"]));
    let token = token();

    // Ten tasks a second until told to stop; returns the labels Redis acknowledged and
    // those whose enqueue failed (which may or may not have been written).
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let stream = {
        let (producer, token) = (producer.clone(), token.clone());
        tokio::spawn(async move {
            let (mut acked, mut unsure) = (Vec::new(), Vec::new());
            for n in 0.. {
                let label = format!("stream-{n}");
                match tally::delay(token.clone(), label.clone())
                    .on(&producer)
                    .await
                {
                    Ok(_) => acked.push(label),
                    Err(_) => unsure.push(label),
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            (acked, unsure)
        })
    };

    // After each fault, a probe task must run within the bound.
    let bound = Duration::from_secs(5);
    let probe = |name: &'static str| {
        let (producer, token) = (producer.clone(), token.clone());
        async move {
            let since = Instant::now();
            wait_until(
                bound,
                &format!("the probe after {name} to be enqueued"),
                || async {
                    tally::delay(token.clone(), name.into())
                        .on(&producer)
                        .await
                        .is_ok()
                },
            )
            .await;
            let ran = || async { take_label(&token, name) };
            wait_until(bound, &format!("the probe after {name} to run"), ran).await;
            since.elapsed()
        }
    };
    let kill = |kind: &'static str| {
        let producer = producer.clone();
        async move {
            let killed: u64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"][..])
                .query_async(&mut producer.connection())
                .await
                .unwrap();
            assert!(killed >= 1, "killed the worker's {kind} connection");
        }
    };
    probe("probe-start").await;
    kill("normal").await;
    let after_normal = probe("probe-normal").await;
    kill("pubsub").await;
    let after_pubsub = probe("probe-pubsub").await;
    let restarted = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    });
    let server = restarted.await.unwrap();
    let after_restart = probe("probe-restart").await;
    // A second of traffic after the last fault, then stop.
    let calm = Instant::now();
    wait_until(Duration::from_secs(5), "a calm second", || async {
        calm.elapsed() > Duration::from_secs(1)
    })
    .await;
    stop.send(()).unwrap();
    let (acked, unsure) = stream.await.unwrap();
    let waiting = || async {
        let mut pipe = redis::pipe();
        for state in [State::Queued, State::Active, State::Scheduled] {
            pipe.cmd("ZCARD")
                .arg(producer.keys().queue(state, "faults"));
        }
        let sizes: Vec<usize> = pipe.query_async(&mut producer.connection()).await.unwrap();
        sizes.iter().sum::<usize>()
    };
    wait_until(
        recovery_bound(producer.config()) + Duration::from_secs(5),
        "every task to be settled",
        || async { waiting().await == 0 },
    )
    .await;
    worker.stop().await;
    // A task whose result could not be written while Redis was away (past the worker's
    // retries) stays active and is settled as lost, as the scenario allows; nothing else
    // may end in error.
    let errored = ids(&producer, State::Error, "faults").await;
    for id in &errored {
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(producer.keys().executions(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut producer.connection())
            .await
            .unwrap();
        assert!(
            records.len() == 1 && records[0].contains("worker lost"),
            "{id} ended in error: {records:?}"
        );
    }
    assert!(
        errored.len() <= 2,
        "{} tasks were lost, more than were in flight at the restart",
        errored.len()
    );
    let ran = tallies(&token);
    for label in &acked {
        let times = ran.iter().find(|(l, _)| l == label).map_or(0, |(_, n)| *n);
        assert_eq!(times, 1, "{label} ran {times} times: {ran:?}");
    }
    for (label, times) in &ran {
        assert!(
            *times == 1 && (acked.contains(label) || unsure.contains(label)),
            "{label} ran {times} times"
        );
    }
    assert!(acked.len() >= 10, "the stream kept flowing: {acked:?}");
    for (fault, took) in [
        ("CLIENT KILL TYPE normal", after_normal),
        ("CLIENT KILL TYPE pubsub", after_pubsub),
        ("a restart", after_restart),
    ] {
        assert!(took < bound, "after {fault} new work waited {took:?}");
    }
    Invariants::idle_fleet(producer.config())
        .assert(&producer)
        .await;
    drop(server);
}

/// Removes one `label` recorded under `token`, if there is one.
fn take_label(token: &str, label: &str) -> bool {
    let mut labels = take::<String>(token);
    let found = labels.iter().position(|l| l == label);
    if let Some(at) = found {
        labels.remove(at);
    }
    for other in labels {
        record(token, other);
    }
    found.is_some()
}

// ---------------------------------------------------------------------------------------
// S13: a killed worker's task lock expires by itself

#[tokio::test]
async fn s13_a_lock_left_by_a_killed_worker_expires_and_the_next_task_runs() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let first = locked_file_step::delay(dir_arg(&dir.0), 7, 1)
        .on(&fx.tiger)
        .await
        .unwrap();
    let (killed, _) = kill_mid_step(&fx, &dir, "faults-locked").await;
    let locks = task_locks(&fx.tiger).await;
    assert_eq!(locks.len(), 1, "the dead worker's lock: {locks:?}");
    let lock = locks[0].clone();
    let (dead_token, left): (String, u64) = redis::pipe()
        .cmd("GET")
        .arg(&lock)
        .cmd("PTTL")
        .arg(&lock)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();

    // The same lock key again, with nobody cleaning up.
    release_step(&dir.0, 2);
    locked_file_step::delay(dir_arg(&dir.0), 7, 2)
        .on(&fx.tiger)
        .await
        .unwrap();
    let worker = spawn_worker(Worker::new(fx.tiger.clone()).queues(["faults-locked"]));
    // A task lock lives about as long as a heartbeat counts (the recovery bound); the
    // deferred task then waits at most LOCK_RETRY more, plus a margin.
    let lock_bound = recovery_bound(fx.tiger.config());
    assert!(
        Duration::from_millis(left) <= lock_bound,
        "the dead worker's lock has {left} ms to live"
    );
    let within = lock_bound + fx.tiger.config().lock_retry + Duration::from_secs(1);
    wait_until(within, "the second task to run", || async {
        let ran = !marked(&dir.0, "finished", 2).is_empty();
        let holder: Option<String> = redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut fx.tiger.connection())
            .await
            .unwrap();
        if holder.as_deref() == Some(dead_token.as_str()) {
            assert!(
                marked(&dir.0, "started", 2).is_empty(),
                "ran while the dead worker's lock lived"
            );
        }
        ran
    })
    .await;
    assert!(
        killed.elapsed() <= within,
        "ran {:?} after the kill",
        killed.elapsed()
    );
    // The killed run is settled as lost (no retries: error), and no lock is left.
    wait_until(
        recovery_bound(fx.tiger.config()),
        "the killed run to be settled",
        || async { fx.ids(State::Error, "faults-locked").await == [first.as_str()] },
    )
    .await;
    wait_until(Duration::from_secs(5), "the locks to be gone", || async {
        task_locks(&fx.tiger).await.is_empty()
    })
    .await;
    worker.stop().await;
    assert_eq!(marked(&dir.0, "started", 2), [std::process::id()]);
    fx.assert_only_errored("faults-locked", &[first.as_str()])
        .await;
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
}

// ---------------------------------------------------------------------------------------
// S16: two worker processes started alike; one is killed mid-task

#[tokio::test]
async fn s16_of_two_workers_started_alike_the_killed_ones_task_is_recovered_alone() {
    let fx = Fixture::new().await;
    let dir = TempDir::new();
    let mut ids_by_n = Vec::new();
    for n in 1..=2 {
        ids_by_n.push(
            file_step::delay(dir_arg(&dir.0), n)
                .on(&fx.tiger)
                .await
                .unwrap()
                .to_string(),
        );
    }
    let args = ["-q", "faults-files", "--concurrency", "1"];
    let mut workers = [
        Process::start(fx.redis.url(), &fx.tiger, &dir.path("w1.log"), &args),
        Process::start(fx.redis.url(), &fx.tiger, &dir.path("w2.log"), &args),
    ];
    wait_until(
        Duration::from_secs(20),
        "each worker to start a task",
        || async {
            let (one, two) = (marked(&dir.0, "started", 1), marked(&dir.0, "started", 2));
            one.len() == 1 && two.len() == 1 && one != two
        },
    )
    .await;
    let victim_pid = marked(&dir.0, "started", 1)[0];
    let (victim, survivor) = if workers[0].pid() == victim_pid {
        (0, 1)
    } else {
        (1, 0)
    };
    let survivor_pid = workers[survivor].pid();
    let (lost, kept) = (ids_by_n[0].as_str(), ids_by_n[1].as_str());
    workers[victim].kill();
    let killed = Instant::now();

    let active = fx.tiger.keys().queue(State::Active, "faults-files");
    let heartbeat = || async {
        redis::cmd("ZSCORE")
            .arg(&active)
            .arg(kept)
            .query_async::<Option<f64>>(&mut fx.tiger.connection())
            .await
            .unwrap()
    };
    let bound = recovery_bound(fx.tiger.config());
    wait_until(
        bound,
        "the killed worker's task to be recovered",
        || async {
            // The survivor's task stays its own, heartbeating, with no failure counted.
            let beat = heartbeat().await.expect("the survivor's task stays active");
            assert!(now() - beat < 1.5, "the survivor still heartbeats");
            assert!(fx.executions(kept).await.is_empty());
            fx.ids(State::Scheduled, "faults-files").await == [lost]
                || fx.ids(State::Queued, "faults-files").await == [lost]
        },
    )
    .await;
    assert!(killed.elapsed() <= bound);
    assert!(
        marked(&dir.0, "started", 2) == [survivor_pid],
        "the survivor's task was not run again"
    );

    release_step(&dir.0, 1);
    release_step(&dir.0, 2);
    wait_until(
        Duration::from_secs(15),
        "the survivor to finish both",
        || async {
            marked(&dir.0, "finished", 1) == [survivor_pid] && keys_left(&fx.tiger).await.is_empty()
        },
    )
    .await;
    assert_eq!(marked(&dir.0, "finished", 2), [survivor_pid]);
    let mut started_1 = vec![victim_pid, survivor_pid];
    started_1.sort_unstable();
    assert_eq!(marked(&dir.0, "started", 1), started_1);
    Invariants::idle_fleet(fx.tiger.config())
        .assert(&fx.tiger)
        .await;
    drop(workers);
}
